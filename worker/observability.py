"""The Celery worker's logging, metrics endpoint and per-task log context (Celery signals).

Connected when portal/celery.py imports this module, so in every Celery process:

- ``setup_logging``: Celery applies Django's LOGGING instead of replacing the root handlers
  with its own (which would drop the token redaction and the JSON format);
- ``celeryd_init`` (worker main process, before the pool starts and before any metric has a
  sample): the worker's own multiprocess directory, emptied; prefork children inherit it;
- ``worker_init``: the metrics endpoint on WORKER_METRICS_PORT (0 turns it off), serving the
  samples of the main process (the queue consumer) and of every pool process, behind the
  same token / IP allow-list as the web's /metrics;
- ``task_prerun`` / ``task_postrun``: task_id and task on every line a task logs, and for
  ``deliver_callback`` the callback's approval_id and original SQS message_id.
"""

import logging
import os

from celery import signals

logger = logging.getLogger(__name__)

DELIVER_CALLBACK = "worker.tasks.deliver_callback"


@signals.setup_logging.connect
def _use_django_logging(**kwargs) -> None:
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@signals.celeryd_init.connect
def _prepare_metrics_dir(sender=None, **kwargs) -> None:
    from portal import observability

    observability.prepare_multiprocess_dir(f"worker-{sender or os.getpid()}")


@signals.worker_init.connect
def _start_metrics_server(**kwargs) -> None:
    from django.conf import settings

    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    from approvals.ops import metrics

    try:
        metrics.start_worker_metrics_server(port=port, bind=settings.WORKER_METRICS_BIND)
    except OSError as error:
        # A second worker on the same host (or a test run beside `make run`): the worker
        # itself must still start.
        logger.warning("worker metrics endpoint not started on %s:%s: %s", settings.WORKER_METRICS_BIND, port, error)
        return
    logger.info("worker metrics on http://%s:%s/metrics", settings.WORKER_METRICS_BIND, port)


@signals.worker_process_shutdown.connect
def _pool_process_exited(pid=None, **kwargs) -> None:
    from portal import observability

    observability.mark_process_dead(pid or os.getpid())


@signals.task_prerun.connect
def _bind_task_context(task_id=None, task=None, args=None, kwargs=None, **extra) -> None:
    from portal.logging import bind_log_context, clear_log_context

    name = getattr(task, "name", None)
    clear_log_context()
    bind_log_context(task_id=task_id, task=name)
    if name == DELIVER_CALLBACK:
        callback_id = (args or [None])[0] if args else (kwargs or {}).get("callback_id")
        if callback_id is not None:
            from approvals.selectors import ops as ops_selectors

            bind_log_context(callback_id=callback_id, **ops_selectors.callback_log_ids(callback_id))


@signals.task_postrun.connect
def _clear_task_context(**kwargs) -> None:
    from portal.logging import clear_log_context

    clear_log_context()
