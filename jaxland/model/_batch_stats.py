"""BatchNorm statistics re-estimated at a point of parameter space (Garipov et al. 2018).

A point on a path between two BatchNorm networks (a convex combination of their parameters, a point
of a Bézier curve, a point of a 2-D slice) has no valid running statistics: the statistics stored
with either end point describe *that* network's activations, not the interpolated one's. Garipov et
al. (2018, §4 and `update_bn`) therefore re-estimate them at every point before evaluating the loss
in inference mode. Here that is a pure function of the parameters and the data, so it composes with
`jit`, with `vmap` over path points and with everything that evaluates a path.

The criterion (issue 13): in inference mode every BatchNorm layer must normalise with exactly the
mean and the *biased* variance of its own input over the whole of `x`, i.e. the network in inference
mode computes what it computes in training mode on one batch that holds all of `x`.

How:

- Every `eqx.nn.BatchNorm` is swapped (with `eqx.tree_at`) for a recording wrapper, `_Probe`, that
  computes its input's per-channel mean and biased variance exactly as equinox's training mode does,
  writes them into the layer's own statistics slot of the `State`, and normalises through the
  wrapped layer in inference mode (so the normalisation code is equinox's own).
- Without `batch_size`, one pass suffices: each probe normalises with the statistics it has just
  measured, so every layer sees exactly the input it sees in the full-batch training pass.
- With `batch_size`, layer l's input on one batch depends on the *full-data* statistics of the
  layers before it, which are not known until every batch has gone through them. The passes are a
  fixed-point iteration: pass p normalises every layer with the estimates of pass p − 1 and records,
  per batch, the mean and biased variance of every layer's input, pooled over batches with Chan et
  al.'s pairwise update. By induction, after pass p every layer with at most p − 1 BatchNorm layers
  upstream is exact (its input was computed with exact upstream statistics), so L passes (L = number
  of BatchNorm layers) are exact for any wiring, in any order of the layers in the pytree. Fewer
  passes cannot do in general: in a chain of L BatchNorm layers, layer l cannot be measured before
  layer l − 1 is final. Each pass is forward only and holds one batch in memory; estimates of early
  passes (even inf or NaN in deep layers) never persist, since every pass overwrites every layer.

flax linen and haiku: `recompute_batch_stats(module, variables, x)` and
`recompute_batch_stats(transformed, (params, state), x)` run the same fixed-point passes (one
pass per BatchNorm layer, also without `batch_size`), the layers intercepted with
`nn.intercept_methods` / `hk.intercept_methods`.

flax nnx: the same function takes an `nnx.Module` with `state=None` and returns a copy of the model
whose `nnx.BatchNorm` statistics are set (nnx keeps the statistics in the model).

`stateful_leaf` says whether an object carries BatchNorm state (used by `evaluate_path` to refuse
data batching, which would silently use per-batch statistics).
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import types
from collections.abc import Hashable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree, Real

from .._params import is_haiku_pair, is_linen_variables

__all__ = ["recompute_batch_stats", "stateful_leaf"]


# --- equinox BatchNorm state mechanics ------------------------------------------------------------
# `eqx.nn.BatchNorm` (equinox 0.11–0.13) keeps, per layer, in the `eqx.nn.State`:
#   mode "ema":   `ema_state_index` -> (mean, var), read as is in inference;
#                 `ema_first_time_index` -> bool, whether the next training call overwrites them.
#   mode "batch": `batch_state_index` -> (hidden_mean, hidden_var), and `batch_counter` -> int c;
#                 inference reads hidden / s with s = 1 if c == 0 else 1 - momentum**c.
# The functions below are the only places that know this layout.


def _is_bn(x) -> bool:
    return isinstance(x, eqx.nn.BatchNorm)


def _find_bns(tree: PyTree) -> list:
    """The BatchNorm layers of a pytree, in tree order (used as `eqx.tree_at`'s `where`)."""
    return [leaf for leaf in jtu.tree_leaves(tree, is_leaf=_is_bn) if _is_bn(leaf)]


def _bn_paths(tree: PyTree) -> list[str]:
    flat = jtu.tree_flatten_with_path(tree, is_leaf=_is_bn)[0]
    return [jtu.keystr(p) or "<root>" for p, leaf in flat if _is_bn(leaf)]


def _stats_index(bn: eqx.nn.BatchNorm):
    """The StateIndex of the (C,), (C,) pair that inference mode normalises with."""
    return bn.batch_state_index if bn.mode == "batch" else bn.ema_state_index


@functools.cache
def _saturated_count(momentum: float, max_count: int) -> int:
    """A batch counter c for which equinox's de-bias 1 − momentum**c is exactly 1 (any dtype).

    momentum**c ≤ 2⁻¹⁰⁰ is far below half an ulp of 1 even in float32 (2⁻²⁵), so the division by the
    de-bias is exact, and the state reads as a converged running average: further training mixes new
    batches in with weight 1 − momentum, as in PyTorch. Returns 0 (de-bias skipped, also exact in
    inference) when no such c fits the counter's integer dtype or the momentum is not in [0, 1).
    """
    if not 0.0 <= momentum < 1.0:
        return 0
    c = 1 if momentum == 0.0 else math.ceil(100 * math.log(2.0) / -math.log(momentum))
    return c if c <= max_count else 0


def _clone_state(state: eqx.nn.State) -> eqx.nn.State:
    """A fresh `State` with the same entries: `State.set` invalidates the object it is called on,
    and the caller's `state` must stay usable."""
    return jtu.tree_map(lambda a: a, state)


def _set_stats(state: eqx.nn.State, bns: list, stats: list, *, final: bool) -> eqx.nn.State:
    """A copy of `state` whose BatchNorm layers read `stats` [(mean, var) each] in inference mode.

    In mode "batch" the counter is set to `_saturated_count` so that the de-bias is exactly 1; with
    `final`, mode "ema" also marks the statistics as populated (the next training call then averages
    into them instead of overwriting them).
    """
    state = _clone_state(state)
    for bn, (mean, var) in zip(bns, stats, strict=True):
        old_mean, old_var = state.get(_stats_index(bn))
        state = state.set(
            _stats_index(bn), (mean.astype(old_mean.dtype), var.astype(old_var.dtype))
        )
        if bn.mode == "batch":
            counter = state.get(bn.batch_counter)
            c = _saturated_count(float(bn.momentum), int(np.iinfo(counter.dtype).max))
            state = state.set(bn.batch_counter, lax.full_like(counter, c))  # keeps the weak type
        elif final:
            state = state.set(bn.ema_first_time_index, jnp.asarray(False))
    return state


class _Probe(eqx.nn.StatefulLayer):
    """Stands in for one `eqx.nn.BatchNorm`: records the statistics of its input into the layer's
    own statistics slot, and normalises through the layer in inference mode.

    With `own_batch`, it first stores the statistics it has measured, so it normalises with them
    (the one-pass, full-batch case); otherwise it normalises with what the slot holds (the estimates
    of the previous pass) and then overwrites the slot with its measurement.
    """

    layer: eqx.nn.BatchNorm
    own_batch: bool = eqx.field(static=True)

    def __call__(self, x: Array, state: eqx.nn.State, *, key=None, inference=None):
        del key, inference  # always normalises as in inference mode
        axis_name = self.layer.axis_name

        # Exactly equinox's training-mode statistics (`BatchNorm.__call__._stats`): per sample the
        # mean over the spatial axes, averaged over the named batch axis; the variance likewise,
        # about the batch mean, so it is the biased variance over batch and spatial positions.
        def stats(y):
            mean = lax.pmean(jnp.mean(y), axis_name)
            var = lax.pmean(jnp.mean((y - mean) * jnp.conj(y - mean)), axis_name)
            return mean, jnp.maximum(0.0, var)

        index = _stats_index(self.layer)
        old_mean, old_var = state.get(index)
        mean, var = jax.vmap(stats)(x)
        record = (mean.astype(old_mean.dtype), var.astype(old_var.dtype))
        if self.own_batch:
            state = state.set(index, record)
        out, state = self.layer(x, state, inference=True)
        if not self.own_batch:
            state = state.set(index, record)
        return out, state


def _merge(acc, n_b, rec):
    """Pool per-batch (mean, biased var) into running ones (Chan, Golub & LeVeque 1979): with
    n = n_a + n_b and δ = m_b − m_a, m = m_a + δ n_b/n and v = v_a + (v_b − v_a) n_b/n + δ² n_a
    n_b/n². Every term is a non-negative weight times a difference of like quantities, so there is
    no cancellation of large sums (unlike Σy² − (Σy)²/n)."""
    n_a, stats = acc
    n = n_a + n_b
    w = n_b / n
    cross = n_a * n_b / (n * n)
    out = []
    for (m_a, v_a), (m_b, v_b) in zip(stats, rec, strict=True):
        d = m_b - m_a
        m = m_a + d * w
        v = v_a + (v_b - v_a) * w + (d * jnp.conj(d)) * cross
        # each layer keeps its own dtype (a scan carry must not change type)
        out.append((m.astype(m_a.dtype), v.astype(v_a.dtype)))
    return n, out


@eqx.filter_jit
def _recompute(model, state, x, batch_size):
    bns = _find_bns(model)
    own_batch = batch_size >= x.shape[0]
    inference_model = eqx.nn.inference_mode(model)
    probe_model = eqx.tree_at(
        _find_bns, inference_model, [_Probe(bn, own_batch) for bn in _find_bns(inference_model)]
    )
    indices = [_stats_index(bn) for bn in bns]

    def forward(xb, st):
        """The statistics every probe records on the batch `xb`, with `st` as the state."""

        def one(xi):
            _, new = probe_model(xi, _clone_state(st))  # `st` is traced more than once
            return [new.get(i) for i in indices]

        return jax.vmap(one, axis_name=bns[0].axis_name, out_axes=None)(xb)

    if own_batch:
        stats = forward(x, _set_stats(state, bns, [state.get(i) for i in indices], final=False))
        return _set_stats(state, bns, stats, final=True)

    N = x.shape[0]
    n_full, rem = divmod(N, batch_size)
    x_full = x[: n_full * batch_size].reshape((n_full, batch_size) + x.shape[1:])
    x_rem = x[n_full * batch_size :]
    # Any finite start will do: pass p overwrites every layer with ≤ p BatchNorm layers upstream.
    start = [(jnp.zeros_like(m), jnp.ones_like(v)) for m, v in (state.get(i) for i in indices)]
    zero = jnp.zeros((), dtype=jnp.result_type(start[0][0]))

    def one_pass(_, estimates):
        st = _set_stats(state, bns, estimates, final=False)

        def body(acc, xb):
            return _merge(acc, batch_size, forward(xb, st)), None

        acc = (zero, [(jnp.zeros_like(m), jnp.zeros_like(v)) for m, v in estimates])
        acc, _ = lax.scan(body, acc, x_full)
        if rem:
            acc = _merge(acc, rem, forward(x_rem, st))
        return acc[1]

    stats = lax.fori_loop(0, len(bns), one_pass, start)
    return _set_stats(state, bns, stats, final=True)


def _is_nnx_module(x) -> bool:
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(x, nnx.Module)


def _check_x(x, batch_size) -> Array:
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(
            "x must hold at least one sample along axis 0 (shape (N, ...) with N ≥ 1); "
            f"got shape {x.shape}"
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be None or an integer ≥ 1; got {batch_size!r}")
    return x


def recompute_batch_stats(
    model: Any,
    state: Any,
    x: Real[ArrayLike, "N ..."],
    *,
    batch_size: int | None = None,
    axis_name: Hashable = "batch",
    apply_kwargs: dict[str, Any] | None = None,
):
    """The BatchNorm statistics of the data `x` at the parameters of `model` (Garipov et al. 2018).

    In inference mode (`eqx.nn.inference_mode(model)`), every `eqx.nn.BatchNorm` layer of `model`,
    at any depth, normalises with the state returned here using exactly the per-channel mean and
    biased variance of its own input over the whole of `x`, its input being computed by the network
    in inference mode with the new statistics. That is what the layer computes in training mode on a
    single batch holding all of `x`, so the inference-mode loss equals the full-batch training-mode
    loss. Both BatchNorm modes, "ema" and "batch", are supported; the rest of the network runs in
    inference mode (dropout off).

    Pure: `state` is not modified (nor invalidated). Works under `jax.jit`, under `jax.vmap` /
    `eqx.filter_vmap` over a stack of models (path points), and under `jax.grad`: the statistics are
    differentiable functions of the parameters, so fn(θ) = inference loss of θ with
    `recompute_batch_stats(θ, state, x)` is the full-batch training-mode loss as a function of θ
    (its Hessian included). To treat the statistics as constants, as Garipov et al.'s `update_bn`
    does when a curve is trained, apply `jax.lax.stop_gradient` to the returned state.

    **Arguments:**

    - `model`: an equinox model called as `model(x_i, state) -> (out, state)` on one sample, under
      `jax.vmap(..., axis_name=axis_name)`; it must contain at least one `eqx.nn.BatchNorm`, each
      with `axis_name` as its `axis_name` and none shared between two places of the model.
      Or a flax nnx `nnx.Module` called as `model(x)` on a batch, holding at least one
      `nnx.BatchNorm` without `axis_name` (then `state` must be None and `axis_name` is not used).
    - `state`: the model's `eqx.nn.State` (from `eqx.nn.make_with_state`); its entries other than
      the BatchNorm statistics are carried through. None for an nnx model.
    - `x`: the data, shape `(N, *sample_shape)`, `N ≥ 1`.
    - `batch_size`: None for one pass over all of `x`; otherwise the data go through the network in
      batches of at most `batch_size` samples (memory) and the per-batch statistics are pooled
      exactly, with one pass over the data per BatchNorm layer (see the module docstring). The
      result equals the unbatched one up to floating-point rounding.
    - `axis_name`: the name of the batch axis of the equinox BatchNorm layers.
    - `apply_kwargs`: flax linen and haiku only: keyword arguments of the model's call that put it
      in inference mode (e.g. ``{"train": False}``, ``{"is_training": False}``); every BatchNorm
      layer is forced to normalise with the statistics being estimated anyway.

    **flax linen:** `recompute_batch_stats(module, variables, x, apply_kwargs=...)` with `variables`
    the dict ``{"params": ..., "batch_stats": ...}`` (from `module.init`) returns the variables with
    every `nn.BatchNorm`'s ``batch_stats`` ``mean`` / ``var`` set to the mean and biased variance of
    its input over the whole of `x`, the input computed with `use_running_average=True` and the new
    statistics: what `module.apply(variables, x, mutable=["batch_stats"])` with
    `use_running_average=False` stores with momentum 0 (linen's ``ra = m·ra + (1 − m)·batch``), and
    what it normalises with, so inference mode on the result equals training mode on one batch
    holding all of `x`. The module is called as `module.apply(variables, x_batch, **apply_kwargs)`.

    **haiku:** `recompute_batch_stats(transformed, (params, state), x, apply_kwargs=...)` with
    `transformed` from `hk.transform_with_state` (or `hk.without_apply_rng` of it) returns
    `(params, new_state)`: every `hk.BatchNorm`'s ``mean_ema`` / ``var_ema`` ``average`` (what
    `is_training=False` normalises with) holds the mean and biased variance of its input over `x`;
    ``hidden`` holds the same and ``counter`` is set so that haiku's de-bias 1 − decay^counter is
    exactly 1 (training continues from these statistics). Called as
    `transformed.apply(params, state, None, x_batch, **apply_kwargs)` (no rng). Both use one pass
    over the data per BatchNorm layer (the fixed-point passes above, also without `batch_size`).

    **Returns:** for an equinox model, a new `eqx.nn.State`, with every BatchNorm layer's statistics
    set (in mode "batch" also its counter, so that equinox's de-bias 1 − momentum^count is exactly
    1; in mode "ema" its first-time flag is cleared). For an nnx model, a copy of `model` (same
    training/evaluation flags) whose `nnx.BatchNorm` `mean` and `var` hold the statistics, in those
    variables' dtype (flax creates them as float32).

    **Raises:** `ValueError` (naming the argument) for an `x` that is not `(N, *sample_shape)` with
    the model's sample shape, a `batch_size` < 1, a model without BatchNorm, a BatchNorm whose
    `axis_name` differs from `axis_name` (nnx: that has an `axis_name`), or a `state` that lacks a
    layer's entries or is no longer valid (linen: no ``batch_stats``, or a BatchNorm built in
    training mode; haiku: a BatchNorm with `cross_replica_axis`; both: a BatchNorm called twice);
    `TypeError` for a `state` that is not an `eqx.nn.State` (not None for an nnx model, not the
    variables dict for linen, not the `(params, state)` pair for haiku, whose model must come from
    `hk.transform_with_state`).
    """
    if _is_nnx_module(model):
        if state is not None:
            raise TypeError(
                "state must be None for a flax nnx model (nnx keeps the BatchNorm statistics in "
                f"the model, and the updated model is returned); got {type(state).__name__}"
            )
        return _recompute_nnx(model, x, batch_size=batch_size)
    if apply_kwargs is not None and not (
        isinstance(apply_kwargs, Mapping) and all(isinstance(k, str) for k in apply_kwargs)
    ):
        raise TypeError(f"apply_kwargs must be None or a dict of keyword arguments; got "
                        f"{type(apply_kwargs).__name__}")
    if _is_linen_module(model):
        return _recompute_linen(model, state, x, batch_size=batch_size,
                                apply_kwargs=dict(apply_kwargs or {}), method=None)
    if _is_haiku_transformed(model):
        return _recompute_haiku(model, state, x, batch_size=batch_size,
                                apply_kwargs=dict(apply_kwargs or {}))
    if apply_kwargs is not None:
        raise ValueError("apply_kwargs is for a flax linen module or a haiku transformed model; "
                         f"got a {type(model).__name__} model")
    if not isinstance(state, eqx.nn.State):
        got = "None" if state is None else type(state).__name__
        raise TypeError(
            f"state must be an eqx.nn.State (from eqx.nn.make_with_state) for an equinox model "
            f"(got a {type(model).__name__} model and state {got}); the other frameworks: "
            "recompute_batch_stats(nnx_model, None, x), (linen_module, variables, x), "
            "(hk.transform_with_state(...), (params, state), x)"
        )
    bns, paths = _find_bns(model), _bn_paths(model)
    if not bns:
        raise ValueError(
            f"model contains no eqx.nn.BatchNorm layer (got a {type(model).__name__}); "
            "there are no statistics to recompute"
        )
    seen: dict[Any, str] = {}
    for bn, path in zip(bns, paths, strict=True):
        if bn.axis_name != axis_name:
            raise ValueError(
                f"axis_name is {axis_name!r} but the BatchNorm at model{path} has axis_name "
                f"{bn.axis_name!r}; pass the name the model's BatchNorm layers were built with"
            )
        marker = _stats_index(bn).marker
        if marker in seen:
            raise ValueError(
                f"model uses one BatchNorm at both model{seen[marker]} and model{path}; "
                "a shared layer sees two inputs, so it has no single set of statistics"
            )
        seen[marker] = path
    try:
        state = _clone_state(state)
    except ValueError as e:
        raise ValueError(
            f"state is no longer valid ({e.args[0].splitlines()[0]}); pass the latest state"
        ) from e
    for bn, path in zip(bns, paths, strict=True):
        try:
            state.get(_stats_index(bn))
            if bn.mode == "batch":
                state.get(bn.batch_counter)
            else:
                state.get(bn.ema_first_time_index)
        except KeyError:
            raise ValueError(
                f"state holds no statistics for the BatchNorm at model{path}; pass the state made "
                "together with this model (eqx.nn.make_with_state)"
            ) from None
    x = _check_x(x, batch_size)

    # One sample through the model, abstractly, so that a wrong sample shape is reported against x.
    def one_sample(xi, st):
        out = eqx.nn.inference_mode(model)(xi, st)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], eqx.nn.State)):
            raise TypeError(f"model(x_i, state) must return (out, state); got {type(out).__name__}")
        return out[0]

    try:
        jax.eval_shape(
            jax.vmap(one_sample, axis_name=axis_name, in_axes=(0, None)),
            jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype),
            state,
        )
    except Exception as e:  # noqa: BLE001 - re-raised with the argument named
        raise ValueError(
            f"x has shape {tuple(x.shape)}, but model(x[i], state) fails on a sample of shape "
            f"{tuple(x.shape[1:])}: {type(e).__name__}: {e}"
        ) from e
    N = x.shape[0]
    return _recompute(model, state, x, N if batch_size is None else min(batch_size, N))


