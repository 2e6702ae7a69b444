"""Benchmark: construction and evaluation time of `jaxland.connect`, the Theorem 11 path (issue 4).

Problem per width m: `SkipNet` (eq. 3) with N = 512 samples on the unit sphere S^{n−1}, n = 8,
d_g = d_o = 16, g with one hidden layer of 16 units, d_y = 1, "mse", κ = 0.01, float32; net_a and
net_b are two random networks (`SkipNet.init`), ξ* a random `TwoLayer` with l = ⌊m^η⌋ units,
η = 0.5 (so ε = m^{(η−1)/n}).

Measured side by side in one run (medians of `--repeats` runs after one warm-up, each ending in
`block_until_ready`):

- ``construct``  `jaxland.construct_path` (both merge plans with chunked cosines, both halves and the
  join; one jitted call);
- ``certify``    `jaxland.certify` with the defaults (257 points per segment + 2 refinement levels of
  17), i.e. `Certificate.n_evals` evaluations of F;
- ``linear``     the peer: `jaxland.evaluate_path` of the objective on the straight segment
  `jaxland.paths.linear(net_a, net_b)` at the same number of points (what a plain barrier check costs);
  reported as the ratio certify / linear (per F evaluation the constructed path is costlier: its
  segments are not affine in the parameters, and some need a pseudoinverse).

Run ``python benchmarks/bench_connect.py`` (m up to 16 384; long on a CPU) or ``--quick`` (m = 256,
1024). Results go to ``benchmarks/results/bench_connect.json``, one record per m.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxland

HERE = Path(__file__).resolve().parent
FULL = (256, 1024, 4096, 16384)
QUICK = (256, 1024)
N, n, D, ETA, KAPPA = 512, 8, 16, 0.5, 0.01


def _problem(m: int, key):
    kx, ka, kb, ks = jax.random.split(key, 4)
    x = jax.random.normal(kx, (N, n))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jnp.sin(3 * x[:, :1]) + x[:, 1:2] * x[:, 2:3]
    kw = dict(n=n, m=m, d_g=D, d_o=D, hidden=(D,))
    a = jaxland.SkipNet.init(ka, **kw)
    b = jaxland.SkipNet.init(kb, **kw)
    l = int(min(max(1, math.floor(m**ETA + 1e-9)), m // 2))
    star = jaxland.TwoLayer.init(ks, n=n, m=l)
    return x, y, a, b, star


def _time(fn, repeats: int) -> tuple[float, object]:
    out = fn()
    jax.block_until_ready(out)  # warm-up (compilation)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def _measure(m: int, repeats: int) -> dict:
    x, y, a, b, star = _problem(m, jax.random.PRNGKey(m))
    eps = jaxland.lemma9_eps(m, n, ETA)
    t0 = time.perf_counter()
    path, pa, pb = jaxland.construct_path(a, b, star, eps=eps)
    jax.block_until_ready(path)
    construct_first = time.perf_counter() - t0
    t_con, (path, pa, pb) = _time(lambda: jaxland.construct_path(a, b, star, eps=eps), repeats)
    f_star = jaxland.objective(star, x, y, kappa=KAPPA)

    def cert():
        return jaxland.certify(path, a, b, x, y, kappa=KAPPA, f_star=f_star, eta=ETA, eps=eps,
                               plans=(pa, pb))

    t0 = time.perf_counter()
    jax.block_until_ready(cert())
    certify_first = time.perf_counter() - t0
    t_cert, c = _time(cert, repeats)
    P = int(c.n_evals)
    obj = jaxland.objective_fn(x, y, kappa=KAPPA)
    seg = jaxland.paths.linear(a, b)
    ts = np.linspace(0.0, 1.0, P)
    t_lin, _ = _time(lambda: jaxland.evaluate_path(obj, seg, ts), repeats)
    rec = dict(
        m=m, N=N, n=n, l=int(c.l), eps=eps, segments=path.num_segments, evaluations=P,
        construct_s=t_con, construct_first_call_s=construct_first,
        certify_s=t_cert, certify_first_call_s=certify_first,
        certify_per_eval_us=1e6 * t_cert / P, linear_eval_s=t_lin,
        ratio_certify_over_linear=t_cert / t_lin,
        f_max=float(c.f_max), excess=float(c.excess),
        max_merge_angle=float(c.max_merge_angle), rank_failures=int(c.rank_failures),
        attained_by=c.attained_by,
        device=str(jax.devices()[0]), platform=platform.platform(), repeats=repeats,
    )
    print(f"{m:>6} {rec['l']:>4} {t_con:>10.3f} {construct_first:>10.2f} {t_cert:>10.3f} "
          f"{certify_first:>10.2f} {rec['certify_per_eval_us']:>9.1f} {t_lin:>9.3f} "
          f"{rec['ratio_certify_over_linear']:>7.2f} {rec['excess']:>+9.4f}", flush=True)
    return rec


def run(sizes, repeats: int) -> list[dict]:
    return [_measure(m, repeats) for m in sizes]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="m = 256 and 1024 only")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_connect.json"))
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    print(f"connect benchmark on {jax.devices()[0]} (N = {N}, n = {n}, eta = {ETA}); times in s, "
          "medians after warm-up")
    print(f"{'m':>6} {'l':>4} {'construct':>10} {'(1st)':>10} {'certify':>10} {'(1st)':>10} "
          f"{'us/eval':>9} {'linear':>9} {'ratio':>7} {'excess':>9}")
    records = run(sizes, args.repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
