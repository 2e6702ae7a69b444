"""Benchmark: top-k Hessian eigenvalues and the Hessian trace of F along a path, jaxland vs PyHessian.

Reference problem (as in `bench_paths.py`): `SkipNet` (eq. 3) with N = 4096 samples, n = 16, m = 1024,
d_g = d_o = 64, g with one hidden layer of 64 units, d_y = 1, "mse" (mean over samples of ‖f(x) − y‖²),
κ = 0, float32; points γ(t) on the segment between two random networks (`SkipNet.init`).

Methods, each in its own fresh child processes (`_harness.py`: PyHessian's never import jax,
jaxland's never import PyTorch; interleaved, ``--processes`` (5) per side; jaxland's figure is its
median process, PyHessian's its best), on the identical model and data (the arrays of
`_sides_jax.prepare`):

- ``jaxland``   `jaxland.hessian_eigs_along_path` (Lanczos, full reorthogonalisation, at most K
                steps, stopping once the residual bounds of the wanted Ritz values are
                ≤ tol·max|Ritz| (`--tol`, default 1e-3 like PyHessian's; `--tol 0` = exactly K
                steps); all points in one jitted program: vmapped on GPU, a `lax.map` on CPU, or
                with `--warm-start` a scan in which each point starts from the previous point's
                Ritz vectors) and
                `jaxland.hessian_trace_batch` (Hutchinson, M Rademacher probes per point, each
                vᵀHv a forward-over-forward derivative);
- ``pyhessian`` the PyHessian package (`pyhessian.hessian(model, criterion, data=(x, y))`): power
                iteration with deflation for the top-k eigenvalues (`eigenvalues(top_n=k)`, default
                tol 1e-3, at most 100 iterations each) and Hutchinson (`trace(maxIter=M)`), one
                point at a time (a new `hessian` object per point, as a user would write it).

Work is counted in Hessian-vector products (HVPs): jaxland's Lanczos steps used per point
(`HessianEigs.num_steps`) against PyHessian's power iterations (counted by wrapping
`pyhessian.hessian.hessian_vector_product`), a measure independent of machine load. With
`--reference-steps R` a fixed-R-step float32 Lanczos run gives reference eigenvalues, and both
methods' relative errors against it are recorded.

Eigenvalues are compared point by point (relative difference of each of the top k). PyHessian's power
iteration converges to the eigenvalues of largest *magnitude*; jaxland reports the largest algebraic
ones (and the smallest, λ_min, which PyHessian does not give). On these problems the top of the spectrum
is positive and dominant, so the two agree; a record flags any mismatch.

Also measured (jaxland only): λ_min, λ_max of a SkipNet with ≥ 10⁶ parameters without forming the
Hessian.

Run ``python benchmarks/bench_hessian.py`` (full) or ``--quick`` (2 points, k = 2, 8 probes); the
"many points" mode is ``--points 8 --warm-start``. Results go to
``benchmarks/results/bench_hessian.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxland

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PROBLEMS = {
    "reference": dict(N=4096, n=16, m=1024, d_g=64, hidden=(64,), d_o=64, d_y=1),
    # m = 7000: P = m(n + d_y + d_o + d_g) + d_g·64 + 64·d_o = 7000·145 + 8192 ≈ 1.02·10⁶ parameters
    "million": dict(N=512, n=16, m=7000, d_g=64, hidden=(64,), d_o=64, d_y=1),
}


def _time(run, *, repeats: int, warmup: bool = True):
    """Median wall time of `run()` over `repeats` calls after one warm-up call (compilation)."""
    if warmup:
        run()
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def make_problem(name: str, seed: int = 0):
    d = PROBLEMS[name]
    ka, kb, kd = jax.random.split(jax.random.PRNGKey(seed), 3)

    def net(k):
        return jaxland.SkipNet.init(
            k,
            n=d["n"],
            m=d["m"],
            d_y=d["d_y"],
            d_g=d["d_g"],
            d_o=d["d_o"],
            hidden=d["hidden"],
            dtype=jnp.float32,
        )

    data = jaxland.data.sphere_teacher(
        kd, n_samples=d["N"], n=d["n"], d_y=d["d_y"], noise=0.1, dtype=jnp.float32
    )
    a, b = net(ka), net(kb)
    return a, b, data.x, data.y


def num_params(net) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(net))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="2 path points, k = 2, K = 32, 8 probes, 1 repeat"
    )
    ap.add_argument("--points", type=int, default=None, help="path points (default 8, quick 2)")
    ap.add_argument("--k", type=int, default=None, help="top-k eigenvalues (default 3, quick 2)")
    ap.add_argument(
        "--num-steps",
        type=int,
        default=None,
        help="(maximum) Lanczos steps K (default 48, quick 32)",
    )
    ap.add_argument(
        "--probes", type=int, default=None, help="Hutchinson probes (default 64, quick 8)"
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, quick 1)")
    ap.add_argument(
        "--tol",
        type=float,
        default=1e-3,
        help="Lanczos stopping tolerance (residual bound ≤ tol·max|Ritz|); 0 = exactly K steps",
    )
    ap.add_argument(
        "--which",
        default="top",
        choices=("top", "both", "bottom"),
        help="Ritz values that must converge (default top: what PyHessian computes)",
    )
    ap.add_argument(
        "--warm-start", action="store_true", help="each point starts from the previous Ritz vectors"
    )
    ap.add_argument(
        "--reference-steps",
        type=int,
        default=0,
        help="fixed-K Lanczos steps for reference eigenvalues (0 = none)",
    )
    ap.add_argument("--skip-trace", action="store_true", help="eigenvalues only")
    ap.add_argument("--skip-pyhessian", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=None)
    ap.add_argument("--skip-million", action="store_true")
    ap.add_argument("--processes", type=int, default=None,
                    help="fresh processes per side (default 5, quick 2)")
    ap.add_argument("--resume", action="store_true", help="keep the children a killed run finished")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_hessian.json"))
    args = ap.parse_args(argv)
    B = args.points or (2 if args.quick else 8)
    probes = args.probes or (8 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick else 3)
    k = args.k or (2 if args.quick else 3)
    K = args.num_steps or (32 if args.quick else 48)
    ts = np.linspace(0.0, 1.0, B) if B > 1 else np.array([0.5])

    load_before = os.getloadavg()
    import tempfile
    from types import SimpleNamespace

    import _harness as H
    import _sides_jax as SJ

    a, b, x, y, _ = SJ.problem("reference")  # the problem both sides' children build
    path = jaxland.paths.linear(a, b)
    F = jaxland.objective_fn(x, y, kappa=0.0)
    P = num_params(a)
    print(
        f"reference SkipNet: P = {P} parameters, N = {x.shape[0]}, {B} path points, k = {k}, "
        f"K = {K}, {probes} trace probes",
        flush=True,
    )
    trace = not args.skip_trace
    out = Path(args.out)
    processes = args.processes or (2 if args.quick else 5)
    state = H.State(out.with_suffix(".state.json"), resume=args.resume)
    npz = str(Path(tempfile.gettempdir()) / "jaxland_bench" / "reference.npz")
    Path(npz).parent.mkdir(exist_ok=True)
    if not Path(npz).exists():
        H.run_child("jax", "_sides_jax", "prepare", dict(problem_name="reference", npz=npz))
    tsl = [float(t) for t in ts]
    cfgs = H.gemm_configs(4096) + [("hessian/jaxland", dict(
        side="jax", module="_sides_jax", func="hessian_eigs", kwargs=dict(
            problem_name="reference", ts=tsl, k=k, num_steps=K, probes=probes, tol=args.tol,
            which=args.which, warm_start=bool(args.warm_start), trace=trace, repeats=repeats)))]
    if not args.skip_pyhessian:
        env = {} if args.torch_threads is None else {"OMP_NUM_THREADS": str(args.torch_threads)}
        cfgs.append(("hessian/pyhessian", dict(side="torch", module="_sides_torch",
                                               func="pyhessian_eigs", env=env, kwargs=dict(
                                                   npz=npz, ts=tsl, k=k, probes=probes,
                                                   trace=trace, repeats=repeats))))
    # each side in its own fresh processes, interleaved (benchmarks/_harness.py)
    H.interleaved(state, cfgs, processes, timeout=3600)
    jres = [r for r in state.results("hessian/jaxland") if r.get("ok")]
    pres = [r for r in state.results("hessian/pyhessian") if r.get("ok")]
    if not jres:
        print("jaxland's children failed: " + str(state.results("hessian/jaxland")[-1:]))
        return 2
    sj_eig, sp_eig = H.summary(jres, "eigs"), H.summary(pres, "eigs")
    sj_tr = H.summary(jres, "trace") if trace else {}
    sp_tr = H.summary(pres, "trace") if trace else {}
    tj_eig, tj_tr = sj_eig["median_s"], sj_tr.get("median_s", float("nan"))
    tp_eig = sp_eig["best_s"] if pres else float("nan")
    tp_tr = sp_tr.get("best_s") if pres and trace else float("nan")
    j0 = jres[0]
    rj = SimpleNamespace(top=np.asarray(j0["top"]), top_bound=np.asarray(j0["top_bound"]),
                         lambda_min=np.asarray(j0["lambda_min"]), num_steps=j0["num_steps"])
    rj_tr = SimpleNamespace(mean=np.asarray(j0.get("trace", [np.nan] * B)),
                            stderr=np.asarray(j0.get("trace_stderr", [np.nan] * B)))
    steps_j = list(rj.num_steps)
    if pres:
        vp = np.asarray(pres[0]["eigs"])
        vp_tr = np.asarray(pres[0].get("trace", [np.nan] * B))
        hvps_p = pres[0]["hvps"]
    else:
        vp, vp_tr, hvps_p = np.full((B, k), np.nan), np.full(B, np.nan), [float("nan")] * B
    print(f"  jaxland   eigs median {tj_eig:.2f} s over {sj_eig['processes']} processes, trace "
          f"{tj_tr:.2f} s; HVPs (Lanczos steps) per point {steps_j}", flush=True)
    print(f"  pyhessian eigs best {tp_eig:.2f} s over {sp_eig['processes']} processes, trace "
          f"{tp_tr:.2f} s; HVPs per point {hvps_p}", flush=True)
    ref = None
    if args.reference_steps:
        pts = jax.vmap(path)(jnp.asarray(ts))
        ref = np.asarray(
            jaxland.hessian_eigs_batch(
                F, pts, key=jax.random.PRNGKey(7), k=k, num_steps=args.reference_steps
            ).top
        )
        print(f"  reference ({args.reference_steps} fixed Lanczos steps) top-k {ref.tolist()}")

    top_j = np.asarray(rj.top)  # (B, k) descending
    top_p = np.sort(vp, axis=1)[:, ::-1]
    rel = np.abs(top_j - top_p) / np.maximum(np.abs(top_p), 1e-12)
    if ref is not None:
        err_j = np.abs(top_j - ref) / np.abs(ref)
        err_p = np.abs(top_p - ref) / np.abs(ref)
    tr_j = np.asarray(rj_tr.mean) if trace else np.full(B, np.nan)
    se_j = np.asarray(rj_tr.stderr) if trace else np.full(B, np.nan)
    records = []
    for i, t in enumerate(ts):
        records.append(
            dict(
                problem="reference",
                **{
                    kk: (list(v) if isinstance(v, tuple) else v)
                    for kk, v in PROBLEMS["reference"].items()
                },
                num_params=P,
                t=float(t),
                k=k,
                lanczos_steps=K,
                tol=args.tol,
                which=args.which,
                warm_start=bool(args.warm_start),
                hvps_jaxland=int(steps_j[i]),
                hvps_pyhessian=hvps_p[i],
                top_bound_jaxland=np.asarray(rj.top_bound[i]).tolist(),
                top_reference=None if ref is None else ref[i].tolist(),
                top_rel_err_jaxland=None if ref is None else err_j[i].tolist(),
                top_rel_err_pyhessian=None if ref is None else err_p[i].tolist(),
                probes=probes,
                top_jaxland=top_j[i].tolist(),
                top_pyhessian=top_p[i].tolist(),
                top_rel_diff=rel[i].tolist(),
                lambda_min_jaxland=float(rj.lambda_min[i]),
                lambda_max_bound=float(rj.top_bound[i, 0]),
                trace_jaxland=float(tr_j[i]),
                trace_jaxland_stderr=float(se_j[i]),
                trace_pyhessian=float(vp_tr[i]),
            )
        )
    summary = dict(
        problem="reference",
        points=B,
        num_params=P,
        eig_seconds_jaxland=tj_eig,
        eig_seconds_pyhessian=tp_eig,
        eig_speedup_vs_pyhessian=tp_eig / tj_eig,
        eig_jaxland=sj_eig, eig_pyhessian=sp_eig, eig_ratios=H.ratios(sj_eig, sp_eig),
        trace_jaxland=sj_tr, trace_pyhessian=sp_tr,
        trace_ratios=H.ratios(sj_tr, sp_tr) if trace else None,
        gemm_peak=H.gemm_peak(state, 4096), processes=processes,
        timing_note="each side in its own fresh processes (benchmarks/_harness.py), interleaved; "
                    "jaxland's figure is its median process, PyHessian's its best process",
        hvps_jaxland=int(np.sum(steps_j)),
        hvps_pyhessian=float(np.sum(hvps_p)),
        hvp_ratio_pyhessian_over_jaxland=float(np.sum(hvps_p)) / float(np.sum(steps_j)),
        tol=args.tol,
        which=args.which,
        warm_start=bool(args.warm_start),
        trace_seconds_jaxland=tj_tr,
        trace_seconds_pyhessian=tp_tr,
        trace_speedup_vs_pyhessian=tp_tr / tj_tr,
        max_top_rel_diff=float(rel.max()),
        jax_device=str(jax.devices()[0]),
        platform=platform.platform(),
    )

    million = None
    if not args.skip_million:
        a1, _, x1, y1 = make_problem("million")
        F1 = jaxland.objective_fn(x1, y1, kappa=0.0)
        P1 = num_params(a1)

        def run1():
            return jax.block_until_ready(
                jaxland.hessian_eigs(F1, a1, key=jax.random.PRNGKey(2), k=1, num_steps=16)
            )

        t1, r1 = _time(run1, repeats=1)
        million = dict(
            problem="million",
            **{
                kk: (list(v) if isinstance(v, tuple) else v)
                for kk, v in PROBLEMS["million"].items()
            },
            num_params=P1,
            lanczos_steps=16,
            seconds=t1,
            lambda_min=float(r1.lambda_min),
            lambda_max=float(r1.lambda_max),
            dense_hessian_bytes=4 * P1 * P1,
        )
        print(
            f"  million: P = {P1}, λ_min {million['lambda_min']:.4g}, λ_max "
            f"{million['lambda_max']:.4g} in {t1:.2f} s (dense H would be "
            f"{million['dense_hessian_bytes'] / 1e12:.1f} TB)",
            flush=True,
        )

    load_after = os.getloadavg()
    print()
    print(
        f"{'t':>6}  {'top-k jaxland':<32}{'top-k pyhessian':<32}{'max rel':>9}"
        f"{'trace jax (±se)':>20}{'trace pyh':>11}{'lam_min':>10}{'HVPs jax':>9}{'HVPs pyh':>9}"
    )
    for r in records:
        fmt = lambda v: " ".join(f"{u:9.4g}" for u in v)  # noqa: E731
        print(
            f"{r['t']:>6.3f}  {fmt(r['top_jaxland']):<32}{fmt(r['top_pyhessian']):<32}"
            f"{max(r['top_rel_diff']):>9.1e}"
            f"{r['trace_jaxland']:>12.4g} ±{r['trace_jaxland_stderr']:<7.2g}"
            f"{r['trace_pyhessian']:>11.4g}{r['lambda_min_jaxland']:>10.3g}"
            f"{r['hvps_jaxland']:>9}{r['hvps_pyhessian']:>9}"
        )
        if r["top_reference"] is not None:
            print(
                f"{'':>6}  rel. error vs reference: jaxland {max(r['top_rel_err_jaxland']):.1e}, "
                f"pyhessian {max(r['top_rel_err_pyhessian']):.1e}"
            )
    print(
        f"HVPs in total: jaxland {summary['hvps_jaxland']}, PyHessian {summary['hvps_pyhessian']:g}"
        f" -> {summary['hvp_ratio_pyhessian_over_jaxland']:.2f}x fewer"
    )
    line = (f"\ntop-{k} eigenvalues at {B} points: jaxland {tj_eig:.2f} s, PyHessian {tp_eig:.2f} s "
            f"-> {summary['eig_speedup_vs_pyhessian']:.2f}x")
    if not args.skip_trace:
        line += (f"; trace ({probes} probes): jaxland {tj_tr:.2f} s, PyHessian {tp_tr:.2f} s -> "
                 f"{summary['trace_speedup_vs_pyhessian']:.2f}x")
    print(line)
    print(
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} "
        "cores; above ~1 the machine was shared and timings are noisy)"
    )
    summary["load_before"], summary["load_after"] = load_before[0], load_after[0]
    summary["quick"] = bool(args.quick)

    out.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(meta=summary, records=records + ([million] if million else []))
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
