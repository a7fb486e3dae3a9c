"""Process start-up for metrics: prometheus-client's multiprocess directory, per process family.

gunicorn's workers and Celery's prefork children are separate processes; prometheus-client's
multiprocess mode has each write its samples to files in PROMETHEUS_MULTIPROC_DIR, and a
scrape adds them up. The web and each worker get their own subdirectory of the configured base
(``<base>/web``, ``<base>/worker-<node name>``): a scrape of the web then never counts a
worker's samples (and the other way round), even when they share a host and a var/ folder.

The directory is chosen and emptied by the process family's first process, before any metric
records a sample: gunicorn's master (gunicorn.conf.py, ``on_starting``, before the app loads)
and the Celery worker's main process (worker/observability.py, ``celeryd_init``: Django and
the metrics are loaded by then, but no metric has a sample, see approvals/ops/metrics.py). Their
children inherit it. Processes started any other way (manage.py, tests) keep
prometheus-client's ordinary in-process registry.

No Django here: gunicorn's master runs this before the Django app is loaded.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
# The base directory as configured, kept aside: ENV_VAR itself becomes the family's subdirectory.
BASE_ENV_VAR = "PORTAL_METRICS_BASE_DIR"


def metrics_base_dir() -> Path:
    """The configured base (PROMETHEUS_MULTIPROC_DIR, default var/prometheus); same as settings."""
    configured = os.environ.get(BASE_ENV_VAR) or os.environ.get(ENV_VAR)
    if configured:
        return Path(configured)
    var_dir = Path(os.environ.get("PORTAL_VAR_DIR") or BASE_DIR / "var")
    return var_dir / "prometheus"


def prepare_multiprocess_dir(family: str) -> Path:
    """Point this process (and its children) at ``<base>/<family>``, emptied, and return it.

    Emptying is right at the family's start: counters restart with the process, as Prometheus
    expects of a restarted target (rate() handles the reset).
    """
    base = metrics_base_dir()
    os.environ[BASE_ENV_VAR] = str(base)
    directory = base / re.sub(r"[^A-Za-z0-9_.@-]", "_", family)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_VAR] = str(directory)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Celery's worker sets up Django (which imports the metrics) before its first signal
        # that knows it is a worker: switch the value class now. The metrics all have labels,
        # so none has a sample yet; each creates its file here on first use.
        values.ValueClass = values.MultiProcessValue()
    return directory


def multiprocess_dir() -> Path | None:
    """This process's multiprocess directory, or None when it runs an in-process registry."""
    value = os.environ.get(ENV_VAR)
    return Path(value) if value and os.environ.get(BASE_ENV_VAR) else None


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live-gauge files (its counters stay: totals must not drop)."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
