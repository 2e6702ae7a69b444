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

**Running statistics are not parameters.** A floating-point leaf inside one of these collections is
a *statistic*: a flax linen variables dict's `"batch_stats"` (a mapping holding both `"params"` and
`"batch_stats"`), the `state` of a haiku `(params, state)` pair (a 2-tuple of haiku's two-level
`{module: {name: array}}` mappings, recognised when haiku is imported), a flax nnx `nnx.BatchStat`
variable, and an `eqx.nn.State`. Statistics are left out of everything that is optimised,
differentiated or perturbed (`partition`, `ravel`, `num_params`, `tree_dot`, `tree_norm`,
`tree_sub`, `tree_axpy`, `tree_scale`: directions, Hessians, searches), where they are carried
unchanged (a direction, `tree_sub`, holds zero statistics: `zero_stats`); they may differ between
two joined models and are interpolated with the parameters along a path (`tree_lerp`,
`tree_combination`, `stack_trees`, `tree_index`), so that a path from a to b carries a's statistics
at a and b's at b. `stat_flags` says which leaves are statistics; `partition_floating` splits off
every floating leaf (parameters and statistics: what a stack of path points varies in).

Names: `partition`, `partition_floating`, `stat_flags`, `lerp_stats`, `zero_stats`, `combine`,
`ravel` (with its inverse `Unravel`), `check_params`, `tree_scale`, `num_params`, `param_dtype`,
`tree_dot`, `tree_norm`, `tree_sub`, `tree_axpy`, `tree_lerp`, `tree_combination`, `stack_trees`,
`tree_index`, `num_stacked`, `check_same_structure`, `first_difference`, `check_joinable`,
`leaf_paths`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._eager import eager_call


def is_param(x) -> bool:
    """True for a floating leaf: an inexact (floating or complex) array. It is a parameter unless it
    lies in a collection of running statistics (`stat_flags`)."""
    return eqx.is_inexact_array(x)


# --- running statistics ---------------------------------------------------------------------------


def is_linen_variables(x) -> bool:
    return isinstance(x, Mapping) and "params" in x and "batch_stats" in x


def _is_haiku_mapping(m) -> bool:
    """haiku's two-level layout {module name: {variable name: array}} (None allowed for an
    array)."""
    if not isinstance(m, Mapping):
        return False
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, Mapping):
            return False
        for kk, vv in v.items():
            if not isinstance(kk, str) or isinstance(vv, Mapping):
                return False
    return True


def is_haiku_pair(x) -> bool:
    """A haiku `(params, state)` pair (from `hk.transform_with_state`'s `init`)."""
    return (type(x) is tuple and len(x) == 2 and "haiku" in sys.modules
            and _is_haiku_mapping(x[0]) and _is_haiku_mapping(x[1]) and len(x[1]) > 0)


def _is_all_stats(x) -> bool:
    if isinstance(x, eqx.nn.State):
        return True
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(x, nnx.BatchStat)


def _is_container(x) -> bool:
    return _is_all_stats(x) or is_linen_variables(x) or is_haiku_pair(x)


def _one_level(x) -> list:
    """(key, child) for the children of a mapping or tuple, in flattening order."""
    child = lambda y: y is not x and y is not None  # noqa: E731
    flat = jax.tree_util.tree_flatten_with_path(x, is_leaf=child)[0]
    return [(path[0], child) for path, child in flat]


def _container_flags(x) -> list[bool]:
    if _is_all_stats(x):
        return [True] * len(jax.tree.leaves(x))
    flags: list[bool] = []
    for key, child in _one_level(x):
        if is_haiku_pair(x):
            stats = getattr(key, "idx", None) == 1
        else:
            stats = getattr(key, "key", None) == "batch_stats"
        flags += [True] * len(jax.tree.leaves(child)) if stats else _stat_flags(child)
    return flags


def _stat_flags(tree: PyTree) -> list[bool]:
    flags: list[bool] = []
    for item in jax.tree.leaves(tree, is_leaf=_is_container):
        if _is_container(item):
            flags += _container_flags(item)
        else:
            flags.append(False)
    return flags


def stat_flags(tree: PyTree) -> list[bool] | None:
    """For every leaf of `tree` (in `jax.tree.leaves` order), whether it lies in a collection of
    running statistics (see the module docstring); None when the tree holds no such collection
    (every floating leaf is a parameter)."""
    if not any(_is_container(i) for i in jax.tree.leaves(tree, is_leaf=_is_container)):
        return None
    return _stat_flags(tree)


def _param_flags(tree: PyTree, leaves: list) -> list[bool]:
    flags = stat_flags(tree)
    if flags is None:
        return [is_param(l) for l in leaves]
    return [is_param(l) and not f for l, f in zip(leaves, flags, strict=True)]


