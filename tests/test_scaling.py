"""The width-scaling study (jaxland.experiments._scaling): slope fits, settings, and resuming after an interruption."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jaxland


@settings(max_examples=10, deadline=None)
@given(p=st.floats(-1.5, 0.5), c=st.floats(0.01, 10.0), k=st.integers(3, 6))
def test_fit_slope_exact_power_law(p, c, k):
    m = 2.0 ** np.arange(3, 3 + k)
    f = jaxland.fit_slope(m, c * m**p)
    # an exact power law: slope and intercept recovered to rounding, and a (near-)zero-width interval
    assert f["slope"] == pytest.approx(p, abs=1e-9)
    assert f["intercept"] == pytest.approx(math.log(c), abs=1e-8)
    assert f["ci_high"] - f["ci_low"] < 1e-6
    assert f["points"] == k and f["left_out"] == 0


def test_fit_slope_noise_and_left_out():
    rng = np.random.default_rng(0)
    m = np.repeat([32.0, 128.0, 512.0, 2048.0], 5)
    hits = 0
    for _ in range(200):
        v = 3 * m**-0.25 * np.exp(rng.normal(0, 0.2, m.size))
        f = jaxland.fit_slope(m, v)
        hits += f["ci_low"] <= -0.25 <= f["ci_high"]
    # a 95% interval covers the true slope in ~95% of draws: 200 draws put the count above 180
    # with probability > 0.999 (binomial, p = 0.95)
    assert hits >= 180
    f = jaxland.fit_slope([8, 16, 32, 64], [1.0, 0.0, -2.0, 0.5])
    assert f["points"] == 2 and f["left_out"] == 2 and np.isnan(f["ci_low"])  # 0 dof: no interval
    f = jaxland.fit_slope([8, 16, 32], [1e-9, 0.5, 0.25], floor=1e-6)  # below the floor: left out
    assert f["points"] == 2 and f["slope"] == pytest.approx(-1.0)
    assert f["no_fit"] == "no interval: 2 points, an interval needs 3"
    f = jaxland.fit_slope([8, 8], [1.0, 2.0])
    assert np.isnan(f["slope"]) and f["distinct_m"] == 1 and "too few widths" in f["no_fit"]
    f = jaxland.fit_slope([8, 16, 32], [1.0, -1.0, 0.0])  # two of three left out: one width left
    assert f["no_fit"].startswith("too few widths to fit: 1 distinct m") and "2 values" in f["no_fit"]
    assert jaxland.fit_slope([8, 16, 32], [1.0, 0.5, 0.25])["no_fit"] is None
    with pytest.raises(ValueError, match="equal length"):
        jaxland.fit_slope([1, 2], [1.0])


def test_settings():
    s = jaxland.scaling_settings(preset="full")
    assert s["ms"][0] == 32 and s["ms"][-1] >= 8192  # two decades and more
    assert s["ns"] == (2, 3, 5) and s["etas"] == (0.25, 0.5, 0.75)
    w = jaxland.scaling_settings(preset="tiny", ms=(64, 16), seeds=range(3), seed=10,
                                 overrides={"samples": 20})
    assert w["ms"] == (16, 64) and w["seeds"] == (10, 11, 12) and w["samples"] == 20
    with pytest.raises(ValueError, match="preset"):
        jaxland.scaling_settings(preset="huge")
    with pytest.raises(ValueError, match="overrides"):
        jaxland.scaling_settings(overrides={"ms": (1,)})
    with pytest.raises(ValueError, match="etas"):
        jaxland.scaling_settings(etas=(1.5,))
    with pytest.raises(ValueError, match="ms"):
        jaxland.scaling_settings(ms=(2,))


@pytest.mark.parametrize("command", ["scaling", "alignment"])
def test_negative_seed_is_refused_like_reproduce(command, tmp_path, capsys):
    """Seeds are checked in scaling and alignment as in reproduce: -1 is refused in one line, exit
    2, before anything is created (it used to run and name its runs `s-5`)."""
    from jaxland.experiments._alignment import alignment_settings
    from jaxland.experiments._cli import main

    out = tmp_path / "run"
    for bad in ("-1", "-5", str(2**31)):
        assert main([command, "--out", str(out), "--preset", "tiny", "--seed", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "seed must be an integer in [0, 2**31)" in err, err
        assert f"got {int(bad)}" in err
    assert not out.exists()
    settings_fn = jaxland.scaling_settings if command == "scaling" else alignment_settings
    with pytest.raises(ValueError, match="seed must be an integer"):
        settings_fn(preset="tiny", seed=-1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        settings_fn(preset="tiny", seed=True)
    # an offset that takes the base seed below 0 is a negative seed too
    with pytest.raises(ValueError, match=r"seed \+ seeds offset \(0 \+ -1\)"):
        settings_fn(preset="tiny", seeds=(-1,))


class _Stop(Exception):
    pass


def _table(report):
    return json.dumps(report["table"], sort_keys=True)


def test_resume_gives_the_same_table(tmp_path):
    # uninterrupted run
    full = jaxland.scaling(tmp_path / "a", preset="tiny", progress=False)
    total = full["runs_computed"]
    assert total == 4 and full["runs_loaded"] == 0  # 2 seeds × (one training pair + one certificate)
    assert len(full["table"]) == 2 and len(full["pairs"]) == 2
    row = full["table"][0]
    for k in ("skip_straight_barrier", "skip_searched_barrier", "noskip_straight_barrier",
              "noskip_searched_barrier", "excess", "merge_rise", "merge_loss_rise",
              "max_merge_angle"):
        assert isinstance(row[k], float) and math.isfinite(row[k]), k
    assert row["predicted_slope"] == pytest.approx((0.5 - 1) / 2)
    # equal parameter count for the skip network and its control
    p = full["pairs"][0]
    assert p["SkipNet"]["params"] == p["NoSkipNet"]["params"]
    # the searched path starts as the segment and is trained on its mean: in this tiny budget we only
    # ask that both barriers are measured (>= 0 up to rounding, the endpoints being on both paths)
    assert p["SkipNet"]["straight_barrier"] >= -1e-6 and p["SkipNet"]["searched_barrier"] >= -1e-6
    on_disk = json.loads((tmp_path / "a" / "scaling.json").read_text())
    assert on_disk["table"] == json.loads(json.dumps(full["table"]))
    assert all((tmp_path / "a" / f).exists() for f in ("scaling_excess.png", "scaling_barriers.png"))

    # interrupted run: the progress callback raises after the second finished run (it is called
    # after each run is written, like a Ctrl-C between runs)
    seen = []

    def stop_after_two(msg):
        seen.append(msg)
        if len(seen) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        jaxland.scaling(tmp_path / "b", preset="tiny", progress=stop_after_two, figures=False)
    assert not (tmp_path / "b" / "scaling.json").exists()
    resumed = jaxland.scaling(tmp_path / "b", preset="tiny", progress=False, figures=False)
    assert resumed["runs_loaded"] == 2 and resumed["runs_computed"] == total - 2
    assert _table(resumed) == _table(full)
    assert json.dumps(resumed["fits"], sort_keys=True) == json.dumps(full["fits"], sort_keys=True)

    # a rerun loads everything; deleting one certificate recomputes exactly that one
    again = jaxland.scaling(tmp_path / "b", preset="tiny", progress=False, figures=False)
    assert again["runs_computed"] == 0 and _table(again) == _table(full)
    cert = sorted((tmp_path / "b" / "stages").glob("cert_*.json"))[0]
    cert.unlink()
    once = jaxland.scaling(tmp_path / "b", preset="tiny", progress=False, figures=False)
    assert once["runs_computed"] == 1 and _table(once) == _table(full)
    # changed settings do not reuse stale runs
    other = jaxland.scaling(tmp_path / "b", preset="tiny", progress=False, figures=False,
                            seeds=(0,), overrides={"noise": 0.01})
    assert other["runs_computed"] == 2 and other["runs_loaded"] == 0
    assert "excess" in jaxland.format_table(full)
    # one width (the tiny preset): no slope, and the table and the JSON say why (issue 22)
    for q in ("excess", "merge_loss_rise", "merge_angle"):
        f = on_disk["fits"][0][q]
        assert f["slope"] == "nan" and f["no_fit"].startswith("too few widths to fit: 1 distinct m")
    table = jaxland.format_table(full)
    assert "nan" not in table and "no fit: 1 width(s), needs 2" in table
    assert "note: too few widths to fit: 1 distinct m" in table


def test_figures_redrawn_from_a_saved_report(tmp_path):
    """The README's figures come from docs/scaling_full.json without rerunning the study; one colour
    per quantity in every panel, one legend, predicted lines in their quantity's colour, log axes
    with positive limits only."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    from jaxland.experiments import _scaling as sc

    src = Path(__file__).parent.parent / "docs" / "scaling_full.json"
    rep = json.loads(src.read_text())
    # replot writes PNGs (one cell of the grid, to keep the test cheap)
    sub = {**rep, "settings": {**rep["settings"], "ns": [2], "etas": [0.5]},
           "table": [r for r in rep["table"] if r["n"] == 2 and r["eta"] == 0.5],
           "fits": [f for f in rep["fits"] if f["n"] == 2 and f["eta"] == 0.5],
           "pairs": [p for p in rep["pairs"] if p["n"] == 2]}
    (tmp_path / "scaling.json").write_text(json.dumps(sub))
    files = jaxland.experiments.replot_scaling(tmp_path)
    assert [Path(f).name for f in files] == ["scaling_excess.png", "scaling_barriers.png"]
    assert all(Path(f).read_bytes()[:4] == b"\x89PNG" for f in files)

    colours = {mk: c for _, _, _, _, c, mk in sc._QUANTITIES}
    fig = sc._excess_figure(rep["table"], rep["fits"], rep["settings"])
    try:
        assert len(fig.legends) == 1
        for ax in fig.axes:
            assert ax.get_legend() is None and ax.get_yscale() == "log" and ax.get_ylim()[0] > 0
            lines = ax.get_lines()
            markers = {ln.get_marker(): ln.get_color() for ln in lines
                       if ln.get_marker() in colours}
            for mk, c in markers.items():
                assert c == colours[mk]  # the same colour for a quantity in every panel
            dashed = [ln.get_color() for ln in lines if ln.get_linestyle() == "--"]
            # each predicted line is drawn in the colour of a quantity plotted in the same panel
            assert dashed and set(dashed) <= set(markers.values())
    finally:
        plt.close(fig)
    fig = sc._barrier_figure(rep["pairs"], rep["fits"], rep["settings"])
    try:
        assert len(fig.legends) == 1
        for ax in fig.axes:
            # barriers are never negative: a log axis from a positive floor, no symlog
            assert ax.get_yscale() == "log" and ax.get_ylim()[0] > 0 and ax.get_legend() is None
    finally:
        plt.close(fig)
    with pytest.raises(FileNotFoundError, match="no scaling report"):
        jaxland.experiments.replot_scaling(tmp_path / "nothing")
