"""Multi-host evaluation: `evaluate_path` under `jax.distributed` with two CPU processes (gloo).

The same call as on one host shards the points over the global devices (one per process); every
process must get all P values, equal to evaluating each point locally.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("_multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_local_evaluation():
    port = str(_free_port())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(i), "2", port], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        assert lines, out[-2000:] + err[-2000:]
        results.append(json.loads(lines[-1][len("RESULT "):]))
    for r in results:
        # float32; sharded and local evaluation run the same per-point arithmetic except for the
        # structured path's precomputed first layer: agreement to a few ulps of values ~1
        np.testing.assert_allclose(r["structured"], r["local"], rtol=1e-5)
        np.testing.assert_allclose(r["plain"], r["local"], rtol=1e-5)
        np.testing.assert_allclose(r["user_fn"], r["local_user"], rtol=1e-5)
        assert len(r["structured"]) == 11
    # both processes hold the same global result
    assert results[0]["structured"] == results[1]["structured"]
    assert results[0]["plain"] == results[1]["plain"]
