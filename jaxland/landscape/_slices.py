"""Two-dimensional slices of a landscape: F on a plane in parameter space, for pictures.

A plane is θ(α, β) = o + α u + β v with an origin o and two directions u, v (pytrees of the parameters'
structure). Two planes are provided:

- `plane_slice(fn, a, b, c)`: the plane through three parameter points (Garipov et al. 2018, Fig. 1):
  o = a, u = (b − a)/‖b − a‖, v = the part of c − a orthogonal to u, normalised (Gram–Schmidt with the
  Euclidean inner product over all leaves), so (α, β) are distances in parameter space and the picture
  has true geometry: a sits at (0, 0), b at (‖b − a‖, 0), c at (⟨c − a, u⟩, ‖c − a − ⟨c − a, u⟩u‖).
- `random_directions_slice(fn, center, key=key)`: o = center, u and v random Gaussian directions that are
  *filter-normalised* (Li et al. 2018, "Visualizing the loss landscape of neural nets", §4):
  every filter (row) of a weight matrix of the direction is rescaled to the norm of the same row of the
  centre, d_{i,:} ← d_{i,:} · ‖θ_{i,:}‖ / ‖d_{i,:}‖ (`filter_normalized_directions`), so that the picture does
  not depend on the scale invariance of ReLU layers; (α, β) are in units of these directions.

**Evaluation.** The grid (α_i, β_j), i < n_α, j < n_β, is visited by the polygonal path through the grid
points in raster order, t_g = g/(G − 1) for point g = i·n_β + j, G = n_α n_β. On that path the
parameters are the combination 1·o + α(t) u + β(t) v of three fixed pytrees, so `jaxland.evaluate_path`
evaluates it with all of its machinery: vmap + jit in memory-bounded chunks, data batching, sharding over
devices, and (for an `Objective` on SkipNet / NoSkipNet / TwoLayer) the structured fast path with the three
first-layer products W1_o x, W1_u x, W1_v x computed once for the whole slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._checks import check_ts
from .._params import (
    check_joinable,
    check_params,
    combine,
    first_difference,
    num_stacked,
    param_dtype,
    param_leaves,
    partition,
    stack_trees,
    tree_axpy,
    tree_combination,
    tree_dot,
    tree_scale,
    tree_sub,
    zero_stats,
)
from ..engine._evaluate import evaluate_path
from ..paths._paths import AbstractPath, check_scalar_t, check_t, eager_call, segment_locate


class Slice(NamedTuple):
    """F on a grid of a plane θ(α, β) = o + α u + β v.

    - `values`: F on the grid, shape (n_α, n_β) with ``values[i, j] = F(o + alphas[i] u + betas[j] v)``
      (a pytree of such arrays for a pytree-valued fn). For ``matplotlib``'s ``contourf(X, Y, Z)`` use
      ``Z = values.T`` with ``X, Y = meshgrid(alphas, betas)`` (what `jaxland.plot_slice` does).
    - `alphas` (n_α,), `betas` (n_β,): the grid coordinates.
    - `origin`, `u`, `v`: o and the two directions (pytrees of the parameters' structure).
    - `anchors`: shape (K, 2), the (α, β) coordinates of the points that define the plane (a, b, c for
      `plane_slice`; the centre (0, 0) for `random_directions_slice`).
    """

    values: PyTree
    alphas: Float[Array, " n_alpha"]
    betas: Float[Array, " n_beta"]
    origin: PyTree
    u: PyTree
    v: PyTree
    anchors: Float[Array, "K 2"]


# --------------------------------------------------------------------------------------------------
# The raster path through a grid in the plane
# --------------------------------------------------------------------------------------------------


class _PlaneCoefs(eqx.Module):
    """s ↦ (1, α(s), β(s)): piecewise-linear interpolation of the grid coordinates in raster order."""

    coords: Float[Array, "G 2"]
    breaks: Float[Array, " G"]

    def __call__(self, s):
        j, r = segment_locate(self.breaks, s)
        ab = (1 - r) * self.coords[j] + r * self.coords[j + 1]
        return jnp.concatenate([jnp.ones((1,), ab.dtype), ab])


class _PlanePath(AbstractPath):
    """The polygonal path o + α(t) u + β(t) v through the grid points (α_g, β_g) in raster order.

    At its breaks t = b_g it passes through grid point g exactly (s = 0 on piece g). Its one piece is the
    combination of the basis (o, u, v) with coefficients (1, α(t), β(t)), which `evaluate_path` uses.
    """

    basis: PyTree
    coefs: _PlaneCoefs

    def __call__(self, t):
        return eager_call(_plane_point, self, check_scalar_t(t))

    def combination(self):
        return self.basis, self.coefs


def _plane_point(path: _PlanePath, t):
    return tree_combination(path.coefs(check_t(t)), path.basis)


def _grid_values(fn, origin, u, v, alphas, betas, evaluate_kwargs) -> PyTree:
    """F at o + α_i u + β_j v for the grid alphas × betas, shape (n_α, n_β), via `evaluate_path`."""
    na, nb = alphas.shape[0], betas.shape[0]
    G = na * nb
    dtype = param_dtype(origin)
    A, B = np.meshgrid(np.asarray(alphas, np.float64), np.asarray(betas, np.float64), indexing="ij")
    coords = np.stack([A.reshape(-1), B.reshape(-1)], axis=1)
    if G == 1:  # one point: a degenerate path (two equal nodes) with breaks (0, 1)
        coords = np.concatenate([coords, coords])
    Gp = coords.shape[0]
    breaks = np.arange(Gp, dtype=np.float64) / (Gp - 1)
    breaks_d = jnp.asarray(breaks, dtype)
    path = _PlanePath(stack_trees([origin, u, v], "(origin, u, v)"),
                      _PlaneCoefs(jnp.asarray(coords, dtype), breaks_d))
    # the breaks themselves, as stored (in the parameters' dtype), so that s = 0 exactly at each
    ts = np.asarray(breaks_d)[:G] if G > 1 else np.zeros(1, np.asarray(breaks_d).dtype)
    vals = evaluate_path(fn, path, ts, **evaluate_kwargs)
    return jax.tree.map(lambda a: jnp.reshape(a, (na, nb)), vals)


def _check_grid(name: str, a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty rank-1 array of coordinates; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _resolution(resolution) -> tuple[int, int]:
    r = (resolution, resolution) if np.ndim(resolution) == 0 else tuple(resolution)
    if len(r) != 2 or any(int(k) != k or k < 1 for k in r):
        raise ValueError(f"resolution must be a positive integer or a pair of them; got {resolution!r}")
    return int(r[0]), int(r[1])


def _axis(lo: float, hi: float, n: int) -> np.ndarray:
    """n equally spaced coordinates from lo to hi; for n = 1 the midpoint (the centre of the range,
    not its corner)."""
    return np.array([0.5 * (lo + hi)]) if n == 1 else np.linspace(lo, hi, n)


# --------------------------------------------------------------------------------------------------
# Coordinates of parameter points in a plane
# --------------------------------------------------------------------------------------------------


def slice_coordinates(sl: Slice, points, ts=None) -> Float[Array, "P 2"]:
    """(α, β) of parameter points projected orthogonally onto the plane of a slice.

    The projection of p is o + α u + β v with (α, β) solving the 2 × 2 normal equations
    [⟨u,u⟩ ⟨u,v⟩; ⟨u,v⟩ ⟨v,v⟩] (α, β) = (⟨p − o, u⟩, ⟨p − o, v⟩): exact for points in the plane, and
    (⟨p − o, u⟩, ⟨p − o, v⟩) for `plane_slice`'s orthonormal u, v.

    **Arguments:**
    - `sl`: a `Slice`.
    - `points`: one parameter pytree (of the origin's structure), a list or tuple of them, a stacked
      pytree (leading axis P on every floating-point leaf), or an `AbstractPath` (sampled at `ts`).
      Only the floating-point leaves are projected.
    - `ts`: for a path, the points t (shape (P,)); default 201 equally spaced points.

    **Returns:** shape (P, 2) (P = 1 for one pytree).
    """
    if not isinstance(sl, Slice):
        raise TypeError(f"sl must be a Slice (from plane_slice or random_directions_slice); got "
                        f"{type(sl).__name__}")
    o = sl.origin
    if isinstance(points, AbstractPath):
        ts = np.linspace(0.0, 1.0, 201) if ts is None else check_ts(ts)
        stacked = _sample_path(points, jnp.asarray(ts, param_dtype(o)))
    elif isinstance(points, (list, tuple)) and jax.tree.structure(points) != jax.tree.structure(o):
        stacked = partition(stack_trees(list(points), "points"))[0]
    else:
        stacked = partition(points)[0]
    op = partition(o)[0]
    if jax.tree.structure(stacked) != jax.tree.structure(op):
        raise ValueError(f"points must have the structure of the slice's origin; they differ "
                         f"{first_difference(stacked, op)}")
    leaves, oleaves = param_leaves(stacked), param_leaves(op)
    if all(jnp.shape(l) == jnp.shape(ol) for l, ol in zip(leaves, oleaves, strict=True)):
        stacked = jax.tree.map(lambda l: jnp.asarray(l)[None], stacked)  # a single point
    else:
        for i, (l, ol) in enumerate(zip(leaves, oleaves, strict=True)):
            if jnp.shape(l)[1:] != jnp.shape(ol):
                raise ValueError(f"points leaf {i} has shape {jnp.shape(l)}; expected {jnp.shape(ol)} "
                                 f"or (P, *{jnp.shape(ol)})")
        num_stacked(stacked, "points")
    return _project(op, partition(sl.u)[0], partition(sl.v)[0], stacked)


@eqx.filter_jit
def _sample_path(path, ts):
    # lax.map, not vmap: a path made of segments chosen by `lax.switch` (the Theorem 11 path) would
    # evaluate every segment at every point under vmap; a sequential map evaluates only its own. Only
    # the parameter leaves are returned (an activation function cannot leave a lax.map).
    return jax.lax.map(lambda t: partition(path(t))[0], ts)


@eqx.filter_jit
def _project(o, u, v, stacked):
    """(α, β) of the stacked points (parameter leaves only, like o, u, v)."""
    guu, guv, gvv = tree_dot(u, u), tree_dot(u, v), tree_dot(v, v)
    det = guu * gvv - guv * guv

    def one(p):  # the 2 × 2 normal equations by Cramer's rule
        d = tree_sub(p, o)
        ru, rv = tree_dot(d, u), tree_dot(d, v)
        return jnp.stack([(gvv * ru - guv * rv) / det, (guu * rv - guv * ru) / det])

    return jax.vmap(one)(stacked)


@eqx.filter_jit
def plane_basis(a, b, c):
    """Gram–Schmidt on the parameter leaves: u = (b − a)/‖b − a‖, v = w/‖w‖ with
    w = (c − a) − ⟨c − a, u⟩u (one compiled call); every other leaf is a's. Returns
    (u, v, ‖b − a‖, ⟨c − a, u⟩, ‖w‖, ‖c − a‖)."""
    e1 = tree_sub(b, a)
    n1 = jnp.sqrt(tree_dot(e1, e1))
    u = tree_scale(1 / jnp.where(n1 > 0, n1, 1), e1)
    e2 = tree_sub(c, a)
    cu = tree_dot(e2, u)
    w = tree_axpy(-cu, u, e2)
    n2 = jnp.sqrt(tree_dot(w, w))
    v = tree_scale(1 / jnp.where(n2 > 0, n2, 1), w)
    return u, v, n1, cu, n2, jnp.sqrt(tree_dot(e2, e2))


# --------------------------------------------------------------------------------------------------
# Plane through three points
# --------------------------------------------------------------------------------------------------


def plane_slice(
    fn: Callable,
    a: PyTree,
    b: PyTree,
    c: PyTree,
    *,
    resolution: int | tuple[int, int] = 41,
    margin: float = 0.25,
    alphas=None,
    betas=None,
    **evaluate_kwargs,
) -> Slice:
    """F on the plane through three parameter points a, b, c (e.g. two minima and a Bézier bend).

    With u = (b − a)/‖b − a‖ and v = (c − a − ⟨c − a, u⟩u)/‖·‖ (orthonormal), the grid is
    θ(α, β) = a + α u + β v; (α, β) are Euclidean distances in parameter space.

    **Arguments:**
    - `fn`: as for `jaxland.evaluate_path` (an `Objective` from `objective_fn`, or params ↦ scalar or
      pytree of scalars).
    - `a`, `b`, `c`: parameter pytrees of equal structure, not collinear (any model: only the
      floating-point leaves span the plane; the other leaves must be equal in a, b, c and are a's).
    - `resolution`: grid points n (or (n_α, n_β)) when `alphas`/`betas` are not given.
    - `margin`: the default grid covers the bounding box of the three points enlarged by this fraction
      of its width/height on every side.
    - `alphas`, `betas`: explicit grid coordinates (rank-1 arrays), overriding `resolution`/`margin`.
    - `evaluate_kwargs`: passed to `evaluate_path` (`batch_size`, `memory_budget`, `mesh`, …).

    **Returns:** a `Slice` with `anchors` the coordinates of a, b, c, shape (3, 2).
    """
    a, b, c = check_params(a, "a"), check_params(b, "b"), check_params(c, "c")
    check_joinable(a, b, ("a", "b"))
    check_joinable(a, c, ("a", "c"))
    u, v, n1, cu, n2, scale = plane_basis(a, b, c)
    if not float(n1) > 0:
        raise ValueError("a and b coincide: the plane through a, b, c is undefined")
    # relative test: c − a must leave the line through a and b by more than rounding
    eps = float(jnp.finfo(jnp.result_type(n2)).eps)
    if not float(n2) > 100 * eps * max(float(scale), float(n1)):
        raise ValueError("a, b and c are collinear: the plane through them is undefined")
    anchors = np.array([[0.0, 0.0], [float(n1), 0.0], [float(cu), float(n2)]])
    na, nb = _resolution(resolution)
    lo, hi = anchors.min(0), anchors.max(0)
    pad = margin * (hi - lo)
    if alphas is None:
        alphas = _axis(lo[0] - pad[0], hi[0] + pad[0], na)
    if betas is None:
        betas = _axis(lo[1] - pad[1], hi[1] + pad[1], nb)
    alphas, betas = _check_grid("alphas", alphas), _check_grid("betas", betas)
    values = _grid_values(fn, a, u, v, alphas, betas, evaluate_kwargs)
    dt = param_dtype(a)
    return Slice(values, jnp.asarray(alphas, dt), jnp.asarray(betas, dt), a, u, v,
                 jnp.asarray(anchors, dt))


# --------------------------------------------------------------------------------------------------
# Filter-normalised random directions (Li et al. 2018)
# --------------------------------------------------------------------------------------------------


def filter_normalized_directions(
    params: PyTree, num: int = 2, *, key: PRNGKeyArray, ignore_1d: bool = True
) -> tuple[PyTree, ...]:
    """Random Gaussian directions with every filter rescaled to the norm of the parameters' filter.

    Li et al. (2018), §4: for each weight matrix (parameter leaf with ≥ 2 axes) and each filter i
    (index along the first axis, the output unit in the `x @ W.T` convention: a row of W1, W2, V1, V2,
    θ_k; an output channel of an `eqx.nn.Conv2d` kernel; note that a flax `nnx.Linear` kernel is
    stored (in, out), so there the first axis is an input), d_{i,…} ← d_{i,…} · ‖θ_{i,…}‖ / ‖d_{i,…}‖.
    Leaves with ≤ 1 axis (biases, scalars) are set to zero as in their code's default
    (``ignore_1d=True``), or else rescaled as a whole to the leaf's norm. A filter of θ that is zero
    gives a zero filter of d. Only the parameters (floating-point leaves) get directions; every other
    leaf (an activation function, an integer array) is the centre's.

    **Arguments:**
    - `params`: the centre θ (any pytree with at least one floating-point leaf).
    - `num`: how many directions.
    - `key`: PRNG key (keyword-only).
    - `ignore_1d`: see above.

    **Returns:** a tuple of `num` pytrees of the structure, shapes and dtypes of `params`.
    """
    params = check_params(params, "params")
    if key is None:
        raise ValueError("key is required: a jax.random.PRNGKey (all randomness is explicit)")
    if isinstance(num, bool) or int(num) != num or num < 1:
        raise ValueError(f"num must be a positive integer; got {num!r}")
    p, rest = partition(params)
    rest = zero_stats(rest)  # a direction does not move running statistics (a linen batch_stats …)
    return tuple(combine(d, rest) for d in _directions(key, p, int(num), bool(ignore_1d)))


@eqx.filter_jit
def _directions(key, params, num: int, ignore_1d: bool):
    leaves, treedef = jax.tree.flatten(params)
    sizes = [int(np.prod(p.shape)) for p in leaves]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    dtype = param_dtype(params)
    # one draw for all leaves (one random-bits kernel instead of one per leaf: much faster to compile)
    z = jax.random.normal(key, (num, int(offsets[-1])), dtype)
    out = []
    for r in range(num):
        dl = []
        for i, p in enumerate(leaves):
            d = z[r, offsets[i] : offsets[i + 1]].reshape(p.shape).astype(p.dtype)
            if p.ndim >= 2:
                axes = tuple(range(1, p.ndim))
                pn = jnp.sqrt(jnp.sum(p * p, axis=axes, keepdims=True))
                dn = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
                d = jnp.where(dn > 0, d * (pn / jnp.where(dn > 0, dn, 1)), 0)
            elif ignore_1d:
                d = jnp.zeros_like(p)
            else:
                pn, dn = jnp.linalg.norm(p), jnp.linalg.norm(d)
                d = jnp.where(dn > 0, d * (pn / jnp.where(dn > 0, dn, 1)), 0)
            dl.append(d)
        out.append(jax.tree.unflatten(treedef, dl))
    return tuple(out)


def random_directions_slice(
    fn: Callable,
    center: PyTree,
    *,
    key: PRNGKeyArray | None = None,
    directions: tuple[PyTree, PyTree] | None = None,
    span: float | tuple[float, float] = 1.0,
    resolution: int | tuple[int, int] = 41,
    alphas=None,
    betas=None,
    ignore_1d: bool = True,
    **evaluate_kwargs,
) -> Slice:
    """F on the plane θ(α, β) = θ* + α δ + β η of two filter-normalised random directions (Li et al.).

    **Arguments:**
    - `fn`: as for `jaxland.evaluate_path`.
    - `center`: θ*, the parameter pytree at the centre of the picture.
    - `key`: PRNG key for the directions (`filter_normalized_directions(center, 2, key=key)`),
      keyword-only.
    - `directions`: alternatively, the two directions (δ, η) (pytrees of the centre's structure, whose
      non-floating leaves equal the centre's).
    - `span`: the grid covers α, β ∈ [−span, span] (or ([−s_α, s_α], [−s_β, s_β]) for a pair).
    - `resolution`: grid points n or (n_α, n_β), equally spaced from −span to span (n = 1: the centre
      alone); `alphas`, `betas`: explicit coordinates instead.
    - `ignore_1d`: see `filter_normalized_directions`.
    - `evaluate_kwargs`: passed to `evaluate_path`.

    **Returns:** a `Slice` with u = δ, v = η and `anchors` = [[0, 0]] (the centre).
    """
    center = check_params(center, "center")
    if directions is None:
        if key is None:
            raise ValueError("random_directions_slice needs a PRNG key or explicit directions")
        u, v = filter_normalized_directions(center, 2, key=key, ignore_1d=ignore_1d)
    else:
        if len(directions) != 2:
            raise ValueError(f"directions must be a pair (δ, η); got {len(directions)} items")
        u, v = (check_params(d, f"directions[{i}]") for i, d in enumerate(directions))
        check_joinable(center, u, ("center", "directions[0]"))
        check_joinable(center, v, ("center", "directions[1]"))
    sa, sb = (span, span) if np.ndim(span) == 0 else tuple(span)
    if not (np.isfinite(sa) and np.isfinite(sb) and sa > 0 and sb > 0):
        raise ValueError(f"span must be positive and finite; got {span!r}")
    na, nb = _resolution(resolution)
    alphas = _axis(-sa, sa, na) if alphas is None else alphas
    betas = _axis(-sb, sb, nb) if betas is None else betas
    alphas, betas = _check_grid("alphas", alphas), _check_grid("betas", betas)
    values = _grid_values(fn, center, u, v, alphas, betas, evaluate_kwargs)
    dt = param_dtype(center)
    return Slice(values, jnp.asarray(alphas, dt), jnp.asarray(betas, dt), center, u, v,
                 jnp.zeros((1, 2), dt))
