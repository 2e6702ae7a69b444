"""A results folder that survives being killed: every finished piece is written at once, atomically,
and a rerun with the same settings loads it instead of recomputing."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np


def to_jsonable(obj: Any) -> Any:
    """Arrays → lists, numpy scalars → Python numbers, NamedTuples → dicts, recursively.

    Non-finite floats become the strings "nan", "inf", "-inf" so that the JSON stays standard.
    """
    if hasattr(obj, "_asdict"):
        obj = obj._asdict()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (jax.Array, np.ndarray, np.generic)):
        return to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return "nan" if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def settings_hash(settings: dict) -> str:
    blob = json.dumps(to_jsonable(settings), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RunStore:
    """Stage results under `root/stages/`, keyed by name and tagged with a hash of the settings.

    `load(name)` returns the stored JSON record if it was written with the same settings, else None;
    `save(name, record)` writes it atomically. Pytrees (networks) are stored beside it with
    `save_tree`/`load_tree` (equinox serialisation, loaded into a template of the same structure).
    """

    def __init__(self, root: str | os.PathLike, settings: dict):
        self.root = Path(root)
        self.dir = self.root / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tag = settings_hash(settings)

    def load(self, name: str) -> dict | None:
        p = self.dir / f"{name}.json"
        if not p.exists():
            return None
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError:
            return None
        return rec["record"] if rec.get("settings_hash") == self.tag else None

    def save(self, name: str, record: dict) -> dict:
        blob = json.dumps({"settings_hash": self.tag, "record": to_jsonable(record)}, indent=1)
        _atomic_write(self.dir / f"{name}.json", blob.encode())
        return record

    def save_tree(self, name: str, tree) -> None:
        import io

        buf = io.BytesIO()
        eqx.tree_serialise_leaves(buf, tree)
        _atomic_write(self.dir / f"{name}.{self.tag}.eqx", buf.getvalue())

    def load_tree(self, name: str, like):
        p = self.dir / f"{name}.{self.tag}.eqx"
        if not p.exists():
            return None
        return eqx.tree_deserialise_leaves(p, like)
