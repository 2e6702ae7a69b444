"""`jaxland reproduce`: the main job.

Trains two SkipNet minima and the e(l) network ξ* on the default data, evaluates F along the paths
between them, and writes `report.json` and PNG figures. Each stage's result is stored in
`OUT/stages/` as soon as it is finished; rerunning with the same settings skips finished stages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..construct._best_l_term import best_l_term
from ..construct._connect import connect
from ..data import DATASETS, load as load_data
from ..engine._evaluate import evaluate_path
from ..landscape._metrics import barrier, refine_max
from ..landscape._slices import Slice, plane_basis, plane_slice, slice_coordinates
from ..model._models import SkipNet, TwoLayer, embed_two_layer
from ..model._objective import objective_fn
from ..model._train import fit
from ..paths._paths import linear
from ..search._curve import fit_curve
from ..second_order._hessian import hessian_eigs
from ._preflight import check_out_dir, check_seed, require
from ._progress import Progress
from ._store import RunStore, to_jsonable

PRESETS = ("tiny", "quick", "full")

# Expected seconds of each stage on 2 CPU cores (tiny, quick, full), measured on an idle machine and
# rounded up: a stage past SLOW_FACTOR (10) times this is reported as slow by name (`Progress.stage`).
_EXPECTED = {
    "train": (5, 5, 10), "xi_star": (5, 5, 15), "hessian": (5, 5, 10), "path": (5, 10, 20),
    "connect": (10, 15, 30), "curve": (5, 10, 90), "plane": (5, 5, 15), "figures": (5, 5, 10),
}


def _expected(stage: str, preset: str) -> float:
    return float(_EXPECTED[stage][PRESETS.index(preset)])


def reproduce_settings(*, preset: str = "full", data: str = "default", seed: int = 0) -> dict:
    """The settings of a `reproduce` run (all of them go into report.json).

    Presets: "full" (the default job), "quick" (under two minutes on 2 CPU cores) and "tiny" (the
    test suite's smoke run).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {preset!r}")
    if data not in DATASETS:
        raise ValueError(f"data must be one of {DATASETS}; got {data!r}")
    check_seed(seed)
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


def preflight(out, *, data: str = "default", name: str = "out") -> Path:
    """Everything `reproduce` checks before it computes or creates anything: the output folder can
    be written, and matplotlib (and scikit-learn for the bundled real data sets) are installed."""
    p = check_out_dir(out, name)
    require("matplotlib", "jaxland reproduce (it draws PNG figures)")
    if data in ("digits", "diabetes"):
        require("sklearn", f"the {data} data set")
    return p


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
    4. F on the plane through ξ_A, ξ_B and ξ* with every path projected onto it: a grid around the
       three minima (report key "plane") and, when a projected path goes far beyond them, a grid of
       the whole extent ("plane_overview"); both are drawn in plane.png.

    **Arguments:**
    - `out`: output folder (created). Finished stages are kept in `out/stages/` and reused. The
      arguments, the folder and the optional packages are checked before anything is created
      (`preflight`).
    - `preset`: "full", "quick" (under two minutes on 2 CPU cores) or "tiny" (a smoke run).
    - `data`: one of `jaxland.data.DATASETS`.
    - `seed`: the PRNG seed of the whole run.
    """
    s = reproduce_settings(preset=preset, data=data, seed=seed)
    out = preflight(out, data=data)
    import optax

    log = Progress("", progress or True)
    out.mkdir(parents=True, exist_ok=True)
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
            with log.stage(f"training {name}", _expected("train", preset),
                           f"training {name} (SkipNet, m={s['m']}, {s['steps']} Adam steps)"):
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
        with log.stage("xi_star", _expected("xi_star", preset),
                       f"estimating e(l) with l = floor(m^eta) = {s['l']} units"):
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
        return _floor_bounds({"lambda_min": float(e.lambda_min), "lambda_max": float(e.lambda_max),
                              "lambda_min_bound": float(e.bottom_bound[0]),
                              "lambda_max_bound": float(e.top_bound[0])}, s["dtype"])

    # -- stage 2: curvature at the minima ------------------------------------------------------------
    rec = store.load("hessian_minima_v2")  # v2: bounds floored at the rounding level, ‖∇F‖
    if rec is None:
        ka, kb = jax.random.split(k_hess)
        with log.stage("hessian_minima", _expected("hessian", preset),
                       f"Lanczos ({s['lanczos_steps']} steps) for lambda_min, lambda_max of the "
                       "Hessian at the minima"):
            rec = {name: {**curvature(net, kk), "grad_norm": _grad_norm(F, net)}
                   for name, net, kk in (("minimum_a", net_a, ka), ("minimum_b", net_b, kb))}
        rec = store.save("hessian_minima_v2", rec)
    hess_minima = rec

    # -- stage 3: the paths --------------------------------------------------------------------------
    ts = np.linspace(0.0, 1.0, s["points"])
    plane_ts = np.linspace(0.0, 1.0, 129)

    rounding = barrier_rounding_level(s["dtype"], [nets["minimum_a"][1]["F"],
                                                   nets["minimum_b"][1]["F"], f_star])

    def path_record(name, path, extra=None):
        with log.stage(name, _expected("path", preset), f"{name}: F at {len(ts)} points "
                       f"(evaluate_path), refining the maximum to {s['refine_tol']}"):
            return _path_record(name, path, extra)

    def _path_record(name, path, extra):
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
        with log.stage("connect", _expected("connect", preset),
                       f"connect: the Theorem 11 path ξ_A → ξ* → ξ_B (eta = {s['eta']}, "
                       f"l = {s['l']})"):
            res = connect(net_a, net_b, x, y, kappa=s["kappa"], eta=s["eta"], loss=loss,
                          xi_star=star, n_points=s["connect_points"])
        rec = path_record("theorem11", res.path, {"certificate": res.certificate.to_dict()})
    paths["theorem11"] = rec

    rec = store.load("bezier")
    if rec is None:
        with log.stage("fit_curve", _expected("curve", preset),
                       f"fit_curve: quadratic Bézier curve ξ_A → ξ_B, {s['curve_steps']} Adam "
                       "steps"):
            res = fit_curve(F, net_a, net_b, kind="bezier", bends=1, steps=s["curve_steps"],
                            batch=s["curve_batch"], key=k_curve, points=len(ts))
        rec = path_record("bezier", res.path, {"curve_history_every_10": np.asarray(res.history)[::10]})
    paths["bezier"] = rec

    # -- stage 4: the plane through ξ_A, ξ_B, ξ* -----------------------------------------------------
    # Two grids: a zoom on the three minima (where they and the paths near the plane can be told
    # apart) and, when a projected path goes far beyond it (the Theorem 11 path can reach hundreds
    # of units while the minima lie a few units apart), an overview of the whole extent.
    g = s["plane_grid"]
    zoom = _zoom_window(frame, s["plane_margin"])
    full = _full_window(frame, paths, s["plane_margin"])
    full = (np.minimum(full[0], zoom[0]), np.maximum(full[1], zoom[1]))  # it contains the zoom
    # (stage names differ from the single grid of earlier versions, so that a stored grid over a
    # different window is never reused)
    windows = {"plane_zoom": zoom}
    if _needs_overview(zoom, full):
        windows["plane_overview"] = full
    planes = {}
    for name, (lo, hi) in windows.items():
        # the overview's grid is spaced like its symlog axes (stored under its own stage name)
        stage = name if name == "plane_zoom" else "plane_overview_symlog"
        rec = store.load(stage)
        if rec is None:
            if name == "plane_zoom":
                lin = None
                alphas, betas = np.linspace(lo[0], hi[0], g), np.linspace(lo[1], hi[1], g)
            else:
                lin = _linthresh(zoom, (lo, hi))
                alphas, betas = (np.linspace(lo[i], hi[i], g) if lin[i] is None else
                                 _symlog_grid(lo[i], hi[i], lin[i], g) for i in (0, 1))
            with log.stage(name, _expected("plane", preset),
                           f"F on a {g}×{g} grid of the plane through ξ_A, ξ_B, ξ* ({name})"):
                sl = plane_slice(F, net_a, net_b, star_skip, alphas=alphas, betas=betas)
            rec = store.save(stage, {"alphas": alphas, "betas": betas, "F": np.asarray(sl.values),
                                     "anchors": np.asarray(sl.anchors),
                                     "anchor_names": ["minimum_a", "minimum_b", "xi_star"],
                                     **({"linthresh": lin} if lin is not None else {})})
        planes[name] = rec
    plane_rec = planes["plane_zoom"]
    anchor_F = [nets["minimum_a"][1]["F"], nets["minimum_b"][1]["F"], f_star]

    # (records stored by earlier versions get the same floor on their bounds)
    hess_minima = {k: _floor_bounds(v, s["dtype"]) for k, v in hess_minima.items()}
    paths = {k: {**v, "hessian_at_max": _floor_bounds(v["hessian_at_max"], s["dtype"])}
             for k, v in paths.items()}
    report = {
        "settings": s,
        "data": {"name": ds.name, "N": int(x.shape[0]), "n": int(x.shape[1]), "d_y": int(y.shape[1])},
        "minima": {k: {"F": v[1]["F"], **hess_minima[k]} for k, v in nets.items()},
        "xi_star": {"l": s["l"], "F": f_star, "e_l_upper_bound": star_rec["e_l_upper_bound"]},
        "paths": paths,
        "barrier_rounding_level": rounding,
        "notes": REPORT_NOTES,
        "plane": plane_rec,
        **({"plane_overview": planes["plane_overview"]} if "plane_overview" in planes else {}),
    }
    with log.stage("figures", _expected("figures", preset), "drawing paths.png and plane.png"):
        figures = _plot_segments(out, paths, rounding) + _plot_plane(out, planes, paths, anchor_F)
    report["figures"] = figures
    (out / "report.json").write_text(json.dumps(to_jsonable(report), indent=1))
    log(f"wrote {out / 'report.json'} and {', '.join(figures)}")
    return report


# What report.json's less obvious numbers mean (written into the report as "notes").
REPORT_NOTES = {
    "lambda_min": "smallest Ritz value of the Hessian of F (Lanczos, settings.lanczos_steps steps); "
                  "Ritz values lie inside [λ_min, λ_max], so a negative value certifies negative "
                  "curvature. At the trained minima it is small and negative (|λ_min| ≪ λ_max, "
                  "with ‖∇F‖ in grad_norm): Adam stops at an approximate minimum of this ReLU "
                  "network's F, next to nearly flat directions, not at a strict one.",
    "lambda_min_bound": "an eigenvalue of the Hessian lies within this distance of lambda_min "
                        "(Parlett's residual bound β_m|s_m|, floored at eps·max|λ|: below that "
                        "the eigensolver's rounding dominates)",
    "lambda_max_bound": "the same for lambda_max; it sits at the floor eps·max|λ| when the top "
                        "Ritz value has converged to working precision (its residual bound "
                        "underflows to 0)",
    "barrier": "max F along the path (refined) − max(F at its two ends); never negative. A value "
               "at or below barrier_rounding_level is zero up to rounding and printed as 0",
    "barrier_rounding_level": "10·eps·max(F(ξ_A), F(ξ_B), F(ξ*)) in the run's dtype",
}


def barrier_rounding_level(dtype: str, values) -> float:
    """10 roundings of the largest |F| among `values` in `dtype`: a barrier at or below this is
    zero up to rounding (the alignment table uses the same level)."""
    return 10.0 * float(np.finfo(np.dtype(dtype)).eps) * max(abs(float(v)) for v in values)


def format_barrier(value: float, rounding: float) -> str:
    """A barrier as printed: "0" (with the raw value) when it is at the rounding level."""
    if abs(value) <= rounding:
        return f"0 (raw {value:.3g}, rounding level {rounding:.2g})" if value != 0 else "0"
    return f"{value:.4g}"


def _floor_bounds(rec: dict, dtype: str) -> dict:
    """Parlett's residual bound β_m|s_{m,i}| omits the rounding of the eigensolver: for a Ritz value
    that has converged it comes out as 0.0 (the last component of its eigenvector underflows).
    Both bounds are floored at eps·max(|λ_min|, |λ_max|), the accuracy the tridiagonal eigensolver
    itself can give."""
    floor = float(np.finfo(np.dtype(dtype)).eps) * max(abs(float(rec["lambda_min"])),
                                                       abs(float(rec["lambda_max"])))
    return {**rec, "lambda_min_bound": max(float(rec["lambda_min_bound"]), floor),
            "lambda_max_bound": max(float(rec["lambda_max_bound"]), floor)}


def _grad_norm(F, net) -> float:
    g = eqx.filter_grad(F)(net)
    return float(jnp.sqrt(sum(jnp.sum(jnp.square(v)) for v in jax.tree.leaves(g)
                              if eqx.is_inexact_array(v))))


def path_dtype(path):
    leaves = [a for a in jax.tree.leaves(path) if eqx.is_inexact_array(a)]
    return leaves[0].dtype if leaves else jnp.result_type(float)


def _plot_segments(out: Path, segments: dict, rounding: float = 0.0) -> list[str]:
    import matplotlib.pyplot as plt

    fig = _segments_figure(segments, rounding)
    fig.savefig(out / "paths.png")
    plt.close(fig)
    return ["paths.png"]


def _segments_figure(segments: dict, rounding: float = 0.0):
    """paths.png: F along each path, in its colour of `path_style` (the same as in plane.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for i, (name, rec) in enumerate(segments.items()):
        colour, ls = path_style(name, i)
        b = "0 (rounding)" if abs(rec["barrier"]) <= rounding else f"{rec['barrier']:.3g}"
        ax.plot(rec["t"], rec["F"], ls, color=colour, label=f"{name} (barrier {b})")
    ax.set_xlabel("t")
    ax.set_ylabel("F(γ(t))")
    ax.set_yscale("log")
    ax.set_title("F along paths between minima")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plane_frame(a, b, c) -> Slice:
    """The plane through ξ_A, ξ_B, ξ* as a `Slice` without values (the basis of `plane_slice`), so that
    paths can be projected onto it before the plane itself is evaluated."""
    u, v, n1, cu, n2, _ = plane_basis(a, b, c)
    anchors = jnp.asarray([[0.0, 0.0], [float(n1), 0.0], [float(cu), float(n2)]], n1.dtype)
    return Slice(None, None, None, a, u, v, anchors)


def _bbox(xy: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = xy.min(0), xy.max(0)
    pad = margin * np.maximum(hi - lo, 1e-3 * max(float(np.max(hi - lo)), 1e-12))
    return lo - pad, hi + pad


def _zoom_window(frame: Slice, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of the plane where ξ_A, ξ_B, ξ* can be told apart: a square (α and β are both
    distances, drawn to the same scale) around them, `margin` of their largest distance on every
    side."""
    an = np.asarray(frame.anchors, np.float64)
    diam = float(np.max(np.linalg.norm(an[:, None] - an[None], axis=-1)))
    centre = (an.min(0) + an.max(0)) / 2
    half = float(np.max(an.max(0) - an.min(0))) / 2 + margin * diam
    return centre - half, centre + half


def _full_window(frame: Slice, paths: dict, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Everything: the anchors and every projected path."""
    xy = np.concatenate([np.asarray(frame.anchors, np.float64)]
                        + [np.asarray(r["plane_xy"]["xy"], np.float64) for r in paths.values()])
    return _bbox(xy, margin)


SYMLOG_BEYOND = 5.0  # an overview axis is symlog when the extent reaches past 5 L (else linear)


def _linthresh(zoom, full=None) -> list:
    """Per axis, the half-width L of the linear part of the overview's symlog axes: the zoom window
    lies inside [−L, L], so it is drawn to a linear scale and the far excursions logarithmically.
    None for an axis of `full` that stays within `SYMLOG_BEYOND` × L (a linear axis is clearer)."""
    L = np.maximum(np.abs(np.asarray(zoom[0], np.float64)), np.abs(np.asarray(zoom[1], np.float64)))
    if full is None:
        return [float(v) for v in L]
    reach = np.maximum(np.abs(np.asarray(full[0], np.float64)), np.abs(np.asarray(full[1], np.float64)))
    return [float(v) if r > SYMLOG_BEYOND * v else None for v, r in zip(L, reach, strict=True)]


def _symlog(x, L):
    x = np.asarray(x, np.float64)
    return np.where(np.abs(x) <= L, x / L, np.sign(x) * (1 + np.log10(np.maximum(np.abs(x), L) / L)))


def _symlog_inv(u, L):
    u = np.asarray(u, np.float64)
    return np.where(np.abs(u) <= 1, u * L, np.sign(u) * L * 10 ** (np.abs(u) - 1))


def _symlog_grid(lo: float, hi: float, L: float, g: int) -> np.ndarray:
    """g points from lo to hi equally spaced in matplotlib's symlog coordinate (linear on [−L, L],
    logarithmic beyond; linscale 1): as many grid points per unit of the picture everywhere."""
    return _symlog_inv(np.linspace(_symlog(lo, L), _symlog(hi, L), g), L)


def _needs_overview(zoom, full) -> bool:
    """An overview panel when the whole extent is more than 1.5× the zoom in either direction."""
    return bool(np.any((full[1] - full[0]) > 1.5 * (zoom[1] - zoom[0])))


_ANCHOR_LABELS = ("ξ_A", "ξ_B", "ξ*")
OVERVIEW_TOP = 1e4  # the overview's colour scale ends at this multiple of the minima's highest F
# one colour and line style per path, by name, in paths.png and plane.png alike
_PATH_STYLE = {"straight_a_b": ("#d62728", "-"), "straight_a_star": ("#ff7f0e", "-"),
               "theorem11": ("#e377c2", "-"), "bezier": ("#17becf", "--")}


def path_style(name: str, i: int = 0) -> tuple[str, str]:
    """(colour, line style) of path `name`: fixed for the job's four paths, else the i-th of
    matplotlib's cycle."""
    return _PATH_STYLE.get(name, (f"C{i}", "-"))


def _draw_paths(ax, paths: dict, in_plane: dict) -> None:
    for i, (name, rec) in enumerate(paths.items()):
        xy = np.asarray(rec["plane_xy"]["xy"], np.float64)
        colour, ls = path_style(name, i)
        label = name if in_plane.get(name, False) else f"{name} (projection)"
        ax.plot(xy[:, 0], xy[:, 1], ls, color=colour, lw=1.8, label=label, zorder=3)


def _plot_plane(out: Path, planes: dict, paths: dict, anchor_F) -> list[str]:
    import matplotlib.pyplot as plt

    fig = _plane_figure(planes, paths, anchor_F)
    fig.savefig(out / "plane.png")
    plt.close(fig)
    return ["plane.png"]


def _plane_figure(planes: dict, paths: dict, anchor_F):
    """plane.png: F on the plane through ξ_A, ξ_B, ξ* near the three minima (log colour scale,
    levels from just below the lowest minimum), the paths projected onto it, and, when a path goes
    far from the minima, an overview panel of the whole extent with the zoom window marked: symlog
    axes (linear on the zoom window, logarithmic beyond, so the window is never a dot) and a colour
    scale that stops at `OVERVIEW_TOP` × the minima's highest F."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    zoom = planes["plane_zoom"]
    an = np.asarray(zoom["anchors"], np.float64)
    # a path lies in the plane when its projection reproduces it: the two straight segments from ξ_A
    in_plane = {"straight_a_b": True, "straight_a_star": True}
    overview = planes.get("plane_overview")
    ncols = 2 if overview is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 5.4), dpi=120, squeeze=False)

    ax = axes[0][0]
    al, be = np.asarray(zoom["alphas"], np.float64), np.asarray(zoom["betas"], np.float64)
    Z = np.asarray(zoom["F"], np.float64)
    # levels around the minima: from just below the lowest of F(ξ_A), F(ξ_B), F(ξ*) up to 30× the
    # highest of them (or the top of the window, if lower); higher values share the top colour
    f_lo = 0.9 * min(float(np.nanmin(Z)), min(anchor_F))
    f_hi = min(float(np.nanmax(Z)), 30 * max(anchor_F))
    f_hi = max(f_hi, 2 * f_lo)
    levels = np.geomspace(f_lo, f_hi, 17)
    X, Y = np.meshgrid(al, be, indexing="ij")
    Zc = np.clip(Z, f_lo, None)
    cs = ax.contourf(X, Y, Zc, levels=levels, norm=LogNorm(f_lo, f_hi), cmap="viridis",
                     extend="max")
    ax.contour(X, Y, Zc, levels=levels, colors="k", linewidths=0.3, alpha=0.35)
    cb = fig.colorbar(cs, ax=ax, format="%.3g")
    cb.set_label("F (log colour scale)")
    _draw_paths(ax, paths, in_plane)
    ax.plot(an[:, 0], an[:, 1], "o", color="white", mec="k", ms=7, zorder=5)
    for (px, py), lab, fv in zip(an, _ANCHOR_LABELS, anchor_F, strict=True):
        ax.annotate(f"{lab}\nF = {fv:.3g}", (px, py), textcoords="offset points", xytext=(6, 6),
                    color="white", fontsize=8, zorder=6,
                    bbox=dict(boxstyle="round,pad=0.2", fc="black", alpha=0.45, ec="none"))
    ax.set_xlim(al.min(), al.max())
    ax.set_ylim(be.min(), be.max())
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("α: distance along ξ_A → ξ_B")
    ax.set_ylabel("β: distance towards ξ* (orthogonal to ξ_A → ξ_B)")
    ax.set_title("F near the three minima", fontsize=10)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.85)

    if overview is not None:
        ax2 = axes[0][1]
        al2 = np.asarray(overview["alphas"], np.float64)
        be2 = np.asarray(overview["betas"], np.float64)
        Z2 = np.asarray(overview["F"], np.float64)
        lo2 = 0.9 * max(float(np.nanmin(Z2)), 1e-30)
        # F grows without bound far from the minima (to 1e11 at the corners of the full preset's
        # overview), which would leave the basins one colour: the scale stops at OVERVIEW_TOP × the
        # highest of F(ξ_A), F(ξ_B), F(ξ*) and higher values share the top colour
        top = OVERVIEW_TOP * max(anchor_F)
        hi2 = max(min(float(np.nanmax(Z2)), top), 2 * lo2)
        clipped = float(np.nanmax(Z2)) > hi2
        X2, Y2 = np.meshgrid(al2, be2, indexing="ij")
        lv2 = np.geomspace(lo2, hi2, 17)
        cs2 = ax2.contourf(X2, Y2, np.clip(Z2, lo2, hi2), levels=lv2, norm=LogNorm(lo2, hi2),
                           cmap="viridis", extend="max" if clipped else "neither")
        cb2 = fig.colorbar(cs2, ax=ax2, format="%.2g")
        cb2.set_label("F (log colour scale" + (f"; above {OVERVIEW_TOP:g}× max F at the minima: "
                                               "top colour)" if clipped else ")"), fontsize=8)
        L = list(overview.get("linthresh") or (None, None))
        if L[0] is not None:
            ax2.set_xscale("symlog", linthresh=float(L[0]))
        if L[1] is not None:
            ax2.set_yscale("symlog", linthresh=float(L[1]))
        _draw_paths(ax2, paths, in_plane)
        ax2.plot(an[:, 0], an[:, 1], "o", color="white", mec="k", ms=4, zorder=5)
        ax2.add_patch(Rectangle((al.min(), be.min()), al.max() - al.min(), be.max() - be.min(),
                                fill=False, ec="white", lw=1.2, ls="--", zorder=6))
        ax2.set_xlim(al2.min(), al2.max())
        ax2.set_ylim(be2.min(), be2.max())
        beyond = " (linear on the dashed window, logarithmic beyond)"
        ax2.set_xlabel("α" + (beyond if L[0] is not None else ""), fontsize=9)
        ax2.set_ylabel("β" + (beyond if L[1] is not None else ""), fontsize=9)
        ax2.set_title("the whole extent of the projected paths (dashed: the left panel)",
                      fontsize=10)
    fig.suptitle("F on the plane through ξ_A, ξ_B, ξ*: the straight segments lie in it; the other "
                 "paths leave it and are drawn projected", fontsize=9)
    fig.tight_layout()
    return fig
