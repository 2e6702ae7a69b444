import contextlib
import os
import re

# Tests run on the CPU, small problems compiled once each: compile time dominates the suite, so XLA's
# backend optimisation is turned down (measured: tests/test_any_model.py 53 s -> 37 s on one core). The
# programs compute the same values (the float64 exactness tests run under these flags); they only run
# slower, which the tiny test sizes do not feel. Benchmarks never set these flags.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), _FAST_COMPILE) if f).strip()

import hypothesis
import jaxtyping
import pytest

hypothesis.settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@contextlib.contextmanager
def raises_naming(name: str, *exc: type[BaseException], match: str | None = None):
    """Expect bad input to be refused with an exception that names the argument `name`.

    Either the library's own check fires (an exception of a type in `exc`, whose message matches
    `match`, or names `name` when `match` is None), or, when the tests run under jaxtyping's pytest
    hook (pyproject's addopts), the checked annotation of the argument fires first: a
    `jaxtyping.TypeCheckError` whose message says which parameter failed ("parameter 'W2'"). Any
    other exception, or a TypeCheckError about another parameter, fails the test.
    """
    exc = tuple(e for x in exc for e in (x if isinstance(x, tuple) else (x,)))
    if not exc:
        raise ValueError("raises_naming needs at least one expected exception type")
    with pytest.raises((jaxtyping.TypeCheckError, *exc)) as info:
        yield info
    err = info.value
    msg = str(err)
    if isinstance(err, jaxtyping.TypeCheckError):
        assert _names_parameter(err, name), (
            f"the annotation check fired, but not on {name!r}:\n{msg[:600]}"
        )
        return
    assert isinstance(err, exc), f"expected one of {exc}; got {type(err).__name__}: {msg}"
    if match is not None:
        assert re.search(match, msg), f"{match!r} not found in the message {msg!r}"
    else:
        assert name in msg, f"the message does not name {name!r}: {msg!r}"


def _names_parameter(err: BaseException, name: str) -> bool:
    """Whether a TypeCheckError, or the beartype violation it was raised from, names parameter
    `name`. (jaxtyping names it as "parameter 'x'"; when it cannot single the parameter out, e.g.
    because beartype checks one random element of a tuple and the retry drew a good one, the
    chained beartype violation still says "parameter x=".)"""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err)
        if f"parameter '{name}'" in text or f"parameter {name}=" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def annotations_unchecked():
    """Turn jaxtyping's runtime checks off inside the block, so that a test reaches the library's
    own check (and its message) behind a checked annotation; a no-op without the hook."""
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)


def assert_refuses(call, name: str, *exc: type[BaseException], match: str | None = None):
    """`call()` (no arguments) refuses its bad input, naming the argument `name`, both as the tests
    see it and as users see it.

    First with the annotations checked as in the test run (`raises_naming`: the checked annotation of
    `name` or the library's own check, whichever fires first), then with the annotations unchecked,
    as users run the library: the library's own check must then raise an exception of a type in `exc`
    whose message matches `match` (or names `name` when `match` is None). So a checked annotation
    that fires first never hides the library's own check and its message from the tests.
    """
    with raises_naming(name, *exc, match=match):
        call()
    exc = tuple(e for x in exc for e in (x if isinstance(x, tuple) else (x,)))
    with annotations_unchecked(), pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    if match is not None:
        assert re.search(match, msg), f"{match!r} not found in the message {msg!r}"
    else:
        assert name in msg, f"the message does not name {name!r}: {msg!r}"


@pytest.fixture(autouse=True)
def _structured_kernels_at_test_sizes(request, monkeypatch):
    """The tests' networks are tiny; `evaluate_path` sends an objective below N·m = 2^16 to the plain
    kernel (`jaxland.engine._evaluate.TINY_ENTRIES`, a speed rule). So that the structured kernels'
    tests keep exercising them, the bound is 0 in every test but those marked ``tiny_rule``."""
    if request.node.get_closest_marker("tiny_rule") is None:
        from jaxland.engine import _evaluate

        monkeypatch.setattr(_evaluate, "TINY_ENTRIES", 0)
