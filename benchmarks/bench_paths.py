"""Benchmark: the objective F along a straight segment at P path points (issue 3, "Benchmark").

Reference problem: `SkipNet` (eq. 3) with N = 4096 samples, n = 16, m = 1024, d_g = d_o = 64, g with one
hidden layer of 64 units, d_y = 1, squared error ("mse": mean over samples of ‖f(x) − y‖²), κ = 0,
float32, on the segment γ(t) = (1 − t) a + t b between two random networks (`SkipNet.init`).
Wide-input variant: the same with n = 784.

Methods, side by side in one run, all on the same grid t_k = k / P, k = 1 … P (the grid the peer
`loss_landscapes.linear_interpolation(..., steps=P)` walks):

- ``evaluate_path``  `jaxland.evaluate_path` with its defaults: on CPU the segment is evaluated by the
                     breakpoint sweep (`jaxland/engine/_sweep.py`: the product with the hidden layer is updated
                     only where a ReLU switches between consecutive points);
- ``evaluate_path_points`` the same call with ``sweep=False``: the point-by-point structured kernel
                     (vmap + jit, chunked; first layer precomputed, small products first);
- ``jax_loop``       one jitted point t ↦ F(γ(t)), called from a Python loop over t;
- ``loss_landscapes`` the peer package's `linear_interpolation` on the identical PyTorch model and data;
- ``torch_vmap``     `torch.func.vmap` of `functional_call` over stacked parameters, in chunks.

The per-point loops (``jax_loop``, ``loss_landscapes``) and ``torch_vmap`` cost the same per point for any
P, so they are timed on the sub-grid t = j / S (j = 1 … S, every (P/S)-th point of the P grid) and
their P-point time is S-point time · P / S; such records carry ``"extrapolated": true`` and
``"timed_points": S``. Values are compared with the peer's at the points both evaluated.

Also measured in the same run: the machine's float32 matrix-multiply FLOP/s (a large jitted
``jnp.matmul``), and the FLOP/s each method achieves, counted two ways (see `flops_plain`,
`flops_structured`). On a GPU, the time for 10 000 points of the reference problem is reported too.

Memory (``--big``, off by default and in ``--quick``): P = 100 000 points of the reference problem in a
child process, its peak resident memory (and on a GPU the device's peak) checked against 24 GiB.

Run ``python benchmarks/bench_paths.py`` (full, ~10 minutes on 2 cores) or ``--quick`` (P = 256 only,
~2 minutes); see ``benchmarks/README.md``. Results go to ``benchmarks/results/bench_paths.json``.
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
    # name: (N, n, m, d_g, hidden, d_o, d_y)
    "reference": dict(N=4096, n=16, m=1024, d_g=64, hidden=(64,), d_o=64, d_y=1),
    "wide_input": dict(N=4096, n=784, m=1024, d_g=64, hidden=(64,), d_o=64, d_y=1),
}
TARGET_RATIO = {"reference": 3.0, "wide_input": 4.0}
RTOL = 1e-3  # values must equal the peer's to this relative accuracy (issue 3)
GPU_POINTS = 10_000  # the GPU target: this many points of the reference problem in under 1 s
BIG_POINTS = 100_000  # the memory target: this many points of the reference problem on a 24 GiB machine
BIG_LIMIT_BYTES = 24 * 2**30


# --------------------------------------------------------------------------------------------------
# counting


def flops_plain(N, n, m, d_g, hidden, d_o, d_y) -> int:
    """Multiply-adds ×2 of one plain forward pass f1(x) (eq. 3) on N samples: the work of one point.

    Layers: W1 (n→m), V2 (m→d_g), θ (d_g→hidden…→d_o), V1 (d_o→m), W2 (m→d_y). Element-wise work
    (ReLU, sums, the loss) is not counted.
    """
    sizes = (d_g, *hidden, d_o)
    theta = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return 2 * N * (n * m + m * d_g + theta + d_o * m + m * d_y)


def flops_structured(N, n, m, d_g, hidden, d_o, d_y, P) -> int:
    """Matrix-product FLOPs that a structured evaluation of P points on a segment needs.

    (a) W1(t) x = (1 − t) W1_a x + t W1_b x: the two first-layer products once per call (4·N·n·m);
    (b) W2[h + V1 g] = W2 h + (W2 V1) g: per point, V2 h (2·N·m·d_g), θ, W2 h (2·N·m·d_y), the small
    W2 V1 (2·d_y·m·d_o) and (W2 V1) g (2·N·d_o·d_y). This is what the fast paths of issue 3 leave.
    """
    sizes = (d_g, *hidden, d_o)
    theta = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    per_point = 2 * N * (m * d_g + theta + m * d_y + d_o * d_y) + 2 * d_y * m * d_o
    return 4 * N * n * m + P * per_point


# --------------------------------------------------------------------------------------------------
# timing


def _time(run, *, repeats: int, budget_s: float, warmup: bool = True):
    """Median wall time of ``run()`` over up to `repeats` calls, stopping once `budget_s` is spent.

    ``run`` must block until its result is ready and return it. One untimed warm-up call first
    (compilation, caches) when `warmup`. Returns (median seconds, number of timed calls, last result).
    """
    if warmup:
        run()
    times, out, spent = [], None, 0.0
    while len(times) < max(1, repeats):
        t0 = time.perf_counter()
        out = run()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent >= budget_s:
            break
    return statistics.median(times), len(times), out


def matmul_flops(size: int, repeats: int = 7) -> float:
    """FLOP/s of a jitted float32 ``jnp.matmul`` of two (size, size) matrices (median of repeats)."""
    ka, kb = jax.random.split(jax.random.key(123))
    a = jax.random.normal(ka, (size, size), jnp.float32)
    b = jax.random.normal(kb, (size, size), jnp.float32)
    mm = jax.jit(jnp.matmul)
    sec, _, _ = _time(lambda: mm(a, b).block_until_ready(), repeats=repeats, budget_s=30.0)
    return 2 * size**3 / sec


# --------------------------------------------------------------------------------------------------
# the problem


class Problem:
    """Endpoints a, b (SkipNets), data x, y, and the segment between a and b, for one configuration."""

    def __init__(self, name: str, seed: int = 0):
        self.name = name
        self.dims = PROBLEMS[name]
        d = self.dims
        ka, kb, kd = jax.random.split(jax.random.key(seed), 3)

        def net(k):
            return jaxland.SkipNet.init(
                k, n=d["n"], m=d["m"], d_y=d["d_y"], d_g=d["d_g"], d_o=d["d_o"],
                hidden=d["hidden"], dtype=jnp.float32,
            )

        self.a, self.b = net(ka), net(kb)
        data = jaxland.data.sphere_teacher(kd, n_samples=d["N"], n=d["n"], d_y=d["d_y"],
                                           dtype=jnp.float32)
        self.x, self.y = data.x, data.y
        self.path = jaxland.paths.linear(self.a, self.b)
        self.flops_point = flops_plain(**d)

    @staticmethod
    def grid(P: int) -> np.ndarray:
        """t_k = k / P, k = 1 … P, float32: the points `linear_interpolation(steps=P)` visits."""
        return (np.arange(1, P + 1, dtype=np.float64) / P).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# methods. Each `run_*` returns (seconds for the points it evaluated, timed calls, values (S,)).


def _objective(net, x, y):
    return jaxland.objective(net, x, y, kappa=0.0, loss="mse")


def run_engine(pb: Problem, ts: np.ndarray, *, repeats, budget_s, warmup_points=256, **engine_kw):
    """`jaxland.evaluate_path` of F = E‖f(x) − y‖² on the segment at all points ts.

    F is given as `jaxland.objective_fn(x, y, kappa=0, loss="mse")`, the form that the engine's
    structured fast path recognises (an opaque lambda would be evaluated plainly).
    """
    fn = jaxland.objective_fn(pb.x, pb.y, kappa=0.0, loss="mse")

    def run(ts=ts):
        return np.asarray(jax.block_until_ready(jaxland.evaluate_path(fn, pb.path, ts, **engine_kw)))

    # Warm-up on the first `warmup_points` points: the engine compiles one kernel per chunk shape, and
    # the chunk shape does not grow with P beyond the memory budget, so this compiles what the full
    # call uses without paying for a whole large-P call. Anything compiled later is timed (conservative).
    run(ts[: min(len(ts), warmup_points)])
    return _time(run, repeats=repeats, budget_s=budget_s, warmup=len(ts) <= warmup_points)


_POINT = jax.jit(lambda path, t, x, y: _objective(path(t), x, y))


def run_jax_loop(pb: Problem, ts: np.ndarray, *, repeats, budget_s):
    """One jitted point t ↦ F(γ(t)) (compiled once), called in a Python loop over ts."""
    path, x, y = pb.path, pb.x, pb.y
    jax.block_until_ready(_POINT(path, ts[0], x, y))  # compile outside the timed calls

    def run():
        vals = [_POINT(path, t, x, y) for t in ts]
        return np.asarray(jax.block_until_ready(vals))

    return _time(run, repeats=repeats, budget_s=budget_s, warmup=False)


class TorchSide:
    """The PyTorch mirror of a problem: the same weights and data as torch tensors."""

    def __init__(self, pb: Problem, device: str):
        import torch
        from _torch_models import TorchSkipNet

        self.torch = torch
        self.device = device
        self.model_a = TorchSkipNet.from_jax(pb.a).to(device)
        self.model_b = TorchSkipNet.from_jax(pb.b).to(device)
        self.x = torch.from_numpy(np.array(pb.x)).to(device)
        self.y = torch.from_numpy(np.array(pb.y)).to(device)

    def sync(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


def run_peer(ts_side: TorchSide, S: int, *, repeats, budget_s):
    """`loss_landscapes.linear_interpolation(a, b, Loss(mse, x, y), steps=S, deepcopy_model=True)`."""
    import loss_landscapes
    from _torch_models import mse_mean
    from loss_landscapes.metrics import Loss

    metric = Loss(mse_mean, ts_side.x, ts_side.y)
    with ts_side.torch.no_grad():  # warm-up: one forward pass (allocator, thread pool)
        metric(loss_landscapes.model_interface.model_wrapper.wrap_model(ts_side.model_a))

    def run():
        v = loss_landscapes.linear_interpolation(ts_side.model_a, ts_side.model_b, metric,
                                                 steps=S, deepcopy_model=True)
        ts_side.sync()
        return np.asarray(v, dtype=np.float64)

    return _time(run, repeats=repeats, budget_s=budget_s, warmup=False)


def run_torch_vmap(ts_side: TorchSide, ts: np.ndarray, *, chunk, repeats, budget_s):
    """`torch.func.vmap(functional_call)` over stacked parameters (1 − t) a + t b, `chunk` at a time."""
    from _torch_models import VmapPathEvaluator

    ev = VmapPathEvaluator(ts_side.model_a, ts_side.model_b, ts_side.x, ts_side.y, chunk=chunk)
    tt = ts_side.torch.from_numpy(ts).to(ts_side.device)
    ev(tt[:chunk])
    ts_side.sync()

    def run():
        v = ev(tt)
        ts_side.sync()
        return v.cpu().numpy().astype(np.float64)

    return _time(run, repeats=repeats, budget_s=budget_s, warmup=False)


# --------------------------------------------------------------------------------------------------
# the big run: P = 100 000 points in a child process, peak memory measured


def big_child(P: int) -> int:
    """Run in a fresh process: F at P points of the reference problem; print one JSON line with the
    time and the peak memory (resident set of this process; on a GPU also the device's peak)."""
    import resource

    pb = Problem("reference")
    fn = jaxland.objective_fn(pb.x, pb.y, kappa=0.0, loss="mse")
    ts = Problem.grid(P)
    jax.block_until_ready(jaxland.evaluate_path(fn, pb.path, ts[:256]))  # compile
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    vals = np.asarray(jax.block_until_ready(jaxland.evaluate_path(fn, pb.path, ts)))
    sec = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    dev = jax.devices()[0]
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # pragma: no cover - backend dependent
        stats = {}
    print("BIG_RESULT " + json.dumps(dict(
        P=P, seconds=sec, points_per_s=P / sec, peak_rss_bytes=rss, rss_before_call_bytes=rss_before,
        device_peak_bytes=stats.get("peak_bytes_in_use"), device_limit_bytes=stats.get("bytes_limit"),
        finite=bool(np.all(np.isfinite(vals))), shape=list(vals.shape),
    )), flush=True)
    return 0


def run_big(P: int, timeout: float | None) -> dict:
    """`big_child` in a subprocess (so that its peak memory is its own); returns its record."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--big-child", str(P)]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(P=P, ok=False, error=f"timed out after {timeout} s")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("BIG_RESULT ")]
    if out.returncode != 0 or not lines:
        return dict(P=P, ok=False, error=f"exit {out.returncode}: {out.stderr[-2000:]}",
                    wall_s=time.perf_counter() - t0)
    rec = json.loads(lines[-1][len("BIG_RESULT "):])
    peak = max(rec["peak_rss_bytes"], rec["device_peak_bytes"] or 0)
    rec.update(ok=rec["finite"] and peak < BIG_LIMIT_BYTES, limit_bytes=BIG_LIMIT_BYTES,
               wall_s=time.perf_counter() - t0)
    return rec


# --------------------------------------------------------------------------------------------------
# driver


def _max_rel(values: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(values.astype(np.float64) - ref) / np.abs(ref)))


def _fmt(x, spec):
    """`x` formatted with `spec`, or "-" in the same field width when there is no value."""
    if x is None:
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return format("-", f">{width}") if width else "-"
    return format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="reduced run: 1 timed repeat, per-point methods timed on 32 points")
    ap.add_argument("--problems", default="reference,wide_input",
                    help="comma-separated subset of: " + ", ".join(PROBLEMS))
    ap.add_argument("--points", default=None,
                    help="comma-separated P values (default 256,4096; quick 256)")
    ap.add_argument("--methods",
                    default="evaluate_path,evaluate_path_points,jax_loop,loss_landscapes,torch_vmap")
    ap.add_argument("--subset", type=int, default=None,
                    help="points on which the per-point methods and torch_vmap are timed "
                         "(default 256, quick 32); larger P is extrapolated from them")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 1)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds after which one measurement stops repeating (default 20, quick 5)")
    ap.add_argument("--torch-chunk", type=int, default=16, help="points per torch_vmap chunk")
    ap.add_argument("--torch-device", default=None, help="torch device (default: cuda if available)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch intra-op threads (default: the number of CPU cores, like JAX)")
    ap.add_argument("--engine-chunk", type=int, default=None,
                    help="chunk_size passed to evaluate_path (default: its memory-budget choice)")
    ap.add_argument("--big", action="store_true",
                    help=f"also evaluate P = {BIG_POINTS} points of the reference problem in a child "
                         "process and report its peak memory against 24 GiB (off in --quick; on 2 CPU "
                         "cores this takes about half an hour, on a GPU seconds)")
    ap.add_argument("--big-points", type=int, default=BIG_POINTS, help="P for --big")
    ap.add_argument("--big-timeout", type=float, default=None, help="seconds before --big gives up")
    ap.add_argument("--big-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_paths.json"))
    args = ap.parse_args(argv)
    if args.big_child is not None:
        return big_child(args.big_child)

    repeats = args.repeats or (1 if args.quick else 5)
    budget = args.budget or (5.0 if args.quick else 20.0)
    subset = args.subset or (32 if args.quick else 256)
    problems = [p for p in args.problems.split(",") if p]
    for p in problems:
        if p not in PROBLEMS:
            ap.error(f"--problems: unknown problem {p!r}; expected a subset of {list(PROBLEMS)}")
    points = args.points or ("256" if args.quick else "256,4096")
    Ps = sorted({int(p) for p in points.split(",") if p})
    methods = [m for m in args.methods.split(",") if m]

    backend = jax.default_backend()
    jax_device = f"{backend}:{jax.devices()[0].device_kind} x{jax.device_count()}"
    on_gpu = backend == "gpu"
    if on_gpu and "reference" in problems and GPU_POINTS not in Ps:
        Ps.append(GPU_POINTS)

    have_torch = True
    try:
        import loss_landscapes  # noqa: F401
        import torch
    except ImportError as e:  # the optional "bench" extra is missing: run the JAX methods only
        have_torch = False
        print(f"note: {e}; skipping the PyTorch methods (pip install -e '.[bench]')")
    if have_torch:
        torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
        torch_device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_desc = f"torch {torch.__version__} {torch_device} ({torch.get_num_threads()} threads)"

    mm_size = 8192 if on_gpu else 2048
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    mm_before = matmul_flops(mm_size)
    print(f"jax {jax.__version__} on {jax_device}; {os.cpu_count()} CPU cores; load average "
          f"{load_before[0]:.2f}; matmul {mm_size}² float32: {mm_before / 1e9:.1f} GFLOP/s")
    engine_kw = {} if args.engine_chunk is None else dict(chunk_size=args.engine_chunk)

    records = []
    for name in problems:
        pb = Problem(name)
        d = pb.dims
        side = TorchSide(pb, torch_device) if have_torch else None
        cache = {}  # (method, S) -> (seconds, calls, values): a sub-grid timed once serves every P

        for P in Ps:
            if P == GPU_POINTS and name != "reference":
                continue
            ts = Problem.grid(P)
            S = min(subset, P)
            if P % S:
                raise SystemExit(f"--subset {S} must divide P = {P}")
            sub_idx = np.arange(1, S + 1) * (P // S) - 1  # positions of t = j/S in the P grid
            rows = {}
            for method in methods:
                if method in ("loss_landscapes", "torch_vmap") and not have_torch:
                    continue
                if method in ("evaluate_path", "evaluate_path_points"):
                    kw = dict(engine_kw, sweep=False) if method.endswith("_points") else engine_kw
                    sec, calls, vals = run_engine(pb, ts, repeats=repeats, budget_s=budget, **kw)
                    n_timed, dev = P, jax_device
                else:
                    key = (method, S)
                    if key not in cache:
                        ts_sub = Problem.grid(S)
                        if method == "jax_loop":
                            cache[key] = run_jax_loop(pb, ts_sub, repeats=repeats, budget_s=budget)
                        elif method == "loss_landscapes":
                            cache[key] = run_peer(side, S, repeats=repeats, budget_s=budget)
                        elif method == "torch_vmap":
                            cache[key] = run_torch_vmap(side, ts_sub, chunk=args.torch_chunk,
                                                        repeats=repeats, budget_s=budget)
                        else:
                            raise SystemExit(f"--methods: unknown method {method!r}")
                    sec_s, calls, vals = cache[key]
                    sec, n_timed = sec_s * P / S, S
                    dev = jax_device if method == "jax_loop" else torch_desc
                rows[method] = dict(seconds=sec, calls=calls, values=vals, timed=n_timed, device=dev)
                print(f"  {name} P={P} {method}: {sec:.3f} s"
                      + (f" (extrapolated from {n_timed} points)" if n_timed < P else ""), flush=True)

            peer = rows.get("loss_landscapes")
            for method, r in rows.items():
                vals = r["values"]
                on_sub = vals if r["timed"] < P else vals[sub_idx]  # values at t = j/S
                rel = None if peer is None else _max_rel(on_sub, peer["values"])
                fl = pb.flops_point * P
                fl_s = flops_structured(**d, P=P)
                rec = dict(
                    problem=name, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()},
                    P=P, method=method, device=r["device"],
                    seconds=r["seconds"], points_per_s=P / r["seconds"],
                    timed_points=r["timed"], extrapolated=r["timed"] < P, timed_calls=r["calls"],
                    ratio_vs_loss_landscapes=(None if peer is None
                                              else peer["seconds"] / r["seconds"]),
                    max_rel_diff_vs_loss_landscapes=rel, compared_points=S,
                    values_ok=None if rel is None else rel <= RTOL,
                    flops=fl, flop_per_s=fl / r["seconds"],
                    flops_structured=fl_s, structured_flop_per_s=fl_s / r["seconds"],
                )
                if rec["extrapolated"]:
                    rec["note"] = (f"timed on the {S}-point sub-grid t = j/{S} (every {P // S}-th point); "
                                   f"seconds = that time x {P // S} (cost per point does not depend on P)")
                records.append(rec)

    big = None
    if args.big:
        print(f"  reference P={args.big_points} evaluate_path in a child process ...", flush=True)
        big = run_big(args.big_points, args.big_timeout)
        print(f"  {big}", flush=True)

    mm_after = matmul_flops(mm_size)
    load_after = os.getloadavg()
    # the machine's rate: the best of the two measurements (the machine may be shared; the larger
    # value makes the fractions below conservative)
    mm_rate = max(mm_before, mm_after)
    for r in records:
        r["matmul_flop_per_s"] = mm_rate
        r["flop_s_fraction_of_matmul"] = r["flop_per_s"] / mm_rate
        r["structured_flop_s_fraction_of_matmul"] = r["structured_flop_per_s"] / mm_rate
    total = time.perf_counter() - t_start

    # ---- table
    hdr = (f"{'problem':<11}{'P':>6}  {'method':<16}{'seconds':>9}{'points/s':>10}{'x peer':>8}"
           f"{'max rel diff':>13}{'GFLOP/s':>9}{'frac':>6}{'struct':>7}")
    print()
    print(hdr)
    print("-" * len(hdr))
    for r in records:
        print(f"{r['problem']:<11}{r['P']:>6}  {r['method'] + ('*' if r['extrapolated'] else ''):<16}"
              f"{r['seconds']:>9.3f}{r['points_per_s']:>10.1f}"
              f"{_fmt(r['ratio_vs_loss_landscapes'], '>8.2f')}"
              f"{_fmt(r['max_rel_diff_vs_loss_landscapes'], '>13.1e')}"
              f"{r['flop_per_s'] / 1e9:>9.1f}{r['flop_s_fraction_of_matmul']:>6.2f}"
              f"{r['structured_flop_s_fraction_of_matmul']:>7.2f}")
    print("* timed on a sub-grid and extrapolated (see 'note' in the JSON).")
    print("GFLOP/s and frac count the plain forward pass per point; struct counts only the products a "
          "structured evaluation needs; both as fractions of the matmul rate measured in this run: "
          f"{mm_before / 1e9:.1f} GFLOP/s before, {mm_after / 1e9:.1f} after (the larger is used).")
    print("On CPU, evaluate_path sweeps the ReLU breakpoints and does not perform those products per "
          "point: its GFLOP/s are effective rates (FLOPs a point-by-point evaluation would need / time) "
          "and can exceed the matmul rate; evaluate_path_points is the point-by-point kernel.")
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"({os.cpu_count()} cores; above ~1 the machine was shared and timings are noisy).")

    # ---- verdicts
    ok_values = all(r["values_ok"] is not False for r in records)
    print(f"values within {RTOL:g} relative of loss-landscapes: {'yes' if ok_values else 'NO'}")
    for r in records:
        if r["method"] == "evaluate_path" and r["ratio_vs_loss_landscapes"] is not None:
            tgt = TARGET_RATIO[r["problem"]]
            ratio = r["ratio_vs_loss_landscapes"]
            print(f"target {r['problem']} P={r['P']}: {ratio:.2f}x loss-landscapes "
                  f"(target >= {tgt:g}x): {'met' if ratio >= tgt else 'MISSED'}")
        if r["method"] == "evaluate_path" and r["P"] == GPU_POINTS and on_gpu:
            print(f"GPU target: {GPU_POINTS} points of the reference problem in {r['seconds']:.3f} s "
                  f"(target < 1 s): {'met' if r['seconds'] < 1 else 'MISSED'}")
    if big is not None:
        if "seconds" in big:
            peak = max(big["peak_rss_bytes"], big["device_peak_bytes"] or 0)
            print(f"memory target: P={big['P']} points of the reference problem in {big['seconds']:.1f} s "
                  f"({big['points_per_s']:.0f} points/s), peak memory {peak / 2**30:.2f} GiB "
                  f"(limit 24 GiB): {'met' if big['ok'] else 'MISSED'}")
        else:
            print(f"memory target: P={big['P']}: MISSED ({big['error']})")
    print(f"total wall time {total:.0f} s")

    meta = dict(
        benchmark="bench_paths", quick=args.quick, repeats=repeats, budget_s=budget, subset=subset,
        jax=jax.__version__, jaxland=jaxland.__version__, device=jax_device,
        cpu_count=os.cpu_count(), platform=platform.platform(), python=platform.python_version(),
        torch=(torch_desc if have_torch else None),
        matmul_size=mm_size, matmul_flop_per_s_before=mm_before, matmul_flop_per_s_after=mm_after,
        loadavg_before=load_before, loadavg_after=load_after,
        rtol=RTOL, targets=TARGET_RATIO, values_ok=ok_values, wall_s=total,
        time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    meta["big"] = big
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(meta=meta, records=records), indent=1))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0 if ok_values else 1


if __name__ == "__main__":
    raise SystemExit(main())
