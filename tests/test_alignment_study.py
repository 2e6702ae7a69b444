"""`jaxland alignment` (jaxland.experiments._alignment): a tiny run, its invariants, resuming after
an interruption, and the minima shared with the scaling study's store."""

import json

import pytest

from jaxland.experiments._alignment import alignment, alignment_settings, format_alignment_table
from jaxland.experiments._cli import _parser, main
from jaxland.experiments._scaling import _SHARED, scaling_settings
from jaxland.experiments._store import settings_hash


class _Stop(Exception):
    pass


def _rows(report):
    return json.dumps(report["rows"], sort_keys=True)


def test_tiny_run_invariants_resume_and_shared_minima(tmp_path):
    # no certificate and no digits MLP here: their compilation alone would exceed the test's budget
    # (the quick and full runs exercise them)
    kw = dict(preset="tiny", widths=(), certificate=False, figures=False)
    seen = []

    def stop_after_one(msg):  # called after each record is written, like a Ctrl-C between runs
        seen.append(msg)
        raise _Stop

    with pytest.raises(_Stop):
        alignment(tmp_path, progress=stop_after_one, **kw)
    assert len(seen) == 1 and not (tmp_path / "alignment.json").exists()
    rep = alignment(tmp_path, progress=False, **kw)
    assert rep["runs_loaded"] == 1 and rep["runs_computed"] == 2  # SkipNet kept; the other two run
    rows = {r["model"]: r for r in rep["rows"]}
    assert set(rows) == {"SkipNet", "NoSkipNet", "TwoLayer"}
    assert rows["SkipNet"]["params"] == rows["NoSkipNet"]["params"]  # equal parameter count
    for r in rows.values():
        for method in ("weights", "activations"):
            # F is permutation invariant (R of eq. 13 too): float32 rounding of F = O(1e-1), 1e-5
            assert r[f"{method}_f_b_change"] <= 1e-5
            # the three segments share their endpoints and are refined on a grid that contains
            # them: a barrier is >= 0 up to float32 rounding
            assert r[method] >= -1e-6
        # weight matching maximises <a, P b> over every leaf of these models, from the identity:
        # the cosine between a and the aligned b cannot fall (float64 sums of float32 values)
        assert r["weights_cosine"] >= r["cosine_before"] - 1e-9
        assert r["weights_converged"] and "certificate" not in r
    # the record on disk equals the returned one; a rerun loads everything
    assert json.loads((tmp_path / "alignment.json").read_text())["rows"] == rep["rows"]
    again = alignment(tmp_path, progress=False, **kw)
    assert again["runs_computed"] == 0 and again["runs_loaded"] == 3 and _rows(again) == _rows(rep)
    assert "| 2 | 8 |" in format_alignment_table(again)

    # the minima sit in the store under the scaling study's hash: `jaxland scaling` in the same
    # folder loads them instead of training again
    s = scaling_settings(preset="tiny")
    tag = settings_hash({**{k: s[k] for k in _SHARED}, "m": 8, "n": 2, "seed": 0})
    for prefix in ("skip", "noskip", "two"):
        for which in ("a", "b"):
            assert (tmp_path / "stages" / f"{prefix}_{which}_m8_n2_s0.{tag}.eqx").exists()


def test_settings_and_cli():
    s = alignment_settings(preset="full")
    assert s["ms"] == (32, 128, 512, 2048, 4096) and s["ns"] == (2, 3, 5) and len(s["seeds"]) >= 2
    assert s["etas"] == (0.5,) and s["steps"] == scaling_settings(preset="full")["steps"]
    w = alignment_settings(preset="tiny", ms=(16,), widths=(), overrides={"digit_steps": 3,
                                                                          "samples": 20})
    assert w["ms"] == (16,) and w["widths"] == () and w["digit_steps"] == 3 and w["samples"] == 20
    with pytest.raises(ValueError, match="preset"):
        alignment_settings(preset="huge")
    with pytest.raises(ValueError, match="overrides"):
        alignment_settings(overrides={"bogus": 1})
    args = _parser().parse_args(["alignment", "--out", "x", "--quick"])
    assert args.command == "alignment" and args.quick and args.out == "x"


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["alignment", "--out", str(f), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out" in err and "is not a folder" in err
    with pytest.raises(ValueError, match="is not a folder"):
        alignment(f, preset="tiny")
