"""The paper's networks as equinox Modules.

Every model maps a batch ``x`` of shape ``(N, n)`` to outputs of shape ``(N, d_y)``. Fields carry the
paper's names, so ``net.W1`` is the ``W1`` of eq. (3). All models are pytrees: ``jax.tree.map``, ``jit``,
``vmap`` and ``grad`` apply directly, and a stack of networks (leading axis on every leaf) is what
``jax.vmap`` over a batch of parameter points sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_float_dtype, check_key, check_positive_float, check_positive_int


def relu(z: Array) -> Array:
    """σ(z) = max(z, 0), the activation of every network in the paper."""
    return jnp.maximum(z, 0)


def relu_net(theta: Sequence[Float[Array | np.ndarray, "_ _"]], z: Float[Array | np.ndarray, "N d_in"]) -> Float[Array, "N d_out"]:
    """The bias-free ReLU network g(θ, z) = θ_k σ(θ_{k−1} … σ(θ_1 z)) on a batch.

    **Arguments:**
    - `theta`: matrices θ_1 … θ_k, θ_1 of shape (h_1, d_in), θ_k of shape (d_out, h_{k−1}); k ≥ 1.
    - `z`: inputs of shape (N, d_in), one per row.

    **Returns:** g(θ, z) row by row, shape (N, d_out). With k = 1, g is the linear map θ_1 z.
    """
    if isinstance(theta, (str, bytes)) or not isinstance(theta, Sequence) or len(theta) == 0:
        raise TypeError(f"theta must be a non-empty sequence of matrices θ_1 … θ_k; got "
                        f"{type(theta).__name__}")
    zs = jnp.shape(z)
    if len(zs) != 2:
        raise ValueError(f"z must have shape (N, d_in) (one input per row); got {zs}")
    ts = jnp.shape(theta[0])
    if len(ts) != 2 or ts[1] != zs[1]:
        raise ValueError(f"z has {zs[1]} columns but theta[0] has shape {ts} (expected "
                         f"(h_1, {zs[1]}))")
    h = z
    for i, t in enumerate(theta):
        if i > 0:
            h = relu(h)
        h = h @ t.T
    return h


def _shape(a) -> tuple[int, ...] | None:
    s = getattr(a, "shape", None)
    return None if s is None else tuple(s)


def _check_matrix(name: str, a) -> None:
    """A field of a model: a floating-point array (JAX, NumPy, a tracer) of rank 2."""
    s, dt = _shape(a), getattr(a, "dtype", None)
    if s is None or dt is None:
        raise TypeError(f"{name} must be a floating-point array of rank 2 (e.g. jnp.asarray(...)); "
                        f"got {type(a).__name__}")
    if len(s) != 2:
        raise ValueError(f"{name} must be a matrix (2-D array); got shape {s}")
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must hold floating-point numbers; got dtype {dt}")


def _check_sizes(**sizes) -> None:
    for name, v in sizes.items():
        check_positive_int(name, v)


def _check_hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"hidden must be a sequence of positive integers (the widths of g's hidden "
                        f"layers); got {type(hidden).__name__}")
    for i, h in enumerate(hidden):
        check_positive_int(f"hidden[{i}]", h)
    return tuple(int(h) for h in hidden)


def _check_theta(theta, d_in: int | None, d_out: int | None, d_in_name: str, d_out_name: str):
    if not isinstance(theta, tuple):
        raise TypeError(f"theta must be a tuple of matrices; got {type(theta).__name__}")
    if len(theta) == 0:
        raise ValueError("theta must hold at least one matrix (k >= 1)")
    for i, t in enumerate(theta):
        _check_matrix(f"theta[{i}]", t)
    shapes = [_shape(t) for t in theta]
    if d_in is not None and shapes[0][1] != d_in:
        raise ValueError(
            f"theta[0] has {shapes[0][1]} columns but {d_in_name} is {d_in} "
            f"(θ_1 must have shape (h_1, {d_in}))"
        )
    for i in range(1, len(shapes)):
        if shapes[i][1] != shapes[i - 1][0]:
            raise ValueError(
                f"theta[{i}] has {shapes[i][1]} columns but theta[{i - 1}] has {shapes[i - 1][0]} rows"
            )
    if d_out is not None and shapes[-1][0] != d_out:
        raise ValueError(
            f"theta[{len(shapes) - 1}] has {shapes[-1][0]} rows but {d_out_name} is {d_out}"
        )


def _check_input(net, x) -> None:
    s = _shape(x)
    if s is None:
        raise TypeError(f"x must be an array of shape (N, {net.in_features}); got {type(x).__name__}")
    if len(s) != 2 or s[1] != net.in_features:
        raise ValueError(f"x must have shape (N, {net.in_features}); got {s}")


def _sphere_rows(key: PRNGKeyArray, m: int, n: int, dtype) -> Array:
    u = jax.random.normal(key, (m, n), dtype)
    return u / jnp.linalg.norm(u, axis=1, keepdims=True)


def init_theta(key, sizes: Sequence[int], dtype) -> tuple[Array, ...]:
    """He-normal matrices mapping sizes[0] → sizes[1] → … → sizes[-1]."""
    keys = jax.random.split(key, len(sizes) - 1)
    return tuple(
        jax.random.normal(k, (b, a), dtype) * math.sqrt(2.0 / a)
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    )


class AbstractSkipLayers(eqx.Module):
    """The layers shared by `SkipNet` and its no-skip control `NoSkipNet`.

    **Fields** (the paper's names and shapes):
    - `W1`: (m, n), first layer; row i is w_{1,i}.
    - `W2`: (d_y, m), output layer; column i is w_{2,i}.
    - `V1`: (m, d_o), maps the residual branch back onto the m hidden units.
    - `V2`: (d_g, m), feeds the hidden units into the residual branch; column i is v_{2,i}.
    - `theta`: tuple (θ_1, …, θ_k) of the bias-free ReLU network g, θ_1 (h_1, d_g), θ_k (d_o, h_{k−1}).

    Shapes are checked when the network is built; an inconsistency raises ``ValueError`` naming both
    fields, e.g. "W2 has 11 columns but W1 has 10 rows".
    """

    W1: Float[Array | np.ndarray, "m n"]
    W2: Float[Array | np.ndarray, "d_y m"]
    V1: Float[Array | np.ndarray, "m d_o"]
    V2: Float[Array | np.ndarray, "d_g m"]
    theta: tuple[Float[Array | np.ndarray, "..."], ...]

    def __check_init__(self):
        for name in ("W1", "W2", "V1", "V2"):
            _check_matrix(name, getattr(self, name))
        s1, s2, v1, v2 = (_shape(getattr(self, k)) for k in ("W1", "W2", "V1", "V2"))
        m = s1[0]
        if s2[1] != m:
            raise ValueError(f"W2 has {s2[1]} columns but W1 has {m} rows")
        if v2[1] != m:
            raise ValueError(f"V2 has {v2[1]} columns but W1 has {m} rows")
        if v1[0] != m:
            raise ValueError(f"V1 has {v1[0]} rows but W1 has {m} rows")
        _check_theta(self.theta, v2[0], v1[1], "the number of rows of V2 (d_g)",
                     "the number of columns of V1 (d_o)")

    @property
    def in_features(self) -> int:
        return self.W1.shape[-1]

    @property
    def width(self) -> int:
        """m, the number of hidden units of the first layer."""
        return self.W1.shape[-2]

    @property
    def out_features(self) -> int:
        return self.W2.shape[-2]

    def hidden(self, x: Float[Array | np.ndarray, "N n"]) -> Float[Array, "N m"]:
        """σ(W1 x) for each row of x."""
        return relu(x @ self.W1.T)

    def branch(self, h: Float[Array, "N m"]) -> Float[Array, "N d_o"]:
        """g(θ, V2 h), the residual branch evaluated on hidden activations h."""
        return relu_net(self.theta, h @ self.V2.T)

    @classmethod
    def init(
        cls,
        key: PRNGKeyArray,
        *,
        n: int,
        m: int,
        d_y: int = 1,
        d_g: int = 16,
        d_o: int = 16,
        hidden: Sequence[int] = (16,),
        residual_scale: float = 0.1,
        dtype=None,
    ):
        """A random network of this class.

        Scheme: rows of W1 uniform on the unit sphere S^{n−1} (the paper's normalisation), W2 and V2
        with i.i.d. N(0, 1/m) entries, θ He-normal (N(0, 2/fan_in)) through the sizes
        d_g → hidden… → d_o, and V1 with N(0, residual_scale²/d_o) entries so the residual branch starts
        small relative to the skip path.

        Sizes must be positive integers and `residual_scale` a finite number ≥ 0 (``ValueError``
        naming the argument otherwise).
        """
        check_key(key)
        _check_sizes(n=n, m=m, d_y=d_y, d_g=d_g, d_o=d_o)
        hidden = _check_hidden(hidden)
        residual_scale = check_positive_float("residual_scale", residual_scale, allow_zero=True)
        dtype = check_float_dtype(dtype)
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        return cls(
            W1=_sphere_rows(k1, m, n, dtype),
            W2=jax.random.normal(k2, (d_y, m), dtype) / math.sqrt(m),
            V1=jax.random.normal(k3, (m, d_o), dtype) * (residual_scale / math.sqrt(d_o)),
            V2=jax.random.normal(k4, (d_g, m), dtype) / math.sqrt(m),
            theta=init_theta(k5, (d_g, *hidden, d_o), dtype),
        )


class SkipNet(AbstractSkipLayers):
    """f1(x) = W2[σ(W1 x) + V1 g(θ, V2 σ(W1 x))], the skip-connection network of eq. (3).

    Fields `W1` (m, n), `W2` (d_y, m), `V1` (m, d_o), `V2` (d_g, m), `theta` (θ_1 … θ_k), see
    `AbstractSkipLayers`. Build with keyword fields or `SkipNet.init(key, n=…, m=…, …)`.
    """

    def __call__(self, x: Float[Array | np.ndarray, "N n"]) -> Float[Array, "N d_y"]:
        _check_input(self, x)
        h = self.hidden(x)
        return (h + self.branch(h) @ self.V1.T) @ self.W2.T


class NoSkipNet(AbstractSkipLayers):
    """The control without a skip connection: f(x) = W2 V1 g(θ, V2 σ(W1 x)).

    The same layers and fields as `SkipNet` (eq. 3) with the identity term σ(W1 x) removed: the plain
    deep ReLU network that the paper's Figure 1 contrasts with the residual one. The regulariser is the
    same formula as for SkipNet.
    """

    def __call__(self, x: Float[Array | np.ndarray, "N n"]) -> Float[Array, "N d_y"]:
        _check_input(self, x)
        return self.branch(self.hidden(x)) @ (self.W2 @ self.V1).T


class TwoLayer(eqx.Module):
    """f2(x) = W2 σ(W1 x), the two-layer ReLU network of eq. (4).

    **Fields:** `W1` (m, n), `W2` (d_y, m).
    """

    W1: Float[Array | np.ndarray, "m n"]
    W2: Float[Array | np.ndarray, "d_y m"]

    def __check_init__(self):
        _check_matrix("W1", self.W1)
        _check_matrix("W2", self.W2)
        s1, s2 = _shape(self.W1), _shape(self.W2)
        if s2[1] != s1[0]:
            raise ValueError(f"W2 has {s2[1]} columns but W1 has {s1[0]} rows")

    @property
    def in_features(self) -> int:
        return self.W1.shape[-1]

    @property
    def width(self) -> int:
        return self.W1.shape[-2]

    @property
    def out_features(self) -> int:
        return self.W2.shape[-2]

    def hidden(self, x):
        return relu(x @ self.W1.T)

    def __call__(self, x: Float[Array | np.ndarray, "N n"]) -> Float[Array, "N d_y"]:
        _check_input(self, x)
        return self.hidden(x) @ self.W2.T

    @classmethod
    def init(cls, key: PRNGKeyArray, *, n: int, m: int, d_y: int = 1, dtype=None) -> TwoLayer:
        """Rows of W1 uniform on S^{n−1}; W2 with i.i.d. N(0, 1/m) entries (sizes: positive
        integers)."""
        check_key(key)
        _check_sizes(n=n, m=m, d_y=d_y)
        dtype = check_float_dtype(dtype)
        k1, k2 = jax.random.split(key)
        return cls(
            W1=_sphere_rows(k1, m, n, dtype),
            W2=jax.random.normal(k2, (d_y, m), dtype) / math.sqrt(m),
        )


class ResidualLinear(eqx.Module):
    """f(x) = W(x + V g(θ, x)), the one-layer residual model of eqs. (9)/(11) (Shamir 2018).

    **Fields:** `W` (d_y, d_x), `V` (d_x, d_z), `theta` the bias-free ReLU network g: R^{d_x} → R^{d_z},
    θ_1 (h_1, d_x), θ_k (d_z, h_{k−1}).
    """

    W: Float[Array | np.ndarray, "d_y d_x"]
    V: Float[Array | np.ndarray, "d_x d_z"]
    theta: tuple[Float[Array | np.ndarray, "..."], ...]

    def __check_init__(self):
        _check_matrix("W", self.W)
        _check_matrix("V", self.V)
        sw, sv = _shape(self.W), _shape(self.V)
        if sv[0] != sw[1]:
            raise ValueError(f"V has {sv[0]} rows but W has {sw[1]} columns")
        _check_theta(self.theta, sw[1], sv[1], "the number of columns of W (d_x)",
                     "the number of columns of V (d_z)")

    @property
    def in_features(self) -> int:
        return self.W.shape[-1]

    @property
    def out_features(self) -> int:
        return self.W.shape[-2]

    def __call__(self, x: Float[Array | np.ndarray, "N d_x"]) -> Float[Array, "N d_y"]:
        _check_input(self, x)
        return (x + relu_net(self.theta, x) @ self.V.T) @ self.W.T

    @classmethod
    def init(
        cls,
        key: PRNGKeyArray,
        *,
        d_x: int,
        d_y: int = 1,
        d_z: int = 8,
        hidden: Sequence[int] = (16,),
        dtype=None,
    ) -> ResidualLinear:
        """W with N(0, 1/d_x) entries, V with N(0, 1/d_z), θ He-normal d_x → hidden… → d_z (sizes:
        positive integers)."""
        check_key(key)
        _check_sizes(d_x=d_x, d_y=d_y, d_z=d_z)
        hidden = _check_hidden(hidden)
        dtype = check_float_dtype(dtype)
        k1, k2, k3 = jax.random.split(key, 3)
        return cls(
            W=jax.random.normal(k1, (d_y, d_x), dtype) / math.sqrt(d_x),
            V=jax.random.normal(k2, (d_x, d_z), dtype) / math.sqrt(d_z),
            theta=init_theta(k3, (d_x, *hidden, d_z), dtype),
        )


class Linear(eqx.Module):
    """f(x) = W x, the linear predictor of eq. (12). **Field:** `W` (d_y, d_x)."""

    W: Float[Array | np.ndarray, "d_y d_x"]

    def __check_init__(self):
        _check_matrix("W", self.W)

    @property
    def in_features(self) -> int:
        return self.W.shape[-1]

    @property
    def out_features(self) -> int:
        return self.W.shape[-2]

    def __call__(self, x: Float[Array | np.ndarray, "N d_x"]) -> Float[Array, "N d_y"]:
        _check_input(self, x)
        return x @ self.W.T

    @classmethod
    def init(cls, key: PRNGKeyArray, *, d_x: int, d_y: int = 1, dtype=None) -> Linear:
        """W with N(0, 1/d_x) entries (sizes: positive integers)."""
        check_key(key)
        _check_sizes(d_x=d_x, d_y=d_y)
        dtype = check_float_dtype(dtype)
        return cls(W=jax.random.normal(key, (d_y, d_x), dtype) / math.sqrt(d_x))


def embed_two_layer(two: TwoLayer, like: AbstractSkipLayers, slots=None) -> SkipNet:
    """The SkipNet ξ* = (W1*, W2*, 0, 0, 0) of the proof of Theorem 11, at the width of `like`.

    The l units of the two-layer network `two` are placed in the hidden-unit positions `slots`
    (default: the first l). The other rows of W1 are the rows of `like.W1` scaled to unit norm (their
    outgoing weights are zero, so they do not affect f); W2 is zero outside the slots; V1, V2 and θ
    are zero. The result computes exactly f2 = W2* σ(W1* x) and has R(ξ*) = ‖W2*‖₁ for unit rows.

    **Arguments:** `two` (W1 (l, n), W2 (d_y, l)); `like` a SkipNet of width m ≥ l with the same n and
    d_y; `slots` an integer array of l distinct positions in [0, m).
    """
    l, n = two.W1.shape
    m = like.width
    if n != like.in_features or two.out_features != like.out_features:
        raise ValueError(
            f"two has (n, d_y) = ({n}, {two.out_features}) but like has "
            f"({like.in_features}, {like.out_features})"
        )
    if l > m:
        raise ValueError(f"two has {l} units but like has only m = {m}")
    slots = jnp.arange(l) if slots is None else jnp.asarray(slots)
    if slots.shape != (l,):
        raise ValueError(f"slots must have shape ({l},); got {slots.shape}")
    norms = jnp.linalg.norm(like.W1, axis=1, keepdims=True)
    W1 = jnp.where(norms > 0, like.W1 / jnp.where(norms > 0, norms, 1), jnp.eye(m, n, dtype=like.W1.dtype))
    W1 = W1.at[slots].set(two.W1.astype(W1.dtype))
    W2 = jnp.zeros_like(like.W2).at[:, slots].set(two.W2.astype(like.W2.dtype))
    return SkipNet(
        W1=W1,
        W2=W2,
        V1=jnp.zeros_like(like.V1),
        V2=jnp.zeros_like(like.V2),
        theta=tuple(jnp.zeros_like(t) for t in like.theta),
    )
