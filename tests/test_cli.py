"""`jaxland reproduce`: the main job writes report.json and PNGs, and resumes from finished stages."""

import json
import subprocess
import sys

import numpy as np

from jaxland.cli import main


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
    # the barrier is computed from the stored values, not invented
    assert seg["barrier"] == max(F) - max(F[0], F[-1])
    # the endpoints of the straight segment are the two trained minima
    np.testing.assert_allclose(F[0], report["minima"]["minimum_a"]["F"], rtol=1e-5)
    np.testing.assert_allclose(F[-1], report["minima"]["minimum_b"]["F"], rtol=1e-5)

    # A second run with the same settings loads every stage instead of recomputing.
    capsys.readouterr()
    assert main(["reproduce", "--out", str(out), "--preset", "tiny"]) == 0
    err = capsys.readouterr().err
    assert "minimum_a: loaded" in err and "training" not in err
    assert json.loads((out / "report.json").read_text())["paths"] == report["paths"]


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "jaxland", "reproduce", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout
