"""approvals_notifications_total: every notification that ends (sent, failed, skipped, refused)
counts once, by channel and status, whichever path ended it.

Real parts: PostgreSQL, Django's mail backends (locmem; SMTP against a closed local port for the
outage), Celery in eager mode (the tasks run in-process when queued, retries included), the
local stand-in for Slack's Web API (tests/test_slack.py). The counter is read from
prometheus-client's registry, as tests/test_observability.py reads the others.
"""

import json
import uuid

import pytest
from django.core import mail

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, Notification, User
from approvals.ops import metrics
from approvals.services import notifications as notification_services
from approvals.tasks import notifications as notify_tasks
from tests.support import make_user, new_request_notifications_planned
from tests.test_slack import slack_stand_in

pytestmark = pytest.mark.django_db

STATUSES = ("sent", "failed", "skipped", "refused")


def counted() -> dict[tuple[str, str], float]:
    """The counter's value for every channel and final status."""
    return {
        (channel, status): metrics.REGISTRY.get_sample_value(
            "approvals_notifications_total", {"channel": channel, "status": status}
        )
        or 0.0
        for channel in ("email", "slack")
        for status in STATUSES
    }


def moved(before: dict, after: dict) -> dict[tuple[str, str], float]:
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


@pytest.fixture
def people(db):
    return {
        "alice": make_user("alice", "finance-approvers"),
        "erin": make_user("erin", "finance-approvers"),
        "bob": make_user("bob"),
    }


@pytest.fixture
def slack_api(settings):
    stand_in = slack_stand_in(settings, email=False)
    yield stand_in
    stand_in.stop()


def ingest(*users: str) -> ApprovalRequest:
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": "Approve order 1234",
        "requester": "bob@example.com",
        "approvers": {"users": list(users), "groups": ["finance-approvers"]},
    }
    return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]


def statuses(request: ApprovalRequest) -> list[tuple[str, str, str]]:
    return sorted(Notification.objects.filter(request=request).values_list("channel", "recipient", "status"))


def test_a_new_requests_mails_count_as_sent_and_an_address_outside_the_allowed_domains_as_refused(
    people, committed, settings
):
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]
    # An account from before the domains were restricted, still in the group: planned, refused.
    zoe = make_user("zoe", "finance-approvers")
    User.objects.filter(pk=zoe.pk).update(email="zoe@elsewhere.test")
    before = counted()

    request = committed(ingest)  # planned and sent as a batch after commit

    assert statuses(request) == [
        ("email", "alice@example.com", "sent"),
        ("email", "erin@example.com", "sent"),
        ("email", "zoe@elsewhere.test", "refused"),
    ]
    assert len(mail.outbox) == 2
    assert moved(before, counted()) == {("email", "sent"): 2, ("email", "refused"): 1}


def test_each_failed_mail_counts_once_not_once_per_attempt(people, committed, smtp_down):
    request = ingest()  # plain `db` test: nothing is sent until the task runs below
    ids = new_request_notifications_planned()
    before = counted()

    for notification_id in ids:  # eager: every retry runs within this call
        committed(notify_tasks.send_notification.delay, notification_id)

    rows = Notification.objects.filter(request=request)
    assert sorted(rows.values_list("status", "attempts")) == [("failed", 3), ("failed", 3)]
    assert moved(before, counted()) == {("email", "failed"): 2}


def test_a_batch_counts_mails_to_a_decided_request_as_skipped(people, committed):
    request = ingest()
    ids = new_request_notifications_planned()  # planned, not sent yet
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    before = counted()

    committed(notify_tasks.send_notifications.delay, notification_ids=ids)

    assert {status for _, _, status in statuses(request)} == {"skipped"}
    assert moved(before, counted()) == {("email", "skipped"): 2}


def test_a_mail_planned_before_the_domains_were_restricted_is_refused_and_counted_when_its_send_comes(
    people, committed, settings
):
    request = ingest("zoe@elsewhere.test")
    ids = new_request_notifications_planned()
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]
    before = counted()

    committed(notify_tasks.send_notifications.delay, notification_ids=ids)

    assert ("email", "zoe@elsewhere.test", "refused") in statuses(request)
    assert moved(before, counted()) == {("email", "sent"): 2, ("email", "refused"): 1}


def test_a_row_whose_attempts_ran_out_while_its_worker_was_lost_counts_as_failed(people, committed, settings):
    request = ingest()
    ids = new_request_notifications_planned()
    # What a worker killed mid-send leaves behind on its last attempt: the row still pending.
    Notification.objects.filter(pk=ids[0]).update(attempts=settings.NOTIFICATION_MAX_ATTEMPTS)
    before = counted()

    committed(notify_tasks.send_notification.delay, ids[0])
    committed(notify_tasks.send_notifications.delay, notification_ids=ids)

    assert Notification.objects.get(pk=ids[0]).status == "failed"
    assert {status for _, _, status in statuses(request)} == {"failed", "sent"}
    assert moved(before, counted()) == {("email", "failed"): 1, ("email", "sent"): 1}


def test_a_notification_sent_twice_over_counts_once(people, committed):
    request = ingest()
    ids = new_request_notifications_planned()
    before = counted()

    committed(notify_tasks.send_notifications.delay, notification_ids=ids)
    committed(notify_tasks.send_notifications.delay, notification_ids=ids)  # the sweep's late copy
    for notification_id in ids:
        committed(notify_tasks.send_notification.delay, notification_id)
        # A task whose lease ran out marks the row after another task sent it: nothing changes.
        committed(notification_services.notification_mark_sent, notification_id=notification_id, channel="email")
        committed(
            notification_services.notification_mark_failed,
            notification_id=notification_id,
            channel="email",
            error="late",
            final=True,
        )
        committed(notification_services.notification_mark_skipped, notification_id=notification_id, channel="email")

    assert {status for _, _, status in statuses(request)} == {"sent"}
    assert moved(before, counted()) == {("email", "sent"): 2}


def test_slack_messages_count_as_sent_failed_and_skipped_by_channel(people, slack_api, committed, settings):
    del slack_api.users["erin@example.com"]  # Slack knows no erin: a permanent failure
    request = ingest()
    ids = new_request_notifications_planned()
    before = counted()

    committed(notify_tasks.send_notifications.delay, notification_ids=ids)
    assert statuses(request) == [
        ("slack", "alice@example.com", "sent"),
        ("slack", "erin@example.com", "failed"),
    ]

    later = ingest()
    later_ids = new_request_notifications_planned()
    settings.SLACK_BOT_TOKEN = ""  # Slack turned off before the send: nothing to send
    for notification_id in later_ids:
        committed(notify_tasks.send_notification.delay, notification_id)

    assert {status for _, _, status in statuses(later)} == {"skipped"}
    assert moved(before, counted()) == {("slack", "sent"): 1, ("slack", "failed"): 1, ("slack", "skipped"): 2}


def test_notification_labels_stay_bounded(django_capture_on_commit_callbacks):
    assert set(Notification.Channel.values) == metrics.NOTIFICATION_CHANNELS
    assert set(Notification.Status.values) - {"pending"} == metrics.NOTIFICATION_FINAL_STATUSES
    before = metrics.REGISTRY.get_sample_value("approvals_notifications_total", {"channel": "other", "status": "other"})
    with django_capture_on_commit_callbacks(execute=True):
        metrics.notification(channel="pigeon-" + uuid.uuid4().hex, status="lost-" + uuid.uuid4().hex)
    after = metrics.REGISTRY.get_sample_value("approvals_notifications_total", {"channel": "other", "status": "other"})
    assert (after or 0) == (before or 0) + 1
