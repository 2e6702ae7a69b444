"""The JAX side of the benchmarks, run by `_harness.py` in child processes that never import torch.

`prepare(problem, npz)` builds a problem (two endpoints and the data, from fixed keys) and writes its
arrays to ``npz`` for the PyTorch side; `gemm` times XLA's float32 matrix product; `paths` times
jaxland's methods along the straight segment between the endpoints.
"""

from __future__ import annotations

import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxland
from _harness import time_calls

SKIPNETS = {
    # name: (N, n, m, d_g, hidden, d_o, d_y)
    "reference": dict(N=4096, n=16, m=1024, d_g=64, hidden=(64,), d_o=64, d_y=1),
    "wide_input": dict(N=4096, n=784, m=1024, d_g=64, hidden=(64,), d_o=64, d_y=1),
    # the README quick start's size
    "toy": dict(N=256, n=3, m=32, d_g=4, hidden=(4,), d_o=4, d_y=1),
}
EQX = ("mlp", "cnn")


def flops_plain(N, n, m, d_g, hidden, d_o, d_y) -> int:
    """2 × multiply-adds of one plain forward pass of a SkipNet (eq. 3) on N samples: one point's work
    (element-wise work, the ReLUs and the loss, not counted)."""
    sizes = (d_g, *hidden, d_o)
    theta = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return 2 * N * (n * m + m * d_g + theta + d_o * m + m * d_y)


def problem(name: str, seed: int = 0):
    """(a, b, x, y, fn) with fn(net) the user's loss: a SkipNet problem or an equinox one."""
    if name in SKIPNETS:
        d = SKIPNETS[name]
        ka, kb, kd = jax.random.split(jax.random.key(seed), 3)

        def net(k):
            return jaxland.SkipNet.init(k, n=d["n"], m=d["m"], d_y=d["d_y"], d_g=d["d_g"],
                                        d_o=d["d_o"], hidden=d["hidden"], dtype=jnp.float32)

        data = jaxland.data.sphere_teacher(kd, n_samples=d["N"], n=d["n"], d_y=d["d_y"],
                                           dtype=jnp.float32)
        x, y = data.x, data.y

        def fn(net_):
            return jaxland.objective(net_, x, y, kappa=0.0, loss="mse")

        return net(ka), net(kb), x, y, fn
    import _eqx_models as em

    a, b, x, y = em.problem(name, seed)
    return a, b, x, y, lambda m_: em.cross_entropy(m_, x, y)


def prepare(problem_name: str, npz: str) -> dict:
    """Write the problem's endpoints and data to `npz` (for the PyTorch side); return its sizes."""
    a, b, x, y, _ = problem(problem_name)
    arrs = dict(x=np.asarray(x), y=np.asarray(y))
    if problem_name in SKIPNETS:
        arrs["kind"] = np.array("skipnet")
        for p, net in (("a_", a), ("b_", b)):
            for k in ("W1", "W2", "V1", "V2"):
                arrs[p + k] = np.asarray(getattr(net, k))
            arrs[p + "n_theta"] = np.array(len(net.theta))
            for i, t in enumerate(net.theta):
                arrs[f"{p}theta{i}"] = np.asarray(t)
    elif problem_name == "mlp":
        arrs["kind"] = np.array("mlp")
        for p, net in (("a_", a), ("b_", b)):
            arrs[p + "layers"] = np.array(len(net.layers))
            for i, layer in enumerate(net.layers):
                arrs[f"{p}w{i}"], arrs[f"{p}b{i}"] = np.asarray(layer.weight), np.asarray(layer.bias)
    else:
        arrs["kind"] = np.array("cnn")
        arrs["strides"] = np.array([a.conv1.stride[0], a.conv2.stride[0]])
        for p, net in (("a_", a), ("b_", b)):
            for k, c in (("c1", net.conv1), ("c2", net.conv2)):
                arrs[p + k + "w"], arrs[p + k + "b"] = np.asarray(c.weight), np.asarray(c.bias)
            arrs[p + "fcw"], arrs[p + "fcb"] = np.asarray(net.fc.weight), np.asarray(net.fc.bias)
    tmp = npz + ".tmp.npz"
    np.savez(tmp, **arrs)
    os.replace(tmp, npz)
    params = sum(int(np.size(v)) for v in jax.tree.leaves(a) if eqx.is_inexact_array(v))
    return dict(params=params, N=int(x.shape[0]))


def gemm(size: int = 4096, calls: int = 5) -> dict:
    """Best seconds of a jitted float32 (size × size) @ (size × size) in XLA."""
    ka, kb = jax.random.split(jax.random.key(123))
    a = jax.random.normal(ka, (size, size), jnp.float32)
    b = jax.random.normal(kb, (size, size), jnp.float32)
    mm = jax.jit(jnp.matmul)
    t = time_calls(lambda: mm(a, b).block_until_ready(), max_calls=calls, budget_s=20.0)
    t.pop("result")
    return dict(methods={"gemm": t}, jax=jax.__version__)


