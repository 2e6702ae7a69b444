"""`jaxland reproduce`: the main job writes report.json and PNGs, and resumes from finished stages."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxland.experiments._cli import main


def test_reproduce_tiny_writes_report_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # a 0.2 s heartbeat and a slow factor that makes every stage slow (issue 19: never silent)
    monkeypatch.setenv("JAXLAND_HEARTBEAT_S", "0.2")
    monkeypatch.setenv("JAXLAND_SLOW_FACTOR", "0.001")
    assert main(["reproduce", "--out", str(out), "--preset", "tiny"]) == 0
    err = capsys.readouterr().err
    beats = set(re.findall(r"still in stage (.+?), \d+s", err))
    assert {"training minimum_a", "connect", "fit_curve"} <= beats, err[-3000:]
    slow = re.findall(r"stage (.+?) is slow: \d+s, expected about", err)
    assert "training minimum_a" in slow and "connect" in slow, err[-3000:]
    # never a silence of more than a few heartbeats (generous: a loaded 2-core machine)
    stamps = [float(v) for v in re.findall(r"^\[jaxland +(\d+\.\d)s\]", err, re.M)]
    assert max(b - a for a, b in zip(stamps, stamps[1:], strict=False)) < 10.0, err[-3000:]
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
        # issue 22: a negative λ_min at a trained minimum comes with ‖∇F‖ (Adam stops near, not
        # at, a minimum) and an explanation; a converged bound is never the bare 0.0 of underflow
        assert h["grad_norm"] > 0
    eps32 = float(np.finfo(np.float32).eps)
    for h in [report["minima"][k] for k in ("minimum_a", "minimum_b")] + \
            [r["hessian_at_max"] for r in report["paths"].values()]:
        floor = eps32 * max(abs(h["lambda_min"]), abs(h["lambda_max"]))
        assert h["lambda_min_bound"] >= floor and h["lambda_max_bound"] >= floor > 0
    assert {"lambda_min", "lambda_min_bound", "lambda_max_bound", "barrier"} <= set(report["notes"])
    assert "approximate minimum" in report["notes"]["lambda_min"]
    assert report["barrier_rounding_level"] > 0
    for rec in report["paths"].values():
        assert rec["hessian_at_max"]["lambda_min"] <= rec["hessian_at_max"]["lambda_max"]
        assert rec["barrier"] >= 0
    g = report["settings"]["plane_grid"]
    assert np.asarray(report["plane"]["F"]).shape == (g, g)
    # the plane's grid is the zoom on the three minima: it holds them, and is at most their extent
    # plus the margins on both sides (issue 12: the minima used to collapse into one dot)
    an = np.asarray(report["plane"]["anchors"])
    al, be = np.asarray(report["plane"]["alphas"]), np.asarray(report["plane"]["betas"])
    diam = max(np.linalg.norm(p - q) for p in an for q in an)
    span = np.max(an.max(0) - an.min(0)) + 2 * report["settings"]["plane_margin"] * diam
    assert al.min() <= an[:, 0].min() and al.max() >= an[:, 0].max()
    assert be.min() <= an[:, 1].min() and be.max() >= an[:, 1].max()
    assert al.max() - al.min() <= span * (1 + 1e-9) and be.max() - be.min() <= span * (1 + 1e-9)

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


# --------------------------------------------------------------------------------------------------
# Issue 12: bad arguments cost nothing and leave nothing behind; --version; Ctrl-C
# --------------------------------------------------------------------------------------------------


def _one_line_error(capsys, argv, must):
    import jaxland.experiments._cli as cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and must in err[0], err
    return err[0]


def test_reproduce_out_that_is_a_file_or_unwritable(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    line = _one_line_error(capsys, ["reproduce", "--out", str(f), "--preset", "tiny"], "--out")
    assert "is not a folder" in line
    line = _one_line_error(capsys, ["reproduce", "--out", str(f / "sub"), "--preset", "tiny"],
                           "--out")
    assert "is a file, not a folder" in line
    # an unwritable folder: a read-only directory (not for root, who may write anywhere) or /sys
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    target = ro if not os.access(ro, os.W_OK) else Path("/sys")
    if not target.is_dir():
        pytest.skip("no unwritable folder to try")
    line = _one_line_error(capsys, ["reproduce", "--out", str(target / "run"), "--preset", "tiny"],
                           "--out")
    assert "cannot create" in line
    assert not (target / "run").exists()


def test_bad_arguments_leave_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:  # argparse: usage line and error, exit 2
        main(["reproduce", "--out", str(out), "--data", "nope"])
    assert e.value.code == 2 and "--data" in capsys.readouterr().err
    _one_line_error(capsys, ["reproduce", "--out", str(out), "--seed", "-1"], "seed")
    # the library function checks the same before creating anything
    from jaxland.experiments._reproduce import reproduce

    with pytest.raises(ValueError, match="data must be one of"):
        reproduce(out, data="nope")
    assert not out.exists()


def test_version(capsys):
    import jaxland

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"jaxland {jaxland.__version__}"


def test_missing_matplotlib_is_reported_before_any_work(tmp_path, capsys, monkeypatch):
    import jaxland

    # importing a module set to None in sys.modules raises ImportError: matplotlib "not installed"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "scal"
    line = _one_line_error(capsys, ["scaling", "--out", str(out), "--preset", "tiny"], "matplotlib")
    assert "jaxland[plot]" in line
    line = _one_line_error(capsys, ["reproduce", "--out", str(out), "--preset", "tiny"],
                           "matplotlib")
    with pytest.raises(ImportError, match="matplotlib"):
        jaxland.scaling(out, preset="tiny")
    assert not out.exists()  # nothing computed, nothing created


_WITH_DEFAULT_SIGINT = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('jaxland', run_name='__main__', alter_sys=True)"
)


def test_ctrl_c_during_compilation_exits_130_with_a_resume_line(tmp_path):
    """SIGINT while the first kernels compile: exit code 130 and one line about resuming
    (before: a traceback and a segmentation fault, exit −11)."""
    out = tmp_path / "run"
    # SIGINT back to Python's default in the child: a parent that ignores it (nohup, a backgrounded
    # job of a non-interactive shell) passes SIG_IGN on through exec, and Python then installs no
    # KeyboardInterrupt handler. (Set in the child's own first line, not by a preexec_fn, which
    # would fork this multithreaded JAX process.)
    p = subprocess.Popen([sys.executable, "-c", _WITH_DEFAULT_SIGINT, "reproduce", "--preset",
                          "tiny", "--out", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        # the first progress line: the data are loaded, the networks are built and compiled next
        while True:
            line = p.stderr.readline()
            seen.append(line)
            if not line or "] data " in line:
                break
        assert line, f"the run ended before training: {''.join(seen)}"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "run the same command again to resume" in last
    assert f"--out {out}" in last


def test_plane_zoom_keeps_the_minima_apart_when_a_path_goes_far():
    """plane.png: the zoom window is set by ξ_A, ξ_B, ξ* alone (a projected path reaching ±1000
    units does not widen it); the far excursion gets an overview panel that contains the zoom."""
    from jaxland.experiments import _reproduce as rp
    from jaxland.landscape import Slice

    anchors = np.array([[0.0, 0.0], [3.0, 0.0], [1.0, 2.0]])
    frame = Slice(None, None, None, None, None, None, anchors)
    t = np.linspace(0, 1, 50)
    far = {"theorem11": {"plane_xy": {"xy": np.stack([1000 * np.sin(np.pi * t), 2 * t], 1)}}}
    lo, hi = rp._zoom_window(frame, 0.25)
    diam = 3.0
    assert np.all(lo <= anchors.min(0)) and np.all(hi >= anchors.max(0))
    # square (α and β drawn to the same scale) and no wider than the anchors plus the margins
    assert hi[0] - lo[0] == pytest.approx(hi[1] - lo[1])
    assert hi[0] - lo[0] <= 3.0 + 2 * 0.25 * diam + 1e-12
    full = rp._full_window(frame, far, 0.25)
    assert full[1][0] >= 1000 and rp._needs_overview((lo, hi), full)
    near = {"bezier": {"plane_xy": {"xy": np.stack([3 * t, np.sin(np.pi * t)], 1)}}}
    assert not rp._needs_overview((lo, hi), rp._full_window(frame, near, 0.25))


def _fake_job(far: float = 1000.0):
    """The records plane.png and paths.png are drawn from, for a job whose Theorem 11 path goes
    `far` units out while the minima lie a few units apart, with F up to 1.5e11 on the overview."""
    from jaxland.experiments import _reproduce as rp

    t = np.linspace(0, 1, 65)
    anchors = np.array([[0.0, 0.0], [10.0, 0.0], [-3.0, 10.0]])
    xy = {"straight_a_b": np.stack([10 * t, 0 * t], 1),
          "straight_a_star": np.stack([-3 * t, 10 * t], 1),
          "theorem11": np.stack([far * np.sin(np.pi * t), far / 2 * np.sin(2 * np.pi * t)], 1),
          "bezier": np.stack([10 * t, -np.sin(np.pi * t)], 1)}
    paths = {k: {"t": t, "F": 0.003 + 0.01 * np.sin(np.pi * t) ** 2, "barrier": b,
                 "plane_xy": {"t": t, "xy": v}}
             for (k, v), b in zip(xy.items(), (0.04, 0.01, 4.66e-10, 0.0), strict=True)}
    frame = rp.Slice(None, None, None, None, None, None, anchors)
    zoom = rp._zoom_window(frame, 0.25)
    full = rp._full_window(frame, paths, 0.25)
    assert rp._needs_overview(zoom, full)
    L = rp._linthresh(zoom, full)
    assert None not in L  # the excursion reaches past 5 L on both axes

    def grid(lo, hi, symlog):
        al = rp._symlog_grid(lo[0], hi[0], L[0], 31) if symlog else np.linspace(lo[0], hi[0], 31)
        be = rp._symlog_grid(lo[1], hi[1], L[1], 31) if symlog else np.linspace(lo[1], hi[1], 31)
        A, B = np.meshgrid(al, be, indexing="ij")
        return {"alphas": al, "betas": be, "F": 0.0025 + 0.3 * (A**2 + B**2) ** 2,
                "anchors": anchors}

    planes = {"plane_zoom": grid(*zoom, False),
              "plane_overview": {**grid(*full, True), "linthresh": L}}
    assert np.max(planes["plane_overview"]["F"]) > 1e11
    return planes, paths, [0.003, 0.0028, 0.0025]


def test_reproduce_figures_one_colour_per_path_and_a_visible_zoom_window():
    """Issue 22: a path has the same colour in paths.png and plane.png; the overview's dashed
    window is not a dot (symlog axes, linear on the window) and its colour scale is clipped."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex
    from matplotlib.patches import Rectangle

    from jaxland.experiments import _reproduce as rp

    planes, paths, anchor_F = _fake_job()
    seg = rp._segments_figure(paths, rounding=3.5e-9)
    plane = rp._plane_figure(planes, paths, anchor_F)
    try:
        seg_colours = {ln.get_label().split(" (")[0]: to_hex(ln.get_color())
                       for ln in seg.axes[0].get_lines()}
        labels = [ln.get_label() for ln in seg.axes[0].get_lines()]
        # a barrier at the rounding level reads 0
        assert "theorem11 (barrier 0 (rounding))" in labels and "bezier (barrier 0 (rounding))" in labels
        assert "straight_a_b (barrier 0.04)" in labels
        zoom_ax, over_ax = plane.axes[0], plane.axes[1]  # axes 2 and 3 are the colour bars
        for ax in (zoom_ax, over_ax):
            plane_colours = {ln.get_label().split(" (")[0]: to_hex(ln.get_color())
                             for ln in ax.get_lines() if not ln.get_label().startswith("_")}
            assert plane_colours == seg_colours and len(seg_colours) == 4
        assert len(set(seg_colours.values())) == 4
        # the overview: symlog axes; the dashed window covers a real part of the panel
        assert over_ax.get_xscale() == "symlog" and over_ax.get_yscale() == "symlog"
        rect = next(p for p in over_ax.patches if isinstance(p, Rectangle) and p.get_ls() == "--")
        plane.canvas.draw()
        box = rect.get_window_extent()
        panel = over_ax.get_window_extent()
        assert box.width > 0.15 * panel.width and box.height > 0.15 * panel.height, (box, panel)
        # the colour scale stops at OVERVIEW_TOP × the minima's highest F, not at 1.5e11
        cbar = plane.axes[3]
        assert cbar.get_ylim()[1] == pytest.approx(rp.OVERVIEW_TOP * max(anchor_F), rel=1e-6)
    finally:
        plt.close(seg)
        plt.close(plane)


