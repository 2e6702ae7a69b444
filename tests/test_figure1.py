"""`jaxland figure1` end to end at the "tiny" preset (the same code as --quick and the full preset,
at toy sizes), through the command line: the report, the shapes of the grids, the ratios, the
figures, the interactive page drawn in a real headless browser (Debian's chromium; `make test`
installs it), resuming, and the refusal of bad arguments."""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from jaxland.experiments._cli import main
from jaxland.experiments._figure1 import (
    figure1_settings,
    hessian_subgrid,
    nonconvexity_ratio,
    roughness,
)
from jaxland.experiments._figure1_plots import TITLE_DRAWN

FIGURES = ("figure1.png", "contours.png", "nonconvexity.png", "interpolation.png", "figure1.html")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figure1")
    assert main(["figure1", "--preset", "tiny", "--out", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_report_grids_and_ratios(run):
    out, rep = run
    s = rep["settings"]
    assert s == figure1_settings(preset="tiny")
    assert set(rep["nets"]) == {f"resnet{d}{t}" for d in s["depths"] for t in ("", "_noshort")}
    g, sub = s["grid"], s["hessian_grid"]
    np.testing.assert_array_equal(hessian_subgrid(g, sub), np.rint(np.linspace(0, g - 1, sub)))
    for name, r in rep["nets"].items():
        assert r["skip"] == (not name.endswith("_noshort"))
        Z = np.asarray(r["surface"]["loss"], float)
        assert Z.shape == (g, g) and np.all(np.isfinite(Z)) and np.all(Z > 0)
        np.testing.assert_allclose(r["surface"]["alphas"], np.linspace(-1, 1, g))
        acc = np.asarray(r["surface"]["accuracy"], float)
        assert acc.shape == (g, g) and np.all((acc >= 0) & (acc <= 1))
        h = r["hessian"]
        R = np.asarray(h["ratio"], float)
        assert R.shape == (sub, sub) and np.all((R >= 0) & (R <= 1))
        np.testing.assert_allclose(R, nonconvexity_ratio(h["lambda_min"], h["lambda_max"]))
        np.testing.assert_allclose(h["alphas"], np.asarray(r["surface"]["alphas"])[h["index"]])
        assert 0 <= h["nonconvex_fraction"] <= 1
        np.testing.assert_allclose(h["nonconvex_fraction"], np.mean(R > 0.1))
        np.testing.assert_allclose(h["mean_ratio"], np.mean(R))
        basin = Z[np.ix_(h["index"], h["index"])] < np.log(10)
        assert h["basin_points"] == int(basin.sum())
        if basin.any():
            np.testing.assert_allclose(h["nonconvex_fraction_basin"], np.mean(R[basin] > 0.1))
        # the centre of the plane is the trained minimum: its loss is the reported one (float32
        # one-pass vs recomputed statistics: 1e-4 relative)
        np.testing.assert_allclose(Z[g // 2, g // 2], r["loss"], rtol=1e-4)
        assert max(c["rel_diff"] for c in r["bn_check"]) < 1e-4
        seg = r["segment"]
        assert seg["t"][0] == 0 and seg["t"][-1] == 1 and len(seg["loss"]) == s["barrier_points"]
        assert seg["f_max"] >= max(seg["loss"]) - 1e-12 and r["barrier"] >= 0
        assert r["roughness"]["local_minima"] >= 0 and r["roughness"]["tv_ratio"] >= 0
    assert [row["net"] for row in rep["table"]] == list(rep["nets"])
    assert rep["figures"] == list(FIGURES)


def test_figures_written(run):
    import matplotlib.image as mpimg

    out, _ = run
    for f in FIGURES:
        assert (out / f).stat().st_size > 1000, f
    for f in FIGURES[:4]:
        img = mpimg.imread(out / f)
        assert img.shape[0] > 300 and img.shape[1] > 300
        assert np.std(img[..., :3]) > 0.05  # not a blank canvas


def test_html_is_self_contained_and_draws_in_headless_chromium(run):
    out, rep = run
    html = (out / "figure1.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is needed (Debian's `chromium`); `make test` installs it when missing"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    url = (out / "figure1.html").resolve().as_uri()
    with tempfile.TemporaryDirectory() as prof:
        dom = subprocess.run([exe, *flags, f"--user-data-dir={prof}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)
    assert f"<title>{TITLE_DRAWN}</title>" in dom.stdout, dom.stderr[-2000:]
    assert f'data-drawn="{len(rep["nets"])}"' in dom.stdout
    shot = out / "figure1_html.png"
    with tempfile.TemporaryDirectory() as prof:
        subprocess.run([exe, *flags, f"--user-data-dir={prof}", f"--screenshot={shot}",
                        "--window-size=1100,900", url], capture_output=True, timeout=120)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    # the surfaces are drawn in viridis: count strongly coloured pixels (text and frames are grey)
    coloured = (img.max(-1) - img.min(-1)) > 0.25
    assert coloured.mean() > 0.03, coloured.mean()


def test_rerun_resumes_from_the_stages(run, capsys):
    out, rep = run
    lines = []
    from jaxland.experiments._figure1 import figure1

    again = figure1(out, preset="tiny", progress=lines.append)
    assert sum("loaded" in m for m in lines) == len(rep["nets"])
    assert not any("training minimum" in m or "surface rows" in m or "Hessian" in m for m in lines)
    assert json.loads(json.dumps(again["table"])) == rep["table"]


def test_roughness_and_ratio_definitions():
    a = np.linspace(-1, 1, 11)
    A, B = np.meshgrid(a, a, indexing="ij")
    bowl = 1 + A**2 + 2 * B**2  # exactly quadratic: one minimum, no residual
    r = roughness(bowl)
    assert r["local_minima"] == 1 and r["tv_ratio"] < 1e-10
    rough = bowl + 0.3 * np.cos(9 * A) * np.cos(9 * B)
    r2 = roughness(rough)
    assert r2["local_minima"] > 1 and r2["tv_ratio"] > 0.1
    np.testing.assert_allclose(nonconvexity_ratio([-1.0, 1.0, -5.0, 0.0], [10.0, 4.0, 2.0, 0.0]),
                               [0.1, 0.0, 1.0, 0.0])


def test_bad_arguments_exit_2(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main(["figure1", "--out", str(f)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["figure1", "--seed", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "seed must be" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
