"""Weight matching against width, next to one straight-segment evaluation (issue 14, §4).

For SkipNet at m ∈ {256, 1024, 4096, 16384} (n = 16, d_g = d_o = 64, one hidden layer of 64 in g,
d_y = 1, float32, two independent `SkipNet.init` draws) it times `jaxland.align(a, b, key=…)`
(weight matching: relaxed start, then sweeps over the groups until none improves) and reports the
sweeps (`AlignResult.iterations`), the number of linear assignments and the time spent in
`jaxland.alignment._assignment.linear_assignment` (scipy's dense solver below d = 4096, a candidate
graph from it on); ``--solvers`` compares the assignment solvers on the same cost matrices, the cosine between a and b before and after, and the
process's peak resident memory. Side by side, in the same run, it times one evaluation of
F = mean squared error + 10⁻³ R on N = 1024 samples at 257 points of the straight segment from a to
b (`jaxland.evaluate_path`, after a warm-up call that compiles), so that the cost of aligning is put
in proportion to the cost of the measurement it precedes.

    nice -n 5 python benchmarks/bench_align.py            # all four widths (the largest: minutes)
    nice -n 5 python benchmarks/bench_align.py --quick    # m ∈ {256, 1024}, 1 repeat

Timings are medians over `--repeats` runs for m ≤ 1024 and a single run above (one m = 16 384
alignment takes minutes and 2 GiB). `--reuse FILE --reuse-sizes 16384` copies the rows of those
widths from an earlier JSON instead of measuring them (marked `"reused_from"`; for a loaded machine
where the largest width would take too long). Writes a table to stdout and JSON to `--out`
(default `benchmarks/results/bench_align.json`), with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxland
from jaxland._params import num_params, tree_norm
from jaxland.alignment import _align as align_module

N_IN, D_G, D_O, HIDDEN, N_SAMPLES, POINTS, KAPPA = 16, 64, 64, (64,), 1024, 257, 1e-3
SIZES, QUICK_SIZES = (256, 1024, 4096, 16384), (256, 1024)


class _LapTimer:
    """Wraps the module's `linear_assignment` to count calls and time them (benchmark only)."""

    def __init__(self):
        self.calls, self.seconds = 0, 0.0
        self._orig = align_module.linear_assignment

    def __call__(self, C):
        t = time.perf_counter()
        out = self._orig(C)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out

    def __enter__(self):
        align_module.linear_assignment = self
        return self

    def __exit__(self, *exc):
        align_module.linear_assignment = self._orig


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _nets(m: int):
    ka, kb = jax.random.split(jax.random.PRNGKey(m))
    return tuple(jaxland.SkipNet.init(k, n=N_IN, m=m, d_y=1, d_g=D_G, d_o=D_O, hidden=HIDDEN)
                 for k in (ka, kb))


def _data():
    kx, ky = jax.random.split(jax.random.PRNGKey(2024))
    x = jax.random.normal(kx, (N_SAMPLES, N_IN))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    return x, jax.random.normal(ky, (N_SAMPLES, 1))


def bench_width(m: int, repeats: int, F, ts) -> dict:
    a, b = _nets(m)
    jax.block_until_ready((a, b))
    times, res, lap = [], None, None
    for _ in range(repeats):
        with _LapTimer() as lt:
            t = time.perf_counter()
            res = jaxland.align(a, b, key=jax.random.PRNGKey(0))
            jax.block_until_ready(jax.tree.leaves(res.net))
            times.append(time.perf_counter() - t)
        lap = lt
    path = jaxland.paths.linear(a, b)
    jax.block_until_ready(jaxland.evaluate_path(F, path, ts))  # compile
    etimes = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(jaxland.evaluate_path(F, path, ts))
        etimes.append(time.perf_counter() - t)
    h = res.history
    # every leaf of a SkipNet is permuted, so J / (‖a‖‖b‖) is the cosine between a and P b
    norms = float(tree_norm(a)) * float(tree_norm(b))
    row = {
        "m": m,
        "params": num_params(a),
        "align_seconds": statistics.median(times),
        "align_times": times,
        "iterations": res.iterations,
        "converged": res.converged,
        "assignments_per_run": lap.calls,
        "lap_seconds_per_run": lap.seconds,
        "relaxed_start_kept": bool(len(h) > 1 and h[1] > h[0]),
        "objective_identity": float(h[0]),
        "objective_final": float(h[-1]),
        "cosine_identity": float(h[0] / norms),
        "cosine_final": float(h[-1] / norms),
        "groups": {g.name: g.size for g in res.spec.groups},
        "eval_seconds": statistics.median(etimes),
        "eval_times": etimes,
        "peak_rss_mb_so_far": _rss_mb(),
    }
    row["align_over_eval"] = row["align_seconds"] / row["eval_seconds"]
    return row


