"""Soak test of every path kind: nothing hangs, jit∘vmap equals eager (issue 19).

Every path kind — `jaxland.paths` (linear, polychain uniform and arc length, bezier, concat, reverse,
from_function) and the paths returned by `connect` (Theorem 11 for SkipNet, Freeman & Bruna for
TwoLayer, Lemma 7 for ResidualLinear), `fit_curve` (Bézier and polychain), `neb` and `dss` — between
*trained* endpoints, in float32 and float64, under five modes:

- ``eager``: a Python loop of `path(t)` calls (at most `--eager-cap` points of each P: a loop of
  10 000 dispatches measures Python, not the path);
- ``jit``: `jax.jit(path)` called at the same points;
- ``vmap``: `jax.vmap(path)(ts)` without jit (op by op);
- ``jit_vmap``: `jax.jit(jax.vmap(path))(ts)`, checked against the eager values at a few t;
- ``grad``: `jax.jit(jax.vmap(jax.grad(φ ∘ path)))(ts)` of the scalar φ(ξ) = Σ ξ² / 2 over the
  floating leaves, and `eqx.filter_grad` of φ(path(t)) with respect to the path's own arrays at one t;

at P ∈ {1, 10, 1000, 10 000} points. One child process per (kind, dtype) trains its endpoints once,
builds the path and runs every (mode, P), writing a line to a progress file *before* each case starts
and after it ends; the parent kills a child that runs past `--timeout` and reports the case that was
in flight as a hang. Results go to the JSON file after every child (``--resume`` skips finished
(kind, dtype) pairs).

Full size (the issue's network: SkipNet n=2, m=64, d_g=d_o=4, hidden=(6,), 400 Adam steps at lr 3e-3
on 256 points of the circle): ``python benchmarks/soak.py`` → benchmarks/results/soak.json.
`tests/test_soak.py` runs it with ``--small`` (m=16, 64 points, 150 steps, P up to 1000).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("linear", "polychain", "polychain_arclength", "bezier", "concat", "reverse", "function",
         "connect_skipnet", "connect_twolayer", "connect_residual", "fit_curve_bezier",
         "fit_curve_polychain", "neb", "dss")
MODES = ("eager", "jit", "vmap", "jit_vmap", "grad")
FULL_P = (1, 10, 1000, 10000)
SMALL_P = (1, 10, 1000)


def tolerance(dtype) -> float:
    """Relative tolerance of jit∘vmap against eager, 1000·ε of the dtype (2.2e-13 in float64, 1.2e-4
    in float32), relative to the largest entry of the leaf. Both evaluate the same operations per
    point; XLA only fuses and vectorises the batched program differently (reassociated sums, FMA),
    a few ulp per operation; the pseudo-inverse steps amplify such errors by at most the condition
    number of W2(t), and singular values below 1000·ε·σ_max are cut (`PINV_RTOL_FACTOR`), so 1000·ε is
    the resolution of the constructed paths themselves."""
    import numpy as np

    return float(1000 * np.finfo(dtype).eps)


# ----------------------------------------------------------------------------------------------
# child: one (kind, dtype)


def _data(jnp, jax, N, dtype):
    kx, kt, kc = jax.random.split(jax.random.PRNGKey(0), 3)
    ang = jax.random.uniform(kx, (N,), dtype) * 2 * jnp.pi
    x = jnp.stack([jnp.cos(ang), jnp.sin(ang)], 1)
    T = jax.random.normal(kt, (8, 2), dtype)
    c = jax.random.normal(kc, (8, 1), dtype)
    y = jax.nn.relu(x @ T.T) @ c / 4
    return x, y


def build_path(kind: str, dtype_name: str, small: bool):
    """The path of a kind between trained endpoints ("_hang": never returns, for the watchdog test)."""
    if kind == "_hang":
        time.sleep(1e6)
    import jax

    if dtype_name == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    import jaxland as jl

    dtype = jnp.dtype(dtype_name)
    m, N, steps = (8, 32, 100) if small else (64, 256, 400)
    npts = 9 if small else 33  # connect's certificate points (the soak evaluates the path itself)
    x, y = _data(jnp, jax, N, dtype)
    kappa = 1e-3
    opt = optax.adam(3e-3)

    def train(net):
        return jl.fit(net, x, y, kappa=kappa, steps=steps, optimizer=opt).net

    def skip(seed):
        return train(jl.SkipNet.init(jax.random.PRNGKey(seed), n=2, m=m, d_y=1, d_g=4, d_o=4,
                                     hidden=(6,), dtype=dtype))

    F = jl.objective_fn(x, y, kappa=kappa)
    if kind == "connect_twolayer":
        a, b = (train(jl.TwoLayer.init(jax.random.PRNGKey(s), n=2, m=m, dtype=dtype)) for s in (10, 11))
        path = jl.connect(a, b, x, y, kappa=kappa, eta=0.5, key=jax.random.PRNGKey(1),
                          n_points=npts).path
    elif kind == "connect_residual":
        a, b = (train(jl.ResidualLinear.init(jax.random.PRNGKey(s), d_x=2, d_y=1, d_z=4, hidden=(6,),
                                             dtype=dtype)) for s in (10, 11))
        path = jl.connect(a, b, x, y, kappa=kappa, n_points=npts).path
    else:
        a, b = skip(10), skip(11)
        if kind == "connect_skipnet":
            path = jl.connect(a, b, x, y, kappa=kappa, eta=0.5, key=jax.random.PRNGKey(1),
                              n_points=npts).path
        elif kind == "linear":
            path = jl.paths.linear(a, b)
        elif kind in ("polychain", "polychain_arclength", "bezier", "concat", "reverse", "function"):
            c = skip(12)
            if kind == "polychain":
                path = jl.paths.polychain([a, c, b])
            elif kind == "polychain_arclength":
                path = jl.paths.polychain([a, c, b], parametrization="arclength")
            elif kind == "bezier":
                path = jl.paths.bezier([a, c, b])
            elif kind == "concat":
                path = jl.paths.concat(jl.paths.linear(a, c), jl.paths.bezier([c, a, b]),
                                       breaks=[0.4])
            elif kind == "reverse":
                path = jl.paths.reverse(jl.paths.concat(jl.paths.linear(a, c), jl.paths.linear(c, b)))
            else:
                path = jl.paths.from_function(jl.paths.bezier([a, c, b]), start_like=a)
        elif kind == "fit_curve_bezier":
            path = jl.fit_curve(F, a, b, kind="bezier", steps=50, points=33).path
        elif kind == "fit_curve_polychain":
            path = jl.fit_curve(F, a, b, kind="polychain", bends=2, steps=50, points=33).path
        elif kind == "neb":
            path = jl.neb(F, a, b, pivots=6, steps=30, points_per_segment=8).path
        elif kind == "dss":
            path = jl.dss(F, a, b, max_beads=6, bead_steps=50, segment_points=9).path
        else:
            raise ValueError(f"unknown path kind {kind!r}; one of {KINDS}")
    return path


def phi(net):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    return sum(jnp.sum(v * v) for v in jax.tree.leaves(eqx.filter(net, eqx.is_inexact_array))) / 2


def _max_rel(eager_pts, batch, idx):
    """max over the points idx and the leaves of |eager − batch| / max|batch leaf|."""
    import jax
    import numpy as np

    worst = 0.0
    for j, i in enumerate(idx):
        for e, b in zip(jax.tree.leaves(eager_pts[j]), jax.tree.leaves(batch), strict=True):
            e, bi = np.asarray(e), np.asarray(b[i])
            scale = float(np.max(np.abs(np.asarray(b)))) or 1.0
            worst = max(worst, float(np.max(np.abs(e - bi))) / scale)
    return worst


def run_child(kind: str, dtype_name: str, small: bool, sizes, eager_cap: int, progress: Path):
    """Build the path, run every (mode, P), one progress line before and after each case."""

    def log(**rec):
        with progress.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    t0 = time.perf_counter()
    log(event="start", case="build")
    path = build_path(kind, dtype_name, small)
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    log(event="end", case="build", ok=True, seconds=time.perf_counter() - t0,
        path_type=type(path).__name__)
    tol = tolerance(dtype_name)
    scalar = lambda t: phi(path(t))
    for P in sizes:
        ts = jnp.linspace(0.0, 1.0, P, dtype=jnp.dtype(dtype_name))
        check = sorted(set(np.linspace(0, P - 1, min(P, 5)).astype(int).tolist()))
        for mode in MODES:
            case = f"{mode}/P={P}"
            log(event="start", case=case)
            t1 = time.perf_counter()
            rec = dict(event="end", case=case, mode=mode, P=P, ok=True)
            try:
                if mode == "eager":
                    n = min(P, eager_cap)
                    pts = [path(ts[i]) for i in range(n)]
                    jax.block_until_ready(pts)
                    rec["points"] = n
                elif mode == "jit":
                    n = min(P, eager_cap)
                    f = jax.jit(lambda p, t: p(t))  # the path as an argument (a pytree)
                    jax.block_until_ready([f(path, ts[i]) for i in range(n)])
                    rec["points"] = n
                elif mode == "vmap":
                    jax.block_until_ready(jax.vmap(path)(ts))
                elif mode == "jit_vmap":
                    f = jax.jit(jax.vmap(path))
                    batch = jax.block_until_ready(f(ts))
                    t2 = time.perf_counter()
                    jax.block_until_ready(f(ts))
                    rec["run_seconds"] = time.perf_counter() - t2
                    rec["compile_and_run_seconds"] = t2 - t1
                    err = _max_rel([path(ts[i]) for i in check], batch, check)
                    rec.update(max_rel_err=err, tol=tol, ok=bool(err <= tol))
                else:
                    g = jax.block_until_ready(jax.jit(jax.vmap(jax.grad(scalar)))(ts))
                    g_finite = bool(np.all(np.isfinite(np.asarray(g))))
                    i = check[len(check) // 2]
                    ge = float(jax.grad(scalar)(ts[i]))  # eager grad at one t
                    gerr = abs(ge - float(g[i])) / max(1.0, abs(ge))
                    gp = eqx.filter_grad(lambda p: phi(p(ts[i])))(path)
                    gp_finite = all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(gp))
                    # grad of a smooth scalar: same tolerance relative to max(1, |dφ/dt|)
                    rec.update(grad_rel_err=gerr, grad_t_finite=g_finite, grad_path_finite=gp_finite,
                               ok=bool(g_finite and gp_finite and gerr <= tol))
                    if not g_finite:
                        rec["nonfinite_t"] = np.asarray(ts)[~np.isfinite(np.asarray(g))][:5].tolist()
            except Exception as e:  # noqa: BLE001 - every failure is reported with its case
                rec.update(ok=False, error=f"{type(e).__name__}: {str(e)[:500]}")
            rec["seconds"] = time.perf_counter() - t1
            log(**rec)


# ----------------------------------------------------------------------------------------------
# parent: one child per (kind, dtype), a watchdog each


def run_one(kind, dtype, args, workdir: Path) -> dict:
    progress = workdir / f"progress_{kind}_{dtype}.jsonl"
    progress.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, dtype,
           "--progress", str(progress), "--sizes", ",".join(map(str, args.sizes)),
           "--eager-cap", str(args.eager_cap)] + (["--small"] if args.small else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=args.timeout)
        hung = False
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        hung = True
    lines = [json.loads(l) for l in progress.read_text().splitlines()] if progress.exists() else []
    cases, open_case = {}, None
    for rec in lines:
        if rec["event"] == "start":
            open_case = rec["case"]
        else:
            cases[rec["case"]] = {k: v for k, v in rec.items() if k not in ("event", "case")}
            open_case = None
    res = dict(kind=kind, dtype=dtype, seconds=time.perf_counter() - t0, cases=cases,
               returncode=proc.returncode, hung=hung)
    if hung:
        res["hung_case"] = open_case or "(between cases)"
    elif proc.returncode != 0:
        res["crashed_case"] = open_case
        res["output_tail"] = (out or "")[-2000:]
    res["ok"] = (not hung and proc.returncode == 0 and "build" in cases
                 and all(c.get("ok") for c in cases.values())
                 and len(cases) == 1 + len(MODES) * len(args.sizes))
    return res


def failures(results) -> list[str]:
    """One line per failing (kind, dtype): the case that hung, crashed or failed its check."""
    out = []
    for r in results:
        if r["ok"]:
            continue
        name = f"{r['kind']}/{r['dtype']}"
        if r["hung"]:
            out.append(f"{name}: HANG in case {r['hung_case']} (killed after the watchdog)")
        elif r["returncode"] != 0:
            out.append(f"{name}: child exited {r['returncode']} in case {r.get('crashed_case')}: "
                       f"{r.get('output_tail', '')[-300:]}")
        bad = [f"{c}: {v.get('error') or v}" for c, v in r["cases"].items() if not v.get("ok")]
        out += [f"{name}: {b}" for b in bad]
        if not r["hung"] and r["returncode"] == 0 and not bad:
            out.append(f"{name}: missing cases ({len(r['cases'])} reported)")
    return out


def table(results) -> str:
    rows = [f"{'kind':22s} {'dtype':8s} {'ok':4s} {'sec':>6s}  jit_vmap pts/s at largest P   "
            f"max rel err   worst case"]
    for r in results:
        jv = [v for c, v in r["cases"].items() if c.startswith("jit_vmap/")]
        big = max(jv, key=lambda v: v["P"]) if jv else None
        rate = f"{big['P'] / big['run_seconds']:12.0f} (P={big['P']})" if big and "run_seconds" in big else "-"
        err = max((v.get("max_rel_err", 0) for v in jv), default=float("nan"))
        worst = r.get("hung_case", "") or max(r["cases"].items(), key=lambda kv: kv[1].get("seconds", 0),
                                               default=("-", {}))[0]
        rows.append(f"{r['kind']:22s} {r['dtype']:8s} {'yes' if r['ok'] else 'NO':4s} "
                    f"{r['seconds']:6.1f}  {rate:28s}  {err:10.2e}   {worst}")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CI sizes (m=16, P up to 1000)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--pairs", default=None, help="kind:dtype,... instead of --kinds × --dtypes")
    ap.add_argument("--sizes", default=None, help="comma-separated P values")
    ap.add_argument("--eager-cap", type=int, default=None, help="points of the eager/jit loops")
    ap.add_argument("--timeout", type=float, default=None, help="watchdog per child, seconds")
    ap.add_argument("--jobs", type=int, default=1, help="children at once")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "soak.json"))
    ap.add_argument("--resume", action="store_true", help="skip (kind, dtype) pairs already in --out")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "DTYPE"), help=argparse.SUPPRESS)
    ap.add_argument("--progress", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
                  else list(SMALL_P if args.small else FULL_P))
    args.eager_cap = args.eager_cap or (10 if args.small else 1000)
    args.timeout = args.timeout or (240.0 if args.small else 900.0)
    if args.child:
        run_child(*args.child, args.small, args.sizes, args.eager_cap, Path(args.progress))
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import jax

    meta = dict(jax=jax.__version__, small=args.small, sizes=args.sizes, eager_cap=args.eager_cap,
                timeout=args.timeout, cpus=os.cpu_count(), modes=list(MODES))
    done = []
    if args.resume and out.exists():
        done = [r for r in json.loads(out.read_text())["results"] if r["ok"]]
    pairs = ([tuple(p.split(":")) for p in args.pairs.split(",")] if args.pairs
             else [(k, d) for k in args.kinds.split(",") for d in args.dtypes.split(",")])
    todo = [(k, d) for k, d in pairs if not any(r["kind"] == k and r["dtype"] == d for r in done)]
    results = list(done)
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="soak_progress_"))

    def write():
        out.write_text(json.dumps(dict(meta=meta, results=results), indent=1))

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, args.jobs)) as ex:
        for r in ex.map(lambda kd: run_one(*kd, args, workdir), todo):
            results.append(r)
            write()
            print(f"{r['kind']:22s} {r['dtype']:8s} {'ok' if r['ok'] else 'FAIL'} "
                  f"{r['seconds']:.1f}s", flush=True)
    write()
    print(table(results))
    bad = failures(results)
    for line in bad:
        print("FAIL", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
