# Two commands for a newcomer: `make run` and `make test`. Everything else is their plumbing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/cloudportal
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
# Test processes (pytest-xdist). The suite mostly waits (on guests under TCG, Celery workers,
# timeouts), not on the two cores: see docs/performance.md, "How the test suite runs in parallel".
TEST_WORKERS ?= 4

.PHONY: run test checks bench prod-smoke lint format setup system-deps services

run: setup services
	$(PY) manage.py runportal

test: setup services checks
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Part of `make test`: lint, formatting, the layer contracts (pyproject.toml), and no model
# change without its migration.
checks: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres $(PY) manage.py makemigrations --check --dry-run

# The whole stack the production way (gunicorn, workers, beat, console proxy, nginx with TLS),
# smoke-tested, then removed: deploy/smoke.py, docs/deploy.md.
prod-smoke: setup services
	REDIS_URL=$(TEST_REDIS_URL) $(PY) deploy/smoke.py

bench: setup services
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m bench

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

setup: system-deps $(VENV)/.installed node_modules/.installed

system-deps:
	@bash portal/scripts/system-deps.sh

services:
	@bash portal/scripts/services.sh

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@
