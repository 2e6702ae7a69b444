"""F(ξ) = E L(f(x), y) + κ R(ξ), eqs. (6), (7) and (16): as a function of (ξ, x, y) (`objective`), as a
function of ξ alone on fixed data (`Objective`, built by `objective_fn`), and the checks at its boundary."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import check_kappa, is_concrete
from ._losses import LossFn, get_loss, softmax_cross_entropy
from ._regularizer import regularizer


def check_data(net, x, y, loss="mse") -> None:
    """Check that x and y fit `net` and `loss`; raise ``ValueError`` naming the argument otherwise.

    Shapes are always checked (they are static). Values (NaN or inf in x or y; labels of the
    logistic and cross-entropy losses) are checked when x and y are concrete, i.e. outside jit —
    validate once before jitting a loop over many calls.

    Expected shapes: x (N, n) with n the network's input size; y (N, d_y) for "mse" and "logistic",
    (N,) integer labels or (N, d_y) probabilities for "softmax_cross_entropy", first axis N for a
    callable loss.
    """
    n, d_y = net.in_features, net.out_features
    xs, ys = getattr(x, "shape", None), getattr(y, "shape", None)
    if xs is None or ys is None:
        raise TypeError("x and y must be arrays")
    if len(xs) != 2 or xs[1] != n:
        raise ValueError(f"x must have shape (N, {n}) for this network; got {tuple(xs)}")
    N = xs[0]
    lossfn = get_loss(loss)
    if lossfn is softmax_cross_entropy:
        if not (tuple(ys) == (N,) or tuple(ys) == (N, d_y)):
            raise ValueError(
                f"y must have shape ({N},) (integer labels) or ({N}, {d_y}) (class probabilities) "
                f"for softmax_cross_entropy; got {tuple(ys)}"
            )
    elif isinstance(loss, str):
        if tuple(ys) != (N, d_y):
            hint = " (use y[:, None] for a single output)" if tuple(ys) == (N,) and d_y == 1 else ""
            raise ValueError(f"y must have shape ({N}, {d_y}) to match x and the network's "
                             f"output; got {tuple(ys)}{hint}")
    elif len(ys) == 0 or ys[0] != N:
        raise ValueError(f"y must have {N} rows like x; got shape {tuple(ys)}")
    # Value checks on concrete data run in NumPy: inside a jit trace even operations on concrete
    # arrays are staged, so jnp would hand back tracers here.
    if is_concrete(x):
        xv = np.asarray(x)
        if np.issubdtype(xv.dtype, np.inexact) and not np.all(np.isfinite(xv)):
            raise ValueError("x contains NaN or inf values")
    if is_concrete(y):
        yv = np.asarray(y)
        if np.issubdtype(yv.dtype, np.inexact) and not np.all(np.isfinite(yv)):
            raise ValueError("y contains NaN or inf values")
        if loss == "logistic" and not np.all((yv == 1) | (yv == -1)):
            raise ValueError("y must hold labels in {-1, +1} for the logistic loss")
        if lossfn is softmax_cross_entropy and len(ys) == 1 and not np.all(
            (yv >= 0) & (yv < d_y) & (yv == np.round(yv))
        ):
            raise ValueError(f"y must hold integer labels in [0, {d_y}) for softmax_cross_entropy")


def data_loss(net, x: Float[Array, "N n"], y: Array, loss: str | LossFn = "mse") -> Array:
    """E L(f(x), y): the mean over the N samples of the per-sample loss (no regulariser, no checks)."""
    return jnp.mean(get_loss(loss)(net(x), y))


def objective(net, x: Float[Array, "N n"], y: Array, *, kappa, loss: str | LossFn = "mse") -> Array:
    """F(ξ) = (1/N) Σ_s L(f(x_s), y_s) + κ R(ξ), eqs. (6)–(7); with "mse" this is eq. (16).

    **Arguments:**
    - `net`: any jaxland model (`SkipNet`, `NoSkipNet`, `TwoLayer`, `ResidualLinear`, `Linear`).
    - `x`: inputs of shape (N, n).
    - `y`: targets, shape (N, d_y) (see `check_data` for the cross-entropy label forms).
    - `kappa`: κ ≥ 0, the weight of the regulariser `regularizer` (R of Theorem 11).
    - `loss`: "mse", "logistic", "softmax_cross_entropy", or a callable (pred, y) -> (N,).

    **Returns:** the scalar F(ξ). Pure and differentiable; works under `jax.vmap` over a stack of
    networks (leading axis on every leaf). Bad shapes, NaN/inf data (outside jit), a negative κ or an
    unknown loss raise ``ValueError`` naming the argument.
    """
    check_kappa(kappa)
    check_data(net, x, y, loss)
    return data_loss(net, x, y, loss) + kappa * regularizer(net)


# --------------------------------------------------------------------------------------------------
# The data objective
# --------------------------------------------------------------------------------------------------


class Objective(eqx.Module):
    """F(ξ) = (1/N) Σ_s L(f_ξ(x_s), y_s) + κ R(ξ) (eqs. 6–7, 16) as a function of the network ξ alone.

    Build with `objective_fn(x, y, kappa=…, loss=…)`. Calling it on a network gives the same value as
    `jaxland.objective(net, x, y, kappa=kappa, loss=loss)`. `evaluate_path` recognises it: it splits the
    data into batches by summing per-sample losses (`loss_sum`) and dividing by N once, and uses the
    structured fast path for SkipNet / NoSkipNet / TwoLayer paths.

    **Fields:** `x` (N, n), `y` (N, d_y) or (N,), `kappa` (scalar array), `loss` (name or callable,
    static).
    """

    x: Array
    y: Array
    kappa: Array
    loss: str | LossFn = eqx.field(static=True, default="mse")

    @property
    def num_samples(self) -> int:
        return self.x.shape[0]

    def loss_sum(self, net, x: Array, y: Array, weights: Array | None = None) -> Array:
        """Σ_s w_s L(f(x_s), y_s) over a batch (weights 0 mark padding rows)."""
        per = get_loss(self.loss)(net(x), y)
        return jnp.sum(per if weights is None else per * weights)

    def penalty(self, net) -> Array:
        """κ R(ξ), the regulariser term (`jaxland.regularizer`)."""
        return self.kappa * regularizer(net)

    def __call__(self, net) -> Array:
        return self.loss_sum(net, self.x, self.y) / self.num_samples + self.penalty(net)


def objective_fn(x: Array, y: Array, *, kappa=0.0, loss: str | LossFn = "mse") -> Objective:
    """The objective F(ξ) = mean L + κ R(ξ) on fixed data, as a function of the network (for paths).

    **Arguments:**
    - `x`: inputs (N, n); `y`: targets (N, d_y) (see `jaxland.check_data`).
    - `kappa`: κ ≥ 0; `loss`: "mse", "logistic", "softmax_cross_entropy" or a callable
      (pred, y) -> (N,) per-sample losses.

    **Returns:** an `Objective`; `obj(net)` equals `jaxland.objective(net, x, y, kappa=kappa, loss=loss)`.
    Data shapes are checked against the network when the objective is first evaluated on a path.
    """
    check_kappa(kappa)
    get_loss(loss)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, n); got {x.shape}")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have {x.shape[0]} rows like x; got shape {y.shape}")
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
    return Objective(x, y, jnp.asarray(kappa, dtype), loss)


# --------------------------------------------------------------------------------------------------
