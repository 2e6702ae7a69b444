"""Checks before a long run: the output folder can be written, the optional packages are there.

Everything here runs before anything is computed or created, so a bad argument costs nothing and
leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np

_EXTRAS = {"matplotlib": "plot", "sklearn": "data"}


def require(module: str, why: str) -> None:
    """Raise ``ImportError`` (one line: what needs it, how to install it) unless `module` is
    installed."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken one
        found = False
    if not found:
        extra = _EXTRAS.get(module)
        how = f"pip install 'jaxland[{extra}]'" if extra else f"pip install {module}"
        raise ImportError(f"{why} needs {module}, which is not installed; install it with `{how}`")


def check_out_dir(out, name: str = "out") -> Path:
    """Check that `out` is, or can be created as, a folder this process can write into.

    Nothing is created: the nearest existing folder on the way to `out` is probed with a temporary
    file that is removed at once. Raises ``ValueError`` naming `name` and the path otherwise (an
    existing file, a file on the way, no write permission, a read-only file system).
    """
    if not isinstance(out, (str, os.PathLike)) or str(out) == "":
        raise TypeError(f"{name} must be a folder path (str or pathlib.Path); got {out!r}")
    p = Path(out).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} exists and is not a folder")
    probe = p.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{name}: cannot create {str(p)!r}: {str(probe)!r} is a file, not a "
                         "folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".jaxland-probe-")
    except OSError as e:
        what = "write into" if probe == p.absolute() else f"create {str(p)!r} in"
        raise ValueError(f"{name}: cannot {what} {str(probe)!r} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)
    return p


def check_seed(seed, name: str = "seed") -> int:
    """A PRNG seed: an integer in [0, 2^31) (larger ones would wrap around in the uint32 key,
    negative ones would name runs `s-5`). Raises ``ValueError`` naming `name` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**31:
        raise ValueError(f"{name} must be an integer in [0, 2**31); got {seed!r}")
    return int(seed)
