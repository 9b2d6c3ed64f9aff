# Verbs: make demo | make test | make docs | make bench | make demo-compare
# Everything runs in a local virtual environment that `make` creates and fills on first use.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# The CPU build of torch 2.13.0; on a GPU machine set TORCH_SPEC to the build you want (e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo demo-compare test test-fast docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(PY) -m rasft_trl.demo

demo-compare: install
	$(PY) -m rasft_trl.demo --compare

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q -d $$(mktemp -d)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: install
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) site build *.egg-info
