"""Paths in parameter space: pure functions t ∈ [0, 1] ↦ parameter pytree.

A path is an `eqx.Module` (so itself a pytree: its nodes are leaves, and it can be jitted, vmapped and
differentiated). Calling it at a scalar t returns a pytree of the same structure and type as its
endpoints (a path between two SkipNets returns SkipNets). `jax.vmap(path)(ts)` evaluates it at many t.

Constructors: `linear` (the segment), `polychain` (a polygonal chain through K nodes, uniform or
arc-length parametrisation), `bezier` (a Bézier curve of any degree in Bernstein form, the curves of
Garipov et al. 2018), `concat` and `reverse`, and `from_function` for a user's own t ↦ pytree.

**Structure for fast evaluation.** A path is a sequence of *pieces* (`AbstractPath.pieces`); on piece j
the path is γ(t) = Σ_k c_k(s) B_k with s ∈ [0, 1] the local coordinate (`AbstractPath.locate`) and a few
fixed pytrees B_k (`AbstractPath.combination`). A segment has two terms (1 − s, s), a Bézier curve of
degree d has d + 1 Bernstein terms, a polychain has K − 1 two-term pieces. `jaxland.evaluate_path` uses
this to precompute the first-layer products W1_k x once per path (see `jaxland.engine._evaluate`). A path
without this structure (`from_function`) has one piece and no combination; it is evaluated plainly.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree, Real

from .._eager import eager_call
from .._params import (
    check_joinable,
    first_difference,
    is_param,
    leaf_paths,
    num_stacked,
    param_dtype,
    stack_trees,
    tree_combination,
    tree_index,
    tree_lerp,
    tree_norm,
    tree_sub,
)


def check_t(t: Array) -> Array:
    """t unchanged, with a check staged by `eqx.error_if` that fires under jit/vmap when t is not in
    [0, 1] (NaN included)."""
    return eqx.error_if(t, ~((t >= 0) & (t <= 1)), "t must lie in [0, 1] (a path is defined on [0, 1])")


def check_scalar_t(t) -> Array:
    """The argument check of a path call: t a scalar, returned as a floating array (integers and bools
    as the default float); a concrete t outside [0, 1] (or not finite) raises ``ValueError`` naming t,
    a traced one is checked by `check_t` inside the computation."""
    t = jnp.asarray(t)
    if t.ndim != 0:
        raise ValueError(
            f"a path is called at a scalar t; got t of shape {t.shape} (use jax.vmap(path)(ts) "
            "or jaxland.evaluate_path for many t)"
        )
    if not jnp.issubdtype(t.dtype, jnp.floating):
        if jnp.issubdtype(t.dtype, jnp.complexfloating):
            raise ValueError(f"t must be a real number in [0, 1]; got dtype {t.dtype}")
        t = t.astype(jnp.result_type(float))
    if not isinstance(t, jax.core.Tracer):
        v = float(t)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"t must lie in [0, 1] (a path is defined on [0, 1]); got t = {v}")
    return t


def switch_paths(index: Array, paths, s: Array) -> PyTree:
    """paths[index](s) with `lax.switch`, for paths whose outputs hold non-array leaves (an
    activation function, a string): the branches return only their array leaves, and the other
    leaves (equal across the paths, which are joinable) are taken from the first branch's trace."""
    statics = []

    def branch(p):
        def run(s):
            dyn, static = eqx.partition(p(s), eqx.is_array)
            statics.append(static)
            return dyn

        return run

    dyn = jax.lax.switch(index, [branch(p) for p in paths], s)
    return eqx.combine(dyn, statics[0])