# --- detection of state (for evaluate_path) -------------------------------------------------------


def _is_stateful(x) -> bool:
    if isinstance(x, (eqx.nn.BatchNorm, eqx.nn.State)):
        return True
    if is_linen_variables(x) or is_haiku_pair(x):  # linen / haiku statistics
        return True
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(x, (nnx.BatchNorm, nnx.BatchStat))


def stateful_leaf(obj, name: str, *, _depth: int = 3, _seen=None) -> str | None:
    """Where `obj` holds BatchNorm state, or None: a readable location (``path.nodes.layers[1]``) of
    the first `eqx.nn.BatchNorm`, `eqx.nn.State`, `nnx.BatchNorm`, `nnx.BatchStat`, flax linen
    variables with a ``batch_stats`` collection or haiku `(params, state)` pair found among the
    pytree leaves of `obj`, or among the variables captured by a Python function (its closure
    cells, and the closures of functions found there, up to three levels; `functools.partial`
    arguments and the object of a bound method likewise).

    What it cannot see: a model reached through a function's globals, an object's attributes that
    are not pytree children, or a closure deeper than three levels. A `None` is therefore no proof
    that a function is stateless.
    """
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return None
    seen.add(id(obj))
    try:
        flat = jtu.tree_flatten_with_path(obj, is_leaf=_is_stateful)[0]
    except Exception:  # noqa: BLE001 - an object that is not a valid pytree is opaque here
        flat = [((), obj)]
    for path, leaf in flat:
        if _is_stateful(leaf):
            return name + jtu.keystr(path)
    if _depth <= 0:
        return None
    inner: list[tuple[str, Any]] = []
    for path, leaf in flat:
        where = name + jtu.keystr(path)
        if isinstance(leaf, functools.partial):
            inner.append((f"{where}.func", leaf.func))
            inner += [(f"{where}.args[{i}]", a) for i, a in enumerate(leaf.args)]
            inner += [(f"{where}.keywords[{k!r}]", a) for k, a in leaf.keywords.items()]
        if isinstance(leaf, types.MethodType):
            inner.append((f"{where}.__self__", leaf.__self__))
        closure = getattr(leaf, "__closure__", None)
        code = getattr(leaf, "__code__", None)
        if closure and code is not None:
            for var, cell in zip(code.co_freevars, closure, strict=False):
                try:
                    inner.append((f"{where} (captured variable {var!r})", cell.cell_contents))
                except ValueError:  # an empty cell
                    continue
    for where, item in inner:
        found = stateful_leaf(item, where, _depth=_depth - 1, _seen=seen)
        if found is not None:
            return found
    return None


