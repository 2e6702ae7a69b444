"""Pictures of a landscape (matplotlib, imported lazily: `import jaxland` does not need it).

- `plot_slice(sl, paths)`: F on the plane of a `Slice` (`plane_slice`, `random_directions_slice`)
  as a filled contour map, with the orthogonal projections of paths onto that plane
  (`slice_coordinates`).
- `plot_contour(sl, paths)`: the same plane as contour lines with labelled levels (Li et al. 2018).
- `plot_surface(sl)`: the same plane as a 3-D surface (Li et al. 2018, Fig. 1).
- `plot_paths(curves)`: F(γ(t)) against t for one or more paths, each maximum marked.
- `plot_interpolation(ts, loss, accuracy)`: loss, and accuracy on a second axis, along a path
  (Goodfellow et al. 2015, Fig. 1; Li et al. 2018, Fig. 2).
- `plot_trajectory(sl, traj)`: the plane of a training trajectory's two principal directions
  (`trajectory_slice`) with the trajectory drawn over the contours (Li et al. 2018, Fig. 9).
- `plot_spectral_density(sd)`: the Hessian's eigenvalue density from `spectral_density`, on a log
  axis, in the style of PyHessian (Yao et al. 2020, Fig. 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..paths._paths import AbstractPath
from ..second_order._density import SpectralDensity
from ._slices import Slice, slice_coordinates
from ._trajectory import TrajectoryDirections


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("jaxland's plot helpers need matplotlib: pip install 'jaxland[plot]' "
                          "(or pip install matplotlib)") from e
    return plt


def _named(items, name: str) -> list[tuple[str | None, object]]:
    """A mapping label -> item, a sequence of items, or one item -> [(label or None, item)]."""
    if items is None:
        return []
    if isinstance(items, Mapping):
        return [(str(k), v) for k, v in items.items()]
    if isinstance(items, AbstractPath) or isinstance(items, np.ndarray) or hasattr(items, "shape"):
        return [(None, items)]
    if isinstance(items, Sequence):
        return [(None, v) for v in items]
    raise TypeError(f"{name} must be a mapping label -> item, a sequence of items or one item; got "
                    f"{type(items).__name__}")


def plot_slice(
    sl: Slice,
    paths=None,
    *,
    ts=None,
    ax=None,
    levels: int = 30,
    log: bool = False,
    cmap: str = "viridis",
    colorbar: bool = True,
    anchors: bool = True,
    title: str | None = None,
):
    """Draw F on a slice as a filled contour map, with paths projected onto its plane.

    **Arguments:**
    - `sl`: a `Slice` with scalar values, shape (n_α, n_β) (n_α, n_β ≥ 2).
    - `paths`: what to draw on the plane: an `AbstractPath`, an array of (α, β) coordinates of shape
      (P, 2), a sequence of those, or a mapping label -> those (labels go in a legend). A path is
      sampled at `ts` and projected with `slice_coordinates`.
    - `ts`: points at which paths are sampled (default 201 equally spaced).
    - `ax`: a matplotlib Axes (default: a new figure).
    - `levels`: number of contour levels; `log`: colour by log10(F − min F + 1e-12 · scale) instead of F
      (for landscapes spanning decades); `cmap`, `colorbar`, `title`: appearance.
    - `anchors`: mark the slice's anchor points (a, b, c or the centre).

    **Returns:** the Axes.
    """
    X, Y, Z, label = _slice_grid(sl, log)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    cs = ax.contourf(X, Y, Z, levels=levels, cmap=cmap)
    ax.contour(X, Y, Z, levels=levels, colors="k", linewidths=0.3, alpha=0.4)
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, label=label)
    _overlay(ax, sl, X, Y, paths, ts, anchors, title)
    return ax


def plot_paths(curves, *, ax=None, mark_max: bool = True, log: bool = False, title: str | None = None):
    """Draw F(γ(t)) against t for one or more paths.

    **Arguments:**
    - `curves`: a pair (ts, values) of shape (P,) each, a sequence of pairs, or a mapping label -> pair
      (e.g. ``{"linear": (ts, evaluate_path(F, linear(a, b), ts))}``). A `RefineResult` (fields `ts`,
      `values`) is accepted in place of a pair.
    - `ax`: a matplotlib Axes (default: a new figure); `mark_max`: mark each curve's maximum;
      `log`: logarithmic F axis; `title`: axes title.

    **Returns:** the Axes.
    """
    if isinstance(curves, tuple) and len(curves) == 2 and np.ndim(curves[0]) == 1:
        items = [(None, curves)]
    elif hasattr(curves, "ts") and hasattr(curves, "values"):
        items = [(None, curves)]
    elif isinstance(curves, Mapping):
        items = [(str(k), v) for k, v in curves.items()]
    elif isinstance(curves, Sequence):
        items = [(None, c) for c in curves]
    else:
        raise TypeError(f"curves must be (ts, values), a sequence of such pairs or a mapping label -> "
                        f"pair; got {type(curves).__name__}")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    for i, (name, c) in enumerate(items):
        t, v = (c.ts, c.values) if hasattr(c, "ts") and hasattr(c, "values") else c
        t, v = np.asarray(t, np.float64), np.asarray(v, np.float64)
        if t.ndim != 1 or t.shape != v.shape:
            raise ValueError(f"curve {name or i}: ts and values must both have shape (P,); got "
                             f"{t.shape} and {v.shape}")
        order = np.argsort(t, kind="stable")
        (line,) = ax.plot(t[order], v[order], lw=1.5, label=name)
        if mark_max and np.any(np.isfinite(v)):
            k = int(np.nanargmax(v))
            ax.plot([t[k]], [v[k]], "v", color=line.get_color(), ms=7)
    ax.set_xlabel("t")
    ax.set_ylabel("F(γ(t))")
    if log:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if any(name for name, _ in items):
        ax.legend(loc="best", fontsize="small")
    return ax


def _slice_grid(sl: Slice, log: bool):
    """(X, Y, Z, label): the grid of a slice for matplotlib (X[i, j] = α_i, Y[i, j] = β_j), its values
    (or log10(F − min F + 1e-12·scale) with `log`), and the colour-bar label."""
    if not isinstance(sl, Slice):
        raise TypeError(f"sl must be a jaxland.Slice; got {type(sl).__name__}")
    Z = np.asarray(sl.values, np.float64)
    al, be = np.asarray(sl.alphas, np.float64), np.asarray(sl.betas, np.float64)
    if Z.shape != (al.shape[0], be.shape[0]) or min(Z.shape) < 2:
        raise ValueError(f"sl.values must be scalar values on a grid of at least 2 x 2, shape "
                         f"(n_alpha, n_beta) = {(al.shape[0], be.shape[0])}; got {Z.shape}")
    label = "F"
    if log:
        finite = Z[np.isfinite(Z)]
        shift = finite.min() if finite.size else 0.0
        scale = max(float(np.abs(finite).max()) if finite.size else 1.0, 1.0)
        Z = np.log10(Z - shift + 1e-12 * scale)
        label = "log10(F - min F)"
    X, Y = np.meshgrid(al, be, indexing="ij")
    return X, Y, Z, label


def _draw_paths(ax, sl: Slice, paths, ts) -> None:
    for i, (name, p) in enumerate(_named(paths, "paths")):
        if isinstance(p, AbstractPath):
            xy = np.asarray(slice_coordinates(sl, p, ts))
        else:
            xy = np.asarray(p, np.float64)
            if xy.ndim != 2 or xy.shape[1] != 2:
                raise ValueError(f"paths[{i}] given as coordinates must have shape (P, 2); got "
                                 f"{xy.shape}")
        ax.plot(xy[:, 0], xy[:, 1], lw=2, label=name)


def _overlay(ax, sl: Slice, X, Y, paths, ts, anchors: bool, title: str | None) -> None:
    """What a slice's picture draws over its field: the paths, the anchors, the α/β frame fitted to
    the grid, the title and a legend when a path is named."""
    _draw_paths(ax, sl, paths, ts)
    if anchors:
        an = np.asarray(sl.anchors, np.float64)
        ax.plot(an[:, 0], an[:, 1], "o", color="white", mec="k", ms=6, zorder=5)
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    ax.set_xlim(X.min(), X.max())
    ax.set_ylim(Y.min(), Y.max())
    if title:
        ax.set_title(title)
    if any(name for name, _ in _named(paths, "paths")):
        ax.legend(loc="best", fontsize="small")


def _levels(Z: np.ndarray, levels) -> np.ndarray:
    """Contour levels: an explicit increasing sequence as given, or for an integer n the n quantiles
    of the finite values at probabilities (k + ½)/n, so that flat low regions (the minima and the
    valleys between them) get as many lines as steep walls."""
    if np.ndim(levels) == 1:
        lv = np.asarray(levels, np.float64)
        if lv.size < 1 or not np.all(np.diff(lv) > 0):
            raise ValueError(f"levels must be a positive integer or an increasing sequence; got "
                             f"{levels!r}")
        return lv
    if isinstance(levels, bool) or int(levels) != levels or levels < 1:
        raise ValueError(f"levels must be a positive integer or an increasing sequence; got "
                         f"{levels!r}")
    finite = Z[np.isfinite(Z)]
    if finite.size == 0:
        raise ValueError("the slice has no finite values to draw contours of")
    lv = np.unique(np.quantile(finite, (np.arange(int(levels)) + 0.5) / int(levels)))
    return lv if lv.size > 1 else np.array([finite.min(), finite.max() + 1e-12])


def _contour_lines(ax, X, Y, Z, levels, cmap, fmt, fontsize="x-small"):
    """Contour lines coloured by level, each labelled with its value (inline)."""
    cs = ax.contour(X, Y, Z, levels=_levels(Z, levels), cmap=cmap, linewidths=1.0)
    ax.clabel(cs, inline=True, fontsize=fontsize, fmt=fmt if fmt is not None else "%.3g")
    return cs


def plot_contour(
    sl: Slice,
    paths=None,
    *,
    ts=None,
    ax=None,
    levels=12,
    log: bool = False,
    fmt: str | None = None,
    cmap: str = "viridis",
    anchors: bool = True,
    title: str | None = None,
):
    """Draw F on a slice as contour lines with labelled levels (Li et al. 2018, Figs. 5–6).

    **Arguments:**
    - `sl`: a `Slice` with scalar values, shape (n_α, n_β) (n_α, n_β ≥ 2).
    - `paths`, `ts`, `anchors`, `title`: as for `plot_slice`.
    - `levels`: an increasing sequence of values, or a number n of levels placed at the n quantiles
      of the values (so that the low, flat regions get lines too).
    - `log`: contour log10(F − min F + 1e-12·scale) instead of F.
    - `fmt`: the format of the level labels (default ``"%.3g"``); `cmap`: line colours.
    - `ax`: a matplotlib Axes (default: a new figure).

    **Returns:** the Axes (x label "α", y label "β").
    """
    X, Y, Z, label = _slice_grid(sl, log)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    _contour_lines(ax, X, Y, Z, levels, cmap, fmt)
    _overlay(ax, sl, X, Y, paths, ts, anchors, title if title else f"contours of {label}")
    return ax


def plot_surface(
    sl: Slice,
    *,
    ax=None,
    log: bool = False,
    zmax: float | None = None,
    cmap: str = "viridis",
    title: str | None = None,
):
    """Draw F on a slice as a 3-D surface (Li et al. 2018, Fig. 1).

    **Arguments:**
    - `sl`: a `Slice` with scalar values, shape (n_α, n_β) (n_α, n_β ≥ 2).
    - `ax`: a matplotlib 3-D Axes (``projection="3d"``; default: a new figure).
    - `log`: draw log10(F − min F + 1e-12·scale) instead of F.
    - `zmax`: clip the values above this height (as Li et al. do, so that a steep wall does not
      flatten the picture); None draws everything.
    - `cmap`, `title`: appearance.

    **Returns:** the 3-D Axes (labels "α", "β" and "F" or the log label).
    """
    X, Y, Z, label = _slice_grid(sl, log)
    if zmax is not None:
        if not np.isfinite(zmax):
            raise ValueError(f"zmax must be a finite number or None; got {zmax!r}")
        Z = np.minimum(Z, float(zmax))
    plt = _pyplot()
    if ax is None:
        fig = plt.figure(figsize=(6, 4.8))
        ax = fig.add_subplot(projection="3d")
    elif getattr(ax, "name", None) != "3d":
        raise ValueError("ax must be a 3-D Axes (fig.add_subplot(projection='3d'))")
    ax.plot_surface(X, Y, Z, cmap=cmap, rstride=1, cstride=1, linewidth=0.1, edgecolor="k",
                    antialiased=True, alpha=0.95)
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    ax.set_zlabel(label)
    if title:
        ax.set_title(title)
    return ax


def _series(values, name: str) -> list[tuple[str | None, np.ndarray]]:
    if isinstance(values, Mapping):
        return [(str(k), np.asarray(v, np.float64)) for k, v in values.items()]
    return [(None, np.asarray(values, np.float64))]


def plot_interpolation(
    ts,
    loss,
    accuracy=None,
    *,
    ax=None,
    xlabel: str = "t",
    loss_label: str = "loss",
    accuracy_label: str = "accuracy",
    log: bool = False,
    title: str | None = None,
):
    """The 1-D interpolation plot: loss along a path, and accuracy on a second y axis (Goodfellow,
    Vinyals & Saxe 2015, Fig. 1; Li et al. 2018, Fig. 2).

    **Arguments:**
    - `ts`: shape (P,), the path parameter (e.g. t of `evaluate_path`).
    - `loss`: shape (P,), or a mapping label -> (P,) values (e.g. ``{"train": …, "test": …}``).
    - `accuracy`: None, or as `loss` (drawn dashed on the right axis, in the colour of the loss
      series with the same label).
    - `ax`: a matplotlib Axes for the loss (default: a new figure); `xlabel`, `loss_label`,
      `accuracy_label`, `title`: texts; `log`: logarithmic loss axis.

    **Returns:** `(ax_loss, ax_accuracy)`; `ax_accuracy` is None without `accuracy`.
    """
    t = np.asarray(ts, np.float64)
    if t.ndim != 1 or t.shape[0] < 2:
        raise ValueError(f"ts must have shape (P,) with P >= 2; got {t.shape}")
    losses = _series(loss, "loss")
    accs = [] if accuracy is None else _series(accuracy, "accuracy")
    for what, items in (("loss", losses), ("accuracy", accs)):
        for name, v in items:
            if v.shape != t.shape:
                where = f"{what}[{name!r}]" if name is not None else what
                raise ValueError(f"{where} must have the shape of ts {t.shape}; got {v.shape}")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.0), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys([n for n, _ in losses] + [n for n, _ in accs]))
    colour = {n: colours[i % len(colours)] for i, n in enumerate(names)}
    order = np.argsort(t, kind="stable")
    handles = []
    for name, v in losses:
        (h,) = ax.plot(t[order], v[order], "-", lw=1.8, color=colour[name],
                       label=f"{loss_label} ({name})" if name else loss_label)
        handles.append(h)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(loss_label)
    if log:
        ax.set_yscale("log")
    ax2 = None
    if accs:
        ax2 = ax.twinx()
        for name, v in accs:
            (h,) = ax2.plot(t[order], v[order], "--", lw=1.5, color=colour[name],
                            label=f"{accuracy_label} ({name})" if name else accuracy_label)
            handles.append(h)
        ax2.set_ylabel(accuracy_label)
    # below the axes: "best" would only avoid the loss lines, not those of the twin axis
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small",
              ncol=2, frameon=False)
    if title:
        ax.set_title(title)
    return ax, ax2


def plot_trajectory(
    sl: Slice,
    traj: TrajectoryDirections,
    *,
    ax=None,
    levels=12,
    log: bool = False,
    fmt: str | None = None,
    cmap: str = "viridis",
    label: str | None = "trajectory",
    title: str | None = None,
):
    """The plane of a training trajectory's first two principal directions, with the loss as
    labelled contours and the trajectory's checkpoints drawn over them (Li et al. 2018, Fig. 9).

    **Arguments:**
    - `sl`: the loss on that plane, from `trajectory_slice(fn, traj)` (origin θ_T, directions
      v_1, v_2 of `traj`).
    - `traj`: the `TrajectoryDirections` (num ≥ 2); its `coordinates` (T, ≥ 2) are drawn as the
      trajectory, from the first checkpoint (square) to the last (star, at the origin), and its
      `explained_variance_ratio` labels the axes.
    - `levels`, `log`, `fmt`, `cmap`: as for `plot_contour`; `label`: legend entry of the
      trajectory; `ax`, `title`: as usual.

    **Returns:** the Axes (x label "1st PC (…%)", y label "2nd PC (…%)").
    """
    if not isinstance(traj, TrajectoryDirections):
        raise TypeError(f"traj must be a TrajectoryDirections; got {type(traj).__name__}")
    coords = np.asarray(traj.coordinates, np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"traj must have at least 2 directions (coordinates of shape (T, 2)); got "
                         f"coordinates of shape {coords.shape}")
    X, Y, Z, _ = _slice_grid(sl, log)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    _contour_lines(ax, X, Y, Z, levels, cmap, fmt)
    ax.plot(coords[:, 0], coords[:, 1], "-", color="tab:red", lw=1.5, label=label, zorder=4)
    ax.plot(coords[:, 0], coords[:, 1], "o", color="tab:red", ms=3, zorder=4)
    ax.plot(coords[0, 0], coords[0, 1], "s", color="tab:red", mec="k", ms=7, zorder=5,
            label="first checkpoint")
    ax.plot(coords[-1, 0], coords[-1, 1], "*", color="gold", mec="k", ms=13, zorder=5,
            label="last checkpoint (origin)")
    r = np.asarray(traj.explained_variance_ratio, np.float64)
    ax.set_xlabel(f"1st PC ({100 * r[0]:.1f}% of the variance)")
    ax.set_ylabel(f"2nd PC ({100 * r[1]:.1f}% of the variance)")
    ax.set_xlim(X.min(), X.max())
    ax.set_ylim(Y.min(), Y.max())
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def plot_spectral_density(
    sd: SpectralDensity,
    *,
    ax=None,
    sigma: float | None = None,
    grid=None,
    num: int = 2000,
    mark=None,
    title: str | None = None,
):
    """The Hessian's eigenvalue density from stochastic Lanczos quadrature, on a logarithmic
    density axis, in the style of PyHessian (Yao et al. 2020; Ghorbani et al. 2019).

    The curve is φ_σ(λ) = (1/M) Σ_m Σ_j w_mj N(λ; θ_mj, σ²) (`SpectralDensity.density`): the Ritz
    values θ of the M probes, weighted by the squared first components of their eigenvectors, each
    widened to a Gaussian of width σ. It integrates to 1 over the real line.

    **Arguments:**
    - `sd`: a `SpectralDensity` from `spectral_density(F, params, key=…)`.
    - `sigma`: the Gaussian width (default: 1/200 of the span of the Ritz values).
    - `grid`: the eigenvalues at which to draw φ_σ (rank 1; default `num` points over the span of
      the Ritz values, widened by 5% and 5σ on each side).
    - `mark`: eigenvalues to mark with vertical dashed lines (e.g. `hessian_eigs(...).top`).
    - `ax`, `title`: as usual.

    **Returns:** the Axes (x label "eigenvalue", y label "density (log scale)").
    """
    if not isinstance(sd, SpectralDensity):
        raise TypeError(f"sd must be a jaxland.SpectralDensity; got {type(sd).__name__}")
    nodes = np.asarray(sd.nodes, np.float64)
    finite = nodes[np.isfinite(nodes)]
    if finite.size == 0:
        raise ValueError("sd has no finite Ritz values to draw")
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    if sigma is None:
        sigma = span / 200
    elif not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}")
    if grid is None:
        if isinstance(num, bool) or int(num) != num or num < 2:
            raise ValueError(f"num must be an integer >= 2; got {num!r}")
        pad = 0.05 * span + 5 * sigma
        grid = np.linspace(lo - pad, hi + pad, int(num))
    grid = np.asarray(grid, np.float64)
    if grid.ndim != 1 or grid.shape[0] < 2 or not np.all(np.isfinite(grid)):
        raise ValueError(f"grid must be a finite rank-1 array of at least 2 eigenvalues; got shape "
                         f"{grid.shape}")
    dens = np.asarray(sd.density(grid, sigma), np.float64)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    floor = 1e-7 * float(dens.max())  # a log axis: hide the Gaussian tails below 1e-7 of the peak
    ax.semilogy(grid, np.maximum(dens, floor), lw=1.2, color="tab:blue", label="SLQ density")
    ax.set_ylim(floor, 2 * float(dens.max()))
    if mark is not None:
        for i, lam in enumerate(np.atleast_1d(np.asarray(mark, np.float64))):
            ax.axvline(lam, ls="--", lw=1, color="tab:red",
                       label="marked eigenvalues" if i == 0 else None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return ax
