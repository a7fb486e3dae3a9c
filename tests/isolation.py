"""The test session's own var directory and broker queue: never the ones `make run` uses.

`make run` keeps its SQLite database, its SQLite broker, beat's schedule and the metrics files
in `var/` (PORTAL_VAR_DIR). A test session that used them too would see the demo's data and,
worse, the demo's worker would take the tests' tasks. So pytest loads this module as a plugin
(pyproject.toml: `-p tests.isolation`) before pytest-django imports portal/settings.py, and it
points the session, and every process a test starts (they inherit the environment), at:

- a fresh var directory of its own (removed at the end): the SQLite test database, the SQLite
  broker, beat's schedule, mail files and metrics live there when DATABASE_URL and
  CELERY_BROKER_URL are unset, whatever PORTAL_VAR_DIR the shell exports for `make run`;
- a Celery queue of its own, so a broker given in CELERY_BROKER_URL (Redis, RabbitMQ) that a
  running stack shares carries the session's tasks to the session's workers only;
- none of `make run`'s port settings (PORTAL_PORT, ...): the tests' addresses are their own.

A DATABASE_URL's server holds the tests in their own database anyway (Django's `test_` name).
"""

import os
import shutil
import tempfile
import uuid
from pathlib import Path

SESSION_ID = uuid.uuid4().hex[:10]
VAR_DIR = Path(tempfile.mkdtemp(prefix=f"portal-tests-{SESSION_ID}-"))
CELERY_QUEUE = f"tests-{SESSION_ID}"

# `make run`'s ports (portal/devports.py) in the shell do not move the tests' own addresses.
PORTS = ("PORTAL_PORT", "DEVIDP_PORT", "MOTO_PORT", "WORKER_METRICS_PORT")
# What the shell had, for the tests that compare with what `make run` would use.
MAKE_RUN_ENVIRONMENT = {name: os.environ.get(name) for name in ("PORTAL_VAR_DIR", "CELERY_TASK_DEFAULT_QUEUE", *PORTS)}

for _name in PORTS:
    os.environ.pop(_name, None)
os.environ["PORTAL_VAR_DIR"] = str(VAR_DIR)
os.environ["CELERY_TASK_DEFAULT_QUEUE"] = CELERY_QUEUE


def pytest_unconfigure(config):
    # Tasks the session published and no worker took stay in a configured broker otherwise.
    if os.environ.get("CELERY_BROKER_URL"):
        try:
            from portal.celery import app

            app.control.purge()
        except Exception:  # noqa: S110 - a broker that is gone has nothing left to purge
            pass
    shutil.rmtree(VAR_DIR, ignore_errors=True)
