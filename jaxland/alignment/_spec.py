"""Permutation specs: which (leaf, axis) pairs each hidden-unit permutation group acts on.

A *permutation group* is a set of hidden units whose order does not matter to the network: permuting
them along every (leaf, axis) pair of the group, all with the same permutation, leaves the computed
function unchanged. `permutation_spec(net)` builds the groups of the paper's networks and of
`eqx.nn.MLP`; `permutation_spec(net, example_input=x, apply=…)` finds the groups of any other model
by tracing it (`jaxland.alignment._trace`: a residual stream is one group shared by every block it
crosses, each block's inner units get their own, normalisation parameters and running statistics
follow their channels; equinox, flax nnx, flax linen and haiku through `apply`);
`permutation_spec(net, groups)` checks a user's declaration (an equinox module, a dict of arrays, a
flax nnx module or its `nnx.split` state).

**Leaves are named by key path**, the canonical, serialisable form: the path of `jax.tree_util`'s
`tree_flatten_with_path` written with dots and brackets, e.g. ``"W1"``, ``"theta[0]"``,
``"layers[1].weight"``, ``"l1.kernel"``. The exact `jax.tree_util.keystr` form (``".W1"``,
``"['l1']['kernel'].value"``) is accepted too, as is a trailing ``.value`` of a flax nnx `Variable`
left out. A callable ``where(net) -> leaf`` (as in `eqx.tree_at`, e.g. ``lambda m:
m.layers[0].weight``) is resolved to its key path when the spec is built, so a stored spec never
holds a function of the model.

**SkipNet's symmetries** (f = W2[σ(W1 x) + V1 g(θ, V2 σ(W1 x))], eq. 3; g a bias-free ReLU net θ_k
σ(…σ(θ_1 z))):

- ``"hidden"`` (m): rows of W1 and V1, columns of W2 and V2. σ(P W1 x) = P σ(W1 x), and W2 Pᵀ, V2
  Pᵀ, P V1 undo it.
- ``"g_in"`` (d_g): rows of V2 and columns of θ_1. z = V2 h enters g only through θ_1 z = (θ_1 Qᵀ)(Q
  V2 h); no nonlinearity acts on z, so any permutation Q is a symmetry.
- ``"g_hidden_j"`` (h_{j+1}, j = 0 … k−2): rows of θ_{j+1} and columns of θ_{j+2} (ReLU commutes
  with permutations).
- ``"g_out"`` (d_o): rows of θ_k and columns of V1; V1 g = (V1 Qᵀ)(Q g).

The regulariser R of Theorem 11 (eq. 13) is invariant under all four kinds (its terms are sums over
hidden units of per-unit norms, ‖W2 V1‖₁ and Frobenius norms of θ), so the objective F is preserved
too, not only f. `NoSkipNet` has the same groups. (Its function alone has one more symmetry: f uses
W2 and V1 only through the product W2 V1, so their shared m index could be permuted independently of
W1's rows; but R couples the columns of W2 to the rows of W1, so that permutation changes F, and it
is left out.) `TwoLayer`: ``"hidden"`` (rows of W1, columns of W2). `eqx.nn.MLP`: one group
``"layers[i]"`` per hidden layer (rows of layer i's weight and bias, columns of layer i+1's weight).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey
from jaxtyping import Array, Float, PyTree

from .._params import is_param, leaf_paths
from ..model import NoSkipNet, SkipNet, TwoLayer

__all__ = ["PermGroup", "PermutationSpec", "permutation_spec"]


# --- reading a network's leaves (the parameter layer, jaxland._params, plus names and nnx) ---


def _nnx():
    """flax.nnx if the user has imported it (never imported here: flax is optional)."""
    return sys.modules.get("flax.nnx")


def split_net(net) -> tuple[PyTree, Callable[[PyTree], Any]]:
    """The pytree of `net` and a function that rebuilds a network of the same kind from it.

    A flax nnx module is split into its state (`nnx.split`); anything else is its own pytree.
    """
    nnx = _nnx()
    if nnx is not None and isinstance(net, nnx.Module):
        graphdef, state = nnx.split(net)
        return state, lambda st: nnx.merge(graphdef, st)
    return net, lambda t: t


def _entry(k) -> str:
    """One step of a key path in dotted form: `.name`, `[i]`, and `.key` for a dict's str key."""
    if isinstance(k, GetAttrKey):
        return "." + k.name
    if isinstance(k, DictKey):
        return "." + k.key if isinstance(k.key, str) else f"[{k.key!r}]"
    if isinstance(k, SequenceKey):
        return f"[{k.idx}]"
    if isinstance(k, FlattenedIndexKey):
        return f"[{k.key}]"
    return str(k)


