"""The width-scaling study of Theorem 11: does the depth bound O(m^{(η−1)/n}) show on real runs?

For every width m, input dimension n and seed, `scaling` trains two minima of a `SkipNet` and two of its
no-skip control `NoSkipNet` (the same layers and therefore the same parameter count, without the
identity term; Adam, full batch, on `sphere_teacher` data that depend on (n, seed) only, so that runs
at different m share the problem), and measures

- the **straight-segment barrier** B = max_t F((1−t)ξ_A + tξ_B) − max(F_A, F_B);
- the **searched-path barrier** of a quadratic Bézier curve fitted between them (`fit_curve`, Garipov
  et al.);
- for the SkipNet pair and every η, the **Theorem 11 certificate** of `jaxland.connect` (merge plan
  `merge_method`, default "cluster", Lemma 9's plan as in the proof): the maximum of F along the
  constructive path and its signed excess over max(F_A, F_B, F*) (F* the e(l) network, l = ⌊m^η⌋);
  the largest merge angle (Lemma 9's ε_m = m^{(η−1)/n} bounds it); and the rise of the data term on
  the merge segments (`merge_loss_rise`, Lemma 10's O(angle) step, the only step of the proof whose
  cost depends on m).

Then for every (n, η) it fits the log–log slope of each of the three against m (least squares over all
seeds, positive values only — the excess is often ≤ 0 because an endpoint is the highest point of the
path; a 95% t-interval) and compares it with the predicted (η − 1)/n. Theorem 11 is an upper bound, so a
slope *below* the prediction is consistent with it (`consistent_with_bound`); one whose interval lies
above it is not. Outputs in `out/`: `scaling.json` (settings, one row per (m, n, η, seed), fits)
and the figures `scaling_excess.png` and `scaling_barriers.png`, which `replot_scaling` (or
``jaxland scaling --replot REPORT``) redraws from a saved report without computing anything.

**Resumable.** Each (m, n, seed) pair of trainings and each certificate is written to `out/stages/` the
moment it is finished (atomic writes, `RunStore`); a run is keyed by its own settings (the shared
hyperparameters plus m, n, seed, η), so killing the command and starting it again — or widening the grid
— recomputes nothing that is finished.

**Presets.** "tiny" (seconds; the tests), "quick" (under 3 minutes on 2 CPU cores), "full" (the default
grid, m = 32 … 8192, n ∈ {2, 3, 5}, η ∈ {0.25, 0.5, 0.75}, 2 seeds; under 45 minutes on 2 CPU cores).
**Widening on a GPU**: pass a larger grid and budget, e.g.
``scaling(out, preset="full", ms=(32, 64, …, 32768), seeds=range(5), overrides={"samples": 1024,
"steps": 4000})``; the per-run cost is dominated by the O(m²) merge plans and the dense evaluation of F
along the certificate path (N·m per point), both of which run as jitted kernels on the accelerator.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._optim import cached_adam
from ..data._datasets import sphere_teacher
from ..model._models import NoSkipNet, SkipNet
from ..model._objective import data_loss, objective_fn
from ..model._train import fit
from ..search._curve import fit_curve
from ..search._search_path import search_path
from ._preflight import check_out_dir, check_seed, require
from ._progress import Progress
from ._store import RunStore, _atomic_write, to_jsonable

SCALING_PRESETS = ("tiny", "quick", "full")

_GRIDS = {
    "tiny": dict(ms=(8,), ns=(2,), etas=(0.5,), seeds=(0, 1)),  # one shape: compiled once
    # two widths only (each new m compiles every kernel again); three seeds give the fit its interval
    "quick": dict(ms=(32, 256), ns=(2,), etas=(0.5,), seeds=(0, 1, 2)),
    "full": dict(ms=(32, 128, 512, 2048, 8192), ns=(2, 3, 5), etas=(0.25, 0.5, 0.75), seeds=(0, 1)),
}

_BUDGETS = {
    # samples N, Adam steps per minimum, curve-fit steps × batch, dense points on a path, points per
    # certificate segment, e(l) training steps and restarts. Cost ∝ N·m·(4·steps + 2·curve) per pair.
    "tiny": dict(samples=16, steps=30, curve_steps=5, curve_batch=2, points=9, cert_points=9,
                 refine_levels=1, star_steps=20, star_restarts=1),
    "quick": dict(samples=64, steps=300, curve_steps=60, curve_batch=4, points=33, cert_points=33,
                  refine_levels=2, star_steps=200, star_restarts=2),
    "full": dict(samples=128, steps=600, curve_steps=100, curve_batch=4, points=129, cert_points=33,
                 refine_levels=2, star_steps=400, star_restarts=2),
}


def scaling_settings(
    *,
    preset: str = "full",
    seed: int = 0,
    ms: Iterable[int] | None = None,
    ns: Iterable[int] | None = None,
    etas: Iterable[float] | None = None,
    seeds: Iterable[int] | None = None,
    overrides: dict | None = None,
) -> dict:
    """The settings of a scaling run: the grid and the shared hyperparameters (all go into the JSON).

    `ms`, `ns`, `etas`, `seeds` replace the preset's grid; `seeds` are offsets added to `seed`;
    `overrides` replaces hyperparameters (keys of the returned dict, e.g. "samples", "steps",
    "kappa").
    """
    if preset not in SCALING_PRESETS:
        raise ValueError(f"preset must be one of {SCALING_PRESETS}; got {preset!r}")
    check_seed(seed)
    g = _GRIDS[preset]

    def ints(name, v, lo):
        v = tuple(int(a) for a in v)
        if not v or any(a < lo for a in v):
            raise ValueError(f"{name} must be a non-empty list of integers >= {lo}; got {v}")
        return tuple(sorted(set(v)))

    grid = {
        "ms": ints("ms", g["ms"] if ms is None else ms, 4),
        "ns": ints("ns", g["ns"] if ns is None else ns, 1),
        "etas": tuple(sorted({float(e) for e in (g["etas"] if etas is None else etas)})),
        "seeds": tuple(int(seed) + s for s in (g["seeds"] if seeds is None else seeds)),
    }
    for sd in grid["seeds"]:  # seed + offset: each run's seed is a seed too
        check_seed(sd, f"seed + seeds offset ({seed} + {sd - int(seed)})")
    if not grid["etas"] or any(not 0 < e < 1 for e in grid["etas"]):
        raise ValueError(f"etas must lie in (0, 1); got {grid['etas']}")
    s = {
        "preset": preset,
        **grid,
        "teacher_width": 8,
        "noise": 0.0,
        "d_g": 8,
        "d_o": 8,
        "hidden": [8],
        "kappa": 1e-3,
        "learning_rate": 1e-2,
        "lr_width": 32,
        "refine_points": 9,
        "merge_method": "cluster",
        "dtype": "float64" if jax.config.jax_enable_x64 else "float32",
        **_BUDGETS[preset],
    }
    for k, v in (overrides or {}).items():
        if k not in s or k in grid or k == "preset":
            raise ValueError(f"overrides: unknown or grid key {k!r}; allowed: "
                             f"{sorted(set(s) - set(grid) - {'preset'})}")
        s[k] = v
    return s


def _expected(kind: str, preset: str, m: int) -> float:
    """Rough seconds of one run on 2 CPU cores (a pair of trainings with its two path searches, or
    one certificate), for the slow-stage warning of `Progress.stage` (at 10× this): training grows
    like m, the merge plans of the certificate like m²."""
    base = {"tiny": 10.0, "quick": 30.0, "full": 30.0}[preset]
    r = max(1.0, m / 512)
    return base * (r if kind == "pair" else r * r)


_SHARED = ("lr_width", "merge_method", "teacher_width", "noise", "d_g", "d_o", "hidden", "kappa",
           "learning_rate", "curve_batch", "refine_levels", "refine_points", "dtype", "samples",
           "steps", "curve_steps", "points", "cert_points", "star_steps", "star_restarts")


def fit_slope(m, values, level: float = 0.95, floor: float = 0.0) -> dict:
    """Least-squares slope of log(values) against log(m), with a two-sided t confidence interval.

    Values ≤ `floor` (≥ 0; e.g. the rounding level of the quantity) or non-finite are left out (they
    have no meaningful logarithm) and counted.

    **Returns:** dict with `slope`, `intercept`, `ci_low`, `ci_high` (nan when fewer than 3 points or
    only one distinct m), `points` (used), `left_out`, `distinct_m`, and `no_fit`: None, or why the
    slope or its interval is nan (e.g. "too few widths to fit: 1 distinct m, a slope needs 2").
    """
    m = np.asarray(m, np.float64)
    v = np.asarray(values, np.float64)
    if m.shape != v.shape or m.ndim != 1:
        raise ValueError(f"m and values must be 1-D of equal length; got {m.shape} and {v.shape}")
    if not floor >= 0:
        raise ValueError(f"floor must be >= 0; got {floor!r}")
    ok = np.isfinite(v) & (v > floor) & (m > 0)
    x, y = np.log(m[ok]), np.log(v[ok])
    out = {"slope": math.nan, "intercept": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "points": int(ok.sum()), "left_out": int((~ok).sum()), "distinct_m": int(np.unique(x).size),
           "no_fit": None}
    if np.unique(x).size < 2:
        k = out["left_out"]
        left = f" ({k} value{'s' if k != 1 else ''} <= {floor:g} or not finite left out)" if k else ""
        out["no_fit"] = (f"too few widths to fit: {out['distinct_m']} distinct m with a usable value"
                         f"{left}; a slope needs 2, its interval 3 points")
        return out
    X = np.stack([x, np.ones_like(x)], 1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    out["slope"], out["intercept"] = float(coef[0]), float(coef[1])
    dof = x.size - 2
    if dof >= 1:
        from scipy.stats import t as student_t

        resid = y - X @ coef
        s2 = float(resid @ resid) / dof
        se = math.sqrt(s2 / float(np.sum((x - x.mean()) ** 2)))
        q = float(student_t.ppf(0.5 + level / 2, dof))
        out["ci_low"], out["ci_high"] = out["slope"] - q * se, out["slope"] + q * se
    else:
        out["no_fit"] = f"no interval: {x.size} points, an interval needs 3"
    return out


def _key(*ints_) -> jax.Array:
    # a key per configuration, independent of the grid it sits in
    return jax.random.PRNGKey(zlib.crc32(json.dumps(ints_).encode()) & 0x7FFFFFFF)


def _data(s, n, seed):
    ds = sphere_teacher(_key("data", n, seed), n_samples=s["samples"], n=n, d_y=1,
                        teacher_width=s["teacher_width"], noise=s["noise"],
                        dtype=jnp.float64 if s["dtype"] == "float64" else jnp.float32)
    return ds.x, ds.y


def _make(cls, s, key, m, n):
    return cls.init(key, n=n, m=m, d_y=1, d_g=s["d_g"], d_o=s["d_o"], hidden=tuple(s["hidden"]),
                    dtype=jnp.float64 if s["dtype"] == "float64" else jnp.float32)


def _n_params(net) -> int:
    return int(sum(np.prod(l.shape) for l in jax.tree.leaves(net)))


def _learning_rate(s, m: int) -> float:
    """Adam's step size at width m: learning_rate·√(lr_width/m) above lr_width. Adam moves every
    weight by ~lr per step, so the output moves by ~m·lr/√m with N(0, 1/m) output weights; without
    the scaling training diverges or stalls at m in the thousands (F ≈ 2 at m = 8192 with 1e-2)."""
    return float(s["learning_rate"]) * min(1.0, math.sqrt(s["lr_width"] / m))


_PREFIX = {"SkipNet": "skip", "NoSkipNet": "noskip"}


def trained_pair(s, store: RunStore, x, y, m, n, seed, cls, prefix: str | None = None,
                 make: Callable | None = None):
    """The two trained minima (a, b) of `cls` at (m, n, seed): loaded from `store` when a study with the
    same settings (`jaxland scaling` or `jaxland alignment`) already trained them, else trained (Adam,
    full batch, `s["steps"]` steps) and saved there as `{prefix}_a_{tag}`, `{prefix}_b_{tag}`.
    `make(key)` builds the initial network (default `cls.init` with the study's sizes)."""
    prefix = prefix or _PREFIX[cls.__name__]
    tag = f"m{m}_n{n}_s{seed}"
    opt = cached_adam(_learning_rate(s, m))  # cached per value: the compiled loop is reused
    pair = []
    for which in ("a", "b"):
        # the same initial point for both models (same key): the control differs only by the skip
        key = _key("init", m, n, seed, which)
        init = _make(cls, s, key, m, n) if make is None else make(key)
        net = store.load_tree(f"{prefix}_{which}_{tag}", init)
        if net is None:
            net = fit(init, x, y, kappa=s["kappa"], steps=s["steps"], optimizer=opt).net
            store.save_tree(f"{prefix}_{which}_{tag}", net)
        pair.append(net)
    return tuple(pair)


def _pair(s, store, x, y, F, m, n, seed):
    """Train (or load) two minima of SkipNet and of NoSkipNet; straight and searched barriers for
    each."""
    rec, nets = {}, {}
    lr = _learning_rate(s, m)
    for cls in (SkipNet, NoSkipNet):
        name = cls.__name__
        a, b = trained_pair(s, store, x, y, m, n, seed, cls)
        lin = search_path(F, a, b, method="linear", points=s["points"])
        cur = fit_curve(F, a, b, kind="bezier", bends=1, steps=s["curve_steps"],
                        batch=s["curve_batch"], learning_rate=lr,
                        key=_key("curve", m, n, seed, name), points=s["points"])
        fa, fb = float(F(a)), float(F(b))
        rec[name] = {"f_a": fa, "f_b": fb, "params": _n_params(a),
                     "straight_max": lin.f_max, "straight_barrier": lin.barrier,
                     "searched_max": cur.f_max, "searched_barrier": cur.barrier,
                     "search_evaluations": cur.evaluations}
        nets[name] = (a, b)
    return rec, nets


def _merge_rise(c) -> float:
    """max over the two halves of (max F on the merge segment 2b) − (F on the constant-F segment 2a
    just before it): the rise that Lemma 10 bounds by O(merge angle), measured where it happens. Unlike
    the excess over max(F_A, F_B, F*), it is not hidden when an endpoint is the highest point."""
    seg = np.asarray(c.segment_max, np.float64)
    names = list(c.segment_names)
    rises = []
    for half in ("A.", "B."):
        i2a = [i for i, nm in enumerate(names) if nm.startswith(half) and "2a" in nm]
        i2b = [i for i, nm in enumerate(names) if nm.startswith(half) and "2b" in nm]
        if i2a and i2b:
            rises.append(seg[i2b[0]] - seg[i2a[0]])
    return float(max(rises)) if rises else math.nan


@eqx.filter_jit
def _segment_data_loss(seg, x, y, g):
    return jax.vmap(lambda u: data_loss(seg(u), x, y))(g)


def _merge_loss_rise(path, x, y, points: int) -> float:
    """Lemma 10's quantity on the constructed path: the largest rise of the data term E L along a merge
    segment (2b) above its value before merging (s = 0 in half A; s = 1 on half B, run backwards),
    over both halves. The regulariser is left out: merging never increases R, and at small κ its
    decrease would hide the rise of the loss that the O(merge angle) bound is about."""
    g = jnp.linspace(0.0, 1.0, points, dtype=path.dtype)
    rises = []
    for k, name in enumerate(path.names):
        if "2b" in name and name[:2] in ("A.", "B."):
            v = np.asarray(_segment_data_loss(path.segments[k], x, y, g), np.float64)
            rises.append(v.max() - (v[0] if name.startswith("A.") else v[-1]))
    return float(max(rises)) if rises else math.nan


def _certificate(s, x, y, a, b, m, n, eta, seed):
    from ..construct._connect import connect

    res = connect(a, b, x, y, kappa=s["kappa"], eta=eta, key=_key("star", m, n, seed, eta),
                  method=s["merge_method"],
                  n_points=s["cert_points"], refine_points=s["refine_points"],
                  refine_levels=s["refine_levels"],
                  star_kwargs={"steps": s["star_steps"], "restarts": s["star_restarts"]})
    c = res.certificate
    return {"merge_rise": _merge_rise(c),
            "merge_loss_rise": _merge_loss_rise(res.path, x, y, s["cert_points"]),
            "l": int(c.l), "eps": float(c.eps), "f_star": float(c.f_star),
            "f_max": float(c.f_max), "excess": float(c.excess),
            "max_merge_angle": float(c.max_merge_angle), "size_bound": int(c.size_bound),
            "cluster_size_a": int(c.cluster_size_a), "cluster_size_b": int(c.cluster_size_b),
            "rank_failures": int(c.rank_failures), "attained_by": c.attained_by,
            "n_evals": int(c.n_evals)}


def _compare(fit: dict, pred: float) -> dict:
    """Add the comparison with the predicted slope. Theorem 11 is an upper bound O(m^pred): a measured
    quantity that decays *faster* (slope < pred) is consistent with it; one whose whole interval lies
    above pred (decays slower) contradicts it."""
    lo, hi = fit["ci_low"], fit["ci_high"]
    return {**fit, "contains_prediction": bool(lo <= pred <= hi),
            "consistent_with_bound": bool(lo <= pred) if math.isfinite(lo) else
            bool(fit["slope"] <= pred) if math.isfinite(fit["slope"]) else None}


def _fits(rows, s) -> list:
    fits = []
    for n in s["ns"]:
        for eta in s["etas"]:
            sel = [r for r in rows if r["n"] == n and r["eta"] == eta]
            if not sel:
                continue
            ms = [r["m"] for r in sel]
            # differences of F below ~100 roundings of F are noise, not a rise: left out of the fits
            top = max(max(abs(r["skip_f_a"]), abs(r["skip_f_b"])) for r in sel)
            floor = 100 * float(np.finfo(np.dtype(s["dtype"])).eps) * max(top, 1e-12)
            fe = fit_slope(ms, [r["excess"] for r in sel], floor=floor)
            fa = fit_slope(ms, [r["max_merge_angle"] for r in sel])
            fr = fit_slope(ms, [r["merge_rise"] for r in sel], floor=floor)
            fl = fit_slope(ms, [r["merge_loss_rise"] for r in sel], floor=floor)
            pred = (eta - 1.0) / n
            fits.append({"n": n, "eta": eta, "predicted_slope": pred, "floor": floor,
                         "excess": _compare(fe, pred), "merge_angle": _compare(fa, pred),
                         "merge_rise": _compare(fr, pred), "merge_loss_rise": _compare(fl, pred)})
    return fits


def _barrier_summary(pairs, s) -> list:
    out = []
    for n in s["ns"]:
        for m in s["ms"]:
            sel = [p for p in pairs if p["n"] == n and p["m"] == m]
            if not sel:
                continue
            row = {"n": n, "m": m, "seeds": len(sel)}
            for model in ("SkipNet", "NoSkipNet"):
                for q in ("straight_barrier", "searched_barrier"):
                    row[f"{model}_{q}_median"] = float(np.median([p[model][q] for p in sel]))
            out.append(row)
    return out


def _mticks(ax, ms) -> None:
    ax.set_xscale("log")
    ax.set_xticks(list(ms), [str(m) for m in ms])
    ax.minorticks_off()


# one colour and marker per quantity, the same in every panel; the fit (solid) and the predicted
# slope (dashed) of a quantity are drawn in its colour
_QUANTITIES = (
    # key in the table, key in the fits, legend label, short name, colour, marker
    ("excess", "excess", "certificate excess: max F on the path − max(F_A, F_B, F*)", "excess",
     "#1f77b4", "o"),
    ("merge_loss_rise", "merge_loss_rise", "rise of the loss on a merge segment (Lemma 10)",
     "loss rise", "#ff7f0e", "s"),
    ("max_merge_angle", "merge_angle", "largest merge angle (Lemma 9: at most ε = m^((η−1)/n))",
     "angle", "#2ca02c", "^"),
)


def _num(v) -> float:
    """A float from a report value (a report read back from JSON holds "nan", "inf" strings)."""
    return float(v)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _excess_figure(rows, fits, s):
    """The 3 × 3 grid (n × η) of the certificate's quantities against m; returns the figure."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    ns, etas = s["ns"], s["etas"]
    fig, axes = plt.subplots(len(ns), len(etas), figsize=(4.0 * len(etas), 3.1 * len(ns) + 1.0),
                             squeeze=False, sharex=True)
    for i, n in enumerate(ns):
        for j, eta in enumerate(etas):
            ax = axes[i][j]
            sel = [r for r in rows if r["n"] == n and r["eta"] == eta]
            fit = next((f for f in fits if f["n"] == n and f["eta"] == eta), None)
            if not sel or fit is None:
                ax.set_visible(False)
                continue
            pred = _num(fit["predicted_slope"])
            m = np.array([r["m"] for r in sel], float)
            shown, notes = [], []
            for key, fkey, _, short, colour, marker in _QUANTITIES:
                v = np.array([_num(r[key]) for r in sel], float)
                floor = 0.0 if key == "max_merge_angle" else _num(fit["floor"])
                pos = np.isfinite(v) & (v > floor)
                f = fit[fkey]
                slope = _num(f["slope"])
                if pos.any():
                    ax.plot(m[pos], v[pos], marker, color=colour, ms=5, alpha=0.85, ls="none")
                    shown.append(v[pos])
                    lo, hi = m[pos].min(), m[pos].max()
                    mm = np.geomspace(lo, hi, 2) if hi > lo else np.array([lo / 1.5, lo * 1.5])
                    if np.isfinite(slope):
                        ax.plot(mm, np.exp(_num(f["intercept"])) * mm**slope, "-", color=colour,
                                lw=1.3)
                        # the prediction through the geometric mean of the same points: only its
                        # slope is predicted, so it is anchored where the data are
                        gm, gv = np.exp(np.mean(np.log(m[pos]))), np.exp(np.mean(np.log(v[pos])))
                        ax.plot(mm, gv * (mm / gm) ** pred, "--", color=colour, lw=1.3, alpha=0.9)
                left = int((~pos).sum())
                txt = f"{short}: slope {slope:+.2f}" if np.isfinite(slope) else f"{short}: no fit"
                if left:
                    txt += f" ({left} of {len(v)} ≤ 0)"
                notes.append((txt, colour))
            if shown:
                allv = np.concatenate(shown)
                lo, hi = np.log10(allv.min() / 3), np.log10(allv.max() * 3)
                # a band below the data for the slope notes (they take ~30% of the height)
                ax.set_ylim(10 ** (lo - 0.45 * (hi - lo)), 10**hi)
            ax.set_yscale("log")
            _mticks(ax, s["ms"])
            for k, (txt, colour) in enumerate(notes):
                ax.text(0.02, 0.03 + 0.085 * (len(notes) - 1 - k), txt, transform=ax.transAxes,
                        color=colour, fontsize=7.5, va="bottom",
                        bbox=dict(facecolor="white", edgecolor="none", alpha=0.7, pad=0.5))
            ax.set_title(f"n = {n}, η = {eta}: predicted slope {pred:+.3f}", fontsize=9)
            if i == len(ns) - 1:
                ax.set_xlabel("width m")
    handles = [Line2D([], [], color=c, marker=mk, ls="none", ms=6, label=lab)
               for _, _, lab, _, c, mk in _QUANTITIES]
    handles += [Line2D([], [], color="0.3", ls="-", lw=1.3,
                       label="least-squares fit (slope in the panel)"),
                Line2D([], [], color="0.3", ls="--", lw=1.3,
                       label="predicted slope (η−1)/n through the same points")]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Theorem 11's certificate against the width m, log–log. Values ≤ 0 (up to the "
                 "rounding level of F) have no logarithm: they are left out of the plot and the "
                 "fit, and counted in each panel.", fontsize=8.5, y=0.005, va="bottom")
    fig.tight_layout(rect=(0, 0.025, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


def _barrier_figure(pairs, fits, s):
    """Straight and searched barriers of SkipNet and NoSkipNet against m, one panel per n."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    ns = s["ns"]
    # barriers are ≥ 0; what is below ~100 roundings of F is zero up to rounding: drawn on the floor
    floors = [_num(f["floor"]) for f in fits] or [1e-6]
    floor = max(floors)
    models = (("SkipNet", "#1f77b4"), ("NoSkipNet", "#d62728"))
    kinds = (("straight_barrier", "o", "-", "straight segment"),
             ("searched_barrier", "s", "--", "searched Bézier curve"))
    fig, axes = plt.subplots(1, len(ns), figsize=(4.3 * len(ns), 3.9), squeeze=False, sharey=True)
    top = floor
    for i, n in enumerate(ns):
        ax = axes[0][i]
        ms_ = sorted({p["m"] for p in pairs if p["n"] == n})
        for model, colour in models:
            for q, marker, ls, _ in kinds:
                allm = np.array([p["m"] for p in pairs if p["n"] == n], float)
                allv = np.array([_num(p[model][q]) for p in pairs if p["n"] == n], float)
                med = np.array([np.median([_num(p[model][q]) for p in pairs
                                           if p["n"] == n and p["m"] == mv]) for mv in ms_])
                top = max(top, np.nanmax(allv))
                low = allv <= floor
                ax.plot(allm[~low], allv[~low], marker, color=colour, alpha=0.3, ms=4, ls="none")
                ax.plot(allm[low], np.full(low.sum(), floor), marker, mfc="none", color=colour,
                        alpha=0.5, ms=4, ls="none")
                ax.plot(ms_, np.maximum(med, floor), ls=ls, color=colour)
                up = med > floor
                ax.plot(np.asarray(ms_)[up], med[up], marker, color=colour, ms=6, ls="none")
                ax.plot(np.asarray(ms_)[~up], np.full((~up).sum(), floor), marker, color=colour,
                        mfc="white", ms=6, ls="none")
        ax.axhline(floor, color="0.5", lw=0.8, ls=":")
        ax.set_yscale("log")
        _mticks(ax, s["ms"])
        ax.set_xlabel("width m")
        ax.set_title(f"n = {n}", fontsize=10)
    axes[0][0].set_ylabel("barrier: max F on the path − max(F_A, F_B)")
    axes[0][0].set_ylim(floor / 2.5, top * 2.5)
    handles = [Line2D([], [], color=c, lw=2, label=f"{mdl} (same parameter count)")
               for mdl, c in models]
    handles += [Line2D([], [], color="0.3", marker=mk, ls=ls, label=f"{lab} (median of seeds; "
                       f"faint: each seed)") for _, mk, ls, lab in kinds]
    handles.append(Line2D([], [], color="0.5", ls=":", marker="o", mfc="none",
                          label=f"≤ {floor:.0e}: zero up to rounding (hollow, on this line)"))
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / fig.get_figheight()))
    return fig


