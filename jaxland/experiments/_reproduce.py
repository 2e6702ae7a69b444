"""`jaxland reproduce`: the main job.

Trains two SkipNet minima and the e(l) network ξ* on the default data, evaluates F along the paths
between them, and writes `report.json` and PNG figures. Each stage's result is stored in
`OUT/stages/` as soon as it is finished; rerunning with the same settings skips finished stages.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..construct._best_l_term import best_l_term
from ..construct._connect import connect
from ..data import load as load_data
from ..engine._evaluate import evaluate_path
from ..landscape._metrics import barrier, refine_max
from ..landscape._plot import plot_slice
from ..landscape._slices import Slice, plane_basis, plane_slice, slice_coordinates
from ..model._models import SkipNet, TwoLayer, embed_two_layer
from ..model._objective import objective_fn
from ..model._train import fit
from ..paths._paths import linear
from ..search._curve import fit_curve
from ..second_order._hessian import hessian_eigs
from ._store import RunStore, to_jsonable

PRESETS = ("tiny", "quick", "full")


def reproduce_settings(*, preset: str = "full", data: str = "default", seed: int = 0) -> dict:
    """The settings of a `reproduce` run (all of them go into report.json).

    Presets: "full" (the default job), "quick" (under two minutes on 2 CPU cores) and "tiny" (the
    test suite's smoke run).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {preset!r}")
    m = {"tiny": 16, "quick": 48, "full": 256}[preset]
    eta = 0.5
    pick = lambda tiny, quick, full: {"tiny": tiny, "quick": quick, "full": full}[preset]  # noqa: E731
    return {
        "data": data,
        "preset": preset,
        "seed": seed,
        "m": m,
        "d_g": 8,
        "d_o": 8,
        "hidden": [8],
        "kappa": 1e-3,
        "loss": None,  # filled from the data set
        "eta": eta,
        "l": int(math.floor(m**eta)),
        "steps": pick(200, 1500, 4000),
        "learning_rate": 1e-2,
        "points": pick(33, 201, 1001),
        "refine_tol": 1e-4,
        "connect_points": pick(17, 65, 257),
        "curve_steps": pick(50, 400, 2000),
        "curve_batch": 16,
        "lanczos_steps": pick(16, 32, 48),
        "plane_grid": pick(9, 31, 61),
        "plane_margin": 0.25,
        "dtype": "float64" if jax.config.jax_enable_x64 else "float32",
    }


class _Progress:
    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[jaxland {time.perf_counter() - self.t0:7.1f}s] {msg}", file=self.stream, flush=True)


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "jaxland reproduce draws PNG figures; install matplotlib with `pip install 'jaxland[plot]'`"
        ) from e


