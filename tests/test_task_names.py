"""Celery task names are an interface: beat's schedule names them, and messages already waiting in a
broker (a deploy in the middle of a queue) carry them. Moving a task's code to another module must not
change its name, so every task declares `name=` and this test pins the whole list."""

from approvals import tasks
from approvals.services import callbacks, notifications
from approvals.views import slack
from portal.celery import app as celery_app

TASK_NAMES = {
    "worker.tasks.deliver_callback",
    "worker.tasks.deliver_due_callbacks",
    "worker.tasks.sweep_callbacks",
    "worker.tasks.expire_overdue_requests",
    "worker.tasks.send_heartbeats",
    "worker.tasks.erase_closed_tokens",
    "worker.notify_tasks.send_notification",
    "worker.notify_tasks.send_notifications",
    "worker.notify_tasks.plan_new_request_notifications",
    "worker.notify_tasks.close_slack_messages",
    "worker.notify_tasks.slack_respond",
    "worker.notify_tasks.sweep_notifications",
    "worker.notify_tasks.send_follow_ups",
    "worker.notify_tasks.send_digests",
}


def portal_task_names() -> set[str]:
    celery_app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    return {name for name in celery_app.tasks if not name.startswith("celery.")}


def test_the_worker_registers_every_task_under_the_name_it_always_had():
    assert portal_task_names() == TASK_NAMES


def test_each_task_function_carries_its_stable_name():
    named = {getattr(tasks, name).name for name in tasks.__all__ if hasattr(getattr(tasks, name), "delay")}
    assert named == TASK_NAMES


def test_every_beat_entry_names_a_registered_task(settings):
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= portal_task_names()
    assert scheduled  # the schedule is not empty


def test_services_enqueue_only_task_names_the_worker_knows():
    enqueued = {
        callbacks.DELIVER_CALLBACK,
        notifications.SEND_NOTIFICATION,
        notifications.SEND_NOTIFICATIONS,
        notifications.PLAN_NEW_REQUEST_NOTIFICATIONS,
        notifications.CLOSE_SLACK_MESSAGES,
    }
    assert enqueued | {slack.SLACK_RESPOND} <= portal_task_names()