def _split(tree: PyTree, keep: list[bool]) -> tuple[PyTree, PyTree]:
    leaves, treedef = jax.tree.flatten(tree)
    pairs = list(zip(leaves, keep, strict=True))
    return (jax.tree.unflatten(treedef, [l if k else None for l, k in pairs]),
            jax.tree.unflatten(treedef, [None if k else l for l, k in pairs]))


def partition(tree: PyTree) -> tuple[PyTree, PyTree]:
    """(params, rest): the parameter leaves (inexact arrays that are not running statistics), and
    every other leaf, statistics included (None in the other half)."""
    if stat_flags(tree) is None:
        return eqx.partition(tree, is_param)
    return _split(tree, _param_flags(tree, jax.tree.leaves(tree)))


def partition_floating(tree: PyTree) -> tuple[PyTree, PyTree]:
    """(floating, rest): every inexact-array leaf, parameters and running statistics alike (what the
    points of a path vary in), and every other leaf."""
    return eqx.partition(tree, is_param)


def combine(params: PyTree, rest: PyTree) -> PyTree:
    """Inverse of `partition` (and of `partition_floating`)."""
    return eqx.combine(params, rest)


def param_leaves(tree: PyTree) -> list:
    """The parameter leaves of a pytree (running statistics left out), in tree order."""
    leaves = jax.tree.leaves(tree)
    return [l for l, p in zip(leaves, _param_flags(tree, leaves), strict=True) if p]


def _map_leaves(f, tree: PyTree, others: tuple, *, stats: bool) -> PyTree:
    """f(leaf, *other leaves) on the parameter leaves of `tree` (with `stats`, on every floating
    leaf); the other leaves of `tree` unchanged. `others` have tree's structure."""
    leaves, treedef = jax.tree.flatten(tree)
    other_leaves = [treedef.flatten_up_to(o) for o in others]
    sel = [is_param(l) for l in leaves] if stats else _param_flags(tree, leaves)
    out = [f(l, *(o[i] for o in other_leaves)) if sel[i] else l for i, l in enumerate(leaves)]
    return jax.tree.unflatten(treedef, out)


def lerp_stats(tree: PyTree, a: PyTree, b: PyTree, t) -> PyTree:
    """`tree` with its running statistics set to (1 − t)·a + t·b (a, b: trees of tree's structure);
    `tree` itself when it holds none. How a search carries the statistics of its endpoints."""
    flags = stat_flags(tree)
    if flags is None or not any(flags):
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    la, lb = treedef.flatten_up_to(a), treedef.flatten_up_to(b)
    out = []
    for l, u, v, f in zip(leaves, la, lb, flags, strict=True):
        if f and is_param(l):
            tt = jnp.asarray(t).astype(jnp.result_type(u))
            l = (1 - tt) * u + tt * v
        out.append(l)
    return jax.tree.unflatten(treedef, out)


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
    """f(u, v) on corresponding parameter leaves; the other leaves (statistics included) from
    `a`."""
    return _map_leaves(f, a, (b,), stats=False)


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


def zero_stats(tree: PyTree) -> PyTree:
    """`tree` with its running statistics set to zero: how a *direction* carries them, so that a
    point o + Σ α_i d_i (`tree_axpy`, or `tree_combination` of the stack (o, d_1, …)) holds o's
    statistics unchanged."""
    flags = stat_flags(tree)
    if flags is None or not any(flags):
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, [jnp.zeros_like(l) if f and is_param(l) else l
                                        for l, f in zip(leaves, flags, strict=True)])


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    """a − b on the parameter leaves; running statistics zero (a difference of two points is a
    direction, which does not move the statistics: `zero_stats`); other leaves from a."""
    return zero_stats(_binary(lambda u, v: u - v, a, b))


def tree_axpy(alpha, x: PyTree, y: PyTree) -> PyTree:
    """α x + y on the parameter leaves, α cast to each leaf's dtype (other leaves, statistics
    included, from y)."""
    return _map_leaves(lambda v, u: jnp.asarray(alpha).astype(jnp.result_type(v)) * u + v, y, (x,),
                       stats=False)


def tree_scale(alpha, x: PyTree) -> PyTree:
    """α x on the parameter leaves, α cast to each leaf's dtype (other leaves, statistics included,
    carried through)."""
    return _map_leaves(lambda u: jnp.asarray(alpha).astype(jnp.result_type(u)) * u, x, (),
                       stats=False)


def tree_lerp(a: PyTree, b: PyTree, t) -> PyTree:
    """(1 − t) a + t b on every floating leaf (parameters and running statistics), t cast to each
    leaf's dtype; other leaves from a.

    Written as (1 − t)·u + t·v (not u + t(v − u)) so that both endpoints are reproduced exactly."""

    def leaf(u, v):
        tt = jnp.asarray(t).astype(jnp.result_type(u))
        return (1 - tt) * u + tt * v

    return jax.tree.map(lambda u, v: leaf(u, v) if is_param(u) else u, a, b)


