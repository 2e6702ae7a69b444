"""The `jaxland` command line: `jaxland reproduce` (the main job) and `jaxland scaling`."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxland", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="train minima, build and evaluate paths, write report.json")
    r.add_argument("--out", required=True, help="output folder (finished stages are reused)")
    r.add_argument("--quick", action="store_true", help="small preset, < 2 minutes on 2 CPU cores")
    r.add_argument("--preset", choices=("tiny", "quick", "full"), default=None,
                   help="size preset (--quick is --preset quick; tiny is the test suite's smoke run)")
    r.add_argument("--data", default="default", help="data set: default, digits or diabetes")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--x64", action="store_true", help="compute in float64")
    c = sub.add_parser("scaling", help="the width-scaling study of Theorem 11 (resumable)")
    c.add_argument("--out", required=True, help="output folder (finished runs are reused)")
    c.add_argument("--quick", action="store_true", help="small grid, < 3 minutes on 2 CPU cores")
    c.add_argument("--preset", choices=("tiny", "quick", "full"), default=None,
                   help="grid preset (--quick is --preset quick)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--x64", action="store_true", help="compute in float64")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "x64", False):
        import jax

        jax.config.update("jax_enable_x64", True)
    if args.command == "reproduce":
        from ._reproduce import reproduce

        preset = args.preset or ("quick" if args.quick else "full")
        report = reproduce(args.out, preset=preset, data=args.data, seed=args.seed)
        for name, rec in report["paths"].items():
            print(f"{name:>24}: max F {rec['f_max']:.6g}  barrier {rec['barrier']:.4g}")
        return 0
    if args.command == "scaling":
        from ._scaling import format_table, scaling

        preset = args.preset or ("quick" if args.quick else "full")
        print(format_table(scaling(args.out, preset=preset, seed=args.seed)))
        return 0
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