def grid(P: int) -> np.ndarray:
    """t_k = k / P, k = 1 … P (float32): the points `linear_interpolation(steps=P)` visits."""
    return (np.arange(1, P + 1, dtype=np.float64) / P).astype(np.float32)


def _block(v) -> np.ndarray:
    return np.asarray(jax.block_until_ready(v), np.float64)


def point_flops(a, b, fn) -> float | None:
    """XLA's cost analysis of one point t ↦ fn((1 − t) a + t b) (FLOPs), or None."""
    pa, rest = eqx.partition(a, eqx.is_inexact_array)
    pb = eqx.filter(b, eqx.is_inexact_array)

    def point(t):
        return fn(eqx.combine(jax.tree.map(lambda u, v: u + t * (v - u), pa, pb), rest))

    try:
        ca = jax.jit(point).lower(jnp.float32(0.5)).compile().cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        return float(ca.get("flops")) if ca and ca.get("flops") else None
    except Exception:  # pragma: no cover - backend dependent
        return None


def paths(problem_name: str, Ps: list, methods: list, subset: int | None = None,
          max_calls: int = 3, budget_s: float = 6.0) -> dict:
    """Time jaxland's methods on the segment a → b of the problem, every method in this process.

    Methods: ``objective_fn`` (`evaluate_path(objective_fn(x, y), path, ts)`, its own dispatch),
    ``sweep`` / ``point_kernel`` (the same with ``sweep=True`` / ``False``), ``user_function``
    (`evaluate_path(lambda net: loss(net), path, ts)`, a fresh lambda each call: the plain kernel),
    ``user_function_native`` (the same with ``conv="native"``: XLA's own convolution),
    ``jax_loop`` (one jitted point in a Python loop) and ``jit_vmap`` (a plain
    ``jax.jit(jax.vmap(lambda t: loss(path(t))))``). The first three run at every P in `Ps`; the
    others, whose cost per point does not depend on P, on `subset` points when given (extrapolated
    by the caller), else at every P. Returns per ``"method@P"`` the best and all call times, the
    values, the dispatch's choice, FLOPs per point (from shapes and from XLA's cost analysis).
    """
    a, b, x, y, fn = problem(problem_name)
    path = jaxland.paths.linear(a, b)
    out, values, extra = {}, {}, {}
    t_setup = time.perf_counter()
    jobs = []
    for method in methods:
        if method in ("objective_fn", "sweep", "point_kernel"):
            if problem_name not in SKIPNETS:
                continue
            obj = jaxland.objective_fn(x, y, kappa=0.0, loss="mse")
            kw = {"objective_fn": {}, "sweep": {"sweep": True}, "point_kernel": {"sweep": False}}
            for P in Ps:
                ts = grid(P)
                jobs.append((method, P, lambda ts=ts, kw=kw[method]:
                             _block(jaxland.evaluate_path(obj, path, ts, **kw))))
            continue
        for P in ([subset] if subset else Ps):
            ts = grid(P)
            if method == "user_function":
                run = lambda ts=ts: _block(jaxland.evaluate_path(lambda net: fn(net), path, ts))  # noqa: E731
            elif method == "user_function_native":  # XLA's own convolution (conv="native")
                run = lambda ts=ts: _block(jaxland.evaluate_path(lambda net: fn(net), path, ts,  # noqa: E731
                                                                 conv="native"))
            elif method == "jax_loop":
                pt = jax.jit(lambda t: fn(path(t)))
                run = lambda ts=ts, pt=pt: _block([pt(t) for t in ts])  # noqa: E731
            elif method == "jit_vmap":
                vm = jax.jit(jax.vmap(lambda t: fn(path(t))))
                tsj = jnp.asarray(ts)
                run = lambda tsj=tsj, vm=vm: _block(vm(tsj))  # noqa: E731
            else:
                raise ValueError(f"paths: unknown method {method!r}")
            jobs.append((method, P, run))
    # every job warmed up first, then rounds of one timed call per job (A B C A B C …): a job timed
    # first would otherwise pay for the memory the later ones find already mapped
    for method, P, run in jobs:
        run()
        out[f"{method}@{P}"] = dict(wall_s=[], cpu_s=[])
        if method == "objective_fn" and problem_name in SKIPNETS:
            extra[f"choice@{P}"] = _choice(path, x, P)
    t_rounds = time.perf_counter()
    for r in range(max(1, max_calls)):
        for method, P, run in jobs:
            t = time_calls(run, max_calls=1, budget_s=0.0, warmup=lambda: None)
            rec = out[f"{method}@{P}"]
            rec["wall_s"] += t["wall_s"]
            rec["cpu_s"] += t["cpu_s"]
            rec["best_s"] = min(rec["wall_s"])
            values[f"{method}@{P}"] = t["result"].tolist()
        if r >= 1 and time.perf_counter() - t_rounds > budget_s * len(jobs):
            break
    d = SKIPNETS.get(problem_name)
    return dict(methods=out, values=values, extra=extra, jax=jax.__version__,
                flops_point_shapes=None if d is None else flops_plain(**d),
                flops_point_xla=point_flops(a, b, fn),
                xla_flags=os.environ.get("XLA_FLAGS", ""), wall_s=time.perf_counter() - t_setup)