def reproduce(
    out: str | Path,
    *,
    preset: str = "full",
    data: str = "default",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the main job and write `out/report.json` and figures; returns the report.

    Stages (each stored in `out/stages/` as soon as it is finished and reused on a rerun):

    1. two SkipNet minima ξ_A, ξ_B of F (eq. 7) trained with Adam, and ξ*, the e(l) estimate with
       l = ⌊m^η⌋ units (eqs. 5, 19), embedded in a SkipNet as (W1*, W2*, 0, 0, 0);
    2. λ_min, λ_max of ∇²F at both minima (Lanczos, matrix-free);
    3. the paths, each evaluated densely with `evaluate_path` and refined around its maximum with
       `refine_max`, with λ_min, λ_max at the maximum: the straight segment ξ_A → ξ_B, the segment
       ξ_A → ξ*, the Theorem 11 path of `connect` with its certificate, and a Bézier curve fitted by
       `fit_curve` (Garipov et al.);
    4. F on the plane through ξ_A, ξ_B and ξ* with every path projected onto it.

    **Arguments:**
    - `out`: output folder (created). Finished stages are kept in `out/stages/` and reused.
    - `preset`: "full", "quick" (under two minutes on 2 CPU cores) or "tiny" (a smoke run).
    - `data`: one of `jaxland.data.DATASETS`.
    - `seed`: the PRNG seed of the whole run.
    """
    _require_matplotlib()
    import optax

    log = progress or _Progress()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = reproduce_settings(preset=preset, data=data, seed=seed)
    ds, loss = load_data(data, quick=preset != "full")
    s["loss"] = loss
    store = RunStore(out, s)
    x, y = ds.x, ds.y
    key = jax.random.PRNGKey(seed)
    k_a, k_b, k_star, k_curve, k_hess = jax.random.split(key, 5)
    log(f"data {ds.name}: x {tuple(x.shape)}, y {tuple(y.shape)}; settings {json.dumps(s)}")

    def make(k):
        return SkipNet.init(k, n=x.shape[1], m=s["m"], d_y=y.shape[1], d_g=s["d_g"], d_o=s["d_o"],
                            hidden=tuple(s["hidden"]))

    F = objective_fn(x, y, kappa=s["kappa"], loss=loss)

    # -- stage 1: the minima and ξ* ------------------------------------------------------------------
    nets = {}
    for name, k in (("minimum_a", k_a), ("minimum_b", k_b)):
        like = make(k)
        rec = store.load(name)
        net = store.load_tree(name, like) if rec is not None else None
        if net is None:
            log(f"training {name} (SkipNet, m={s['m']}, {s['steps']} Adam steps)")
            r = fit(like, x, y, kappa=s["kappa"], loss=loss, steps=s["steps"],
                    optimizer=optax.adam(s["learning_rate"]))
            net = r.net
            store.save_tree(name, net)
            rec = store.save(name, {"F": float(F(net)), "history_every_100": r.history[::100]})
        else:
            log(f"{name}: loaded from {store.dir}")
        nets[name] = (net, rec)

    like_star = TwoLayer(W1=jnp.zeros((s["l"], x.shape[1]), x.dtype),
                         W2=jnp.zeros((y.shape[1], s["l"]), x.dtype))
    rec = store.load("xi_star")
    star = store.load_tree("xi_star", like_star) if rec is not None else None
    if star is None:
        log(f"estimating e(l) with l = floor(m^eta) = {s['l']} units")
        r = best_l_term(x, y, l=s["l"], kappa=s["kappa"], key=k_star, loss=loss,
                        steps=s["steps"], restarts=4)
        star = r.net
        store.save_tree("xi_star", star)
        rec = store.save("xi_star", {"e_l_upper_bound": float(r.value),
                                     "restart_values": r.restart_values})
    else:
        log("xi_star: loaded")
    star_rec = rec
    net_a, net_b = nets["minimum_a"][0], nets["minimum_b"][0]
    star_skip = embed_two_layer(star, net_a)
    f_star = float(F(star_skip))
    frame = _plane_frame(net_a, net_b, star_skip)

    def curvature(net, k):
        e = hessian_eigs(F, net, key=k, k=1, num_steps=s["lanczos_steps"])
        return {"lambda_min": float(e.lambda_min), "lambda_max": float(e.lambda_max),
                "lambda_min_bound": float(e.bottom_bound[0]), "lambda_max_bound": float(e.top_bound[0])}

    # -- stage 2: curvature at the minima ------------------------------------------------------------
    rec = store.load("hessian_minima")
    if rec is None:
        log(f"Lanczos ({s['lanczos_steps']} steps) for lambda_min, lambda_max of the Hessian at the minima")
        ka, kb = jax.random.split(k_hess)
        rec = store.save("hessian_minima", {"minimum_a": curvature(net_a, ka),
                                            "minimum_b": curvature(net_b, kb)})
    hess_minima = rec

    # -- stage 3: the paths --------------------------------------------------------------------------
    ts = np.linspace(0.0, 1.0, s["points"])
    plane_ts = np.linspace(0.0, 1.0, 129)

    def path_record(name, path, extra=None):
        log(f"{name}: F at {len(ts)} points (evaluate_path), refining the maximum to {s['refine_tol']}")
        vals = np.asarray(evaluate_path(F, path, ts), np.float64)
        if not np.all(np.isfinite(vals)):
            raise FloatingPointError(f"F is not finite along the path {name}")
        ref = refine_max(F, path, ts, vals, tol=s["refine_tol"])
        b = barrier(vals, ts)
        t_max = float(ref.t_max)
        f_max = float(ref.f_max)
        rec = {
            "t": ts, "F": vals,
            "t_max": t_max, "f_max": f_max,
            "barrier": f_max - max(float(vals[0]), float(vals[-1])),
            "barrier_grid": float(b.barrier),
            "barrier_linear": float(b.barrier_linear),
            "refined_points": int(np.asarray(ref.ts).size - len(ts)),
            "refine_converged": bool(ref.converged),
            "hessian_at_max": curvature(path(jnp.asarray(t_max, path_dtype(path))),
                                        jax.random.fold_in(k_hess, len(name))),
            "plane_xy": {"t": plane_ts, "xy": np.asarray(slice_coordinates(frame, path, plane_ts))},
        }
        rec.update(extra or {})
        return store.save(name, rec)

    paths = {}
    for name, make_path in (("straight_a_b", lambda: linear(net_a, net_b)),
                            ("straight_a_star", lambda: linear(net_a, star_skip))):
        rec = store.load(name)
        paths[name] = rec if rec is not None else path_record(name, make_path())

    rec = store.load("theorem11")
    if rec is None:
        log(f"connect: the Theorem 11 path ξ_A → ξ* → ξ_B (eta = {s['eta']}, l = {s['l']})")
        res = connect(net_a, net_b, x, y, kappa=s["kappa"], eta=s["eta"], loss=loss, xi_star=star,
                      n_points=s["connect_points"])
        rec = path_record("theorem11", res.path, {"certificate": res.certificate.to_dict()})
    paths["theorem11"] = rec

    rec = store.load("bezier")
    if rec is None:
        log(f"fit_curve: quadratic Bézier curve ξ_A → ξ_B, {s['curve_steps']} Adam steps")
        res = fit_curve(F, net_a, net_b, kind="bezier", bends=1, steps=s["curve_steps"],
                        batch=s["curve_batch"], key=k_curve, points=len(ts))
        rec = path_record("bezier", res.path, {"curve_history_every_10": np.asarray(res.history)[::10]})
    paths["bezier"] = rec

    # -- stage 4: the plane through ξ_A, ξ_B, ξ* -----------------------------------------------------
    rec = store.load("plane")
    if rec is None:
        g = s["plane_grid"]
        log(f"F on a {g}×{g} grid of the plane through ξ_A, ξ_B, ξ*")
        alphas, betas = _plane_grid(frame, paths, g, s["plane_margin"])
        sl = plane_slice(F, net_a, net_b, star_skip, alphas=alphas, betas=betas)
        rec = store.save("plane", {"alphas": alphas, "betas": betas, "F": np.asarray(sl.values),
                                   "anchors": np.asarray(sl.anchors),
                                   "anchor_names": ["minimum_a", "minimum_b", "xi_star"]})
    plane_rec = rec

    report = {
        "settings": s,
        "data": {"name": ds.name, "N": int(x.shape[0]), "n": int(x.shape[1]), "d_y": int(y.shape[1])},
        "minima": {k: {"F": v[1]["F"], **hess_minima[k]} for k, v in nets.items()},
        "xi_star": {"l": s["l"], "F": f_star, "e_l_upper_bound": star_rec["e_l_upper_bound"]},
        "paths": paths,
        "plane": plane_rec,
    }
    figures = _plot_segments(out, paths) + _plot_plane(out, plane_rec, paths)
    report["figures"] = figures
    (out / "report.json").write_text(json.dumps(to_jsonable(report), indent=1))
    log(f"wrote {out / 'report.json'} and {', '.join(figures)}")
    return report


def path_dtype(path):
    leaves = [a for a in jax.tree.leaves(path) if eqx.is_inexact_array(a)]
    return leaves[0].dtype if leaves else jnp.result_type(float)


def _plot_segments(out: Path, segments: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, rec in segments.items():
        ax.plot(rec["t"], rec["F"], label=f"{name} (barrier {rec['barrier']:.3g})")
    ax.set_xlabel("t")
    ax.set_ylabel("F(γ(t))")
    ax.set_yscale("log")
    ax.set_title("F along paths between minima")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "paths.png")
    plt.close(fig)
    return ["paths.png"]


def _plane_frame(a, b, c) -> Slice:
    """The plane through ξ_A, ξ_B, ξ* as a `Slice` without values (the basis of `plane_slice`), so that
    paths can be projected onto it before the plane itself is evaluated."""
    u, v, n1, cu, n2, _ = plane_basis(a, b, c)
    anchors = jnp.asarray([[0.0, 0.0], [float(n1), 0.0], [float(cu), float(n2)]], n1.dtype)
    return Slice(None, None, None, a, u, v, anchors)


def _plane_grid(frame: Slice, paths: dict, grid: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates covering ξ_A, ξ_B, ξ* and every projected path, enlarged by `margin`."""
    xy = np.concatenate([np.asarray(frame.anchors, np.float64)]
                        + [np.asarray(r["plane_xy"]["xy"], np.float64) for r in paths.values()])
    lo, hi = xy.min(0), xy.max(0)
    pad = margin * (hi - lo)
    return np.linspace(lo[0] - pad[0], hi[0] + pad[0], grid), np.linspace(lo[1] - pad[1], hi[1] + pad[1], grid)


def _plot_plane(out: Path, plane: dict, paths: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # colour by log10 F (F > 0 here: the loss is ≥ 0 and κR > 0 away from the origin)
    logF = np.log10(np.maximum(np.asarray(plane["F"], np.float64), np.finfo(np.float64).tiny))
    sl = Slice(logF, np.asarray(plane["alphas"]), np.asarray(plane["betas"]),
               None, None, None, np.asarray(plane["anchors"]))
    fig, ax = plt.subplots(figsize=(6.4, 5.0), dpi=120)
    plot_slice(sl, {name: np.asarray(rec["plane_xy"]["xy"]) for name, rec in paths.items()}, ax=ax,
               title="log10 F on the plane through ξ_A, ξ_B, ξ* (paths projected)")
    for (px, py), lab in zip(np.asarray(plane["anchors"]), ("ξ_A", "ξ_B", "ξ*")):
        ax.annotate(lab, (px, py), textcoords="offset points", xytext=(5, 5), color="w")
    ax.set_xlabel("α: distance along ξ_A → ξ_B")
    ax.set_ylabel("β: distance towards ξ* (orthogonalised)")
    fig.tight_layout()
    fig.savefig(out / "plane.png")
    plt.close(fig)
    return ["plane.png"]
