# The two commands of the README. Each creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/reproduce

.PHONY: demo demo-quick test test-min chromium bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plot,data]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/jaxland reproduce --out $(OUT)

demo-quick: $(VENV)/.installed
	$(VENV)/bin/jaxland reproduce --quick --out out/quick

test: $(VENV)/.installed test-min chromium
	$(PY) -m pytest -q -n 2 --dist loadfile

# The lowest declared versions (pyproject's lower bounds of jax, jaxlib, equinox, optax, chex,
# jaxtyping, optimistix, lineax, pinned by tests/min_constraints.py) in their own venv, and a fast
# subset of the tests against them (about a minute of CPU).
VENV_MIN ?= .venv-min
PY_MIN := $(VENV_MIN)/bin/python
MIN_TESTS ?= tests/test_min_versions.py tests/test_paths.py tests/test_metrics.py \
	tests/test_critical.py tests/test_train.py tests/test_lemma10.py

$(VENV_MIN)/.installed: pyproject.toml tests/min_constraints.py
	$(PYTHON) -m venv $(VENV_MIN)
	$(PY_MIN) -m pip install --quiet --upgrade pip
	$(PY_MIN) tests/min_constraints.py > $(VENV_MIN)/constraints.txt
	$(PY_MIN) -m pip install --quiet -c $(VENV_MIN)/constraints.txt -e . pytest pytest-xdist \
		hypothesis beartype
	touch $@

test-min: $(VENV_MIN)/.installed
	JAXLAND_MIN_VERSIONS=$(VENV_MIN)/constraints.txt $(PY_MIN) -m pytest -q -n 2 --dist loadfile \
		-p no:cacheprovider $(MIN_TESTS)

chromium:  # the headless browser of tests/test_figure1.py (CI runs `make test` as root)
	command -v chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/bench_paths.py --quick
	$(PY) benchmarks/bench_hessian.py --quick
	$(PY) benchmarks/bench_connect.py --quick
	$(PY) benchmarks/bench_align.py --quick
	$(PY) benchmarks/scaling.py --quick
