# Two commands do everything on a fresh machine:
#   make demo   create/reuse .venv, install, run `bayesmf demo` on synthetic data (no download)
#   make test   create/reuse .venv, install, lint and run the test suite
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0 is installed first so that pip does not pull a multi-GB CUDA
# build; override with e.g. `make test TORCH_SPEC=torch` on a machine with a GPU.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.bayesmf-installed

.PHONY: demo test lint bench bench-quick clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bayesmf demo

lint: $(STAMP)
	$(BIN)/ruff check bayesmf tests benchmarks examples

test: $(STAMP) lint
	$(BIN)/python -m pytest

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/classical.py --quick

bench: $(STAMP)
	$(BIN)/python benchmarks/classical.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
