"""New requests' notifications planned after the ingest commits, in batches, and sent in batches.

Real parts: PostgreSQL (SKIP LOCKED between two planners in two connections), Celery in eager
mode (a queued task runs in-process), Django's locmem mail backend. The mail backend subclass
below only counts the connections Django opens; it sends like locmem does.
"""

import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.core import mail
from django.core.mail.backends import locmem
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Notification, NotificationPreference
from approvals.selectors.notifications import unplanned_request_ids
from approvals.services import notifications as notification_services
from approvals.tasks import notifications as notify_tasks
from tests.support import breaking_for, make_user
from tests.test_slack import slack_api  # noqa: F401 - the fixture: a local stand-in for Slack's Web API

pytestmark = pytest.mark.django_db

FINANCE = {"users": ["zoe@example.com"], "groups": ["finance-approvers"]}
IT = {"users": ["mallory@evil.test"], "groups": ["it-approvers", "finance-approvers"]}


@pytest.fixture
def people(db):
    gina = make_user("gina", "it-approvers")
    NotificationPreference.objects.create(user=gina, email_enabled=False)  # opted out of email
    henry = make_user("henry", "finance-approvers")
    henry.is_active = False  # deactivated: left the company
    henry.save()
    eve = make_user("eve", "it-approvers")
    eve.email = "eve@partner.test"  # a member whose address is outside the allowed domains
    eve.save()
    return {
        "eve": eve,
        "alice": make_user("alice", "finance-approvers"),
        "erin": make_user("erin", "finance-approvers"),
        "bob": make_user("bob", "finance-approvers"),  # requests; a member of the group he asks
        "frank": make_user("frank", "it-approvers"),
        "gina": gina,
        "henry": henry,
        "xavier": make_user("xavier"),  # frank's stand-in
    }


@pytest.fixture
def rules(settings, people):
    """The rules planning applies: the allow-list, Slack channels for a group, a stand-in."""
    settings.NOTIFICATION_EMAIL_ENABLED = True
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]
    settings.SLACK_BOT_TOKEN = "xoxb-test"
    settings.SLACK_GROUP_CHANNELS = {"it-approvers": "C0IT"}
    services.delegation_set(
        delegator=people["frank"],
        delegate_email="xavier@example.com",
        starts_at=None,
        ends_at=timezone.now() + timedelta(days=3),
        reason="holiday",
        actor=people["frank"],
    )
    return settings


def ingest(approvers: dict, requester: str = "bob@example.com", title: str = "Approve order 1234") -> ApprovalRequest:
    """In a plain `db` test the ingest's on-commit hooks never run: the request stays unplanned."""
    body = {"taskToken": str(uuid.uuid4()), "title": title, "requester": requester, "approvers": approvers}
    request, created = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    assert created
    return request


def rows_of(request: ApprovalRequest) -> list[tuple]:
    return sorted(
        Notification.objects.filter(request=request).values_list("kind", "channel", "recipient", "status", "last_error")
    )


def refusals_of(request: ApprovalRequest) -> list[dict]:
    return [
        {**event.data, "recipients": sorted(event.data["recipients"])}
        for event in AuditEvent.objects.filter(request=request, action="notification_refused")
    ]


def age(*requests: ApprovalRequest) -> None:
    """As if their planning task had been lost longer than the lease ago."""
    long_ago = timezone.now() - notification_services.PLAN_LEASE - timedelta(seconds=1)
    ApprovalRequest.objects.filter(pk__in=[r.pk for r in requests]).update(notifications_unplanned_since=long_ago)


# ---------------------------------------------------------------------------
# Planning: once per distinct approver set, the same rows as before
# ---------------------------------------------------------------------------
CASES = [
    (FINANCE, "bob@example.com"),
    (FINANCE, "alice@example.com"),  # the same set, another requester: each excludes its own
    (IT, "bob@example.com"),
    ({"users": ["frank@example.com", "henry@example.com"], "groups": []}, "erin@example.com"),
    ({"users": [], "groups": ["it-approvers"]}, "frank@example.com"),
]


