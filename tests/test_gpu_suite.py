"""The one-shot GPU suite (benchmarks/gpu_suite.py) at tiny sizes on CPU (`--smoke`), so that the
script cannot rot: every benchmark runs, and the JSON has the device, the versions and the times.
Speed is not checked here (only in the benchmarks themselves)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

import jaxland

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def test_smoke_run_writes_every_benchmark(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, str(SUITE), "--smoke", "--out", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_suite.json").read_text())
    meta, results = data["meta"], data["benchmarks"]
    assert meta["complete"] and meta["smoke"]
    assert meta["jax"] == jax.__version__ and meta["jaxland"] == jaxland.__version__
    assert meta["device"].startswith("cpu")
    sys.path.insert(0, str(SUITE.parent))
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(SUITE.parent))
    assert set(results) == set(gpu_suite.BENCHMARKS)
    for name, r in results.items():
        if name == "align_16384" and not hasattr(jaxland, "align"):
            assert r["status"] == "skipped: jaxland.align not available"
            continue
        assert r["status"] == "ok", (name, r)
        assert r["first_call_s"] > 0 and r["seconds"] > 0 and r["compile_s"] >= 0, (name, r)
        assert r.get("finite", True), name
    assert results["reference_1e4"]["target_s"] == 0.25
    assert results["plane_digits_cnn"]["points"] == 11 * 11
