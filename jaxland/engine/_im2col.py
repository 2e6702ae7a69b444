"""Convolutions as matrix products (im2col), for the plain kernel on CPU (issue 20 §3).

A convolution ``lax.conv_general_dilated(x, w)`` with ``feature_group_count = batch_group_count = 1``
and no input dilation is, per output position o and output feature f,

    out[b, f, o] = Σ_{c, κ} x_pad[b, c, s ⊙ o + d ⊙ κ] · w[f, c, κ],

κ running over the kernel window, s the window strides, d the kernel (rhs) dilation, x_pad the input
padded by `padding`. Gathering the K = ∏ kernel-window values of every input feature into a patch
matrix P[b, o, (c, κ)] (one strided slice of x_pad per κ) turns it into one GEMM

    out[b, o, f] = P[b, o, :] · W[f, :]ᵀ,    W[f, (c, κ)] = w[f, c, κ].

Why the engine does this: XLA:CPU's own convolution is several times slower than a GEMM of the same
FLOPs and runs in a slow layout inside loops, and `jax.vmap` over the points of a path turns a
convolution with batched weights into a grouped convolution. After the rewrite, `vmap` over points
sees dot products: where the input is shared by every point (the first layer of a network), the
points' weights fold into the GEMM's output dimension (one (B·O) × (C·K) × (P·F) product); elsewhere a
batched GEMM. The rewrite changes the order of the sums only (equal to rounding; tests compare it with
`lax.conv_general_dilated` in float64).

`eval_jaxpr(jaxpr, consts, *args)` evaluates a jaxpr like `jax.core.eval_jaxpr`, with every
convolution it can rewrite (also inside `pjit` / `closed_call` / `custom_jvp_call` / `custom_vjp_call`
sub-jaxprs; forward values only) computed as above and everything else bound as is.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jex_core

__all__: list[str] = []

#: sub-jaxpr primitives that are evaluated through (their forward value is the sub-jaxpr's)
_CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr",
          "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
          "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
          "remat": "jaxpr", "checkpoint": "jaxpr"}


def rewritable(params: dict) -> bool:
    """Whether a `conv_general_dilated` equation's parameters are of the form the rewrite covers."""
    return (params.get("feature_group_count", 1) == 1 and params.get("batch_group_count", 1) == 1
            and all(int(d) == 1 for d in (params.get("lhs_dilation") or ())))


def conv_as_gemm(lhs, rhs, *, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers, feature_group_count=1, batch_group_count=1, precision=None,
                 preferred_element_type=None, out_sharding=None):
    """`lax.conv_general_dilated` by im2col and one `dot_general` (module docstring).

    `dimension_numbers` is a `lax.ConvDimensionNumbers` (what the traced equation carries: for each
    of lhs / rhs / out, the positions of (batch or out-feature, feature or in-feature, spatial…)).
    Refuses (ValueError) grouped convolutions and input dilation, which it does not cover.
    `out_sharding` (a parameter of the traced equation) is not used: the plain kernel runs on one
    device."""
    if not rewritable(dict(feature_group_count=feature_group_count,
                           batch_group_count=batch_group_count, lhs_dilation=lhs_dilation)):
        raise ValueError("conv_as_gemm covers feature_group_count = batch_group_count = 1 and no "
                         f"lhs_dilation; got {feature_group_count}, {batch_group_count}, "
                         f"{lhs_dilation}")
    dn = dimension_numbers
    if not isinstance(dn, lax.ConvDimensionNumbers):
        dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dn)
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    nd = len(lhs_spec) - 2
    rhs_dilation = tuple(rhs_dilation or (1,) * nd)
    strides = tuple(window_strides)
    # canonical layouts: x (B, *S, C) (channels last: the patches need no transpose), w (F, C, *K)
    x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
    w = jnp.transpose(rhs, rhs_spec)
    K = list(w.shape[2:])
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(x.shape[1:-1], [(k - 1) * d + 1 for k, d in
                                                      zip(K, rhs_dilation)], strides, padding)
    pads = [(0, 0, 0)] + [(int(lo), int(hi), 0) for lo, hi in padding] + [(0, 0, 0)]
    if any(p != (0, 0, 0) for p in pads):
        x = lax.pad(x, jnp.zeros((), x.dtype), pads)
    B, *S, C = x.shape
    F = w.shape[0]
    eff = [(k - 1) * d + 1 for k, d in zip(K, rhs_dilation)]
    O = [(sz - e) // st + 1 for sz, e, st in zip(S, eff, strides)]
    if any(o <= 0 for o in O):
        raise ValueError(f"conv_as_gemm: empty output (input {S}, window {eff}, strides {strides})")
    slices = []
    for kappa in itertools.product(*(range(k) for k in K)):
        start = [0] + [kk * d for kk, d in zip(kappa, rhs_dilation)] + [0]
        limit = [B] + [st + (o - 1) * sd + 1 for st, o, sd in zip(start[1:-1], O, strides)] + [C]
        slices.append(lax.slice(x, start, limit, [1, *strides, 1]))   # (B, *O, C)
    Kn = math.prod(K)
    patches = jnp.stack(slices, axis=-1).reshape(B, *O, C * Kn)       # (B, *O, C·Kn): (c, κ) order
    wm = w.reshape(F, C * Kn)                                           # (F, C·Kn), the same order
    out = lax.dot_general(patches, wm, (((nd + 1,), (1,)), ((), ())), precision=precision,
                          preferred_element_type=preferred_element_type)  # (B, *O, F)
    # back to the equation's output layout: (B, *O, F) holds out_spec's (batch, spatial…, feature)
    order = (out_spec[0], *out_spec[2:], out_spec[1])   # output axis of each of our axes
    inv = [0] * (nd + 2)
    for i, ax in enumerate(order):
        inv[ax] = i
    return jnp.transpose(out, inv)


def has_rewritable_conv(jaxpr) -> bool:
    """Whether `eval_jaxpr` would rewrite at least one convolution of `jaxpr` (a core Jaxpr)."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated" and rewritable(eqn.params):
            return True
        if name in _CALLS:
            sub = eqn.params.get(_CALLS[name])
            if sub is not None and has_rewritable_conv(getattr(sub, "jaxpr", sub)):
                return True
    return False


def eval_jaxpr(jaxpr, consts, *args):
    """`jax.core.eval_jaxpr` with convolutions as GEMMs (module docstring). Returns the list of
    outputs."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = c
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "conv_general_dilated" and rewritable(eqn.params):
            outs = [conv_as_gemm(*invals, **eqn.params)]
        elif name in _CALLS and _CALLS[name] in eqn.params and \
                has_rewritable_conv(getattr(eqn.params[_CALLS[name]], "jaxpr",
                                            eqn.params[_CALLS[name]])):
            sub = eqn.params[_CALLS[name]]
            if name in ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"):
                # forward value: the primal function's jaxpr, without its inputs' extra operands
                n_extra = len(invals) - len(getattr(sub, "jaxpr", sub).invars)
                invals = invals[n_extra:] if n_extra > 0 else invals
            if isinstance(sub, jex_core.ClosedJaxpr):
                outs = eval_jaxpr(sub.jaxpr, sub.consts, *invals)
            else:
                outs = eval_jaxpr(sub, [], *invals)
        else:
            bind_params = eqn.primitive.get_bind_params(eqn.params)
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **bind_params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, o in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, jex_core.DropVar):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]