class AbstractPath(eqx.Module):
    """A continuous map γ: [0, 1] → parameter pytrees.

    Subclasses implement `__call__(t)` for a scalar t ∈ [0, 1] and return a pytree of the endpoints'
    type. `start` and `end` give γ(0) and γ(1). The paths of this module compute γ(t) in a module-level
    function run through `eager_call` (one compiled function per path layout for eager calls; inline
    under jit/vmap/grad) and check t: a concrete t outside [0, 1] raises ``ValueError``, a traced one
    raises at run time through `eqx.error_if`. A subclass can do the same (see `eager_call`).

    Optional structure (used by `jaxland.evaluate_path` for its fast paths; the defaults describe a path
    with no known structure):
    - `pieces()`: a tuple of J paths, each an affine reparametrisation of a part of this one;
    - `locate(t)`: (j, s), the piece index (int32) and the local coordinate s ∈ [0, 1] with
      γ(t) = pieces()[j](s);
    - `combination()`: for a single-piece path, ``(basis, coef_fn)`` with basis a stacked pytree (leading
      axis K) and coef_fn(s) of shape (K,) such that γ(s) = Σ_k coef_fn(s)_k basis_k; or None.
    - `objective_values(x, y, ts, *, kappa, loss)`: a batched evaluator of the data objective
      F(γ(t)) = mean L + κR (eq. 7) at the concrete points `ts`, for a path that knows a faster way
      than vmapping its own `__call__` (the Theorem 11 path groups the t by segment, where a vmapped
      `lax.switch` would evaluate every segment at every point). `jaxland.evaluate_path` uses it for an
      `Objective` when it returns an array; the default returns None, meaning "no batched evaluator".
    """

    @abc.abstractmethod
    def __call__(self, t: Real[ArrayLike, ""]) -> PyTree:
        raise NotImplementedError

    @property
    def start(self) -> PyTree:
        return self(jnp.asarray(0.0))

    @property
    def end(self) -> PyTree:
        return self(jnp.asarray(1.0))

    def pieces(self) -> tuple[AbstractPath, ...]:
        return (self,)

    def num_pieces(self) -> int:
        return 1

    def locate(self, t: Array) -> tuple[Array, Array]:
        t = jnp.asarray(t)
        return jnp.zeros(t.shape, jnp.int32), t

    def combination(self) -> tuple[PyTree, Callable[[Array], Array]] | None:
        return None

    def objective_values(self, x: Real[ArrayLike, "N n"], y: Real[ArrayLike, "N ..."], ts, *, kappa,
                         loss="mse") -> Array | None:
        """F(γ(t)) at every t in `ts`, shape (P,), or None when the path has no batched evaluator of
        its own (the default; see the class docstring)."""
        del x, y, ts, kappa, loss
        return None


class LinearCoefs(eqx.Module):
    """s ↦ (1 − s, s), the coefficients of a segment (hashable, so jit caches on it)."""

    def __call__(self, s):
        return jnp.stack([1 - s, s])


class BernsteinCoefs(eqx.Module):
    """s ↦ Bernstein basis of the given degree."""

    degree: int = eqx.field(static=True)

    def __call__(self, s):
        return _bernstein(s, self.degree)


class ReversedCoefs(eqx.Module):
    """s ↦ coefs(1 − s)."""

    coefs: Callable

    def __call__(self, s):
        return self.coefs(1 - s)


class Segment(AbstractPath):
    """γ(t) = (1 − t) a + t b, leaf by leaf (the straight segment)."""

    a: PyTree
    b: PyTree

    def __check_init__(self):
        check_joinable(self.a, self.b)

    def __call__(self, t: Real[ArrayLike, ""]) -> PyTree:
        return eager_call(_segment_point, self, check_scalar_t(t))

    def combination(self):
        return stack_trees([self.a, self.b], "endpoints"), LinearCoefs()


def _segment_point(path: Segment, t: Array) -> PyTree:
    return tree_lerp(path.a, path.b, check_t(t))


def linear(a: PyTree, b: PyTree) -> Segment:
    """The straight segment γ(t) = (1 − t) a + t b between two parameter pytrees of equal structure.

    **Arguments:** `a`, `b`: pytrees of equal structure and leaf shapes (e.g. two `SkipNet`s, two
    `eqx.nn.MLP`s, two flax nnx states); only their floating-point leaves move, every other leaf must
    be equal in a and b.

    **Returns:** a `Segment` path (the straight segment) with γ(0) = a and γ(1) = b exactly. Different
    structures, or a non-floating leaf that differs (an integer array, an activation), raise
    ``ValueError`` naming the leaf.
    """
    return Segment(a, b)


def segment_locate(breaks: Array, t: Array) -> tuple[Array, Array]:
    """Piece j with breaks[j] ≤ t < breaks[j+1] (the last piece also takes t = 1) and s ∈ [0, 1].

    At t = breaks[j] exactly, s = 0 on piece j; at t = 1, s = (1 − b)/(1 − b) = 1: endpoints are exact.
    """
    J = breaks.shape[0] - 1
    t = jnp.asarray(t)
    j = jnp.clip(jnp.searchsorted(breaks, t.astype(breaks.dtype), side="right") - 1, 0, J - 1)
    j = j.astype(jnp.int32)
    lo, hi = breaks[j], breaks[j + 1]
    s = (t.astype(breaks.dtype) - lo) / (hi - lo)
    return j, jnp.clip(s, 0, 1)


def _check_breaks(breaks: np.ndarray, J: int, name: str) -> None:
    if breaks.shape != (J + 1,):
        raise ValueError(f"{name} must have shape ({J + 1},); got {breaks.shape}")
    if not np.all(np.isfinite(breaks)):
        raise ValueError(f"{name} must be finite; got {breaks}")
    if breaks[0] != 0 or breaks[-1] != 1 or not np.all(np.diff(breaks) > 0):
        raise ValueError(f"{name} must increase strictly from 0 to 1; got {breaks}")


class Polychain(AbstractPath):
    """The polygonal chain through K nodes θ_0 … θ_{K−1}.

    With breaks 0 = b_0 < b_1 < … < b_{K−1} = 1, γ(t) = (1 − s) θ_j + s θ_{j+1} for t ∈ [b_j, b_{j+1}],
    s = (t − b_j)/(b_{j+1} − b_j). Uniform parametrisation: b_j = j/(K − 1); arc length:
    b_j ∝ Σ_{i<j} ‖θ_{i+1} − θ_i‖ (Euclidean over all leaves), so t is proportional to distance travelled.

    **Fields:** `nodes`, a stacked pytree (leading axis K on every leaf; the nodes are the path's leaves);
    `breaks`, shape (K,).
    """

    nodes: PyTree
    breaks: Float[Array, " K"]

    def __call__(self, t: Real[ArrayLike, ""]) -> PyTree:
        return eager_call(_polychain_point, self, check_scalar_t(t))

    @property
    def num_nodes(self) -> int:
        return self.breaks.shape[0]

    def node(self, i: int) -> PyTree:
        return tree_index(self.nodes, i)

    def locate(self, t):
        return segment_locate(self.breaks, t)

    def num_pieces(self) -> int:
        return self.num_nodes - 1

    def pieces(self):
        return tuple(Segment(self.node(i), self.node(i + 1)) for i in range(self.num_nodes - 1))


def _polychain_point(path: Polychain, t: Array) -> PyTree:
    j, s = path.locate(check_t(t))
    return tree_lerp(tree_index(path.nodes, j), tree_index(path.nodes, j + 1), s)


def polychain(nodes, parametrization: str = "uniform") -> Polychain:
    """The polygonal chain through K ≥ 2 nodes.

    **Arguments:**
    - `nodes`: a sequence of K pytrees of equal structure, or one stacked pytree whose leaves have a
      leading axis K.
    - `parametrization`: "uniform" (piece j covers t ∈ [j/(K−1), (j+1)/(K−1)]) or "arclength" (t
      proportional to the Euclidean length travelled; needs concrete nodes and no repeated consecutive
      node).

    **Returns:** a `Polychain`; γ(0) = θ_0, γ(1) = θ_{K−1} and γ(b_j) = θ_j exactly.
    """
    if isinstance(nodes, (list, tuple)) and not hasattr(nodes, "_fields"):
        stacked = stack_trees(nodes, "nodes")
    else:
        stacked = nodes
    K = num_stacked(stacked, "nodes")
    if K < 2:
        raise ValueError(f"a polychain needs at least 2 nodes; got K = {K}")
    dtype = param_dtype(stacked)
    if parametrization == "uniform":
        breaks = np.arange(K, dtype=np.float64) / (K - 1)
    elif parametrization == "arclength":
        lengths = np.asarray(eager_call(_node_distances, stacked), np.float64)
        if not np.all(np.isfinite(lengths)) or np.any(lengths <= 0):
            raise ValueError(
                "arclength parametrization needs distinct consecutive nodes with finite distances; "
                f"got segment lengths {lengths}"
            )
        cum = np.concatenate([[0.0], np.cumsum(lengths)])
        breaks = cum / cum[-1]
        breaks[-1] = 1.0
    else:
        near = str(parametrization).lower().replace("-", "").replace("_", "").replace(" ", "")
        hint = " (spelled as one word)" if near == "arclength" else ""
        raise ValueError(f"parametrization must be one of 'uniform', 'arclength'{hint}; got "
                         f"{parametrization!r}")
    return Polychain(stacked, jnp.asarray(breaks, dtype))


def _node_distances(stacked: PyTree) -> Array:
    """‖θ_{i+1} − θ_i‖ for consecutive nodes of a stacked pytree, shape (K − 1,)."""
    K = num_stacked(stacked, "nodes")
    return jnp.stack([tree_norm(tree_sub(tree_index(stacked, i + 1), tree_index(stacked, i)))
                      for i in range(K - 1)])


def _bernstein(s: Array, degree: int) -> Array:
    """Bernstein basis b_{k,d}(s) = C(d, k) s^k (1 − s)^{d−k}, k = 0 … d (integer powers: exact ends)."""
    return jnp.stack(
        [math.comb(degree, k) * s**k * (1 - s) ** (degree - k) for k in range(degree + 1)]
    )


class Bezier(AbstractPath):
    """The Bézier curve γ(t) = Σ_{k=0}^{d} C(d, k) t^k (1 − t)^{d−k} θ_k (Garipov et al. 2018).

    Degree d = K − 1 for K control points; d = 2 is the quadratic Bézier curve of mode connectivity,
    θ_0 and θ_d are the endpoints (reproduced exactly at t = 0, 1), the others are pulled towards.

    **Fields:** `control_points`, a stacked pytree (leading axis K).
    """

    control_points: PyTree

    @property
    def degree(self) -> int:
        return num_stacked(self.control_points, "control_points") - 1

    def __call__(self, t: Real[ArrayLike, ""]) -> PyTree:
        return eager_call(_bezier_point, self, check_scalar_t(t))

    def combination(self):
        return self.control_points, BernsteinCoefs(self.degree)


def _bezier_point(path: Bezier, t: Array) -> PyTree:
    return tree_combination(_bernstein(check_t(t), path.degree), path.control_points)


def bezier(control_points) -> Bezier:
    """A Bézier curve of degree K − 1 through its K ≥ 2 control points (endpoints first and last).

    **Arguments:** `control_points`: a sequence of K pytrees of equal structure, or a stacked pytree
    (leading axis K). K = 2 is the straight segment, K = 3 the quadratic curve of Garipov et al.

    **Returns:** a `Bezier` path.
    """
    if isinstance(control_points, (list, tuple)) and not hasattr(control_points, "_fields"):
        stacked = stack_trees(control_points, "control_points")
    else:
        stacked = control_points
    K = num_stacked(stacked, "control_points")
    if K < 2:
        raise ValueError(f"control_points must hold at least 2 points (a Bézier curve needs at least 2 "
                         f"control points); got {K}")
    return Bezier(stacked)


class Concat(AbstractPath):
    """Paths run one after another: path j on t ∈ [b_j, b_{j+1}], reparametrised affinely.

    **Fields:** `paths` (tuple of J paths), `breaks` (J + 1,) from 0 to 1.
    """

    paths: tuple[AbstractPath, ...]
    breaks: Float[Array, " J1"]

    def __call__(self, t: Real[ArrayLike, ""]) -> PyTree:
        return eager_call(_concat_point, self, check_scalar_t(t))

    def pieces(self):
        return tuple(q for p in self.paths for q in p.pieces())

    def num_pieces(self) -> int:
        return sum(p.num_pieces() for p in self.paths)

    def locate(self, t):
        j, s = segment_locate(self.breaks, t)
        offsets = np.cumsum([0] + [p.num_pieces() for p in self.paths])
        # Locate inside every sub-path and pick the one t falls in (J is small).
        subs = [p.locate(s) for p in self.paths]
        jj = jnp.zeros_like(j)
        ss = jnp.zeros_like(s)
        for i, (ji, si) in enumerate(subs):
            jj = jnp.where(j == i, ji + int(offsets[i]), jj)
            ss = jnp.where(j == i, si, ss)
        return jj.astype(jnp.int32), ss


def _concat_point(path: Concat, t: Array) -> PyTree:
    j, s = segment_locate(path.breaks, check_t(t))
    if len(path.paths) == 1:
        return path.paths[0](s)
    return switch_paths(j, path.paths, s)


def concat(*paths: AbstractPath, breaks=None, atol: float | None = None) -> Concat:
    """Concatenate paths: γ runs through paths[0], then paths[1], … .

    **Arguments:**
    - `paths`: J ≥ 1 paths whose outputs have the same structure; consecutive paths should meet
      (paths[j].end == paths[j+1].start).
    - `breaks`: the J − 1 interior break points 0 < b_1 < … < b_{J−1} < 1 (path j covers
      [b_j, b_{j+1}]); default uniform b_j = j/J.
    - `atol`: if given (and the paths are concrete), raise ``ValueError`` when consecutive paths are
      further apart than atol at their junction (Euclidean over all leaves).

    **Returns:** a `Concat` path.
    """
    if len(paths) == 1 and isinstance(paths[0], (list, tuple)):
        paths = tuple(paths[0])
    if len(paths) == 0:
        raise ValueError("paths must hold at least one path to concatenate; got none")
    for i, p in enumerate(paths):
        if not isinstance(p, AbstractPath):
            raise TypeError(f"paths[{i}] must be an AbstractPath; got {type(p).__name__}")
    J = len(paths)
    if breaks is None:
        b = np.arange(J + 1, dtype=np.float64) / J
    else:
        inner = np.asarray(breaks, dtype=np.float64).reshape(-1)
        if inner.shape != (J - 1,):
            raise ValueError(f"breaks must hold the {J - 1} interior break points; got shape "
                             f"{np.shape(breaks)}")
        b = np.concatenate([[0.0], inner, [1.0]])
    _check_breaks(b, J, "breaks (with 0 and 1 added)")
    ends = [p.end for p in paths]
    starts = [p.start for p in paths]
    for i in range(J - 1):
        check_joinable(ends[i], starts[i + 1], (f"paths[{i}].end", f"paths[{i + 1}].start"))
        if atol is not None:
            gap = float(eager_call(_gap, ends[i], starts[i + 1]))
            if not gap <= atol:
                raise ValueError(
                    f"paths[{i}] ends {gap:.3g} away from where paths[{i + 1}] starts (atol={atol})"
                )
    dtype = param_dtype(starts[0])
    return Concat(tuple(paths), jnp.asarray(b, dtype))


def _gap(a: PyTree, b: PyTree) -> Array:
    return tree_norm(tree_sub(a, b))


class Reverse(AbstractPath):
    """γ_rev(t) = γ(1 − t). **Field:** `path`."""

    path: AbstractPath

    def __call__(self, t: Real[ArrayLike, ""]) -> PyTree:
        return eager_call(_reverse_point, self, check_scalar_t(t))

    def pieces(self):
        return tuple(reverse(p) for p in reversed(self.path.pieces()))

    def num_pieces(self) -> int:
        return self.path.num_pieces()

    def locate(self, t):
        t = jnp.asarray(t)
        j, s = self.path.locate(1 - t)
        J = self.path.num_pieces()
        return (J - 1 - j).astype(jnp.int32), 1 - s

    def combination(self):
        c = self.path.combination()
        if c is None:
            return None
        basis, coef = c
        return basis, ReversedCoefs(coef)


def _reverse_point(path: Reverse, t: Array) -> PyTree:
    return path.path(1 - check_t(t))


def _reverse_stack(stacked):
    return jax.tree.map(lambda l: l[::-1] if is_param(l) else l, stacked)


def reverse(path: AbstractPath) -> AbstractPath:
    """The path run backwards, γ_rev(t) = γ(1 − t).

    A segment, Bézier curve or polychain is reversed exactly by reversing its nodes (so its endpoints
    stay exact); other paths are wrapped in `Reverse`.
    """
    if isinstance(path, Segment):
        return Segment(path.b, path.a)
    if isinstance(path, Bezier):
        return Bezier(_reverse_stack(path.control_points))
    if isinstance(path, Polychain):
        return Polychain(_reverse_stack(path.nodes), (1 - path.breaks[::-1]))
    if isinstance(path, Reverse):
        return path.path
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be an AbstractPath; got {type(path).__name__}")
    return Reverse(path)


class FunctionPath(AbstractPath):
    """A user's function t ↦ pytree as a path. **Field:** `fn` (a callable; may be an eqx.Module)."""

    fn: Callable

    def __call__(self, t: Real[ArrayLike, ""]) -> PyTree:
        return eager_call(_function_point, self, check_scalar_t(t))


def _function_point(path: FunctionPath, t: Array) -> PyTree:
    return path.fn(check_t(t))


def from_function(fn: Callable[[Array], PyTree], start_like: PyTree | None = None) -> FunctionPath:
    """Wrap a function t ↦ parameter pytree as a path.

    `fn` must be a pure, jittable function of a scalar t ∈ [0, 1] (so that `jax.vmap` applies). Arrays
    it closes over are baked into compiled code as constants; for large parameters prefer an
    `eqx.Module` with the arrays as fields and a `__call__(t)`, which `from_function` also accepts (its
    arrays then stay pytree leaves), or subclass `AbstractPath` directly.

    **Arguments:**
    - `fn`: the map t ↦ pytree.
    - `start_like`: optional pytree; if given, fn(0) must have its structure and leaf shapes
      (``ValueError`` otherwise).

    **Returns:** a `FunctionPath`, evaluated plainly by `jaxland.evaluate_path` (no structured fast path).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable; got {type(fn).__name__}")
    p = FunctionPath(fn)
    if start_like is not None:
        out = eqx.filter_eval_shape(p, jnp.asarray(0.0))
        if jax.tree.structure(out) != jax.tree.structure(start_like):
            raise ValueError(f"fn(0) and start_like have different tree structures, "
                             f"{first_difference(out, start_like)}")
        for path, u, v in zip(leaf_paths(start_like), jax.tree.leaves(out),
                              jax.tree.leaves(start_like), strict=True):
            if is_param(v) and tuple(u.shape) != jnp.shape(v):
                raise ValueError(f"fn(0) and start_like differ in the shape of leaf {path}: "
                                 f"{tuple(u.shape)} vs {jnp.shape(v)}")
    return p
