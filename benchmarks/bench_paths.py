"""Benchmark: F along a straight segment at P path points, jaxland against loss-landscapes (issues 3, 15).

SkipNet problems. Reference: `SkipNet` (eq. 3) with N = 4096 samples, n = 16, m = 1024, d_g = d_o = 64,
g with one hidden layer of 64 units, d_y = 1, squared error ("mse": mean over samples of ‖f(x) − y‖²),
κ = 0, float32, on the segment γ(t) = (1 − t) a + t b between two random networks (`SkipNet.init`).
Wide-input variant: the same with n = 784.

Equinox problems (any model, issue 15 §1): ``mlp``, an `eqx.nn.MLP` 784-256-256-10 (ReLU), and ``cnn``,
an equinox CNN (Conv2d 1→16 5×5 s2, Conv2d 16→32 3×3 s2, Linear 800→10, the activation a field), each
on N = 2048 digits-like inputs with a user's mean cross-entropy (`benchmarks/_eqx_models.py`).

Methods, all on the grid t_k = k / P, k = 1 … P (the grid the peer
`loss_landscapes.linear_interpolation(..., steps=P)` walks):

- ``evaluate_path``  `jaxland.evaluate_path(objective_fn(x, y), linear(a, b), ts)` with its defaults
                     (it picks the breakpoint sweep or the point kernel by its cost model);
- ``sweep``          the same with ``sweep=True``: the ReLU breakpoint sweep (`jaxland/engine/_sweep.py`);
- ``point_kernel``   the same with ``sweep=False``: the structured point kernel (one executable, a loop
                     over the points; first layer precomputed, small products first);
- ``user_function``  `jaxland.evaluate_path(lambda net: loss(net, x, y), path, ts)`: a user's own
                     function, which the engine cannot see into (the plain kernel);
- ``jax_loop``       one jitted point t ↦ F(γ(t)), called from a Python loop over t;
- ``loss_landscapes`` the peer's `linear_interpolation` on the identical PyTorch model and data;
- ``torch_vmap``     `torch.func.vmap` of `functional_call` over stacked parameters, in chunks.

Timing: for each problem every method's calls are interleaved (round r runs every method once; A B C
A B C …, so load drifts hit all alike); the tables give the median over the rounds of the wall time and
of the process CPU time (user + system, all threads). The per-point methods (``user_function``,
``jax_loop``, ``loss_landscapes``, ``torch_vmap``) cost the same per point for any P, so they are timed
on the sub-grid t = j / S (S = ``--subset``) and their P-point time is S-point time · P / S; such
records carry ``"extrapolated": true``. Values are compared with the peer's at the points both
evaluated.

Tables: all records; the **dispatch** table (issue 15 §2: for P ∈ {16, 64, 256, 1024, 4096} the sweep,
the point kernel and `evaluate_path`, its choice, its time over the faster kernel's, and its ratio to
the peer); the **user function** table (§1: the user's function against the peer on every problem).

Memory (``--big``, off by default and in ``--quick``): P = 100 000 points of the reference problem in a
child process, its peak resident memory (and on a GPU the device's peak) checked against 24 GiB.

Run ``python benchmarks/bench_paths.py`` (full: about 25 minutes on 2 loaded cores) or ``--quick``
(P ∈ {64, 256}, one round); see ``benchmarks/README.md``. Results go to
``benchmarks/results/bench_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import equinox as eqx
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
EQX_PROBLEMS = ("mlp", "cnn")
DISPATCH_POINTS = (16, 64, 256, 1024, 4096)
ENGINE_METHODS = ("evaluate_path", "sweep", "point_kernel")
ALL_METHODS = (*ENGINE_METHODS, "user_function", "jax_loop", "loss_landscapes", "torch_vmap")
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


def _objective(net, x, y):
    return jaxland.objective(net, x, y, kappa=0.0, loss="mse")


def _block(v) -> np.ndarray:
    return np.asarray(jax.block_until_ready(v))


class Job:
    """One timed method: `run()` evaluates `points` points and returns their values (host array)."""

    def __init__(self, method: str, P: int, points: int, run, warm=None, device: str = ""):
        self.method, self.P, self.points, self.run = method, P, points, run
        self.warm = warm or run  # the warm-up call (compiles what `run` uses)
        self.device = device
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.values = None


def engine_jobs(pb: Problem, Ps, methods, device, engine_kw) -> list[Job]:
    """The `evaluate_path` methods at every P (their cost per point depends on P)."""
    obj = jaxland.objective_fn(pb.x, pb.y, kappa=0.0, loss="mse")
    kw = {"evaluate_path": {}, "sweep": {"sweep": True}, "point_kernel": {"sweep": False}}
    jobs = []
    for P in Ps:
        ts = Problem.grid(P)
        for method in ("evaluate_path", "sweep", "point_kernel"):
            if method not in methods:
                continue
            args = dict(engine_kw, **kw[method])

            def run(ts=ts, args=args):
                return _block(jaxland.evaluate_path(obj, pb.path, ts, **args))

            # the point kernel compiles one loop for every P up to its capacity: warm it up on a few
            # points; the sweep compiles per bucket of P, so it warms up on all of them
            small = method == "point_kernel" or (method == "evaluate_path" and P < 128)
            few = ts[: min(P, 64)]
            warm = (lambda ts=few, args=args:
                    _block(jaxland.evaluate_path(obj, pb.path, ts, **args))) if small else None
            jobs.append(Job(method, P, P, run, warm, device))
    return jobs


def user_function_job(path, fn, S: int, P: int | None, device: str) -> Job:
    """`evaluate_path` of a user's own function (a fresh lambda at every call, as a user writes it:
    the plain kernel is cached by the computation, so this does not recompile)."""
    ts = Problem.grid(S)

    def run():
        return _block(jaxland.evaluate_path(lambda net: fn(net), path, ts))

    return Job("user_function", P or S, S, run, device=device)


_POINT = jax.jit(lambda path, t, x, y: _objective(path(t), x, y))


def jax_loop_job(pb: Problem, S: int, device: str) -> Job:
    """One jitted point t ↦ F(γ(t)) (compiled once), called in a Python loop over t."""
    ts = Problem.grid(S)

    def run():
        return _block([_POINT(pb.path, t, pb.x, pb.y) for t in ts])

    return Job("jax_loop", S, S, run, device=device)


def eqx_loop_job(a, b, fn, S: int, device: str) -> Job:
    """The user's function alone: one `eqx.filter_jit` point t ↦ fn((1 − t) a + t b) (compiled once),
    called in a Python loop over t. The gap between it and `user_function` is what the engine adds;
    the gap between it and the peer is XLA's code for the user's function against PyTorch's."""
    ts = Problem.grid(S)
    pa, rest = eqx.partition(a, eqx.is_inexact_array)
    pb = eqx.filter(b, eqx.is_inexact_array)

    @jax.jit
    def point(t):
        return fn(eqx.combine(jax.tree.map(lambda u, v: u + t * (v - u), pa, pb), rest))

    def run():
        return _block([point(t) for t in ts])

    return Job("jax_loop", S, S, run, device=device)


