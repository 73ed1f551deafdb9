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

.PHONY: demo test lint bench bench-quick clean install docs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# The documentation site (mkdocs.yml, docs/): figures from small runs, then a strict build into
# site/ (every warning fails). The docs extra is installed into the venv the first time.
DOCS_STAMP := $(VENV)/.bayesmf-docs-installed

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	MPLBACKEND=Agg $(BIN)/python docs/gen_figures.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

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