# --- flax nnx -------------------------------------------------------------------------------------
# flax is a test-time dependency of jaxland, so it is imported only when an nnx model comes in.


@functools.cache
def _nnx_probe_types():
    from flax import nnx

    class _Recorded(nnx.Variable):
        """What a probe measured on the last batch."""

    class _NnxProbe(nnx.Module):
        """Stands in for one `nnx.BatchNorm`: records its input's statistics, normalises through it
        with its running statistics (`use_running_average=True`)."""

        def __init__(self, bn, own_batch: bool):
            self.bn = bn
            self.own_batch = own_batch
            self.rec_mean = _Recorded(jnp.zeros_like(bn.mean[...]))
            self.rec_var = _Recorded(jnp.zeros_like(bn.var[...]))

        def __call__(self, x, use_running_average=None, *, mask=None):
            del use_running_average
            if mask is not None:
                raise NotImplementedError(
                    "recompute_batch_stats does not support nnx.BatchNorm masks"
                )
            bn = self.bn
            feature = {a % x.ndim for a in ((bn.axis,) if isinstance(bn.axis, int) else bn.axis)}
            axes = tuple(a for a in range(x.ndim) if a not in feature)
            # flax's training-mode dtype rule (`_compute_stats`), two-pass variance.
            y = jnp.asarray(x, jnp.promote_types(bn.dtype or jnp.result_type(x), jnp.float32))
            mean = y.mean(axes)
            var = (jnp.abs(y - jnp.expand_dims(mean, axes)) ** 2).mean(axes)
            self.rec_mean[...] = mean.astype(self.rec_mean[...].dtype)
            self.rec_var[...] = var.astype(self.rec_var[...].dtype)
            if self.own_batch:
                bn.mean[...] = self.rec_mean[...]
                bn.var[...] = self.rec_var[...]
            return bn(x, True)

    return _NnxProbe


