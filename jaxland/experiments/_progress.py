"""Progress lines of the long experiments: `[jaxland <name> <seconds>s] message` on stderr.

A long job never waits silently. `Progress.stage(name, expected=…)` wraps one stage of a job:

    log = Progress("figure1")
    with log.stage("training minimum_a", expected=20.0):
        net = fit(...)                   # one long jitted call: no Python runs meanwhile

While the stage runs, a background thread prints ``still in stage training minimum_a, 30s`` every
`heartbeat` seconds (default 30, or the environment variable ``JAXLAND_HEARTBEAT_S``; 0 turns the
heartbeat off), so that a single long compile or jitted call is visible as work, not a hang. A
stage that runs past `slow_factor` × `expected` seconds (default 10×, or ``JAXLAND_SLOW_FACTOR``)
is named once: ``stage training minimum_a is slow: 201s, expected about 20s (10× that is the
warning level)``. XLA releases the interpreter lock while it compiles and runs, so the thread keeps
its rhythm during those calls too.

Heartbeat and slow-stage lines are status, not events: they go to stderr when `progress` is True
and nowhere otherwise (a `progress` callable receives the job's own messages only, always on the
calling thread, so it may raise to stop the job).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

HEARTBEAT_S = 30.0  # the longest silence while a stage runs (seconds)
SLOW_FACTOR = 10.0  # a stage is named as slow past this multiple of its expected time


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number of seconds >= 0; "
                         f"got {raw!r}") from None
    if not v >= 0:
        raise ValueError(f"environment variable {name} must be >= 0; got {raw!r}")
    return v


class Progress:
    """`progress(msg)`: a callable receives each message; True prints it on stderr with the seconds
    since the start and the experiment's `name`; False (or None) stays silent.

    **Arguments:**
    - `name`: the experiment's name in the prefix (`""` for plain "jaxland").
    - `progress`: True, False/None or a callable (see above).
    - `heartbeat`: seconds between "still in stage" lines while a `stage` runs (default
      ``JAXLAND_HEARTBEAT_S`` or 30; 0 for none).
    - `slow_factor`: a stage is reported as slow past `slow_factor` × its `expected` seconds
      (default ``JAXLAND_SLOW_FACTOR`` or 10).
    - `stream`: where printed lines go (default `sys.stderr`, looked up at each line).
    """

    def __init__(self, name: str, progress: bool | Callable[[str], None] | None = True, *,
                 heartbeat: float | None = None, slow_factor: float | None = None, stream=None):
        self.prefix = "jaxland" if not name else f"jaxland {name}"
        self.t0 = time.perf_counter()
        self.fn = progress if callable(progress) else None
        self.on = bool(progress)
        self.heartbeat = _env_float("JAXLAND_HEARTBEAT_S", HEARTBEAT_S) if heartbeat is None \
            else float(heartbeat)
        self.slow_factor = _env_float("JAXLAND_SLOW_FACTOR", SLOW_FACTOR) if slow_factor is None \
            else float(slow_factor)
        if not (self.heartbeat >= 0 and self.slow_factor > 0):
            raise ValueError(f"heartbeat must be >= 0 and slow_factor > 0; got {self.heartbeat!r} "
                             f"and {self.slow_factor!r}")
        self.stream = stream
        self.slow: list[str] = []  # the stages reported as slow, in order
        self._lock = threading.Lock()

    def __call__(self, msg: str) -> None:
        if self.fn is not None:
            self.fn(msg)
        elif self.on:
            self._print(msg)

    def _print(self, msg: str) -> None:
        with self._lock:
            print(f"[{self.prefix} {time.perf_counter() - self.t0:7.1f}s] {msg}",
                  file=self.stream or sys.stderr, flush=True)

    def _status(self, msg: str) -> None:
        """A heartbeat or slow-stage line: printed when progress is True, dropped otherwise."""
        if self.fn is None and self.on:
            self._print(msg)

    @contextlib.contextmanager
    def stage(self, name: str, expected: float | None = None, msg: str | None = None, *,
              event: bool = True) -> Iterator[None]:
        """Run the `with` body as stage `name`: announce it (`msg`, default `name`), print a
        heartbeat line every `heartbeat` seconds while it runs and, past `slow_factor` ×
        `expected` seconds (when `expected` is given), say once that it is slow. The thread
        stops when the body ends, normally or by an exception (Ctrl-C included).

        `event`: the announcement is one of the job's messages (a `progress` callable receives
        it); False makes it a status line like the heartbeat (printed when `progress` is True
        only), for jobs whose callable counts finished runs."""
        (self if event else self._status)(msg if msg is not None else name)
        t_start = time.perf_counter()
        done = threading.Event()
        limit = None if expected is None else self.slow_factor * float(expected)
        period = self.heartbeat

        def watch():
            warned = False
            next_beat = period if period > 0 else None
            while True:
                waits = [w for w in (next_beat, None if warned else limit) if w is not None]
                if not waits:
                    return
                elapsed = time.perf_counter() - t_start
                if done.wait(max(0.0, min(waits) - elapsed)):
                    return
                elapsed = time.perf_counter() - t_start
                if limit is not None and not warned and elapsed >= limit:
                    warned = True
                    self.slow.append(name)
                    self._status(f"stage {name} is slow: {elapsed:.0f}s, expected about "
                                 f"{expected:.3g}s ({self.slow_factor:g}× that is the warning "
                                 f"level); it is still running")
                if next_beat is not None and elapsed >= next_beat:
                    self._status(f"still in stage {name}, {elapsed:.0f}s")
                    next_beat += period

        watcher = None
        if period > 0 or limit is not None:
            watcher = threading.Thread(target=watch, name=f"jaxland-progress-{name}", daemon=True)
            watcher.start()
        try:
            yield
        finally:
            done.set()
            if watcher is not None:
                watcher.join(timeout=5.0)
