"""Pictures: a 2-D slice with paths drawn on it, and F along paths against t (matplotlib, imported lazily).

`plot_slice(sl, paths)` draws F on the plane of a `Slice` (`plane_slice`, `random_directions_slice`) as a
filled contour map and the orthogonal projections of paths onto that plane (`slice_coordinates`).
`plot_paths(curves)` draws F(γ(t)) against t for one or more paths and marks each maximum.
matplotlib is imported only when a function here is called, so `import jaxland` does not need it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..paths._paths import AbstractPath
from ._slices import Slice, slice_coordinates


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("jaxland's plot helpers need matplotlib: pip install matplotlib") from e
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
    if not isinstance(sl, Slice):
        raise TypeError(f"sl must be a jaxland.Slice; got {type(sl).__name__}")
    Z = np.asarray(sl.values, np.float64)
    al, be = np.asarray(sl.alphas, np.float64), np.asarray(sl.betas, np.float64)
    if Z.shape != (al.shape[0], be.shape[0]) or min(Z.shape) < 2:
        raise ValueError(f"sl.values must be scalar values on a grid of at least 2 x 2, shape "
                         f"(n_alpha, n_beta) = {(al.shape[0], be.shape[0])}; got {Z.shape}")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    label = "F"
    if log:
        shift = Z[np.isfinite(Z)].min() if np.any(np.isfinite(Z)) else 0.0
        scale = max(float(np.nanmax(np.abs(Z[np.isfinite(Z)]))) if np.any(np.isfinite(Z)) else 1.0, 1.0)
        Z = np.log10(Z - shift + 1e-12 * scale)
        label = "log10(F - min F)"
    X, Y = np.meshgrid(al, be, indexing="ij")
    cs = ax.contourf(X, Y, Z, levels=levels, cmap=cmap)
    ax.contour(X, Y, Z, levels=levels, colors="k", linewidths=0.3, alpha=0.4)
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, label=label)
    for i, (name, p) in enumerate(_named(paths, "paths")):
        if isinstance(p, AbstractPath):
            xy = np.asarray(slice_coordinates(sl, p, ts))
        else:
            xy = np.asarray(p, np.float64)
            if xy.ndim != 2 or xy.shape[1] != 2:
                raise ValueError(f"paths[{i}] given as coordinates must have shape (P, 2); got "
                                 f"{xy.shape}")
        ax.plot(xy[:, 0], xy[:, 1], lw=2, label=name)
    if anchors:
        an = np.asarray(sl.anchors, np.float64)
        ax.plot(an[:, 0], an[:, 1], "o", color="white", mec="k", ms=6, zorder=5)
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    ax.set_xlim(al.min(), al.max())
    ax.set_ylim(be.min(), be.max())
    if title:
        ax.set_title(title)
    if any(name for name, _ in _named(paths, "paths")):
        ax.legend(loc="best", fontsize="small")
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
