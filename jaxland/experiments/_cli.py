"""The `jaxland` command line: `jaxland reproduce` (the main job), `jaxland scaling`,
`jaxland alignment` and `jaxland figure1`.

Bad arguments (an output path that is a file or cannot be written, an unknown data set, a missing
optional package) are reported in one line with exit code 2 before anything is computed or created.
Ctrl-C ends the run with exit code 130 and one line saying how to resume: every finished stage is
already on disk, and running the same command again continues from there.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command ended by Ctrl-C


def _parser() -> argparse.ArgumentParser:
    from .._version import VERSION
    from ..data import DATASETS

    p = argparse.ArgumentParser(prog="jaxland", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"jaxland {VERSION}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="train minima, build and evaluate paths, write report.json")
    r.add_argument("--out", required=True, help="output folder (finished stages are reused)")
    r.add_argument("--quick", action="store_true", help="small preset, < 2 minutes on 2 CPU cores")
    r.add_argument("--preset", choices=("tiny", "quick", "full"), default=None,
                   help="size preset (--quick is --preset quick; tiny is the test suite's smoke run)")
    r.add_argument("--data", choices=DATASETS, default="default", help="data set")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--x64", action="store_true", help="compute in float64")
    c = sub.add_parser("scaling", help="the width-scaling study of Theorem 11 (resumable)")
    c.add_argument("--out", default=None,
                   help="output folder (finished runs are reused); required unless --replot")
    c.add_argument("--quick", action="store_true", help="small grid, < 3 minutes on 2 CPU cores")
    c.add_argument("--preset", choices=("tiny", "quick", "full"), default=None,
                   help="grid preset (--quick is --preset quick)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--x64", action="store_true", help="compute in float64")
    c.add_argument("--replot", metavar="REPORT", default=None,
                   help="only redraw the figures of a finished study from its scaling.json (or the "
                        "folder holding it), into --out or beside the report; nothing is computed")
    al = sub.add_parser("alignment", help="does the skip connection's advantage survive "
                        "permutation alignment? (resumable)")
    al.add_argument("--out", required=True, help="output folder (finished runs are reused; shared "
                    "with `jaxland scaling`)")
    al.add_argument("--quick", action="store_true", help="small grid, < 3 minutes on 2 CPU cores")
    al.add_argument("--preset", choices=("tiny", "quick", "full"), default=None,
                    help="grid preset (--quick is --preset quick)")
    al.add_argument("--seed", type=int, default=0)
    al.add_argument("--x64", action="store_true", help="compute in float64")
    f1 = sub.add_parser("figure1", help="the paper's Figure 1 measured: loss surfaces of deep "
                        "residual CNNs with and without skip connections (resumable)")
    f1.add_argument("--out", required=True, help="output folder (finished stages are reused)")
    f1.add_argument("--quick", action="store_true", help="depths 8 and 20, 21×21 grid, ≤ 6 minutes "
                    "on 2 CPU cores")
    f1.add_argument("--preset", choices=("tiny", "quick", "full"), default=None,
                    help="size preset (--quick is --preset quick; tiny is the test suite's smoke run)")
    f1.add_argument("--seed", type=int, default=0)
    f1.add_argument("--x64", action="store_true", help="compute in float64")
    return p


def _fail(command: str, msg: str) -> int:
    print(f"jaxland {command}: error: {msg}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def _interrupted(argv: list[str]) -> None:
    """Report Ctrl-C in one line and leave at once with 130.

    `os._exit`, not `sys.exit`: a KeyboardInterrupt that lands while XLA compiles leaves the
    runtime's threads in a state where the interpreter's normal teardown can crash (a segmentation
    fault, exit −11). Nothing is lost by skipping it: every finished stage was written atomically.
    """
    cmd = shlex.join(["jaxland", *argv])
    print(f"\njaxland: interrupted; finished stages are saved, run the same command again to "
          f"resume: {cmd}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        _interrupted(argv)
        return EXIT_INTERRUPTED  # pragma: no cover - not reached


def _run(args) -> int:
    preset = args.preset or ("quick" if args.quick else "full")
    if args.command == "reproduce":
        from ._reproduce import format_barrier, preflight, reproduce, reproduce_settings

        try:
            reproduce_settings(preset=preset, data=args.data, seed=args.seed)
            preflight(args.out, data=args.data, name="--out")
        except (ValueError, TypeError, ImportError) as e:
            return _fail("reproduce", str(e))
        _set_x64(args.x64)
        report = reproduce(args.out, preset=preset, data=args.data, seed=args.seed)
        for name, rec in report["paths"].items():
            b = format_barrier(rec["barrier"], report["barrier_rounding_level"])
            print(f"{name:>24}: max F {rec['f_max']:.6g}  barrier {b}")
        return 0
    if args.command == "scaling":
        from ._preflight import check_out_dir, require
        from ._scaling import format_table, replot_scaling, scaling, scaling_settings

        try:
            require("matplotlib", "jaxland scaling (it draws PNG figures)")
            if args.replot is not None:
                if args.out is not None:
                    check_out_dir(args.out, "--out")
                for f in replot_scaling(args.replot, args.out):
                    print(f)
                return 0
            if args.out is None:
                raise ValueError("--out is required (the output folder), unless --replot is given")
            scaling_settings(preset=preset, seed=args.seed)
            check_out_dir(args.out, "--out")
        except (ValueError, TypeError, ImportError, FileNotFoundError) as e:
            return _fail("scaling", str(e))
        _set_x64(args.x64)
        print(format_table(scaling(args.out, preset=preset, seed=args.seed)))
        return 0
    if args.command == "alignment":
        from ._alignment import alignment, alignment_settings, format_alignment_table
        from ._preflight import check_out_dir, require

        try:
            require("matplotlib", "jaxland alignment (it draws a PNG figure)")
            if alignment_settings(preset=preset, seed=args.seed)["widths"]:
                require("sklearn", "jaxland alignment (its digits MLP)")
            check_out_dir(args.out, "--out")
        except (ValueError, TypeError, ImportError, FileNotFoundError) as e:
            return _fail("alignment", str(e))
        _set_x64(args.x64)
        print(format_alignment_table(alignment(args.out, preset=preset, seed=args.seed)))
        return 0
    if args.command == "figure1":
        from ._figure1 import figure1, figure1_settings, format_figure1_table, preflight

        try:
            figure1_settings(preset=preset, seed=args.seed)
            preflight(args.out, name="--out")
        except (ValueError, TypeError, ImportError) as e:
            return _fail("figure1", str(e))
        _set_x64(args.x64)
        print(format_figure1_table(figure1(args.out, preset=preset, seed=args.seed)))
        return 0
    return EXIT_USAGE  # pragma: no cover - argparse refuses other commands


def _set_x64(on: bool) -> None:
    """--x64: float64 everywhere (after the checks, so that a refused command never imports jax)."""
    if on:
        import jax

        jax.config.update("jax_enable_x64", True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