class Leaves(NamedTuple):
    """A flattened pytree: its leaves, their canonical names, and the name/alias → index table."""

    leaves: list
    names: list[str]
    index: dict[str, int | None]  # None marks an alias shared by two leaves
    treedef: Any


def flatten(tree: PyTree) -> Leaves:
    """The leaves of `tree` with their names: the canonical dotted key path (``"W1"``,
    ``"theta[0]"``, ``"layers[1].weight"``, ``"l1.kernel"`` for an nnx state), and as aliases the
    `jax.tree_util.keystr` form of `jaxland._params.leaf_paths` (``".W1"``,
    ``"['l1']['kernel'].value"``) and, for an nnx `Variable`, the dotted form with ``.value``."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves, names, index = [], [], {}
    for i, ((path, leaf), keystr) in enumerate(zip(flat, leaf_paths(tree), strict=True)):
        dotted = "".join(_entry(k) for k in path).lstrip(".")
        canon = dotted
        if path and isinstance(path[-1], GetAttrKey) and path[-1].name == "value":
            canon = dotted[: -len(".value")]  # an nnx Variable's value: named by the Variable
        leaves.append(leaf)
        names.append(canon)
        for n in dict.fromkeys((canon, dotted, keystr)):
            index[n] = None if n in index and index[n] != i else i
    return Leaves(leaves, names, index, treedef)


def take(leaf, perm, axis: int):
    """leaf with its entries along `axis` reordered: new[..., i, ...] = old[..., perm[i], ...]."""
    if isinstance(leaf, np.ndarray):
        return np.take(leaf, perm, axis=axis)
    return jnp.take(leaf, jnp.asarray(perm), axis=axis)


def take_axes(leaf, axes: Sequence[tuple[Any, int]]):
    """leaf reordered along several axes, given as (perm, axis) pairs.

    A concrete JAX array is reordered on the host and put back where it was (same sharding): an
    exact gather that compiles nothing, where `jnp.take` would compile a kernel for every new shape.
    Tracers (inside jit) use `jnp.take`.
    """
    if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
        host = np.asarray(leaf)
        for perm, ax in axes:
            host = np.take(host, perm, axis=ax)
        return jax.device_put(host, leaf.sharding)
    for perm, ax in axes:
        leaf = take(leaf, perm, ax)
    return leaf


class _Marker:
    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i


def _resolve_callable(where: Callable, flat: Leaves, group: str) -> int:
    marks = [_Marker(i) for i in range(len(flat.leaves))]
    markers = jax.tree_util.tree_unflatten(flat.treedef, marks)
    try:
        out = where(markers)
    except Exception as e:  # noqa: BLE001 - any failure means `where` does not just select a leaf
        raise ValueError(f"spec group {group!r}: the callable {where!r} must select one leaf "
                         f"of the network, like eqx.tree_at's `where` (e.g. lambda m: "
                         f"m.layers[0].weight); calling it raised {type(e).__name__}: "
                         f"{e}") from None
    found = jax.tree_util.tree_leaves(out)
    if len(found) != 1 or not isinstance(found[0], _Marker):
        raise ValueError(f"spec group {group!r}: the callable {where!r} must select exactly one "
                         f"leaf of the network (like eqx.tree_at's `where`); it returned "
                         f"{type(out).__name__}")
    return found[0].i


def _resolve(ref, flat: Leaves, group: str) -> int:
    if callable(ref):
        return _resolve_callable(ref, flat, group)
    if not isinstance(ref, str):
        raise TypeError(f"spec group {group!r}: a leaf must be named by a key-path string (e.g. "
                        f"'layers[0].weight') or a callable net -> leaf; got {type(ref).__name__}")
    s = ref.strip()
    i = flat.index.get(s, flat.index.get(s.lstrip("."), -1))
    if i is None:
        raise ValueError(f"spec group {group!r}: the path {ref!r} names more than one leaf; "
                         f"use the full key path (jax.tree_util.keystr)")
    if i == -1:
        avail = [n for n, leaf in zip(flat.names, flat.leaves, strict=True) if is_param(leaf)]
        more = f", … ({len(avail)} in all)" if len(avail) > 24 else ""
        raise ValueError(f"spec group {group!r}: no leaf at path {ref!r}; the array leaves are "
                         f"{', '.join(repr(a) for a in avail[:24])}{more}")
    return i


# --- specs ----------------------------------------------------------------------------------------


class PermGroup(NamedTuple):
    """One permutation group: `size` units, permuted along `axes`, a tuple of (leaf key path,
    axis)."""

    name: str
    size: int
    axes: tuple[tuple[str, int], ...]


class PermutationSpec(eqx.Module):
    """The permutation symmetries of a network: groups of (leaf, axis) pairs permuted together.

    **Fields:**
    - `groups`: tuple of `PermGroup(name, size, axes)`; `axes` pairs a leaf's canonical key path
      with the axis the group permutes. Every (leaf, axis) pair belongs to at most one group.
    - `activations`: None, or a function ``(net, x) -> {group name: (N, size) array}`` giving the
      value of each group's units on inputs x (for `align(method="activations")`).
    - `apply`: None, or the function ``(net, x) -> outputs`` the groups were found from (or checked
      with): `apply_perms` and `align` compare it before and after permuting.
    - `probe`: None, or the inputs x (a batch) of that check.

    Build it with `permutation_spec`; `spec["hidden"]` is a group, `spec.names` the group names.
    """

    groups: tuple[PermGroup, ...] = eqx.field(static=True)
    activations: Callable | None = eqx.field(static=True, default=None)
    apply: Callable | None = eqx.field(static=True, default=None)
    probe: Any = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def __getitem__(self, name: str) -> PermGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no group {name!r}; the groups are {list(self.names)}")

    def as_dict(self) -> dict[str, list[tuple[str, int]]]:
        """The declaration {group: [(key path, axis), …]} that `permutation_spec` accepts back."""
        return {g.name: list(g.axes) for g in self.groups}


def permutation_spec(
    net: PyTree,
    groups: Mapping[str, Sequence[tuple[str | Callable, int]]] | None = None,
    *,
    activations: Callable | None = None,
    example_input: Any = None,
    apply: Callable | None = None,
    strict: bool = True,
) -> PermutationSpec:
    """The permutation groups of `net`, built automatically or checked from a declaration.

    **Arguments:**
    - `net`: the network: `jaxland.SkipNet`, `NoSkipNet`, `TwoLayer`, `eqx.nn.MLP` (automatic
      groups, see the module docstring), or any pytree (equinox module, dict, flax nnx module or nnx
      state) with `groups`.
    - `groups`: None for the automatic groups, or a mapping group name → sequence of (leaf, axis)
      pairs; a leaf is a key-path string (``"layers[0].weight"``; for flax nnx the state's path,
      e.g. ``"linear1.kernel"``) or a callable ``net -> leaf`` as in `eqx.tree_at`. For an nnx
      module the paths and callables refer to its `nnx.split` state.
    - `activations`: for `align(method="activations")` with declared groups: ``(net, x) ->
      {group: (N, size) array}``, the units' values on a batch (post-activation for hidden layers).
    - `example_input`: a batch of inputs x. With `groups` None and a model that has no built-in
      spec, the groups are **found by tracing** ``apply(net, example_input)`` (see
      `jaxland.alignment._trace`: units joined by an addition — a residual stream — share one group,
      each block's inner units get their own, normalisation parameters and running statistics follow
      their channels). With any spec it is the probe batch on which `apply_perms` and `align` check
      that a permutation leaves the outputs unchanged.
    - `apply`: ``(net, x) -> outputs`` for a batch x, `net` of the kind passed here. Default: for a
      flax nnx module ``net(x)``; for the paper's networks ``net(x)``; for any other equinox module
      (called on one sample, as equinox does) ``jax.vmap(net)(x)``. For flax linen pass e.g.
      ``lambda v, x: model.apply(v, x)`` with `net` the variables dict (``{"params", "batch_stats"}``;
      running statistics are permuted with their channels); for haiku ``lambda p, x: f.apply(p, None,
      x)``, or with state ``net = (params, state)`` and ``lambda ps, x: f.apply(*ps, None, x)[0]``;
      for an equinox model with `eqx.nn.BatchNorm`, ``net = (model, state)`` in inference mode and
      ``lambda ms, x: jax.vmap(lambda s: ms[0](s, ms[1])[0], axis_name="batch")(x)``.
    - `strict`: when tracing, a class of units that reaches an op the tracing cannot decide (a
      reshape that merges the units with other axes, a gather, a scan) raises an error (True) or is
      left unpermuted (False).

    **Returns:** a `PermutationSpec`.

    **Raises:** ``ValueError`` naming the group and the leaf when a path is unknown, an axis is out
    of range, a (leaf, axis) pair is repeated, or the sizes within a group disagree ("group 'h':
    leaf 'V1' has 7 entries on axis 0 but leaf 'W1' has 8 on axis 0"); ``TypeError`` for a leaf
    reference of the wrong type; ``ValueError`` when `groups` is None and `net` has no automatic
    spec.
    """
    tree, _ = split_net(net)
    if apply is not None and not callable(apply):
        raise TypeError(f"apply must be a callable (net, x) -> outputs; got {type(apply).__name__}")
    if example_input is not None and not hasattr(example_input, "shape"):
        raise TypeError(f"example_input must be an array (a batch of inputs); got "
                        f"{type(example_input).__name__}")
    if groups is None:
        if example_input is not None and (apply is not None or not _has_auto(net)):
            fn = _default_apply(net) if apply is None else apply
            groups, sites = traced_groups(net, fn, example_input, strict=bool(strict),
                                          with_sites=True)
            if activations is None:
                activations = _TracedActivations(fn, tuple(sites.items()))
        else:
            groups, auto_act = _auto_groups(net)
            activations = auto_act if activations is None else activations
    if apply is None and example_input is not None:
        apply = _default_apply(net)
    if not isinstance(groups, Mapping):
        raise TypeError(f"groups must be a mapping group name -> [(leaf, axis), …]; "
                        f"got {type(groups).__name__}")
    if activations is not None and not callable(activations):
        raise TypeError(f"activations must be a callable (net, x) -> dict; "
                        f"got {type(activations).__name__}")
    flat = flatten(tree)
    seen: dict[tuple[int, int], str] = {}
    out = []
    for name, pairs in groups.items():
        if not isinstance(name, str):
            raise TypeError(f"group names must be strings; got {name!r}")
        if isinstance(pairs, (str, tuple)) and len(pairs) == 2 and isinstance(pairs[1], int):
            raise TypeError(f"group {name!r}: expected a list of (leaf, axis) pairs; got one pair "
                            f"{pairs!r} (wrap it in a list)")
        pairs = list(pairs)
        if not pairs:
            raise ValueError(f"group {name!r} has no (leaf, axis) pairs")
        axes, size, first = [], None, None
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"group {name!r}: each entry must be a (leaf, axis) pair; "
                                f"got {pair!r}")
            ref, ax = pair
            i = _resolve(ref, flat, name)
            leaf, lname = flat.leaves[i], flat.names[i]
            if not is_param(leaf):
                raise ValueError(f"group {name!r}: leaf {lname!r} is not a floating-point array "
                                 f"(got {type(leaf).__name__})")
            if isinstance(ax, bool) or not isinstance(ax, (int, np.integer)):
                raise TypeError(f"group {name!r}: the axis of leaf {lname!r} must be an int; "
                                f"got {ax!r}")
            nd = leaf.ndim
            if not -nd <= ax < nd:
                raise ValueError(f"group {name!r}: axis {ax} is out of range for leaf {lname!r} of "
                                 f"shape {tuple(leaf.shape)}")
            ax = int(ax) % nd
            if (i, ax) in seen:
                raise ValueError(f"group {name!r}: axis {ax} of leaf {lname!r} is already permuted "
                                 f"by group {seen[(i, ax)]!r}; each (leaf, axis) pair belongs to "
                                 f"one group")
            seen[(i, ax)] = name
            s = int(leaf.shape[ax])
            if size is None:
                size, first = s, (lname, ax)
            elif s != size:
                raise ValueError(f"group {name!r}: leaf {lname!r} has {s} entries on axis {ax} but "
                                 f"leaf {first[0]!r} has {size} on axis {first[1]}")
            axes.append((lname, ax))
        out.append(PermGroup(name, size, tuple(axes)))
    if apply is None and example_input is None:
        apply, example_input = _auto_check(net)
    return PermutationSpec(tuple(out), activations, apply, example_input)


# --- automatic specs ------------------------------------------------------------------------------


def _skip_groups(net) -> dict:
    k = len(net.theta)
    g = {"hidden": [("W1", 0), ("V1", 0), ("W2", 1), ("V2", 1)],
         "g_in": [("V2", 0), ("theta[0]", 1)]}
    for j in range(k - 1):
        g[f"g_hidden_{j}"] = [(f"theta[{j}]", 0), (f"theta[{j + 1}]", 1)]
    g["g_out"] = [(f"theta[{k - 1}]", 0), ("V1", 1)]
    return g


def _skip_activations(net, x: Float[Array | np.ndarray, "N n"]) -> dict[str, Array]:
    """σ(W1 x); z = V2 σ(W1 x); the ReLU outputs of g's hidden layers; g(θ, z)."""
    h = jax.nn.relu(x @ net.W1.T)
    z = h @ net.V2.T
    acts = {"hidden": h, "g_in": z}
    r = z
    for j, t in enumerate(net.theta[:-1]):
        r = jax.nn.relu(r @ t.T)
        acts[f"g_hidden_{j}"] = r
    acts["g_out"] = r @ net.theta[-1].T
    return acts


def _two_activations(net, x: Float[Array | np.ndarray, "N n"]) -> dict[str, Array]:
    return {"hidden": jax.nn.relu(x @ net.W1.T)}


def _mlp_groups(net: eqx.nn.MLP) -> dict:
    if getattr(net, "scan", False):
        raise ValueError("no automatic permutation spec for eqx.nn.MLP(scan=True): its hidden "
                         "layers are stacked into one leaf; build it with scan=False or pass spec=")
    if jax.tree_util.tree_leaves(eqx.filter(net.activation, eqx.is_array)):
        raise ValueError("no automatic permutation spec for an eqx.nn.MLP with a learnt activation "
                         "(its per-unit parameters would need permuting too); pass spec=")
    g = {}
    for i in range(len(net.layers) - 1):
        pairs = [(f"layers[{i}].weight", 0)]
        if net.layers[i].bias is not None:
            pairs.append((f"layers[{i}].bias", 0))
        pairs.append((f"layers[{i + 1}].weight", 1))
        g[f"layers[{i}]"] = pairs
    return g


def _mlp_activations(net: eqx.nn.MLP, x: Float[Array | np.ndarray, "N n"]) -> dict[str, Array]:
    """The post-activation values of each hidden layer, as `eqx.nn.MLP.__call__` computes them (the
    activation applied unit by unit; learnt activations are refused by `_mlp_groups`)."""
    if net.in_size == "scalar":
        x = x[:, 0]
    acts, h = {}, x
    for i, layer in enumerate(net.layers[:-1]):
        act = jax.tree_util.tree_map(lambda a, i=i: a[i] if eqx.is_array(a) else a, net.activation)
        h = jax.vmap(jax.vmap(act))(jax.vmap(layer)(h))
        acts[f"layers[{i}]"] = h
    return acts


def _has_auto(net) -> bool:
    return isinstance(net, (SkipNet, NoSkipNet, TwoLayer, eqx.nn.MLP))


def _default_apply(net) -> Callable:
    """How a batch goes through `net` when the user gives no `apply`."""
    nnx = _nnx()
    if isinstance(net, (SkipNet, NoSkipNet, TwoLayer)) or \
            (nnx is not None and isinstance(net, nnx.Module)):
        return _call_batch
    if isinstance(net, eqx.Module) and callable(net):
        return _vmap_call
    raise ValueError(f"permutation_spec: no default way to apply a {type(net).__name__} to a "
                     f"batch; pass apply=lambda net, x: … (e.g. for flax linen lambda v, x: "
                     f"model.apply(v, x), for haiku lambda p, x: f.apply(p, None, x))")


def _call_batch(net, x):
    return net(x)


def _vmap_call(net, x):
    return jax.vmap(net)(x)


def _auto_check(net) -> tuple[Callable | None, Any]:
    """The check of the automatic models: their outputs on a fixed random batch of 8 inputs."""
    n = input_features(net) if _has_auto(net) else None
    if n is None:
        return None, None
    dt = np.result_type(*[np.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(net)
                          if is_param(leaf)] or [np.float32])
    x = np.random.default_rng(0).standard_normal((8, n)).astype(dt)
    if isinstance(net, eqx.nn.MLP):
        x = x[:, 0] if net.in_size == "scalar" else x
        return _vmap_call, x
    return _call_batch, x


def _of_arrays(net, apply: Callable):
    """``apply(net, x)`` as ``fn(values, x)`` of the net's array leaves (what tracing follows), with
    those values, the flattened net and the indices of its array leaves among `flat.leaves`."""
    tree, rebuild = split_net(net)
    flat = flatten(tree)
    dyn = [i for i, leaf in enumerate(flat.leaves) if eqx.is_array(leaf)]

    def fn(values, x):
        leaves = list(flat.leaves)
        for i, v in zip(dyn, values, strict=True):
            leaves[i] = v
        return apply(rebuild(jax.tree_util.tree_unflatten(flat.treedef, leaves)), x)

    return fn, [flat.leaves[i] for i in dyn], flat, dyn


def traced_groups(net, apply: Callable, example_input, *, strict: bool = True,
                  with_sites: bool = False):
    """The groups {name: [(leaf path, axis), …]} found by tracing ``apply(net, example_input)``
    (and, `with_sites`, {name: (equation index, output index, axis)}: the value of the group's
    units that activation matching compares — the last ReLU (else the last value) in the order of
    the computation whose axis is the group's)."""
    from ._trace import trace

    fn, values, flat, dyn = _of_arrays(net, apply)
    try:
        an, closed, leaf_vars = trace(fn, values, example_input)
    except Exception as e:  # noqa: BLE001 - say which call failed, keep the cause
        raise ValueError(f"permutation_spec: tracing apply(net, example_input) failed with "
                         f"{type(e).__name__}: {e} (example_input of shape "
                         f"{tuple(np.shape(example_input))}: a batch of inputs; pass apply= for a "
                         f"model that is not called as net(x))") from e
    uf = an.uf
    classes: dict[int, list[tuple[int, int]]] = {}
    for i, v in zip(dyn, leaf_vars, strict=True):
        leaf = flat.leaves[i]
        if not is_param(leaf):
            an.constant(v, leaf)  # integer leaves are not permuted: they fix what they touch
    used_vars = {id(v) for e in closed.jaxpr.eqns for v in e.invars} | \
        {id(v) for v in closed.jaxpr.outvars}
    unused: list[tuple[int, Any]] = []
    for i, v in zip(dyn, leaf_vars, strict=True):
        leaf = flat.leaves[i]
        if not is_param(leaf):
            continue
        if id(v) not in used_vars:
            unused.append((i, v))
            continue
        for ax, node in enumerate(an.of(v)):
            if leaf.shape[ax] > 1:
                classes.setdefault(uf.find(node), []).append((i, ax))
    # a leaf the computation never reads (haiku's EMA accumulator `hidden` beside the `average`
    # that inference uses) follows a sibling leaf of the same module with the same shape; other
    # unread leaves are left unpermuted
    by_name = {flat.names[i]: i for i in dyn}
    for i, v in unused:
        parent = flat.names[i].rsplit(".", 1)[0] if "." in flat.names[i] else None
        sib = next((j for n, j in by_name.items() if parent is not None and j != i
                    and n.rsplit(".", 1)[0] == parent and (j, v) not in unused
                    and getattr(flat.leaves[j], "shape", None) == flat.leaves[i].shape
                    and id(leaf_vars[dyn.index(j)]) in used_vars), None)
        if sib is None:
            continue
        for ax, node in enumerate(an.of(leaf_vars[dyn.index(sib)])):
            if flat.leaves[i].shape[ax] > 1:
                classes.setdefault(uf.find(node), []).append((i, ax))
    first_producer: dict[int, tuple[int, int]] = {}
    for li, ax in an.producers:  # leaf li is the li-th traced leaf
        i = dyn[li]
        node = an.of(leaf_vars[li], 0)[ax] if ax < len(an.of(leaf_vars[li], 0)) else None
        if node is not None and flat.leaves[i].shape[ax] > 1:
            first_producer.setdefault(uf.find(node), (i, ax))
    groups, used, roots = {}, set(), {}
    for root, pairs in classes.items():
        if root in uf.fixed:
            continue
        if root in uf.undecided:
            if strict:
                i, ax = pairs[0]
                raise ValueError(
                    f"permutation_spec: cannot decide how to permute axis {ax} of leaf "
                    f"{flat.names[i]!r} (shape {tuple(flat.leaves[i].shape)}; with "
                    f"{len(pairs) - 1} other leaf axes joined to it): its units reach "
                    f"{uf.undecided[root]}. Declare the groups (permutation_spec(net, {{group: "
                    f"[(leaf, axis), …]}})) or pass strict=False to leave these units unpermuted")
            continue
        i, ax = first_producer.get(root, pairs[0])
        base = flat.names[i].rsplit(".", 1)[0] if "." in flat.names[i] else flat.names[i]
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}#{k}"
        used.add(name)
        groups[name] = [(flat.names[j], a) for j, a in pairs]
        roots[name] = root
    if not with_sites:
        return groups
    sites, relu = {}, {}
    want = {r: n for n, r in roots.items()}
    for k, e in enumerate(closed.jaxpr.eqns):
        is_relu = e.primitive.name in ("custom_jvp_call", "max")
        for o_i, o in enumerate(e.outvars):
            for ax, node in enumerate(an.of(o, 0)):
                r = uf.find(node)
                if r in want and o.aval.shape[ax] > 1:
                    sites[want[r]] = (k, o_i, ax)
                    if is_relu:
                        relu[want[r]] = (k, o_i, ax)
    return groups, {n: relu.get(n, sites.get(n)) for n in groups if n in sites or n in relu}


