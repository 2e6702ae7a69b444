"""Trajectory (PCA) directions of a training run (Li et al. 2018, §7).

Random directions in a space of millions of parameters are almost orthogonal to an optimisation
trajectory, so a trajectory drawn on a random plane looks like noise. Li et al. (2018, §7,
"Visualizing optimization paths") instead take the final parameters θ_T as the origin, form the
matrix M whose rows are θ_i − θ_T, and plot the loss on the plane of its first two principal
components; the trajectory's projections then show its real shape, and the explained variance says
how much of it the plane holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._params import first_difference, leaf_paths, num_params, partition, ravel, zero_stats
from ._slices import Slice, random_directions_slice

__all__ = ["TrajectoryDirections", "trajectory_directions", "trajectory_slice"]


class TrajectoryDirections(NamedTuple):
    """What `trajectory_directions` returns (T checkpoints, `num` directions).

    - `directions`: tuple of `num` pytrees with the checkpoints' structure: the principal directions
      v_1, …, v_num, orthonormal in the flattened parameter space (non-parameter leaves are those of
      the origin). Largest explained variance first.
    - `explained_variance_ratio`: shape (num,), σ_k² / Σ_j σ_j², the share of the centred matrix's
      total variance along each direction (scikit-learn's `PCA.explained_variance_ratio_`).
    - `coordinates`: shape (T, num), row i = (⟨θ_i − θ_T, v_k⟩)_k, the checkpoints in the plane; the
      last row is 0 (the origin).
    - `singular_values`: shape (num,), σ_k of the centred T × P matrix.
    - `origin`: θ_T, the last checkpoint, as given. A point of the plane is
      θ_T + Σ_k a_k v_k.
    """

    directions: tuple[PyTree, ...]
    explained_variance_ratio: Float[Array, " num"]
    coordinates: Float[Array, "T num"]
    singular_values: Float[Array, " num"]
    origin: PyTree


# Above this many matrix entries (T·P) the T × T Gram matrix is used instead of the SVD of the T × P
# matrix.
_SVD_MAX_ENTRIES = 1 << 22


def _signs(coords: Array) -> Array:
    """±1 per direction: the checkpoint farthest from the origin along direction k gets a positive
    coordinate (for a training run, usually the initial checkpoint). Unlike scikit-learn's
    `svd_flip`, which looks at the largest entry of u_k, this has no tie for T = 2, where the
    centred u_k is (1, −1)/√2."""
    idx = jnp.argmax(jnp.abs(coords), axis=0)
    s = jnp.sign(coords[idx, jnp.arange(coords.shape[1])])
    return jnp.where(s == 0, 1.0, s).astype(coords.dtype)


def _pca_svd(rows: list[Array], num: int):
    """Thin SVD of the centred T × P matrix. `rows`: pieces (T, n_j) of the T × P matrix, side by
    side. Returns (σ (num,), U (T, num), per piece V (num, n_j), Σ_j σ_j² over all j, tolerance on
    σ)."""
    C = jnp.concatenate(rows, axis=1)
    C = C - jnp.mean(C, axis=0)
    U, S, Vt = jnp.linalg.svd(C, full_matrices=False)
    total = jnp.sum(S**2)
    U, S, Vt = U[:, :num], S[:num], Vt[:num]
    cuts = np.cumsum([r.shape[1] for r in rows])[:-1]
    tol = S[0] * max(C.shape) * jnp.finfo(C.dtype).eps
    return S, U, jnp.split(Vt, cuts, axis=1), total, tol


def _pca_gram(rows: list[Array], num: int):
    """The same through the T × T Gram matrix G = C Cᵀ = U Σ² Uᵀ, accumulated leaf by leaf, so that
    nothing larger than T × (largest leaf) is formed; v_k = Cᵀ u_k / σ_k, again leaf by leaf.

    Accuracy: G squares the condition number, so σ_k is accurate to about √(T ε) σ_1 (ε the dtype's
    machine epsilon) instead of ε σ_1, and v_k to about T ε σ_1² / (σ_k² − σ_{k+1}²)."""
    hi = lax.Precision.HIGHEST  # no TF32 / bf16 passes on accelerators
    centred = [r - jnp.mean(r, axis=0) for r in rows]
    G = sum(jnp.matmul(c, c.T, precision=hi) for c in centred)
    G = (G + G.T) / 2
    lam, W = jnp.linalg.eigh(G)  # ascending
    lam, W = lam[::-1][:num], W[:, ::-1][:, :num]
    S = jnp.sqrt(jnp.maximum(lam, 0.0))
    U = W
    T = G.shape[0]
    tol = S[0] * jnp.sqrt(T * jnp.finfo(G.dtype).eps)
    safe = jnp.where(S > 0, S, 1.0)
    V = [jnp.matmul(U.T, c, precision=hi) / safe[:, None] for c in centred]
    return S, U, V, jnp.trace(G), tol


@eqx.filter_jit  # num, method: Python values, hence static; filter_jit reports eqx.error_if cleanly
def _pca(rows, num, method):
    # Rows θ_i − θ_T first: a difference of nearby floats is exact, so the centring below rounds at
    # the scale of the trajectory ‖D‖, not at the scale of the parameters ‖θ‖ (a fine-tuning run
    # moves θ by 1e-4 ‖θ‖ or less).
    rows = [r - r[-1] for r in rows]
    S, U, V, total, tol = (_pca_svd if method == "svd" else _pca_gram)(rows, num)
    T = rows[0].shape[0]
    eps = jnp.finfo(rows[0].dtype).eps
    scale = jnp.sqrt(sum(jnp.sum(r * r) for r in rows))  # ‖D‖_F
    tol = jnp.maximum(tol, T * eps * scale)
    S = eqx.error_if(
        S,
        S[-1] <= tol,
        "checkpoints span fewer than num independent directions (a singular value of the centred "
        "matrix is 0 to working precision); lower num or pass checkpoints that differ",
    )
    # ⟨θ_i − θ_T, v_k⟩ = ⟨c_i − c_T, v_k⟩ = σ_k (u_ik − u_Tk), c the centred rows (C v_k = σ_k u_k).
    coords = S * (U - U[-1])
    sign = _signs(coords)
    return S, [v * sign[:, None] for v in V], S**2 / total, coords * sign


def trajectory_directions(checkpoints: Sequence[PyTree], *, num: int = 2) -> TrajectoryDirections:
    """The principal directions of a training trajectory, with the final checkpoint as origin
    (Li et al. 2018, §7).

    With θ_1, …, θ_T the checkpoints' parameters raveled to vectors of length P, the matrix M (T ×
    P) has rows θ_i − θ_T. Its rows are centred (the mean row is subtracted, as
    `sklearn.decomposition.PCA` does in Li et al.'s code), and the directions are the top `num`
    right singular vectors of the centred matrix, i.e. the principal components of the checkpoints;
    centring makes them independent of the choice of origin. The coordinates are the projections of
    the *uncentred* rows θ_i − θ_T, so the final checkpoint sits at 0. The last row of M is 0 and is
    part of the centring (T rows in all, as in Li et al., whose checkpoint list includes the final
    model), so the centred matrix has rank ≤ T − 1.

    The SVD of the T × P matrix is used while T·P ≤ 2²²; beyond, the eigendecomposition of the T × T
    Gram matrix, accumulated leaf by leaf (O(T² P) time, no P × P and no T × P matrix is formed),
    which handles P = 10⁷ and more. The sign of each direction is fixed so that the checkpoint
    farthest from the origin along it has a positive coordinate.

    Works under `jax.jit`; the computation runs in the promoted dtype of the parameter leaves.

    **Arguments:**

    - `checkpoints`: a list (or tuple) of T ≥ 2 pytrees of the same structure (any model:
      inexact-array leaves are the parameters, every other leaf is carried through from the last
      checkpoint).
    - `num`: number of directions, 1 ≤ num ≤ min(T − 1, P).

    **Returns:** `TrajectoryDirections(directions, explained_variance_ratio, coordinates,
    singular_values, origin)`, shapes (num,), (T, num), (num,); see its docstring.

    **Raises:** `ValueError` naming the argument for fewer than two checkpoints, checkpoints of
    different structure, shapes or dtypes, no parameter leaves, or `num` out of range; an
    `eqx.error_if` runtime error when the checkpoints span fewer than `num` directions.
    """
    if not isinstance(checkpoints, (list, tuple)):
        raise TypeError(
            f"checkpoints must be a list or tuple of pytrees; got {type(checkpoints).__name__}"
        )
    T = len(checkpoints)
    if T < 2:
        raise ValueError(f"checkpoints must hold at least 2 pytrees (a trajectory); got {T}")
    origin = checkpoints[-1]
    params_T, _ = partition(origin)
    leaves_T, treedef = jtu.tree_flatten(params_T)
    paths = leaf_paths(params_T)
    P = num_params(origin)
    if P == 0:
        raise ValueError("checkpoints hold no parameters (no inexact-array leaves with entries)")
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= min(T - 1, P):
        raise ValueError(
            f"num must be an integer in [1, min(T - 1, P)] = [1, {min(T - 1, P)}] "
            f"(T = {T} checkpoints, "
            f"P = {P} parameters; the centred T × P matrix has rank ≤ T − 1); got {num!r}"
        )
    all_leaves = []
    for i, ck in enumerate(checkpoints):
        leaves, td = jtu.tree_flatten(partition(ck)[0])
        if td != treedef:
            raise ValueError(
                f"checkpoints[{i}] has a different parameter structure from checkpoints[-1] "
                f"(the origin), {first_difference(partition(ck)[0], params_T)}"
            )
        for leaf, ref, path in zip(leaves, leaves_T, paths, strict=True):
            if jnp.shape(leaf) != jnp.shape(ref) or jnp.result_type(leaf) != jnp.result_type(ref):
                raise ValueError(
                    f"checkpoints[{i}]{path} has shape {jnp.shape(leaf)} and dtype "
                    f"{jnp.result_type(leaf)}, but checkpoints[-1]{path} has shape "
                    f"{jnp.shape(ref)} and dtype {jnp.result_type(ref)}"
                )
        all_leaves.append(leaves)
    dtype = jnp.result_type(*leaves_T)
    method = "svd" if T * P <= _SVD_MAX_ENTRIES else "gram"
    if method == "svd":  # one T × P matrix (small)
        rows = [jnp.stack([jnp.concatenate([jnp.ravel(l) for l in lv]) for lv in all_leaves])]
        rows = [rows[0].astype(dtype)]
    else:  # leaf by leaf: the T × P matrix is never formed
        rows = [
            jnp.stack([jnp.ravel(lv[j]) for lv in all_leaves]).astype(dtype)
            for j in range(len(leaves_T))
        ]
    # Blocking makes a failed check raise here, not at some later use of the result (a no-op under
    # jit).
    S, V, ratio, coords = jax.block_until_ready(_pca(rows, num, method))
    # `ravel`'s inverse casts each leaf back to its own dtype and restores the non-parameter leaves
    # of the origin (parameter leaves in tree order, as the rows above).
    _, unravel = ravel(origin)
    # directions hold zero running statistics (they do not move a linen batch_stats, …)
    directions = tuple(zero_stats(unravel(jnp.concatenate([v[k] for v in V]))) for k in range(num))
    return TrajectoryDirections(directions, ratio, coords, S, origin)


def trajectory_slice(
    fn: Callable,
    traj: TrajectoryDirections,
    *,
    resolution: int | tuple[int, int] = 21,
    margin: float = 0.2,
    alphas=None,
    betas=None,
    **evaluate_kwargs,
) -> Slice:
    """F on the plane of the first two trajectory directions, θ(α, β) = θ_T + α v_1 + β v_2, on a
    grid that covers the checkpoints (Li et al. 2018, §7, Fig. 9).

    The directions are orthonormal, so (α, β) are Euclidean distances in parameter space and the
    checkpoints' coordinates `traj.coordinates` are their orthogonal projections onto the plane
    (what `jaxland.plot_trajectory` draws over the contours). The grid is evaluated by
    `random_directions_slice` with `directions=(v_1, v_2)`, hence by `evaluate_path`.

    **Arguments:**

    - `fn`: as for `jaxland.evaluate_path` (params ↦ scalar, or an `Objective`).
    - `traj`: a `TrajectoryDirections` with at least two directions.
    - `resolution`: grid points n or (n_α, n_β) when `alphas` / `betas` are not given.
    - `margin`: the default grid covers the bounding box of the checkpoints' coordinates (the
      origin included), enlarged by this fraction of its width and height on every side.
    - `alphas`, `betas`: explicit grid coordinates (rank-1 arrays) instead.
    - `evaluate_kwargs`: passed to `evaluate_path` (`batch_size`, `memory_budget`, …).

    **Returns:** a `Slice` with origin θ_T, u = v_1, v = v_2, anchors [[0, 0]] (the origin).
    """
    if not isinstance(traj, TrajectoryDirections):
        raise TypeError(f"traj must be a TrajectoryDirections; got {type(traj).__name__}")
    if len(traj.directions) < 2:
        raise ValueError(
            "traj must hold at least 2 directions for a plane (trajectory_directions(..., num=2)); "
            f"got {len(traj.directions)}"
        )
    margin = float(margin)
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0; got {margin!r}")
    coords = np.asarray(traj.coordinates, np.float64)[:, :2]
    lo, hi = np.minimum(coords.min(0), 0.0), np.maximum(coords.max(0), 0.0)
    width = np.maximum(hi - lo, 1e-12)  # σ_2 > 0, so the coordinates do spread; guard anyway
    r = (resolution, resolution) if np.ndim(resolution) == 0 else tuple(resolution)
    if len(r) != 2 or any(isinstance(k, bool) or int(k) != k or k < 2 for k in r):
        raise ValueError(
            f"resolution must be an integer >= 2 or a pair of them; got {resolution!r}"
        )
    if alphas is None:
        alphas = np.linspace(lo[0] - margin * width[0], hi[0] + margin * width[0], int(r[0]))
    if betas is None:
        betas = np.linspace(lo[1] - margin * width[1], hi[1] + margin * width[1], int(r[1]))
    return random_directions_slice(
        fn,
        traj.origin,
        directions=tuple(traj.directions[:2]),
        alphas=alphas,
        betas=betas,
        **evaluate_kwargs,
    )