def tree_combination(coefs: Array, stacked: PyTree) -> PyTree:
    """Σ_k coefs[k] · B_k for a stacked pytree (leading axis K on the floating leaves: parameters
    and running statistics), coefficients cast to each leaf's dtype; the other leaves are carried
    through.

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


def _shape_of(x) -> str:
    if x is None:
        return "no leaf"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"shape {tuple(jnp.shape(x))} ({jnp.result_type(x)})"
    return type(x).__name__


def first_difference(a: PyTree, b: PyTree) -> str:
    """A short description of where two trees of different structure first differ: the first leaf
    path present in only one of them or holding arrays of different shapes, else the first
    differing node of the tree definitions."""
    fa = jax.tree_util.tree_flatten_with_path(a)[0]
    fb = jax.tree_util.tree_flatten_with_path(b)[0]
    for i in range(max(len(fa), len(fb))):
        pa = jax.tree_util.keystr(fa[i][0]) if i < len(fa) else None
        pb = jax.tree_util.keystr(fb[i][0]) if i < len(fb) else None
        if pa != pb:
            where = pa if pa is not None else pb
            u = fa[i][1] if pa is not None else None
            other = {jax.tree_util.keystr(k): v for k, v in fb} if pa is not None else {}
            v = other.get(where)
            return f"first at leaf {where or '<root>'}: {_shape_of(u)} vs {_shape_of(v)}"
        u, v = fa[i][1], fb[i][1]
        if getattr(u, "shape", None) != getattr(v, "shape", None):
            return f"first at leaf {pa or '<root>'}: {_shape_of(u)} vs {_shape_of(v)}"
    sa, sb = str(jax.tree.structure(a)), str(jax.tree.structure(b))
    j = next((k for k, (x, y) in enumerate(zip(sa, sb)) if x != y), min(len(sa), len(sb)))
    lo = max(0, j - 40)
    return (f"same leaves, but a static field or node type differs: …{sa[lo:j + 40]}… vs "
            f"…{sb[lo:j + 40]}…")


def check_same_structure(a: PyTree, b: PyTree, names=("a", "b")) -> None:
    """Raise ``ValueError`` unless a and b have the same tree structure and floating-leaf shapes;
    the message names the first leaf that differs, with both shapes."""
    ta, tb = jax.tree.structure(a), jax.tree.structure(b)
    if ta != tb:
        raise ValueError(f"{names[0]} and {names[1]} have different tree structures, "
                         f"{first_difference(a, b)}")
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
    """`check_same_structure`, every floating leaf of one dtype in a and b, and every non-floating
    leaf equal in a and b.

    Paths, stacks and searches move only the floating leaves (parameters, and running statistics,
    which may differ); the rest (activations, strings, integer arrays, static fields) must agree at
    both ends, except the integer leaves of a statistics collection (haiku's EMA counters, equinox's
    BatchNorm counters), which may differ and are carried from a. A leaf that differs raises
    ``ValueError`` naming its path in the tree (an integer array that differs, for instance, cannot
    be interpolated); so does a floating leaf whose dtype differs (a float16 model joined with a
    float32 one would be silently promoted or rounded).
    """
    check_same_structure(a, b, names)
    flags = stat_flags(a) or [False] * len(jax.tree.leaves(a))
    for path, u, v, stat in zip(leaf_paths(a), jax.tree.leaves(a), jax.tree.leaves(b), flags,
                                strict=True):
        if stat and not is_param(u):
            continue  # a statistics counter (haiku's EMA counter, …): a path carries a's
        if is_param(u) and jnp.result_type(u) != jnp.result_type(v):
            raise ValueError(
                f"{names[0]} and {names[1]} differ in the dtype of leaf {path}: "
                f"{jnp.result_type(u)} vs {jnp.result_type(v)}; a path between them would mix "
                f"precisions: cast one model to the other's dtype first (e.g. "
                f"jax.tree.map(lambda l: l.astype(jnp.float32) if eqx.is_inexact_array(l) "
                f"else l, model))"
            )
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
    """Stack K pytrees of equal structure: every floating leaf (parameters and running statistics)
    gets a new leading axis K; every other leaf must be equal across the trees (`check_joinable`)
    and is kept once."""
    trees = list(trees)
    if len(trees) == 0:
        raise ValueError(f"{name} must hold at least one pytree; got an empty sequence")
    for i in range(1, len(trees)):
        check_joinable(trees[0], trees[i], (f"{name}[0]", f"{name}[{i}]"))
    floating = [partition_floating(t)[0] for t in trees]  # parameters and statistics
    return combine(eager_call(_stack, floating), partition_floating(trees[0])[1])


def _stack(params: list) -> PyTree:
    return jax.tree.map(lambda *ls: jnp.stack([jnp.asarray(l) for l in ls]), *params)


def tree_index(stacked: PyTree, i) -> PyTree:
    """The i-th pytree of a stacked pytree (the leading axis of each floating leaf indexed by i; i
    may be traced); other leaves are carried through."""
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