def peer_job(model_a, model_b, x, y, loss, S: int, side_sync, device: str) -> Job:
    """`loss_landscapes.linear_interpolation(a, b, Loss(loss, x, y), steps=S, deepcopy_model=True)`."""
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    metric = Loss(loss, x, y)

    def run():
        v = loss_landscapes.linear_interpolation(model_a, model_b, metric, steps=S, deepcopy_model=True)
        side_sync()
        return np.asarray(v, dtype=np.float64)

    return Job("loss_landscapes", S, S, run, device=device)


def torch_vmap_job(side: TorchSide, S: int, chunk: int, device: str) -> Job:
    """`torch.func.vmap(functional_call)` over stacked parameters (1 − t) a + t b, `chunk` at a time."""
    from _torch_models import VmapPathEvaluator

    ev = VmapPathEvaluator(side.model_a, side.model_b, side.x, side.y, chunk=chunk)
    tt = side.torch.from_numpy(Problem.grid(S)).to(side.device)

    def run():
        v = ev(tt)
        side.sync()
        return v.cpu().numpy().astype(np.float64)

    return Job("torch_vmap", S, S, run, device=device)


def interleave(jobs: list[Job], rounds: int, budget_s: float | None, log,
               prime_below: float = 2.0) -> list[float]:
    """Warm every job up, then `rounds` rounds that run every job once (A B C A B C …), recording
    wall and process CPU time; stops early after `budget_s` seconds of rounds (at least one).

    After a PyTorch job the loop sleeps a second: PyTorch's OpenMP threads keep spinning for a
    while after a call, in this process, and the next job would pay for it in wall and CPU time.
    A job that takes less than `prime_below` seconds is called once, untimed, right before its
    timed call, so that a thread pool that fell asleep meanwhile is not charged to it (this
    matters for the short ones only).
    Returns the 1-minute load average at the start of every round."""
    last = {}
    for j in jobs:
        t0 = time.perf_counter()
        j.warm()
        last[id(j)] = time.perf_counter() - t0
    loads = []
    t_start = time.perf_counter()
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        for j in jobs:
            if last[id(j)] < prime_below:
                j.run()
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            j.values = j.run()
            j.wall.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            j.cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            last[id(j)] = j.wall[-1]
            if j.device.startswith("torch"):
                time.sleep(1.0)  # until PyTorch's OpenMP threads stop spinning
        log(f"  round {r + 1}/{rounds} done (load {loads[-1]:.2f}, "
            f"{time.perf_counter() - t_start:.0f} s)")
        if budget_s is not None and time.perf_counter() - t_start > budget_s:
            break
    return loads


