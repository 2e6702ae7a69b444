"""The residual networks of benchmarks/_resnet_models.py (one definition for tests and benchmarks)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _resnet_models import ResNet, apply, make  # noqa: E402

__all__ = ["ResNet", "apply", "make"]
