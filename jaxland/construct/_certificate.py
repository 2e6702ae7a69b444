"""The certificate of a constructed path: F at the ends and at ξ*, the maximum along the path
and the step that attains it, ε of Lemma 9, the merge angles, and the rank failures of the pseudoinverse
steps (Theorem 11: F(γ(t)) ≤ max(F_w*, λ) + O(m^((η−1)/n))).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array

from .._batching import pad_chunks
from ..model._losses import LossFn
from ..model._models import ResidualLinear
from ..model._objective import objective
from ._cluster import MergePlan, check_eta, lemma9_size_bound
from ._steps import _rank_ok
from ._theorem_path import TheoremPath, _eval_chunks

# ----------------------------------------------------------------------------------------------
# certificate


class Certificate(eqx.Module):
    """The numbers that certify a constructed path (all arrays are scalars unless noted).

    - `f_a`, `f_b`: F at the endpoints; `f_star`: F(ξ*) (the e(l) network's objective, or the best
      linear predictor's for ResidualLinear).
    - `f_max`: max F along the path (per-segment dense grid plus refinement around each segment's
      maximum; the highest point's field has this name in every jaxland result); `t_max`: where;
      `argmax_segment`: the segment index, `attained_by` its name.
    - `excess`: f_max − max(f_a, f_b, f_star), signed (it can be ≤ 0: merging lowers R).
    - `segment_max`: (S,) max F on each segment; `segment_names`: (static) their names.
    - `eps`: the Lemma 9 angle m^{(η−1)/n}; `eta`; `l`: units freed per half; `max_merge_angle`,
      `merge_angle_a`, `merge_angle_b`: largest merge angle (both halves, each half).
    - `cluster_size_a/_b`: largest ε-neighbourhood of the rows of net_a/net_b; `size_bound`:
      `lemma9_size_bound(m, n, ε)` (when ≥ l + 1 every merge angle is guaranteed ≤ ε).
    - `rank_failures`: grid points on pseudoinverse segments where rank W2(t) < d_y (σ_min/σ_max ≤
      the cutoff); `min_sigma_ratio`: smallest σ_min/σ_max seen there; `max_invariant_residual`:
      largest relative residual of W2V1 = target there.
    - `dims_ok`: False when d_y > min(d_x, d_z) for ResidualLinear (Remark 4.1: Lemma 7's proof does
      not apply); True otherwise.
    - `n_evals`: number of F evaluations; `model`: (static) the model type name.

    `to_dict()` gives a JSON-serialisable dict (floats, ints, bools, strings, lists).
    """

    f_a: Array
    f_b: Array
    f_star: Array
    f_max: Array
    t_max: Array
    argmax_segment: Array
    excess: Array
    segment_max: Array
    eps: Array
    eta: Array
    l: Array
    max_merge_angle: Array
    merge_angle_a: Array
    merge_angle_b: Array
    cluster_size_a: Array
    cluster_size_b: Array
    size_bound: Array
    rank_failures: Array
    min_sigma_ratio: Array
    max_invariant_residual: Array
    dims_ok: Array
    n_evals: Array
    segment_names: tuple[str, ...] = eqx.field(static=True)
    model: str = eqx.field(static=True)

    @property
    def attained_by(self) -> str:
        """Name of the segment where F is largest."""
        return self.segment_names[int(self.argmax_segment)]

    def to_dict(self) -> dict:
        out = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            if isinstance(v, (str, tuple)):
                out[k] = list(v) if isinstance(v, tuple) else v
                continue
            a = np.asarray(v)
            if a.ndim > 0:
                out[k] = a.tolist()
            elif a.dtype == bool:
                out[k] = bool(a)
            elif np.issubdtype(a.dtype, np.integer):
                out[k] = int(a)
            else:
                out[k] = float(a)
        out["attained_by"] = self.attained_by
        return out


def _segment_chunks(S: int, P: int, bs: int):
    """Chunks of bs of the P local grid points on each of the S segments (`pad_chunks`: the last
    chunk of a segment repeats its last point): (segment index per chunk, grid position of each
    point, mask of the real points)."""
    pos, real = pad_chunks(np.arange(P), bs)
    nc = pos.shape[0]
    ks = np.repeat(np.arange(S, dtype=np.int32), nc)
    return ks, np.tile(pos, (S, 1)), np.tile(real, (S, 1))

@functools.partial(jax.jit, static_argnames=("loss", "n_points", "refine_points", "refine_levels",
                                             "batch_size"))
def _certify_core(path, x, y, kappa, loss, n_points, refine_points, refine_levels, batch_size):
    F = lambda net: objective(net, x, y, kappa=kappa, loss=loss)
    S = path.num_segments
    dt = path.dtype
    # Level 0: a uniform grid of n_points local times per segment, ends included.
    ks, pos, real = _segment_chunks(S, n_points, min(batch_size, n_points))
    grid = jnp.linspace(0.0, 1.0, n_points).astype(dt)
    vals, ratios, resid = _eval_chunks(path, F, jnp.asarray(ks), grid[pos])
    vals = vals.reshape(S, -1)[:, :n_points]
    fails = jnp.sum(~_rank_ok(ratios, dt) & real)
    i = jnp.argmax(vals, axis=1)
    best = jnp.take_along_axis(vals, i[:, None], 1)[:, 0]
    sbest = grid[i]
    h = jnp.full((S,), 1.0 / (n_points - 1), dt)
    # Refinement: each level evaluates refine_points local times in [s* − h, s* + h] per segment
    # (the two grid cells around the running maximum) and shrinks h. One traced body for all levels.
    rks, rpos, _ = _segment_chunks(S, refine_points, min(batch_size, refine_points))
    rks = jnp.asarray(rks)
    u = jnp.linspace(0.0, 1.0, refine_points).astype(dt)

    def level(_, carry):
        best, sbest, h = carry
        lo = jnp.clip(sbest - h, 0.0, 1.0)
        hi = jnp.clip(sbest + h, 0.0, 1.0)
        r = lo[:, None] + (hi - lo)[:, None] * u[None, :]  # (S, refine_points)
        pts = r[rks[:, None], rpos]
        rv, _, _ = _eval_chunks(path, F, rks, pts)
        rv = rv.reshape(S, -1)[:, :refine_points]
        j = jnp.argmax(rv, axis=1)
        cand = jnp.take_along_axis(rv, j[:, None], 1)[:, 0]
        better = cand > best
        return (jnp.where(better, cand, best), jnp.where(better, r[jnp.arange(S), j], sbest),
                2 * h / (refine_points - 1))

    best, sbest, _ = lax.fori_loop(0, refine_levels, level, (best, sbest, h))
    k = jnp.argmax(best)
    t_max = (k + sbest[k]) / S
    n_evals = S * (n_points + refine_levels * refine_points)
    return best, k, t_max, fails, jnp.min(ratios), jnp.max(resid), n_evals


def certify(
    path: TheoremPath,
    net_a,
    net_b,
    x,
    y,
    *,
    kappa,
    loss: str | LossFn = "mse",
    f_star,
    eta=float("nan"),
    eps=float("nan"),
    plans: tuple[MergePlan | None, MergePlan | None] = (None, None),
    n_points: int = 257,
    refine_points: int = 17,
    refine_levels: int = 2,
    batch_size: int | None = None,
) -> Certificate:
    """Evaluate F densely along a `TheoremPath` and assemble its `Certificate`.

    Each of the S segments is evaluated on `n_points` uniform local times (ends included), then
    `refine_levels` times on `refine_points` points around its running maximum (each level zooms into
    the two grid cells around the maximum). F evaluations are batched `batch_size` points at a time
    (default: chosen from the size of one hidden-layer activation, ≈ 64 MiB per batch).

    **Arguments:**
    - `path`: the `TheoremPath`; `net_a`, `net_b`: its endpoints; `x`, `y`, `kappa`, `loss`: as for
      `jaxland.objective`.
    - `f_star`: F(ξ*); `eta`: η ∈ (0, 1) of Lemma 9, or NaN (no η: the `ResidualLinear` path);
      `eps`: ε of Lemma 9 (NaN: none); `plans`: the two merge plans of `construct_path`.
    - `n_points`, `refine_points`, `refine_levels`, `batch_size`: the dense evaluation, as above.

    **Returns:** `Certificate`.
    """
    if not (isinstance(eta, float) and np.isnan(eta)):  # NaN: no η (the ResidualLinear path)
        eta = check_eta(eta)
    if n_points < 2 or refine_points < 2 or refine_levels < 0:
        raise ValueError("need n_points >= 2, refine_points >= 2 and refine_levels >= 0; got "
                         f"{n_points}, {refine_points}, {refine_levels}")
    if batch_size is None:
        width = net_a.W1.shape[0] if hasattr(net_a, "W1") else net_a.W.shape[1]
        per = max(1, x.shape[0] * (width + 8))
        batch_size = int(max(1, min(256, (1 << 23) // per)))
    seg_max, k, t_max, fails, min_ratio, max_res, n_evals = _certify_core(
        path, x, y, kappa, loss, n_points, refine_points, refine_levels, batch_size)
    f_a = objective(net_a, x, y, kappa=kappa, loss=loss)
    f_b = objective(net_b, x, y, kappa=kappa, loss=loss)
    f_max = jnp.maximum(jnp.max(seg_max), jnp.maximum(f_a, f_b))
    dt = f_a.dtype
    pa, pb = plans
    nan = jnp.asarray(jnp.nan, dt)
    if pa is not None:
        ang_a, ang_b = pa.max_angle.astype(dt), pb.max_angle.astype(dt)
        ca, cb = pa.cluster_size, pb.cluster_size
        l = jnp.asarray(pa.freed.shape[0])
        m, n = net_a.W1.shape
        bound = lemma9_size_bound(m, n, float(eps)) if np.isfinite(eps) and eps > 0 else -1
    else:
        ang_a = ang_b = nan
        ca = cb = jnp.asarray(-1)
        l = jnp.asarray(0)
        bound = -1
    if isinstance(net_a, ResidualLinear):
        d_y, d_x = net_a.W.shape
        dims_ok = jnp.asarray(d_y <= min(d_x, net_a.V.shape[1]))
    else:
        dims_ok = jnp.asarray(True)
    return Certificate(
        f_a=f_a,
        f_b=f_b,
        f_star=jnp.asarray(f_star, dt),
        f_max=f_max,
        t_max=t_max.astype(dt),
        argmax_segment=k,
        excess=f_max - jnp.maximum(jnp.maximum(f_a, f_b), f_star),
        segment_max=seg_max,
        eps=jnp.asarray(eps, dt),
        eta=jnp.asarray(eta, dt),
        l=l,
        max_merge_angle=jnp.maximum(ang_a, ang_b),
        merge_angle_a=ang_a,
        merge_angle_b=ang_b,
        cluster_size_a=jnp.asarray(ca),
        cluster_size_b=jnp.asarray(cb),
        size_bound=jnp.asarray(bound),
        rank_failures=fails,
        min_sigma_ratio=min_ratio,
        max_invariant_residual=max_res,
        dims_ok=dims_ok,
        n_evals=jnp.asarray(n_evals),
        segment_names=path.names,
        model=path.kind,
    )