def test_symlog_grid_spans_the_window_and_is_even_in_the_picture():
    from jaxland.experiments import _reproduce as rp

    g = rp._symlog_grid(-700.0, 1300.0, 14.0, 61)
    assert g[0] == pytest.approx(-700.0) and g[-1] == pytest.approx(1300.0)
    assert np.all(np.diff(g) > 0)
    u = rp._symlog(g, 14.0)
    np.testing.assert_allclose(np.diff(u), np.diff(u)[0], rtol=1e-9)  # even steps on the axis
    assert np.sum(np.abs(g) <= 14.0) >= 8  # the linear part keeps its share of the points
    np.testing.assert_allclose(rp._symlog_inv(rp._symlog(g, 14.0), 14.0), g, rtol=1e-12)
    # an overview axis that stays within 5 L of the origin is linear (the quick preset's β)
    zoom = (np.array([-2.0, -3.0]), np.array([9.0, 8.0]))
    assert rp._linthresh(zoom, (np.array([-3.0, -3.5]), np.array([60.0, 8.3]))) == [9.0, None]


def test_format_barrier_prints_rounding_as_zero():
    from jaxland.experiments._reproduce import barrier_rounding_level, format_barrier

    r = barrier_rounding_level("float32", [0.003, -0.0029])
    assert r == pytest.approx(10 * np.finfo(np.float32).eps * 0.003)
    assert format_barrier(4.66e-10, r).startswith("0 (raw 4.66e-10")
    assert format_barrier(0.0, r) == "0"
    assert format_barrier(0.0435, r) == "0.0435"
