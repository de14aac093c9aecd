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

# Kept under 2 minutes after the install: five small models, at most 3 s of timed runs
# each, and at most 10 s of waiting for a quiet machine per model.
demo: $(VENV)/.base
	$(BIN)/hwnas profile demo --seconds 3 --interference-wait 10 --db hwnas-demo.db --plot flops_vs_latency.png

test: $(VENV)/.full
	$(BIN)/pytest -q

test-slow: $(VENV)/.full
	$(BIN)/pytest -q -m "slow and not readme"

lint: $(VENV)/.full
	$(BIN)/ruff check hwnas tests benchmarks
	$(BIN)/ruff format --check hwnas tests benchmarks

# pytest-benchmark: our own code's speed (bench_speed.py) and the zoo's latency through the
# hwnas_latency fixture (bench_latency.py); saved in .benchmarks/ as baselines for
# --benchmark-compare. The scripts printing tables against targets are run by hand (README).
bench: $(VENV)/.full
	$(BIN)/pytest benchmarks/bench_speed.py benchmarks/bench_latency.py --benchmark-only \
		--benchmark-autosave --benchmark-save-data

clean:
	rm -rf $(VENV) *.egg-info .benchmarks hwnas-demo.db* flops_vs_latency.png
