# Two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: demo test lint typecheck pytest images-validate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## demo: the whole loop on embedded defaults (webhook + bus + agent + local fleet)
demo: $(STAMP) $(NPM_STAMP)
	$(BIN)/garo demo

## test: lint, type checks, image checks and the test suite
test: $(STAMP) $(NPM_STAMP) lint typecheck images-validate pytest

lint: $(STAMP)
	$(BIN)/ruff check scaler infra tests bench
	$(BIN)/ruff format --check scaler infra tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(NPM_STAMP)
	$(BIN)/pytest -q

images-validate:
	@if [ -x images/validate.sh ]; then images/validate.sh; else echo "images: nothing to validate yet"; fi

bench: $(STAMP) $(NPM_STAMP)
	$(BIN)/python bench/webhook.py
	$(BIN)/python bench/burst.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
