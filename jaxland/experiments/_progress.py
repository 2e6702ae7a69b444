"""Progress lines of the long experiments: `[jaxland <name> <seconds>s] message` on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """`progress(msg)`: a callable receives each message; True prints it on stderr with the seconds
    since the start and the experiment's `name`; False (or None) stays silent."""

    def __init__(self, name: str, progress: bool | Callable[[str], None] | None = True):
        self.prefix = "jaxland" if not name else f"jaxland {name}"
        self.t0 = time.perf_counter()
        self.fn = progress if callable(progress) else None
        self.on = bool(progress)

    def __call__(self, msg: str) -> None:
        if self.fn is not None:
            self.fn(msg)
        elif self.on:
            print(f"[{self.prefix} {time.perf_counter() - self.t0:7.1f}s] {msg}", file=sys.stderr,
                  flush=True)