def bench_solvers(m: int, max_matrices: int, optax_max: int) -> list[dict]:
    """The linear assignment solvers on the cost matrices of the hidden group (d = m) that one
    `align` run solves: scipy's dense `linear_sum_assignment` (the reference optimum),
    `_assignment.linear_assignment` (the candidate graph), `lapjv` and `lap` (LAPJV packages, when
    installed), `optax.assignment.hungarian_algorithm` (for m ≤ `optax_max`). Per solver: seconds,
    whether the permutation equals scipy's, the relative objective gap."""
    from scipy.optimize import linear_sum_assignment

    from jaxland.alignment import _assignment

    mats = []
    orig = align_module.linear_assignment

    def grab(C):
        if C.shape[0] == m and len(mats) < max_matrices:
            mats.append(C.copy())
        return orig(C)

    align_module.linear_assignment = grab
    try:
        a, b = _nets(m)
        jaxland.align(a, b, key=jax.random.PRNGKey(0))
    finally:
        align_module.linear_assignment = orig
    solvers = {"scipy": lambda C: linear_sum_assignment(C)[1],
               "linear_assignment": _assignment.linear_assignment}
    try:
        import lapjv as _lapjv

        solvers["lapjv"] = lambda C: _lapjv.lapjv(C)[0]
    except ImportError:
        pass
    try:
        import lap as _lap

        solvers["lap"] = lambda C: _lap.lapjv(C, extend_cost=False, return_cost=False)[0]
    except ImportError:
        pass
    if m <= optax_max:
        import optax

        hung = jax.jit(optax.assignment.hungarian_algorithm)

        def opt(C):
            r, c = hung(jnp.asarray(C, jnp.float32))
            out = np.empty(m, np.int64)
            out[np.asarray(r)] = np.asarray(c)
            return out

        opt(mats[0][:m, :m])  # compile
        solvers["optax_hungarian"] = opt
    rows = []
    for i, C in enumerate(mats):
        ar = np.arange(m)
        ref = None
        for name, solve in solvers.items():
            t = time.perf_counter()
            p = np.asarray(solve(C))
            sec = time.perf_counter() - t
            if ref is None:
                ref = p
            opt_val = float(C[ar, ref].sum())
            rows.append(dict(m=m, matrix=i, solver=name, seconds=sec,
                             same_as_scipy=bool(np.array_equal(p, ref)),
                             rel_gap=(float(C[ar, p].sum()) - opt_val) / abs(opt_val),
                             loadavg=os.getloadavg()[0]))
            print(f"  m={m} matrix {i} {name:<18} {sec:8.2f} s  same {rows[-1]['same_as_scipy']}"
                  f"  gap {rows[-1]['rel_gap']:.1e}", flush=True)
    return rows


