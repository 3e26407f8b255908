# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# setuptools' build-backend notices (the editable-install banner) are not for the user.
PIP := PYTHONWARNINGS=ignore $(PY) -m pip
WORKDIR ?= runs/demo

.PHONY: demo test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-base: pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[test,parity]'
	touch $@ $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	$(PY) -m jaxcv.cli demo --workdir $(WORKDIR)

lint: $(VENV)/.installed-test
	$(PY) -m ruff check jaxcv tests experiments
	$(PY) -m ruff format --check jaxcv tests experiments

format: $(VENV)/.installed-test
	$(PY) -m ruff format jaxcv tests experiments
	$(PY) -m ruff check --fix jaxcv tests experiments

# Tests are spread over TEST_WORKERS processes (pytest-xdist, idle workers take queued tests
# from busy ones). Most of the suite's time is XLA compilation, single-threaded, so 2 workers on
# 2 cores take about half the wall time of one.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15

bench: $(VENV)/.installed-test
	$(PY) experiments/bench/classifier.py
	$(PY) experiments/bench/ops.py

clean:
	rm -rf $(VENV) runs