def _figures(out: Path, rows, pairs, fits, s) -> list[str]:
    plt = _pyplot()
    files = []
    for name, fig in (("scaling_excess.png", _excess_figure(rows, fits, s)),
                      ("scaling_barriers.png", _barrier_figure(pairs, fits, s))):
        p = Path(out) / name
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(str(p))
    return files


def replot_scaling(report: str | Path, out: str | Path | None = None) -> list[str]:
    """Redraw the figures of a finished scaling study from its saved report, without computing.

    **Arguments:**
    - `report`: a report written by `scaling` (`scaling.json`, or a copy such as
      `docs/scaling_full.json`), or the folder holding `scaling.json`.
    - `out`: the folder to write `scaling_excess.png` and `scaling_barriers.png` into (default: the
      report's folder).

    **Returns:** the paths of the figures written.
    """
    src = Path(report)
    if src.is_dir():
        src = src / "scaling.json"
    if not src.is_file():
        raise FileNotFoundError(f"report: no scaling report at {str(src)!r} (run `jaxland scaling` "
                                f"first, or pass the path of its scaling.json)")
    try:
        rep = json.loads(src.read_text())
        rows, pairs, fits, s = rep["table"], rep["pairs"], rep["fits"], rep["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"report: {str(src)!r} is not a scaling report ({e})") from None
    dest = src.parent if out is None else check_out_dir(out)
    require("matplotlib", "replot_scaling")
    dest.mkdir(parents=True, exist_ok=True)
    return _figures(dest, rows, pairs, fits, s)


def scaling(
    out: str | Path,
    *,
    preset: str = "full",
    seed: int = 0,
    progress: bool | Callable[[str], None] = True,
    ms: Iterable[int] | None = None,
    ns: Iterable[int] | None = None,
    etas: Iterable[float] | None = None,
    seeds: Iterable[int] | None = None,
    overrides: dict | None = None,
    figures: bool = True,
) -> dict:
    """Run the width-scaling study of Theorem 11 (see the module docstring) and write `out/scaling.json`.

    **Arguments:**
    - `out`: output folder; finished runs are kept in `out/stages/` and reused on a rerun.
    - `preset`: "tiny" (seconds), "quick" (< 3 minutes on 2 CPU cores) or "full" (default grid:
      m ∈ {32, 128, 512, 2048, 8192}, n ∈ {2, 3, 5}, η ∈ {0.25, 0.5, 0.75}, 2 seeds; < 45 minutes).
    - `seed`: base seed (added to the grid's seed offsets).
    - `progress`: True prints progress to stderr, False is silent, a callable receives each message
      (it is called after each finished run is written, so it may raise to stop the study).
    - `ms`, `ns`, `etas`, `seeds`, `overrides`: widen or change the grid and budgets (see
      `scaling_settings`); e.g. on a GPU ``ms=(32, 64, …, 32768), seeds=range(5)``.
    - `figures`: write the PNG figures (needs matplotlib).

    **Returns:** the report dict (also in `out/scaling.json`): `settings`, `table` (one row per
    (m, n, η, seed)), `pairs` (one per (m, n, seed): both models' barriers), `fits` (per (n, η): the
    excess and merge-angle slopes with 95% intervals and the predicted (η−1)/n), `barriers` (medians
    per (n, m)), `runs_computed`, `runs_loaded`, `seconds`, `figures`.
    """
    s = scaling_settings(preset=preset, seed=seed, ms=ms, ns=ns, etas=etas, seeds=seeds,
                         overrides=overrides)
    out = check_out_dir(out)
    if figures:
        # before the study, not after it: the figures are drawn at the very end
        require("matplotlib", "jaxland scaling (it draws PNG figures; pass figures=False to skip)")
    log = Progress("scaling", progress)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shared = {k: s[k] for k in _SHARED}
    computed = loaded = 0
    pairs, rows = [], []
    total = len(s["ms"]) * len(s["ns"]) * len(s["seeds"])
    done = 0
    for n in s["ns"]:
        for sd in s["seeds"]:
            x, y = _data(s, n, sd)
            F = objective_fn(x, y, kappa=s["kappa"])
            for m in s["ms"]:
                done += 1
                tag = f"m{m}_n{n}_s{sd}"
                store = RunStore(out, {**shared, "m": m, "n": n, "seed": sd})
                rec = store.load(f"pair_{tag}")
                nets = None
                if rec is None:
                    t1 = time.perf_counter()
                    with log.stage(f"pair {tag}", _expected("pair", preset, m),
                                   f"[{done}/{total}] training and searching pair {tag}", event=False):
                        rec, nets = _pair(s, store, x, y, F, m, n, sd)
                    rec = {"m": m, "n": n, "seed": sd, **rec, "seconds": time.perf_counter() - t1}
                    store.save(f"pair_{tag}", rec)
                    computed += 1
                    log(f"[{done}/{total}] pair {tag}: SkipNet straight/searched barrier "
                        f"{rec['SkipNet']['straight_barrier']:.3g}/{rec['SkipNet']['searched_barrier']:.3g}"
                        f", NoSkipNet {rec['NoSkipNet']['straight_barrier']:.3g}/"
                        f"{rec['NoSkipNet']['searched_barrier']:.3g} ({rec['seconds']:.1f}s)")
                else:
                    loaded += 1
                pairs.append(rec)
                for eta in s["etas"]:
                    estore = RunStore(out, {**shared, "m": m, "n": n, "seed": sd, "eta": eta})
                    name = f"cert_{tag}_e{eta:g}"
                    crec = estore.load(name)
                    if crec is None:
                        if nets is None:
                            like = _make(SkipNet, s, _key("init", m, n, sd, "a"), m, n)
                            ab = [store.load_tree(f"skip_{w}_{tag}", like) for w in ("a", "b")]
                            if any(v is None for v in ab):
                                raise RuntimeError(f"the stored minima of {tag} are missing from "
                                                   f"{store.dir}; delete pair_{tag}.json to retrain")
                            nets = {"SkipNet": tuple(ab)}
                        t1 = time.perf_counter()
                        with log.stage(f"certificate {tag} eta={eta:g}",
                                       _expected("cert", preset, m),
                                       f"[{done}/{total}] certificate {tag} eta={eta:g}", event=False):
                            crec = _certificate(s, x, y, *nets["SkipNet"], m, n, eta, sd)
                        crec["seconds"] = time.perf_counter() - t1
                        estore.save(name, crec)
                        computed += 1
                        log(f"[{done}/{total}] certificate {tag} eta={eta:g}: l={crec['l']}, "
                            f"excess {crec['excess']:.3g}, loss rise on merge "
                            f"{crec['merge_loss_rise']:.3g}, max merge angle "
                            f"{crec['max_merge_angle']:.3g} ({crec['seconds']:.1f}s)")
                    else:
                        loaded += 1
                    sk = rec["SkipNet"]
                    rows.append({
                        "m": m, "n": n, "eta": eta, "seed": sd, "params": sk["params"],
                        **{f"skip_{k}": sk[k] for k in ("f_a", "f_b", "straight_barrier",
                                                         "searched_barrier")},
                        **{f"noskip_{k}": rec["NoSkipNet"][k]
                           for k in ("f_a", "f_b", "straight_barrier", "searched_barrier")},
                        **{k: crec[k] for k in ("l", "eps", "f_star", "f_max", "excess",
                                                "merge_rise", "merge_loss_rise", "max_merge_angle",
                                                "rank_failures",
                                                "attained_by")},
                        "predicted_slope": (eta - 1.0) / n,
                    })
    fits = _fits(rows, s)
    report = {
        "settings": s,
        "table": rows,
        "pairs": pairs,
        "fits": fits,
        "barriers": _barrier_summary(pairs, s),
        "runs_computed": computed,
        "runs_loaded": loaded,
        "seconds": time.perf_counter() - t0,
        "figures": [],
    }
    if figures:
        with log.stage("figures", 30.0, "drawing scaling_excess.png and scaling_barriers.png",
                       event=False):
            report["figures"] = _figures(out, rows, pairs, fits, s)
    _atomic_write(out / "scaling.json", json.dumps(to_jsonable(report), indent=1).encode())
    for f in fits:
        e = f["excess"]
        if e["no_fit"] and not math.isfinite(e["slope"]):
            log(f"n={f['n']} eta={f['eta']}: no slopes: {e['no_fit']}")
            continue
        log(f"n={f['n']} eta={f['eta']}: excess slope {e['slope']:.3f} "
            f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}] ({e['points']} points), merge loss-rise slope "
            f"{f['merge_loss_rise']['slope']:.3f}, merge-angle slope {f['merge_angle']['slope']:.3f}; "
            f"predicted {f['predicted_slope']:.3f}")
    return report


