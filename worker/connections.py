"""Database connections in worker processes: Django's request lifecycle, around every task.

A web request starts and ends with `django.db.close_old_connections()` (Django's
request_started / request_finished signals): it drops a connection past CONN_MAX_AGE or one
that saw an error and no longer answers, and re-arms CONN_HEALTH_CHECKS, so the first query
after it pings the connection and reconnects if the server dropped it. Celery tasks get none of
that; Celery's Django fixup instead closes every connection around each task unless
CELERY_DB_REUSE_MAX is set (portal/settings.py sets it, so connections live across tasks).
These two handlers give tasks the web request's lifecycle, so a persistent connection that
PostgreSQL terminated (a restart, a failover, `pg_terminate_backend`) costs one ping and a
reconnect, not a failed task. The queue consumer thread does the same before each poll
(worker/consumer.py). The AWS client is made at the start too, not in the first callback.

Connected when portal/celery.py imports this module, before worker/observability.py's task
handlers (which query the database for the log context): the connection is checked first.
"""

from celery import signals


def _close_old_connections(task) -> None:
    # A task run eagerly (apply(), tests) runs inside its caller's code and maybe its
    # transaction: closing "obsolete" connections there would close the caller's (as the fixup,
    # which skips eager tasks too, knows).
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@signals.task_prerun.connect
def _check_connections_before_task(task=None, **kwargs) -> None:
    _close_old_connections(task)


@signals.task_postrun.connect
def _check_connections_after_task(task=None, **kwargs) -> None:
    _close_old_connections(task)


@signals.worker_process_init.connect
@signals.worker_ready.connect
def _warm_aws_client(**kwargs) -> None:
    """A pool process (prefork) or the worker itself (solo) makes its Step Functions client at
    start, not in its first callback (the service model takes tens of milliseconds to load)."""
    from approvals.integrations import aws

    aws.warm_clients()
