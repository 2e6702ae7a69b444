"""Does the skip connection's advantage survive permutation alignment? (`jaxland alignment`)

Two minima that look separated by a barrier can be one basin seen through two orderings of the
hidden units (Ainsworth, Hayase & Srinivasa, Git Re-Basin, ICLR 2023; Entezari et al., ICLR 2022).
The scaling study (`jaxland scaling`) finds the SkipNet's straight-segment barrier far below that of
its no-skip control. This study asks whether that gap is a permutation artefact. For every width m,
input dimension n and seed, on the scaling study's problem and budgets, it takes two trained minima
a, b of

- `SkipNet` (eq. 3) and the no-skip control `NoSkipNet` at equal parameter count (the same minima as
  the scaling study: they are shared through its run store, see below);
- a `TwoLayer` reference of width m, W2 σ(W1 x) (eq. 4): the two-layer part that SkipNet contains
  and NoSkipNet lacks, which is known to align well; a reference, not an equal-parameter control;

and measures the straight-segment barrier B = max_t F((1−t)a + t·b') − max(F(a), F(b)) of F = E L +
κR (eq. 7, R of eq. 13) for b' = b (**before**), b' = b aligned to a by **weight matching**
(`align(a, b, key=…)`) and b' = b aligned by **activation matching** on the training inputs
(`align(a, b, method="activations", data=x)`). Alignment leaves F(b) unchanged (the regulariser is
permutation invariant), so the three barriers share their endpoints. Beside them, for the SkipNet,
the barrier of the **Theorem 11 certificate** at η = ½ (the maximum of F along `connect`'s path
minus max(F(a), F(b))). Each half of that path is built within one endpoint, so alignment cannot
change it; this is checked once per n, at the smallest width, by certifying (a, weight-aligned b).

**Digits MLP.** To reproduce the qualitative result of Ainsworth et al. on a real data set,
`eqx.nn.MLP(64, 10, w, depth=2)` (ReLU) is trained twice (Adam, full batch, softmax cross-entropy)
on 80 % of scikit-learn's digits (`jaxland.data.digits`, extra `data`) for each width w and seed,
and the straight segment between the two is evaluated before and after each alignment: the barrier
of the training and of the test loss (jaxland's definition, max − max of the ends, and the one above
the linear mix of the ends that Ainsworth et al. use) and the dip of the test accuracy below the
worse end.

**Resumable, and shared with the scaling study.** The trained minima are stored in `out/stages/`
under the scaling study's settings hash (`trained_pair`), so running `jaxland alignment` and
`jaxland scaling` in the same folder trains each minimum once; a stored Theorem 11 certificate is
reused the same way. Every finished record (one model at one (m, n, seed), one digits width and
seed) is written at once, atomically; killing the command and starting it again recomputes nothing
that is finished. Outputs: `out/alignment.json` (settings, one row per record, medians), the figure
`out/alignment.png`, and the table of `format_alignment_table`.

**Presets.** "tiny" (seconds; the tests), "quick" (under 3 minutes on 2 CPU cores: m ∈ {32, 256}, n
= 2, three seeds, digits w ∈ {32, 128}), "full" (m ∈ {32, 128, 512, 2048, 4096}, n ∈ {2, 3, 5}, two
seeds; digits w ∈ {32, 128, 512}, two seeds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import PyTree

from .._params import param_leaves, tree_norm
from ..alignment._align import align
from ..data._datasets import digits
from ..engine._evaluate import evaluate_path
from ..landscape._metrics import barrier
from ..model._models import NoSkipNet, SkipNet, TwoLayer
from ..model._objective import objective_fn
from ..paths._paths import linear
from ..search._search_path import search_path
from ._preflight import check_out_dir, check_seed, require
from ._progress import Progress
from ._scaling import (
    _SHARED,
    _certificate,
    _data,
    _expected,
    _key,
    scaling_settings,
    trained_pair,
)
from ._store import RunStore, _atomic_write, to_jsonable

ALIGNMENT_PRESETS = ("tiny", "quick", "full")
MODELS = ("SkipNet", "NoSkipNet", "TwoLayer")
METHODS = ("before", "weights", "activations")

_GRIDS = {
    "tiny": dict(ms=(8,), ns=(2,), seeds=(0,), widths=(8,), digit_seeds=(0,)),
    "quick": dict(ms=(32, 256), ns=(2,), seeds=(0, 1, 2), widths=(32, 128), digit_seeds=(0,)),
    "full": dict(ms=(32, 128, 512, 2048, 4096), ns=(2, 3, 5), seeds=(0, 1), widths=(32, 128, 512),
                 digit_seeds=(0, 1)),
}

# digits MLP: Adam steps (full batch), learning rate, points on each segment
_DIGITS = {
    "tiny": dict(digit_steps=20, digit_lr=1e-2, digit_points=9),
    "quick": dict(digit_steps=600, digit_lr=3e-3, digit_points=17),
    "full": dict(digit_steps=2000, digit_lr=1e-3, digit_points=33),
}

ETA = 0.5  # the certificate's η (Theorem 11: l = ⌊m^η⌋)
VANISHED = 1e-6  # a barrier at most this is reported as gone (F is O(1); float32 rounding ~1e-7)


def alignment_settings(
    *,
    preset: str = "full",
    seed: int = 0,
    ms: Iterable[int] | None = None,
    ns: Iterable[int] | None = None,
    seeds: Iterable[int] | None = None,
    widths: Iterable[int] | None = None,
    overrides: dict | None = None,
) -> dict:
    """The settings of an alignment study: the scaling study's settings for the same preset
    (problem, budgets; so that the minima are shared) with this study's grid, η = ½ for the
    certificate, the alignment's `max_iter` and the digits MLP's widths and budget.

    `ms`, `ns`, `seeds` (offsets added to `seed`), `widths` (digits MLP; empty for none) replace the
    preset's grid; `overrides` replaces hyperparameters (as for `scaling_settings`, plus
    "digit_steps", "digit_lr", "digit_points", "max_iter").
    """
    if preset not in ALIGNMENT_PRESETS:
        raise ValueError(f"preset must be one of {ALIGNMENT_PRESETS}; got {preset!r}")
    g = _GRIDS[preset]
    own = {**_DIGITS[preset], "max_iter": 100}
    overrides = dict(overrides or {})
    mine = {k: overrides.pop(k) for k in list(overrides) if k in own}
    s = scaling_settings(preset=preset, seed=seed, ms=g["ms"] if ms is None else ms,
                         ns=g["ns"] if ns is None else ns, etas=(ETA,),
                         seeds=g["seeds"] if seeds is None else seeds, overrides=overrides)
    w = tuple(sorted({int(v) for v in (g["widths"] if widths is None else widths)}))
    if any(v < 1 for v in w):
        raise ValueError(f"widths must be positive integers; got {w}")
    s.update(own, **mine, widths=w,
             digit_seeds=tuple(check_seed(int(seed) + d, "seed") for d in g["digit_seeds"]))
    return s


def _cosine(a, b) -> float:
    """⟨a, b⟩ / (‖a‖‖b‖) over all parameters: how close b lies to a (1 = the same point)."""
    num = sum(float(np.vdot(np.asarray(u, np.float64), np.asarray(v, np.float64)))
              for u, v in zip(param_leaves(a), param_leaves(b), strict=True))
    return num / (float(tree_norm(a)) * float(tree_norm(b)))


def _moved(perm) -> float:
    return float(np.mean(np.asarray(perm) != np.arange(len(perm))))


def _straight(F, a, b, points: int) -> float:
    """The refined straight-segment barrier, as the scaling study measures it."""
    return float(search_path(F, a, b, method="linear", points=points).barrier)


def _align_model(s, F, x, a, b, m, n, seed, model) -> tuple[dict, PyTree]:
    """Barrier before and after each alignment of one pair, with the alignment's diagnostics: the
    record and b aligned to a by weight matching."""
    pts = s["points"]
    rec = {"m": m, "n": n, "seed": seed, "model": model, "f_a": float(F(a)), "f_b": float(F(b)),
           "params": sum(int(np.prod(np.shape(v))) for v in param_leaves(a)),
           "cosine_before": _cosine(a, b), "before": _straight(F, a, b, pts)}
    t = time.perf_counter()
    rw = align(a, b, key=_key("align", m, n, seed, model), max_iter=s["max_iter"])
    rec["weights_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    ra = align(a, b, method="activations", data=x)
    rec["activations_seconds"] = time.perf_counter() - t
    for name, r in (("weights", rw), ("activations", ra)):
        rec[name] = _straight(F, a, r.net, pts)
        rec[f"{name}_cosine"] = _cosine(a, r.net)
        rec[f"{name}_hidden_moved"] = _moved(r.perms["hidden"])
        # F is permutation invariant: the aligned end has b's value up to rounding
        rec[f"{name}_f_b_change"] = abs(float(F(r.net)) - rec["f_b"])
    rec["weights_sweeps"] = rw.iterations
    rec["weights_converged"] = rw.converged
    rec["methods_agree_hidden"] = float(np.mean(rw.perms["hidden"] == ra.perms["hidden"]))
    return rec, rw.net


def _cert_barrier(c: dict, f_a: float, f_b: float) -> float:
    """The certificate's maximum of F along the Theorem 11 path minus max(F_A, F_B), from the
    excess over max(F_A, F_B, F*)."""
    return float(c["excess"]) + max(f_a, f_b, float(c["f_star"])) - max(f_a, f_b)


# --- the digits MLP -------------------------------------------------------------------------------


def _digits_split(dtype):
    ds = digits(dtype=dtype)
    x, y = np.asarray(ds.x), np.asarray(ds.y)
    idx = np.random.default_rng(0).permutation(x.shape[0])
    cut = int(round(0.8 * x.shape[0]))
    tr, te = idx[:cut], idx[cut:]
    return (jnp.asarray(x[tr]), jnp.asarray(y[tr])), (jnp.asarray(x[te]), jnp.asarray(y[te]))


def _ce(net, x, y):
    logits = jax.vmap(net)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@eqx.filter_jit
def _train_mlp(net, x, y, steps: int, lr: float):
    """Adam, full batch, `steps` steps of softmax cross-entropy (one `lax.scan`)."""
    opt = optax.adam(lr)
    params, static = eqx.partition(net, eqx.is_inexact_array)

    def step(carry, _):
        p, st = carry
        g = jax.grad(lambda q: _ce(eqx.combine(q, static), x, y))(p)
        upd, st = opt.update(g, st, p)
        return (optax.apply_updates(p, upd), st), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return eqx.combine(params, static)


def _mlp(w, key, dtype):
    return eqx.nn.MLP(64, 10, w, depth=2, activation=jax.nn.relu, dtype=dtype, key=key)


def _digits_record(s, split, w, seed, store) -> dict:
    (xtr, ytr), (xte, yte) = split
    dtype = xtr.dtype
    nets = []
    for which in ("a", "b"):
        init = _mlp(w, _key("digits", w, seed, which), dtype)
        net = store.load_tree(f"digits_{which}_w{w}_s{seed}", init)
        if net is None:
            net = _train_mlp(init, xtr, ytr, int(s["digit_steps"]), float(s["digit_lr"]))
            store.save_tree(f"digits_{which}_w{w}_s{seed}", net)
        nets.append(net)
    a, b = nets

    def metrics(net):
        lte = jax.vmap(net)(xte)
        return {"train_loss": _ce(net, xtr, ytr),
                "test_loss": optax.softmax_cross_entropy_with_integer_labels(lte, yte).mean(),
                "test_acc": jnp.mean(jnp.argmax(lte, -1) == yte)}

    ts = jnp.linspace(0.0, 1.0, int(s["digit_points"]), dtype=dtype)
    rec = {"w": w, "seed": seed, "params": sum(int(np.prod(v.shape)) for v in param_leaves(a))}
    ends = metrics(a), metrics(b)
    for k in ("train_loss", "test_loss", "test_acc"):
        rec[f"{k}_a"], rec[f"{k}_b"] = float(ends[0][k]), float(ends[1][k])
    t = time.perf_counter()
    rw = align(a, b, key=_key("digits-align", w, seed))
    rec["weights_seconds"] = time.perf_counter() - t
    ra = align(a, b, method="activations", data=xtr)
    for name, bb in (("before", b), ("weights", rw.net), ("activations", ra.net)):
        v = evaluate_path(metrics, linear(a, bb), ts)
        for k in ("train_loss", "test_loss"):
            br = barrier(v[k], ts)
            rec[f"{name}_{k}_barrier"] = float(br.barrier)
            rec[f"{name}_{k}_barrier_linear"] = float(br.barrier_linear)
        acc = np.asarray(v["test_acc"], np.float64)
        rec[f"{name}_test_acc_dip"] = float(min(acc[0], acc[-1]) - acc.min())
    rec["weights_sweeps"] = rw.iterations
    return rec


# --- summary, figure, table -----------------------------------------------------------------------


def _summary(rows, s) -> list:
    out = []
    for model in MODELS:
        for n in s["ns"]:
            for m in s["ms"]:
                sel = [r for r in rows if r["model"] == model and r["n"] == n and r["m"] == m]
                if not sel:
                    continue
                row = {"model": model, "n": n, "m": m, "seeds": len(sel)}
                for q in METHODS + (("certificate",) if model == "SkipNet" else ()):
                    v = [r[q] for r in sel if q in r]
                    if v:
                        row[q] = float(np.median(v))
                        row[f"{q}_vanished"] = int(sum(x <= VANISHED for x in v))
                out.append(row)
    return out


def _digits_summary(drows, s) -> list:
    out = []
    for w in s["widths"]:
        sel = [r for r in drows if r["w"] == w]
        if not sel:
            continue
        row = {"w": w, "seeds": len(sel)}
        for name in METHODS:
            for k in ("train_loss_barrier", "test_loss_barrier", "test_loss_barrier_linear",
                      "test_acc_dip"):
                row[f"{name}_{k}"] = float(np.median([r[f"{name}_{k}"] for r in sel]))
        out.append(row)
    return out


_COLOURS = {"before": "C3", "weights": "C0", "activations": "C2", "certificate": "C7"}
_MARKERS = {"before": "o", "weights": "s", "activations": "^", "certificate": "D"}
_LABELS = {"before": "before alignment", "weights": "after weight matching",
           "activations": "after activation matching",
           "certificate": "Theorem 11 certificate (η = ½)"}


def _figure(path: Path, rows, drows, s) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = s["ns"]
    has_digits = bool(drows)
    ncol = len(ns) + has_digits
    fig, axes = plt.subplots(len(MODELS), ncol, figsize=(3.6 * ncol, 2.7 * len(MODELS) + 0.6),
                             squeeze=False)
    lin = 1e-5
    for i, model in enumerate(MODELS):
        for j, n in enumerate(ns):
            ax = axes[i][j]
            for q in METHODS + (("certificate",) if model == "SkipNet" else ()):
                sel = [r for r in rows if r["model"] == model and r["n"] == n and q in r]
                if not sel:
                    continue
                ms = sorted({r["m"] for r in sel})
                # barriers at or below 0 (float rounding, ~1e-9) are drawn at 0
                med = [max(0.0, np.median([r[q] for r in sel if r["m"] == mv])) for mv in ms]
                ax.plot([r["m"] for r in sel], [max(0.0, r[q]) for r in sel], _MARKERS[q],
                        color=_COLOURS[q], alpha=0.3, ms=3.5)
                ax.plot(ms, med, "-", marker=_MARKERS[q], ms=4, color=_COLOURS[q],
                        label=_LABELS[q])
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=lin)
            ax.set_xticks(list(s["ms"]), [str(m) for m in s["ms"]], fontsize=7, rotation=30)
            ax.minorticks_off()
            ax.set_xlabel("width m")
            ax.set_ylabel("straight-segment barrier of F")
            title = model if model != "TwoLayer" else "TwoLayer (reference, width m)"
            ax.set_title(f"{title}, n = {n}", fontsize=9)
        if has_digits:
            ax = axes[i][-1]
            key, ylabel = (("test_loss_barrier", "test-loss barrier"),
                           ("train_loss_barrier", "train-loss barrier"),
                           ("test_acc_dip", "test-accuracy dip"))[i]
            for q in METHODS:
                ws = sorted({r["w"] for r in drows})
                med = [np.median([r[f"{q}_{key}"] for r in drows if r["w"] == w]) for w in ws]
                ax.plot([r["w"] for r in drows], [r[f"{q}_{key}"] for r in drows], _MARKERS[q],
                        color=_COLOURS[q], alpha=0.3, ms=3.5)
                ax.plot(ws, med, "-", marker=_MARKERS[q], ms=4, color=_COLOURS[q])
            ax.set_xscale("log")
            ax.set_xticks(list(s["widths"]), [str(w) for w in s["widths"]], fontsize=7)
            ax.minorticks_off()
            ax.set_xlabel("hidden width w")
            ax.set_ylabel(ylabel)
            ax.set_title("digits MLP, 2 hidden layers of width w", fontsize=9)
    hi = max(axes[i][j].get_ylim()[1] for i in range(len(MODELS)) for j in range(len(ns)))
    for i in range(len(MODELS)):  # one y scale for all the paper's networks
        for j in range(len(ns)):
            axes[i][j].set_ylim(-0.5 * lin, hi)  # the zeros just above the frame
    handles = [plt.Line2D([], [], color=_COLOURS[q], marker=_MARKERS[q], label=_LABELS[q])
               for q in (*METHODS, "certificate")]
    rows_ = 1 if ncol >= 3 else 2
    fig.legend(handles=handles, loc="upper center", ncol=4 // rows_, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.22 * rows_ + 0.1) / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _fmt(v, floor: float = 0.0) -> str:
    return "–" if v is None else ("0" if abs(v) <= floor else f"{v:.3g}")


def format_alignment_table(report: dict) -> str:
    """The medians of an alignment report (returned, or read back from alignment.json) as a
    Markdown table: straight-segment barriers before / after weight matching / after activation
    matching for each model, and the SkipNet's certificate; then the digits MLP.

    Barriers within 10 roundings of F (10·eps·max F, eps of the run's dtype: ~1e-8 in float32)
    are printed as 0: the maximum of F on the segment is then an endpoint, up to rounding.
    """
    eps = float(np.finfo(np.dtype(report["settings"]["dtype"])).eps)
    top = max([max(abs(r["f_a"]), abs(r["f_b"])) for r in report["rows"]] or [0.0])
    floor = 10 * eps * top
    summ = {(r["model"], r["n"], r["m"]): r for r in report["summary"]}
    keys = sorted({(n, m) for _, n, m in summ})
    lines = ["| n | m | SkipNet before | weights | activations | certificate | NoSkipNet before "
             "| weights | activations | TwoLayer before | weights | activations |",
             "|---" * 12 + "|"]
    for n, m in keys:
        cells = [str(n), str(m)]
        for model in MODELS:
            r = summ.get((model, n, m), {})
            qs = METHODS + (("certificate",) if model == "SkipNet" else ())
            cells += [_fmt(r.get(q), floor) for q in qs]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("digits_summary"):
        lines += ["", "| digits MLP width | test-loss barrier before | weights | activations "
                  "| test-acc dip before | weights | activations |", "|---" * 7 + "|"]
        for r in report["digits_summary"]:
            cells = [str(r["w"])] + [_fmt(r[f"{q}_test_loss_barrier"]) for q in METHODS] + \
                [_fmt(r[f"{q}_test_acc_dip"]) for q in METHODS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the study ------------------------------------------------------------------------------------


def alignment(
    out: str | Path,
    *,
    preset: str = "full",
    seed: int = 0,
    progress: bool | Callable[[str], None] = True,
    ms: Iterable[int] | None = None,
    ns: Iterable[int] | None = None,
    seeds: Iterable[int] | None = None,
    widths: Iterable[int] | None = None,
    overrides: dict | None = None,
    figures: bool = True,
    certificate: bool = True,
) -> dict:
    """Run the alignment study (see the module docstring) and write `out/alignment.json`.

    **Arguments:**
    - `out`: output folder; finished records and trained minima are kept in `out/stages/` (shared
      with `jaxland scaling` run in the same folder) and reused on a rerun.
    - `preset`: "tiny" (seconds), "quick" (< 3 minutes on 2 CPU cores) or "full" (m ∈ {32, 128,
      512, 2048, 4096}, n ∈ {2, 3, 5}, 2 seeds; digits widths {32, 128, 512}).
    - `seed`: base seed (added to the grid's seed offsets).
    - `progress`: True prints progress to stderr, False is silent, a callable receives each message
      (called after each finished record is written, so it may raise to stop the study).
    - `ms`, `ns`, `seeds`, `widths`, `overrides`: change the grid and budgets (see
      `alignment_settings`).
    - `figures`: write `out/alignment.png` (needs matplotlib).
    - `certificate`: compute (or load) the SkipNet's Theorem 11 certificate; False leaves it out
      (records written without it are kept apart from those with it).

    **Returns:** the report dict (also in `out/alignment.json`): `settings`, `rows` (one per model
    and (m, n, seed): F at the ends, the barriers "before", "weights", "activations", for SkipNet
    "certificate", and the alignments' diagnostics), `certificate_checks` (the certificate of (a,
    aligned b) against that of (a, b)), `summary` (medians and the number of barriers ≤ 1e-6 per
    model, n, m), `digits` and `digits_summary`, `runs_computed`, `runs_loaded`, `seconds`,
    `figures`.
    """
    s = alignment_settings(preset=preset, seed=seed, ms=ms, ns=ns, seeds=seeds, widths=widths,
                           overrides=overrides)
    out = check_out_dir(out)
    # before the study, not after it: the figure and the digits MLP come at the very end
    if figures:
        require("matplotlib", "jaxland alignment (it draws a PNG figure; pass figures=False to "
                "skip)")
    if s["widths"]:
        require("sklearn", "jaxland alignment's digits MLP (pass widths=() to skip it)")
    log = Progress("alignment", progress)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shared = {k: s[k] for k in _SHARED}
    own = {"max_iter": s["max_iter"], "study": "alignment-1", "certificate": bool(certificate)}
    computed = loaded = 0
    rows, checks = [], []
    total = len(s["ms"]) * len(s["ns"]) * len(s["seeds"])
    done = 0
    for si, sd in enumerate(s["seeds"]):  # seed first: a stopped run has covered the whole grid
        for n in s["ns"]:
            x, y = _data(s, n, sd)
            F = objective_fn(x, y, kappa=s["kappa"])
            for m in s["ms"]:
                done += 1
                tag = f"m{m}_n{n}_s{sd}"
                cfg = {**shared, "m": m, "n": n, "seed": sd}
                store = RunStore(out, cfg)  # the scaling study's: minima shared
                astore = RunStore(out, {**cfg, **own})
                estore = RunStore(out, {**cfg, "eta": ETA})  # the scaling study's certificates
                for model, cls in zip(MODELS, (SkipNet, NoSkipNet, TwoLayer), strict=True):
                    name = f"align_{model}_{tag}"
                    rec = astore.load(name)
                    if rec is None:
                        t1 = time.perf_counter()
                        with log.stage(f"{model} {tag}", 3 * _expected("pair", preset, m),
                                       f"[{done}/{total}] {model} {tag}: training or loading "
                                       "the minima, aligning, certificate", event=False):
                            if cls is TwoLayer:
                                a, b = trained_pair(
                                    s, store, x, y, m, n, sd, TwoLayer, prefix="two",
                                    make=lambda k, m=m, n=n, x=x: TwoLayer.init(
                                        k, n=n, m=m, d_y=1, dtype=x.dtype))
                            else:
                                a, b = trained_pair(s, store, x, y, m, n, sd, cls)
                            rec, aligned = _align_model(s, F, x, a, b, m, n, sd, model)
                            if cls is SkipNet and certificate:
                                crec = estore.load(f"cert_{tag}_e{ETA:g}")
                                if crec is None:
                                    crec = _certificate(s, x, y, a, b, m, n, ETA, sd)
                                    estore.save(f"cert_{tag}_e{ETA:g}", crec)
                                rec["certificate"] = _cert_barrier(crec, rec["f_a"], rec["f_b"])
                                rec["certificate_excess"] = float(crec["excess"])
                                if si == 0 and m == s["ms"][0]:
                                    c2 = _certificate(s, x, y, a, aligned, m, n, ETA, sd)
                                    rec["certificate_aligned"] = _cert_barrier(c2, rec["f_a"],
                                                                               rec["f_b"])
                        rec["seconds"] = time.perf_counter() - t1
                        astore.save(name, rec)
                        computed += 1
                        log(f"[{done}/{total}] {model} {tag}: barrier before {rec['before']:.3g}, "
                            f"weights {rec['weights']:.3g}, activations "
                            f"{rec['activations']:.3g} ({rec['seconds']:.1f}s)")
                    else:
                        loaded += 1
                    rows.append(rec)
                    if "certificate_aligned" in rec:
                        checks.append({"m": m, "n": n, "seed": sd,
                                       "certificate": rec["certificate"],
                                       "certificate_aligned": rec["certificate_aligned"]})
    drows = []
    if s["widths"]:
        split = _digits_split(jnp.float64 if s["dtype"] == "float64" else jnp.float32)
        dcfg = {"dtype": s["dtype"], **{k: s[k] for k in ("digit_steps", "digit_lr",
                                                            "digit_points")}}
        for w in s["widths"]:
            for sd in s["digit_seeds"]:
                dstore = RunStore(out, {**dcfg, "w": w, "seed": sd, "max_iter": s["max_iter"],
                                        "study": own["study"]})
                name = f"digits_w{w}_s{sd}"
                rec = dstore.load(name)
                if rec is None:
                    t1 = time.perf_counter()
                    with log.stage(f"digits w={w} seed {sd}", 4 * _expected("pair", preset, w),
                                   f"digits MLP w={w} seed {sd}: training, aligning",
                                   event=False):
                        rec = _digits_record(s, split, w, sd, dstore)
                    rec["seconds"] = time.perf_counter() - t1
                    dstore.save(name, rec)
                    computed += 1
                    log(f"digits w={w} seed {sd}: test-loss barrier before "
                        f"{rec['before_test_loss_barrier']:.3g}, weights "
                        f"{rec['weights_test_loss_barrier']:.3g}, activations "
                        f"{rec['activations_test_loss_barrier']:.3g} ({rec['seconds']:.1f}s)")
                else:
                    loaded += 1
                drows.append(rec)
    report = {
        "settings": s,
        "rows": rows,
        "certificate_checks": checks,
        "summary": _summary(rows, s),
        "digits": drows,
        "digits_summary": _digits_summary(drows, s),
        "runs_computed": computed,
        "runs_loaded": loaded,
        "seconds": time.perf_counter() - t0,
        "figures": [],
    }
    if figures:
        with log.stage("figures", 30.0, "drawing alignment.png", event=False):
            report["figures"] = [_figure(out / "alignment.png", rows, drows, s)]
    report = json.loads(json.dumps(to_jsonable(report)))
    _atomic_write(out / "alignment.json", json.dumps(report, indent=1).encode())
    return report


__all__ = ["alignment", "alignment_settings", "format_alignment_table", "ALIGNMENT_PRESETS"]
