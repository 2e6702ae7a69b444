"""F(ξ) = E L(f(x), y) + κ R(ξ), eqs. (6), (7) and (16): as a function of (ξ, x, y) (`objective`), as a
function of ξ alone on fixed data (`Objective`, built by `objective_fn`), and the checks at its boundary."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Real

from .._checks import check_kappa, is_concrete
from ._losses import LossFn, get_loss, softmax_cross_entropy
from ._regularizer import regularizer


def _shape_of(name: str, a) -> tuple[int, ...]:
    s = getattr(a, "shape", None)
    dt = getattr(a, "dtype", None)
    if s is None or dt is None:
        raise TypeError(f"{name} must be an array (jax or NumPy); got {type(a).__name__}")
    if not (jnp.issubdtype(dt, jnp.number) or jnp.issubdtype(dt, jnp.bool_)) or jnp.issubdtype(
            dt, jnp.complexfloating):
        raise TypeError(f"{name} must hold real numbers; got dtype {dt}")
    return tuple(s)


def _check_shapes(xs: tuple, ys: tuple, loss, n: int | None, d_y: int | None) -> None:
    """Static checks of x (N, n) and y against the loss and, when given, the network's sizes."""
    if len(xs) != 2:
        want = f"(N, {n})" if n is not None else "(N, n)"
        raise ValueError(f"x must have shape {want} (rank 2, one sample per row); got shape {xs}")
    N = xs[0]
    if N == 0:
        raise ValueError(f"x must hold at least one sample (row); got shape {xs}")
    if n is not None and xs[1] != n:
        raise ValueError(f"x must have shape (N, {n}) for this network (n = {n} inputs); got {xs}")
    lossfn = get_loss(loss)
    dy = "d_y" if d_y is None else d_y
    if lossfn is softmax_cross_entropy:
        ok = ys == (N,) or (len(ys) == 2 and ys[0] == N and (d_y is None or ys[1] == d_y))
        if not ok:
            raise ValueError(
                f"y must have shape ({N},) (integer labels) or ({N}, {dy}) (class probabilities) "
                f"for softmax_cross_entropy; got {ys}"
            )
    elif isinstance(loss, str):
        ok = len(ys) == 2 and ys[0] == N and (d_y is None or ys[1] == d_y)
        if not ok:
            hint = " (use y[:, None] for a single output)" if ys == (N,) else ""
            raise ValueError(f"y must have shape ({N}, {dy}) to match x (N = {N} rows) and the "
                             f"network's output; got {ys}{hint}")
    elif len(ys) == 0 or ys[0] != N:
        raise ValueError(f"y must have {N} rows like x; got shape {ys}")


def _check_values(x, y, loss) -> int | None:
    """Value checks on concrete data (NaN/inf, labels). Returns the number of classes the integer
    labels of softmax cross-entropy need (max label + 1), else None. Traced data are not checked."""
    # NumPy, not jnp: inside a jit trace even operations on concrete arrays are staged
    if is_concrete(x):
        xv = np.asarray(x)
        if np.issubdtype(xv.dtype, np.inexact) and not np.all(np.isfinite(xv)):
            bad = int(np.sum(~np.isfinite(xv)))
            raise ValueError(f"x contains NaN or inf values ({bad} of {xv.size})")
    if not is_concrete(y):
        return None
    yv = np.asarray(y)
    if np.issubdtype(yv.dtype, np.inexact) and not np.all(np.isfinite(yv)):
        bad = int(np.sum(~np.isfinite(yv)))
        raise ValueError(f"y contains NaN or inf values ({bad} of {yv.size})")
    if loss == "logistic" and not np.all((yv == 1) | (yv == -1)):
        raise ValueError("y must hold labels in {-1, +1} for the logistic loss; got values in "
                         f"[{yv.min()}, {yv.max()}]")
    if get_loss(loss) is softmax_cross_entropy and yv.ndim == 1:
        if not np.all((yv >= 0) & (yv == np.round(yv))):
            raise ValueError("y must hold integer labels >= 0 for softmax_cross_entropy; got "
                             f"values in [{yv.min()}, {yv.max()}]")
        return int(yv.max()) + 1
    return None