def _common_values(values: np.ndarray, P: int, ref: np.ndarray, S: int):
    """Values on the coarser of the grids k/P and j/S (both walk t = k/Q, k = 1 … Q)."""
    if P >= S:
        return values[np.arange(1, S + 1) * (P // S) - 1], ref
    return values, ref[np.arange(1, P + 1) * (S // P) - 1]

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

SKIP_TARGET = {"reference": 4.0, "wide_input": 4.0}  # evaluate_path vs the peer at every P (§2)
USER_TARGET = {"reference": (2.0, 3.0), "wide_input": (1.2, 1.5)}  # user_function: (target, goal)
DISPATCH_TOL = 1.10  # evaluate_path within 10 % of the faster of its kernels (§2)


def _max_rel(values: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(values.astype(np.float64) - ref) / np.abs(ref)))


def _fmt(x, spec):
    """`x` formatted with `spec`, or "-" in the same field width when there is no value."""
    if x is None:
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return format("-", f">{width}") if width else "-"
    return format(x, spec)


def _med(xs):
    return statistics.median(xs) if xs else None


def _choice(pb: Problem, P: int, on_cpu: bool) -> str:
    """The kernel `evaluate_path` picks for P points of the segment (its own dispatch rule)."""
    from jaxland.engine._structured import _first_layer_plan
    from jaxland.engine._sweep import switch_fraction, use_sweep

    basis, coefs = pb.path.combination()
    s = Problem.grid(P)
    entries = pb.dims["N"] * pb.dims["m"]
    frac = lambda: switch_fraction(basis, coefs, pb.x, float(s.min()), float(s.max()))  # noqa: E731
    _, rel = _first_layer_plan(basis, P, on_cpu)
    swept = use_sweep(None, coefs, P, entries, on_cpu, frac, 1.0 / rel)
    return "sweep" if swept else "point_kernel"


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="reduced run: P in {64, 256}, one round, per-point methods on 16 points")
    ap.add_argument("--problems", default="reference,wide_input,mlp,cnn",
                    help="comma-separated subset of: " + ", ".join([*PROBLEMS, *EQX_PROBLEMS]))
    ap.add_argument("--points", default=None,
                    help="P values of the SkipNet problems (default 16,64,256,1024,4096; quick 64,256)")
    ap.add_argument("--eqx-points", default=None,
                    help="P values of the equinox problems (default 64; quick 16)")
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    ap.add_argument("--subset", type=int, default=None,
                    help="points on which the per-point methods are timed (default 64, quick 16); "
                         "their P-point time is extrapolated")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved rounds (default 3, quick 1); medians are reported")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds after which a problem stops starting new rounds (default: none)")
    ap.add_argument("--prime-below", type=float, default=2.0,
                    help="a job shorter than this (seconds) gets one untimed call right before each "
                         "timed one (default 2; 0 disables)")
    ap.add_argument("--torch-chunk", type=int, default=16, help="points per torch_vmap chunk")
    ap.add_argument("--torch-device", default=None, help="torch device (default: cuda if available)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch intra-op threads (default: the number of CPU cores, like JAX)")
    ap.add_argument("--engine-chunk", type=int, default=None,
                    help="chunk_size passed to evaluate_path (default: its own choice)")
    ap.add_argument("--big", action="store_true",
                    help=f"also evaluate P = {BIG_POINTS} points of the reference problem in a child "
                         "process and report its peak memory against 24 GiB (off in --quick)")
    ap.add_argument("--big-points", type=int, default=BIG_POINTS, help="P for --big")
    ap.add_argument("--big-timeout", type=float, default=None, help="seconds before --big gives up")
    ap.add_argument("--big-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_paths.json"))
    ap.add_argument("--resume", action="store_true",
                    help="keep the problems that a killed run already wrote to --out (its JSON says "
                         "partial) and run only the others")
    args = ap.parse_args(argv)
    if args.big_child is not None:
        return big_child(args.big_child)

    rounds = args.repeats or (1 if args.quick else 3)
    subset = args.subset or (16 if args.quick else 64)
    problems = [p for p in args.problems.split(",") if p]
    for p in problems:
        if p not in PROBLEMS and p not in EQX_PROBLEMS:
            ap.error(f"--problems: unknown problem {p!r}; expected a subset of "
                     f"{[*PROBLEMS, *EQX_PROBLEMS]}")
    Ps = sorted({int(p) for p in (args.points or ("64,256" if args.quick else
                                                  ",".join(map(str, DISPATCH_POINTS)))).split(",") if p})
    eqx_Ps = sorted({int(p) for p in (args.eqx_points or ("16" if args.quick else "64")).split(",")
                     if p})
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in ALL_METHODS:
            ap.error(f"--methods: unknown method {m!r}; expected a subset of {list(ALL_METHODS)}")
    for P in Ps:
        if (P >= subset and P % subset) or (P < subset and subset % P):
            ap.error(f"--subset {subset} and P = {P}: one must divide the other (common grid)")

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
    torch_desc = None
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
    out = Path(args.out)
    records, dispatch, user_rows, round_loads = [], [], [], {}
    done = []
    if args.resume and out.exists():
        prev = json.loads(out.read_text())
        if prev.get("meta", {}).get("partial"):
            done = [p for p in prev["meta"].get("problems_done", []) if p in problems]
            records = [r for r in prev["records"] if r["problem"] in done]
            dispatch = [r for r in prev["dispatch"] if r["problem"] in done]
            user_rows = [r for r in prev["user_function"] if r["problem"] in done]
            round_loads = {k: v for k, v in prev["meta"].get("loadavg_per_round", {}).items()
                           if k in done}
            print(f"resuming {out}: keeping {done}", flush=True)

    def log(msg):
        print(msg, flush=True)

    for name in problems:
        if name in done:
            continue
        log(f"{name}: warming up, then {rounds} interleaved round(s)")
        peer = None
        if name in PROBLEMS:
            pb = Problem(name)
            d = pb.dims
            side = TorchSide(pb, torch_device) if have_torch else None
            jobs = engine_jobs(pb, [P for P in Ps if P != GPU_POINTS or name == "reference"],
                               methods, jax_device, engine_kw)
            x, y = pb.x, pb.y
            if "user_function" in methods:
                jobs.append(user_function_job(pb.path, lambda net, x=x, y=y: _objective(net, x, y),
                                              subset, None, jax_device))
            if "jax_loop" in methods:
                jobs.append(jax_loop_job(pb, subset, jax_device))
            if have_torch and "loss_landscapes" in methods:
                from _torch_models import mse_mean

                peer = peer_job(side.model_a, side.model_b, side.x, side.y, mse_mean, subset,
                                side.sync, torch_desc)
                jobs.append(peer)
            if have_torch and "torch_vmap" in methods:
                jobs.append(torch_vmap_job(side, subset, args.torch_chunk, torch_desc))
            problem_Ps = sorted({j.P for j in jobs if j.method in ENGINE_METHODS} | set(Ps))
        else:
            import _eqx_models as em

            a, b, x, y = em.problem(name)
            path = jaxland.paths.linear(a, b)
            d = dict(model=type(a).__name__, N=int(x.shape[0]),
                     params=sum(int(np.size(l)) for l in jax.tree.leaves(a) if eqx.is_inexact_array(l)))
            jobs = []
            for P in eqx_Ps:
                if "user_function" in methods:
                    jobs.append(user_function_job(
                        path, lambda m, x=x, y=y: em.cross_entropy(m, x, y), P, P, jax_device))
                if "jax_loop" in methods:
                    jobs.append(eqx_loop_job(a, b, lambda m, x=x, y=y: em.cross_entropy(m, x, y),
                                             P, jax_device))
                if have_torch and "loss_landscapes" in methods:
                    tx = torch.from_numpy(np.array(x))
                    ty = torch.from_numpy(np.array(y, dtype=np.int64))
                    peer = peer_job(em.torch_mirror(a), em.torch_mirror(b), tx, ty,
                                    em.torch_cross_entropy, P, lambda: None, torch_desc)
                    jobs.append(peer)
            problem_Ps = eqx_Ps
        round_loads[name] = interleave(jobs, rounds, args.budget, log, args.prime_below)

        peer_per_pt = None if peer is None else _med(peer.wall) / peer.points
        peer_cpu_pt = None if peer is None else _med(peer.cpu) / peer.points
        for j in jobs:
            wall_pt, cpu_pt = _med(j.wall) / j.points, _med(j.cpu) / j.points
            per_point = j.method not in ENGINE_METHODS
            for P in ([j.P] if not per_point or name in EQX_PROBLEMS else problem_Ps):
                if name in EQX_PROBLEMS and peer is not None and peer.P != P:
                    continue
                sec = wall_pt * P
                rel = None
                if peer is not None:
                    ref_vals = peer.values
                    vals, ref_vals = _common_values(np.asarray(j.values), j.points, ref_vals,
                                                    peer.points)
                    rel = _max_rel(vals, ref_vals)
                rec = dict(problem=name, **{k: (list(v) if isinstance(v, tuple) else v)
                                            for k, v in d.items()},
                           P=P, method=j.method, device=j.device, seconds=sec, points_per_s=P / sec,
                           cpu_ms_per_point=1e3 * cpu_pt, wall_ms_per_point=1e3 * wall_pt,
                           wall_samples_s=j.wall, cpu_samples_s=j.cpu,
                           timed_points=j.points, extrapolated=j.points != P,
                           timed_calls=len(j.wall),
                           ratio_vs_loss_landscapes=(None if peer_per_pt is None
                                                     else peer_per_pt / wall_pt),
                           cpu_ratio_vs_loss_landscapes=(None if peer_cpu_pt is None
                                                         else peer_cpu_pt / cpu_pt),
                           max_rel_diff_vs_loss_landscapes=rel,
                           values_ok=None if rel is None else rel <= RTOL)
                if name in PROBLEMS:
                    fl, fl_s = pb.flops_point * P, flops_structured(**d, P=P)
                    rec.update(flops=fl, flop_per_s=fl / sec, flops_structured=fl_s,
                               structured_flop_per_s=fl_s / sec)
                if rec["extrapolated"]:
                    rec["note"] = (f"timed on the {j.points}-point grid t = j/{j.points}; seconds = "
                                   f"that time x {P}/{j.points} (cost per point does not depend on P)")
                records.append(rec)

        if name in PROBLEMS:
            by = {(j.method, j.P): j for j in jobs if j.method in ENGINE_METHODS}
            for P in problem_Ps:
                ks = {m: by.get((m, P)) for m in ENGINE_METHODS}
                if any(v is None for v in ks.values()):
                    continue
                wall = {m: _med(v.wall) for m, v in ks.items()}
                cpu = {m: _med(v.cpu) for m, v in ks.items()}
                best = min(("sweep", "point_kernel"), key=lambda m: wall[m])
                best_cpu = min(("sweep", "point_kernel"), key=lambda m: cpu[m])
                choice = _choice(pb, P, backend == "cpu")
                dispatch.append(dict(
                    problem=name, P=P, choice=choice, fastest_wall=best, fastest_cpu=best_cpu,
                    **{f"{m}_s": wall[m] for m in ENGINE_METHODS},
                    **{f"{m}_cpu_s": cpu[m] for m in ENGINE_METHODS},
                    ratio_to_fastest=wall["evaluate_path"] / wall[best],
                    cpu_ratio_to_fastest=cpu["evaluate_path"] / cpu[best_cpu],
                    choice_ratio_to_fastest=wall[choice] / wall[best],
                    within_10pct=wall["evaluate_path"] <= DISPATCH_TOL * wall[best],
                    ratio_vs_loss_landscapes=(None if peer_per_pt is None
                                              else peer_per_pt * P / wall["evaluate_path"]),
                    cpu_ratio_vs_loss_landscapes=(None if peer_cpu_pt is None
                                                  else peer_cpu_pt * P / cpu["evaluate_path"]),
                ))
        for j in jobs:
            if j.method == "user_function" and peer is not None and peer.points == j.points:
                tgt = USER_TARGET.get(name, (None, None))
                ratio = _med(peer.wall) / _med(j.wall)
                user_rows.append(dict(
                    problem=name, points=j.points, user_points_per_s=j.points / _med(j.wall),
                    peer_points_per_s=peer.points / _med(peer.wall), ratio_vs_loss_landscapes=ratio,
                    user_cpu_ms_per_point=1e3 * _med(j.cpu) / j.points,
                    peer_cpu_ms_per_point=1e3 * _med(peer.cpu) / peer.points,
                    cpu_ratio_vs_loss_landscapes=_med(peer.cpu) / _med(j.cpu),
                    target=tgt[0], goal=tgt[1],
                    met=None if tgt[0] is None else ratio >= tgt[0]))
        _write(out, dict(meta=dict(benchmark="bench_paths", partial=True, problems_done=[
            p for p in problems[: problems.index(name) + 1]], loadavg_per_round=round_loads),
            records=records, dispatch=dispatch,
            user_function=user_rows))

    big = None
    if args.big:
        print(f"  reference P={args.big_points} evaluate_path in a child process ...", flush=True)
        big = run_big(args.big_points, args.big_timeout)
        print(f"  {big}", flush=True)

    mm_after = matmul_flops(mm_size)
    load_after = os.getloadavg()
    mm_rate = max(mm_before, mm_after)
    for r in records:
        if "flop_per_s" in r:
            r["matmul_flop_per_s"] = mm_rate
            r["flop_s_fraction_of_matmul"] = r["flop_per_s"] / mm_rate
            r["structured_flop_s_fraction_of_matmul"] = r["structured_flop_per_s"] / mm_rate
    total = time.perf_counter() - t_start

    # ---- tables
    hdr = (f"{'problem':<11}{'P':>6}  {'method':<16}{'seconds':>9}{'points/s':>10}{'CPU ms/pt':>10}"
           f"{'x peer':>8}{'x peer CPU':>11}{'max rel diff':>13}")
    print()
    print(hdr)
    print("-" * len(hdr))
    for r in records:
        print(f"{r['problem']:<11}{r['P']:>6}  {r['method'] + ('*' if r['extrapolated'] else ''):<16}"
              f"{r['seconds']:>9.3f}{r['points_per_s']:>10.1f}{r['cpu_ms_per_point']:>10.2f}"
              f"{_fmt(r['ratio_vs_loss_landscapes'], '>8.2f')}"
              f"{_fmt(r['cpu_ratio_vs_loss_landscapes'], '>11.2f')}"
              f"{_fmt(r['max_rel_diff_vs_loss_landscapes'], '>13.1e')}")
    print("* timed on a sub-grid and extrapolated (see 'note' in the JSON). Wall and CPU: medians of "
          "interleaved rounds; CPU is the process's user + system time (all threads).")
    if dispatch:
        print("\nDispatch (issue 15 §2): seconds (median wall) of each kernel, evaluate_path's choice, "
              "its time over the faster kernel's (wall; CPU), and its ratio to the peer (wall; CPU)")
        hdr = (f"{'problem':<11}{'P':>6}{'sweep':>9}{'point':>9}{'e_path':>9}  {'choice':<13}"
               f"{'/fastest':>9}{'CPU':>6}{'x peer':>8}{'CPU':>7}")
        print(hdr)
        print("-" * len(hdr))
        for r in dispatch:
            print(f"{r['problem']:<11}{r['P']:>6}{r['sweep_s']:>9.3f}{r['point_kernel_s']:>9.3f}"
                  f"{r['evaluate_path_s']:>9.3f}  {r['choice']:<13}{r['ratio_to_fastest']:>9.2f}"
                  f"{r['cpu_ratio_to_fastest']:>6.2f}{_fmt(r['ratio_vs_loss_landscapes'], '>8.2f')}"
                  f"{_fmt(r['cpu_ratio_vs_loss_landscapes'], '>7.2f')}")
    if user_rows:
        print("\nA user's own function (issue 15 §1): evaluate_path(lambda net: loss(net, x, y), path, "
              "ts) against loss-landscapes")
        hdr = (f"{'problem':<11}{'points':>7}{'user pts/s':>11}{'peer pts/s':>11}{'x peer':>8}"
               f"{'user CPU ms/pt':>15}{'peer CPU ms/pt':>15}{'x CPU':>7}  target")
        print(hdr)
        print("-" * len(hdr))
        for r in user_rows:
            tgt = "" if r["target"] is None else f">= {r['target']:g}x (goal {r['goal']:g}x)"
            print(f"{r['problem']:<11}{r['points']:>7}{r['user_points_per_s']:>11.1f}"
                  f"{r['peer_points_per_s']:>11.1f}{r['ratio_vs_loss_landscapes']:>8.2f}"
                  f"{r['user_cpu_ms_per_point']:>15.2f}{r['peer_cpu_ms_per_point']:>15.2f}"
                  f"{r['cpu_ratio_vs_loss_landscapes']:>7.2f}  {tgt}")
    print(f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after, per round "
          f"{ {k: [round(v, 1) for v in vs] for k, vs in round_loads.items()} } "
          f"({os.cpu_count()} cores; above ~1 the machine was shared and timings are noisy).")

    # ---- verdicts
    ok_values = all(r["values_ok"] is not False for r in records)
    print(f"values within {RTOL:g} relative of loss-landscapes: {'yes' if ok_values else 'NO'}")
    for r in dispatch:
        tgt = SKIP_TARGET[r["problem"]]
        ratio = r["ratio_vs_loss_landscapes"]
        print(f"§2 {r['problem']} P={r['P']}: evaluate_path {r['ratio_to_fastest']:.2f}x the faster "
              f"kernel's time ({'within' if r['within_10pct'] else 'NOT within'} 10 %), chose "
              f"{r['choice']} (fastest by wall: {r['fastest_wall']}, by CPU: {r['fastest_cpu']})"
              + ("" if ratio is None else
                 f"; {ratio:.2f}x the peer (target >= {tgt:g}x): {'met' if ratio >= tgt else 'MISSED'}"))
        if r["P"] == GPU_POINTS and on_gpu:
            print(f"GPU: {GPU_POINTS} reference points in {r['evaluate_path_s']:.3f} s")
    for r in user_rows:
        if r["target"] is not None:
            print(f"§1 {r['problem']}: user function {r['ratio_vs_loss_landscapes']:.2f}x the peer "
                  f"(target >= {r['target']:g}x, goal {r['goal']:g}x): "
                  f"{'met' if r['met'] else 'MISSED'}")
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
        benchmark="bench_paths", quick=args.quick, rounds=rounds, subset=subset, prime_below_s=args.prime_below,
        command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        jax=jax.__version__, jaxland=jaxland.__version__, device=jax_device,
        cpu_count=os.cpu_count(), platform=platform.platform(), python=platform.python_version(),
        torch=torch_desc, matmul_size=mm_size, matmul_flop_per_s_before=mm_before,
        matmul_flop_per_s_after=mm_after, loadavg_before=load_before, loadavg_after=load_after,
        loadavg_per_round=round_loads, rtol=RTOL, targets=dict(
            evaluate_path_vs_peer=SKIP_TARGET, user_function_vs_peer=USER_TARGET,
            dispatch_tolerance=DISPATCH_TOL),
        values_ok=ok_values, wall_s=total, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), big=big,
    )
    _write(out, dict(meta=meta, records=records, dispatch=dispatch, user_function=user_rows))
    print(f"wrote {out}")
    return 0 if ok_values else 1


if __name__ == "__main__":
    raise SystemExit(main())
