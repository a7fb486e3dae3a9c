PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint validate e2e bench bench-admin clean lock

# Installs exactly a lock file: every package (the transitive ones too, pip itself among them)
# at its pinned version, and only a file whose hash the lock lists (docs/development.md).
# Two stamps: `make run` needs only the run-time lock (a quicker first start); the tests, lint and
# the other tools install the development lock, which includes it.
$(VENV)/.installed-runtime: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements.lock
	touch $@

$(VENV)/.installed-dev: requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@ $(VENV)/.installed-runtime

## Compile requirements.lock and requirements-dev.lock (pins + hashes of every dependency) from
## requirements.txt and requirements-dev.txt, after editing either. Keeps the other pins as they
## are; UPGRADE=1 moves every package to its newest release, UPGRADE_PACKAGE=name just that one.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade) \
	$(if $(UPGRADE_PACKAGE),--upgrade-package $(UPGRADE_PACKAGE))
lock: $(VENV)/.installed-dev
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt
	$(PIP_COMPILE) --output-file requirements-dev.lock requirements-dev.txt
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $(VENV)/.installed-dev $(VENV)/.installed-runtime

## Start the whole product locally: AWS emulator, dev IdP, web, worker, beat, demo data.
## Installs only the run-time lock. Ports: PORTAL_PORT, DEVIDP_PORT, MOTO_PORT, WORKER_METRICS_PORT
## (docs/running-locally.md).
run: $(VENV)/.installed-runtime
	$(PY) scripts/devstack.py

## Install what the tests need and run them all (set DATABASE_URL / CELERY_BROKER_URL for real services).
## The tests never use `make run`'s var/, database or broker queue (tests/isolation.py).
test: $(VENV)/.installed-dev
	$(PY) -m pytest

## The suite on `make run`'s defaults: SQLite and the SQLite broker (DATABASE_URL and CELERY_BROKER_URL
## ignored), in the session's own var directory (tests/isolation.py). Tests that need PostgreSQL itself
## (@pytest.mark.postgres: query plans, its indexes and limits) are left out. CI runs it after `make test`.
.PHONY: test-sqlite
test-sqlite: $(VENV)/.installed-dev
	env -u DATABASE_URL -u CELERY_BROKER_URL $(PY) -m pytest -m "not postgres"

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

## Check the deployment files offline: docker-compose.yml (Compose spec schema and docker-compose),
## deploy/cloudformation.yaml and deploy/member-account.yaml (cfn-lint) and the Dockerfile (hadolint). No Docker engine needed.
validate: $(VENV)/.installed-dev
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	@if command -v docker-compose >/dev/null 2>&1; then echo "docker-compose config -q"; docker-compose config -q; \
	elif docker compose version >/dev/null 2>&1; then echo "docker compose config -q"; docker compose config -q; \
	else echo "validate: needs docker-compose (apt-get install --no-install-recommends docker-compose) or Docker Compose v2" >&2; exit 1; fi
	$(VENV)/bin/cfn-lint deploy/cloudformation.yaml deploy/member-account.yaml
	$(VENV)/bin/hadolint Dockerfile

## Measure every hot path beside a bare baseline (bench/run.py, docs/benchmarks.md): starts the
## moto server, web and Celery workers on PostgreSQL (DATABASE_URL's server, its own database) and
## Redis (CELERY_BROKER_URL); prints a table, writes bench/results.json. QUICK=1: a smoke run (< 3 min).
bench: $(VENV)/.installed-dev
	QUICK=$(QUICK) $(PY) bench/run.py

## The admin's changelists alone at 1k/10k/100k requests and 1M audit events (bench/admin_changelist.py;
## `make bench` runs it too, without the audit events).
bench-admin: $(VENV)/.installed-dev
	mkdir -p var/bench
	$(PY) bench/admin_changelist.py --output var/bench/admin_changelist.json

## The inbox and the request page at 1k, 10k and 100k requests, the approver's own rows the same
## at every size (bench/inbox.py; --own-waiting 10000 for a very busy approver); writes var/bench/inbox.json.
.PHONY: bench-inbox
bench-inbox: $(VENV)/.installed-dev
	$(PY) bench/inbox.py

clean:
	rm -rf var staticfiles .pytest_cache
