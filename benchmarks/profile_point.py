"""Where one point of a user's function goes: its matrix products timed one by one (issue 20 §2).

For a problem of `bench_paths.py` (default: the reference SkipNet), this traces one point
t ↦ fn(γ(t)) of the straight segment, then times, each jitted alone on arrays of its shapes (best
of ``--calls`` after a warm-up):

- ``point``: the whole point (the function at one t, jitted);
- every ``dot_general`` of the point's jaxpr (and every ``conv_general_dilated``), with its FLOPs and
  GFLOP/s;
- ``gemm``: the 4096² float32 GEMM (the peak the tables quote).

The sum of the products' own times against the point's time says how much of a point is the
products (at the rate XLA reaches on each shape) and how much is everything else (element-wise
work, memory traffic); the products' GFLOP/s against the GEMM's says how far each shape is from the
peak by itself. One process; run it on an idle machine.

    python benchmarks/profile_point.py [--problem reference] [--calls 10] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
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


def best(run, calls: int) -> float:
    jax.block_until_ready(run())
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(run())
        ts.append(time.perf_counter() - t0)
    return min(ts)


def _products(jaxpr, acc):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            acc.append(eqn)
        for v in eqn.params.values():
            for u in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(u, jax.extend.core.ClosedJaxpr):
                    _products(u.jaxpr, acc)
                elif isinstance(u, jax.extend.core.Jaxpr):
                    _products(u, acc)
    return acc


def _flops(eqn) -> float:
    out = eqn.outvars[0].aval
    if eqn.primitive.name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval
        k = int(np.prod([lhs.shape[i] for i in lc])) if lc else 1
        return 2.0 * float(np.prod(out.shape)) * k
    rhs = eqn.invars[1].aval
    spec = eqn.params["dimension_numbers"].rhs_spec
    window = int(np.prod([rhs.shape[i] for i in spec[1:]]))  # in-features × kernel window
    return 2.0 * float(np.prod(out.shape)) * window


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="reference")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    a, b, x, y, fn = S.problem(args.problem)
    path = jaxland.paths.linear(a, b)
    t = jnp.asarray(0.37, jnp.float32)
    point = jax.jit(lambda t_: fn(path(t_)))
    t_point = best(lambda: point(t), args.calls)
    closed = jax.make_jaxpr(lambda t_: fn(path(t_)))(t)
    rows, rng = [], np.random.default_rng(0)
    for eqn in _products(closed.jaxpr, []):
        ins = [jnp.asarray(rng.standard_normal(v.aval.shape), v.aval.dtype) for v in eqn.invars]
        prim, params = eqn.primitive, dict(eqn.params)
        f = jax.jit(lambda *xs, prim=prim, params=params: prim.bind(*xs, **params))
        sec = best(lambda f=f, ins=ins: f(*ins), args.calls)
        fl = _flops(eqn)
        rows.append(dict(op=prim.name, shapes=[list(v.aval.shape) for v in eqn.invars],
                         out=list(eqn.outvars[0].aval.shape), gflop=fl / 1e9, seconds=sec,
                         gflops=fl / sec / 1e9))
    A = jnp.asarray(rng.standard_normal((4096, 4096)), jnp.float32)
    mm = jax.jit(lambda p, q: p @ q)
    t_gemm = best(lambda: mm(A, A), max(3, args.calls // 2))
    peak = 2 * 4096**3 / t_gemm / 1e9
    total_fl = sum(r["gflop"] for r in rows)
    total_s = sum(r["seconds"] for r in rows)
    print(f"{args.problem}: one point {t_point * 1e3:.2f} ms; load {os.getloadavg()[0]:.1f}; "
          f"XLA GEMM 4096² {peak:.0f} GFLOP/s")
    print(f"{'op':<22} {'shapes':<40} {'GFLOP':>7} {'ms':>8} {'GFLOP/s':>8} {'% peak':>6}")
    for r in rows:
        print(f"{r['op']:<22} {' x '.join(map(str, r['shapes'])):<40} {r['gflop']:7.3f} "
              f"{r['seconds'] * 1e3:8.2f} {r['gflops']:8.1f} {100 * r['gflops'] / peak:6.0f}")
    print(f"products alone: {total_s * 1e3:.2f} ms ({100 * total_s / t_point:.0f} % of the point), "
          f"{total_fl:.3f} GFLOP at {total_fl / total_s:.0f} GFLOP/s "
          f"({100 * total_fl / total_s / peak:.0f} % of peak); the point: "
          f"{total_fl / t_point:.0f} GFLOP/s ({100 * total_fl / t_point / peak:.0f} % of peak); the "
          f"rest of the point (element-wise work, memory): {(t_point - total_s) * 1e3:.2f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(
            problem=args.problem, point_seconds=t_point, gemm_gflops=peak, products=rows,
            loadavg=os.getloadavg(), jax=jax.__version__), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