def _print_row(r: dict) -> None:
    mark = "*" if "reused_from" in r else " "
    print(f"{r['m']:>6}{mark} {r['params']:>9} {r['align_seconds']:>9.3f} {r['iterations']:>6} "
          f"{r['assignments_per_run']:>5} {r['lap_seconds_per_run']:>8.3f} "
          f"{r['cosine_identity']:>6.3f}→{r['cosine_final']:>5.3f} "
          f"{r['eval_seconds']:>10.3f} {r['align_over_eval']:>10.2f} "
          f"{r['peak_rss_mb_so_far']:>8.0f}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"m in {QUICK_SIZES}, 1 repeat")
    p.add_argument("--sizes", type=int, nargs="*", default=None, help=f"widths (default {SIZES})")
    p.add_argument("--repeats", type=int, default=None, help="runs per width for m <= 1024 "
                   "(default 3; quick 1)")
    p.add_argument("--reuse", default=None, help="an earlier bench_align JSON to take rows from")
    p.add_argument("--reuse-sizes", type=int, nargs="*", default=(),
                   help="widths whose rows are taken from --reuse instead of measured")
    p.add_argument("--solvers", action="store_true",
                   help="instead: the assignment solvers on the hidden group's cost matrices of one "
                        "align run per width (default widths 1024, 4096; writes bench_align_solvers.json)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_align.json"))
    args = p.parse_args(argv)
    if args.solvers:
        rows = []
        for m in args.sizes or (1024, 4096):
            rows += bench_solvers(m, max_matrices=2, optax_max=1024)
        out = Path(args.out).with_name("bench_align_solvers.json")
        out.write_text(json.dumps(dict(meta=dict(
            benchmark="bench_align --solvers", loadavg=os.getloadavg(), cpu_count=os.cpu_count(),
            scipy=__import__("scipy").__version__, time=time.strftime("%Y-%m-%dT%H:%M:%S%z")),
            rows=rows), indent=1))
        print(f"wrote {out}")
        return 0
    sizes = sorted(args.sizes or (QUICK_SIZES if args.quick else SIZES))
    repeats = args.repeats or (1 if args.quick else 3)
    reused = {}
    if args.reuse_sizes:
        if args.reuse is None:
            p.error("--reuse-sizes needs --reuse FILE")
        prev = json.loads(Path(args.reuse).read_text())
        for r in prev["rows"]:
            if r["m"] in args.reuse_sizes:
                reused[r["m"]] = {**r, "reused_from": args.reuse,
                                  "reused_meta": prev.get("meta", prev.get("machine"))}
        missing = sorted(set(args.reuse_sizes) - set(reused))
        if missing:
            p.error(f"--reuse {args.reuse} has no rows for widths {missing}")
    x, y = _data()
    F = jaxland.objective_fn(x, y, kappa=KAPPA)
    ts = jnp.linspace(0.0, 1.0, POINTS)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {os.cpu_count()} CPU cores; "
          f"load average {load_before[0]:.2f}")
    warm_a, warm_b = _nets(32)
    jaxland.align(warm_a, warm_b, key=jax.random.PRNGKey(0))  # imports, first host kernels
    rows = []
    hdr = (f"{'m':>7} {'params':>9} {'align s':>9} {'sweeps':>6} {'LAPs':>5} {'LAP s':>8} "
           f"{'cos a,Pb':>13} {'eval 257 s':>10} {'align/eval':>10} {'peak MB':>8}")
    print(hdr)
    print("-" * len(hdr), flush=True)
    for m in sizes:
        r = reused.get(m) or bench_width(m, repeats if m <= 1024 else 1, F, ts)
        rows.append(r)
        _print_row(r)
    if reused:
        print("* taken from an earlier run (--reuse)")
    load_after = os.getloadavg()
    meta = dict(
        benchmark="bench_align", quick=args.quick, repeats_small=repeats,
        settings={"n": N_IN, "d_g": D_G, "d_o": D_O, "hidden": list(HIDDEN), "d_y": 1,
                  "samples": N_SAMPLES, "points": POINTS, "kappa": KAPPA, "dtype": "float32",
                  "nets": "two independent SkipNet.init draws", "align": "weights, key 0"},
        jax=jax.__version__, jaxland=jaxland.__version__, numpy=np.__version__,
        scipy=__import__("scipy").__version__, device=jax.devices()[0].device_kind,
        cpu_count=os.cpu_count(), platform=platform.platform(), python=platform.python_version(),
        loadavg_before=load_before, loadavg_after=load_after,
        wall_s=time.perf_counter() - t_start, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    tmp.replace(out)
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} cores; above ~1 the machine was shared and timings are noisy)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
