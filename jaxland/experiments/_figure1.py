"""`jaxland figure1`: the seed paper's Figure 1 (Li et al. 2018's ResNet-56 with and without skip
connections), measured on scikit-learn's 8×8 digits.

For every depth of the preset and for the residual CNN with and without its identity shortcuts
(`jaxland.model.DigitsResNet`, same parameters, BatchNorm statistics recomputed at every point):

1. two minima, trained independently (different initialisation and mini-batch order) with Adam;
   the first is the centre of the pictures; the training loss and accuracy (and the accuracy on
   the held-out digits) are reported. A net whose training loss stays high is reported as such.
2. the surface: the full-batch training loss F(θ_A + α δ + β η) (BatchNorm statistics of the
   whole training set at every point: `full_batch_loss`, checked against `recompute_batch_stats`'s
   `batch_stats_loss` at three points of every plane, report key "bn_check") on a g × g grid over
   [−1, 1]², δ and η two filter-normalised random directions (Li et al. 2018, §4;
   `filter_normalized_directions`, BatchNorm's own parameters and the biases left out), through the
   batched engine (`random_directions_slice` → `evaluate_path`), in blocks of rows so that a killed
   run keeps its finished rows;
3. the non-convexity map: λ_min and λ_max of ∇²F (`hessian_eigs_batch`, Lanczos) on the
   `hessian_grid` × `hessian_grid` sub-grid of equally spaced grid points (`hessian_subgrid`),
   and r = max(0, −λ_min) / max(|λ_min|, |λ_max|) ∈ [0, 1]:
   Li et al.'s |λ_min/λ_max| where the Hessian has both signs (|λ_min| ≤ λ_max), 0 where Lanczos
   sees no negative curvature, 1 where negative curvature dominates. Reported: the map and the
   fraction of sub-grid points with r > 0.1. Also reported: the same fraction among the sub-grid
   points inside the basin, where F is below ln 10 (the loss of the uniform prediction over the 10
   classes), `nonconvex_fraction_basin`, with their number `basin_points`, and the mean of r over
   the sub-grid, `mean_ratio` (the plane also reaches the high plateau around the basin, where
   every net's Hessian is indefinite);
4. roughness of the surface, two numbers:
   - `local_minima`: grid points strictly below all 8 neighbours (interior points only); a convex
     bowl has 1 (or 0 when its minimum is on the border);
   - `tv_ratio` = TV(F − q) / TV(F), q the least-squares quadratic in (α, β) fitted to F,
     TV(Z) = Σ_ij |Z_{i+1,j} − Z_ij| + |Z_{i,j+1} − Z_ij|: the share of the surface's variation
     that a quadratic bowl does not explain (0 for a quadratic, larger = rougher);
5. the barrier of the straight segment θ_A → θ_B between the two minima: F at `barrier_points`
   points (`evaluate_path`), the maximum refined with `refine_max`, barrier = max F − max(F(θ_A),
   F(θ_B)).

Each piece is a stage of the run store (`OUT/stages/`), written as soon as it is finished and reused
by a rerun with the same settings. Outputs: report.json, figure1.png, contours.png,
nonconvexity.png, interpolation.png and figure1.html (interactive 3-D surfaces, self-contained).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..data._datasets import digits
from ..engine._evaluate import evaluate_path
from ..landscape._metrics import refine_max
from ..landscape._slices import filter_normalized_directions, random_directions_slice
from ..model._resnet import (
    DigitsResNet,
    batch_stats_loss,
    digits_images,
    full_batch_loss,
    train_digits_resnet,
    trainable,
)
from ..paths._paths import linear
from ..second_order._hessian import hessian_eigs_batch
from ._preflight import check_out_dir, require
from ._progress import Progress
from ._store import RunStore, to_jsonable

PRESETS = ("tiny", "quick", "full")
NONCONVEX_THRESHOLD = 0.1  # Li et al.'s "significant" non-convexity, |λ_min/λ_max| > 0.1


def figure1_settings(*, preset: str = "full", seed: int = 0) -> dict:
    """The settings of a `figure1` run (all go into report.json).

    Presets: "full" (depths 20 and 56, 51 × 51 grid; ≤ 60 min on 2 idle CPU cores), "quick"
    (depths 8 and 20, 21 × 21; ≤ 6 min) and "tiny" (the test suite's smoke run: the same code at
    toy sizes).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {preset!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**31:
        raise ValueError(f"seed must be an integer in [0, 2**31); got {seed!r}")
    pick = lambda tiny, quick, full: {"tiny": tiny, "quick": quick, "full": full}[preset]  # noqa: E731
    return {
        "preset": preset,
        "seed": int(seed),
        "data": "digits (scikit-learn, 8x8, 10 classes)",
        "depths": pick([4], [8, 20], [20, 56]),
        "width": pick(4, 8, 8),
        "n_train": pick(64, 256, 256),
        "steps": pick(30, 200, 500),
        "batch_size": pick(32, 64, 128),
        "learning_rate": 3e-3,
        "grid": pick(5, 21, 51),
        "span": 1.0,
        "rows_per_stage": pick(5, 7, 5),
        "hessian_grid": pick(3, 3, 5),
        "lanczos_steps": pick(4, 8, 8),
        "barrier_points": pick(9, 17, 33),
        "refine_tol": 1e-3,
        "nonconvex_threshold": NONCONVEX_THRESHOLD,
        "dtype": "float64" if jax.config.jax_enable_x64 else "float32",
    }


def preflight(out, *, name: str = "out") -> Path:
    """What `figure1` checks before it computes or creates anything."""
    p = check_out_dir(out, name)
    require("matplotlib", "jaxland figure1 (it draws PNG figures)")
    require("sklearn", "jaxland figure1 (the digits data set)")
    return p


def _split_data(n_train: int, seed: int):
    ds = digits()
    perm = np.random.default_rng(seed).permutation(ds.x.shape[0])
    x, y = digits_images(ds.x)[perm], ds.y[perm]
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def _label(depth: int, skip: bool) -> str:
    return f"resnet{depth}" + ("" if skip else "_noshort")


def roughness(values) -> dict:
    """The two roughness numbers of a surface (module docstring): `local_minima` and `tv_ratio`
    of the (n_α, n_β) grid `values`."""
    Z = np.asarray(values, np.float64)
    na, nb = Z.shape
    count = 0
    for i in range(1, na - 1):
        for j in range(1, nb - 1):
            nb8 = np.delete(Z[i - 1 : i + 2, j - 1 : j + 2].reshape(-1), 4)
            count += bool(np.all(Z[i, j] < nb8))
    A, B = np.meshgrid(np.linspace(-1, 1, na), np.linspace(-1, 1, nb), indexing="ij")
    X = np.stack([np.ones_like(A), A, B, A * A, A * B, B * B], -1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(X, Z.reshape(-1), rcond=None)
    R = Z - (X @ coef).reshape(Z.shape)

    def tv(M):
        return float(np.abs(np.diff(M, axis=0)).sum() + np.abs(np.diff(M, axis=1)).sum())

    tz = tv(Z)
    return {"local_minima": int(count), "tv_ratio": tv(R) / tz if tz > 0 else 0.0,
            "quadratic_fit": coef}


def hessian_subgrid(grid: int, n: int) -> np.ndarray:
    """The indices of the Hessian's sub-grid along each axis: n equally spaced grid points from the
    first to the last (rounded to the nearest grid point), e.g. 0, 12, 25, 38, 50 for n = 5 of 51."""
    return np.unique(np.rint(np.linspace(0, grid - 1, n)).astype(int))


def nonconvexity_ratio(lam_min, lam_max) -> np.ndarray:
    """r = max(0, −λ_min) / max(|λ_min|, |λ_max|) ∈ [0, 1] (module docstring); 0 where both are 0."""
    lo, hi = np.asarray(lam_min, np.float64), np.asarray(lam_max, np.float64)
    den = np.maximum(np.abs(lo), np.abs(hi))
    return np.where(den > 0, np.maximum(0.0, -lo) / np.where(den > 0, den, 1.0), 0.0)


def figure1(
    out: str | Path,
    *,
    preset: str = "full",
    seed: int = 0,
    progress: Callable[[str], None] | bool | None = None,
) -> dict:
    """Run the Figure 1 experiment (module docstring) and write its outputs into `out`.

    **Arguments:**
    - `out`: output folder (created); finished stages in `out/stages/` are reused.
    - `preset`: "full", "quick" or "tiny" (`figure1_settings`).
    - `seed`: the PRNG seed of the whole run.
    - `progress`: True (default) prints progress lines on stderr, a callable receives them.

    **Returns:** the report (also written to `out/report.json`).
    """
    s = figure1_settings(preset=preset, seed=seed)
    out = preflight(out)
    out.mkdir(parents=True, exist_ok=True)
    log = Progress("figure1", True if progress is None else progress)
    store = RunStore(out, s)
    (x, y), (x_test, y_test) = _split_data(s["n_train"], seed)
    log(f"digits: {x.shape[0]} training images, {x_test.shape[0]} held out; settings "
        f"{json.dumps(s)}")
    key = jax.random.PRNGKey(seed)
    results = {}
    pieces = [(d, skip) for d in s["depths"] for skip in (True, False)]
    report = {}
    for depth, skip in pieces:
        results[_label(depth, skip)] = _piece(store, s, log, key, depth, skip, x, y, x_test,
                                              y_test)
        complete = len(results) == len(pieces)
        if not complete and store.load(f"{_label(depth, skip)}_written") is not None:
            continue  # a partial report with these pieces was written before
        # after every piece: report.json and the figures of the pieces so far ("complete": false
        # until the last), so that a long run can be looked at while it goes on
        report = {"settings": s, "complete": complete,
                  "data": {"n_train": int(x.shape[0]), "n_test": int(x_test.shape[0])},
                  "nets": dict(results)}
        report["table"] = summary_table(report)
        from ._figure1_plots import plot_all

        report["figures"] = plot_all(out, report)
        (out / "report.json").write_text(json.dumps(to_jsonable(report), indent=1))
        log(f"wrote {out / 'report.json'} ({len(results)} of {len(pieces)} nets) and "
            f"{', '.join(report['figures'])}")
        if not complete:
            store.save(f"{_label(depth, skip)}_written", {})
    return report


def _piece(store, s, log, key, depth, skip, x, y, x_test, y_test) -> dict:
    name = _label(depth, skip)
    # the summary is always rebuilt from the stored sub-stages (cheap), so that a change of the
    # summary's definitions never leaves a stale stored piece behind
    fresh = store.load(name) is None
    if not fresh:
        log(f"{name}: loaded from {store.dir}")
    make = eqx.nn.make_with_state(DigitsResNet)
    # the twins share their initialisation: the same key for skip and no-skip at a depth
    k_depth = jax.random.fold_in(key, depth)
    k_init_a, k_init_b, k_data_a, k_data_b, k_dir, k_hess = jax.random.split(k_depth, 6)
    nets = {}
    for tag, k_init, k_data in (("a", k_init_a, k_data_a), ("b", k_init_b, k_data_b)):
        like, state = make(depth=depth, width=s["width"], skip=skip, key=k_init)
        stage = f"{name}_train_{tag}"
        rec = store.load(stage)
        net = store.load_tree(stage, like) if rec is not None else None
        if net is None:
            log(f"{name}: training minimum {tag.upper()} ({s['steps']} Adam steps, batch "
                f"{s['batch_size']})")
            net, _, hist = train_digits_resnet(like, state, x, y, key=k_data, steps=s["steps"],
                                               batch_size=s["batch_size"],
                                               learning_rate=s["learning_rate"])
            loss, acc = batch_stats_loss(net, state, x, y)
            test_acc = _test_accuracy(net, state, x, y, x_test, y_test)
            store.save_tree(stage, net)
            rec = store.save(stage, {"loss": float(loss), "accuracy": float(acc),
                                     "test_accuracy": test_acc,
                                     "history_every_10": np.asarray(hist)[::10]})
            log(f"{name}: minimum {tag.upper()}: training loss {float(loss):.4g}, accuracy "
                f"{float(acc):.4f}, held-out accuracy {test_acc:.4f}")
        nets[tag] = (net, rec)
    state = make(depth=depth, width=s["width"], skip=skip, key=k_init_a)[1]
    net_a = nets["a"][0]
    pa, rest = trainable(net_a)
    pb = trainable(nets["b"][0])[0]

    # F on the plane, the segment and in the Hessian: the full-batch training-mode loss in one
    # pass (`full_batch_loss`), the same function as the inference loss with the statistics
    # recomputed by `recompute_batch_stats` (`batch_stats_loss`), at a third of the cost; the two
    # are compared at three points of every plane below ("bn_check").
    def F(p):
        loss, acc = full_batch_loss(eqx.combine(p, rest), state, x, y)
        return {"loss": loss, "accuracy": acc}

    def F_loss(p):
        return full_batch_loss(eqx.combine(p, rest), state, x, y)[0]

    # -- the surface on the filter-normalised plane, in blocks of rows -------------------------------
    u, v = filter_normalized_directions(pa, 2, key=k_dir)
    g = s["grid"]
    axis = np.linspace(-s["span"], s["span"], g)
    loss_rows, acc_rows = [], []
    r = s["rows_per_stage"]
    for start in range(0, g, r):
        stage = f"{name}_surface_rows_{start}"
        rec = store.load(stage)
        if rec is None:
            log(f"{name}: surface rows {start}..{min(start + r, g) - 1} of {g} ({g} points each)")
            sl = random_directions_slice(F, pa, directions=(u, v), alphas=axis[start : start + r],
                                         betas=axis)
            rec = store.save(stage, {"loss": np.asarray(sl.values["loss"]),
                                     "accuracy": np.asarray(sl.values["accuracy"])})
        loss_rows.append(np.asarray(rec["loss"], np.float64))
        acc_rows.append(np.asarray(rec["accuracy"], np.float64))
    surface = np.concatenate(loss_rows, 0)
    surface_acc = np.concatenate(acc_rows, 0)
    if not np.all(np.isfinite(surface)):
        raise FloatingPointError(f"{name}: the loss is not finite on the plane")

    # -- the non-convexity map on the sub-grid ------------------------------------------------------
    sub = hessian_subgrid(g, s["hessian_grid"])
    lam_min, lam_max = [], []
    for i in sub:
        stage = f"{name}_hessian_row_{i}"
        rec = store.load(stage)
        if rec is None:
            log(f"{name}: Hessian extremes (Lanczos, {s['lanczos_steps']} steps) at {len(sub)} "
                f"points of row {i}")
            al = axis[i]
            coefs = [(al, axis[j]) for j in sub]
            points = jax.tree.map(
                lambda o, du, dv: jnp.stack([o + a * du + b * dv for a, b in coefs]), pa, u, v)
            e = hessian_eigs_batch(F_loss, points, key=jax.random.fold_in(k_hess, int(i)), k=1,
                                   num_steps=s["lanczos_steps"])
            rec = store.save(stage, {"lambda_min": np.asarray(e.lambda_min),
                                     "lambda_max": np.asarray(e.lambda_max)})
        lam_min.append(np.asarray(rec["lambda_min"], np.float64))
        lam_max.append(np.asarray(rec["lambda_max"], np.float64))
    lam_min, lam_max = np.stack(lam_min), np.stack(lam_max)
    ratio = nonconvexity_ratio(lam_min, lam_max)

    # -- the straight segment between the two minima ------------------------------------------------
    stage = f"{name}_barrier"
    rec = store.load(stage)
    if rec is None:
        log(f"{name}: straight segment A → B, {s['barrier_points']} points + refine_max")
        ts = np.linspace(0.0, 1.0, s["barrier_points"])
        path = linear(pa, pb)
        vals = np.asarray(evaluate_path(F_loss, path, ts), np.float64)
        ref = refine_max(F_loss, path, ts, vals, tol=s["refine_tol"])
        rec = store.save(stage, {
            "t": ts, "loss": vals, "t_refined": np.asarray(ref.ts), "loss_refined":
            np.asarray(ref.values), "t_max": float(ref.t_max), "f_max": float(ref.f_max),
            "barrier": float(ref.f_max) - max(float(vals[0]), float(vals[-1])),
            "refine_converged": bool(ref.converged)})
    seg = rec

    # -- the one-pass loss against recompute_batch_stats at the centre and two corners ------------
    stage = f"{name}_bn_check"
    rec = store.load(stage)
    if rec is None:
        check = []
        for ia, ib in ((g // 2, g // 2), (0, 0), (g - 1, g - 1)):
            p = jax.tree.map(lambda o, du, dv: o + axis[ia] * du + axis[ib] * dv, pa, u, v)
            ref = float(batch_stats_loss(eqx.combine(p, rest), state, x, y)[0])
            check.append({"alpha": float(axis[ia]), "beta": float(axis[ib]), "recomputed": ref,
                          "grid": float(surface[ia, ib]),
                          "rel_diff": abs(ref - float(surface[ia, ib])) / max(abs(ref), 1e-30)})
        rec = store.save(stage, {"points": check})
    check = rec["points"]
    if max(c["rel_diff"] for c in check) > 1e-3:
        raise FloatingPointError(f"{name}: the one-pass full-batch loss differs from the loss with "
                                 f"recompute_batch_stats: {check}")
    rough = roughness(surface)
    basin = surface[np.ix_(sub, sub)] < np.log(10.0)  # below the loss of the uniform prediction
    thr = s["nonconvex_threshold"]
    frac_basin = float(np.mean(ratio[basin] > thr)) if np.any(basin) else float("nan")
    n_params = int(sum(np.size(l) for l in jax.tree.leaves(pa)))
    result = {
        "depth": depth, "skip": skip, "parameters": n_params,
        "minimum_a": nets["a"][1], "minimum_b": nets["b"][1],
        "loss": nets["a"][1]["loss"], "accuracy": nets["a"][1]["accuracy"],
        "test_accuracy": nets["a"][1]["test_accuracy"],
        "surface": {"alphas": axis, "betas": axis, "loss": surface, "accuracy": surface_acc},
        "hessian": {"index": sub, "alphas": axis[sub], "betas": axis[sub], "lambda_min": lam_min,
                    "lambda_max": lam_max, "ratio": ratio,
                    "nonconvex_fraction": float(np.mean(ratio > s["nonconvex_threshold"])),
                    "mean_ratio": float(np.mean(ratio)),
                    "basin_points": int(np.sum(basin)),
                    "nonconvex_fraction_basin": frac_basin},
        "roughness": {k: v for k, v in rough.items()},
        "segment": seg,
        "bn_check": check,
        "barrier": seg["barrier"],
    }
    if fresh:
        store.save(name, result)
    log(f"{name}: loss {result['loss']:.4g}, non-convex fraction "
        f"{result['hessian']['nonconvex_fraction']:.3f}, local minima {rough['local_minima']}, "
        f"tv ratio {rough['tv_ratio']:.3f}, barrier {seg['barrier']:.4g}")
    return to_jsonable(result)


def _test_accuracy(net, state, x, y, x_test, y_test) -> float:
    """Accuracy on the held-out digits, BatchNorm normalising with the training set's statistics."""
    from ..model._batch_stats import recompute_batch_stats
    from ..model._resnet import AXIS

    st = recompute_batch_stats(net, state, x, axis_name=AXIS)
    logits, _ = jax.vmap(eqx.nn.inference_mode(net), axis_name=AXIS, in_axes=(0, None),
                         out_axes=(0, None))(x_test, st)
    return float(jnp.mean(jnp.argmax(logits, -1) == y_test))


def summary_table(report: dict) -> list[dict]:
    """One row per (depth, skip): the numbers of the README table."""
    rows = []
    for name, r in report["nets"].items():
        rows.append({"net": name, "depth": r["depth"], "skip": r["skip"], "loss": r["loss"],
                     "accuracy": r["accuracy"], "test_accuracy": r["test_accuracy"],
                     "nonconvex_fraction": r["hessian"]["nonconvex_fraction"],
                     "nonconvex_fraction_basin": r["hessian"]["nonconvex_fraction_basin"],
                     "mean_ratio": r["hessian"]["mean_ratio"],
                     "basin_points": r["hessian"]["basin_points"],
                     "local_minima": r["roughness"]["local_minima"],
                     "tv_ratio": r["roughness"]["tv_ratio"], "barrier": r["barrier"]})
    return rows


def format_figure1_table(report: dict) -> str:
    """The summary table as aligned text (what the CLI prints)."""
    head = (f"{'net':>18} {'loss':>9} {'acc':>6} {'test acc':>8} {'nonconvex':>9} {'minima':>6} "
            f"{'tv ratio':>8} {'barrier':>9}")
    lines = [head]
    for r in report["table"]:
        lines.append(f"{r['net']:>18} {r['loss']:9.4g} {r['accuracy']:6.3f} "
                     f"{r['test_accuracy']:8.3f} {r['nonconvex_fraction']:9.3f} "
                     f"{r['local_minima']:6d} {r['tv_ratio']:8.3f} {r['barrier']:9.4g}")
    return "\n".join(lines)


def format_figure1_markdown(report: dict) -> str:
    """The summary table as Markdown (the README's table is this, from docs/figure1/report.json)."""
    lines = ["| depth | skip | training loss | training acc. | held-out acc. | non-convex fraction "
             "(r > 0.1) | … in the basin (points) | mean r | local minima | TV ratio | barrier A→B |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["table"]:
        fb = r["nonconvex_fraction_basin"]
        fb = "–" if isinstance(fb, str) or not np.isfinite(fb) else f"{fb:.2f}"
        lines.append(f"| {r['depth']} | {'yes' if r['skip'] else 'no'} | {r['loss']:.3g} | "
                     f"{r['accuracy']:.3f} | {r['test_accuracy']:.3f} | "
                     f"{r['nonconvex_fraction']:.2f} | {fb} ({r['basin_points']}) | "
                     f"{r['mean_ratio']:.2f} | "
                     f"{r['local_minima']} | {r['tv_ratio']:.3f} | {r['barrier']:.3g} |")
    return "\n".join(lines)
