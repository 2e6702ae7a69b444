"""One-shot GPU suite: every benchmark at GPU scale in one command (issue 15 §3).

    pip install -e .            # plus a CUDA build of jax, e.g. pip install -U "jax[cuda12]"
    python benchmarks/gpu_suite.py --out DIR          # < 8 minutes on one H100/H200-class GPU
    python benchmarks/gpu_suite.py --smoke --out DIR  # the same code at tiny sizes, on CPU, seconds

Benchmarks (in this order; each in its own child process, so that a crash, a hang or an
out-of-memory error costs only that benchmark, and each starts with the whole GPU; ``--smoke`` runs
them all in one child, since process start-up dominates at tiny sizes):

- ``reference_1e4``, ``reference_1e5``: `evaluate_path(objective_fn(x, y), linear(a, b), ts)` at 10⁴ and
  10⁵ points of the reference problem of bench_paths.py (SkipNet, N = 4096, n = 16, m = 1024,
  d_g = d_o = 64, float32). Target on one H200: 10⁴ points in < 0.25 s end to end after compilation.
- ``user_function_1e4``: the same 10⁴ points with the user's own function
  ``lambda net: jaxland.objective(net, x, y, kappa=0.0)`` (the plain kernel).
- ``plane_digits_cnn``: `plane_slice` of the mean cross-entropy of a digits CNN (`_eqx_models.DigitsCNN`,
  Conv2d + Linear with an activation field, on scikit-learn's 1797 8 × 8 digits, or digits-like random
  images without scikit-learn) on a 101 × 101 grid through three networks. Target: < 2 s.
- ``hessian_along_path``: `hessian_eigs_along_path` (Lanczos, k = 2 at both ends of the spectrum,
  32 steps) of the reference objective at 16 points of the segment.
- ``connect_16384``: `jaxland.connect` (the Theorem 11 path and its certificate) at m = 16 384 on the
  problem of bench_connect.py (N = 512, n = 8).
- ``figure1_resnet56``: the planes of `jaxland figure1` at Li et al.'s scale of grid: the
  full-batch training loss of ResNet-56 and ResNet-56-noshort (`jaxland.DigitsResNet`, width 8,
  BatchNorm statistics of all 1797 digits at every point) on a 51 × 51 filter-normalised plane
  each (`random_directions_slice`), and λ_min, λ_max (`hessian_eigs_batch`, 16 Lanczos steps) on
  its 11 × 11 sub-grid (every 5th point) for the no-shortcut net (at initialisation: a speed
  measurement; the experiment itself trains first).
- ``align_16384``: `jaxland.align(a, b, method="weights", key=...)` of two m = 16 384 networks (recorded
  as "skipped: jaxland.align not available" on a branch without the alignment family).

Every record has the absolute times: ``first_call_s`` (compilation included), ``seconds`` (the median
of the timed calls after it) and ``compile_s`` = first_call_s − seconds. The JSON
(``DIR/gpu_suite.json``: device name, jax and jaxland versions, one record per benchmark) is rewritten
after every finished benchmark, so a killed run loses nothing. A time budget (``--budget``, default
450 s) skips what would not fit; each child also has its own time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if (HERE.parent / "jaxland" / "__init__.py").is_file():  # the working tree's jaxland comes first
    sys.path.insert(0, str(HERE.parent))

#: name -> (time limit of its child in seconds at full size, target seconds or None)
BENCHMARKS = {
    "reference_1e4": (120, 0.25),
    "plane_digits_cnn": (120, 2.0),
    "reference_1e5": (120, None),
    "user_function_1e4": (120, None),
    "hessian_along_path": (120, None),
    "connect_16384": (180, None),
    "align_16384": (120, None),
    "figure1_resnet56": (240, None),
}
SMOKE_LIMIT_S = 150  # the whole smoke run (one child)

REFERENCE = dict(N=4096, n=16, m=1024, d_g=64, hidden=(64,), d_o=64, d_y=1)
REFERENCE_SMOKE = dict(N=64, n=4, m=16, d_g=4, hidden=(4,), d_o=4, d_y=1)
SIZES = {  # full, smoke
    "reference_points": (10_000, 100_000, 200, 1_000),
    "user_points": (10_000, 200),
    "plane_resolution": (101, 11),
    "hessian": (dict(points=16, k=2, num_steps=32), dict(points=3, k=1, num_steps=8)),
    "connect_m": (16_384, 64),
    "connect_N": (512, 64),
}


def _reference(smoke: bool):
    import jax
    import jax.numpy as jnp

    import jaxland

    d = REFERENCE_SMOKE if smoke else REFERENCE
    ka, kb, kd = jax.random.split(jax.random.key(0), 3)

    def net(k):
        return jaxland.SkipNet.init(k, n=d["n"], m=d["m"], d_y=d["d_y"], d_g=d["d_g"], d_o=d["d_o"],
                                    hidden=d["hidden"], dtype=jnp.float32)

    data = jaxland.data.sphere_teacher(kd, n_samples=d["N"], n=d["n"], d_y=d["d_y"],
                                       dtype=jnp.float32)
    return d, net(ka), net(kb), data.x, data.y


def _grid(P: int):
    import numpy as np

    return (np.arange(1, P + 1, dtype=np.float64) / P).astype(np.float32)


def _timed(run, repeats: int) -> dict:
    """first call (compilation included), then the median of `repeats` timed calls."""
    t0 = time.perf_counter()
    out = run()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return dict(first_call_s=first, seconds=sec, compile_s=max(first - sec, 0.0),
                timed_s=times, repeats=repeats), out


def _block(v):
    import jax
    import numpy as np

    return jax.tree.map(np.asarray, jax.block_until_ready(v))


# --------------------------------------------------------------------------------------------------
# the benchmarks (each runs in a child process)


def bench_reference(smoke: bool, which: int) -> dict:
    import numpy as np

    import jaxland

    d, a, b, x, y = _reference(smoke)
    P = SIZES["reference_points"][which + (2 if smoke else 0)]
    obj = jaxland.objective_fn(x, y, kappa=0.0, loss="mse")
    path = jaxland.paths.linear(a, b)
    ts = _grid(P)
    rec, vals = _timed(lambda: _block(jaxland.evaluate_path(obj, path, ts)), 3 if P <= 10_000 else 1)
    rec.update(problem=d, points=P, points_per_s=P / rec["seconds"],
               finite=bool(np.all(np.isfinite(vals))))
    return rec


def bench_user_function(smoke: bool) -> dict:
    import numpy as np

    import jaxland

    d, a, b, x, y = _reference(smoke)
    P = SIZES["user_points"][1 if smoke else 0]
    path = jaxland.paths.linear(a, b)
    ts = _grid(P)

    def run():  # a fresh lambda per call, as a user writes it (no recompilation: same computation)
        return _block(jaxland.evaluate_path(
            lambda net: jaxland.objective(net, x, y, kappa=0.0, loss="mse"), path, ts))

    rec, vals = _timed(run, 3)
    rec.update(problem=d, points=P, points_per_s=P / rec["seconds"],
               finite=bool(np.all(np.isfinite(vals))))
    return rec


def bench_plane(smoke: bool) -> dict:
    import equinox as eqx
    import jax
    import numpy as np

    import jaxland

    sys.path.insert(0, str(HERE))
    import _eqx_models as em

    if smoke:
        x, y = em.digits_like(jax.random.key(7), 64, (1, 8, 8))
        source = "digits-like random (smoke)"
    else:
        x, y, source = em.digits_images()
    ka, kb, kc = jax.random.split(jax.random.key(1), 3)
    nets = [em.DigitsCNN(k) for k in (ka, kb, kc)]
    res = SIZES["plane_resolution"][1 if smoke else 0]
    note = None
    try:  # the models as they are (the parameter layer carries the activation field through)
        jaxland.plane_slice(lambda m: em.cross_entropy(m, x, y), *nets, resolution=2)
        fn, points = (lambda m: em.cross_entropy(m, x, y)), nets
    except (TypeError, ValueError) as e:
        # a jaxland whose plane_slice takes only floating leaves: pass the parameters, and put the
        # activation field back inside the function (what a user would do)
        note = f"plane_slice on the models failed ({type(e).__name__}); parameters passed instead"
        static = eqx.partition(nets[0], eqx.is_inexact_array)[1]
        points = [eqx.partition(n, eqx.is_inexact_array)[0] for n in nets]
        fn = lambda p: em.cross_entropy(eqx.combine(p, static), x, y)  # noqa: E731

    def run():
        return _block(jaxland.plane_slice(fn, *points, resolution=res).values)

    rec, vals = _timed(run, 3)
    rec.update(resolution=res, points=res * res, points_per_s=res * res / rec["seconds"],
               data=source, samples=int(x.shape[0]), finite=bool(np.all(np.isfinite(vals))))
    if note:
        rec["note"] = note
    return rec


def bench_hessian(smoke: bool) -> dict:
    import jax
    import numpy as np

    import jaxland

    d, a, b, x, y = _reference(smoke)
    h = SIZES["hessian"][1 if smoke else 0]
    obj = jaxland.objective_fn(x, y, kappa=0.0, loss="mse")
    path = jaxland.paths.linear(a, b)
    ts = np.linspace(0.0, 1.0, h["points"]).astype(np.float32)

    def run():
        r = jaxland.hessian_eigs_along_path(obj, path, ts, key=jax.random.key(3), k=h["k"],
                                            num_steps=h["num_steps"])
        return _block((r.top, r.bottom))

    rec, vals = _timed(run, 2)
    rec.update(problem=d, **h, finite=bool(all(np.all(np.isfinite(v)) for v in vals)))
    return rec


def _connect_problem(smoke: bool):
    import jax
    import jax.numpy as jnp

    import jaxland

    m = SIZES["connect_m"][1 if smoke else 0]
    N = SIZES["connect_N"][1 if smoke else 0]
    n, D = 8, (4 if smoke else 16)
    kx, ka, kb = jax.random.split(jax.random.key(m), 3)
    x = jax.random.normal(kx, (N, n))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jnp.sin(3 * x[:, :1]) + x[:, 1:2] * x[:, 2:3]
    kw = dict(n=n, m=m, d_g=D, d_o=D, hidden=(D,))
    return dict(m=m, N=N, n=n, d_g=D), jaxland.SkipNet.init(ka, **kw), jaxland.SkipNet.init(kb, **kw), x, y


def bench_connect(smoke: bool) -> dict:
    import jax

    import jaxland

    d, a, b, x, y = _connect_problem(smoke)

    def run():
        r = jaxland.connect(a, b, x, y, kappa=0.01, eta=0.5, key=jax.random.key(5))
        return r.certificate

    rec, cert = _timed(lambda: _block(run()), 1)
    rec.update(problem=d, evaluations=int(cert.n_evals), f_max=float(cert.f_max),
               excess=float(cert.excess))
    return rec


def bench_align(smoke: bool) -> dict:
    import jax

    import jaxland

    if not hasattr(jaxland, "align"):
        return dict(skipped="jaxland.align not available")
    d, a, b, _, _ = _connect_problem(smoke)

    def run():
        return _block(jaxland.align(a, b, method="weights", key=jax.random.key(6)))

    rec, _ = _timed(run, 2)
    rec.update(problem=d)
    return rec


def bench_figure1(smoke: bool) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxland

    sys.path.insert(0, str(HERE))
    import _eqx_models as em

    if smoke:
        x, y = em.digits_like(jax.random.key(7), 32, (1, 8, 8))
        source = "digits-like random (smoke)"
    else:
        x, y, source = em.digits_images()
    depth, width, grid, stride, steps = (4, 4, 3, 2, 4) if smoke else (56, 8, 51, 5, 16)
    axis = np.linspace(-1.0, 1.0, grid)
    make = eqx.nn.make_with_state(jaxland.DigitsResNet)
    nets = {}
    for skip in (True, False):
        net, state = make(depth=depth, width=width, skip=skip, key=jax.random.key(0))
        p, rest = jaxland.trainable(net)

        def F(q, rest=rest, state=state):
            return jaxland.model.full_batch_loss(eqx.combine(q, rest), state, x, y)[0]

        # the same key: the same directions for the twins (their parameters are equal)
        nets[skip] = (p, F, jaxland.filter_normalized_directions(p, 2, key=jax.random.key(1)))

    def run():
        return _block([jaxland.random_directions_slice(F, p, directions=uv, alphas=axis,
                                                       betas=axis).values
                       for p, F, uv in nets.values()])

    rec, vals = _timed(run, 1)
    p, F, (u, v) = nets[False]
    sub = axis[::stride]
    pts = jax.tree.map(lambda o, du, dv: jnp.stack([o + a * du + b * dv for a in sub for b in sub]),
                       p, u, v)

    def hess():
        e = jaxland.hessian_eigs_batch(F, pts, key=jax.random.key(2), num_steps=steps)
        return _block((e.lambda_min, e.lambda_max))

    # (the Hessian's compilation alone would take most of the smoke run's time on a loaded CPU;
    # the same call is exercised by tests/test_figure1.py)
    hrec, hv = _timed(hess, 1) if not smoke else ({"first_call_s": None, "seconds": None}, [])
    rec.update(depth=depth, width=width, grid=grid, points=2 * grid * grid,
               points_per_s=2 * grid * grid / rec["seconds"], data=source,
               samples=int(x.shape[0]), hessian_points=len(sub) ** 2 if not smoke else 0,
               lanczos_steps=steps, hessian_first_call_s=hrec["first_call_s"],
               hessian_seconds=hrec["seconds"],
               finite=bool(all(np.all(np.isfinite(a)) for a in [*vals, *hv])))
    return rec


RUNNERS = {
    "reference_1e4": lambda smoke: bench_reference(smoke, 0),
    "reference_1e5": lambda smoke: bench_reference(smoke, 1),
    "user_function_1e4": bench_user_function,
    "plane_digits_cnn": bench_plane,
    "hessian_along_path": bench_hessian,
    "connect_16384": bench_connect,
    "align_16384": bench_align,
    "figure1_resnet56": bench_figure1,
}


def child(names: list[str], smoke: bool) -> int:
    """Run benchmarks one after another; print one line ``RESULT {json}`` after each."""
    import jax

    for name in names:
        t0 = time.perf_counter()
        try:
            rec = RUNNERS[name](smoke)
            rec.setdefault("ok", "skipped" not in rec)
        except Exception as e:  # recorded, the suite goes on
            rec = dict(ok=False, error=f"{type(e).__name__}: {e}"[:2000],
                       traceback=traceback.format_exc()[-4000:])
        dev = jax.devices()[0]
        rec.update(name=name, wall_s=time.perf_counter() - t0, backend=jax.default_backend(),
                   device=f"{dev.platform}:{dev.device_kind}", device_count=jax.device_count())
        target = BENCHMARKS[name][1]
        if target is not None and "seconds" in rec:
            rec.update(target_s=target, met=None if smoke else rec["seconds"] < target)
        print("RESULT " + json.dumps(rec), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# the parent: never initialises a JAX backend itself (a GPU would be held by this process)


def _write(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def run_child(names: list[str], smoke: bool, limit: float, on_result) -> None:
    """Run `names` in one child process within `limit` seconds; `on_result(record)` is called as
    soon as each benchmark's record arrives (a benchmark without one gets an error record)."""
    import queue
    import threading

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", ",".join(names)]
    if smoke:
        cmd.append("--smoke")
    env = dict(os.environ)
    if smoke:
        env.setdefault("JAX_PLATFORMS", "cpu")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    err: list[str] = []

    def pump(stream, sink):
        for ln in stream:
            sink(ln)
        if stream is proc.stdout:
            lines.put(None)

    threading.Thread(target=pump, args=(proc.stdout, lines.put), daemon=True).start()
    threading.Thread(target=pump, args=(proc.stderr, err.append), daemon=True).start()
    done, error = set(), None
    while True:
        left = limit - (time.perf_counter() - t0)
        try:
            ln = lines.get(timeout=max(left, 0.01))
        except queue.Empty:
            proc.kill()
            error = f"timed out after {limit:.0f} s"
            break
        if ln is None:
            error = f"child exited with {proc.wait()}"
            break
        if ln.startswith("RESULT "):
            rec = json.loads(ln[len("RESULT "):])
            rec["elapsed_in_child_s"] = time.perf_counter() - t0
            done.add(rec["name"])
            on_result(rec)
    proc.wait()
    for name in names:
        if name not in done:
            on_result(dict(name=name, ok=False, error=f"{error}, no result",
                           stderr_tail="".join(err)[-3000:]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=False, default=None,
                    help="directory for gpu_suite.json (created; required unless --child)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes on CPU (JAX_PLATFORMS=cpu unless set): checks that the suite runs")
    ap.add_argument("--only", default=None,
                    help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    ap.add_argument("--budget", type=float, default=450.0,
                    help="seconds for the whole suite; a benchmark that would start too late is "
                         "skipped (default 450)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child([n for n in args.child.split(",") if n], args.smoke)
    if args.out is None:
        ap.error("--out DIR is required")
    names = list(BENCHMARKS) if args.only is None else [n for n in args.only.split(",") if n]
    for n in names:
        if n not in BENCHMARKS:
            ap.error(f"--only: unknown benchmark {n!r}; expected a subset of {list(BENCHMARKS)}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "gpu_suite.json"

    import jax  # the version only: no backend is initialised here

    try:
        import jaxland

        jl_version = jaxland.__version__
    except Exception as e:  # pragma: no cover - reported, the children will fail loudly
        jl_version = f"import failed: {e}"
    meta = dict(suite="gpu_suite", smoke=args.smoke, jax=jax.__version__, jaxland=jl_version,
                python=platform.python_version(), platform=platform.platform(),
                command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None
                                                           else sys.argv[1:])]),
                started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), budget_s=args.budget,
                loadavg_before=os.getloadavg(), device=None, complete=False)
    results: dict = {}
    t_start = time.perf_counter()
    _write(out, dict(meta=meta, benchmarks=results))

    def report(r):
        name = r["name"]
        results[name] = r
        meta["device"] = meta["device"] or r.get("device")
        meta["elapsed_s"] = time.perf_counter() - t_start
        r["status"] = ("skipped: " + r["skipped"] if "skipped" in r
                       else "ok" if r.get("ok") else f"failed: {r.get('error')}")
        if "skipped" in r:
            status = r["status"]
        elif r.get("ok"):
            status = (f"{r['seconds']:.3f} s (first call {r['first_call_s']:.2f} s, compile "
                      f"{r['compile_s']:.2f} s)")
            if r.get("target_s") is not None:
                status += f"; target < {r['target_s']} s: " + (
                    "n/a (smoke)" if r.get("met") is None else ("met" if r["met"] else "MISSED"))
        else:
            status = f"FAILED: {r.get('error')}"
        _write(out, dict(meta=meta, benchmarks=results))
        print(f"[{meta['elapsed_s']:6.1f} s] {name}: {status}", flush=True)

    if args.smoke:  # one child for all (process start-up dominates at tiny sizes)
        print(f"smoke: {', '.join(names)} in one child process ...", flush=True)
        run_child(names, True, SMOKE_LIMIT_S, report)
    for name in names if not args.smoke else []:
        left = args.budget - (time.perf_counter() - t_start)
        limit = BENCHMARKS[name][0]
        if left < min(limit, 30.0):
            report(dict(name=name, ok=False, skipped=f"out of the time budget ({args.budget:.0f} s)"))
        else:
            print(f"[{time.perf_counter() - t_start:6.1f} s] {name} ...", flush=True)
            run_child([name], False, min(limit, left), report)
    meta.update(complete=True, elapsed_s=time.perf_counter() - t_start,
                loadavg_after=os.getloadavg())
    _write(out, dict(meta=meta, benchmarks=results))
    print(f"wrote {out} ({meta['elapsed_s']:.0f} s; device {meta['device']})")
    failed = [n for n, r in results.items() if not r.get("ok") and "skipped" not in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
