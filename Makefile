# Verbs: make demo | make test | make docs | make bench | make demo-compare | make study | make test-wheel
# Everything runs in a local virtual environment that `make` creates and fills on first use.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# The CPU build of torch 2.13.0; on a GPU machine set TORCH_SPEC to the build you want (e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

STUDY_ARGS ?=

.PHONY: install demo demo-compare study test test-fast test-wheel test-vllm docs bench bench-vllm clean

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

# The study of docs/study.md: 7 methods x 3 seeds + learning-rate selection, two runs side by side. Its runs are kept
# in docs/study/cells/ and it resumes where it stopped (a fresh run: python -m rasft_trl.demo.study --jobs 2).
study: install
	$(PY) -m rasft_trl.demo.study --jobs 2 --output-dir docs/study $(STUDY_ARGS)

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q -d $$(mktemp -d)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The built sdist and wheel as a user gets them: twine check, a fresh venv with the wheel, the CLI and one smoke step
# from outside the checkout (scripts/check_wheel.sh; a few minutes).
test-wheel: install
	PY=$(PY) PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash scripts/check_wheel.sh

test-vllm:
	bash scripts/install_vllm_cpu.sh
	RASFT_REQUIRE_VLLM=1 VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m pytest -q -p no:cacheprovider -m vllm tests/test_vllm.py $(PYTEST_ARGS)

bench-vllm:
	bash scripts/install_vllm_cpu.sh
	.venv-vllm/bin/python benchmarks/bench_generation.py --threads 1
	.venv-vllm/bin/python benchmarks/bench_generation.py --threads 1 --lora
	.venv-vllm/bin/python benchmarks/bench_async_rollouts.py --vllm

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: install
	@for script in benchmarks/bench_math_verifier.py benchmarks/bench_code_verifier.py benchmarks/bench_cpu_precision.py benchmarks/bench_memory.py benchmarks/bench_step.py benchmarks/bench_async_rollouts.py benchmarks/bench_demo_memory.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .venv-vllm site build *.egg-info
