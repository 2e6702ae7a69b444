"""`jaxland reproduce`: the main job writes report.json and PNGs, and resumes from finished stages."""

import json
import subprocess
import sys

import numpy as np

from jaxland.experiments._cli import main


def test_reproduce_tiny_writes_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "--out", str(out), "--preset", "tiny"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["preset"] == "tiny"
    for fig in report["figures"]:
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    seg = report["paths"]["straight_a_b"]
    F = np.asarray(seg["F"])
    assert len(F) == report["settings"]["points"] and np.all(np.isfinite(F))
    # the barrier comes from the stored values and the refinement: the refined maximum is at least the
    # grid maximum (refinement only adds points) and the barrier is measured from it
    assert seg["f_max"] >= max(F)
    assert seg["barrier"] == seg["f_max"] - max(F[0], F[-1])
    # barrier() computes in the working precision (float32 here): equal to rounding
    np.testing.assert_allclose(seg["barrier_grid"], max(F) - max(F[0], F[-1]), rtol=1e-5)
    # the endpoints of the straight segment are the two trained minima
    np.testing.assert_allclose(F[0], report["minima"]["minimum_a"]["F"], rtol=1e-5)
    np.testing.assert_allclose(F[-1], report["minima"]["minimum_b"]["F"], rtol=1e-5)

    # every stage of the later issues is in the report
    assert set(report["paths"]) == {"straight_a_b", "straight_a_star", "theorem11", "bezier"}
    cert = report["paths"]["theorem11"]["certificate"]
    th = report["paths"]["theorem11"]
    # the certificate's maximum covers the uniform grid of the same path (float32 rounding: 1e-5 relative)
    assert cert["f_max"] >= max(th["F"]) * (1 - 1e-5)
    assert cert["excess"] == cert["f_max"] - max(cert["f_a"], cert["f_b"], cert["f_star"])
    np.testing.assert_allclose(cert["f_a"], report["minima"]["minimum_a"]["F"], rtol=1e-5)
    for name in ("minimum_a", "minimum_b"):
        h = report["minima"][name]
        assert h["lambda_min"] <= h["lambda_max"]
    for rec in report["paths"].values():
        assert rec["hessian_at_max"]["lambda_min"] <= rec["hessian_at_max"]["lambda_max"]
    g = report["settings"]["plane_grid"]
    assert np.asarray(report["plane"]["F"]).shape == (g, g)

    # A second run with the same settings loads every stage instead of recomputing.
    capsys.readouterr()
    assert main(["reproduce", "--out", str(out), "--preset", "tiny"]) == 0
    err = capsys.readouterr().err
    assert "minimum_a: loaded" in err
    for work in ("training", "connect:", "fit_curve:", "Lanczos", "evaluate_path", "grid of the plane"):
        assert work not in err
    assert json.loads((out / "report.json").read_text())["paths"] == report["paths"]


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "jaxland", "reproduce", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout
