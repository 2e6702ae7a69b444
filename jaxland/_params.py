"""The parameter layer: how jaxland reads any model's parameters.

Every public function that takes parameters (paths, the engine, slices and directions, metrics,
searches, depth, Hessian, critical points, alignment) goes through this module, so that a user's model
works as it is: a jaxland `SkipNet`, an `eqx.nn.MLP` (whose activation is a leaf), a model holding
`eqx.nn.BatchNorm` (strings and state indices among its leaves), a flax nnx state from `nnx.split`, or a
dict of arrays.

The rule (equinox's `filter`/`partition`/`combine`): the **parameters** of a pytree are its
inexact-array leaves (floating or complex `jax.Array`s and NumPy arrays, `eqx.is_inexact_array`). Every
other leaf — functions, strings, ints, bools, integer arrays, static fields — is carried through
unchanged. Where two models are joined (a path between them, a stack of nodes) their non-parameter
leaves must be equal, otherwise `check_joinable` raises an error that names the leaf's path in the
tree. Each parameter leaf keeps its own dtype: a float32 leaf stays float32 under `jax_enable_x64`,
and raveled vectors are cast back leaf by leaf.

Names: `partition`, `combine`, `ravel` (with its inverse `Unravel`), `check_params`, `tree_scale`, `num_params`, `param_dtype`, `tree_dot`, `tree_norm`,
`tree_sub`, `tree_axpy`, `tree_lerp`, `tree_combination`, `stack_trees`, `tree_index`, `num_stacked`,
`check_same_structure`, `check_joinable`, `leaf_paths`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._eager import eager_call


def is_param(x) -> bool:
    """True for a parameter leaf: an inexact (floating or complex) array."""
    return eqx.is_inexact_array(x)


def partition(tree: PyTree) -> tuple[PyTree, PyTree]:
    """(params, rest): the inexact-array leaves, and every other leaf (None in the other half)."""
    return eqx.partition(tree, is_param)


def combine(params: PyTree, rest: PyTree) -> PyTree:
    """Inverse of `partition`."""
    return eqx.combine(params, rest)


def param_leaves(tree: PyTree) -> list:
    """The parameter leaves of a pytree, in tree order."""
    return [l for l in jax.tree.leaves(tree) if is_param(l)]


def leaf_paths(tree: PyTree) -> list[str]:
    """A readable path for every leaf (``.layers[0].weight``, ``['W1']``), in tree order."""
    return [jax.tree_util.keystr(p) or "<root>" for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def param_dtype(tree: PyTree, default=None):
    """The floating dtype the parameters promote to (a Python float's dtype when there are none)."""
    dts = [jnp.result_type(l) for l in param_leaves(tree)]
    dts = [d for d in dts if jnp.issubdtype(d, jnp.floating)]
    if dts:
        return jnp.result_type(*dts)
    return jnp.result_type(float) if default is None else default


def num_params(tree: PyTree) -> int:
    """Number of scalar parameters (sizes of the inexact-array leaves)."""
    return int(sum(math.prod(jnp.shape(l)) for l in param_leaves(tree)))


class Unravel(eqx.Module):
    """θ ↦ the full pytree: the inverse of `ravel` (a pytree itself, so it can be passed to
    `eqx.filter_jit` without recompiling for every call, unlike a closure).

    Splits the vector θ into the parameter leaves in tree order, casts each back to its own dtype,
    and restores every non-parameter leaf (`rest`).
    """

    rest: PyTree
    treedef: Any = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    dtypes: tuple[Any, ...] = eqx.field(static=True)

    @property
    def size(self) -> int:
        return int(sum(math.prod(s) for s in self.shapes))

    def __call__(self, v: Float[ArrayLike, " n"]) -> PyTree:
        v = jnp.asarray(v)
        if v.shape != (self.size,):
            raise ValueError(f"the parameter vector must have shape ({self.size},); got {v.shape}")
        return eager_call(_unravel, self, v)


def _unravel(u: Unravel, v: Array) -> PyTree:
    leaves, start = [], 0
    for shape, dtype in zip(u.shapes, u.dtypes, strict=True):
        n = math.prod(shape)
        leaves.append(v[start : start + n].reshape(shape).astype(dtype))
        start += n
    return combine(jax.tree.unflatten(u.treedef, leaves), u.rest)


def _concat_leaves(leaves: list, dtype) -> Array:
    return jnp.concatenate([jnp.ravel(jnp.asarray(l)).astype(dtype) for l in leaves])


def ravel(tree: PyTree) -> tuple[Array, Unravel]:
    """(θ, unravel): the parameters raveled into one vector θ of length `num_params(tree)` (in the
    promoted dtype of the parameter leaves), and the inverse map θ ↦ the full tree (an
    `Unravel`), each leaf cast back to its own dtype and every non-parameter leaf restored.

    The raveled vector of a tree with no parameter leaf has length 0 (in the default float dtype).
    """
    params, rest = partition(tree)
    leaves, treedef = jax.tree.flatten(params)
    dtype = jnp.result_type(*leaves) if leaves else param_dtype(tree)  # complex stays complex
    if leaves:
        flat = eager_call(_concat_leaves, [jnp.asarray(l) for l in leaves], jnp.dtype(dtype))
    else:
        flat = jnp.zeros((0,), dtype)
    unravel = Unravel(rest, treedef, tuple(tuple(jnp.shape(l)) for l in leaves),
                      tuple(jnp.result_type(l) for l in leaves))
    return flat, unravel


def check_params(tree: PyTree, name: str) -> PyTree:
    """Refuse a pytree with no parameter leaf or with NaN/inf in one (checked when concrete); return it
    with every parameter leaf as a `jax.Array` (other leaves unchanged)."""
    leaves = param_leaves(tree)
    if not leaves:
        raise ValueError(f"{name} has no floating-point array leaves (no parameters); got "
                         f"{type(tree).__name__}")
    for path, l in zip(leaf_paths(tree), jax.tree.leaves(tree), strict=True):
        if is_param(l) and not isinstance(l, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(l))):
            raise ValueError(f"{name} contains NaN or inf values (leaf {path})")
    return jax.tree.map(lambda l: jnp.asarray(l) if is_param(l) else l, tree)


def _binary(f, a: PyTree, b: PyTree) -> PyTree:
    """f(u, v) on corresponding parameter leaves; the other leaves from `a`."""
    return jax.tree.map(lambda u, v: f(u, v) if is_param(u) else u, a, b)


def tree_dot(a: PyTree, b: PyTree) -> Array:
    """⟨a, b⟩ = Σ over parameter leaves of Σ u·v (the parameter-space inner product)."""
    terms = [jnp.vdot(u, v) for u, v in zip(param_leaves(a), param_leaves(b), strict=True)]
    return sum(terms[1:], terms[0]) if terms else jnp.zeros(())


def tree_norm(tree: PyTree) -> Array:
    """Euclidean norm over all parameter leaves of a pytree (the parameter-space norm)."""
    leaves = param_leaves(tree)
    if not leaves:
        return jnp.zeros(())
    return jnp.sqrt(sum(jnp.sum(jnp.square(jnp.abs(l))) for l in leaves))


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    """a − b on the parameter leaves (other leaves from a)."""
    return _binary(lambda u, v: u - v, a, b)


def tree_axpy(alpha, x: PyTree, y: PyTree) -> PyTree:
    """α x + y on the parameter leaves, α cast to each leaf's dtype (other leaves from y)."""
    return jax.tree.map(
        lambda u, v: jnp.asarray(alpha).astype(jnp.result_type(v)) * u + v if is_param(v) else v, x, y
    )


def tree_scale(alpha, x: PyTree) -> PyTree:
    """α x on the parameter leaves, α cast to each leaf's dtype (other leaves carried through)."""
    return jax.tree.map(lambda u: jnp.asarray(alpha).astype(jnp.result_type(u)) * u if is_param(u) else u,
                        x)


def tree_lerp(a: PyTree, b: PyTree, t) -> PyTree:
    """(1 − t) a + t b on the parameter leaves, t cast to each leaf's dtype; other leaves from a.

    Written as (1 − t)·u + t·v (not u + t(v − u)) so that both endpoints are reproduced exactly."""

    def leaf(u, v):
        tt = jnp.asarray(t).astype(jnp.result_type(u))
        return (1 - tt) * u + tt * v

    return _binary(leaf, a, b)


def tree_combination(coefs: Array, stacked: PyTree) -> PyTree:
    """Σ_k coefs[k] · B_k for a stacked pytree (leading axis K on the parameter leaves), coefficients
    cast to each leaf's dtype; the other leaves are carried through.

    Written as an explicit sum of products (not a tensordot) so that a coefficient vector
    (1, 0, …, 0) reproduces B_0 bit for bit.
    """

    def leaf(b):
        if not is_param(b):
            return b
        c = coefs.astype(b.dtype)
        out = c[0] * b[0]
        for k in range(1, b.shape[0]):
            out = out + c[k] * b[k]
        return out

    return jax.tree.map(leaf, stacked)


def check_same_structure(a: PyTree, b: PyTree, names=("a", "b")) -> None:
    """Raise ``ValueError`` unless a and b have the same tree structure and parameter-leaf shapes."""
    ta, tb = jax.tree.structure(a), jax.tree.structure(b)
    if ta != tb:
        raise ValueError(f"{names[0]} and {names[1]} have different tree structures: {ta} vs {tb}")
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    for path, u, v in zip(leaf_paths(a), la, lb, strict=True):
        if is_param(u) != is_param(v):
            raise ValueError(
                f"leaf {path} is a floating-point array in {names[0] if is_param(u) else names[1]} "
                f"but not in {names[1] if is_param(u) else names[0]}"
            )
        if is_param(u) and jnp.shape(u) != jnp.shape(v):
            raise ValueError(
                f"{names[0]} and {names[1]} differ in the shape of leaf {path}: "
                f"{jnp.shape(u)} vs {jnp.shape(v)}"
            )


def _equal_leaves(u, v) -> bool:
    if isinstance(u, jax.core.Tracer) or isinstance(v, jax.core.Tracer):
        return True  # cannot be compared while tracing; checked where the values are concrete
    if isinstance(u, (jax.Array, np.ndarray)) or isinstance(v, (jax.Array, np.ndarray)):
        ua, va = np.asarray(u), np.asarray(v)
        return ua.shape == va.shape and ua.dtype == va.dtype and bool(np.array_equal(ua, va))
    try:
        return bool(u == v) or u is v
    except Exception:  # an object without a boolean equality
        return u is v


def check_joinable(a: PyTree, b: PyTree, names=("a", "b")) -> None:
    """`check_same_structure`, and every non-parameter leaf equal in a and b.

    Paths, stacks and searches move only the parameters (the inexact-array leaves); the rest
    (activations, strings, integer arrays, static fields) must agree at both ends. A leaf that differs
    raises ``ValueError`` naming its path in the tree (an integer array that differs, for instance,
    cannot be interpolated).
    """
    check_same_structure(a, b, names)
    for path, u, v in zip(leaf_paths(a), jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if not is_param(u) and not _equal_leaves(u, v):
            kind = type(u).__name__
            raise ValueError(
                f"{names[0]} and {names[1]} differ in the non-floating leaf {path} ({kind}): only "
                f"floating-point array leaves can be joined by a path; other leaves must be equal "
                f"(got {_short(u)} vs {_short(v)})"
            )
    # the static parts of equinox modules (eqx.field(static=True)) live in the tree structure, which
    # check_same_structure already compared


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def stack_trees(trees: Sequence[PyTree], name: str = "nodes") -> PyTree:
    """Stack K pytrees of equal structure: every parameter leaf gets a new leading axis K; every other
    leaf must be equal across the trees (`check_joinable`) and is kept once."""
    trees = list(trees)
    if len(trees) == 0:
        raise ValueError(f"{name} must hold at least one pytree; got an empty sequence")
    for i in range(1, len(trees)):
        check_joinable(trees[0], trees[i], (f"{name}[0]", f"{name}[{i}]"))
    params = [partition(t)[0] for t in trees]
    return combine(eager_call(_stack, params), partition(trees[0])[1])


def _stack(params: list) -> PyTree:
    return jax.tree.map(lambda *ls: jnp.stack([jnp.asarray(l) for l in ls]), *params)


def tree_index(stacked: PyTree, i) -> PyTree:
    """The i-th pytree of a stacked pytree (the leading axis of each parameter leaf indexed by i; i may
    be traced); other leaves are carried through."""
    return jax.tree.map(lambda l: l[i] if is_param(l) else l, stacked)


def num_stacked(stacked: PyTree, name: str) -> int:
    """The common leading size K of a stacked pytree's parameter leaves (``ValueError`` otherwise)."""
    leaves = param_leaves(stacked)
    if not leaves:
        raise ValueError(f"{name} has no floating-point array leaves")
    sizes = {jnp.shape(l)[0] if jnp.ndim(l) > 0 else None for l in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"{name} given as one stacked pytree must have the same leading axis K on every "
            f"floating-point leaf; got leading sizes {sorted(str(s) for s in sizes)}"
        )
    return sizes.pop()
