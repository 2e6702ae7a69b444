"""One process of the two-process `jax.distributed` test (tests/test_multihost.py).

Usage: python _multihost_worker.py PROCESS_ID NUM_PROCESSES PORT
Prints one line ``RESULT {json}`` with the values `evaluate_path` returned on this process.
"""

import json
import sys

import jax

pid, nproc, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=nproc,
                           process_id=pid)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxland  # noqa: E402

assert jax.process_count() == nproc and len(jax.devices()) == nproc, jax.devices()
dims = dict(n=3, m=6, d_g=2, hidden=(3,), d_o=2, d_y=1)
a = jaxland.SkipNet.init(jax.random.PRNGKey(1), **dims)
b = jaxland.SkipNet.init(jax.random.PRNGKey(2), **dims)
x = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
y = jax.random.normal(jax.random.PRNGKey(3), (8, 1))
F = jaxland.objective_fn(x, y, kappa=0.1)
path = jaxland.paths.linear(a, b)
ts = np.linspace(0.0, 1.0, 11)  # 11 points on 2 processes: the last chunk is padded
out = dict(
    structured=np.asarray(jaxland.evaluate_path(F, path, ts)).tolist(),
    plain=np.asarray(jaxland.evaluate_path(F, path, ts, structured=False)).tolist(),
    user_fn=np.asarray(jaxland.evaluate_path(lambda p: jnp.sum(p.W1 ** 2), path, ts)).tolist(),
    local=[float(F(path(t))) for t in ts],
    local_user=[float(jnp.sum(path(t).W1 ** 2)) for t in ts],
)
print("RESULT " + json.dumps(out), flush=True)
