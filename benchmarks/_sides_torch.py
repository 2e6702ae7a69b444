"""The PyTorch side of the benchmarks, run by `_harness.py` in child processes that never import jax.

The problems' weights and data come from the ``.npz`` files that `_sides_jax.prepare` writes (the
same arrays as jaxland's side, bit for bit).
"""

from __future__ import annotations

import numpy as np
import torch

from _harness import time_calls
from _torch_models import TorchSkipNet, cnn_from_arrays, mlp_from_arrays, mse_mean


def gemm(size: int = 4096, calls: int = 5) -> dict:
    """Best seconds of a float32 (size × size) @ (size × size) in PyTorch (its default threads)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    t = time_calls(lambda: torch.mm(a, b), max_calls=calls, budget_s=20.0)
    t.pop("result")
    return dict(methods={"gemm": t}, torch=torch.__version__, threads=torch.get_num_threads())


def _models(npz: str):
    """(model a, model b, x, y, loss) of the problem stored in `npz`."""
    z = np.load(npz, allow_pickle=False)
    kind = str(z["kind"])
    x = torch.from_numpy(np.array(z["x"]))
    if kind == "skipnet":
        def net(p):
            k = int(z[p + "n_theta"])
            return TorchSkipNet(z[p + "W1"], z[p + "W2"], z[p + "V1"], z[p + "V2"],
                                [z[f"{p}theta{i}"] for i in range(k)])

        return net("a_"), net("b_"), x, torch.from_numpy(np.array(z["y"])), mse_mean
    y = torch.from_numpy(np.array(z["y"], dtype=np.int64))

    def ce(pred, yy):
        return torch.nn.functional.cross_entropy(pred, yy)

    if kind == "mlp":
        def net(p):
            k = int(z[p + "layers"])
            return mlp_from_arrays([z[f"{p}w{i}"] for i in range(k)], [z[f"{p}b{i}"] for i in range(k)])
    else:
        def net(p):
            return cnn_from_arrays([(z[p + "c1w"], z[p + "c1b"]), (z[p + "c2w"], z[p + "c2b"])],
                                   list(z["strides"]), (z[p + "fcw"], z[p + "fcb"]))
    return net("a_"), net("b_"), x, y, ce


def loss_landscapes_path(npz: str, points: int, max_calls: int = 3, budget_s: float = 6.0) -> dict:
    """`loss_landscapes.linear_interpolation(a, b, Loss(loss, x, y), steps=points)`: F at
    t = k / points, k = 1 … points (its grid: it steps before it evaluates), best of a few calls after a warm-up call."""
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    a, b, x, y, loss = _models(npz)
    metric = Loss(loss, x, y)

    def run():
        return np.asarray(loss_landscapes.linear_interpolation(a, b, metric, steps=points,
                                                               deepcopy_model=True), np.float64)

    t = time_calls(run, max_calls=max_calls, budget_s=budget_s)
    vals = t.pop("result")
    return dict(methods={f"loss_landscapes@{points}": t}, values={f"loss_landscapes@{points}":
                                                                  vals.tolist()},
                torch=torch.__version__, threads=torch.get_num_threads())


def pyhessian_eigs(npz: str, ts: list, k: int, probes: int, trace: bool, repeats: int = 1) -> dict:
    """PyHessian at the points (1 − t) a + t b of the problem in `npz` (a new `hessian` object per
    point, as a user writes it): top-k eigenvalues (power iteration with deflation, its defaults)
    and, with `trace`, Hutchinson's trace with `probes` probes; Hessian-vector products counted."""
    import sys

    from pyhessian import hessian

    ph_mod = sys.modules["pyhessian.hessian"]  # the module (the package exports the class)

    a, b, x, y, loss = _models(npz)
    pa = {n: p.detach().clone() for n, p in a.named_parameters()}
    pb = {n: p.detach().clone() for n, p in b.named_parameters()}
    models = []
    for t in ts:
        m = _models(npz)[0]
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.copy_((1 - float(t)) * pa[n] + float(t) * pb[n])
        models.append(m)
    orig = ph_mod.hessian_vector_product
    counter = [0]

    def counted(*args, **kw):
        counter[0] += 1
        return orig(*args, **kw)

    ph_mod.hessian_vector_product = counted
    hvps: list = []

    def eig():
        torch.manual_seed(0)
        out = []
        hvps.clear()
        for mdl in models:
            h = hessian(mdl, loss, data=(x, y), cuda=False)
            counter[0] = 0
            vals, _ = h.eigenvalues(top_n=k)
            hvps.append(counter[0])
            out.append([float(v) for v in vals])
        return out

    def tr():
        torch.manual_seed(0)
        return [float(np.mean(hessian(mdl, loss, data=(x, y), cuda=False).trace(maxIter=probes,
                                                                                tol=0.0)))
                for mdl in models]

    te = time_calls(eig, max_calls=repeats, budget_s=0.0, warmup=lambda: None)
    out = dict(methods={"eigs": te}, eigs=te.pop("result"), hvps=list(hvps),
               torch=torch.__version__, threads=torch.get_num_threads())
    if trace:
        tt = time_calls(tr, max_calls=repeats, budget_s=0.0, warmup=lambda: None)
        out["trace"] = tt.pop("result")
        out["methods"]["trace"] = tt
    return out
