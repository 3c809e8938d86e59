# `make dev` runs the relay locally on Azurite; `make test` runs every test; `make test-fast` runs
# the unit and in-process tiers; `make lint` runs the checkers (ruff's lint and format check, mypy
# strict on the app, the import layers). All set up first. The test tiers: docs/testing.md.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# pytest-xdist workers; each starts its own Azurite on its own free ports. Most tests wait on I/O
# (Azurite, receivers, the dev host), so more workers than cores pays off on a 2-core machine
# (`make test` took 8 min here with 4, 9½ with 3).
WORKERS ?= 4
# Bytecode is cached (in __pycache__/, ignored by git and .funcignore) even where the environment
# says not to: without it every pytest process, each xdist worker and each dev host recompiles, and
# pytest rewrites the asserts of its plugins' packages (hypothesis, schemathesis) again, about 5 s
# of CPU per process.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup dev lint test test-fast bench connector clean

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

# Every test: the `serial` ones (a time bound each) one at a time at normal priority, beside all the
# others on WORKERS workers at nice 19, so the serial ones get the CPU whenever they want it; the
# serial part's output comes after the other's. Both parts run to the end; exit 5 (no test
# selected, say for ARGS=tests/test_x.py) is not a failure. ARGS go to both parts. tests/tiers.py.
define tiered
	$(PY) -m tests.tiers "$(1)" $(WORKERS) $(ARGS)
endef

test: setup
	$(call tiered,unit or inprocess or devhost)

# The unit and in-process tiers without the slow tests: under a minute, no dev host, no browser.
test-fast: setup
	$(call tiered,(unit or inprocess) and not slow)

bench: setup
	$(PY) -m relay_dev.bench $(ARGS)

connector: setup
	$(PY) -m relay connector --host $(HOST) --out connector

clean:
	rm -rf $(VENV) node_modules .azurite .pytest_cache .mypy_cache .ruff_cache