def _nnx_forward(graphdef, bn_paths, variables, xb, *, estimates):
    """[(mean, var) per BatchNorm, in `bn_paths` order] of the layers' inputs on the batch `xb`,
    through the probed model (`graphdef`, `variables`); with `estimates`, the layers first get those
    as running statistics (otherwise each normalises with its own measurement)."""
    from flax import nnx

    probe_type = _nnx_probe_types()
    net = nnx.merge(graphdef, variables, copy=True)  # fresh Variables, owned by the current trace
    by_path = {p: m for p, m in nnx.iter_modules(net) if isinstance(m, probe_type)}
    probes = [by_path[p] for p in bn_paths]
    if estimates is not None:
        for probe, (mean, var) in zip(probes, estimates, strict=True):
            probe.bn.mean[...] = mean.astype(probe.bn.mean[...].dtype)
            probe.bn.var[...] = var.astype(probe.bn.var[...].dtype)
    net(xb)
    return [(p.rec_mean[...], p.rec_var[...]) for p in probes]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))  # a module-level jit: cached across calls
def _nnx_compute(graphdef, bn_paths, batch_size, variables, x):
    forward = functools.partial(_nnx_forward, graphdef, bn_paths, variables)
    N = x.shape[0]
    if batch_size >= N:
        return forward(x, estimates=None)
    n_full, rem = divmod(N, batch_size)
    x_full = x[: n_full * batch_size].reshape((n_full, batch_size) + x.shape[1:])
    x_rem = x[n_full * batch_size :]
    template = jax.eval_shape(lambda xb: forward(xb, estimates=None), x[:1])
    start = [(jnp.zeros(m.shape, m.dtype), jnp.ones(v.shape, v.dtype)) for m, v in template]
    zero = jnp.zeros((), template[0][0].dtype)

    def one_pass(_, estimates):
        acc = (zero, [(jnp.zeros_like(m), jnp.zeros_like(v)) for m, v in estimates])

        def body(acc, xb):
            return _merge(acc, batch_size, forward(xb, estimates=estimates)), None

        acc, _ = lax.scan(body, acc, x_full)
        if rem:
            acc = _merge(acc, rem, forward(x_rem, estimates=estimates))
        return acc[1]

    # One pass per BatchNorm layer: the fixed-point argument of the module docstring.
    return lax.fori_loop(0, len(bn_paths), one_pass, start)


