# hwnas: `make demo` profiles the model zoo on this CPU; `make test` runs the test suite.
# Both create .venv on first use and install everything they need into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that lies on this machine's disk; an
# unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.full: pyproject.toml $(VENV)/.base
	$(BIN)/pip install -q $(TORCH) -e '.[dev,tflite,android,ray]'
	touch $@

demo: $(VENV)/.base
	$(BIN)/hwnas profile demo --db hwnas-demo.db --plot flops_vs_latency.png

test: $(VENV)/.full
	$(BIN)/pytest -q

test-slow: $(VENV)/.full
	$(BIN)/pytest -q -m slow

lint: $(VENV)/.full
	$(BIN)/ruff check hwnas tests benchmarks
	$(BIN)/ruff format --check hwnas tests benchmarks

bench: $(VENV)/.full
	$(BIN)/python benchmarks/harness_overhead.py
	$(BIN)/python benchmarks/repeatability.py

clean:
	rm -rf $(VENV) *.egg-info .benchmarks hwnas-demo.db* flops_vs_latency.png
