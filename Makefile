# `make demo` and `make test` work on a fresh clone with python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres-binary,plot]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snaptail demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# One worker per core, at most 4 (each opens its own PostgreSQL connections; every
# test has its own SQLite file or PostgreSQL schema). PYTEST_WORKERS=0 runs in one
# process (for a debugger or -x).
PYTEST_WORKERS ?= auto
pytest: $(STAMP)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --maxprocesses=4 --dist worksteal $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/snaptail bench intervals --quick

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache snaptail.db*
