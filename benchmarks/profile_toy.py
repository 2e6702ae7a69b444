"""Where the time of one `evaluate_path` call goes on the README-sized toy (issue 20 §2).

For P points of the toy SkipNet (N = 256, n = 3, m = 32, d_g = d_o = 4, hidden 4) it times, best of
``--calls`` calls each after a warm-up:

- ``fresh_lambda``: `evaluate_path(lambda net: loss(net), path, ts)` with a new lambda per call (as a
  user writes it: the trace is repeated, the compiled kernel reused);
- ``same_function``: the same function object every call (the identity cache skips the trace);
- ``kernel_only``: the compiled plain kernel alone (`_plain.plain_values` on a ready plan);
- ``objective_fn``: `evaluate_path(objective_fn(x, y), path, ts)`;
- ``arithmetic``: one 4096² float32 GEMM's rate applied to the toy's FLOPs (the roofline time).

    python benchmarks/profile_toy.py [--points 1024] [--calls 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _sides_jax as S  # noqa: E402
import jaxland  # noqa: E402
from jaxland.engine import _evaluate as ev, _plain  # noqa: E402


def best(run, calls):
    run()
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args(argv)
    a, b, x, y, fn = S.problem("toy")
    path = jaxland.paths.linear(a, b)
    ts = S.grid(args.points)
    obj = jaxland.objective_fn(x, y, kappa=0.0, loss="mse")
    same = lambda net: fn(net)  # noqa: E731
    res = {
        "fresh_lambda": best(lambda: jax.block_until_ready(
            jaxland.evaluate_path(lambda net: fn(net), path, ts)), args.calls),
        "same_function": best(lambda: jax.block_until_ready(
            jaxland.evaluate_path(same, path, ts)), args.calls),
        "objective_fn": best(lambda: jax.block_until_ready(
            jaxland.evaluate_path(obj, path, ts)), args.calls),
    }
    # the kernel alone, on the plan evaluate_path makes for `same`
    import equinox as eqx

    dyn_all, static_all = eqx.partition((same, path, None, None), eqx.is_array)
    leaves, treedef = jax.tree.flatten(dyn_all)

    def point(*args_):
        *lv, t = args_
        f, p, d, bb = eqx.combine(jax.tree.unflatten(treedef, lv), static_all)
        return ev._plain_point(f, p, t, d, bb, None, None)

    pl = _plain.plan(point, leaves, jnp.asarray(0.5, jnp.float32), identity_key=None,
                     chunk_size=None, budget=ev.default_memory_budget(), on_cpu=True,
                     num_points=len(ts))
    res["kernel_only"] = best(lambda: jax.block_until_ready(
        _plain.plain_values(pl, leaves, ts, jnp.float32)), args.calls)
    A = jnp.ones((4096, 4096), jnp.float32)
    mm = jax.jit(jnp.matmul)
    gemm = 2 * 4096**3 / best(lambda: mm(A, A).block_until_ready(), 3)
    flops = S.flops_plain(**S.SKIPNETS["toy"]) * len(ts)
    res["arithmetic"] = flops / gemm
    print(f"toy, P = {len(ts)}, group k = {pl.group} ({pl.mode}); load {os.getloadavg()[0]:.1f}; "
          f"XLA GEMM {gemm / 1e9:.0f} GFLOP/s")
    for k, v in res.items():
        print(f"  {k:<14} {1e3 * v:8.2f} ms   {len(ts) / v:10.0f} points/s")
    print(f"  host work of a fresh lambda (trace + key): {1e3 * (res['fresh_lambda'] - res['same_function']):.2f} ms; "
          f"the rest of the call around the kernel: {1e3 * (res['same_function'] - res['kernel_only']):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