def _check_classes(classes: int | None, d_y: int) -> None:
    if classes is not None and classes > d_y:
        raise ValueError(f"y must hold integer labels in [0, {d_y}) for softmax_cross_entropy with "
                         f"this network (d_y = {d_y} outputs); got labels up to {classes - 1}")


def check_data(net, x, y, loss="mse") -> None:
    """Check that x and y fit `net` and `loss`; raise an exception naming the argument otherwise.

    Shapes and dtypes are always checked (they are static, so also under jit). Values (NaN or inf in
    x or y; labels of the logistic and cross-entropy losses) are checked when x and y are concrete,
    i.e. outside jit — validate once before jitting a loop over many calls.

    Expected: x (N, n) with N ≥ 1 and n the network's input size; y (N, d_y) for "mse" and
    "logistic" (labels ±1), (N,) integer labels in [0, d_y) or (N, d_y) probabilities for
    "softmax_cross_entropy", first axis N for a callable loss.
    """
    xs, ys = _shape_of("x", x), _shape_of("y", y)
    # a model without the jaxland size properties (a user's equinox model): the data alone
    n, d_y = getattr(net, "in_features", None), getattr(net, "out_features", None)
    _check_shapes(xs, ys, loss, n, d_y)
    classes = _check_values(x, y, loss)
    if d_y is not None:
        _check_classes(classes, d_y)


def _mean_loss(net, x, y, loss) -> Array:
    return jnp.mean(get_loss(loss)(net(x), y))


def data_loss(net, x: Real[ArrayLike, "N n"], y: Real[ArrayLike, "N ..."], loss: str | LossFn = "mse") -> Array:
    """E L(f(x), y): the mean over the N samples of the per-sample loss (no regulariser).

    x and y are checked as for `objective` (`check_data`; shapes always, values when concrete).
    """
    check_data(net, x, y, loss)
    return _mean_loss(net, x, y, loss)


def objective(net, x: Real[ArrayLike, "N n"], y: Real[ArrayLike, "N ..."], *, kappa, loss: str | LossFn = "mse") -> Array:
    """F(ξ) = (1/N) Σ_s L(f(x_s), y_s) + κ R(ξ), eqs. (6)–(7); with "mse" this is eq. (16).

    **Arguments:**
    - `net`: any jaxland model (`SkipNet`, `NoSkipNet`, `TwoLayer`, `ResidualLinear`, `Linear`).
    - `x`: inputs of shape (N, n).
    - `y`: targets, shape (N, d_y) (see `check_data` for the cross-entropy label forms).
    - `kappa`: κ ≥ 0, the weight of the regulariser `regularizer` (R of Theorem 11).
    - `loss`: "mse", "logistic", "softmax_cross_entropy", or a callable (pred, y) -> (N,).

    **Returns:** the scalar F(ξ). Pure and differentiable; works under `jax.vmap` over a stack of
    networks (leading axis on every leaf). Bad shapes, empty or NaN/inf data (outside jit), an
    unknown loss, or a κ that is not a finite number ≥ 0 raise an exception naming the argument; a
    traced κ (under `jax.jit`) is checked when the compiled function runs (`equinox.error_if`).
    """
    kappa = check_kappa(kappa)
    check_data(net, x, y, loss)
    return _mean_loss(net, x, y, loss) + kappa * regularizer(net)


# --------------------------------------------------------------------------------------------------
# The data objective
# --------------------------------------------------------------------------------------------------


