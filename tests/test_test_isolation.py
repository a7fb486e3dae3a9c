"""`make test` never touches the `make run` stack: its own var directory, database and broker."""

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests import isolation

REPO_DIR = Path(__file__).resolve().parent.parent

SHOW_SETTINGS = """
import json
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "var_dir": str(settings.VAR_DIR),
    "database": [db["ENGINE"], str(db["NAME"]), db.get("HOST") or "", str(db.get("PORT") or "")],
    "broker": settings.CELERY_BROKER_URL,
    "queue": settings.CELERY_TASK_DEFAULT_QUEUE,
}))
"""


def make_run_settings() -> dict:
    """The settings `make run` would start its processes with, from this shell's environment."""
    env = {name: value for name, value in os.environ.items() if name not in isolation.MAKE_RUN_ENVIRONMENT}
    env.update({name: value for name, value in isolation.MAKE_RUN_ENVIRONMENT.items() if value is not None})
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SHOW_SETTINGS],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_test_session_has_a_var_directory_of_its_own_outside_make_runs():
    make_run = Path(make_run_settings()["var_dir"])

    assert Path(settings.VAR_DIR) != make_run
    assert make_run not in Path(settings.VAR_DIR).parents
    assert Path(settings.VAR_DIR) != REPO_DIR / "var"
    assert REPO_DIR / "var" not in Path(settings.VAR_DIR).parents


def test_the_test_database_is_never_make_runs_database(db):
    make_run = make_run_settings()["database"]
    engine, name, host, port = make_run

    ours = connection.settings_dict
    assert [ours["ENGINE"], str(ours["NAME"]), ours.get("HOST") or "", str(ours.get("PORT") or "")] != make_run
    if engine == ours["ENGINE"] == "django.db.backends.sqlite3":
        assert Path(ours["NAME"]).parent == Path(settings.VAR_DIR)
        assert Path(name).parent != Path(settings.VAR_DIR)


def test_a_task_the_tests_publish_cannot_reach_make_runs_worker():
    # A worker takes tasks from its broker's default queue: the tests' tasks are in another
    # broker (a file in their own var directory) or, on a shared broker, in another queue.
    make_run = make_run_settings()

    assert (make_run["broker"], make_run["queue"]) != (settings.CELERY_BROKER_URL, settings.CELERY_TASK_DEFAULT_QUEUE)
    assert make_run["queue"] != settings.CELERY_TASK_DEFAULT_QUEUE
    if settings.CELERY_BROKER_URL.startswith("sqla+sqlite"):
        assert make_run["broker"] != settings.CELERY_BROKER_URL
        assert str(settings.VAR_DIR) in settings.CELERY_BROKER_URL


def test_the_processes_a_test_starts_inherit_the_sessions_var_directory_and_queue():
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SHOW_SETTINGS],
        cwd=REPO_DIR,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert child["var_dir"] == str(settings.VAR_DIR)
    assert child["queue"] == settings.CELERY_TASK_DEFAULT_QUEUE
    assert child["broker"] == settings.CELERY_BROKER_URL
