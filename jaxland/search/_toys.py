"""Toy landscapes with known minima and saddles, for testing path search and depth.

- `muller_brown`: the Müller–Brown potential (Müller & Brown 1979), the standard test of minimum-energy
  path finders: three minima and two first-order saddles in the plane.
- `permutation_counterexample`: the 2-3-2 ReLU network on 3 points of Freeman & Bruna (2017), whose two
  minima differ by a permutation of the hidden units and lie in different components of every sub-level
  set below a proven level (see its docstring for the proof).

Every toy objective is a function of a pytree (an array of shape (2,) for Müller–Brown, a `TwoLayer`
network for the counterexample), so the search code that runs on networks runs on toys unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from .._checks import check_positive_float
from ..model._models import TwoLayer, relu
from ..model._objective import objective


class Toy(NamedTuple):
    """A landscape with known critical points.

    - `name`: a label.
    - `fn`: the objective, a function of one point (shape `(d,)`) returning a scalar.
    - `minima`: (K, d) float64 coordinates of the local minima, sorted by value (lowest first).
    - `minimum_values`: (K,) their values.
    - `saddles`: (S, d) float64 coordinates of the first-order saddles.
    - `saddle_values`: (S,) their values.
    - `saddle_pairs`: (S, 2) int, the indices of the two minima each saddle joins by steepest descent.
    """

    name: str
    fn: Callable[[Array], Array]
    minima: np.ndarray
    minimum_values: np.ndarray
    saddles: np.ndarray
    saddle_values: np.ndarray
    saddle_pairs: np.ndarray

    def saddle_height(self, i: int, j: int) -> float:
        """min over paths from minimum i to minimum j of the maximum of `fn` along them (the
        minimax / "mountain pass" height), computed on the graph whose edges are the known saddles;
        for i == j it is the minimum's own value."""
        K = len(self.minima)
        h = np.full((K, K), np.inf)
        np.fill_diagonal(h, self.minimum_values)
        for (a, b), v in zip(self.saddle_pairs, self.saddle_values, strict=True):
            h[a, b] = h[b, a] = min(h[a, b], v)
        for k in range(K):  # Floyd–Warshall for the minimax (bottleneck) path
            h = np.minimum(h, np.maximum(h[:, k : k + 1], h[k : k + 1, :]))
        return float(h[i, j])


# The four Gaussian terms of the Müller–Brown potential (Müller & Brown, Theor. Chim. Acta 53, 1979).
_MB_A = (-200.0, -100.0, -170.0, 15.0)
_MB_a = (-1.0, -1.0, -6.5, 0.7)
_MB_b = (0.0, 0.0, 11.0, 0.6)
_MB_c = (-10.0, -10.0, -6.5, 0.7)
_MB_x0 = (1.0, 0.0, -0.5, -1.0)
_MB_y0 = (0.0, 0.5, 1.5, 1.0)

# Literature coordinates (rounded to 3 decimals), refined by Newton's method in `muller_brown`.
_MB_MINIMA = ((-0.558, 1.442), (0.623, 0.028), (-0.050, 0.467))  # values ≈ −146.70, −108.17, −80.77
_MB_SADDLES = ((-0.822, 0.624), (0.212, 0.293))  # values ≈ −40.66 (joins 0–2), −72.25 (joins 2–1)


def muller_brown_potential(p: Float[Array, "2"]) -> Array:
    """V(x, y) = Σ_{k=1}^{4} A_k exp(a_k(x−x⁰_k)² + b_k(x−x⁰_k)(y−y⁰_k) + c_k(y−y⁰_k)²).

    The Müller–Brown potential with its standard parameters A = (−200, −100, −170, 15),
    a = (−1, −1, −6.5, 0.7), b = (0, 0, 11, 0.6), c = (−10, −10, −6.5, 0.7), x⁰ = (1, 0, −0.5, −1),
    y⁰ = (0, 0.5, 1.5, 1).

    **Arguments:** `p`: a point of shape (2,).

    **Returns:** the scalar V(p), in p's dtype.
    """
    p = jnp.asarray(p)
    if p.shape != (2,):
        raise ValueError(f"p must have shape (2,) (a point in the plane); got {p.shape}")
    dt = p.dtype if jnp.issubdtype(p.dtype, jnp.floating) else jnp.result_type(float)
    A, a, b, c, x0, y0 = (jnp.asarray(v, dt) for v in (_MB_A, _MB_a, _MB_b, _MB_c, _MB_x0, _MB_y0))
    dx, dy = p[0] - x0, p[1] - y0
    return jnp.sum(A * jnp.exp(a * dx * dx + b * dx * dy + c * dy * dy))