def format_table(report: dict) -> str:
    """The fits of a scaling report (returned, or read back from scaling.json) as a text table."""
    if not isinstance(report, dict) or not {"fits", "barriers"} <= set(report):
        got = sorted(report) if isinstance(report, dict) else type(report).__name__
        raise ValueError(f"report must be a scaling report (a dict with 'fits' and 'barriers', as "
                         f"returned by jaxland.scaling or read from scaling.json); got {got}")
    def col(f):
        # float(): a report read back from scaling.json holds "nan" strings
        sl, lo, hi = (float(f[k]) for k in ("slope", "ci_low", "ci_high"))
        if not math.isfinite(sl):
            why = f"no fit: {f.get('distinct_m', '?')} width(s), needs 2"
            return f"{why:<27}{f['points']:>3}    "
        return f"{sl:>7.3f} [{lo:>7.3f}, {hi:>7.3f}] {f['points']:>3}    "

    def head(name):
        return f"{name + ': slope [95% CI] pts':<33}"

    lines = [f"{'n':>2} {'eta':>5} {'pred':>7} | {head('excess')} | {head('loss rise')} | "
             f"{head('merge angle')}"]
    for f in report["fits"]:
        lines.append(f"{f['n']:>2} {f['eta']:>5.2f} {f['predicted_slope']:>7.3f} | "
                     f"{col(f['excess'])} | {col(f['merge_loss_rise'])} | {col(f['merge_angle'])}")
    notes = sorted({f[q]["no_fit"] for f in report["fits"] for q in ("excess", "merge_loss_rise",
                                                                      "merge_angle")
                    if f[q].get("no_fit")})
    lines += [f"note: {v}" for v in notes]
    lines.append("")
    lines.append(f"{'n':>2} {'m':>6} {'skip straight':>14} {'skip searched':>14} {'noskip straight':>16} "
                 f"{'noskip searched':>16}")
    for b in report["barriers"]:
        lines.append(f"{b['n']:>2} {b['m']:>6} {b['SkipNet_straight_barrier_median']:>14.4g} "
                     f"{b['SkipNet_searched_barrier_median']:>14.4g} "
                     f"{b['NoSkipNet_straight_barrier_median']:>16.4g} "
                     f"{b['NoSkipNet_searched_barrier_median']:>16.4g}")
    return "\n".join(lines)