def test_the_batch_plans_the_same_rows_and_refusals_as_approval_notify_on_a_twin_request(people, rules):
    batch = [ingest(approvers, requester) for approvers, requester in CASES]
    twins = [ingest(approvers, requester) for approvers, requester in CASES]
    ApprovalRequest.objects.filter(pk__in=[twin.pk for twin in twins]).update(notifications_unplanned_since=None)
    for twin in twins:  # the old path: planned one request at a time
        notification_services.approval_notify(request=twin, kind="new_request")

    notification_services.new_requests_plan(request_ids=[request.pk for request in batch])

    for request, twin in zip(batch, twins, strict=True):
        assert rows_of(request) == rows_of(twin)
        assert rows_of(request)  # every case tells someone
        assert refusals_of(request) == refusals_of(twin)
    assert not ApprovalRequest.objects.filter(notifications_unplanned_since__isnull=False).exists()
    # The hostile parts of the cases, spelled out.
    assert ("email", "gina@example.com") not in {row[1:3] for request in batch for row in rows_of(request)}
    assert ("slack", "C0IT") in {row[1:3] for row in rows_of(batch[2])}
    assert "xavier@example.com" in {row[2] for row in rows_of(batch[3])}  # frank's stand-in
    bob_asks, alice_asks = rows_of(batch[0]), rows_of(batch[1])
    assert "bob@example.com" not in {row[2] for row in bob_asks} and "alice@example.com" in {r[2] for r in bob_asks}
    assert "alice@example.com" not in {row[2] for row in alice_asks} and "bob@example.com" in {r[2] for r in alice_asks}
    (eve,) = [row for row in rows_of(batch[2]) if row[2] == "eve@partner.test"]
    assert eve[3] == Notification.Status.REFUSED
    assert "henry@example.com" not in {row[2] for row in rows_of(batch[3])}  # deactivated, though named


def test_targets_are_computed_once_per_distinct_approver_set_so_planning_queries_do_not_grow_with_the_batch(
    people, rules
):
    def plan(size: int) -> tuple[int, int, list[int]]:
        ids = [ingest(CASES[i % 3][0], CASES[i % 3][1], title=f"Order {size}-{i}").pk for i in range(size)]
        with CaptureQueriesContext(connection) as queries:
            planned = notification_services.new_requests_plan(request_ids=ids)
        assert not ApprovalRequest.objects.filter(pk__in=ids, notifications_unplanned_since__isnull=False).exists()
        # The rows are one bulk insert (SQLite splits it by its limit on query parameters).
        inserts = [q for q in queries if q["sql"].startswith('INSERT INTO "approvals_notification"')]
        return len(queries) - len(inserts), len(inserts), planned

    small, small_inserts, planned_small = plan(3)
    large, large_inserts, planned_large = plan(30)

    # The refusal audit is one insert per request that has a refused recipient (one IT request in
    # every 3: eve); the rest does not depend on the batch's size.
    assert large - small == 30 // 3 - 3 // 3
    assert small_inserts == 1 and large_inserts <= 3
    assert len(planned_large) == 10 * len(planned_small)


def test_new_requests_notify_writes_nothing_in_the_ingest_and_queues_one_planning_task_after_commit(
    people, rules, django_capture_on_commit_callbacks, celery_eager
):
    requests = [ingest(FINANCE, title=f"Order {i}") for i in range(3)]
    # The ingest inserted them marked unplanned: telling the approvers writes nothing more.
    assert all(request.notifications_unplanned_since is not None for request in requests)
    assert ApprovalRequest.objects.filter(notifications_unplanned_since__isnull=False).count() == 3
    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        CaptureQueriesContext(connection) as queries,
        transaction.atomic(),
    ):
        notification_services.new_requests_notify(requests=requests)
    assert [query["sql"].split()[0] for query in queries if "SAVEPOINT" not in query["sql"]] == []
    assert len(callbacks) == 1
    assert not Notification.objects.exists()

    callbacks[0]()  # the commit happened: the one planning task runs (eager), then the sends

    assert Notification.objects.filter(status="sent", channel="email").count() == 3 * 3  # alice, erin, zoe
    assert sorted({m.to[0] for m in mail.outbox}) == ["alice@example.com", "erin@example.com", "zoe@example.com"]

    # A request not inserted marked (made some other way) is marked with one UPDATE.
    other = ingest(FINANCE, title="Unmarked")
    ApprovalRequest.objects.filter(pk=other.pk).update(notifications_unplanned_since=None)
    other.refresh_from_db()
    with (
        django_capture_on_commit_callbacks(execute=False),
        CaptureQueriesContext(connection) as queries,
        transaction.atomic(),
    ):
        notification_services.new_requests_notify(requests=[other])
    assert [query["sql"].split()[0] for query in queries if "SAVEPOINT" not in query["sql"]] == ["UPDATE"]
    assert ApprovalRequest.objects.get(pk=other.pk).notifications_unplanned_since is not None


