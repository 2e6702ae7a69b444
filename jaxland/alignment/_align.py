"""Permutation alignment of two networks: weight matching and activation matching (Git Re-Basin).

`align(a, b)` reorders the hidden units of `b` so that they line up with those of `a`, without
changing the function `b` computes (Ainsworth, Hayase & Srinivasa, "Git Re-Basin: Merging Models
modulo Permutation Symmetries", ICLR 2023). Interpolating between `a` and the aligned `b` then
compares like units with like; barriers measured before alignment may be permutation artefacts.

**Weight matching** (their Algorithm 1). Maximise the matching objective

    J(π) = Σ_ℓ ⟨A_ℓ, π(B)_ℓ⟩        (ℓ over the leaves the groups permute)

over one permutation per group, by coordinate ascent: for each group g in turn (in a random order
drawn from `key`, fresh every sweep), with the other groups' permutations held fixed, J is linear in
P_g and its maximiser is a linear assignment problem with the d × d similarity matrix

    C_g[i, j] = Σ_{(ℓ, k) ∈ g} ⟨A_ℓ[i along axis k], B̃_ℓ[j along axis k]⟩,

B̃_ℓ being B_ℓ with the other groups' permutations applied on its other axes. Each pair contributes
one matrix product: both leaves are moved to (d, rest) and the group's pairs are concatenated along
`rest`, so C_g is a single product A_g B_gᵀ, computed in float64 on the host, and solved with
`_assignment.linear_assignment` (scipy; a candidate graph for d ≥ 4096). A step is kept only if it raises J, so the history of J
never decreases; the sweeps stop when no group improves (or after `max_iter`).

**Relaxed start.** Algorithm 1 starts from the identity, where every group's cost is computed
against the other groups' arbitrary order of units. On SkipNet this stalls: the hidden group's cost
is dominated by V1 and V2, whose other axes (d_o, d_g) are still unmatched. Measured on planted
permutations with noise 10⁻³ (20 draws per size), coordinate ascent from the identity ended in a
local optimum below the planted one for 4–17 of 20 SkipNets (m = 16 … 256), and for none of 20
`eqx.nn.MLP`s, whose first layer has a fixed input axis. So the coordinate ascent starts from one
*relaxed* sweep: each group, visited in a random order, is assigned with the axes of the groups not
yet visited compared without regard to order (both leaves sorted along them: ⟨sort u, sort v⟩ =
max_Q ⟨u, Q v⟩, the rearrangement inequality, so each pair of units is scored as if the unvisited
axes were matched as well as they could be for that pair). The relaxed start is kept only if it
raises J above the identity's; with it, all of 300 random planted SkipNets and NoSkipNets were
recovered (tests/test_align.py draws such cases).

**Activation matching.** Each group's units are matched by the correlation of their values on `data`
(standardised over the N samples): one linear assignment per group on the d × d correlation matrix.
The groups are independent: the values of a group's units in `b` do not depend on how the other
groups are ordered, since reordering them does not change what flows into this group.

**Residual networks.** A spec traced from the computation (`permutation_spec(net,
example_input=x)`, or `align(a, b, data=x)` with no spec) puts the residual stream in one group
shared by every block it crosses; `apply_perms` (and so `align`) checks on a probe batch that the
permuted network computes the same outputs and refuses a spec that breaks a skip.

**Memory.** One d × d float64 matrix per group at a time (2 GiB at d = 16 384), its negation done in
place (so `linear_sum_assignment` makes no copy), plus float64 copies of the group's leaves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from .._checks import check_positive_int
from .._params import check_same_structure, zero_stats
from ._assignment import linear_assignment
from ._spec import (
    PermutationSpec,
    flatten,
    input_features,
    permutation_spec,
    split_net,
    take,
    take_axes,
)

__all__ = ["align", "AlignResult", "apply_perms", "ALIGN_METHODS", "function_rtol"]

ALIGN_METHODS = ("weights", "activations")

# A weight-matching step is kept when it raises J by more than this fraction of ‖A‖‖B‖ (the largest
# |J| can be, by Cauchy–Schwarz): J is a float64 sum of up to ~10⁸ products whose rounding is
# ~1e-16·log(terms) of that scale, so smaller "gains" are noise and would let ties cycle.
_RTOL = 1e-12


class AlignResult(NamedTuple):
    """The result of `align`.

    - `net`: `b` with its hidden units reordered to match `a` (the same kind of object as `b`); it
      computes the same function as `b`, and the same objective F for the paper's networks.
    - `perms`: dict group name → int array `p` of shape (d,): unit i of the aligned `b` is unit p[i]
      of `b`, matched to unit i of `a` (`apply_perms(b, perms, spec)` gives `net`).
    - `iterations`: sweeps over the groups (weights; the last one found no improvement when
      `converged`), or 1 (activations).
    - `history`: float64 array, the matching objective before any step (identity) and after each
      step. "weights": J(π), non-decreasing; entry 1 is the relaxed start (present when two or more
      groups have more than one unit), then one entry per group of more than one unit per sweep.
      "activations": Σ_g Σ_i corr_g(i, p_g(i)), one entry per group.
    - `objective`: the final value, `history[-1]`.
    - `converged`: a sweep found no improving group (weights), always True for activations.
    - `method`: "weights" or "activations"; `spec`: the `PermutationSpec` used.
    """

    net: Any
    perms: dict[str, np.ndarray]
    iterations: int
    history: np.ndarray
    objective: float
    converged: bool
    method: str
    spec: PermutationSpec


# --- argument checks ------------------------------------------------------------------------------


def _check_key(key) -> np.ndarray:
    """Raw key bits for a NumPy generator (the group order is host-side bookkeeping)."""
    try:
        arr = jnp.asarray(key)
    except TypeError:
        arr = None
    if arr is not None and jnp.issubdtype(arr.dtype, jax.dtypes.prng_key) and arr.shape == ():
        return np.asarray(jax.random.key_data(arr)).ravel()
    if arr is not None and arr.dtype == jnp.uint32 and arr.shape == (2,):
        return np.asarray(arr)
    shape = getattr(key, "shape", None)
    got = type(key).__name__ + ("" if shape is None else f" of shape {shape}")
    raise TypeError(f"key must be a single PRNG key (jax.random.key(…) or jax.random.PRNGKey(…)) "
                    f"or None; got {got}")


def _check_data(data, a) -> np.ndarray | jax.Array:
    if data is None:
        raise ValueError("method='activations' needs data: inputs x of shape (N, n) on which the "
                         "hidden units are compared")
    shape = getattr(data, "shape", None)
    if shape is None:
        raise TypeError(f"data must be an array of inputs (N, n); got {type(data).__name__}")
    n = input_features(a)
    if (n is not None or len(shape) < 2) and (len(shape) != 2 or (n is not None and shape[1] != n)):
        raise ValueError(f"data must have shape (N, {'n' if n is None else n}); got {tuple(shape)}")
    if shape[0] < 2:
        raise ValueError(f"data must hold at least 2 samples to correlate activations; "
                         f"got {shape[0]}")
    if not isinstance(data, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(data))):
        raise ValueError("data contains NaN or inf values")
    return data


def _resolve_spec(spec, a, data=None) -> PermutationSpec:
    if spec is None:
        return permutation_spec(a, example_input=data)
    if isinstance(spec, PermutationSpec):
        # re-check against this network: paths exist, sizes agree
        probe = spec.probe if data is None else data
        return permutation_spec(a, spec.as_dict(), activations=spec.activations,
                                apply=spec.apply if probe is not None else None,
                                example_input=probe)
    if isinstance(spec, Mapping):
        return permutation_spec(a, spec, example_input=data)
    raise TypeError(f"spec must be None, a PermutationSpec or a mapping group -> "
                    f"[(leaf, axis), …]; got {type(spec).__name__}")


def _check_probe(data):
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) < 1:
        raise TypeError(f"data must be an array, a batch of inputs (N, …); got "
                        f"{type(data).__name__}{'' if shape is None else f' of shape {shape}'}")
    if not isinstance(data, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(data))):
        raise ValueError("data contains NaN or inf values")
    return data


def _host_leaves(flat, lay, which: str) -> dict[int, np.ndarray]:
    """The permuted leaves on the host, refusing NaN/inf (SciPy's solver would fail on them with
    "matrix contains invalid numeric entries", naming nothing)."""
    out = {}
    for li in lay.leaf_axes:
        v = np.asarray(flat.leaves[li])
        if not np.all(np.isfinite(v)):
            bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
            raise ValueError(f"{which}: leaf {flat.names[li]!r} (shape {v.shape}) holds {bad} NaN "
                             f"or inf value(s); weight matching needs finite weights")
        out[li] = v
    return out


# --- shared bookkeeping ---------------------------------------------------------------------------


class _Layout(NamedTuple):
    """Integer form of a spec on a flattened tree."""

    names: list[str]  # group names, in spec order
    sizes: list[int]
    pairs: list[list[tuple[int, int]]]  # per group: (leaf index, axis)
    leaf_axes: dict[int, list[tuple[int, int]]]  # per permuted leaf: (group index, axis)


def _layout(spec: PermutationSpec, flat) -> _Layout:
    idx = {n: i for i, n in enumerate(flat.names)}
    pairs, leaf_axes = [], {}
    for gi, g in enumerate(spec.groups):
        ps = [(idx[p], ax) for p, ax in g.axes]
        pairs.append(ps)
        for li, ax in ps:
            leaf_axes.setdefault(li, []).append((gi, ax))
    return _Layout([g.name for g in spec.groups], [g.size for g in spec.groups], pairs, leaf_axes)


def _permuted(leaf, axes, perms, skip_axis: int | None = None):
    for gi, ax in axes:
        if ax != skip_axis:
            leaf = take(leaf, perms[gi], ax)
    return leaf


def apply_perms(
    net: PyTree, perms: Mapping[str, Any], spec: PermutationSpec | Mapping | None = None
) -> PyTree:
    """`net` with each group's units reordered by `perms` (new unit i = old unit perms[g][i]).

    **Arguments:**
    - `net`: the network (any object `permutation_spec` accepts).
    - `perms`: dict group name → int array of shape (d,), a permutation of 0 … d−1, for every group.
    - `spec`: the `PermutationSpec` (or a declaration); None for the automatic one.

    **Returns:** the permuted network, the same kind of object as `net`; it computes the same
    function — checked: when the spec has an `apply` and a probe batch (traced specs, specs built
    with `example_input`, the paper's networks and `eqx.nn.MLP`), the outputs before and after are
    compared (relative tolerance `function_rtol`), and a permutation that changes them raises
    ``ValueError`` naming the group(s) that change them on their own.
    """
    spec = _resolve_spec(spec, net)
    tree, rebuild = split_net(net)
    flat = flatten(tree)
    lay = _layout(spec, flat)
    missing = [n for n in lay.names if n not in perms]
    extra = [n for n in perms if n not in lay.names]
    if missing or extra:
        raise ValueError(f"perms must hold one permutation per group {lay.names}; "
                         f"missing {missing}, unknown {extra}")
    ps = []
    for name, d in zip(lay.names, lay.sizes, strict=True):
        p = np.asarray(perms[name])
        if p.shape != (d,) or not np.issubdtype(p.dtype, np.integer) or \
                not np.array_equal(np.sort(p), np.arange(d)):
            raise ValueError(f"perms[{name!r}] must be a permutation of 0 … {d - 1} "
                             f"(shape ({d},)); got shape {p.shape} dtype {p.dtype}")
        ps.append(p)
    out = _permute(flat, rebuild, lay, ps)
    if spec.apply is not None and spec.probe is not None:
        _check_function(net, out, spec, lambda only: _permute(flat, rebuild, lay, [
            p if gi == only else np.arange(len(p)) for gi, p in enumerate(ps)]), ps)
    return out


def _permute(flat, rebuild, lay: _Layout, ps):
    leaves = list(flat.leaves)
    for li, axes in lay.leaf_axes.items():
        leaves[li] = take_axes(leaves[li], [(ps[gi], ax) for gi, ax in axes])
    return rebuild(jax.tree_util.tree_unflatten(flat.treedef, leaves))


def function_rtol(dtype) -> float:
    """The relative tolerance of the function check: min(10³·ε, 0.1) for the outputs' dtype.

    A permutation that is a symmetry changes the outputs only by the order in which sums over the
    permuted units are taken: reordering a sum of K terms moves it by at most (K−1)·ε·Σ|terms|
    (Higham, Accuracy and Stability, §4.2) and typically by √K·ε, compounded over the layers. 10³·ε
    (1.2·10⁻⁴ in float32, 2.2·10⁻¹³ in float64) covers that with a wide margin — measured on the
    test ResNets (BatchNorm, three blocks, widths 8 … 64) the float32 change is ≤ 2·10⁻⁶ of the
    largest output —, while a permutation that breaks a symmetry (one block's output permuted apart
    from the residual stream) changes the outputs at O(1) relative (the issue saw F go 0.0023 →
    0.313). Low-precision dtypes are capped at 0.1.
    """
    return float(min(1e3 * float(jnp.finfo(dtype).eps), 0.1))


def _outputs(spec: PermutationSpec, net) -> list[np.ndarray]:
    out = spec.apply(net, spec.probe)
    return [np.asarray(o) for o in jax.tree_util.tree_leaves(out)
            if hasattr(o, "dtype") and jnp.issubdtype(o.dtype, jnp.inexact)]


def _mismatch(f0: list, f1: list) -> tuple[float, float]:
    """(max |f1 − f0|, tolerance) over the output leaves."""
    if not f0:
        return 0.0, 0.0
    err = max(float(np.max(np.abs(b.astype(np.float64) - a), initial=0.0))
              for a, b in zip(f0, f1, strict=True))
    scale = max(float(np.max(np.abs(a), initial=0.0)) for a in f0)
    rtol = max(function_rtol(a.dtype) for a in f0)
    if not np.isfinite(scale):
        return 0.0, 0.0  # outputs already inf/NaN: nothing to compare
    return err, rtol * max(scale, float(np.finfo(np.float32).tiny))


def _check_function(net, new, spec: PermutationSpec, only, ps) -> None:
    """Refuse a permutation that changes the outputs of `spec.apply` on `spec.probe`, naming the
    groups that change them on their own."""
    f0 = _outputs(spec, net)
    err, tol = _mismatch(f0, _outputs(spec, new))
    if not err > tol:
        return
    bad = []
    for gi, g in enumerate(spec.groups):
        if np.array_equal(ps[gi], np.arange(g.size)):
            continue
        e, t = _mismatch(f0, _outputs(spec, only(gi)))
        if e > t:
            bad.append(f"{g.name!r} (alone: {e:.3g})")
    which = (f"the group(s) {', '.join(bad)} change it on their own" if bad else
             "no single group changes it alone; their combination does")
    raise ValueError(
        f"the permutation changes the function the network computes: its outputs on the probe "
        f"batch move by {err:.3g} (tolerance {tol:.3g}); {which}. Their (leaf, axis) pairs are "
        f"not a symmetry of this network — e.g. a residual stream must be permuted by one group "
        f"shared by every block whose output is added to it. Build the spec by tracing "
        f"(permutation_spec(net, example_input=x)) or fix the declaration")


# --- weight matching ------------------------------------------------------------------------------


def _to_rows(leaf: np.ndarray, axis: int) -> np.ndarray:
    """(d, rest) view: the group's axis first, the others flattened."""
    return np.moveaxis(leaf, axis, 0).reshape(leaf.shape[axis], -1)


def _similarity(A, B, lay: _Layout, gi: int, perms, free: frozenset = frozenset()) -> np.ndarray:
    """C_g = A_g B̃_gᵀ in float64: one product over the group's concatenated (leaf, axis) pairs.

    The axes of the groups in `free` are compared without regard to order: both leaves are sorted
    along them, so each pair of units is scored as if those axes were matched as well as they could
    be for that pair alone (max_Q ⟨u, Q v⟩ = ⟨sort u, sort v⟩, the rearrangement inequality).
    """
    ra, rb = [], []
    for li, ax in lay.pairs[gi]:
        fixed = [(g, x) for g, x in lay.leaf_axes[li] if g not in free]
        la, lb = A[li], _permuted(B[li], fixed, perms, skip_axis=ax)
        for g, x in lay.leaf_axes[li]:
            if x != ax and g in free:
                la, lb = np.sort(la, axis=x), np.sort(lb, axis=x)
        ra.append(_to_rows(la, ax))
        rb.append(_to_rows(lb, ax))
    a_cat = np.concatenate(ra, axis=1, dtype=np.float64)
    b_cat = np.concatenate(rb, axis=1, dtype=np.float64)
    del ra, rb
    return a_cat @ b_cat.T


def _assign(C: np.ndarray) -> np.ndarray:
    """The maximising assignment of a similarity matrix (consumed: negated in place, so that
    the solver needs no copy; `_assignment.linear_assignment`)."""
    np.negative(C, out=C)
    return linear_assignment(C)


def _matching_objective(A, B, lay: _Layout, perms) -> float:
    return float(sum(np.vdot(A[li].astype(np.float64, copy=False),
                             _permuted(B[li], axes, perms).astype(np.float64, copy=False))
                     for li, axes in lay.leaf_axes.items()))


def _relaxed_start(A, B, lay: _Layout, order) -> list[np.ndarray]:
    """One sweep in which each group is assigned with the groups not yet visited left order-free."""
    perms = [np.arange(d) for d in lay.sizes]
    free = set(range(len(lay.names)))
    for gi in order:
        perms[gi] = _assign(_similarity(A, B, lay, gi, perms, frozenset(free)))
        free.discard(gi)
    return perms


def _weight_matching(A, B, lay: _Layout, key_bits, max_iter: int, start: str = "relaxed"):
    G = len(lay.names)
    perms = [np.arange(d) for d in lay.sizes]
    scale = math.sqrt(sum(float(np.vdot(A[i], A[i])) for i in lay.leaf_axes)
                      * sum(float(np.vdot(B[i], B[i])) for i in lay.leaf_axes))
    tol = _RTOL * max(scale, np.finfo(np.float64).tiny)
    J = _matching_objective(A, B, lay, perms)
    history = [J]
    active = [gi for gi in range(G) if lay.sizes[gi] > 1]  # a group of one unit has nothing to do
    if not active:
        return perms, history, 0, True
    rng = None if key_bits is None else np.random.default_rng(key_bits.tolist())

    def order():
        return active if rng is None else [active[i] for i in rng.permutation(len(active))]

    if start == "relaxed" and len(active) > 1:
        cand = _relaxed_start(A, B, lay, order())
        J_new = _matching_objective(A, B, lay, cand)
        if J_new > J + tol:
            perms, J = cand, J_new
        history.append(J)
    # C_g depends only on the permutations of the groups that share a leaf with g (and on g's own
    # when g permutes a leaf twice): when none of them changed since g was last solved, the
    # assignment would come out the same, and the product and the solve are skipped
    deps = [{h for li, _ in lay.pairs[gi] for h, _ in lay.leaf_axes[li]
             if h != gi or sum(1 for g2, _ in lay.leaf_axes[li] if g2 == gi) > 1}
            for gi in range(G)]
    step, changed_at, solved_at = 0, [0] * G, [-1] * G
    iterations, converged = 0, False
    for _ in range(max_iter):
        iterations += 1
        improved = False
        for gi in order():
            step += 1
            if solved_at[gi] >= 0 and all(changed_at[h] < solved_at[gi] for h in deps[gi]):
                history.append(J)
                continue
            solved_at[gi] = step
            cols = _assign(_similarity(A, B, lay, gi, perms))
            if not np.array_equal(cols, perms[gi]):
                cand = perms.copy()
                cand[gi] = cols
                J_new = _matching_objective(A, B, lay, cand)
                # J is linear in P_g unless a leaf is permuted twice by g (e.g. a square recurrent
                # matrix); then the assignment may not raise J, and the step is refused
                if J_new > J + tol:
                    perms, J, improved = cand, J_new, True
                    changed_at[gi] = step
            history.append(J)
        if not improved:
            converged = True
            break
    return perms, history, iterations, converged


# --- activation matching --------------------------------------------------------------------------


def _standardise(z: np.ndarray) -> np.ndarray:
    """Each column centred and scaled to unit variance; constant columns (e.g. dead ReLUs) become 0,
    so they correlate with nothing and are matched arbitrarily among themselves."""
    z = z - z.mean(axis=0)
    sd = np.sqrt(np.mean(z * z, axis=0))
    return z / np.where(sd > 0, sd, np.inf)


def _activation_matching(acts_a, acts_b, lay: _Layout, N: int):
    perms = [np.arange(d) for d in lay.sizes]
    corr = []
    for gi, name in enumerate(lay.names):
        za = _standardise(np.asarray(acts_a[name], np.float64))
        zb = _standardise(np.asarray(acts_b[name], np.float64))
        C = za.T @ zb
        C /= za.shape[0]  # N rows, or N × positions for a convolution's channels
        ident = float(np.trace(C))
        cols = _assign(C)  # C now holds −corr
        best = -float(C[np.arange(len(cols)), cols].sum())
        if best > ident + 1e-12 * len(cols):  # keep the identity on ties (rounding-level gains)
            perms[gi] = cols
        corr.append((ident, max(best, ident)))
        del C
    J = sum(c[0] for c in corr)
    history = [J]
    for ident, best in corr:
        J += best - ident
        history.append(J)
    return perms, history


def _activations(spec: PermutationSpec, net, data, lay: _Layout, which: str):
    if spec.activations is None:
        raise ValueError("method='activations' needs the values of every group's units: pass "
                         "spec=permutation_spec(net, groups, activations=fn) with fn(net, x) -> "
                         "{group: (N, size) array}")
    acts = spec.activations(net, data)
    N = data.shape[0]
    for name, d in zip(lay.names, lay.sizes, strict=True):
        v = acts.get(name) if isinstance(acts, Mapping) else None
        if v is None:
            raise ValueError(f"spec.activations({which}, data) returned no values for "
                             f"group {name!r}")
        sh = tuple(np.shape(v))
        # (N, d), or (N·P, d) for the channels of a convolution at P positions (traced specs)
        if len(sh) != 2 or sh[1] != d or sh[0] < 2 or sh[0] % N:
            raise ValueError(f"spec.activations({which}, data)[{name!r}] must have shape "
                             f"({N}, {d}); got {sh}")
    return acts


# --- the public function --------------------------------------------------------------------------


def align(
    a: PyTree,
    b: PyTree,
    *,
    method: str = "weights",
    data=None,
    spec: PermutationSpec | Mapping | None = None,
    key=None,
    max_iter: int = 100,
) -> AlignResult:
    """Permute the hidden units of `b` to match those of `a` (Git Re-Basin, Ainsworth et al. 2023).

    **Arguments:**
    - `a`, `b`: two networks of the same structure and shapes: `jaxland.SkipNet`, `NoSkipNet`,
      `TwoLayer`, `eqx.nn.MLP`, or any pytree / flax nnx module with a `spec`.
    - `method`: "weights" (weight matching, Algorithm 1: coordinate ascent over the groups, one
      linear assignment per group, from a relaxed start, see the module docstring) or "activations"
      (correlation of the units' values on `data`, one linear assignment per group).
    - `data`: a batch of inputs x (N, …): required by "activations" (N ≥ 2; (N, n) for the paper's
      networks and `eqx.nn.MLP`). For "weights", optional: with no `spec` and a model without a
      built-in spec, the groups are found by tracing the model on `data`
      (``permutation_spec(a, example_input=data)``); with any spec, `data` is the probe batch of
      the function check.
    - `spec`: the permutation groups: None (built in, or traced from `data`), a `PermutationSpec`,
      or a mapping group name → [(leaf, axis), …] (leaves as key-path strings or `eqx.tree_at`-style
      callables). "activations" needs a spec with an `activations` function (automatic ones have
      it).
    - `key`: "weights" only: a PRNG key drawing the order of the groups, afresh each sweep; None
      visits them in spec order every sweep.
    - `max_iter`: the most sweeps over the groups ("weights"), ≥ 1.

    **Returns:** an `AlignResult` (`net`, `perms`, `iterations`, `history`, `objective`,
    `converged`, `method`, `spec`).

    **Function check.** After permuting, the outputs of the spec's `apply` on its probe batch
    (`data`, the spec's `example_input`, or a fixed random batch for the paper's networks and
    `eqx.nn.MLP`) are compared before and after, with the relative tolerance `function_rtol`
    (10³·ε of the outputs' dtype); a spec that changes the function is refused with an error naming
    the group(s) that change it. A declared spec on a model with neither probe nor `apply` is not
    checked (there is nothing to call).

    **Raises:** ``ValueError`` for an unknown `method`, `data` missing for "activations",
    `data` of the wrong shape, a NaN/inf weight (naming the leaf), a permutation that changes the
    function (naming the group), a `key` given to "activations", `max_iter` < 1, `a` and
    `b` of different structure or shapes (naming the leaf), or a bad spec (naming the group and
    leaf); ``TypeError`` for a `key` that is not a PRNG key.

    Runs on the host between NumPy and SciPy (a driver, not jittable). Memory: one d × d float64
    matrix (and the group's leaves in float64) at a time.
    """
    if method not in ALIGN_METHODS:
        raise ValueError(f"method must be one of {ALIGN_METHODS}; got {method!r}")
    max_iter = check_positive_int("max_iter", max_iter)
    if type(a) is not type(b):
        raise TypeError(f"a and b must be of the same type; got {type(a).__name__} and "
                        f"{type(b).__name__}")
    tree_a, _ = split_net(a)
    tree_b, _ = split_net(b)
    check_same_structure(tree_a, tree_b)
    # running statistics (a linen batch_stats, a haiku state, nnx BatchStats) are not parameters:
    # zero in the matching cost, permuted with their channels by apply_perms(b, ...) below
    fa, fb = flatten(zero_stats(tree_a)), flatten(zero_stats(tree_b))
    if method == "weights" and data is not None:
        data = _check_probe(data)
    if method == "activations":
        if key is not None:
            raise ValueError("key is used only by method='weights' (the order of the groups); "
                             "activation matching is deterministic (pass key=None)")
        data = _check_data(data, a)
    # weights: data traces the groups (no spec) and probes the check; activations: data traces
    # the groups and their sites when there is no spec
    probe = data if method == "weights" or spec is None else None
    spec = _resolve_spec(spec, a, probe)
    lay = _layout(spec, fa)

    if method == "weights":
        key_bits = None if key is None else _check_key(key)
        A, B = _host_leaves(fa, lay, "a"), _host_leaves(fb, lay, "b")
        perms, history, iterations, converged = _weight_matching(
            A, B, lay, key_bits, int(max_iter))
    else:
        acts_a = _activations(spec, a, data, lay, "a")
        acts_b = _activations(spec, b, data, lay, "b")
        perms, history = _activation_matching(acts_a, acts_b, lay, int(data.shape[0]))
        iterations, converged = 1, True

    named = {name: np.asarray(p, np.int64) for name, p in zip(lay.names, perms, strict=True)}
    return AlignResult(
        net=apply_perms(b, named, spec),
        perms=named,
        iterations=int(iterations),
        history=np.asarray(history, np.float64),
        objective=float(history[-1]),
        converged=bool(converged),
        method=method,
        spec=spec,
    )

