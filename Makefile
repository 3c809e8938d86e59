# `make dev` runs the relay locally on Azurite; `make test` runs every test; `make lint` runs the
# checkers (ruff's lint and format check, mypy strict on the app, the import layers). All set up first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup dev lint test bench connector clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

local.settings.json:
	cp local.settings.sample.json local.settings.json

# The dev host starts Azurite itself (data in .azurite/, ports AZURITE_PORT..+2) and stops it on
# exit; a port in use, or an Azurite that does not start, is one line and a non-zero exit.
AZURITE_PORT ?= 10000
dev: setup local.settings.json
	$(PY) -m relay dev --azurite --azurite-port $(AZURITE_PORT) $(ARGS)

# Configured in pyproject.toml; any finding fails. Needs only the venv, not Azurite.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: setup
	$(PY) -m pytest $(ARGS)

bench: setup
	$(PY) -m relay_dev.bench $(ARGS)

connector: setup
	$(PY) -m relay connector --host $(HOST) --out connector

clean:
	rm -rf $(VENV) node_modules .azurite .pytest_cache .mypy_cache .ruff_cache