def _recompute_nnx(model, x: Array, *, batch_size: int | None = None):
    """A copy of the flax nnx `model` whose `nnx.BatchNorm` statistics are those of the data `x`
    (`recompute_batch_stats(model, None, x)`).

    The same criterion as for equinox models: in evaluation mode
    (`use_running_average=True`) every `nnx.BatchNorm` normalises with exactly the mean and the
    biased variance of its input over the whole of `x` (its input computed by the network in
    evaluation mode with the new statistics), which is what it computes in training mode on one
    batch holding all of `x`. The statistics are stored in each layer's `mean` / `var` variables, in
    those variables' dtype (flax creates them as float32: convert the model's state to float64 for
    exact float64 results).

    Pure: `model` is not modified; the returned model is a clone with the same flags (training or
    evaluation mode) as `model`. Works under `nnx.jit`.

    **Arguments:**

    - `model`: an `nnx.Module` called as `model(x)` on a batch (batch axis 0), containing at least
      one `nnx.BatchNorm` without `axis_name` (the statistics of a batch are reduced over all axes
      but the feature axis, as in flax).
    - `x`: the data, shape `(N, *sample_shape)`, `N ≥ 1`.
    - `batch_size`: as in `recompute_batch_stats`.

    **Returns:** the updated clone of `model`.
    """
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax nnx Module; got {type(model).__name__}")
    bn_paths = [p for p, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    if not bn_paths:
        raise ValueError(f"model contains no nnx.BatchNorm layer (got a {type(model).__name__})")
    for p, m in nnx.iter_modules(model):
        if isinstance(m, nnx.BatchNorm) and m.axis_name is not None:
            raise ValueError(
                f"the BatchNorm at model.{'.'.join(map(str, p))} has axis_name {m.axis_name!r}; "
                "recompute_batch_stats reduces over the batch of x itself and needs "
                "axis_name=None"
            )
    x = _check_x(x, batch_size)
    N = x.shape[0]
    batch_size = N if batch_size is None else min(batch_size, N)
    own_batch = batch_size >= N
    probe_type = _nnx_probe_types()

    source = nnx.clone(model)
    source.eval()  # dropout off; the probes ignore use_running_average
    probed = nnx.recursive_map(
        lambda _, node: probe_type(node, own_batch) if isinstance(node, nnx.BatchNorm) else node,
        source,
    )
    graphdef, variables = nnx.split(probed)

    bn_paths = tuple(bn_paths)
    try:
        jax.eval_shape(
            functools.partial(_nnx_forward, graphdef, bn_paths, estimates=None),
            variables,
            jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype),
        )
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the argument named
        raise ValueError(
            f"x has shape {tuple(x.shape)}, but model fails on a batch of shape "
            f"{(1,) + tuple(x.shape[1:])}: {type(e).__name__}: {e}"
        ) from e
    stats = _nnx_compute(graphdef, bn_paths, batch_size, variables, x)

    result = nnx.clone(model)
    by_path = dict(zip(bn_paths, stats, strict=True))
    for path, m in nnx.iter_modules(result):
        if isinstance(m, nnx.BatchNorm):
            mean, var = by_path[path]
            m.mean[...] = mean.astype(m.mean[...].dtype)
            m.var[...] = var.astype(m.var[...].dtype)
    return result


