"""The examples (issue 13, §4) run in their quick mode and write their figures.

They run in this process (jax, jaxland and matplotlib are imported once for the whole session),
each from its file, as `main(["--quick", "--out", tmp])`."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")  # the digits


def run_example(name, out):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # equinox Modules (dataclasses) look their module up there
    spec.loader.exec_module(module)
    return module.main(["--quick", "--out", str(out)])


def check_figures(out: Path, names):
    for name in names:
        path = out / name
        assert path.exists() and path.stat().st_size > 5000, name  # a picture, not an empty file


def test_digits_cnn_batchnorm(tmp_path):
    res = run_example("digits_cnn_batchnorm", tmp_path)
    check_figures(
        tmp_path,
        [
            "interpolation.png",
            "paths.png",
            "contour.png",
            "surface.png",
            "trajectory.png",
            "density.png",
        ],
    )
    assert res["segment_barrier"] > 0 and np.isfinite(res["curve_barrier"])
    assert len(res["top_eigenvalues"]) == 3 and res["top_eigenvalues"][0] > 0


def test_digits_nnx_mlp(tmp_path):
    pytest.importorskip("flax.nnx")
    res = run_example("digits_nnx_mlp", tmp_path)
    check_figures(tmp_path, ["nnx_summary.png"])
    assert res["segment_barrier"] > 0 and np.isfinite(res["curve_barrier"])
    assert len(res["top_eigenvalues"]) == 3 and res["top_eigenvalues"][0] > 0
