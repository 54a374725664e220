# One entry point for every check. `make demo` and `make test` install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format types check bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup  ## the main job: methods, an attribution grid, then the paper's Decoy MNIST tables
	$(BIN)/rightfocus list methods
	$(BIN)/rightfocus demo --out demo_out
	$(BIN)/rightfocus reproduce decoy-mnist --quick --out demo_out/reproduce-decoy-mnist

test: setup  ## the whole test suite (slow end-to-end checks included)
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

types: setup
	$(BIN)/mypy

check: lint types test

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/bayes.py
	$(BIN)/python benchmarks/metrics.py
	$(BIN)/python benchmarks/guidance.py
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/cli_errors.py
	$(BIN)/python benchmarks/attribution.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/multitarget.py
	$(BIN)/python benchmarks/quantus_metrics.py
	$(BIN)/python benchmarks/studio.py
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
