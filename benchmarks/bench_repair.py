"""Barriers of a digits ResNet before alignment, after weight matching, and after weight matching
with REPAIR (issue 22, §1); and the variance collapse that explains why weight matching alone can
raise the barrier.

For widths w ∈ {8, 16, 32} (`--widths`) two ResNets of `benchmarks/_resnet_models.py` (stem conv +
BatchNorm, two residual blocks of w channels, one block to 2w channels with a projection shortcut,
global average pool, linear head; inputs scikit-learn's 8 × 8 digits as (1, 8, 8), 80 % train) are
trained from seeds 0 and 1 (Adam 3·10⁻³, `--steps` steps of 128 samples, BatchNorm in training mode),
their BatchNorm statistics then set to the exact full-training-set values
(`jaxland.recompute_batch_stats`) and used in inference mode. Along the straight segment a → b'
(9 points, t = 0, 1/8, …, 1) it measures the test loss (mean cross-entropy) and accuracy, with b'
= b (before), b' = `align(a, b)` (weight matching on the traced spec), and the aligned segment with
each point repaired (`jaxland.alignment.interpolate(a, b', t, repair=True, data=x_train)`);
also with each point's BatchNorm statistics recomputed on the training data ("reset", the RESET
of Jordan et al.), and with b' from activation matching on the training inputs ("act", the matching
Jordan et al. use), plain and repaired. `--cache DIR` stores the trained models and reuses them. Barrier = max_t L(t) − max(L(0), L(1)).

Variance collapse: at t = ½, for each correction point of REPAIR (every BatchNorm output and
biased convolution), the ratio std(z_t) / ((1−t) std(z_a) + t std(z_b)) per channel, on the
training inputs, averaged over the channels; reported for the first and the last points and the
mean over points, before and after alignment.

    nice -n 10 python benchmarks/bench_repair.py                # three widths, ~minutes on CPU

Writes a table to stdout and JSON to `--out` (default benchmarks/results/bench_repair.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _resnet_models as rm  # noqa: E402

import jaxland as jl  # noqa: E402
from jaxland.alignment import _repair as rp  # noqa: E402
from jaxland.alignment._spec import flatten  # noqa: E402
from jaxland.alignment._trace import trace  # noqa: E402


def split():
    ds = jl.data.digits()
    x = np.asarray(ds.x).reshape(-1, 1, 8, 8)
    x = (x - x.mean()) / x.std()
    y = np.asarray(ds.y)
    idx = np.random.default_rng(0).permutation(len(x))
    cut = int(round(0.8 * len(x)))
    tr, te = idx[:cut], idx[cut:]
    return (jnp.asarray(x[tr], jnp.float32), jnp.asarray(y[tr])), \
        (jnp.asarray(x[te], jnp.float32), jnp.asarray(y[te]))


def train(w: int, seed: int, x, y, steps: int, cache: Path | None = None):
    model, state = eqx.nn.make_with_state(rm.ResNet)(jax.random.PRNGKey(seed), width=w,
                                                    width2=2 * w)
    file = None if cache is None else cache / f"resnet_w{w}_s{seed}_steps{steps}.eqx"
    if file is not None and file.exists():
        model = eqx.nn.inference_mode(model, True)
        return eqx.tree_deserialise_leaves(file, (model, state))
    model = eqx.nn.inference_mode(model, False)
    opt = optax.adam(3e-3)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    ost = opt.init(params)

    def loss(p, st, xb, yb):
        m = eqx.combine(p, static)
        logits, st = jax.vmap(m, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(xb, st)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), st

    @jax.jit
    def step(p, st, o, xb, yb):
        (l, st), g = jax.value_and_grad(loss, has_aux=True)(p, st, xb, yb)
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), st, o, l

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        i = rng.choice(len(x), 128, replace=False)
        params, state, ost, _ = step(params, state, ost, x[i], y[i])
    model = eqx.nn.inference_mode(eqx.combine(params, static), True)
    state = jl.recompute_batch_stats(model, state, x)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        eqx.tree_serialise_leaves(file, (model, state))
    return model, state


def evaluate(ms, x, y):
    logits = rm.apply(ms, x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return float(ce), float(jnp.mean(jnp.argmax(logits, -1) == y))


def collapse(a, b, x, t=0.5) -> dict:
    """std(z_t) / interpolated std at every REPAIR point, averaged over channels."""
    mid = jl.alignment.interpolate(a, b, t)
    out = []
    stats = []
    for net in (a, b, mid):
        fl = flatten(net)
        dyn = [i for i, leaf in enumerate(fl.leaves) if eqx.is_array(leaf)]

        def fn(vals, xx, fl=fl, dyn=dyn):
            ls = list(fl.leaves)
            for i, v in zip(dyn, vals, strict=True):
                ls[i] = v
            return rm.apply(jax.tree_util.tree_unflatten(fl.treedef, ls), xx)

        vals = [fl.leaves[i] for i in dyn]
        an, closed, _ = trace(fn, vals, x)
        pts = rp._points(an, closed, len(dyn))
        c = type(closed)(closed.jaxpr.replace(outvars=[p.z for p in pts]), closed.consts)
        zs = jax.jit(rp._jaxpr_as_fun(c))(*vals, x)
        stats.append([rp._stats(np.asarray(z), p.axis)[1] for z, p in zip(zs, pts, strict=True)])
    for sa, sb, sm in zip(*stats, strict=True):
        target = (1 - t) * sa + t * sb
        out.append(float(np.mean(sm / target)))
    return {"per_point": out, "first": out[0], "last": out[-1], "mean": float(np.mean(out))}


def segment(a, b, x, y, xtr, ts, mode: str) -> list:
    vals = []
    for t in ts:
        if mode == "repair":
            net = jl.alignment.interpolate(a, b, float(t), repair=True, data=xtr, apply=rm.apply)
        else:
            net = jl.alignment.interpolate(a, b, float(t))
            if mode == "reset":
                net = (net[0], jl.recompute_batch_stats(net[0], net[1], xtr))
        vals.append(evaluate(net, x, y))
    return vals


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="*", default=[8, 16, 32])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--points", type=int, default=9)
    ap.add_argument("--out", default="benchmarks/results/bench_repair.json")
    ap.add_argument("--cache", default=None, help="folder for the trained models (reused)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*BatchNorm.*")
    (xtr, ytr), (xte, yte) = split()
    ts = np.linspace(0.0, 1.0, args.points)
    rows = []
    hdr = (f"{'w':>3} {'acc a':>6} {'acc b':>6} {'before':>8} {'aligned':>8} {'+REPAIR':>8} "
           f"{'+reset':>8} {'std ratio before':>17} {'aligned':>8} {'repaired acc dip':>16}")
    print(hdr)
    for w in args.widths:
        t0 = time.perf_counter()
        cache = None if args.cache is None else Path(args.cache)
        a = train(w, 0, xtr, ytr, args.steps, cache)
        b = train(w, 1, xtr, ytr, args.steps, cache)
        t_train = time.perf_counter() - t0
        spec = jl.permutation_spec(a, apply=rm.apply, example_input=xtr[:8])
        t0 = time.perf_counter()
        res = jl.align(a, b, spec=spec, key=jax.random.PRNGKey(0))
        t_align = time.perf_counter() - t0
        # activation matching (the matching REPAIR's paper uses): each group's last ReLU on the
        # training inputs, a convolution's channels at every position
        act = jl.align(a, b, method="activations", data=xtr, spec=spec)
        row = {"w": w, "groups": len(spec.groups), "train_seconds": t_train,
               "align_seconds": t_align, "ts": ts.tolist(),
               "acc_a": evaluate(a, xte, yte)[1], "acc_b": evaluate(b, xte, yte)[1]}
        for name, end, mode in (("before", b, "plain"), ("aligned", res.net, "plain"),
                                ("repair", res.net, "repair"), ("reset", res.net, "reset"),
                                ("act", act.net, "plain"), ("act_repair", act.net, "repair")):
            v = segment(a, end, xte, yte, xtr, ts, mode)
            loss = np.array([u[0] for u in v])
            acc = np.array([u[1] for u in v])
            row[f"{name}_loss"] = loss.tolist()
            row[f"{name}_acc"] = acc.tolist()
            row[f"{name}_barrier"] = float(loss.max() - max(loss[0], loss[-1]))
            row[f"{name}_acc_dip"] = float(min(acc[0], acc[-1]) - acc.min())
        row["collapse_before"] = collapse(a, b, xtr)
        row["collapse_aligned"] = collapse(a, res.net, xtr)
        row["collapse_act"] = collapse(a, act.net, xtr)
        rows.append(row)
        print(f"{w:>3} {row['acc_a']:>6.3f} {row['acc_b']:>6.3f} "
              f"{row['before_barrier']:>8.3f} {row['aligned_barrier']:>8.3f} "
              f"{row['repair_barrier']:>8.3f} {row['reset_barrier']:>8.3f} "
              f"{row['collapse_before']['mean']:>17.3f} {row['collapse_aligned']['mean']:>8.3f} "
              f"{row['repair_acc_dip']:>16.3f} | act {row['act_barrier']:>7.3f} "
              f"+REPAIR {row['act_repair_barrier']:>7.3f} std ratio "
              f"{row['collapse_act']['mean']:.3f}", flush=True)
    out = {"rows": rows, "steps": args.steps, "jax": jax.__version__,
           "platform": platform.platform(), "loadavg": os.getloadavg()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