def _newton_critical_points(
    fn, p0: Float[np.ndarray, "K d"], iters: int = 30
) -> tuple[Float[np.ndarray, "K d"], Float[np.ndarray, "K d d"], Float[np.ndarray, " K"]]:
    """Critical points of `fn` near each row of p0 (K, d), by Newton's method on ∇fn = 0 in float64.

    Returns the points (K, d), the Hessians there (K, d, d) and the values (K,).

    (optimistix.root_find with optx.Newton does the same; this vmapped loop is kept dependency-light
    and exact: it converges quadratically from the 3-decimal literature coordinates.)
    """
    with jax.enable_x64(True):
        g, h = jax.grad(fn), jax.hessian(fn)

        @jax.jit
        def run(p):
            def body(_, p):
                return p - jax.vmap(lambda q: jnp.linalg.solve(h(q), g(q)))(p)

            p = jax.lax.fori_loop(0, iters, body, p)
            return p, jax.vmap(g)(p), jax.vmap(h)(p), jax.vmap(fn)(p)

        p, grads, hessians, values = run(jnp.asarray(p0, jnp.float64))
        if not float(jnp.max(jnp.linalg.norm(grads, axis=1))) < 1e-8:
            raise RuntimeError(f"Newton's method did not converge from {p0}")
        return np.asarray(p), np.asarray(hessians), np.asarray(values)


def muller_brown() -> Toy:
    """The Müller–Brown toy: 3 minima, 2 saddles, all located to float64 precision.

    Minima (sorted by value): M0 ≈ (−0.558, 1.442), V ≈ −146.70; M1 ≈ (0.623, 0.028), V ≈ −108.17;
    M2 ≈ (−0.050, 0.467), V ≈ −80.77. Saddles: S0 ≈ (−0.822, 0.624), V ≈ −40.66, joining M0 and M2;
    S1 ≈ (0.212, 0.293), V ≈ −72.25, joining M2 and M1. The minimum-energy path from M0 to M1 runs
    M0 → S0 → M2 → S1 → M1, so its highest point is S0 and the minimax height between M0 and M1 is
    V(S0) ≈ −40.66. Coordinates are the literature values refined by Newton's method on ∇V = 0 in
    float64 (gradient norm < 1e-8); the Hessian's signature is checked (minima positive definite, saddles
    one negative eigenvalue).
    """
    fn = muller_brown_potential
    pts, hess, vals = _newton_critical_points(fn, np.array(_MB_MINIMA + _MB_SADDLES))
    neg = np.sum(np.linalg.eigvalsh(hess) < 0, axis=1)
    if not (np.all(neg[:3] == 0) and np.all(neg[3:] == 1)):
        raise RuntimeError(f"unexpected Hessian signatures {neg} at the Müller–Brown critical points")
    # The literature order of the minima is already by value.
    return Toy("muller_brown", fn, pts[:3], vals[:3], pts[3:], vals[3:], np.array([[0, 2], [2, 1]]))


class PermutationCounterexample(NamedTuple):
    """What `permutation_counterexample` returns.

    - `x`: (3, 2) the three inputs; `y`: (3, 2) the targets (y = x).
    - `kappa`: the weight κ of the regulariser.
    - `net_a`: a trained `TwoLayer` minimum (3 hidden units) with det σ(X W1ᵀ) ≠ 0.
    - `net_b`: `net_a` with hidden units 0 and 1 swapped: the same F, the opposite sign of the
      determinant.
    - `fn`: ξ ↦ F(ξ) = mean_s ‖f(x_s) − y_s‖² + κ R(ξ), a function of a `TwoLayer`.
    - `level_floor`: 1/6, a proven lower bound on max_t F(γ(t)) for every continuous path γ from net_a
      to net_b.
    """

    x: Array
    y: Array
    kappa: float
    net_a: TwoLayer
    net_b: TwoLayer
    fn: Callable
    level_floor: float


