"""`connect`: build the constructive path between two networks and certify it in one call.

Theorem 11 for `SkipNet` (through ξ*, the e(l) network of `best_l_term`), Freeman & Bruna for
`TwoLayer`, and Lemma 7 / Theorem 6 for `ResidualLinear` (through the best linear predictor, ξ* of
Theorem 6).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike, PRNGKeyArray, Real

from .._checks import check_kappa, is_concrete
from .._params import check_same_structure
from ..model._losses import LossFn
from ..model._models import TwoLayer
from ..model._objective import check_data, objective
from ._certificate import Certificate, certify
from ._cluster import check_eta, lemma9_eps
from ._linear_predictor import best_linear_predictor
from ._theorem_path import TheoremPath, _kind, _normalise_star, construct_path


class ConnectResult(NamedTuple):
    """What `connect` returns: the `path` (a `TheoremPath`) and its `certificate`."""

    path: TheoremPath
    certificate: Certificate


# ----------------------------------------------------------------------------------------------
# connect


def connect(
    net_a,
    net_b,
    x: Real[ArrayLike, "N n"],
    y: Real[ArrayLike, "N ..."],
    *,
    kappa,
    eta: float = 0.5,
    loss: str | LossFn = "mse",
    l: int | None = None,
    xi_star=None,
    key: PRNGKeyArray | None = None,
    method: str = "best",
    n_points: int = 257,
    refine_points: int = 17,
    refine_levels: int = 2,
    star_kwargs: dict | None = None,
    chunk_size: int | None = None,
) -> ConnectResult:
    """The path of the proof of Theorem 11 between two networks, evaluated, with its certificate.

    ξ_A → ξ*_A (steps 1–3 on net_a) → ξ*_B (the join at constant F) → ξ_B (steps 3–1 on net_b, run
    backwards); the docstring of `jaxland/construct/_theorem_path.py` describes every segment. Theorem 11 predicts
    F ≤ max(F_A, F_B, F*) + O(m^{(η−1)/n}) along it; the certificate reports the measured maximum and
    the signed excess over max(F_A, F_B, F*).

    - `SkipNet` (Theorem 11) and `TwoLayer` (Freeman & Bruna, Thm 5): ξ* is a two-layer network with
      l units (`best_l_term`, computed here with `key` unless `xi_star` is given).
    - `ResidualLinear` (Lemma 7 / Theorem 6): ξ* = (W*, 0, 0) with W* =
      `best_linear_predictor(x, y, kappa=κ, loss=loss).net`, the minimiser of
      E L(Wx, y) + κ‖W‖₁ = F(W*, 0, 0) (Theorem 6's F_w* when κ = 0; see `best_linear_predictor`
      for why this is the one ξ*), or `xi_star`, a `Linear`; `eta`, `l`, `method` are unused. With
      κ = 0, F ≤ max(F_A, F_B, F*) in exact arithmetic; with κ > 0 the segment L1 ends at
      (W*, 0, θ_A), whose F exceeds F* by κΣ‖θ_j‖_F. A warning is issued when d_y > min(d_x, d_z)
      (Remark 4.1).

    **Arguments:**
    - `net_a`, `net_b`: two networks of the same type and shapes (γ(0) = net_a, γ(1) = net_b exactly).
    - `x`, `y`: the data (as for `objective`).
    - `kappa`: κ ≥ 0, `loss`: as for `objective`.
    - `eta`: η ∈ (0, 1) (a concrete number: it fixes l); ε = m^{(η−1)/n} (Lemma 9), and
      l = ⌊m^η⌋ (clipped to [1, m/2]) by default.
    - `l`: units to free; must match `xi_star`'s width when both are given.
    - `xi_star`: the ξ* network (see above), or None to compute it.
    - `key`: PRNG key for `best_l_term` (required when it is called).
    - `method`: merge plan, "best" (default), "greedy" or "cluster" (see `merge_plan`).
    - `n_points`, `refine_points`, `refine_levels`: dense evaluation per segment (see `certify`).
    - `star_kwargs`: extra keyword arguments for `best_l_term` (steps, restarts, learning_rate).
    - `chunk_size`: rows per cosine block in the merge plans.

    **Returns:** `ConnectResult(path, certificate)`.
    """
    kind = _kind(net_a)
    if type(net_a) is not type(net_b):
        raise TypeError(f"net_a and net_b must have the same type; got {type(net_a).__name__} and "
                        f"{type(net_b).__name__}")
    check_same_structure(net_a, net_b, ("net_a", "net_b"))
    kappa = check_kappa(kappa)
    check_data(net_a, x, y, loss)
    if not is_concrete(eta):
        raise TypeError("eta must be a concrete number in (0, 1): connect is a driver (it fixes the "
                        "number l = ⌊m^η⌋ of freed units and evaluates the path), call it outside jit")
    eta = check_eta(eta)
    if kind == "ResidualLinear":
        d_y, d_x = net_a.W.shape
        d_z = net_a.V.shape[1]
        if d_y > min(d_x, d_z):
            warnings.warn(
                f"d_y = {d_y} > min(d_x, d_z) = min({d_x}, {d_z}): Lemma 7's proof does not apply "
                "(Remark 4.1); the path is still built, and the certificate reports dims_ok = False "
                "and the rank failures / invariant residual of W(t)V(t)", UserWarning, stacklevel=2)
        if xi_star is None:
            xi_star = best_linear_predictor(x, y, kappa=kappa, loss=loss,
                                            d_y=net_a.W.shape[0]).net
        path, _, _ = construct_path(net_a, net_b, xi_star)
        f_star = objective(xi_star, x, y, kappa=kappa, loss=loss)
        cert = certify(path, net_a, net_b, x, y, kappa=kappa, loss=loss, f_star=f_star,
                       n_points=n_points, refine_points=refine_points, refine_levels=refine_levels)
        return ConnectResult(path, cert)
    m, n = net_a.W1.shape
    if m < 2:
        raise ValueError(f"connect needs at least m = 2 hidden units; got m = {m}")
    if xi_star is not None:
        if not isinstance(xi_star, TwoLayer):
            raise TypeError(f"xi_star must be a TwoLayer; got {type(xi_star).__name__}")
        if l is not None and l != xi_star.W1.shape[0]:
            raise ValueError(f"l = {l} but xi_star has {xi_star.W1.shape[0]} units")
        l = xi_star.W1.shape[0]
    if l is None:
        l = int(min(max(1, math.floor(m**eta + 1e-9)), m // 2))
    if not isinstance(l, (int, np.integer)) or not 1 <= l <= m // 2:
        raise ValueError(f"l must be an integer in [1, m/2 = {m // 2}]; got {l!r}")
    if xi_star is None:
        if key is None:
            raise ValueError("key is required to compute xi_star with best_l_term (or pass xi_star)")
        from ._best_l_term import best_l_term

        d_y = net_a.W2.shape[0]
        xi_star = best_l_term(x, y, l=int(l), kappa=kappa, key=key, loss=loss, d_y=d_y,
                              **(star_kwargs or {})).net
    eps = lemma9_eps(m, n, eta)
    path, pa, pb = construct_path(net_a, net_b, xi_star, eps=eps, l=int(l), method=method,
                                  chunk_size=chunk_size)
    star = _normalise_star(xi_star, net_a.W1.dtype)
    f_star = objective(star, x, y, kappa=kappa, loss=loss)
    cert = certify(path, net_a, net_b, x, y, kappa=kappa, loss=loss, f_star=f_star, eta=eta, eps=eps,
                   plans=(pa, pb), n_points=n_points, refine_points=refine_points,
                   refine_levels=refine_levels)
    return ConnectResult(path, cert)
