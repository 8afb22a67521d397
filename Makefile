# Two commands on a fresh machine: `make run` and `make test` (both set up .venv if needed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test test-slow test-all run lint bench results map clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The quick tier (pytest's default: -m 'not slow'); the slow tier is the Dask cluster and the
# 3-process parity tests (CI runs both, .ci/run).
test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

test-all: setup
	$(PY) -m pytest -m ''

# mypy reads the package through a link named dmmlkd (it cannot follow the editable-install
# hook that maps the repository root to `dmmlkd`).
lint: setup
	$(VENV)/bin/ruff check .
	mkdir -p build/typecheck && ln -sfn ../.. build/typecheck/dmmlkd
	$(PY) -m mypy

run: setup
	$(VENV)/bin/dmmlkd demo

bench: setup
	$(VENV)/bin/dmmlkd bench allocator

# docs/results.md from scratch (every table produced by the code; ~20 min on 2 idle cores).
results: setup
	$(PY) -m dmmlkd.benchmarks.results --out docs/results.md

# docs/where-allocation-pays.md's map: the allocator for fleets against every control over
# fleet x battery x deadline x view pair, 5 seeds (~30 min on 2 busy cores), then the pairs
# where fusion has room; `--grid full` is the documented full grid (16 devices, 30 rounds).
map: setup
	$(PY) -m dmmlkd.benchmarks.map --out runs/map
	$(PY) -m dmmlkd.benchmarks.map --grid room --out runs/map-room

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
