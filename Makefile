# The project's two commands: `make demo` and `make test`. Both work from a fresh clone:
# they create .venv and install the project when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/asahi-features demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs notebooks/build_notebooks.py

typecheck: $(STAMP)
	$(BIN)/mypy src tests benchmarks examples

unit: $(STAMP)
	$(BIN)/pytest --nbmake tests notebooks --cov --cov-report=term-missing:skip-covered --cov-fail-under=90

test: lint typecheck unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
