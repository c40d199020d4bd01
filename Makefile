# The two commands: `make demo` (the main job on the embedded default) and `make test`.
# Both build the virtual environment in .venv first; llama-cpp-python compiles once
# (about 6 minutes on 2 cores) and pip caches the wheel after that.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export GANGLION_TEST_POSTGRES_URL ?= postgresql://ganglion:ganglion@127.0.0.1:5432/ganglion_test

.PHONY: install demo test lint typecheck services docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/ganglion demo

services:
	bash scripts/test-services.sh

test: install services
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/mypy
	$(BIN)/python scripts/gen_cli_docs.py --check
	$(BIN)/pytest
	GANGLION_TEST_STORE=postgresql $(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/mypy

docs: install
	$(BIN)/python scripts/gen_cli_docs.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
