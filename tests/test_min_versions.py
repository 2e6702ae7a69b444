"""The declared lower bounds are the tested versions: `make test-min` pins pyproject's lower bounds
(tests/min_constraints.py), and `make test` (what CI runs) runs it."""

import importlib.metadata
import importlib.util
import os
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("min_constraints", ROOT / "tests" / "min_constraints.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def test_constraints_pin_exactly_the_lower_bounds_of_pyproject():
    tool = _tool()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {}
    for d in deps:
        name, _, low = d.partition(">=")
        declared[name.strip().lower()] = low.strip()
    pins = {}
    for line in tool.constraints().splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.partition("==")
            pins[name] = v
    assert set(pins) == set(tool.PINNED) == {"jax", "jaxlib", "equinox", "optax", "chex",
                                              "jaxtyping", "optimistix", "lineax"}
    for name, v in pins.items():
        assert declared[name] == v, (name, declared[name], v)
    # jax and jaxlib move together (jax pins its jaxlib exactly)
    assert pins["jax"] == pins["jaxlib"]


def test_lower_bounds_refuse_a_bound_that_is_not_a_plain_minimum(tmp_path):
    tool = _tool()
    p = tmp_path / "pyproject.toml"
    p.write_text('[project]\ndependencies = ["jax>=0.10.0,<0.11", "jaxlib>=0.10.0"]\n')
    with pytest.raises(ValueError, match="plain lower bound 'jax>=X'"):
        tool.lower_bounds(p)
    p.write_text('[project]\ndependencies = ["jax>=0.10.0"]\n')
    with pytest.raises(ValueError, match="no lower bound for .*jaxlib"):
        tool.lower_bounds(p)


def test_make_test_runs_test_min_and_ci_runs_make_test():
    make = (ROOT / "Makefile").read_text()
    test_rule = next(l for l in make.splitlines() if l.startswith("test:"))
    assert "test-min" in test_rule.split(":", 1)[1].split()
    assert "tests/min_constraints.py" in make and "-c $(VENV_MIN)/constraints.txt" in make
    ci = ROOT / ".ci" / "run"
    if ci.exists():
        assert [l for l in ci.read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))] \
            == ["make test"]


def test_installed_versions_satisfy_the_bounds_and_equal_them_under_test_min():
    """In `make test-min` (JAXLAND_MIN_VERSIONS names its constraints file) every pinned package is
    installed at exactly its lower bound; anywhere else, at or above it."""
    tool = _tool()
    bounds = tool.lower_bounds()
    pinned_file = os.environ.get("JAXLAND_MIN_VERSIONS")
    for name, low in bounds.items():
        have = importlib.metadata.version(name)
        if pinned_file:
            assert have == low, f"{name} {have} installed in the test-min venv; expected {low}"
        else:
            assert _version_tuple(have) >= _version_tuple(low), (name, have, low)
    if pinned_file:
        assert Path(pinned_file).read_text() == tool.constraints()


def test_readme_states_the_tested_lowest_versions():
    """The README's "Installing as a library" names the lowest versions that test-min installs."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Installing as a library", 1)[1]
    stated = section.split("and the latest installed", 1)[0]
    for name, v in _tool().lower_bounds().items():
        assert f"{name} {v}" in stated, f"README does not state {name} {v} as tested"
