"""Soak test of every path kind at CI size (issue 19): `benchmarks/soak.py --small`.

Every kind of `benchmarks.soak.KINDS` (the paths of `jaxland.paths`, and those of `connect`,
`fit_curve`, `neb` and `dss`) between trained endpoints, under eager, jit, vmap, jit∘vmap and grad, at
each (kind, dtype) in its own child process with a watchdog: a hang fails with the name of the case in
flight, never a stuck run. jit∘vmap is checked against eager values at five t (tolerance 1000·ε,
justified in `benchmarks.soak.tolerance`). CI runs the share `PAIRS` at P ∈ {1, 1000};
`python benchmarks/soak.py` runs the full matrix (both
dtypes, P up to 10 000, the issue's network sizes) and writes benchmarks/results/soak.json.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOAK = ROOT / "benchmarks" / "soak.py"
sys.path.insert(0, str(SOAK.parent))
import soak  # noqa: E402

# CI's share of the matrix (2 cores, the whole suite in ~10 min): the constructed Theorem 11 path in
# both dtypes (the one that hung), the composite paths (concat holds segments and Bézier pieces) and
# the paths that the searches return; P ∈ {1, 1000} (1000 is where the quick-start path hung).
# `python benchmarks/soak.py` runs every kind of soak.KINDS in both dtypes at P up to 10 000.
PAIRS = [("connect_skipnet", "float32"), ("connect_skipnet", "float64"), ("concat", "float64"),
         ("neb", "float32"), ("dss", "float64")]
SIZES = (1, 1000)


def test_ci_pairs_are_soak_kinds():
    assert {k for k, _ in PAIRS} <= set(soak.KINDS)
    assert {d for _, d in PAIRS} == {"float32", "float64"}


def test_soak_small(tmp_path):
    out = tmp_path / "soak.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    pairs = ",".join(f"{k}:{d}" for k, d in PAIRS)
    sizes = ",".join(map(str, SIZES))
    run = subprocess.run([sys.executable, str(SOAK), "--small", "--pairs", pairs, "--jobs", "2",
                          "--sizes", sizes,
                          "--timeout", "300", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=1800)
    results = json.loads(out.read_text())["results"]
    bad = soak.failures(results)
    assert not bad, "\n".join(bad) + "\n" + run.stdout[-2000:]
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert {(r["kind"], r["dtype"]) for r in results} == set(PAIRS)
    for r in results:
        # every (mode, P) reported, and jit∘vmap compared with eager at every P
        assert len(r["cases"]) == 1 + len(soak.MODES) * len(SIZES), r["kind"]
        for P in SIZES:
            c = r["cases"][f"jit_vmap/P={P}"]
            assert c["max_rel_err"] <= c["tol"], (r["kind"], r["dtype"], P, c)


def test_watchdog_names_the_hung_case(tmp_path):
    """A child that never returns is killed by the watchdog; the failure names the case in flight."""
    import argparse

    args = argparse.Namespace(sizes=[1], eager_cap=1, small=True, timeout=20.0)
    res = soak.run_one("_hang", "float32", args, tmp_path)
    assert res["hung"] and not res["ok"] and res["hung_case"] == "build"
    (line,) = soak.failures([res])
    assert "HANG" in line and "_hang/float32" in line and "build" in line
