"""Speed of `jax.jit(jax.vmap(path))` on a constructed (Theorem 11) path, before and after issue 19.

The path of the issue: two SkipNets n=2, m=64, d_y=1, d_g=d_o=4, hidden=(6,), each trained 400 Adam
steps (lr 3e-3) on N=256 points of the unit circle, y = relu(x Tᵀ) c / 4, κ = 1e-3, float64;
`connect(..., eta=0.5, key=PRNGKey(1))`. Two sides, each in its own fresh processes:

- ``grouped``: `jax.jit(jax.vmap(path))(ts)` — the batching rule that groups the points by segment;
- ``select``: the code before the fix, `jax.vmap` of the plain `lax.switch` (a select over every
  segment at every point, four independent batched SVDs), the same `check_t` in front.

Each process compiles, then times `--repeats` calls at P points; the table gives best and median
points/s over all processes. A process that runs past `--timeout` is killed and reported as a hang.

    python benchmarks/bench_theorem_vmap.py            # P = 10 000, 3 processes per side
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxland as jl

    kx, kt, kc = jax.random.split(jax.random.PRNGKey(0), 3)
    ang = jax.random.uniform(kx, (256,), jnp.float64) * 2 * jnp.pi
    x = jnp.stack([jnp.cos(ang), jnp.sin(ang)], 1)
    T = jax.random.normal(kt, (8, 2), jnp.float64)
    c = jax.random.normal(kc, (8, 1), jnp.float64)
    y = jax.nn.relu(x @ T.T) @ c / 4

    def make(seed):
        net = jl.SkipNet.init(jax.random.PRNGKey(seed), n=2, m=64, d_y=1, d_g=4, d_o=4, hidden=(6,),
                              dtype=jnp.float64)
        return jl.fit(net, x, y, kappa=1e-3, steps=400, optimizer=optax.adam(3e-3)).net

    path = jl.connect(make(10), make(11), x, y, kappa=1e-3, eta=0.5, key=jax.random.PRNGKey(1)).path
    out.write_bytes(pickle.dumps(jax.tree.map(np.asarray, path)))


def measure(side: str, path_file: Path, P: int, repeats: int):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from jaxland.construct._theorem_path import _plain_point
    from jaxland.paths._paths import check_t

    path = jax.tree.map(jnp.asarray, pickle.loads(path_file.read_bytes()))
    if side == "grouped":
        f = jax.jit(jax.vmap(path))
    else:
        f = jax.jit(jax.vmap(lambda t: _plain_point(path, check_t(t), "call")))
    ts = jnp.linspace(0.0, 1.0, P)
    t0 = time.perf_counter()
    jax.block_until_ready(f(ts))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(ts))
        times.append(time.perf_counter() - t0)
    print(json.dumps(dict(side=side, P=P, compile_and_first=first, times=times)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--P", type=int, default=10000)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--sides", default="grouped,select")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_theorem_vmap.json"))
    ap.add_argument("--_build", help=argparse.SUPPRESS)
    ap.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._build:
        return build(Path(args._build))
    if args._measure:
        return measure(args._measure[0], Path(args._measure[1]), args.P, args.repeats)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    me = [sys.executable, str(Path(__file__).resolve())]
    path_file = Path(tempfile.mkdtemp()) / "path.pkl"
    subprocess.run(me + ["--_build", str(path_file)], env=env, check=True, timeout=1800)
    rows = {}
    for side in args.sides.split(","):
        runs = []
        for _ in range(args.processes):
            try:
                out = subprocess.run(me + ["--_measure", side, str(path_file), "--P", str(args.P),
                                           "--repeats", str(args.repeats)],
                                     env=env, capture_output=True, text=True, timeout=args.timeout)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0
                            else dict(error=out.stderr[-500:]))
            except subprocess.TimeoutExpired:
                runs.append(dict(hang=True, timeout=args.timeout))
        rates = [args.P / t for r in runs for t in r.get("times", [])]
        rows[side] = dict(runs=runs, hangs=sum(bool(r.get("hang")) for r in runs),
                          best_points_per_s=max(rates) if rates else None,
                          median_points_per_s=statistics.median(rates) if rates else None)
    import jax

    meta = dict(P=args.P, processes=args.processes, repeats=args.repeats, jax=jax.__version__,
                cpus=os.cpu_count())
    Path(args.out).write_text(json.dumps(dict(meta=meta, sides=rows), indent=1))
    print(f"jit(vmap(path)) of the Theorem 11 path, P = {args.P}, {args.processes} processes/side")
    print(f"{'side':10s} {'hangs':>6s} {'best pts/s':>12s} {'median pts/s':>13s}")
    for side, r in rows.items():
        b = f"{r['best_points_per_s']:12.0f}" if r["best_points_per_s"] else f"{'-':>12s}"
        m = f"{r['median_points_per_s']:13.0f}" if r["median_points_per_s"] else f"{'-':>13s}"
        print(f"{side:10s} {r['hangs']:>3d}/{len(r['runs'])} {b} {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