def hidden_determinant(net: TwoLayer, x: Array) -> Array:
    """det H with H = σ(X W1ᵀ) the (3, 3) activation matrix of the counterexample (points × units).

    **Arguments:** `net`: a `TwoLayer` with 3 hidden units; `x`: the 3 points, shape (3, n) with n
    the input dimension of `net`.
    """
    if not isinstance(net, TwoLayer):
        raise TypeError(f"net must be a TwoLayer; got {type(net).__name__}")
    m, n = net.W1.shape
    if jnp.shape(x) != (m, n) or m != 3:
        raise ValueError(f"x must have shape (3, {n}) (one row per point, as many as hidden units, "
                         f"3); got shape {jnp.shape(x)} for a net with {m} hidden units")
    return jnp.linalg.det(relu(x @ net.W1.T))


def permutation_counterexample(
    *, kappa: float = 0.01, steps: int = 1500, dtype=None
) -> PermutationCounterexample:
    """The Freeman–Bruna permutation counterexample: a 2-3-2 ReLU network on 3 points.

    Data: x_s = (cos φ_s, sin φ_s) at φ = 90°, 210°, 330° (three unit vectors summing to zero), targets
    y_s = x_s. Model f(x) = W2 σ(W1 x) (`TwoLayer`, W1 (3, 2), W2 (2, 3)), objective
    F = (1/3) Σ_s ‖f(x_s) − y_s‖² + κ R, R = Σ_i ‖w_{2,i}‖₁ ‖w_{1,i}‖₂ (eq. 5).

    `net_a` is trained (Adam, `steps` steps) from the start W1 = X, W2 = Xᵀ, where each unit is active
    on exactly one point; `net_b` is `net_a` with units 0 and 1 swapped (the same function, the same F).

    **Why no path between them stays low (proof).** Let H = σ(X W1ᵀ) ∈ R^{3×3} (nonnegative). Swapping
    two units swaps two columns of H, so det H(net_b) = −det H(net_a) ≠ 0, and on any continuous path
    det H vanishes somewhere. There rank H ≤ 2, so the column space S of H is a plane (or smaller) that
    contains a nonzero nonnegative column h, while the targets' columns span P0 = {v : Σv = 0} with
    YᵀY = (3/2)I. The best W2 leaves the residual ‖P_S^⊥ Y‖² = (3/2)(3 − 1 − cos²α) ≥ (3/2) sin²α, where
    α is the angle between P0 and the direction u of S orthogonal to S ∩ P0; since u·1 = h·1 ≥ ‖h‖₂ ≥ ‖u‖₂,
    sin α = |u·1|/(√3‖u‖) ≥ 1/√3. Hence the data term is ≥ (1/3)(3/2)(1/3) = 1/6 there, and
    max_t F(γ(t)) ≥ 1/6 on every path, while F(net_a) = F(net_b) ≈ κR ≪ 1/6. The two minima lie in
    different components of Ω_F(λ) for every λ < 1/6, so Dynamic String Sampling at the level of the
    minima cannot converge (it exhausts its bead budget). No spare unit exists to route the swap through
    (all three are needed: two nonnegative columns cannot span P0), which is what Theorem 11's
    construction relies on at large width.

    **Arguments:** `kappa` κ > 0; `steps` Adam steps for `net_a`; `dtype` (default float32, or float64
    under x64).

    **Returns:** `PermutationCounterexample`.
    """
    kappa = check_positive_float("kappa", kappa)
    dt = dtype or jnp.result_type(float)
    phi = np.deg2rad(np.array([90.0, 210.0, 330.0]))
    x = jnp.asarray(np.stack([np.cos(phi), np.sin(phi)], axis=1), dt)
    y = x

    def fn(net):
        return objective(net, x, y, kappa=kappa)

    net = TwoLayer(W1=x, W2=x.T)
    opt = optax.adam(1e-2)

    @jax.jit
    def train(net):
        def step(carry, _):
            p, s = carry
            g = jax.grad(fn)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (net, opt.init(net)), None, length=steps)
        return p

    net_a = train(net)
    perm = jnp.array([1, 0, 2])
    net_b = TwoLayer(W1=net_a.W1[perm], W2=net_a.W2[:, perm])
    if not abs(float(hidden_determinant(net_a, x))) > 1e-3:
        raise RuntimeError("the trained minimum has a singular activation matrix")
    return PermutationCounterexample(x, y, float(kappa), net_a, net_b, fn, 1.0 / 6.0)
