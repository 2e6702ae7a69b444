"""How often weight matching recovers a permutation planted in a residual network with BatchNorm
(issue 22, §1).

For widths w ∈ {8, 16, 30, 32, 50, 64} and `--seeds` seeds each, it builds the equinox ResNet of
`benchmarks/_resnet_models.py` (stem conv + BatchNorm, two residual blocks of w channels sharing the
residual stream, one block to w + 2 channels with a 1 × 1 projection shortcut, global average pool,
linear head; every BatchNorm scale, shift and running statistic drawn at random), finds its
permutation groups by tracing (`permutation_spec(…, example_input=x)`: 5 groups, the stream shared
by the stem and the first two blocks), draws one random permutation per group, and runs
`jaxland.align(a, apply_perms(a, planted), key=…)` (weight matching). A seed counts as recovered when
the aligned network equals `a` leaf for leaf, exactly; with `--restarts R` a failed seed is retried
with R further keys (the best objective kept), and the rate with restarts is reported too.

    nice -n 10 python benchmarks/bench_planted_resnet.py --seeds 100

Writes a table to stdout and JSON to `--out` (default benchmarks/results/bench_planted_resnet.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _resnet_models as rm  # noqa: E402

import jaxland as jl  # noqa: E402

WIDTHS = (8, 16, 30, 32, 50, 64)


def _same(u, v) -> bool:
    return all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in
               zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(v), strict=True))


def one(w: int, seed: int, restarts: int) -> dict:
    a = rm.make(jax.random.PRNGKey(seed), width=w, width2=w + 2)
    x = jnp.asarray(np.random.default_rng(seed).standard_normal((4, 1, 8, 8)), jnp.float32)
    spec = jl.permutation_spec(a, apply=rm.apply, example_input=x)
    rng = np.random.default_rng(seed + 10_000)
    planted = {g.name: rng.permutation(g.size) for g in spec.groups}
    b = jl.apply_perms(a, planted, spec)
    t0 = time.perf_counter()
    best, tries = None, 0
    for r in range(1 + restarts):
        tries += 1
        res = jl.align(a, b, spec=spec, key=jax.random.PRNGKey(seed + 1_000_003 * r))
        if best is None or res.objective > best.objective:
            best = res
        if _same(a, best.net):
            break
    return {"w": w, "seed": seed, "groups": len(spec.groups),
            "recovered_first": bool(tries == 1 and _same(a, best.net)),
            "recovered": bool(_same(a, best.net)), "tries": tries,
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--widths", type=int, nargs="*", default=list(WIDTHS))
    ap.add_argument("--out", default="benchmarks/results/bench_planted_resnet.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*BatchNorm.*")
    rows, table = [], []
    print(f"{'w':>4} {'recovered (first key)':>22} {'with restarts':>14} {'s/align':>8}")
    for w in args.widths:
        rs = [one(w, s, args.restarts) for s in range(args.seeds)]
        rows += rs
        first = sum(r["recovered_first"] for r in rs)
        total = sum(r["recovered"] for r in rs)
        sec = float(np.median([r["seconds"] for r in rs]))
        table.append({"w": w, "seeds": args.seeds, "recovered_first_key": first,
                      "recovered_with_restarts": total, "median_seconds": sec})
        print(f"{w:>4} {first:>17}/{args.seeds:<4} {total:>9}/{args.seeds:<4} {sec:>8.3f}",
              flush=True)
    out = {"table": table, "rows": rows, "restarts": args.restarts,
           "jax": jax.__version__, "platform": platform.platform(),
           "loadavg": os.getloadavg()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
