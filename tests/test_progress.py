"""Long jobs never wait silently (issue 19): `Progress.stage` prints a heartbeat while a stage runs,
even inside one long jitted call, and names a stage that runs past a multiple of its expected time."""

import io
import re
import threading
import time

import jax
import jax.numpy as jnp
import pytest

from jaxland.experiments._progress import Progress


def _lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_heartbeat_lines_appear_and_a_slow_stage_is_named():
    buf = io.StringIO()
    log = Progress("figure1", heartbeat=0.05, slow_factor=2.0, stream=buf)
    with log.stage("fake stage", expected=0.05, msg="working on the fake stage"):
        time.sleep(0.5)
    with log.stage("quick stage", expected=10.0):
        pass
    lines = _lines(buf)
    assert all(re.match(r"^\[jaxland figure1 +\d+\.\ds\] ", line) for line in lines), lines
    assert "working on the fake stage" in lines[0]
    beats = [line for line in lines if "still in stage fake stage" in line]
    # 0.5 s of work at a 0.05 s period: about 10 beats; at least 3 even on a loaded machine
    assert len(beats) >= 3, lines
    slow = [line for line in lines if "is slow" in line]
    assert len(slow) == 1 and "stage fake stage is slow" in slow[0], lines  # said once
    assert "expected about 0.05s" in slow[0]
    assert log.slow == ["fake stage"]
    # the quick stage: announced, no heartbeat (it ended at once), not slow
    assert lines[-1].endswith("] quick stage")
    # the thread stops with the stage: nothing is printed afterwards
    n = len(_lines(buf))
    time.sleep(0.2)
    assert len(_lines(buf)) == n


def test_the_heartbeat_runs_during_one_long_jitted_call():
    """XLA releases the interpreter lock while it runs a program, so the background thread keeps
    printing while the main thread waits in a single compiled call."""

    @jax.jit
    def spin(x):
        # ~10^8 dependent flops in one while loop: one call of a few tenths of a second
        return jax.lax.fori_loop(0, 3_000_000, lambda i, v: jnp.sin(v) + 1e-3, x)

    spin(jnp.zeros(8)).block_until_ready()  # compile outside the stage
    buf = io.StringIO()
    log = Progress("", heartbeat=0.02, stream=buf)
    t = time.perf_counter()
    with log.stage("one jitted call"):
        spin(jnp.ones(8)).block_until_ready()
    took = time.perf_counter() - t
    beats = [line for line in _lines(buf) if "still in stage one jitted call" in line]
    if took < 0.1:
        pytest.skip(f"the call took {took:.3f}s: too short to see a heartbeat")
    # one beat per 0.02 s of the call; require a quarter of them (a loaded machine delays the thread)
    assert len(beats) >= max(2, int(took / 0.02 / 4)), (took, _lines(buf))


def test_status_lines_never_reach_a_progress_callable_and_silence_stays_silent():
    got = []
    log = Progress("scaling", got.append, heartbeat=0.02, slow_factor=1.0)
    with log.stage("s", expected=0.01, msg="event line"):
        time.sleep(0.15)
    with log.stage("t", msg="status line", event=False):
        time.sleep(0.05)
    assert got == ["event line"]  # the job's own message only; the heartbeat is status
    assert log.slow == ["s"]
    buf = io.StringIO()
    quiet = Progress("scaling", False, heartbeat=0.01, stream=buf)
    with quiet.stage("s", expected=0.001):
        time.sleep(0.05)
    assert buf.getvalue() == ""


def test_heartbeat_period_from_the_environment(monkeypatch):
    monkeypatch.setenv("JAXLAND_HEARTBEAT_S", "0.5")
    monkeypatch.setenv("JAXLAND_SLOW_FACTOR", "3")
    log = Progress("x")
    assert log.heartbeat == 0.5 and log.slow_factor == 3.0
    monkeypatch.setenv("JAXLAND_HEARTBEAT_S", "0")
    assert Progress("x").heartbeat == 0.0  # off
    monkeypatch.setenv("JAXLAND_HEARTBEAT_S", "soon")
    with pytest.raises(ValueError, match="JAXLAND_HEARTBEAT_S must be a number"):
        Progress("x")
    with pytest.raises(ValueError, match="slow_factor"):
        Progress("x", heartbeat=1.0, slow_factor=0.0)


def test_the_stage_ends_its_thread_on_an_exception():
    buf = io.StringIO()
    log = Progress("", heartbeat=0.01, stream=buf)
    with pytest.raises(KeyboardInterrupt):
        with log.stage("interrupted"):
            raise KeyboardInterrupt
    n = len(_lines(buf))
    time.sleep(0.1)
    assert len(_lines(buf)) == n
    assert not any(t.name.startswith("jaxland-progress-") for t in threading.enumerate())
