"""A flax nnx MLP with BatchNorm on scikit-learn's 8×8 digits: the same workflow as
`digits_cnn_batchnorm.py`, more briefly, with all the pictures in one figure.

Two MLPs trained from different initialisations (checkpoints recorded), the straight segment and a
Bézier curve between them with the BatchNorm statistics re-estimated at every point
(`jaxland.recompute_batch_stats(model, None, x)` returns the nnx model with new statistics), a
filter-normalised random plane, the first model's trajectory plane, and the Hessian's top
eigenvalues and eigenvalue density. The parameters are the `nnx.Param` state of `nnx.split`, a
pytree that every jaxland function takes as it is.

Run:  python examples/digits_nnx_mlp.py --out out/nnx          (well under a minute on 2 CPU cores)
      python examples/digits_nnx_mlp.py --quick --out /tmp/nnx  (a smoke test)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxland as jl


class MLP(nnx.Module):
    """64 → h → BN → relu → h/2 → BN → relu → 10."""

    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(64, hidden, rngs=rngs)
        self.bn1 = nnx.BatchNorm(hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, hidden // 2, rngs=rngs)
        self.bn2 = nnx.BatchNorm(hidden // 2, rngs=rngs)
        self.out = nnx.Linear(hidden // 2, 10, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.bn1(self.l1(x)))
        return self.out(jax.nn.relu(self.bn2(self.l2(x))))


def cross_entropy(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/digits_nnx"), help="folder for the PNG")
    ap.add_argument("--quick", action="store_true", help="tiny settings: a smoke test")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = args.quick
    hidden, steps, every = (16, 40, 10) if q else (64, 600, 30)
    points, res, curve_steps, lanczos = (5, 5, 4, 8) if q else (25, 17, 150, 30)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    d = jl.data.digits()
    perm = np.random.default_rng(0).permutation(d.x.shape[0])
    x, y = d.x[perm], d.y[perm]
    n = 128 if q else 297
    x_test, y_test, x_train, y_train = x[:n], y[:n], x[297:], y[297:]
    x_sub, y_sub = x_train[:n], y_train[:n]  # statistics and landscape: as many as test samples

    # The model's structure (graphdef) and its two kinds of state: parameters and statistics.
    graphdef, p_a, stats0 = nnx.split(MLP(hidden, rngs=nnx.Rngs(1)), nnx.Param, nnx.BatchStat)
    _, p_b, _ = nnx.split(MLP(hidden, rngs=nnx.Rngs(2)), nnx.Param, nnx.BatchStat)
    opt = optax.adam(3e-3)

    @jax.jit
    def chunk(p, s, o, keys):  # Adam steps in training mode (batch statistics, running averages)
        def loss(p, s, xb, yb):
            model = nnx.merge(graphdef, p, s, copy=True)  # fresh variables, owned by this trace
            return cross_entropy(model(xb), yb), nnx.state(model, nnx.BatchStat)

        def step(carry, k):
            p, s, o = carry
            idx = jax.random.choice(k, x_train.shape[0], (64,), replace=False)
            (_, s), g = jax.value_and_grad(loss, has_aux=True)(p, s, x_train[idx], y_train[idx])
            upd, o = opt.update(g, o, p)
            return (optax.apply_updates(p, upd), s, o), None

        return jax.lax.scan(step, (p, s, o), keys)[0]

    def train(p, seed):
        s, o, checkpoints = stats0, opt.init(p), [p]
        for keys in jnp.split(jax.random.split(jax.random.PRNGKey(seed), steps), steps // every):
            p, s, o = chunk(p, s, o, keys)
            checkpoints.append(p)
        return p, checkpoints

    (pa, traj_a), (pb, _) = train(p_a, 10), train(p_b, 20)

    def metrics(params, xe, ye):
        """Inference-mode loss and accuracy on (xe, ye), statistics re-estimated from x_sub (a
        differentiable function of the parameters)."""
        model = jl.recompute_batch_stats(nnx.merge(graphdef, params, stats0), None, x_sub)
        model.eval()
        logits = model(xe)
        return {
            "loss": cross_entropy(logits, ye),
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == ye),
        }

    @jax.jit
    def train_loss(p):  # F: the curve, the planes and the Hessian differentiate through statistics
        return metrics(p, x_sub, y_sub)["loss"]

    ts = np.linspace(0.0, 1.0, points)
    segment = jl.paths.linear(pa, pb)

    # one function of (params, data): the training and the test data share one compiled kernel
    def on_data(p, data):
        return metrics(p, *data)

    on_train = jl.evaluate_path(on_data, segment, ts, data=(x_sub, y_sub))
    on_test = jl.evaluate_path(on_data, segment, ts, data=(x_test, y_test))
    curve = jl.fit_curve(
        train_loss,
        pa,
        pb,
        steps=curve_steps,
        batch=8,
        learning_rate=3e-3,
        points=points,
        key=jax.random.PRNGKey(3),
    )
    sl = jl.random_directions_slice(train_loss, pa, key=jax.random.PRNGKey(4), resolution=res)
    traj = jl.trajectory_directions(traj_a, num=2)
    tsl = jl.trajectory_slice(train_loss, traj, resolution=res)
    eigs = jl.hessian_eigs(
        train_loss, pa, key=jax.random.PRNGKey(5), k=3, num_steps=lanczos, which="top"
    )
    sd = jl.spectral_density(
        train_loss, pa, key=jax.random.PRNGKey(6), num_steps=lanczos, num_probes=2 if q else 4
    )

    fig = plt.figure(figsize=(15, 8.5), layout="constrained")
    axes = [fig.add_subplot(2, 3, i + 1, projection="3d" if i == 3 else None) for i in range(6)]
    jl.plot_interpolation(
        ts,
        {"train": on_train["loss"], "test": on_test["loss"]},
        {"train": on_train["accuracy"], "test": on_test["accuracy"]},
        ax=axes[0],
        loss_label="cross-entropy",
        log=True,
        title="segment A → B (statistics re-estimated)",
    )
    jl.plot_paths(
        {"segment": (ts, on_train["loss"]), "Bézier curve": (curve.ts, curve.values)},
        ax=axes[1],
        title="train loss along the two paths",
    )
    axes[1].set_ylabel("cross-entropy")
    jl.plot_contour(sl, ax=axes[2], levels=10, title="around A: filter-normalised plane")
    jl.plot_surface(
        sl, ax=axes[3], zmax=float(np.quantile(np.asarray(sl.values), 0.9)), title="the same plane"
    )
    jl.plot_trajectory(tsl, traj, ax=axes[4], title="A's training trajectory")
    jl.plot_spectral_density(
        sd, ax=axes[5], mark=np.asarray(eigs.top), title="Hessian eigenvalue density at A"
    )
    fig.suptitle("flax nnx MLP with BatchNorm on the digits")
    fig.savefig(args.out / "nnx_summary.png", dpi=70)
    plt.close(fig)
    seg = jl.barrier(on_train["loss"], ts)
    print(
        f"[{time.perf_counter() - t0:.1f}s] segment barrier {float(seg.barrier):.3f}, Bézier "
        f"barrier {curve.barrier:.3f}, worst test accuracy on the segment "
        f"{float(on_test['accuracy'].min()):.3f}, top Hessian eigenvalues "
        f"{np.round(np.asarray(eigs.top), 3)}, trajectory variance "
        f"{np.round(np.asarray(traj.explained_variance_ratio), 3)}"
    )
    return {
        "segment_barrier": float(seg.barrier),
        "curve_barrier": float(curve.barrier),
        "top_eigenvalues": np.asarray(eigs.top).tolist(),
        "figures": sorted(p.name for p in args.out.glob("*.png")),
    }


if __name__ == "__main__":
    main()
