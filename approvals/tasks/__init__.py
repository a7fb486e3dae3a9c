"""Celery tasks: thin, take ids, re-fetch, call services and the AWS integration.

Every task keeps the name it had before this package existed (`name=` on each decorator): beat's
schedule and messages already waiting in a broker name tasks by it. Services never import this
package: they enqueue by name after commit (approvals.services.common.enqueue_on_commit).
Celery's autodiscovery (portal/celery.py) imports this package, which loads every task module.
"""

from approvals.tasks.callbacks import deliver_callback, deliver_due_callbacks, execution_gone, sweep_callbacks
from approvals.tasks.notifications import (
    close_slack_messages,
    plan_new_request_notifications,
    send_digests,
    send_follow_ups,
    send_notification,
    send_notifications,
    slack_respond,
    sweep_notifications,
)
from approvals.tasks.sweeps import erase_closed_tokens, expire_overdue_requests, send_heartbeats

__all__ = [
    "close_slack_messages",
    "deliver_callback",
    "deliver_due_callbacks",
    "erase_closed_tokens",
    "execution_gone",
    "expire_overdue_requests",
    "plan_new_request_notifications",
    "send_digests",
    "send_follow_ups",
    "send_heartbeats",
    "send_notification",
    "send_notifications",
    "slack_respond",
    "sweep_callbacks",
    "sweep_notifications",
]
