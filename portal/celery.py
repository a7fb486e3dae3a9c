"""The Celery application: configured from Django settings (CELERY_*), tasks from approvals/tasks/."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["approvals"])  # approvals.tasks: every task module

# The worker's signal handlers, in this order: health-checked database connections around every
# task (worker/connections.py) before the logging, metrics and log context (whose task_prerun
# handler queries the database).
from worker import connections, observability  # noqa: E402, F401


def _install_queue_consumer() -> None:
    # Imported late: the step needs Django configured, which happens when the worker boots.
    from worker.consumer import QueueConsumerStep

    app.steps["worker"].add(QueueConsumerStep)


_install_queue_consumer()


@signals.worker_init.connect
@signals.beat_init.connect
def _refuse_unsafe_production(**kwargs) -> None:
    # Celery runs no system checks: the worker and beat refuse a development key in production too.
    from approvals.checks import refuse_unsafe_production

    refuse_unsafe_production()
