PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint validate e2e bench bench-admin clean lock

# Installs exactly the lock file: every package (the transitive ones too, pip itself among them)
# at its pinned version, and only a file whose hash the lock lists (docs/development.md).
$(VENV)/.installed: requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@

## Compile requirements.lock and requirements-dev.lock (pins + hashes of every dependency) from
## requirements.txt and requirements-dev.txt, after editing either. Keeps the other pins as they
## are; UPGRADE=1 moves every package to its newest release, UPGRADE_PACKAGE=name just that one.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade) \
	$(if $(UPGRADE_PACKAGE),--upgrade-package $(UPGRADE_PACKAGE))
lock: $(VENV)/.installed
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt
	$(PIP_COMPILE) --output-file requirements-dev.lock requirements-dev.txt
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $(VENV)/.installed

## Start the whole product locally: AWS emulator, dev IdP, web, worker, beat, demo data.
run: $(VENV)/.installed
	$(PY) scripts/devstack.py

## Install what the tests need and run them all (set DATABASE_URL / CELERY_BROKER_URL for real services).
test: $(VENV)/.installed
	$(PY) -m pytest

## The suite on `make run`'s defaults: SQLite and the SQLite broker (DATABASE_URL and CELERY_BROKER_URL
## ignored), in a var directory of their own (SQLITE_VAR_DIR). Tests that need PostgreSQL itself
## (@pytest.mark.postgres: query plans, its indexes and limits) are left out. CI runs it after `make test`.
SQLITE_VAR_DIR ?= $(CURDIR)/var/test-sqlite
.PHONY: test-sqlite
test-sqlite: $(VENV)/.installed
	rm -f $(SQLITE_VAR_DIR)/test-portal.sqlite3 $(SQLITE_VAR_DIR)/celery-broker.sqlite3
	env -u DATABASE_URL -u CELERY_BROKER_URL PORTAL_VAR_DIR=$(SQLITE_VAR_DIR) $(PY) -m pytest -m "not postgres"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Check the deployment files offline: docker-compose.yml (Compose spec schema and docker-compose),
## deploy/cloudformation.yaml (cfn-lint) and the Dockerfile (hadolint). No Docker engine needed.
validate: $(VENV)/.installed
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	@if command -v docker-compose >/dev/null 2>&1; then echo "docker-compose config -q"; docker-compose config -q; \
	elif docker compose version >/dev/null 2>&1; then echo "docker compose config -q"; docker compose config -q; \
	else echo "validate: needs docker-compose (apt-get install --no-install-recommends docker-compose) or Docker Compose v2" >&2; exit 1; fi
	$(VENV)/bin/cfn-lint deploy/cloudformation.yaml
	$(VENV)/bin/hadolint Dockerfile

## Measure every hot path beside a bare baseline (bench/run.py, docs/benchmarks.md): starts the
## moto server, web and Celery workers on PostgreSQL (DATABASE_URL's server, its own database) and
## Redis (CELERY_BROKER_URL); prints a table, writes bench/results.json. QUICK=1: a smoke run (< 2 min).
bench: $(VENV)/.installed
	QUICK=$(QUICK) $(PY) bench/run.py

## The admin's changelists alone at 1k/10k/100k requests and 1M audit events (bench/admin_changelist.py;
## `make bench` runs it too, without the audit events).
bench-admin: $(VENV)/.installed
	mkdir -p var/bench
	$(PY) bench/admin_changelist.py --output var/bench/admin_changelist.json

## The inbox and the request page for an approver with 10,000 waiting requests among 100,000
## (bench/inbox.py); prints a table, writes var/bench/inbox.json.
.PHONY: bench-inbox
bench-inbox: $(VENV)/.installed
	$(PY) bench/inbox.py

clean:
	rm -rf var staticfiles .pytest_cache