class _TracedActivations:
    """``(net, x) -> {group: (N·P, size)}``: the units' values at the sites found by tracing (P the
    positions of a convolution's channels, 1 for a dense layer), for `align(method="activations")`."""

    def __init__(self, apply, sites):
        self.apply, self.sites = apply, sites

    def __call__(self, net, x):
        fn, vals, _, _ = _of_arrays(net, self.apply)
        closed = jax.make_jaxpr(fn)(vals, x)
        eqns = closed.jaxpr.eqns
        outs = [eqns[k].outvars[o] for _, (k, o, _) in self.sites]
        from ._trace import _jaxpr_as_fun

        c = type(closed)(closed.jaxpr.replace(outvars=outs), closed.consts)
        got = jax.jit(_jaxpr_as_fun(c))(*jax.tree_util.tree_leaves(vals), x)
        res = {}
        for (name, (_, _, ax)), v in zip(self.sites, got, strict=True):
            v = np.moveaxis(np.asarray(v), ax, -1)
            res[name] = v.reshape(-1, v.shape[-1])
        return res


def _auto_groups(net) -> tuple[dict, Callable | None]:
    if isinstance(net, (SkipNet, NoSkipNet)):
        return _skip_groups(net), _skip_activations
    if isinstance(net, TwoLayer):
        return {"hidden": [("W1", 0), ("W2", 1)]}, _two_activations
    if isinstance(net, eqx.nn.MLP):
        return _mlp_groups(net), _mlp_activations
    raise ValueError(f"no built-in permutation spec for {type(net).__name__} (built in: "
                     f"jaxland.SkipNet, NoSkipNet, TwoLayer, eqx.nn.MLP): pass example_input=x (a "
                     f"batch; align: data=x) to find the groups by tracing the model, or declare "
                     f"them: spec={{group: [(leaf, axis), …]}} or a PermutationSpec")


def input_features(net) -> int | None:
    """n for the automatic models (the width of the inputs `data` must have), else None."""
    if isinstance(net, (SkipNet, NoSkipNet, TwoLayer)):
        return int(net.W1.shape[-1])
    if isinstance(net, eqx.nn.MLP):
        return 1 if net.in_size == "scalar" else int(net.in_size)
    return None
