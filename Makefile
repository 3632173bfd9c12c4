# vmportal — the front door. `make run` and `make test` set up everything they need (Debian 12, root).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
BIND ?= 127.0.0.1
export VMPORTAL_DEBUG ?= 1

.PHONY: run test lab lab-down lab-purge lint bench chaos bootstrap bootstrap-test migrate

bootstrap:
	@scripts/bootstrap run

bootstrap-test:
	@scripts/bootstrap test

migrate: bootstrap
	@$(PY) manage.py migrate --noinput -v 0
	@$(PY) manage.py collectstatic --noinput -v 0

## make run: install, migrate, bring up the lab, register it, create demo users, serve the portal
run: migrate lab
	@$(PY) manage.py register_lab
	@$(PY) manage.py create_demo_users
	@scripts/serve $(BIND) $(PORT)

## make test: everything the tests need, then every test and check
test: export VMPORTAL_DEBUG := 0
test: export VMPORTAL_TESTING := 1
test: bootstrap-test lab
	@$(PY) manage.py collectstatic --noinput -v 0
	@$(PY) manage.py check
	@$(PY) manage.py makemigrations --check --dry-run
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy .
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

lab:
	@lab/labctl up

lab-down:
	@lab/labctl down

lab-purge:
	@lab/labctl purge

lint: bootstrap-test
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@VMPORTAL_TESTING=1 $(VENV)/bin/mypy .

bench: export VMPORTAL_TESTING := 1
bench: bootstrap-test lab
	@$(PY) -m bench $(BENCH)

## make chaos: the fault campaign at full size (CHAOS_MOVES moves of a busy guest, a random fault each)
CHAOS_MOVES ?= 30
chaos: export VMPORTAL_DEBUG := 0
chaos: export VMPORTAL_TESTING := 1
chaos: bootstrap-test lab
	@VMPORTAL_CHAOS_MOVES=$(CHAOS_MOVES) $(VENV)/bin/pytest tests/chaos -q -s -p no:cacheprovider $(PYTEST_ARGS)