# --- the fixed-point passes shared by flax linen and haiku ----------------------------------------


def _pooled_passes(forward, start: list, x: Array, batch_size: int, n_passes: int) -> list:
    """`n_passes` passes over `x` in batches of `batch_size`: pass p runs
    `forward(xb, estimates)` on every batch with the estimates of pass p − 1 as the running
    statistics, and pools the measured [(mean, biased var)] per layer exactly (`_merge`). After L
    passes (L = number of BatchNorm layers) every layer is exact (the module docstring's
    induction), also for one batch holding all of x."""
    N = x.shape[0]
    n_full, rem = divmod(N, batch_size)
    x_full = x[: n_full * batch_size].reshape((n_full, batch_size) + x.shape[1:])
    x_rem = x[n_full * batch_size :]
    zero = jnp.zeros((), jnp.result_type(start[0][0]))

    def one_pass(_, estimates):
        acc = (zero, [(jnp.zeros_like(m), jnp.zeros_like(v)) for m, v in estimates])

        def body(acc, xb):
            return _merge(acc, batch_size, forward(xb, estimates)), None

        acc, _ = lax.scan(body, acc, x_full)
        if rem:
            acc = _merge(acc, rem, forward(x_rem, estimates))
        return acc[1]

    return lax.fori_loop(0, n_passes, one_pass, start)


def _moments(y: Array, axes: tuple, keepdims: bool = False) -> tuple[Array, Array]:
    """Mean and biased variance over `axes` (two-pass: no cancellation of Σy² − (Σy)²/n)."""
    mean = jnp.mean(y, axes, keepdims=True)
    var = jnp.mean(jnp.abs(y - mean) ** 2, axes, keepdims=keepdims)
    return (mean if keepdims else jnp.squeeze(mean, axes)), var


def _kwargs_key(apply_kwargs) -> tuple:
    return tuple(sorted(apply_kwargs.items()))


def _maybe_jit(fun, static: tuple, *args):
    """fun(*static, *args) compiled once per `static` (module-level cache) when `static` is
    hashable, else traced for this call only."""
    try:
        hash(static)
    except TypeError:
        return fun(*static, *args)
    return _jitted(fun, len(static))(*static, *args)


@functools.cache
def _jitted(fun, n_static: int):
    return jax.jit(fun, static_argnums=tuple(range(n_static)))


# --- flax linen -----------------------------------------------------------------------------------


def _is_linen_module(x) -> bool:
    linen = sys.modules.get("flax.linen")
    return linen is not None and isinstance(x, linen.Module)


def _is_haiku_transformed(x) -> bool:
    hk = sys.modules.get("haiku")
    return hk is not None and isinstance(x, (hk.Transformed, hk.TransformedWithState))


