"""Callbacks before mail: a decision's callback waits behind no notification task.

CELERY_TASK_ROUTES gives the notification tasks (worker.notify_tasks.*) priority 6; everything
else keeps 0. On Redis (production's broker) a worker takes priority 0 first, so a burst of
mail queued before a decision does not delay the callback that resumes its execution. On the
SQLite broker of `make run` priority is ignored, and nothing is lost.

Real parts: the Redis server (127.0.0.1:6379, a database and queue of this test's own) and
the SQLite transport in a temporary file; messages are published as the portal publishes them
(`send_task` by name, with the portal's routes) and read back with kombu.
"""

import uuid

import redis
from celery import Celery
from django.conf import settings

REDIS_URL = "redis://127.0.0.1:6379/13"
MAIL = "worker.notify_tasks.send_notifications"
CALLBACK = "worker.tasks.deliver_callback"


def portal_app(broker_url: str, queue: str) -> Celery:
    """A Celery app with the portal's routing settings, on `broker_url`, sending to `queue`."""
    app = Celery("priority-check", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        task_default_queue=queue,
        task_routes=settings.CELERY_TASK_ROUTES,
        task_serializer="json",
    )
    return app


def published_then_taken(app: Celery, queue: str) -> list[str]:
    """Three mail batches, then one callback; the order a worker receives them in."""
    for batch in range(3):
        app.send_task(MAIL, kwargs={"notification_ids": [batch]})
    app.send_task(CALLBACK, kwargs={"callback_id": 1})
    taken = []
    with app.connection_for_read() as connection:
        waiting = connection.SimpleQueue(queue)
        for _ in range(4):
            message = waiting.get(timeout=5)
            taken.append(message.headers["task"])
            message.ack()
        waiting.close()
    return taken


def test_on_redis_a_callback_queued_after_a_burst_of_mail_is_taken_first():
    queue = f"priority-{uuid.uuid4().hex[:8]}"
    app = portal_app(REDIS_URL, queue)
    try:
        assert published_then_taken(app, queue) == [CALLBACK, MAIL, MAIL, MAIL]
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(*client.keys(f"*{queue}*") or ["-"])


def test_every_notification_task_waits_behind_callbacks_and_sweeps_and_nothing_else_does():
    from approvals import tasks

    app = portal_app(REDIS_URL, "unused")
    for name in tasks.__all__:
        task = getattr(tasks, name)
        if not hasattr(task, "name"):
            continue  # a helper, not a task
        route = app.amqp.router.route({}, task.name)
        expected = 6 if task.name.startswith("worker.notify_tasks.") else None
        assert route.get("priority") == expected, task.name


def test_on_the_sqlite_broker_of_make_run_priority_is_ignored_and_nothing_is_lost(tmp_path):
    queue = f"priority-{uuid.uuid4().hex[:8]}"
    app = portal_app(f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}", queue)
    # The transport keeps no priority lists: every message arrives (its order is the transport's).
    assert sorted(published_then_taken(app, queue)) == sorted([MAIL, MAIL, MAIL, CALLBACK])
