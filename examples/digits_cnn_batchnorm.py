"""An equinox CNN with BatchNorm on scikit-learn's 8×8 digits: the loss-landscape workflow, end to
end.

1. Train two CNNs from different initialisations (training-mode BatchNorm, Adam on mini-batches),
   recording a checkpoint every k steps.
2. The straight segment between them, with the BatchNorm statistics re-estimated at every point
   (`jaxland.recompute_batch_stats`, Garipov et al.'s `update_bn`): loss and accuracy along it, and
   what happens with the running statistics the first model kept from training instead.
3. A quadratic Bézier curve between the two (`jaxland.fit_curve`), statistics re-estimated at every
   sampled t and differentiated through (the full-data analogue of Garipov et al.'s training-mode
   BatchNorm while the curve is trained).
4. A 2-D plane of filter-normalised random directions around the first model (Li et al. 2018):
   labelled contours and a 3-D surface.
5. The first model's training trajectory on the plane of its two principal directions.
6. The Hessian's top eigenvalues (Lanczos) and its eigenvalue density (stochastic Lanczos
   quadrature).

Run:  python examples/digits_cnn_batchnorm.py --out out/cnn   (about a minute on 2 CPU cores)
      python examples/digits_cnn_batchnorm.py --quick --out /tmp/cnn   (a smoke test: seconds)

Every loss here is a function of the *parameters* (the inexact-array leaves of the model, from
`eqx.partition`); the model's other leaves (BatchNorm's axis name and mode, state indices) are held
by the function. The BatchNorm statistics are not parameters: they are recomputed from the data at
every parameter point.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxland as jl

AXIS = "batch"  # the BatchNorm layers' batch axis name


class CNN(eqx.Module):
    """conv 3×3 → BN → relu → 2×2 average pool → conv 3×3 → BN → relu → global average → linear."""

    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, key, width: int = 8):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(1, width, 3, padding=1, key=k1)
        self.bn1 = eqx.nn.BatchNorm(width, AXIS, mode="batch")
        self.conv2 = eqx.nn.Conv2d(width, 2 * width, 3, padding=1, key=k2)
        self.bn2 = eqx.nn.BatchNorm(2 * width, AXIS, mode="batch")
        self.head = eqx.nn.Linear(2 * width, 10, key=k3)

    def __call__(self, x, state):
        """One image x of shape (1, 8, 8) -> (10 logits, state)."""
        h, state = self.bn1(self.conv1(x), state)
        h = jax.nn.relu(h)
        c, H, W = h.shape
        h = h.reshape(c, H // 2, 2, W // 2, 2).mean(axis=(2, 4))
        h, state = self.bn2(self.conv2(h), state)
        return self.head(jax.nn.relu(h).mean(axis=(1, 2))), state


def batched(model, state, x):
    """The model on a batch (as equinox's BatchNorm expects: vmap with the axis name)."""
    return jax.vmap(model, axis_name=AXIS, in_axes=(0, None), out_axes=(0, None))(x, state)


def cross_entropy(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


class Metrics(eqx.Module):
    """params ↦ {"loss", "accuracy"} on (x, y), in inference mode, with the BatchNorm statistics
    re-estimated from `x_stats` at the parameters (or the fixed `stale` state when given).

    An equinox Module rather than a closure, so that its arrays are traced (one compiled kernel for
    the training and the test data of equal size)."""

    static: CNN
    state: eqx.nn.State
    x_stats: jax.Array
    x: jax.Array
    y: jax.Array
    stale: eqx.nn.State | None = None

    @eqx.filter_jit  # an eager call (fit_curve checks the endpoints) compiles once, not op by op
    def __call__(self, params):
        model = eqx.combine(params, self.static)
        st = (
            self.stale
            if self.stale is not None
            else jl.recompute_batch_stats(model, self.state, self.x_stats)
        )
        logits, _ = batched(eqx.nn.inference_mode(model), st, self.x)
        return {
            "loss": cross_entropy(logits, self.y),
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == self.y),
        }


class Loss(eqx.Module):
    """params ↦ the cross-entropy of `Metrics`: scalar-valued, for fit_curve, the planes and the
    Hessian. The statistics are functions of the parameters and are differentiated through: the
    gradient is that of the loss drawn in the pictures (with the statistics held constant it would
    not be, and the curve's training then climbs instead of descending)."""

    metrics: Metrics

    @eqx.filter_jit
    def __call__(self, params):
        m = self.metrics
        model = eqx.combine(params, m.static)
        st = jl.recompute_batch_stats(model, m.state, m.x_stats)
        logits, _ = batched(eqx.nn.inference_mode(model), st, m.x)
        return cross_entropy(logits, m.y)


@eqx.filter_jit
def _train_chunk(p, st, o, keys, x, y, static, opt, batch):
    """`len(keys)` Adam steps on mini-batches of `batch` samples, in training mode (BatchNorm
    normalises with the batch's statistics and updates its running ones in `st`)."""

    def loss(p, st, xb, yb):
        logits, st = batched(eqx.combine(p, static), st, xb)
        return cross_entropy(logits, yb), st

    def step(carry, k):
        p, st, o = carry
        idx = jax.random.choice(k, x.shape[0], (batch,), replace=False)
        (_, st), g = jax.value_and_grad(loss, has_aux=True)(p, st, x[idx], y[idx])
        upd, o = opt.update(g, o, p)
        return (optax.apply_updates(p, upd), st, o), None

    (p, st, o), _ = jax.lax.scan(step, (p, st, o), keys)
    return p, st, o


def train(params, static, state, x, y, *, key, opt, steps, batch, every):
    """Train from `params`; returns the final (params, state) and the parameter checkpoints after
    steps 0, every, 2·every, …, steps (the trajectory)."""
    o = opt.init(params)
    checkpoints = [params]
    for keys in jnp.split(jax.random.split(key, steps), steps // every):
        params, state, o = _train_chunk(params, state, o, keys, x, y, static, opt, batch)
        checkpoints.append(params)
    return params, state, checkpoints


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/digits_cnn"), help="folder for the PNGs")
    ap.add_argument("--quick", action="store_true", help="tiny settings: a smoke test")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = args.quick
    cfg = dict(
        width=4 if q else 8,
        steps=40 if q else 600,
        every=10 if q else 30,
        batch=64,
        n_eval=128 if q else 297,
        points=5 if q else 25,
        curve_steps=4 if q else 120,
        res=5 if q else 17,
        lanczos=8 if q else 30,
        probes=2 if q else 4,
    )
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    # -- data: 1797 images, a fixed split ----------------------------------------------------------
    d = jl.data.digits()
    perm = np.random.default_rng(0).permutation(d.x.shape[0])
    x_all, y_all = d.x[perm].reshape(-1, 1, 8, 8), d.y[perm]
    x_test, y_test = x_all[:297][: cfg["n_eval"]], y_all[:297][: cfg["n_eval"]]
    x_train, y_train = x_all[297:], y_all[297:]
    n = cfg[
        "n_eval"
    ]  # training samples used for the statistics and the landscape (as many as test)
    x_sub, y_sub = x_train[:n], y_train[:n]

    # -- 1. two models ------------------------------------------------------------------------------
    # `make_with_state` names each BatchNorm's state index by its key path, so two models built the
    # same way have the same static structure and can be joined by a path.
    model_a, state0 = eqx.nn.make_with_state(CNN)(jax.random.PRNGKey(1), cfg["width"])
    model_b, _ = eqx.nn.make_with_state(CNN)(jax.random.PRNGKey(2), cfg["width"])
    params_a0, static = eqx.partition(model_a, eqx.is_inexact_array)
    params_b0 = eqx.filter(model_b, eqx.is_inexact_array)
    opt = optax.adam(3e-3)  # one object for both runs: one compiled training kernel
    runs = {}
    for name, p0, seed in (("A", params_a0, 10), ("B", params_b0, 20)):
        runs[name] = train(
            p0,
            static,
            state0,
            x_train,
            y_train,
            key=jax.random.PRNGKey(seed),
            opt=opt,
            steps=cfg["steps"],
            batch=cfg["batch"],
            every=cfg["every"],
        )
    (pa, state_a, traj_a), (pb, _, _) = runs["A"], runs["B"]
    log(f"trained A and B ({cfg['steps']} steps each, {len(traj_a)} checkpoints)")

    train_metrics = Metrics(static, state0, x_sub, x_sub, y_sub)
    test_metrics = Metrics(static, state0, x_sub, x_test, y_test)
    # The scalar loss of the curve, the planes and the Hessian, statistics re-estimated everywhere.
    loss = Loss(train_metrics)

    # -- 2. the straight segment, statistics re-estimated at every point ---------------------------
    segment = jl.paths.linear(pa, pb)
    ts = np.linspace(0.0, 1.0, cfg["points"])
    on_train = jl.evaluate_path(train_metrics, segment, ts)
    on_test = jl.evaluate_path(test_metrics, segment, ts)
    # for comparison: every point normalised with the running statistics A kept from training
    stale = jl.evaluate_path(
        Metrics(static, state0, x_sub, x_sub, y_sub, stale=state_a), segment, ts
    )
    seg_barrier = jl.barrier(on_train["loss"], ts)
    log(
        f"segment: barrier {float(seg_barrier.barrier):.3f} (train loss), test accuracy "
        f"{float(on_test['accuracy'][0]):.3f} / {float(on_test['accuracy'][-1]):.3f} at the ends, "
        f"{float(on_test['accuracy'].min()):.3f} at worst"
    )
    ax, _ = jl.plot_interpolation(
        ts,
        {
            "train": on_train["loss"],
            "test": on_test["loss"],
            "train, A's running statistics": stale["loss"],
        },
        {"train": on_train["accuracy"], "test": on_test["accuracy"]},
        xlabel="t (θ = (1 − t) θ_A + t θ_B)",
        loss_label="cross-entropy",
        log=True,
        title="digits CNN: the straight segment A → B",
    )
    ax.figure.savefig(out / "interpolation.png", dpi=90)
    plt.close(ax.figure)

    # -- 3. a Bézier curve, statistics re-estimated at every sampled t -----------------------------
    curve = jl.fit_curve(
        loss,
        pa,
        pb,
        steps=cfg["curve_steps"],
        batch=6,
        learning_rate=5e-3,
        points=cfg["points"],
        key=jax.random.PRNGKey(3),
    )
    log(
        f"Bézier curve: barrier {curve.barrier:.3f} (train loss; the segment's is "
        f"{float(seg_barrier.barrier):.3f})"
    )
    ax = jl.plot_paths(
        {"segment": (ts, on_train["loss"]), "Bézier curve": (curve.ts, curve.values)},
        title="train loss along the two paths",
    )
    ax.set_ylabel("cross-entropy")
    ax.figure.savefig(out / "paths.png", dpi=90, bbox_inches="tight")
    plt.close(ax.figure)

    # -- 4. a filter-normalised random plane around A ----------------------------------------------
    sl = jl.random_directions_slice(
        loss, pa, key=jax.random.PRNGKey(4), span=1.0, resolution=cfg["res"]
    )
    ax = jl.plot_contour(sl, levels=10, title="train loss around A, filter-normalised directions")
    ax.figure.savefig(out / "contour.png", dpi=90, bbox_inches="tight")
    plt.close(ax.figure)
    ax = jl.plot_surface(
        sl, zmax=float(np.quantile(np.asarray(sl.values), 0.9)), title="train loss around A"
    )
    ax.set_zlabel("cross-entropy")
    ax.figure.savefig(out / "surface.png", dpi=90, bbox_inches="tight")
    plt.close(ax.figure)
    log(
        f"random plane: {cfg['res']}×{cfg['res']} points, loss in "
        f"[{float(sl.values.min()):.3f}, {float(sl.values.max()):.3f}]"
    )

    # -- 5. A's training trajectory on the plane of its principal directions -----------------------
    traj = jl.trajectory_directions(traj_a, num=2)
    tsl = jl.trajectory_slice(loss, traj, resolution=cfg["res"])
    ax = jl.plot_trajectory(tsl, traj, title="A's training trajectory")
    ax.figure.savefig(out / "trajectory.png", dpi=90, bbox_inches="tight")
    plt.close(ax.figure)
    log(
        "trajectory plane: explained variance "
        f"{np.round(np.asarray(traj.explained_variance_ratio), 3)}"
    )

    # -- 6. the Hessian at A: top eigenvalues and the eigenvalue density ---------------------------
    # The Hessian of the function drawn above, the statistics being functions of the parameters.
    # PyHessian, in evaluation mode, holds them fixed instead (jax.lax.stop_gradient on the state):
    # that loses BatchNorm's invariance to the scale of the convolution weights, and gives
    # eigenvalues a thousand times larger here.
    eigs = jl.hessian_eigs(
        loss, pa, key=jax.random.PRNGKey(5), k=3, num_steps=cfg["lanczos"], which="top"
    )
    sd = jl.spectral_density(
        loss, pa, key=jax.random.PRNGKey(6), num_steps=cfg["lanczos"], num_probes=cfg["probes"]
    )
    ax = jl.plot_spectral_density(
        sd, mark=np.asarray(eigs.top), title="Hessian of the train loss at A"
    )
    ax.figure.savefig(out / "density.png", dpi=90, bbox_inches="tight")
    plt.close(ax.figure)
    log(
        f"Hessian at A: top eigenvalues {np.round(np.asarray(eigs.top), 3)}, "
        f"P = {sum(l.size for l in jax.tree.leaves(pa))} parameters"
    )
    return {
        "segment_barrier": float(seg_barrier.barrier),
        "curve_barrier": float(curve.barrier),
        "top_eigenvalues": np.asarray(eigs.top).tolist(),
        "figures": sorted(p.name for p in out.glob("*.png")),
    }


if __name__ == "__main__":
    main()