# ---------------------------------------------------------------------------
# Nothing lost, nothing twice
# ---------------------------------------------------------------------------
def test_a_planning_task_lost_after_the_commit_is_done_by_the_sweep_once(people, celery_eager, settings):
    settings.NOTIFICATION_EMAIL_ENABLED = True
    request = ingest(FINANCE)  # the worker died after the commit: the planning task never ran
    assert not Notification.objects.exists()

    assert notify_tasks.sweep_notifications() == 0  # within the lease: its task may still come
    age(request)
    assert notify_tasks.sweep_notifications() == 3
    assert notify_tasks.sweep_notifications() == 0
    # The lost task, redelivered late, plans nothing again.
    assert notify_tasks.plan_new_request_notifications(request_ids=[request.pk]) == 0

    assert rows_of(request) == [
        ("new_request", "email", email, "sent", "")
        for email in ("alice@example.com", "erin@example.com", "zoe@example.com")
    ]
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.com", "erin@example.com", "zoe@example.com"]


def in_thread(function):
    """Run `function` in another thread, on its own database connection; return its result."""
    results, errors = [], []

    def run():
        try:
            results.append(function())
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == [], errors
    return results[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_planners_at_once_create_one_set_of_rows(people, settings):
    settings.NOTIFICATION_EMAIL_ENABLED = True
    ids = [ingest(FINANCE, title=f"Order {i}").pk for i in range(4)]

    def plan():
        return notification_services.new_requests_plan(request_ids=ids)

    with transaction.atomic():
        planned = plan()  # planner A holds the requests' locks until its commit
        assert in_thread(plan) == []  # planner B skips them at once: neither waits nor plans twice
    assert in_thread(plan) == []  # after A's commit they are planned: nothing to do
    assert len(planned) == 4 * 3
    assert Notification.objects.count() == 4 * 3

    # And racing for real: two threads, the same fresh requests, one set of rows.
    more = [ingest(FINANCE, title=f"Race {i}").pk for i in range(20)]
    start = threading.Barrier(2)
    counts: list[int] = []

    def race():
        start.wait(timeout=10)
        try:
            counts.append(len(notification_services.new_requests_plan(request_ids=more)))
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # A request skipped by both (each saw the other's lock) is the sweep's: plan what is left.
    age(*ApprovalRequest.objects.filter(pk__in=more, notifications_unplanned_since__isnull=False))
    for request_ids in unplanned_request_ids(before=timezone.now()):
        counts.append(len(notification_services.new_requests_plan(request_ids=request_ids)))
    assert sum(counts) == 20 * 3
    assert Notification.objects.filter(request_id__in=more).count() == 20 * 3
    assert (
        Notification.objects.filter(request_id__in=more).values("request_id", "channel", "recipient").distinct().count()
        == 20 * 3
    )


# ---------------------------------------------------------------------------
# A backlog of unplanned requests drains in batches
# ---------------------------------------------------------------------------
def test_a_planning_task_also_plans_and_sends_the_new_requests_still_waiting_so_a_backlog_drains_in_batches(
    people, counting_backend, celery_eager, settings
):
    """A busy worker runs the planning tasks of many ingested batches late, one after the other:
    the first to run takes every request still unplanned (up to PLAN_BATCH_SIZE) and sends their
    mails on one connection; the tasks queued for the others find theirs planned."""
    settings.NOTIFICATION_EMAIL_ENABLED = True
    requests = [ingest(FINANCE, title=f"Order {i}") for i in range(4)]  # 4 ingests, 4 tasks queued

    assert notify_tasks.plan_new_request_notifications(request_ids=[requests[2].pk]) == 4 * 3
    assert Notification.objects.filter(status="sent").count() == 4 * 3
    assert (counting_backend.made, counting_backend.opened) == (1, 1)  # one connection for all 12

    for request in requests:  # the other tasks (and this one, redelivered): nothing twice
        assert notify_tasks.plan_new_request_notifications(request_ids=[request.pk]) == 0
    assert len(mail.outbox) == 4 * 3
    assert counting_backend.made == 1
    assert not ApprovalRequest.objects.filter(notifications_unplanned_since__isnull=False).exists()


def test_a_planning_task_takes_others_up_to_the_batch_size_never_its_own_less_and_leaves_the_lost_to_the_sweep(
    people,
):
    lost = ingest(FINANCE, title="Lost")
    age(lost)  # its task was lost longer than the lease ago: the sweep plans it, no task's batch
    waiting = [ingest(FINANCE, title=f"Waiting {i}") for i in range(4)]
    own = [ingest(FINANCE, title=f"Own {i}") for i in range(4)]

    def unplanned() -> set[int]:
        return set(
            ApprovalRequest.objects.filter(notifications_unplanned_since__isnull=False).values_list("pk", flat=True)
        )

    # Its own requests first, all of them, even more than the batch size: no other.
    notification_services.new_requests_plan(request_ids=[r.pk for r in own], fill_to=3)
    assert unplanned() == {lost.pk} | {r.pk for r in waiting}
    # One of its own, then the others that waited longest, up to 3 in all.
    planned = notification_services.new_requests_plan(request_ids=[waiting[3].pk], fill_to=3)
    assert len(planned) == 3 * 3
    assert unplanned() == {lost.pk, waiting[2].pk}
    # Its own already planned (by another task): it still takes what waits, never the lost one.
    assert len(notification_services.new_requests_plan(request_ids=[waiting[3].pk], fill_to=3)) == 3
    assert unplanned() == {lost.pk}
    assert notification_services.new_requests_plan(request_ids=[own[0].pk], fill_to=3) == []
    assert unplanned() == {lost.pk}
    # Without fill_to (the sweep) only the given ids, as before.
    assert len(notification_services.new_requests_plan(request_ids=[lost.pk])) == 3
    assert unplanned() == set()


def test_a_request_that_breaks_planning_never_costs_the_requests_of_a_task_that_took_it_in_their_notifications(
    people, celery_eager, settings, monkeypatch, caplog
):
    """A request whose planning raises (a bug: simulated, a real setting breaks every request
    alike) may be taken into another task's batch: that task's own requests are still planned
    and sent, one by one; the broken one is left to its own task, which gives up on it."""
    settings.NOTIFICATION_EMAIL_ENABLED = True
    real = notification_services._group_member_emails

    def members(groups):
        if "broken-group" in groups:
            raise RuntimeError("a bug in planning")
        return real(groups)

    monkeypatch.setattr(notification_services, "_group_member_emails", members)
    broken = ingest({"users": [], "groups": ["broken-group"]}, title="Broken")
    own = ingest(FINANCE, title="Own")

    assert notify_tasks.plan_new_request_notifications(request_ids=[own.pk]) == 3
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.com", "erin@example.com", "zoe@example.com"]
    assert ApprovalRequest.objects.get(pk=broken.pk).notifications_unplanned_since is not None

    assert notify_tasks.plan_new_request_notifications(request_ids=[broken.pk]) == 0
    assert f"could not plan new_request notifications for request {broken.pk}" in caplog.text
    assert ApprovalRequest.objects.get(pk=broken.pk).notifications_unplanned_since is None
    assert len(mail.outbox) == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_planning_tasks_draining_at_once_take_disjoint_requests(people, settings):
    settings.NOTIFICATION_EMAIL_ENABLED = True
    ids = [ingest(FINANCE, title=f"Order {i}").pk for i in range(4)]

    def plan(own: int):
        return lambda: notification_services.new_requests_plan(request_ids=[own], fill_to=50)

    with transaction.atomic():
        planned = plan(ids[0])()  # A drained all four and holds their locks until its commit
        assert in_thread(plan(ids[3])) == []  # B skips them: its own included, A has it
    assert len(planned) == 4 * 3
    assert Notification.objects.count() == 4 * 3


# ---------------------------------------------------------------------------
# Sending in batches
# ---------------------------------------------------------------------------
class CountingBackend(locmem.EmailBackend):
    """Django's locmem backend, counting the connections made to it (an SMTP backend would open
    one TCP + SMTP session each)."""

    made = 0
    opened = 0
    closed = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        type(self).made += 1

    def open(self):
        type(self).opened += 1
        return True

    def close(self):
        type(self).closed += 1


@pytest.fixture
def counting_backend(settings):
    settings.EMAIL_BACKEND = f"{__name__}.CountingBackend"
    CountingBackend.made = CountingBackend.opened = CountingBackend.closed = 0
    return CountingBackend


def test_one_task_sends_a_batch_of_mails_on_one_connection(people, counting_backend, celery_eager, settings):
    settings.NOTIFICATION_EMAIL_ENABLED = True
    requests = [ingest(FINANCE, title=f"Order {i}") for i in range(8)]
    ids = notification_services.new_requests_plan(request_ids=[r.pk for r in requests])
    assert len(ids) == 24

    assert notify_tasks.send_notifications(notification_ids=ids) == {"sent": 24, "skipped": 0, "failed": 0, "retry": 0}

    assert len(mail.outbox) == 24
    assert (counting_backend.made, counting_backend.opened, counting_backend.closed) == (1, 1, 1)
    assert set(Notification.objects.values_list("status", "attempts")) == {("sent", 1)}
    # Sent once: a second run of the same batch (a redelivered task) sends nothing.
    assert notify_tasks.send_notifications(notification_ids=ids)["sent"] == 0
    assert len(mail.outbox) == 24


def test_sending_a_batch_reads_the_recipients_once_so_only_the_per_mail_record_grows_with_it(
    people, rules, celery_eager
):
    """What "may this recipient decide?" reads (their account, groups, the delegations they
    hold) is read once per batch; each mail still records its own result as it is sent."""
    rules.SLACK_BOT_TOKEN = ""  # mail only: Slack's calls are not what is counted here
    requests = [ingest(IT, title=f"Order {i}") for i in range(12)]
    ids = notification_services.new_requests_plan(request_ids=[r.pk for r in requests])
    per_request = len(ids) // len(requests)

    def statements_to_send(count: int) -> int:
        batch = ids[: count * per_request]
        with CaptureQueriesContext(connection) as queries:
            assert notify_tasks.send_notifications(notification_ids=batch)["sent"] == len(batch)
        Notification.objects.filter(pk__in=batch).update(status=Notification.Status.PENDING, attempts=0)
        return len(queries)

    one_mail_record = 1  # the row marked sent: one UPDATE
    small, large = statements_to_send(2), statements_to_send(12)
    assert large - small == 10 * per_request * one_mail_record


def test_in_a_batch_decision_links_go_to_exactly_whom_the_per_mail_check_allows(people, rules, celery_eager):
    """The batch's preloaded answers are the ones each mail would get on its own: frank's stand-in
    xavier gets links for frank's request, a member of an assigned group gets them, erin (who
    asks herself) and henry (deactivated) get no links."""
    from approvals.notifications import messages

    rules.SLACK_BOT_TOKEN = ""
    rules.OIDC_ALLOWED_EMAIL_DOMAINS = []
    requests = [
        ingest({"users": ["frank@example.com"], "groups": ["finance-approvers"]}, title="Order A"),
        ingest({"users": ["henry@example.com", "erin@example.com"], "groups": []}, requester="erin@example.com"),
        ingest({"users": [], "groups": ["it-approvers"]}, requester="gina@example.com", title="Order C"),
    ]
    ids = notification_services.new_requests_plan(request_ids=[r.pk for r in requests])
    notify_tasks.send_notifications(notification_ids=ids)

    checked = 0
    for row in Notification.objects.filter(pk__in=ids, channel="email").select_related("request"):
        (message,) = [m for m in mail.outbox if m.to == [row.recipient] and row.request.title in m.subject]
        expected = messages.may_decide(row.recipient, row.request)  # asked on its own, outside any batch
        assert ("Approve: " in message.body) is expected, row.recipient
        checked += 1
    assert checked == len(mail.outbox) > 0
    reached = {(m.to[0], m.subject.split(": ", 1)[1]) for m in mail.outbox if "Approve: " in m.body}
    assert ("xavier@example.com", "Order A") in reached  # frank's stand-in, through the preloaded delegation
    assert not {recipient for recipient, title in reached if title == "Approve order 1234"} & {
        "erin@example.com",  # she asks herself
        "henry@example.com",  # deactivated
    }


def test_one_task_sends_its_slack_messages_on_one_http_session(people, slack_api, celery_eager):  # noqa: F811
    finance_group = {"users": [], "groups": ["finance-approvers"]}
    requests = [ingest(finance_group, title=f"Order {i}") for i in range(4)]  # DMs to alice and erin
    ids = notification_services.new_requests_plan(request_ids=[r.pk for r in requests])
    assert Notification.objects.filter(channel="slack").count() == len(ids) == 8

    assert notify_tasks.send_notifications(notification_ids=ids)["sent"] == 8

    assert len(slack_api.of("chat.postMessage")) == 8 and len(slack_api.calls) == 8 * 3
    assert len({call["peer"] for call in slack_api.calls}) == 1  # one kept-alive connection


def test_a_batch_leaves_rows_another_task_holds_and_skips_what_a_decision_made_moot(
    people, counting_backend, celery_eager, settings
):
    settings.NOTIFICATION_EMAIL_ENABLED = True
    first, second = ingest(FINANCE, title="First"), ingest(FINANCE, title="Second")
    ids = notification_services.new_requests_plan(request_ids=[first.pk, second.pk])
    held = notification_services.notifications_claim(notification_ids=ids[:2])  # another task's lease
    assert len(held) == 2
    services.approval_decide(public_id=second.public_id, user=people["alice"], approve=True)

    counts = notify_tasks.send_notifications(notification_ids=ids)

    assert counts == {"sent": 1, "skipped": 0, "failed": 0, "retry": 0}
    assert Notification.objects.filter(request=second, status="skipped").count() == 3  # decided: moot
    still_held = Notification.objects.filter(kind="new_request", status="pending").order_by("pk")
    assert [row.pk for row in still_held] == ids[:2]  # the other task's to send


def test_with_smtp_down_each_row_of_a_batch_is_retried_then_failed(people, celery_eager, settings):
    from tests.conftest import free_port

    settings.NOTIFICATION_EMAIL_ENABLED = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    settings.NOTIFICATION_MAX_ATTEMPTS = 3
    request = ingest(FINANCE)
    ids = notification_services.new_requests_plan(request_ids=[request.pk])

    notify_tasks.send_notifications.delay(notification_ids=ids)  # eager: its retries run right away

    rows = Notification.objects.filter(request=request)
    assert sorted(rows.values_list("status", "attempts")) == [("failed", 3)] * 3
    assert all("ConnectionRefusedError" in row.last_error for row in rows)


def test_deactivated_opted_out_and_outside_the_allow_list_get_nothing_through_the_batch_path(
    people, rules, django_capture_on_commit_callbacks, celery_eager
):
    rules.SLACK_BOT_TOKEN = ""  # email only: what reaches an inbox is what matters here
    message = {"users": ["mallory@evil.test", "henry@example.com"], "groups": ["it-approvers", "finance-approvers"]}
    with django_capture_on_commit_callbacks(execute=True):
        request = ingest(message)

    told = sorted(m.to[0] for m in mail.outbox)
    assert told == ["alice@example.com", "erin@example.com", "frank@example.com", "xavier@example.com"]
    # mallory@evil.test was named, but the approver trust setting ignores an address outside the
    # allowed domains; eve is a member of the group with such an address: refused, audited.
    eve = Notification.objects.get(request=request, recipient="eve@partner.test")
    assert eve.status == Notification.Status.REFUSED
    (refusal,) = refusals_of(request)
    assert refusal["recipients"] == ["email:eve@partner.test"]


def test_a_mail_that_breaks_while_being_built_never_costs_the_rest_of_its_batch_their_mails(
    people, celery_eager, settings, monkeypatch, caplog
):
    """One bad notification never loses a good one. A bug while building one mail (here
    simulated: no real input is known to break the templates, and none can be made on demand)
    raised out of the batch: every row after it stayed claimed unsent, the sweep sent the batch
    again in the same order, the bad row broke it again, and once the attempts ran out the good
    rows were failed without ever being sent. Now the bad row alone fails, with its error's type."""
    from approvals.notifications import messages

    settings.NOTIFICATION_EMAIL_ENABLED = True
    settings.NOTIFICATION_MAX_ATTEMPTS = 3
    broken, first, second = (ingest(FINANCE, title=title) for title in ("Broken", "First", "Second"))
    ids = notification_services.new_requests_plan(request_ids=[broken.pk, first.pk, second.pk])
    assert sorted(ids)[:3] == sorted(Notification.objects.filter(request=broken).values_list("pk", flat=True))
    monkeypatch.setattr(
        messages, "build", breaking_for(messages.build, lambda notification, **_: notification.request_id == broken.pk)
    )

    notify_tasks.send_notifications.delay(notification_ids=sorted(ids))
    for _ in range(settings.NOTIFICATION_MAX_ATTEMPTS + 1):  # the sweep, each time the leases ran out
        Notification.objects.filter(status="pending").update(
            locked_until=None, updated_at=timezone.now() - timedelta(days=1)
        )
        notify_tasks.sweep_notifications()

    good = Notification.objects.exclude(request=broken)
    assert sorted(set(good.values_list("status", "attempts"))) == [("sent", 1)]
    assert len(mail.outbox) == good.count() == 6
    bad = Notification.objects.filter(request=broken)
    assert set(bad.values_list("status", flat=True)) == {"failed"}
    assert all("KeyError" in row.last_error for row in bad)
    assert "could not be built or sent" in caplog.text and "KeyError" in caplog.text
