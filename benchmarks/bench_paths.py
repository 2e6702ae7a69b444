"""Benchmark: F along a straight segment at P points, jaxland against loss-landscapes (issues 3, 15, 20).

Every side runs in fresh child processes of its own (`_harness.py`): the peer's children import
PyTorch and never jax, jaxland's import jax and never PyTorch; the children are interleaved (peer,
jaxland, peer, jaxland, …), ``--processes`` (5) per side; inside a child each method is timed over a
few calls after a warm-up call and its best call is the child's figure; the tables give the best and
the median over the processes. The machine's float32 GEMM peak (4096², XLA and PyTorch, each in its
own processes, interleaved with the rest) is measured in the same run, and every method's GFLOP/s
and fraction of XLA's peak are reported, from the FLOPs of one plain forward pass (model shapes;
XLA's cost analysis of one point is recorded beside it).

Problems. SkipNets (eq. 3), squared error, κ = 0, float32, the segment between two `SkipNet.init`
draws, data from `jaxland.data.sphere_teacher`:
- ``reference``: N = 4096, n = 16, m = 1024, d_g = d_o = 64, g with one hidden layer of 64, d_y = 1;
- ``wide_input``: the same with n = 784;
- ``toy``: the README quick start's size, N = 256, n = 3, m = 32, d_g = d_o = 4, hidden 4.
Equinox models (any model, issue 15 §1), a user's mean cross-entropy on N = 2048 digits-like inputs
(`_eqx_models.py`): ``mlp`` (`eqx.nn.MLP` 784-256-256-10) and ``cnn`` (Conv2d 1→16 5×5 s2, Conv2d
16→32 3×3 s2, Linear 800→10).

Methods (jaxland, `_sides_jax.paths`): ``objective_fn`` (`evaluate_path(objective_fn(x, y), path, ts)`,
its own dispatch), ``sweep`` / ``point_kernel`` (forced), ``user_function`` (`evaluate_path(lambda net:
loss(net), path, ts)`), ``jax_loop`` (one jitted point in a Python loop), ``user_function_native`` (cnn only: the same with
``conv="native"``, XLA's own convolution instead of the im2col GEMMs), ``jit_vmap`` (toy only: a
plain ``jax.jit(jax.vmap(lambda t: loss(path(t))))``). The peer (`_sides_torch`):
``loss_landscapes.linear_interpolation(a, b, Loss(loss, x, y), steps=S)`` on the identical PyTorch
model and data, with PyTorch's default threads and with one thread (on a loaded machine or a tiny
model one thread is faster: OpenMP barriers spin); the peer's figure is its better configuration.
Costs per point that do not depend on P (the per-point methods and the peer) are timed on ``S``
points (`--subset`; the toy and the equinox problems: all P points) and scaled to P.

    python benchmarks/bench_paths.py --quick        # smoke: P in {64, 256} (toy 1024), 2 processes
    python benchmarks/bench_paths.py                # full: P in {16, 64, 256, 1024, 4096}, 5 processes
    python benchmarks/bench_paths.py --resume       # after a killed run: the finished children stay

The children's results are kept in ``benchmarks/results/bench_paths.state.json`` (one entry per
finished child; ``--resume`` reuses them, a fresh run starts it anew); the summary goes to
``benchmarks/results/bench_paths.json`` and its Markdown tables to ``benchmarks/results/bench_paths.md``
(the source of the README's tables).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as H  # noqa: E402  (standard library only: the parent imports neither jax nor torch)

SKIPNETS = ("reference", "wide_input", "toy")
EQX = ("mlp", "cnn")
DISPATCH_POINTS = (16, 64, 256, 1024, 4096)
ENGINE = ("objective_fn", "sweep", "point_kernel")
RTOL = 1e-3  # values must equal the peer's to this relative accuracy (issue 3)
TARGETS = {  # (problem, method, P): ratio against the peer's best process (issue 20 §2)
    ("toy", "user_function", 1024): 10.0, ("toy", "objective_fn", 1024): 10.0,
    ("reference", "objective_fn", 256): 3.0, ("cnn", "user_function", 64): 1.0,  # §3: the CNN
    **{("wide_input", "objective_fn", P): 4.0 for P in DISPATCH_POINTS},
}
PEAK_TARGET = {("reference", "user_function"): 0.85}  # fraction of XLA's GEMM peak (§2)


def plan(quick: bool, problems: list[str], subset: int | None, points: list[int] | None = None) -> dict:
    """Per problem: the P values, the points on which the per-point methods are timed, the methods."""
    out = {}
    for p in problems:
        if p in ("reference", "wide_input"):
            Ps = points or ([64, 256] if quick else list(DISPATCH_POINTS))
            S = subset or (16 if quick else 64)
            methods = [*ENGINE, "user_function", "jax_loop"]
        elif p == "toy":
            Ps = [1024] if quick else list(DISPATCH_POINTS)
            S = 1024
            methods = [*ENGINE, "user_function", "jax_loop", "jit_vmap"]
        else:
            Ps = [16] if quick else [64]
            S = Ps[0]
            methods = ["user_function", "jax_loop"]
            if p == "cnn":  # XLA's own convolution, against the default im2col GEMMs on CPU
                methods.append("user_function_native")
        out[p] = dict(Ps=Ps, S=S, methods=methods)
    return out


def configs(p: str, pl: dict, npz: str, max_calls: int, budget_s: float, flags: dict,
            flag_problems: tuple = (), peer_threads: tuple = ("default", "1")) -> list:
    """The children of problem `p`: the peer (default threads, one thread) and jaxland (per
    XLA_FLAGS variant in `flags`, label → flags; "" is the default)."""
    S, Ps = pl["S"], pl["Ps"]
    per_point_at = S if p in ("reference", "wide_input") else None
    out = []
    for label, env in (("threads=default", {}), ("threads=1", {"OMP_NUM_THREADS": "1"})):
        if label.split("=")[1] not in peer_threads:
            continue
        out.append((f"{p}/peer/{label}", dict(side="torch", module="_sides_torch",
                                             func="loss_landscapes_path", env=env, kwargs=dict(
                                                 npz=npz, points=S, max_calls=max_calls,
                                                 budget_s=budget_s))))
    for label, fl in flags.items():
        if label and p not in flag_problems:
            continue
        out.append((f"{p}/jaxland/{label or 'default'}", dict(
            side="jax", module="_sides_jax", func="paths", env={"XLA_FLAGS": fl} if fl else {},
            kwargs=dict(problem_name=p, Ps=Ps, methods=pl["methods"], subset=per_point_at,
                        max_calls=max_calls, budget_s=budget_s))))
    return out


def _peer(state, p: str) -> tuple[dict | None, dict]:
    """The peer's better configuration (lower median) and all of them."""
    alls = {}
    for label in ("threads=default", "threads=1"):
        res = state.results(f"{p}/peer/{label}")
        names = {k for r in res if r.get("ok") for k in r["methods"]}
        if names:
            alls[label] = H.summary(res, names.pop())
            alls[label]["values"] = next((list(r["values"].values())[0] for r in res if r.get("ok")), None)
    good = {k: v for k, v in alls.items() if v["median_s"] is not None}
    if not good:
        return None, alls
    label = min(good, key=lambda k: good[k]["median_s"])
    return dict(good[label], config=label), alls


