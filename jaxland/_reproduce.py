"""`jaxland reproduce`: the main job.

Trains two SkipNet minima and the e(l) network ξ* on the default data, evaluates F along the paths
between them, and writes `report.json` and PNG figures. Each stage's result is stored in
`OUT/stages/` as soon as it is finished; rerunning with the same settings skips finished stages.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import _data
from ._best_l_term import best_l_term
from ._models import SkipNet, TwoLayer, embed_two_layer
from ._objective import objective
from ._paths import linear
from ._store import RunStore, to_jsonable
from ._train import fit

__all__ = ["reproduce", "reproduce_settings"]


PRESETS = ("tiny", "quick", "full")


def reproduce_settings(*, preset: str = "full", data: str = "default", seed: int = 0) -> dict:
    """The settings of a `reproduce` run (all of them go into report.json).

    Presets: "full" (the default job), "quick" (under two minutes on 2 CPU cores) and "tiny" (the
    test suite's smoke run).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {preset!r}")
    m = {"tiny": 16, "quick": 48, "full": 256}[preset]
    eta = 0.5
    return {
        "data": data,
        "preset": preset,
        "seed": seed,
        "m": m,
        "d_g": 8,
        "d_o": 8,
        "hidden": [8],
        "kappa": 1e-3,
        "loss": None,  # filled from the data set
        "eta": eta,
        "l": int(math.floor(m**eta)),
        "steps": {"tiny": 200, "quick": 1500, "full": 4000}[preset],
        "learning_rate": 1e-2,
        "points": {"tiny": 33, "quick": 201, "full": 1001}[preset],
        "dtype": "float64" if jax.config.jax_enable_x64 else "float32",
    }


class _Progress:
    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[jaxland {time.perf_counter() - self.t0:7.1f}s] {msg}", file=self.stream, flush=True)


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "jaxland reproduce draws PNG figures; install matplotlib with `pip install 'jaxland[plot]'`"
        ) from e


def reproduce(
    out: str | Path,
    *,
    preset: str = "full",
    data: str = "default",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the main job and write `out/report.json` and figures; returns the report.

    **Arguments:**
    - `out`: output folder (created). Finished stages are kept in `out/stages/` and reused.
    - `preset`: "full", "quick" (under two minutes on 2 CPU cores) or "tiny" (a smoke run).
    - `data`: one of `jaxland.data.DATASETS`.
    - `seed`: the PRNG seed of the whole run.
    """
    _require_matplotlib()
    log = progress or _Progress()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = reproduce_settings(preset=preset, data=data, seed=seed)
    ds, loss = _data.load(data, quick=preset != "full")
    s["loss"] = loss
    store = RunStore(out, s)
    x, y = ds.x, ds.y
    key = jax.random.PRNGKey(seed)
    k_a, k_b, k_star = jax.random.split(key, 3)
    log(f"data {ds.name}: x {tuple(x.shape)}, y {tuple(y.shape)}; settings {json.dumps(s)}")

    def make(k):
        return SkipNet.init(k, n=x.shape[1], m=s["m"], d_y=y.shape[1], d_g=s["d_g"], d_o=s["d_o"],
                            hidden=tuple(s["hidden"]))

    import optax

    nets = {}
    for name, k in (("minimum_a", k_a), ("minimum_b", k_b)):
        like = make(k)
        rec = store.load(name)
        net = store.load_tree(name, like) if rec is not None else None
        if net is None:
            log(f"training {name} (SkipNet, m={s['m']}, {s['steps']} Adam steps)")
            r = fit(like, x, y, kappa=s["kappa"], loss=loss, steps=s["steps"],
                    optimizer=optax.adam(s["learning_rate"]))
            net = r.net
            store.save_tree(name, net)
            rec = store.save(name, {"F": float(objective(net, x, y, kappa=s["kappa"], loss=loss)),
                                    "history_every_100": r.history[::100]})
        else:
            log(f"{name}: loaded from {store.dir}")
        nets[name] = (net, rec)

    like_star = TwoLayer(W1=jnp.zeros((s["l"], x.shape[1])), W2=jnp.zeros((y.shape[1], s["l"])))
    rec = store.load("xi_star")
    star = store.load_tree("xi_star", like_star) if rec is not None else None
    if star is None:
        log(f"estimating e(l) with l = floor(m^eta) = {s['l']} units")
        r = best_l_term(x, y, l=s["l"], kappa=s["kappa"], key=k_star, loss=loss,
                        steps=s["steps"], restarts=4)
        star = r.net
        store.save_tree("xi_star", star)
        rec = store.save("xi_star", {"e_l_upper_bound": float(r.value),
                                     "restart_values": r.restart_values})
    else:
        log("xi_star: loaded")
    net_a, net_b = nets["minimum_a"][0], nets["minimum_b"][0]
    star_skip = embed_two_layer(star, net_a)
    f_star = float(objective(star_skip, x, y, kappa=s["kappa"], loss=loss))

    def F(net):
        return objective(net, x, y, kappa=s["kappa"], loss=loss)

    ts = jnp.linspace(0.0, 1.0, s["points"])
    segments = {}
    for name, path in (("straight_a_b", linear(net_a, net_b)),
                       ("straight_a_star", linear(net_a, star_skip))):
        rec = store.load(name)
        if rec is None:
            log(f"evaluating F at {len(ts)} points of {name}")
            vals = jax.jit(jax.vmap(lambda t: F(path(t))))(ts)
            rec = store.save(name, _segment_record(ts, vals))
        segments[name] = rec

    report = {
        "settings": s,
        "data": {"name": ds.name, "N": int(x.shape[0]), "n": int(x.shape[1]), "d_y": int(y.shape[1])},
        "minima": {k: {"F": v[1]["F"]} for k, v in nets.items()},
        "xi_star": {"l": s["l"], "F": f_star, "e_l_upper_bound": rec_float(store.load("xi_star"))},
        "paths": segments,
    }
    figures = _plot_segments(out, segments)
    report["figures"] = figures
    (out / "report.json").write_text(json.dumps(to_jsonable(report), indent=1))
    log(f"wrote {out / 'report.json'} and {', '.join(figures)}")
    return report


def rec_float(rec):
    return None if rec is None else rec["e_l_upper_bound"]


def _segment_record(ts, vals) -> dict:
    v = np.asarray(vals, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise FloatingPointError("F is not finite along the path")
    i = int(np.argmax(v))
    return {
        "t": np.asarray(ts),
        "F": v,
        "t_max": float(np.asarray(ts)[i]),
        "F_max": float(v[i]),
        "barrier": float(v[i] - max(v[0], v[-1])),
    }


def _plot_segments(out: Path, segments: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, rec in segments.items():
        ax.plot(rec["t"], rec["F"], label=f"{name} (barrier {rec['barrier']:.3g})")
    ax.set_xlabel("t")
    ax.set_ylabel("F(γ(t))")
    ax.set_yscale("log")
    ax.set_title("F along paths between minima")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "paths.png")
    plt.close(fig)
    return ["paths.png"]