def _choice(path, x, P: int) -> str:
    """The kernel `evaluate_path` picks for P points of the segment (its dispatch rule)."""
    from jaxland.engine._structured import _first_layer_plan
    from jaxland.engine._sweep import switch_fraction, use_sweep

    from jaxland.engine._evaluate import TINY_ENTRIES

    from jaxland.engine._evaluate import TINY_SWEEP_POINTS

    if int(x.shape[0]) * int(path(0.0).W1.shape[0]) < TINY_ENTRIES:
        return "sweep (tiny)" if P >= TINY_SWEEP_POINTS else "plain (tiny)"
    try:
        basis, coefs = path.combination()
        s = grid(P)
        entries = int(x.shape[0]) * int(basis.W1.shape[1])
        frac = lambda: switch_fraction(basis, coefs, x, float(s.min()), float(s.max()))  # noqa: E731
        _, rel = _first_layer_plan(basis, P, True)
        return "sweep" if use_sweep(None, coefs, P, entries, True, frac, 1.0 / rel) else "point_kernel"
    except Exception as e:  # the rule's internals changed
        return f"unknown ({type(e).__name__})"


def big(P: int) -> dict:
    """F at P points of the reference problem (`objective_fn`, default dispatch) after a 256-point
    warm-up; the time and this process's peak resident memory (on a GPU also the device's peak)."""
    import resource

    a, b, x, y, _ = problem("reference")
    path = jaxland.paths.linear(a, b)
    fn = jaxland.objective_fn(x, y, kappa=0.0, loss="mse")
    ts = grid(P)
    jax.block_until_ready(jaxland.evaluate_path(fn, path, ts[:256]))
    t0 = time.perf_counter()
    vals = _block(jaxland.evaluate_path(fn, path, ts))
    sec = time.perf_counter() - t0
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # pragma: no cover - backend dependent
        stats = {}
    return dict(methods={}, P=P, seconds=sec, points_per_s=P / sec,
                peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                device_peak_bytes=stats.get("peak_bytes_in_use"),
                finite=bool(np.all(np.isfinite(vals))))


def hessian_eigs(problem_name: str, ts: list, k: int, num_steps: int, probes: int, tol: float,
                 which: str, warm_start: bool, trace: bool, repeats: int = 1) -> dict:
    """`jaxland.hessian_eigs_along_path` (and, with `trace`, `hessian_trace_batch`) at the points
    t of the segment a → b of a SkipNet problem (after one warm-up call that compiles)."""
    a, b, x, y, _ = problem(problem_name)
    path = jaxland.paths.linear(a, b)
    F = jaxland.objective_fn(x, y, kappa=0.0)
    key = jax.random.PRNGKey(1)
    tsj = jnp.asarray(ts, jnp.float32)

    def eig():
        return jax.block_until_ready(jaxland.hessian_eigs_along_path(
            F, path, tsj, key=key, k=k, num_steps=num_steps, tol=tol, which=which,
            warm_start=warm_start))

    te = time_calls(eig, max_calls=repeats, budget_s=0.0)
    r = te.pop("result")
    out = dict(methods={"eigs": te}, top=np.asarray(r.top).tolist(),
               top_bound=np.asarray(r.top_bound).tolist(),
               lambda_min=np.asarray(r.lambda_min).tolist(),
               num_steps=np.asarray(r.num_steps).tolist(), jax=jax.__version__)
    if trace:
        pts = jax.vmap(path)(tsj)

        def tr():
            return jax.block_until_ready(jaxland.hessian_trace_batch(
                F, pts, key=key, num_probes=probes, batch_size=min(probes, 8), point_batch_size=1))

        tt = time_calls(tr, max_calls=repeats, budget_s=0.0)
        rt = tt.pop("result")
        out["methods"]["trace"] = tt
        out.update(trace=np.asarray(rt.mean).tolist(), trace_stderr=np.asarray(rt.stderr).tolist())
    return out