def _values_rel(vals, P, ref, S) -> float | None:
    """Max relative difference on the common grid of k/P and j/S."""
    if vals is None or ref is None:
        return None
    if P >= S:
        a, b = [vals[(j + 1) * (P // S) - 1] for j in range(S)], ref
    else:
        a, b = vals, [ref[(k + 1) * (S // P) - 1] for k in range(P)]
    return max(abs(u - v) / abs(v) for u, v in zip(a, b, strict=True))


def analyse(state, pls: dict, flags: dict, peak: dict) -> dict:
    xla_peak = (peak.get("xla") or {}).get("best_flop_per_s")
    records, dispatch, checks = [], [], []
    for p, pl in pls.items():
        peer, peer_all = _peer(state, p)
        S = pl["S"]
        for label in flags:
            key = f"{p}/jaxland/{label or 'default'}"
            res = [r for r in state.results(key) if r.get("ok")]
            if not res:
                continue
            fl = res[0].get("flops_point_shapes") or res[0].get("flops_point_xla")
            fl_xla = res[0].get("flops_point_xla")
            names = sorted({k for r in res for k in r["methods"]})
            rows = {}
            for name in names:
                method, timed = name.split("@")
                timed = int(timed)
                per_point = method not in ENGINE and p in ("reference", "wide_input")
                for P in (pl["Ps"] if per_point else [timed]):
                    s = H.summary(res, name)
                    scale = P / timed
                    rec = dict(problem=p, variant=label or "default", method=method, P=P,
                               timed_points=timed, extrapolated=timed != P, processes=s["processes"],
                               best_s=s["best_s"] * scale, median_s=s["median_s"] * scale,
                               per_process_best_s=[x * scale for x in s["per_process_best_s"]])
                    rec["best_points_per_s"] = P / rec["best_s"]
                    rec["median_points_per_s"] = P / rec["median_s"]
                    if fl:
                        rec.update(flops_per_point=fl, flops_per_point_xla=fl_xla,
                                   best_gflop_per_s=fl * P / rec["best_s"] / 1e9,
                                   median_gflop_per_s=fl * P / rec["median_s"] / 1e9)
                        if xla_peak:
                            rec["best_fraction_of_xla_peak"] = fl * P / rec["best_s"] / xla_peak
                            rec["median_fraction_of_xla_peak"] = fl * P / rec["median_s"] / xla_peak
                    if peer is not None:
                        pscale = P / S
                        pr = dict(best_s=peer["best_s"] * pscale, median_s=peer["median_s"] * pscale)
                        rec.update({f"{k}": v for k, v in H.ratios(rec, pr).items()})
                        vals = next((r["values"].get(name) for r in res), None)
                        rec["max_rel_diff_vs_peer"] = _values_rel(vals, timed, peer["values"], S)
                    choice = next((r.get("extra", {}).get(f"choice@{P}") for r in res
                                   if r.get("extra", {}).get(f"choice@{P}")), None)
                    if method == "objective_fn" and choice:
                        rec["choice"] = choice
                    records.append(rec)
                    rows[(method, P)] = rec
            for P in pl["Ps"]:
                ks = {m: rows.get((m, P)) for m in ENGINE}
                if any(v is None for v in ks.values()):
                    continue
                fastest = min(("sweep", "point_kernel"), key=lambda m: ks[m]["median_s"])
                dispatch.append(dict(
                    problem=p, variant=label or "default", P=P, choice=ks["objective_fn"].get("choice"),
                    **{f"{m}_median_s": ks[m]["median_s"] for m in ENGINE},
                    **{f"{m}_best_s": ks[m]["best_s"] for m in ENGINE}, fastest=fastest,
                    ratio_to_fastest=ks["objective_fn"]["median_s"] / ks[fastest]["median_s"],
                    median_vs_peer_best=ks["objective_fn"].get("median_vs_peer_best")))
        for (tp, tm, tP), tgt in TARGETS.items():
            r = next((r for r in records if (r["problem"], r["method"], r["P"], r["variant"])
                      == (tp, tm, tP, "default")), None)
            if tp == p and r is not None and r.get("median_vs_peer_best") is not None:
                checks.append(dict(problem=tp, method=tm, P=tP, target=tgt, what="x peer best",
                                   value=r["median_vs_peer_best"],
                                   met=r["median_vs_peer_best"] >= tgt))
        for (tp, tm), tgt in PEAK_TARGET.items():
            for r in records:
                if (r["problem"], r["method"], r["variant"]) == (tp, tm, "default") and tp == p \
                        and r["P"] == 256 and r.get("median_fraction_of_xla_peak") is not None:
                    checks.append(dict(problem=tp, method=tm, P=256, target=tgt,
                                       what="fraction of XLA GEMM peak",
                                       value=r["median_fraction_of_xla_peak"],
                                       met=r["median_fraction_of_xla_peak"] >= tgt))
        if peer is not None:
            for label, s in peer_all.items():
                s = dict(s)
                s.pop("values", None)
                records.append(dict(problem=p, variant=label, method="loss_landscapes",
                                    P=S, timed_points=S, extrapolated=False, processes=s["processes"],
                                    best_s=s["best_s"], median_s=s["median_s"],
                                    per_process_best_s=s["per_process_best_s"],
                                    best_points_per_s=s.get("best_points_per_s") or S / s["best_s"],
                                    median_points_per_s=S / s["median_s"], chosen=label == peer["config"]))
                fl = next((r.get("flops_per_point") for r in records
                           if r["problem"] == p and r.get("flops_per_point")), None)
                if fl:
                    records[-1].update(best_gflop_per_s=fl * S / s["best_s"] / 1e9,
                                       median_gflop_per_s=fl * S / s["median_s"] / 1e9)
                    if xla_peak:
                        records[-1]["best_fraction_of_xla_peak"] = fl * S / s["best_s"] / xla_peak
    return dict(records=records, dispatch=dispatch, targets=checks)


def _f(x, spec):
    return "-" if x is None else format(x, spec)


def markdown(summary: dict, meta: dict) -> str:
    """The README tables from the summary."""
    pk = meta["gemm_peak"]
    lines = [f"Machine: {meta['machine']['cpu_count']} CPU cores, load average "
             f"{meta['loadavg_min']:.1f}–{meta['loadavg_max']:.1f} over the run (1-minute; "
             f"{meta['machine']['cpu_count']} = the cores are busy), float32 GEMM 4096² peak: XLA "
             f"{_f((pk.get('xla') or {}).get('best_flop_per_s', 0) / 1e9, '.0f')} GFLOP/s, PyTorch "
             f"{_f((pk.get('torch') or {}).get('best_flop_per_s', 0) / 1e9, '.0f')} GFLOP/s (best of "
             f"{(pk.get('xla') or {}).get('processes')} processes each). {meta['processes']} processes "
             f"per side; points/s best / median over processes; × peer = the peer's best time over "
             f"ours (our median; in brackets: our median against the peer's median); "
             f"% peak = GFLOP/s of our median over XLA's GEMM peak.", "",
             "| problem | P | method | points/s best | median | GFLOP/s | % peak | × peer best | "
             "(× peer median) | max rel diff |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["records"]:
        if r["variant"] not in ("default",) and r["method"] != "loss_landscapes":
            continue
        name = r["method"] + ("*" if r.get("extrapolated") else "")
        if r["method"] == "loss_landscapes":
            name = f"peer ({r['variant']}{', chosen' if r.get('chosen') else ''})"
        if r["method"] == "objective_fn" and r.get("choice"):
            name += f" → {r['choice']}"
        lines.append(
            f"| {r['problem']} | {r['P']} | {name} | {r['best_points_per_s']:.0f} | "
            f"{r['median_points_per_s']:.0f} | {_f(r.get('median_gflop_per_s'), '.1f')} | "
            f"{_f(None if r.get('median_fraction_of_xla_peak') is None else 100 * r['median_fraction_of_xla_peak'], '.0f')} | "
            f"{_f(r.get('median_vs_peer_best'), '.2f')} | {_f(r.get('median_vs_peer_median'), '.2f')} | "
            f"{_f(r.get('max_rel_diff_vs_peer'), '.1e')} |")
    lines += ["", "`*` timed on fewer points and scaled (cost per point independent of P).", ""]
    if summary["dispatch"]:
        lines += ["Dispatch: median seconds of each kernel, `objective_fn`'s choice and its time over "
                  "the faster kernel's.", "",
                  "| problem | P | sweep | point kernel | `objective_fn` | choice | / fastest | × peer best |",
                  "|---|---:|---:|---:|---:|---|---:|---:|"]
        for d in summary["dispatch"]:
            if d["variant"] != "default":
                continue
            lines.append(f"| {d['problem']} | {d['P']} | {d['sweep_median_s']:.4f} | "
                         f"{d['point_kernel_median_s']:.4f} | {d['objective_fn_median_s']:.4f} | "
                         f"{d['choice']} | {d['ratio_to_fastest']:.2f} | "
                         f"{_f(d.get('median_vs_peer_best'), '.1f')} |")
        lines.append("")
    if summary["targets"]:
        lines += ["| target | value | met |", "|---|---:|---|"]
        for t in summary["targets"]:
            lines.append(f"| {t['problem']} {t['method']} P = {t['P']}: {t['what']} ≥ {t['target']:g} | "
                         f"{t['value']:.2f} | {'yes' if t['met'] else '**no**'} |")
    variants = sorted({r["variant"] for r in summary["records"]} - {"default", "threads=default",
                                                                    "threads=1"})
    if variants:
        lines += ["", "XLA flag variants (median points/s; × the default build):", "",
                  "| problem | P | method | variant | points/s | × default |", "|---|---:|---|---|---:|---:|"]
        base = {(r["problem"], r["method"], r["P"]): r for r in summary["records"]
                if r["variant"] == "default"}
        for r in summary["records"]:
            if r["variant"] in variants:
                b = base.get((r["problem"], r["method"], r["P"]))
                lines.append(f"| {r['problem']} | {r['P']} | {r['method']} | `{r['variant']}` | "
                             f"{r['median_points_per_s']:.0f} | "
                             f"{_f(None if b is None else b['median_s'] / r['median_s'], '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer P, 2 processes per side")
    ap.add_argument("--problems", default="reference,wide_input,toy,mlp,cnn")
    ap.add_argument("--processes", type=int, default=None, help="processes per side (default 5; quick 2)")
    ap.add_argument("--subset", type=int, default=None,
                    help="points for the per-point methods of reference/wide_input (default 64; quick 16)")
    ap.add_argument("--max-calls", type=int, default=3, help="timed calls per method in a child")
    ap.add_argument("--budget", type=float, default=6.0, help="seconds of timed calls per method in a child")
    ap.add_argument("--xla-flags", action="append", default=[], metavar="LABEL=FLAGS",
                    help="also run jaxland with XLA_FLAGS=FLAGS (item 3 of issue 20); repeatable")
    ap.add_argument("--flag-problems", default="cnn",
                    help="the problems on which the --xla-flags variants run (default cnn)")
    ap.add_argument("--peer-threads", default="default,1",
                    help="the peer's thread configurations: default (PyTorch's), 1, or both "
                         "(default both; its figure is the better one)")
    ap.add_argument("--points", default=None,
                    help="P values of reference / wide_input (default 16,64,256,1024,4096; quick 64,256)")
    ap.add_argument("--big", action="store_true", help="also P = 100 000 reference points in a child "
                    "(peak memory against 24 GiB)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before a child is killed")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_paths.json"))
    ap.add_argument("--resume", action="store_true", help="keep the children a killed run finished")
    args = ap.parse_args(argv)
    problems = [p for p in args.problems.split(",") if p]
    for p in problems:
        if p not in SKIPNETS and p not in EQX:
            ap.error(f"--problems: unknown problem {p!r}; expected a subset of {[*SKIPNETS, *EQX]}")
    flags = {"": ""}
    for f in args.xla_flags:
        label, sep, val = f.partition("=")
        if not sep:
            ap.error(f"--xla-flags: expected LABEL=FLAGS, got {f!r}")
        flags[label] = val
    processes = args.processes or (2 if args.quick else 5)
    out = Path(args.out)
    state = H.State(out.with_suffix(".state.json"), resume=args.resume)
    t0 = time.perf_counter()
    load_start = os.getloadavg()
    cache = Path(tempfile.gettempdir()) / "jaxland_bench"
    cache.mkdir(exist_ok=True)
    pls = plan(args.quick, problems, args.subset,
               [int(v) for v in args.points.split(",")] if args.points else None)
    print(f"{os.cpu_count()} cores, load {load_start[0]:.2f}; {processes} processes per side", flush=True)
    for p in problems:
        npz = str(cache / f"{p}.npz")
        if not Path(npz).exists():
            r = H.run_child("jax", "_sides_jax", "prepare", dict(problem_name=p, npz=npz))
            if not r.get("ok"):
                print(f"prepare {p} failed: {r.get('error')}", file=sys.stderr)
                return 2
    cfgs = H.gemm_configs(4096)
    for p in problems:
        cfgs += configs(p, pls[p], str(cache / f"{p}.npz"), args.max_calls, args.budget, flags,
                        tuple(args.flag_problems.split(",")), tuple(args.peer_threads.split(",")))
    H.interleaved(state, cfgs, processes, timeout=args.timeout)
    big = None
    if args.big:
        big = state.get("big", 0) or H.run_child("jax", "_sides_jax", "big", dict(P=100_000),
                                                 timeout=args.timeout)
        state.put("big", 0, big)
    peak = H.gemm_peak(state, 4096)
    summary = analyse(state, pls, flags, peak)
    loads = [r["loadavg"][0] for k in state.data for r in state.data[k].values() if "loadavg" in r]
    meta = dict(benchmark="bench_paths", quick=args.quick, processes=processes,
                command=" ".join(["bench_paths.py", *(argv if argv is not None else sys.argv[1:])]),
                machine=H.machine_meta(), gemm_peak=peak, loadavg_start=load_start,
                loadavg_end=os.getloadavg(), loadavg_min=min(loads, default=0),
                loadavg_max=max(loads, default=0),
                loadavg_median=statistics.median(loads) if loads else None,
                rtol=RTOL, wall_s=time.perf_counter() - t0, plan=pls, xla_flag_variants=flags,
                peer_note="loss-landscapes with PyTorch's default threads and with OMP_NUM_THREADS=1;"
                          " its figure is the configuration with the lower median", big=big)
    ok_values = all(r.get("max_rel_diff_vs_peer") is None or r["max_rel_diff_vs_peer"] <= RTOL
                    for r in summary["records"])
    meta["values_ok"] = ok_values
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, **summary), indent=1))
    md = markdown(summary, meta)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"values within {RTOL:g} of the peer: {'yes' if ok_values else 'NO'}; wrote {out} and "
          f"{out.with_suffix('.md')} ({time.perf_counter() - t0:.0f} s)")
    return 0 if ok_values else 1


if __name__ == "__main__":
    raise SystemExit(main())
