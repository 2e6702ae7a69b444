"""The width-scaling study of Theorem 11 (`jaxland.scaling`): depth certificate vs width m.

    python benchmarks/scaling.py --quick          # < 3 minutes on 2 CPU cores
    python benchmarks/scaling.py                  # the full default grid (< 45 minutes)
    python benchmarks/scaling.py --ms 32 128 512 2048 8192 32768 --seeds 0 1 2 3 4   # wider, on a GPU

Prints the slope table (excess, merge rise and merge angle against m, with 95% intervals, next to the
predicted (η−1)/n) and the skip / no-skip barrier medians; writes one JSON record per configuration
(m, n, η, seed) to benchmarks/results/scaling.json (the full report, figures included, lives in --out).
Resumable: rerunning with the same --out skips the finished runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

import jaxland
from jaxland.experiments._store import to_jsonable


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the quick preset")
    p.add_argument("--preset", choices=jaxland.experiments._scaling.SCALING_PRESETS, default=None)
    p.add_argument("--out", default=None, help="run folder (default benchmarks/results/scaling_<preset>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ms", type=int, nargs="+", default=None, help="widths (replace the preset's)")
    p.add_argument("--ns", type=int, nargs="+", default=None, help="input dimensions")
    p.add_argument("--etas", type=float, nargs="+", default=None, help="η values in (0, 1)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seed offsets")
    p.add_argument("--x64", action="store_true")
    args = p.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    preset = args.preset or ("quick" if args.quick else "full")
    here = Path(__file__).resolve().parent
    out = Path(args.out) if args.out else here / "results" / f"scaling_{preset}"
    t0 = time.perf_counter()
    report = jaxland.scaling(out, preset=preset, seed=args.seed, ms=args.ms, ns=args.ns,
                             etas=args.etas, seeds=args.seeds)
    wall = time.perf_counter() - t0
    print(jaxland.format_table(report))
    print(f"\n{report['runs_computed']} runs computed, {report['runs_loaded']} loaded, "
          f"{wall:.1f} s wall on {jax.devices()[0].platform}; report: {out / 'scaling.json'}")
    records = [{**row, "preset": preset, "device": jax.devices()[0].platform} for row in report["table"]]
    dest = here / "results" / "scaling.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(to_jsonable({"records": records, "fits": report["fits"],
                                            "wall_seconds": wall}), indent=1))
    print(f"records: {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