def _linen_layers(batch_stats) -> list[tuple[str, ...]]:
    """The scope paths of the layers whose `batch_stats` hold a (`mean`, `var`) pair, in order."""
    from flax import traverse_util

    flat = traverse_util.flatten_dict(dict(batch_stats) if batch_stats is not None else {})
    layers = sorted({k[:-1] for k in flat if k[-1] in ("mean", "var")})
    for layer in layers:
        if layer + ("mean",) not in flat or layer + ("var",) not in flat:
            raise ValueError(f"variables['batch_stats'] entry {'/'.join(layer)} must hold both "
                             "'mean' and 'var'")
    return layers


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _linen_forward(module, layers, kwargs_key, method, variables, xb, estimates):
    """[(mean, var) per layer] of the inputs of the module's `nn.BatchNorm` layers on `xb`, every
    layer normalising with `estimates` (use_running_average=True)."""
    import flax.linen as nn
    from flax import traverse_util

    flat = {}
    for layer, (m, v) in zip(layers, estimates, strict=True):
        flat[layer + ("mean",)] = m
        flat[layer + ("var",)] = v
    variables = {**variables, "batch_stats": traverse_util.unflatten_dict(flat)}
    records: dict = {}

    def interceptor(next_fun, args, kwargs, context):
        bn = context.module
        if not isinstance(bn, nn.BatchNorm) or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        x_in = args[0] if args else kwargs["x"]
        if kwargs.get("mask") is not None:
            raise NotImplementedError("recompute_batch_stats does not support nn.BatchNorm masks")
        path = tuple(bn.scope.path)
        if path in records:
            raise ValueError(f"the nn.BatchNorm at {'/'.join(path)} is called more than once; a "
                             "shared layer sees two inputs, so it has no single set of statistics")
        feature = {a % x_in.ndim for a in ((bn.axis,) if isinstance(bn.axis, int) else bn.axis)}
        axes = tuple(a for a in range(x_in.ndim) if a not in feature)
        dtype = jnp.result_type(x_in) if bn.dtype is None else bn.dtype
        if bn.force_float32_reductions:  # linen's `_compute_stats` dtype rule
            dtype = jnp.promote_types(dtype, jnp.float32)
        records[path] = _moments(jnp.asarray(x_in, dtype), axes)
        if bn.use_running_average is None:
            return next_fun(x_in, use_running_average=True)
        if not bn.use_running_average:
            raise ValueError(
                f"the nn.BatchNorm at {'/'.join(path)} is built with use_running_average=False "
                "(training mode); pass apply_kwargs that put the module in inference mode (e.g. "
                "{'train': False}), so that it normalises with the statistics being estimated")
        return next_fun(x_in)

    with nn.intercept_methods(interceptor):
        module.apply(variables, xb, method=method, **dict(kwargs_key))
    missing = [layer for layer in layers if layer not in records]
    if missing:
        raise ValueError(f"variables['batch_stats'] holds statistics for {'/'.join(missing[0])}, "
                         "but no nn.BatchNorm at that place was called on x")
    return [(records[layer][0].astype(m.dtype), records[layer][1].astype(v.dtype))
            for layer, (m, v) in zip(layers, estimates, strict=True)]


def _linen_compute(module, layers, kwargs_key, method, batch_size, variables, x):
    stats = variables["batch_stats"]
    start = [(_get(stats, layer)["mean"], _get(stats, layer)["var"]) for layer in layers]
    forward = functools.partial(_linen_forward, module, layers, kwargs_key, method, variables)
    return _pooled_passes(forward, start, x, batch_size, len(layers))


