PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint e2e clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

## Start the whole product locally: AWS emulator, dev IdP, web, worker, beat, demo data.
run: $(VENV)/.installed
	$(PY) scripts/devstack.py

## Install what the tests need and run them all (set DATABASE_URL / CELERY_BROKER_URL for real services).
test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf var staticfiles .pytest_cache
