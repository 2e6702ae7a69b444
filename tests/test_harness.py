"""benchmarks/_harness.py: each side in its own child process, best and median over processes."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _harness as H  # noqa: E402


def test_check_imports_names_the_other_side():
    import jax  # noqa: F401  (this process has jax: a torch-side child here would be refused)

    assert "jax" in H.check_imports("torch")


def test_run_child_and_state(tmp_path):
    rec = H.run_child("torch", "_harness", "machine_meta", {})
    assert rec["ok"] and rec["imported_other_side"] == [] and rec["pid"] > 0
    st = H.State(tmp_path / "s.json", resume=False)
    st.put("k", 0, dict(rec, methods={"m": {"best_s": 2.0}}))
    st.put("k", 1, dict(rec, methods={"m": {"best_s": 1.0}}))
    st.put("k", 2, dict(rec, methods={"m": {"best_s": 4.0}}))
    again = H.State(tmp_path / "s.json", resume=True)  # resumable: the finished children stay
    s = H.summary(again.results("k"), "m", points=8, flops=8e9, peak=4e9)
    assert (s["best_s"], s["median_s"], s["processes"]) == (1.0, 2.0, 3)
    assert s["best_points_per_s"] == 8.0 and s["median_fraction_of_peak"] == pytest.approx(1.0)
    r = H.ratios(s, dict(best_s=3.0, median_s=6.0))
    assert r == dict(best_vs_peer_best=3.0, median_vs_peer_best=1.5, median_vs_peer_median=3.0)


def test_failed_child_is_reported(tmp_path):
    rec = H.run_child("jax", "_harness", "no_such_function", {})
    assert not rec["ok"] and "no_such_function" in rec["error"]