def _recompute_linen(module, variables, x, *, batch_size, apply_kwargs, method):
    from flax import traverse_util
    from flax.core import FrozenDict, freeze

    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(
            "for a flax linen module, state must be its variables, the dict "
            "{'params': ..., 'batch_stats': ...} from module.init; got "
            f"{'None' if variables is None else type(variables).__name__}")
    if "batch_stats" not in variables:
        raise ValueError("variables has no 'batch_stats' collection (keys "
                         f"{sorted(variables)}): the module has no nn.BatchNorm statistics")
    layers = _linen_layers(variables["batch_stats"])
    if not layers:
        raise ValueError("variables['batch_stats'] holds no (mean, var) pair: there are no "
                         "statistics to recompute")
    x = _check_x(x, batch_size)
    N = x.shape[0]
    plain = {k: v for k, v in variables.items()}
    try:
        jax.eval_shape(lambda v, xb: _linen_forward(
            module, tuple(layers), _kwargs_key(apply_kwargs), method, v, xb,
            [(_get(v["batch_stats"], la)["mean"], _get(v["batch_stats"], la)["var"])
             for la in layers]),
            plain, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    except (NotImplementedError, ValueError) as e:
        if isinstance(e, ValueError) and "nn.BatchNorm" in str(e):
            raise
        if isinstance(e, NotImplementedError):
            raise
        raise ValueError(f"x has shape {tuple(x.shape)}, but module.apply fails on a batch of "
                         f"shape {(1,) + tuple(x.shape[1:])}: {type(e).__name__}: {e}") from e
    except Exception as e:  # noqa: BLE001 - re-raised with the argument named
        raise ValueError(f"x has shape {tuple(x.shape)}, but module.apply fails on a batch of "
                         f"shape {(1,) + tuple(x.shape[1:])}: {type(e).__name__}: {e}") from e
    stats = _maybe_jit(_linen_compute, (module, tuple(layers), _kwargs_key(apply_kwargs), method,
                                        N if batch_size is None else min(batch_size, N)), plain, x)
    flat = traverse_util.flatten_dict(dict(variables["batch_stats"]))
    for layer, (m, v) in zip(layers, stats, strict=True):
        flat[layer + ("mean",)] = m
        flat[layer + ("var",)] = v
    out = {**plain, "batch_stats": traverse_util.unflatten_dict(flat)}
    return freeze(out) if isinstance(variables, FrozenDict) else out


# --- haiku ----------------------------------------------------------------------------------------


def _haiku_layers(state) -> list[tuple[str, str]]:
    """(mean_ema, var_ema) state module names of every hk.BatchNorm, from the state's layout."""
    names = sorted(k[: -len("/~/mean_ema")] for k in state if k.endswith("/~/mean_ema"))
    for n in names:
        if n + "/~/var_ema" not in state:
            raise ValueError(f"state holds {n}/~/mean_ema but no {n}/~/var_ema")
    return [(n + "/~/mean_ema", n + "/~/var_ema") for n in names]


def _haiku_apply(transformed, params, state, xb, kwargs_key):
    params_of = inspect.signature(transformed.apply).parameters
    if "rng" in params_of:
        return transformed.apply(params, state, None, xb, **dict(kwargs_key))
    return transformed.apply(params, state, xb, **dict(kwargs_key))


def _haiku_forward(transformed, layers, kwargs_key, params, state, xb, estimates, decays=None):
    """[(mean, var) per layer] of the inputs of the `hk.BatchNorm` layers on `xb`, each normalising
    with `estimates` (is_training=False); `decays` (a dict) receives each EMA's decay rate."""
    import haiku as hk

    state = {k: dict(v) for k, v in state.items()}
    for (mname, vname), (m, v) in zip(layers, estimates, strict=True):
        state[mname]["average"] = m
        state[vname]["average"] = v
    records: dict = {}

    def interceptor(method, args, kwargs, context):
        bn = context.module
        if not isinstance(bn, hk.BatchNorm) or context.method_name != "__call__":
            return method(*args, **kwargs)
        bound = inspect.signature(hk.BatchNorm.__call__).bind(bn, *args, **kwargs)
        inputs = bound.arguments["inputs"]
        if bn.cross_replica_axis is not None:
            raise ValueError(f"the hk.BatchNorm {bn.module_name} has cross_replica_axis "
                             f"{bn.cross_replica_axis!r}; recompute_batch_stats reduces over x "
                             "itself")
        name = bn.mean_ema.module_name
        if name in records:
            raise ValueError(f"the hk.BatchNorm {bn.module_name} is called more than once; a "
                             "shared layer sees two inputs, so it has no single set of statistics")
        channel = bn.channel_index + inputs.ndim if bn.channel_index < 0 else bn.channel_index
        axes = tuple(bn.axis) if bn.axis is not None else tuple(
            i for i in range(inputs.ndim) if i != channel)
        records[name] = _moments(inputs, axes, keepdims=True)
        if decays is not None:
            for ema in (bn.mean_ema, bn.var_ema):
                decays[ema.module_name] = (float(ema.decay), bool(ema.zero_debias),
                                           int(ema.warmup_length))
        bound.arguments["is_training"] = False  # normalise with the estimates, update nothing
        bound.arguments["test_local_stats"] = False
        return method(*bound.args[1:], **bound.kwargs)

    with hk.intercept_methods(interceptor):
        _haiku_apply(transformed, params, state, xb, kwargs_key)
    out = []
    for (mname, _), (m, v) in zip(layers, estimates, strict=True):
        if mname not in records:
            raise ValueError(f"state holds statistics for {mname[: -len('/~/mean_ema')]}, but no "
                             "hk.BatchNorm of that name was called on x")
        mean, var = records[mname]
        out.append((mean.reshape(m.shape).astype(m.dtype), var.reshape(v.shape).astype(v.dtype)))
    return out


def _haiku_compute(transformed, layers, kwargs_key, batch_size, params, state, x):
    start = [(state[m]["average"], state[v]["average"]) for m, v in layers]
    forward = functools.partial(_haiku_forward, transformed, layers, kwargs_key, params, state)
    return _pooled_passes(forward, start, x, batch_size, len(layers))


def _recompute_haiku(transformed, variables, x, *, batch_size, apply_kwargs):
    import haiku as hk

    if not isinstance(transformed, hk.TransformedWithState):
        raise TypeError("a haiku model with BatchNorm is an hk.transform_with_state(...) result "
                        "(its statistics live in the state); got an hk.Transformed, which has no "
                        "state")
    if not (isinstance(variables, tuple) and len(variables) == 2
            and all(isinstance(v, Mapping) for v in variables)):
        raise TypeError("for a haiku model, state must be the pair (params, state) from "
                        "transformed.init; got "
                        f"{'None' if variables is None else type(variables).__name__}")
    params, state = variables
    layers = _haiku_layers(state)
    if not layers:
        raise ValueError("state holds no hk.BatchNorm statistics (no '<name>/~/mean_ema' entry): "
                         "there are no statistics to recompute")
    x = _check_x(x, batch_size)
    N = x.shape[0]
    state = {k: dict(v) for k, v in state.items()}
    decays: dict = {}
    try:
        jax.eval_shape(lambda p, s, xb: _haiku_forward(
            transformed, tuple(layers), _kwargs_key(apply_kwargs), p, s, xb,
            [(s[m]["average"], s[v]["average"]) for m, v in layers], decays),
            params, state, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    except ValueError as e:
        if "hk.BatchNorm" in str(e) or "state holds" in str(e):
            raise
        raise ValueError(f"x has shape {tuple(x.shape)}, but transformed.apply fails on a batch of "
                         f"shape {(1,) + tuple(x.shape[1:])}: {type(e).__name__}: {e}") from e
    except Exception as e:  # noqa: BLE001 - re-raised with the argument named
        raise ValueError(f"x has shape {tuple(x.shape)}, but transformed.apply fails on a batch of "
                         f"shape {(1,) + tuple(x.shape[1:])}: {type(e).__name__}: {e}") from e
    stats = _maybe_jit(_haiku_compute, (transformed, tuple(layers), _kwargs_key(apply_kwargs),
                                        N if batch_size is None else min(batch_size, N)),
                       params, state, x)
    new = {k: dict(v) for k, v in state.items()}
    for (mname, vname), (m, v) in zip(layers, stats, strict=True):
        for name, value in ((mname, m), (vname, v)):
            entry = new[name]
            entry["average"] = value
            entry["hidden"] = value.astype(jnp.result_type(entry["hidden"]))
            # haiku reads average = hidden / (1 − decay^counter): a counter for which the de-bias is
            # exactly 1, so that further training continues from these statistics
            decay, zero_debias, warmup = decays[name]
            counter = jnp.asarray(entry["counter"])
            c = _saturated_count(decay, int(np.iinfo(counter.dtype).max))
            if zero_debias and not warmup and c:
                entry["counter"] = jnp.full_like(counter, c)
    return params, new
