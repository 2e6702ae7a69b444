"""The depth of a local minimum (Theorem 4's ε).

For a strict local minimum ξ° of F, Theorem 4 measures how hard it is to leave: the smallest
ε such that a continuous path from ξ° reaches a point ξ' with F(ξ') < F(ξ°) while
max_t F(γ(t)) − F(ξ°) = ε. Computing it exactly is a global problem; `depth` gives an **upper bound**:
for each of a few lower points ξ'_k (given, or found by descending from perturbations of ξ°) it searches a
low path with one of the methods of `search_path` and takes

    ε̂ = min_k [ max_t F(γ_k(t)) − F(ξ°) ]   (≥ ε when ξ'_k lies outside ξ°'s basin; every γ_k is a path).

For a `SkipNet` or `TwoLayer` on data (an `Objective` from `jaxland.objective_fn`) it also reports the
Theorem 11 bound next to it: F(γ(t)) ≤ max(F*_w, λ) + O(m^{(η−1)/n}) with F*_w the e(l) objective
(l = ⌊m^η⌋), so a minimum worse than e(l) has depth O(m^{(η−1)/n}); the constant is not explicit, so the
bound is reported as the rate ε_m = m^{(η−1)/n}, the estimate of F*_w (`best_l_term`), and — when asked
— the measured maximum along the constructive path of `jaxland.connect` to the chosen lower point, a
second, constructive upper bound on the depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._checks import check_fn, check_positive_float, check_positive_int
from .._optim import cached_adam
from .._params import check_joinable, num_stacked, param_dtype, ravel, tree_index
from ..paths._paths import AbstractPath
from ._dss import _descend
from ._search_path import SEARCH_METHODS, search_path


class Theorem11Bound(NamedTuple):
    """The Theorem 11 bound reported next to a measured depth (SkipNet / TwoLayer on data).

    - `eta`: η; `l`: ⌊m^η⌋ clipped to [1, m/2]; `m`, `n`: width and input dimension.
    - `rate`: ε_m = m^{(η−1)/n}, the order of the bound (its constant is not explicit).
    - `f_star`: the objective of the best l-term two-layer network found (`best_l_term`), an upper
      estimate of F*_w = e(l).
    - `worse_than_star`: F(minimum) ≥ f_star: the theorem's hypothesis "a minimum worse than e(l)".
    - `constructive_max`: max F along the constructive path of `jaxland.connect` from the minimum to the
      chosen lower point (nan if not computed); `constructive_depth`: that minus F(minimum), an upper
      bound on the depth; `excess`: the certificate's signed excess over max(F_A, F_B, F*).
    """

    eta: float
    l: int
    m: int
    n: int
    rate: float
    f_star: float
    worse_than_star: bool
    constructive_max: float
    constructive_depth: float
    excess: float


class DepthResult(NamedTuple):
    """What `depth` returns.

    - `depth`: min_k (max_t F(γ_k(t)) − F(minimum)) over the lower points tried (inf if none was lower).
    - `value`: F(minimum); `level`: F(minimum) + depth, the lowest saddle level found.
    - `target`: the index of the lower point that attains it (−1 if none); `path`: that path (from the
      minimum to the lower point; None if none).
    - `target_values`: (K,) F at the lower points; `heights`: (K,) max_t F(γ_k(t)) per lower point
      (inf for points not lower than the minimum, which are skipped).
    - `method`: the search method; `evaluations`: F evaluations spent (descents + searches): the
      budget used.
    - `theorem11`: a `Theorem11Bound` (SkipNet / TwoLayer with an `Objective`), else None.
    """

    depth: float
    value: float
    level: float
    target: int
    path: AbstractPath | None
    target_values: Array
    heights: Array
    method: str
    evaluations: int
    theorem11: Theorem11Bound | None


def _as_list(points, name: str = "targets") -> list:
    """A sequence of pytrees as a list; a stacked pytree (leading axis K on every parameter leaf) as
    the list of its K points."""
    if isinstance(points, (list, tuple)) and not hasattr(points, "_fields"):
        return list(points)
    K = num_stacked(points, name)
    return [tree_index(points, i) for i in range(K)]


def lower_points(
    fn: Callable[[PyTree], Array],
    minimum: PyTree,
    *,
    key: PRNGKeyArray,
    num: int = 4,
    radius: float = 1.0,
    steps: int = 1000,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
) -> tuple[list, int]:
    """Candidate lower points: descend (optax) from `num` perturbations of the minimum.

    Start k is ξ° + radius·‖ξ°‖/√D · z_k with z_k standard normal (D parameters), then `steps` descent
    steps. Returns (points, evaluations); points are not filtered (`depth` skips those not lower). The
    points have the minimum's structure, leaf dtypes and non-parameter leaves.
    """
    num = check_positive_int("num", num)
    steps = check_positive_int("steps", steps)
    radius = check_positive_float("radius", radius)
    check_fn(fn)
    v0, unravel = ravel(minimum)
    if v0.shape[0] == 0:
        raise ValueError("minimum has no floating-point array leaves (no parameters to descend in)")
    opt = optimizer if optimizer is not None else cached_adam(check_positive_float("learning_rate",
                                                                        learning_rate))
    scale = radius * float(jnp.linalg.norm(v0)) / math.sqrt(v0.shape[0])
    if scale == 0:
        scale = radius
    out, evals = [], 0
    neg_inf = jnp.asarray(-jnp.inf, v0.dtype)  # never reached: run all `steps`
    for k in jax.random.split(key, num):
        x0 = v0 + scale * jax.random.normal(k, v0.shape, v0.dtype)
        x, _, used = _descend(fn, x0, neg_inf, unravel, steps, opt)
        evals += int(used) + 1
        out.append(unravel(x))
    return out, evals


def _theorem11(fn, minimum, target, f_min, *, eta, key, connect_kwargs, construct):
    from ..model._models import SkipNet, TwoLayer
    from ..model._objective import Objective

    if not (isinstance(fn, Objective) and type(minimum) in (SkipNet, TwoLayer)):
        return None
    from ..construct._best_l_term import best_l_term

    m, n = minimum.W1.shape
    l = int(min(max(1, math.floor(m**eta + 1e-9)), max(m // 2, 1)))
    kw = dict(connect_kwargs or {})
    star_kwargs = kw.pop("star_kwargs", {}) or {}
    kappa = float(fn.kappa)  # a Python float, like every other caller: shares compiled kernels
    xi_star = best_l_term(fn.x, fn.y, l=l, kappa=kappa, key=key, loss=fn.loss,
                          d_y=minimum.W2.shape[0], **star_kwargs).net
    f_star = float(fn(xi_star))
    cmax = cdepth = excess = math.nan
    if construct and target is not None and m >= 2:
        from ..construct._connect import connect

        res = connect(minimum, target, fn.x, fn.y, kappa=kappa, loss=fn.loss, eta=eta,
                      xi_star=xi_star, **kw)
        cert = res.certificate
        cmax = float(cert.f_max)
        cdepth = cmax - f_min
        excess = float(cert.excess)
        f_star = float(cert.f_star)
    return Theorem11Bound(float(eta), l, int(m), int(n), float(m) ** ((eta - 1.0) / n), f_star,
                          bool(f_min >= f_star), cmax, cdepth, excess)


def depth(
    fn: Callable[[PyTree], Array],
    minimum: PyTree,
    targets: Sequence[PyTree] | PyTree | None = None,
    *,
    method: str = "neb",
    key: PRNGKeyArray | None = None,
    num_targets: int = 4,
    radius: float = 1.0,
    descent_steps: int = 1000,
    eta: float | None = 0.5,
    construct: bool = False,
    connect_kwargs: dict | None = None,
    min_drop: float | None = None,
    **search_kwargs,
) -> DepthResult:
    """An upper bound on the depth ε of a local minimum (Theorem 4): the lowest barrier found to a point
    of lower F.

    For every lower point ξ'_k (`targets`, or `num_targets` points found by `lower_points` from `key`)
    with F(ξ'_k) < F(ξ°), a path ξ° → ξ'_k is searched with `search_path(method=…)`, and
    ε̂ = min_k max_t F(γ_k(t)) − F(ξ°) is returned with the path that attains it. Each γ_k is a genuine
    path to a lower point, so ε̂ ≥ ε whenever ξ'_k is outside the basin of ξ° (which a point of lower F
    always is); how close ε̂ comes to ε depends on the method and budget (`neb` is the most faithful
    saddle finder, `bezier` the cheapest).

    **Arguments:**
    - `fn`: F, a function of one parameter pytree (an `Objective` from `jaxland.objective_fn` for
      networks).
    - `minimum`: ξ°, the local minimum (a pytree: network, or array for a toy).
    - `targets`: lower points: a sequence of pytrees like `minimum`, or one stacked pytree (leading
      axis K). Points with F ≥ F(ξ°) − `min_drop` are skipped. None: found by `lower_points`.
    - `method`: one of `SEARCH_METHODS` ("neb" default); `search_kwargs` go to it.
    - `key`, `num_targets`, `radius`, `descent_steps`: for `lower_points` (key required then), and
      `key` also seeds `best_l_term` for the Theorem 11 bound (default PRNGKey(0)).
    - `eta`: η of the Theorem 11 bound (None: no bound). The bound is computed only when `fn` is an
      `Objective` and `minimum` a `SkipNet` or `TwoLayer`.
    - `construct`: also build `jaxland.connect`'s constructive path to the chosen lower point and
      report its maximum (`connect_kwargs` go to `connect`, e.g. `n_points`, `star_kwargs`).
    - `min_drop`: a point counts as lower when F(ξ') < F(ξ°) − min_drop; default
      1000·ε_mach·max(1, |F(ξ°)|) (1.2e-4 relative in float32), so that a descent that fell back
      into ξ° itself, lower only by rounding, is not taken for a way out.

    **Returns:** `DepthResult`.
    """
    if method not in SEARCH_METHODS:
        raise ValueError(f"method must be one of {SEARCH_METHODS}; got {method!r}")
    if eta is not None and not (isinstance(eta, (int, float)) and 0 < eta < 1):
        raise ValueError(f"eta must be a number in (0, 1) or None; got {eta!r}")
    check_fn(fn)
    f_min = float(fn(minimum))
    if not math.isfinite(f_min):
        raise ValueError(f"F(minimum) must be finite; got {f_min}")
    if min_drop is None:
        dt = param_dtype(minimum)
        min_drop = 1000 * float(jnp.finfo(dt).eps) * max(1.0, abs(f_min))
    min_drop = check_positive_float("min_drop", min_drop, allow_zero=True)
    evals = 0
    if targets is None:
        if key is None:
            raise ValueError("key is required when targets is None (lower points are searched from it)")
        k_t, key = jax.random.split(key)
        pts, evals = lower_points(fn, minimum, key=k_t, num=num_targets, radius=radius,
                                  steps=descent_steps)
    else:
        pts = _as_list(targets)
        if not pts:
            raise ValueError("targets must hold at least one point")
    for i, p in enumerate(pts):
        check_joinable(minimum, p, ("minimum", f"targets[{i}]"))
    vals = np.array([float(fn(p)) for p in pts])
    heights = np.full(len(pts), np.inf)
    best, best_path = -1, None
    for i, p in enumerate(pts):
        if not vals[i] < f_min - min_drop:
            continue
        r = search_path(fn, minimum, p, method=method, **search_kwargs)
        evals += int(r.evaluations)
        heights[i] = r.f_max
        if best < 0 or heights[i] < heights[best]:
            best, best_path = i, r.path
    d = float(heights[best] - f_min) if best >= 0 else math.inf
    bound = None
    if eta is not None:
        k_star = jax.random.PRNGKey(0) if key is None else key
        bound = _theorem11(fn, minimum, pts[best] if best >= 0 else None, f_min, eta=eta, key=k_star,
                           connect_kwargs=connect_kwargs, construct=construct)
    return DepthResult(d, f_min, f_min + d, best, best_path, jnp.asarray(vals), jnp.asarray(heights),
                       method, evals, bound)
