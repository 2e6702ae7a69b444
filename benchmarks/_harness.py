"""A fair timing harness: every side in its own fresh child processes, interleaved, best and median.

Why: a PyTorch peer run in a process that has just done XLA work is 2–5× slower (XLA:CPU's thread
pool keeps spinning and takes the cores), and the peer's own speed is bimodal from one process to
the next (issue 20). So:

- each *side* (a peer, or jaxland) runs in a child process of its own (``python _harness.py SPEC``),
  which imports only its side's modules: a child of side ``"torch"`` refuses to finish if ``jax``
  got imported, one of side ``"jax"`` if ``torch`` did (`check_imports`);
- the children of the sides are interleaved (peer, jaxland, peer, jaxland, …: load drifts hit all
  alike), at least `processes` (5) per side;
- inside a child a method is timed over a few calls after a warm-up call; the child's figure is its
  best call; over the processes the harness reports the best and the median of those figures;
- the float32 GEMM peak of the machine (4096², XLA and PyTorch, each in its own processes) is
  measured in the same run (`gemm_peak`), and the load average is recorded before every child.

The parent imports neither jax nor torch: it only starts children and collects their JSON.

Results are kept in a *state file* (JSON; one entry per finished child, keyed by configuration and
process number), so a killed run resumes where it stopped (``--resume`` in the scripts).

This module uses only the standard library.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT_TAG = "HARNESS_RESULT "
FORBIDDEN = {"torch": ("jax", "jaxlib"), "jax": ("torch",)}


def check_imports(side: str) -> list[str]:
    """Modules of the other side that this process imported (must be empty)."""
    return [m for m in FORBIDDEN.get(side, ()) if m in sys.modules]


def _child(spec: dict) -> int:
    """In the child: import `spec['module']`, call `spec['func'](**spec['kwargs'])`, print its JSON."""
    sys.path[:0] = [str(HERE), str(HERE.parent)]  # the benchmarks' modules, this checkout's jaxland
    mod = importlib.import_module(spec["module"])
    out = getattr(mod, spec["func"])(**spec.get("kwargs", {}))
    bad = check_imports(spec["side"])
    if bad:
        print(f"side {spec['side']!r} imported {bad}: the measurement would not be fair",
              file=sys.stderr)
        return 3
    out = dict(out, side=spec["side"], pid=os.getpid(), imported_other_side=bad)
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0


def run_child(side: str, module: str, func: str, kwargs: dict | None = None, *,
              env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``module.func(**kwargs)`` in a fresh Python process; return its dict (or an error dict)."""
    spec = dict(side=side, module=module, func=func, kwargs=kwargs or {})
    full_env = dict(os.environ)
    full_env.update(env or {})
    load = os.getloadavg()
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), json.dumps(spec)],
                           capture_output=True, text=True, timeout=timeout, env=full_env,
                           cwd=str(HERE.parent))
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=f"timed out after {timeout} s", loadavg=load)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if p.returncode != 0 or not lines:
        return dict(ok=False, error=f"exit {p.returncode}: {p.stderr[-3000:]}", loadavg=load,
                    process_s=time.perf_counter() - t0)
    out = json.loads(lines[-1][len(RESULT_TAG):])
    out.update(ok=True, loadavg=load, process_s=time.perf_counter() - t0,
               env={k: v for k, v in (env or {}).items()})
    return out


class State:
    """Finished children, keyed by ``key`` (a configuration) and process number; saved after each."""

    def __init__(self, path: Path, resume: bool):
        self.path = Path(path)
        self.data: dict = {}
        if resume and self.path.exists():
            self.data = json.loads(self.path.read_text())

    def get(self, key: str, i: int):
        return self.data.get(key, {}).get(str(i))

    def put(self, key: str, i: int, rec: dict) -> None:
        self.data.setdefault(key, {})[str(i)] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)

    def results(self, key: str) -> list[dict]:
        return [v for _, v in sorted(self.data.get(key, {}).items(), key=lambda kv: int(kv[0]))]