class Objective(eqx.Module):
    """F(ξ) = (1/N) Σ_s L(f_ξ(x_s), y_s) + κ R(ξ) (eqs. 6–7, 16) as a function of the network ξ alone.

    Build with `objective_fn(x, y, kappa=…, loss=…)` (or `Objective(x, y, kappa, loss)`, the same
    checks). Calling it on a network gives the same value as
    `jaxland.objective(net, x, y, kappa=kappa, loss=loss)`. `evaluate_path` recognises it: it splits the
    data into batches by summing per-sample losses (`loss_sum`) and dividing by N once, and uses the
    structured fast path for SkipNet / NoSkipNet / TwoLayer paths.

    The data are checked when it is built (rank, N ≥ 1 rows in both, finiteness and labels when
    concrete, κ as in `objective`), and against the network's input and output sizes at every call
    (static shapes: free, and also under jit). A rank-1 y with "mse" is refused (it would broadcast
    against the (N, 1) output).

    **Fields:** `x` (N, n), `y` (N, d_y) or (N,), `kappa` (scalar array), `loss` (name or callable,
    static), `classes` (static: max integer label + 1 for softmax cross-entropy labels, else None).
    """

    x: Array
    y: Array
    kappa: Array
    loss: str | LossFn = eqx.field(static=True, default="mse")
    classes: int | None = eqx.field(static=True, default=None)

    def __init__(self, x, y, kappa=0.0, loss: str | LossFn = "mse", classes: int | None = None):
        kappa = check_kappa(kappa)
        get_loss(loss)
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        if isinstance(y, (list, tuple)):
            y = np.asarray(y)
        xs, ys = _shape_of("x", x), _shape_of("y", y)
        _check_shapes(xs, ys, loss, None, None)
        seen = _check_values(x, y, loss)
        x, y = jnp.asarray(x), jnp.asarray(y)
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
        self.x, self.y = x, y
        self.kappa = jnp.asarray(kappa, dtype)
        self.loss = loss
        self.classes = seen if classes is None else classes

    @property
    def num_samples(self) -> int:
        return self.x.shape[0]

    def check_net(self, net) -> None:
        """Check the data against the network's sizes (static: shapes only)."""
        _check_shapes(tuple(self.x.shape), tuple(self.y.shape), self.loss, net.in_features,
                      net.out_features)
        _check_classes(self.classes, net.out_features)

    def loss_sum(self, net, x: Array, y: Array, weights: Array | None = None) -> Array:
        """Σ_s w_s L(f(x_s), y_s) over a batch (weights 0 mark padding rows)."""
        per = get_loss(self.loss)(net(x), y)
        return jnp.sum(per if weights is None else per * weights)

    def penalty(self, net) -> Array:
        """κ R(ξ), the regulariser term (`jaxland.regularizer`)."""
        return self.kappa * regularizer(net)

    def __call__(self, net) -> Array:
        if hasattr(net, "in_features") and hasattr(net, "out_features"):
            self.check_net(net)
        return self.loss_sum(net, self.x, self.y) / self.num_samples + self.penalty(net)


def objective_fn(x: Real[ArrayLike, "N n"], y: Real[ArrayLike, "N ..."], *, kappa=0.0, loss: str | LossFn = "mse") -> Objective:
    """The objective F(ξ) = mean L + κ R(ξ) on fixed data, as a function of the network (for paths).

    **Arguments:**
    - `x`: inputs (N, n), N ≥ 1; `y`: targets (N, d_y) (see `jaxland.check_data`).
    - `kappa`: κ ≥ 0, finite; `loss`: "mse", "logistic", "softmax_cross_entropy" or a callable
      (pred, y) -> (N,) per-sample losses.

    **Returns:** an `Objective`; `obj(net)` equals `jaxland.objective(net, x, y, kappa=kappa, loss=loss)`.
    x and y are checked now (rank, rows, finiteness, labels); their sizes are checked against the
    network at each call. Bad input raises an exception naming the argument.
    """
    return Objective(x, y, kappa, loss)


# --------------------------------------------------------------------------------------------------
