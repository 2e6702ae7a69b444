"""Data sets: the bounded synthetic problems the theory assumes, and real ones shipped in packages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_float_dtype, check_key, check_positive_float, check_positive_int
from ..model._models import TwoLayer


class Dataset(NamedTuple):
    """Inputs `x` of shape (N, n), targets `y` (shape depends on the task), and a `name`."""

    x: Float[Array, "N n"]
    y: Array
    name: str


def _dtype(dtype):
    return check_float_dtype(dtype)


def sphere_points(key: PRNGKeyArray, n_samples: int, n: int, dtype=None) -> Float[Array, "N n"]:
    """n_samples points drawn uniformly from the unit sphere S^{n−1} ⊂ R^n."""
    check_key(key)
    check_positive_int("n_samples", n_samples)
    check_positive_int("n", n)
    u = jax.random.normal(key, (n_samples, n), _dtype(dtype))
    return u / jnp.linalg.norm(u, axis=1, keepdims=True)


def _teacher(key, n, d_y, width, dtype) -> TwoLayer:
    return TwoLayer.init(key, n=n, m=width, d_y=d_y, dtype=dtype)


def sphere_teacher(
    key: PRNGKeyArray,
    *,
    n_samples: int,
    n: int,
    d_y: int = 1,
    teacher_width: int = 8,
    noise: float = 0.0,
    dtype=None,
) -> Dataset:
    """Regression with bounded data: x uniform on S^{n−1}, y = T(x) + ν.

    T is a random two-layer ReLU teacher (`TwoLayer.init`, `teacher_width` units with unit-norm rows,
    so |T(x)| ≤ ‖W2‖₁) and ν is uniform on [−noise, noise] per output (bounded, as Assumption 1 asks).
    Returns x of shape (n_samples, n) and y of shape (n_samples, d_y).
    """
    check_positive_int("d_y", d_y)
    check_positive_int("teacher_width", teacher_width)
    noise = check_positive_float("noise", noise, allow_zero=True)
    kx, kt, kn = jax.random.split(key, 3)
    dt = _dtype(dtype)
    x = sphere_points(kx, n_samples, n, dt)
    y = _teacher(kt, n, d_y, teacher_width, dt)(x)
    y = y + noise * jax.random.uniform(kn, y.shape, dt, -1.0, 1.0)
    return Dataset(x, y, f"sphere_teacher(n={n}, width={teacher_width}, noise={noise})")


def sphere_classification(
    key: PRNGKeyArray, *, n_samples: int, n: int, teacher_width: int = 8, dtype=None
) -> Dataset:
    """Binary classification with x uniform on S^{n−1} and labels y = sign(T(x) − median T) ∈ {−1, +1}.

    Centring at the median balances the classes. y has shape (n_samples, 1), for the "logistic" loss.
    """
    check_positive_int("teacher_width", teacher_width)
    kx, kt = jax.random.split(key)
    dt = _dtype(dtype)
    x = sphere_points(kx, n_samples, n, dt)
    s = _teacher(kt, n, 1, teacher_width, dt)(x)
    y = jnp.where(s > jnp.median(s), 1.0, -1.0).astype(dt)
    return Dataset(x, y, f"sphere_classification(n={n}, width={teacher_width})")


def _sklearn():
    try:
        import sklearn.datasets as skd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this data set ships with scikit-learn; install it with `pip install 'jaxland[data]'`"
        ) from e
    return skd


def _to_unit_ball(x: np.ndarray) -> np.ndarray:
    """Scale all rows by one constant so that the largest row norm is 1 (bounded inputs)."""
    return x / np.max(np.linalg.norm(x, axis=1))


def digits(*, onehot: bool = False, classes=None, dtype=None) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1797 images, 64 features), inputs scaled into the unit ball.

    y is integer labels (N,) for softmax cross-entropy, or one-hot (N, k) with `onehot=True` (for mse).
    `classes` keeps a subset of the digits (relabelled 0..k−1). Needs the `data` extra.
    """
    dt = _dtype(dtype)
    if classes is not None:
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
            raise TypeError(f"classes must be a sequence of digits 0..9; got "
                            f"{type(classes).__name__}")
        classes = list(classes)
        if (len(classes) < 2 or len(set(classes)) != len(classes)
                or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool)
                           and 0 <= c <= 9 for c in classes)):
            raise ValueError(f"classes must be at least two distinct digits in 0..9; got "
                             f"{classes!r}")
    d = _sklearn().load_digits()
    x, y = d.data.astype(np.float64), d.target.astype(np.int64)
    if classes is not None:
        keep = np.isin(y, classes)
        x, y = x[keep], np.searchsorted(np.array(sorted(classes)), y[keep])
    k = int(y.max()) + 1
    x = _to_unit_ball(x)
    yy = jnp.asarray(np.eye(k)[y], dt) if onehot else jnp.asarray(y, jnp.int32)
    return Dataset(jnp.asarray(x, dt), yy, "digits")


def diabetes(*, dtype=None) -> Dataset:
    """scikit-learn's bundled diabetes regression set (442 × 10), inputs scaled into the unit ball and
    targets standardised, y of shape (442, 1). Needs the `data` extra."""
    dt = _dtype(dtype)
    d = _sklearn().load_diabetes()
    x = _to_unit_ball(d.data - d.data.mean(0))
    y = (d.target - d.target.mean()) / d.target.std()
    return Dataset(jnp.asarray(x, dt), jnp.asarray(y[:, None], dt), "diabetes")


def default_problem(*, quick: bool = False, dtype=None) -> Dataset:
    """The embedded default data of `jaxland reproduce`: a fixed-key `sphere_teacher` problem.

    n = 3 inputs on the sphere (small n makes Theorem 11's ε = m^{(η−1)/n} meaningful at moderate
    widths), a 6-unit teacher, uniform noise 0.05; 512 samples (256 with `quick`).
    """
    return sphere_teacher(
        jax.random.PRNGKey(20200711), n_samples=256 if quick else 512, n=3, teacher_width=6,
        noise=0.05, dtype=dtype,
    )._replace(name="default")


DATASETS = ("default", "digits", "diabetes")


def load(name: str, *, quick: bool = False, dtype=None) -> tuple[Dataset, str]:
    """A data set by name, with the loss that fits it: one of `DATASETS`."""
    if name == "default":
        return default_problem(quick=quick, dtype=dtype), "mse"
    if name == "diabetes":
        return diabetes(dtype=dtype), "mse"
    if name == "digits":
        return digits(onehot=True, classes=(0, 1), dtype=dtype), "mse"
    raise ValueError(f"name must be one of {DATASETS} (a data set); got {name!r}")