def interleaved(state: State, configs: list[tuple[str, dict]], processes: int, log=print,
                timeout: float | None = None) -> None:
    """Run every configuration `processes` times, round-robin (A B C A B C …), skipping children that
    `state` already holds (a failed child is run again). A configuration is (key, dict(side, module, func, kwargs, env))."""
    for i in range(processes):
        for key, c in configs:
            done = state.get(key, i)
            if done is not None and done.get("ok"):
                continue
            rec = run_child(c["side"], c["module"], c["func"], c.get("kwargs"), env=c.get("env"),
                            timeout=timeout)
            state.put(key, i, rec)
            msg = "ok" if rec.get("ok") else f"FAILED: {rec.get('error', '')[-400:]}"
            log(f"  [{i + 1}/{processes}] {key}: {msg} ({rec.get('process_s', 0):.0f} s, load "
                f"{rec['loadavg'][0]:.2f})")


def best_median(xs: list[float]) -> tuple[float | None, float | None]:
    """(min, median) of per-process best times (None when empty)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return min(xs), statistics.median(xs)


def summary(results: list[dict], name: str, points: int | None = None, flops: float | None = None,
            peak: float | None = None) -> dict:
    """Best and median over processes of one method's per-process best seconds (``results[k]
    ['methods'][name]['best_s']``), with points/s, GFLOP/s and the fraction of `peak` (FLOP/s)."""
    per = [r["methods"][name]["best_s"] for r in results
           if r.get("ok") and name in r.get("methods", {})]
    best, med = best_median(per)
    out = dict(method=name, processes=len(per), per_process_best_s=per, best_s=best, median_s=med)
    if best is not None and points:
        out.update(best_points_per_s=points / best, median_points_per_s=points / med)
    if best is not None and flops:
        out.update(best_gflop_per_s=flops / best / 1e9, median_gflop_per_s=flops / med / 1e9)
        if peak:
            out.update(best_fraction_of_peak=flops / best / peak,
                       median_fraction_of_peak=flops / med / peak)
    return out


def ratios(ours: dict, peer: dict) -> dict:
    """Speed ratios (peer time / our time): our best against the peer's best, our median against
    the peer's best (the conservative one) and against the peer's median."""
    if ours.get("best_s") is None or peer.get("best_s") is None:
        return dict(best_vs_peer_best=None, median_vs_peer_best=None, median_vs_peer_median=None)
    return dict(best_vs_peer_best=peer["best_s"] / ours["best_s"],
                median_vs_peer_best=peer["best_s"] / ours["median_s"],
                median_vs_peer_median=peer["median_s"] / ours["median_s"])


def gemm_configs(size: int = 4096) -> list[tuple[str, dict]]:
    """The GEMM peak sides: XLA (``_sides_jax.gemm``) and PyTorch (``_sides_torch.gemm``)."""
    return [(f"gemm/xla/{size}", dict(side="jax", module="_sides_jax", func="gemm",
                                       kwargs=dict(size=size))),
            (f"gemm/torch/{size}", dict(side="torch", module="_sides_torch", func="gemm",
                                         kwargs=dict(size=size)))]


def gemm_peak(state: State, size: int = 4096) -> dict:
    """Best and median GFLOP/s of the float32 GEMM per library, from the children in `state`."""
    out = {}
    for key, c in gemm_configs(size):
        lib = key.split("/")[1]
        s = summary(state.results(key), "gemm", flops=2.0 * size**3)
        out[lib] = dict(best_flop_per_s=None if s["best_s"] is None else 2.0 * size**3 / s["best_s"],
                        median_flop_per_s=None if s["median_s"] is None
                        else 2.0 * size**3 / s["median_s"], processes=s["processes"])
    return out


def machine_meta() -> dict:
    return dict(cpu_count=os.cpu_count(), platform=platform.platform(),
                python=platform.python_version(), loadavg=os.getloadavg(),
                time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def time_calls(run, *, max_calls: int = 3, budget_s: float = 6.0, warmup=None) -> dict:
    """In a child: one warm-up call (``warmup`` or ``run``), then timed calls of ``run`` (which must
    block until done) until `max_calls` or `budget_s`; returns best / all wall and CPU seconds."""
    (warmup or run)()
    walls, cpus, out = [], [], None
    spent = 0.0
    while len(walls) < max(1, max_calls):
        c0, t0 = time.process_time(), time.perf_counter()
        out = run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        spent += walls[-1]
        if spent >= budget_s:
            break
    return dict(best_s=min(walls), wall_s=walls, cpu_s=cpus, result=out)


if __name__ == "__main__":
    raise SystemExit(_child(json.loads(sys.argv[1])))
