# The two commands of the README. Each creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/reproduce

.PHONY: demo demo-quick test bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plot,data]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/jaxland reproduce --out $(OUT)

demo-quick: $(VENV)/.installed
	$(VENV)/bin/jaxland reproduce --quick --out out/quick

test: $(VENV)/.installed chromium
	$(PY) -m pytest -q -n 2 --dist loadfile

chromium:  # the headless browser of tests/test_figure1.py (CI runs `make test` as root)
	command -v chromium || (apt-get update && apt-get install -y chromium)

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/bench_paths.py --quick
	$(PY) benchmarks/bench_hessian.py --quick
	$(PY) benchmarks/bench_connect.py --quick
	$(PY) benchmarks/bench_align.py --quick
	$(PY) benchmarks/scaling.py --quick
