# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing and installs what
# it needs; a stamp file per extra set means a second run skips the install unless pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned exactly: an unpinned torch would pull several GB of CUDA wheels.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: demo test lint typecheck imports unit venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -U pip setuptools wheel

$(VENV)/.stamp-demo: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e ".[testbed]"
	touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) "torch==2.13.0"
	$(PIP_INSTALL) -e ".[dev]"
	touch $@ $(VENV)/.stamp-demo

venv: $(VENV)/.stamp-dev

demo: $(VENV)/.stamp-demo
	$(BIN)/em-agent demo

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

imports: $(VENV)/.stamp-dev
	$(BIN)/lint-imports

unit: $(VENV)/.stamp-dev
	$(BIN)/pytest

test: lint typecheck imports unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
