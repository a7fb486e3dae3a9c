"""Callbacks delivered in batches (worker.tasks.deliver_due_callbacks, and deliver_callback(id),
which claims its own callback first and fills the batch with whatever else is due).

Attacks first: a decider who is no longer allowed, hidden in a batch of good ones, is the only
one refused; each voter's groups are read once per batch and never lent to another voter; two
workers claiming batches at once never send one callback twice (counted in the executions'
histories on the moto server). Then the bulk records on the retry and failure paths, and the
number of statements of a batch, which does not grow with its size.

Real parts: the moto server runs the example state machine from deploy/, PostgreSQL holds the
outbox. `unittest.mock` only stands in for Step Functions faults the moto server cannot produce
on demand (throttling, 5xx), each one commented.
"""

import json
import logging
import threading
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import services, tasks, tokens
from approvals.contract import parse_message
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, AuditEvent, Callback, CallbackStatus, Notification, RequestStatus, Vote
from approvals.tasks import deliver_callback, deliver_due_callbacks
from tests.support import (
    executed_scans,
    finance_execution_input,
    finance_team,
    make_user,
    wait_for,
    wait_for_execution_end,
)
from tests.test_callbacks import LONG_TOKEN, assert_token_nowhere, service_unavailable, take_from_queue, throttling

EXECUTION_INPUT = finance_execution_input("Approve order 42", 42)


@pytest.fixture
def people(db):
    return finance_team()


@pytest.fixture
def logs_at_info(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def start_executions(
    aws, state_machine_arn: str, count: int, execution_input: dict = EXECUTION_INPUT
) -> list[tuple[str, ApprovalRequest]]:
    """`count` real executions of the demo state machine, each ingested as a request."""
    arns = [
        gateway.start_execution(
            state_machine_arn=state_machine_arn,
            name=f"batch-{uuid.uuid4().hex[:12]}",
            execution_input=execution_input,
        )
        for _ in range(count)
    ]

    def all_ingested():
        take_from_queue(aws.APPROVAL_QUEUE_URL)
        found = {r.execution_arn: r for r in ApprovalRequest.objects.filter(execution_arn__in=arns)}
        return found if len(found) == count else None

    found = wait_for(all_ingested, timeout=120)
    return [(arn, found[arn]) for arn in arns]


def ingest_body(**fields) -> ApprovalRequest:
    """A request with no execution behind its token."""
    data = {
        "taskToken": str(uuid.uuid4()),
        "title": "Order 9",
        "approvers": {"groups": ["finance-approvers"]},
        "requester": "bob@example.com",
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps({**data, **fields})))
    return request


def approve(request: ApprovalRequest, user) -> Callback:
    services.approval_decide(public_id=request.public_id, user=user, approve=True)
    return Callback.objects.get(request=request)


def task_closures(execution_arn: str) -> list[str]:
    """The events that answered the execution's task: exactly one per delivered callback."""
    events = gateway.get_execution_history(execution_arn=execution_arn)
    return [event["type"] for event in events if event["type"] in {"TaskSucceeded", "TaskFailed"}]


def leaves_the_group(user) -> None:
    user.groups.remove(Group.objects.get(name="finance-approvers"))


def is_deactivated(user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


def changes_email_at_the_idp(user) -> None:
    user.email = "dave.smith@example.com"
    user.save(update_fields=["email"])


# ---------------------------------------------------------------------------
# The identity re-check, for a whole batch
# ---------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "change", [leaves_the_group, is_deactivated, changes_email_at_the_idp], ids=["left-group", "deactivated", "email"]
)
def test_a_refused_decider_inside_a_batch_of_good_ones_is_the_only_one_refused(
    aws, demo_state_machine, people, logs_at_info, change
):
    executions = start_executions(aws, demo_state_machine, 4)
    good = [(arn, approve(request, people["alice"])) for arn, request in executions[:3]]
    bad_arn, bad_request = executions[3]
    if change is changes_email_at_the_idp:
        # Named by email: the new address is no longer the assignee.
        services.approval_reassign(
            request_id=bad_request.pk, actor=people["root"], users=["dave@example.com"], reason="by name", mode="add"
        )
        leaves_the_group(people["dave"])
    bad = approve(bad_request, people["dave"])
    change(people["dave"])

    # The batch is queued for one good callback; it takes the others that are due with it.
    assert deliver_callback(good[0][1].pk) == "delivered"

    for arn, callback in good:
        callback.refresh_from_db()
        assert callback.status == CallbackStatus.DELIVERED and callback.attempts == 1
        assert wait_for_execution_end(arn)["status"] == "SUCCEEDED"
        assert task_closures(arn) == ["TaskSucceeded"]
    # Dave's vote is withdrawn, his request waits again, its unsent callback is gone.
    assert not Callback.objects.filter(pk=bad.pk).exists()
    bad_request.refresh_from_db()
    assert bad_request.status == RequestStatus.PENDING
    reopened = AuditEvent.objects.get(request=bad_request, action="reopened")
    assert reopened.data["withdrawn_votes"] == [people["dave"].email]
    assert gateway.describe_execution(execution_arn=bad_arn)["status"] == "RUNNING"
    assert AuditEvent.objects.filter(action="callback_delivered").count() == 3
    for _, request in executions:
        assert_token_nowhere(tokens.decrypt_token(request.token_ciphertext), logs_at_info)


@pytest.mark.django_db
def test_each_voters_groups_are_their_own_in_a_batch_one_who_left_loses_every_vote_the_others_keep_theirs(people):
    # Dave decided three requests and left the group; alice and carol decided one each and did not.
    dave_requests = [ingest_body(title=f"Dave {n}") for n in range(3)]
    others = {"alice": ingest_body(title="Alice"), "carol": ingest_body(title="Carol")}
    for request in dave_requests:
        approve(request, people["dave"])
    for name, request in others.items():
        approve(request, people[name])
    leaves_the_group(people["dave"])
    ids = list(Callback.objects.order_by("pk").values_list("pk", flat=True))

    sends = services.callbacks_claim_batch(callback_ids=ids, limit=50)

    claimed = {send.callback_id for send in sends}
    assert claimed == {Callback.objects.get(request=request).pk for request in others.values()}
    for request in dave_requests:
        request.refresh_from_db()
        assert request.status == RequestStatus.PENDING
        assert not Callback.objects.filter(request=request).exists()
        withdrawn = Vote.with_withdrawn.get(request=request)
        assert withdrawn.user == people["dave"] and withdrawn.withdrawn_at is not None
    assert Callback.objects.filter(status=CallbackStatus.SENDING).count() == 2
    assert all(send.attempts == 1 for send in sends)


@pytest.mark.django_db
def test_each_requests_assignments_are_its_own_in_a_batch_a_name_on_one_covers_no_other(people):
    # Dave is named on "Named" and decides it; he decides "Group only" through the group, then
    # leaves the group. In one batch (one read of every request's assignments), his name on the
    # first must not lend him the second.
    named = ingest_body(title="Named", approvers={"users": ["dave@example.com"], "groups": ["finance-approvers"]})
    group_only = ingest_body(title="Group only")
    named_callback = approve(named, people["dave"])
    approve(group_only, people["dave"])
    leaves_the_group(people["dave"])
    ids = list(Callback.objects.order_by("pk").values_list("pk", flat=True))

    sends = services.callbacks_claim_batch(callback_ids=ids, limit=50)

    assert [send.callback_id for send in sends] == [named_callback.pk]
    group_only.refresh_from_db()
    assert group_only.status == RequestStatus.PENDING
    assert not Callback.objects.filter(request=group_only).exists()
    assert AuditEvent.objects.get(request=group_only, action="vote_withdrawn").data["code"] == "not_assignee"
    named.refresh_from_db()
    assert named.status == RequestStatus.APPROVED


@pytest.mark.django_db
def test_a_self_assigned_vote_and_a_may_have_been_delivered_refusal_in_one_batch_each_get_their_own_outcome(people):
    # A vote through an assignment its voter made (written directly: the decision refuses it today).
    mine = ingest_body(title="Root's own")
    services.approval_reassign(
        request_id=mine.pk, actor=people["root"], users=["root@example.com"], reason="mine", mode="add"
    )
    Vote.objects.create(request=mine, user=people["root"], approve=True, group="user:root@example.com")
    ApprovalRequest.objects.filter(pk=mine.pk).update(status=RequestStatus.APPROVED)
    Callback.objects.create(request=mine, kind=Callback.Kind.SUCCESS, payload={"output": {}})
    # An earlier attempt that may have reached AWS, whose voter left since: fails, never reopens.
    sent = ingest_body(title="Maybe sent")
    callback = approve(sent, people["carol"])
    Callback.objects.filter(pk=callback.pk).update(
        status=CallbackStatus.RETRYING, attempts=1, error_code="ReadTimeoutError", next_attempt_at=timezone.now()
    )
    leaves_the_group(people["carol"])
    fine = approve(ingest_body(title="Fine"), people["alice"])

    sends = services.callbacks_claim_batch(limit=50)

    assert [send.callback_id for send in sends] == [fine.pk]
    mine.refresh_from_db()
    assert mine.status == RequestStatus.PENDING
    assert AuditEvent.objects.get(request=mine, action="vote_withdrawn").data["code"] == "self_assigned"
    callback.refresh_from_db()
    sent.refresh_from_db()
    assert callback.status == CallbackStatus.FAILED and callback.error_code == "identity_recheck_failed"
    assert sent.status == RequestStatus.APPROVED


# ---------------------------------------------------------------------------
# Exactly once: concurrent claimers
# ---------------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_delivering_batches_at_once_never_send_a_callback_twice(aws, demo_state_machine, settings):
    settings.CALLBACK_BATCH_SIZE = 4
    alice = make_user("alice", "finance-approvers")
    executions = start_executions(aws, demo_state_machine, 16)
    for _, request in executions:
        approve(request, alice)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker():
        try:
            start.wait()
            while Callback.objects.filter(status=CallbackStatus.PENDING).exists():
                deliver_due_callbacks()
        except BaseException as error:  # noqa: BLE001 - reported by the test thread below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert list(Callback.objects.values_list("status", "attempts").distinct()) == [(CallbackStatus.DELIVERED, 1)]
    for arn, request in executions:
        assert wait_for_execution_end(arn)["status"] == "SUCCEEDED"
        # One SendTaskSuccess per token: a second one would show as a failed callback (moto
        # answers InvalidToken on a closed task) or as a second closure in the history.
        assert task_closures(arn) == ["TaskSucceeded"]
        assert AuditEvent.objects.filter(request=request, action="callback_delivered").count() == 1


@pytest.mark.django_db
def test_a_callback_another_worker_is_sending_is_not_taken_into_a_batch_but_a_lost_one_is(people, settings):
    settings.CALLBACK_STALE_SECONDS = 120
    busy = approve(ingest_body(title="Busy"), people["alice"])
    lost = approve(ingest_body(title="Lost"), people["alice"])
    delivered = approve(ingest_body(title="Done"), people["alice"])
    later = approve(ingest_body(title="Retry later"), people["alice"])
    now = timezone.now()
    Callback.objects.filter(pk=busy.pk).update(status=CallbackStatus.SENDING, attempts=1)
    Callback.objects.filter(pk=lost.pk).update(
        status=CallbackStatus.SENDING, attempts=1, updated_at=now - timedelta(seconds=600)
    )
    Callback.objects.filter(pk=delivered.pk).update(status=CallbackStatus.DELIVERED, attempts=1)
    Callback.objects.filter(pk=later.pk).update(
        status=CallbackStatus.RETRYING, attempts=1, next_attempt_at=now + timedelta(minutes=5)
    )

    sends = services.callbacks_claim_batch(limit=50)

    assert [send.callback_id for send in sends] == [lost.pk]
    assert sends[0].maybe_delivered and sends[0].attempts == 2
    assert services.callbacks_claim_batch(callback_ids=[busy.pk, delivered.pk], limit=50) == []


# ---------------------------------------------------------------------------
# Recording results in bulk: delivered, retrying, failed
# ---------------------------------------------------------------------------
class SelectiveStepFunctions:
    """A stand-in Step Functions client: the tokens in `faults` raise their error, others succeed."""

    def __init__(self, faults: dict[str, Exception]):
        self.faults = faults
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def send_task_success(self, **kwargs):
        with self.lock:
            self.calls.append(kwargs["taskToken"])
        if kwargs["taskToken"] in self.faults:
            raise self.faults[kwargs["taskToken"]]
        return {}

    send_task_failure = send_task_success


@pytest.mark.django_db
@pytest.mark.parametrize("threads", [1, 4])
def test_a_batch_records_delivered_retrying_and_used_up_callbacks_each_as_a_single_delivery_would(
    people, settings, logs_at_info, threads
):
    settings.CALLBACK_MAX_ATTEMPTS = 2
    settings.CALLBACK_SEND_THREADS = threads
    requests = {name: ingest_body(title=name, taskToken=f"{LONG_TOKEN[:-8]}{n:08d}") for n, name in enumerate("abcde")}
    callbacks = {name: approve(request, people["alice"]) for name, request in requests.items()}
    Callback.objects.filter(pk=callbacks["e"].pk).update(attempts=1)  # its last attempt
    token = {name: tokens.decrypt_token(request.token_ciphertext) for name, request in requests.items()}
    client = SelectiveStepFunctions(
        {
            token["b"]: throttling(token["b"]),
            token["c"]: service_unavailable(token["c"]),
            token["e"]: service_unavailable(token["e"]),
        }
    )

    # mock: the moto server cannot throttle or answer 5xx on demand; apply_async is captured
    # because no Celery worker consumes in this test (we check the retries were scheduled).
    with (
        mock.patch("approvals.integrations.aws._sfn", return_value=client),
        mock.patch.object(tasks.deliver_callback, "apply_async") as scheduled,
    ):
        counts = deliver_due_callbacks()

    assert counts == {"delivered": 2, "retrying": 2, "failed": 1}
    assert sorted(client.calls) == sorted(token.values())
    status = {name: Callback.objects.get(pk=callback.pk) for name, callback in callbacks.items()}
    assert {name for name, row in status.items() if row.status == CallbackStatus.DELIVERED} == {"a", "d"}
    assert status["b"].status == status["c"].status == CallbackStatus.RETRYING
    assert status["b"].error_code == "ThrottlingException" and not status["b"].maybe_delivered
    assert status["c"].error_code == "ServiceUnavailableException" and status["c"].maybe_delivered
    assert status["b"].next_attempt_at and status["c"].next_attempt_at
    assert sorted(call.args[0][0] for call in scheduled.call_args_list) == sorted(
        [callbacks["b"].pk, callbacks["c"].pk]
    )
    assert all(call.kwargs["countdown"] > 0 for call in scheduled.call_args_list)
    assert status["e"].status == CallbackStatus.FAILED and "gave up after 2 attempts" in status["e"].last_error
    assert status["e"].resolution == "uncertain"
    assert AuditEvent.objects.filter(action="callback_delivered").count() == 2
    assert AuditEvent.objects.filter(action="callback_failed", request=requests["e"]).count() == 1
    for value in token.values():
        assert_token_nowhere(value, logs_at_info)


@pytest.mark.django_db
def test_a_closed_task_and_an_oversized_output_fail_cleanly_while_the_rest_of_the_batch_is_delivered(
    aws, demo_state_machine, people, logs_at_info
):
    ((arn, good),) = start_executions(aws, demo_state_machine, 1)
    good_callback = approve(good, people["alice"])
    # A token Step Functions does not know (no execution behind it): refused, InvalidToken.
    closed = ingest_body(title="Closed", taskToken=LONG_TOKEN)
    closed_callback = approve(closed, people["alice"])
    big = ingest_body(title="Too big")
    big_callback = approve(big, people["alice"])
    Callback.objects.filter(pk=big_callback.pk).update(payload={"output": {"blob": "x" * 300_000}})

    assert deliver_due_callbacks() == {"delivered": 1, "failed": 1}

    good_callback.refresh_from_db()
    assert good_callback.status == CallbackStatus.DELIVERED
    assert wait_for_execution_end(arn)["status"] == "SUCCEEDED"
    closed_callback.refresh_from_db()
    assert closed_callback.status == CallbackStatus.FAILED and closed_callback.resolution == "closed"
    assert closed_callback.error_code in {"InvalidToken", "TaskTimedOut", "TaskDoesNotExist"}
    closed.refresh_from_db()
    assert closed.status == RequestStatus.EXPIRED  # closed by Step Functions
    assert AuditEvent.objects.filter(request=closed, action="closed_by_step_functions").count() == 1
    big_callback.refresh_from_db()
    assert big_callback.status == CallbackStatus.FAILED and big_callback.error_code == "over_limit"
    assert big_callback.attempts == 0  # refused before any call
    for request in (good, closed, big):
        assert_token_nowhere(tokens.decrypt_token(request.token_ciphertext), logs_at_info)


# ---------------------------------------------------------------------------
# Statements per batch
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_statements_of_a_batch_do_not_grow_with_its_size_the_outcome_mails_included(
    aws, demo_state_machine, settings
):
    settings.CALLBACK_BATCH_SIZE = 60  # neither batch is full: a full one would go on to claim the next
    settings.CALLBACK_SEND_THREADS = 1
    voters = [make_user(f"voter{n}", "finance-approvers") for n in range(5)]
    executions = start_executions(aws, demo_state_machine, 60)
    callbacks = [approve(request, voters[n % 5]) for n, (_, request) in enumerate(executions)]

    def delivered_batch(ids: list[int]) -> list[str]:
        # The other callbacks wait as "sending" elsewhere, so the batch takes exactly `ids`.
        others = Callback.objects.exclude(pk__in=ids).filter(status=CallbackStatus.PENDING)
        parked = list(others.values_list("pk", flat=True))
        others.update(status=CallbackStatus.SENDING)
        with CaptureQueriesContext(connection) as queries:
            counts = deliver_due_callbacks(ids[:1])
        assert counts == {"delivered": len(ids)}
        Callback.objects.filter(pk__in=parked).update(status=CallbackStatus.PENDING)
        return [query["sql"] for query in queries.captured_queries]

    small = delivered_batch([c.pk for c in callbacks[:10]])
    large = delivered_batch([c.pk for c in callbacks[10:60]])

    assert len(large) == len(small)
    # Whether anything is due; the claim (lock the given ids, fill with SKIP LOCKED, votes,
    # assignments, the voters' groups, mark sending) and the record (lock, mark delivered, audit
    # events, the requesters' accounts and their outcome mails in one insert), each in its
    # transaction (savepoints in this test).
    assert len(small) <= 18
    # Every requester still hears the outcome, once.
    outcome = Notification.objects.filter(kind=Notification.Kind.OUTCOME, request__in=[c.request for c in callbacks])
    assert outcome.count() == 60
    assert outcome.values("request").distinct().count() == 60


@pytest.mark.django_db
def test_a_task_whose_callback_an_earlier_batch_sent_still_takes_what_is_due_and_else_costs_one_read(people):
    """A burst queues a task per decision; most find their callback sent by an earlier batch.
    Such a task still sends whatever else is due; with nothing due it is one plain read: no
    transaction, no lock."""
    sent = approve(ingest_body(title="Sent"), people["alice"])
    Callback.objects.filter(pk=sent.pk).update(status=CallbackStatus.DELIVERED, attempts=1)
    due = approve(ingest_body(title="Due"), people["carol"])

    # mock: only the Send* calls are replaced (no execution behind these tokens); the claim is real.
    client = SelectiveStepFunctions({})
    with mock.patch("approvals.integrations.aws._sfn", return_value=client):
        assert deliver_callback(sent.pk) == "nothing-to-send"
        due.refresh_from_db()
        assert due.status == CallbackStatus.DELIVERED and len(client.calls) == 1

        with CaptureQueriesContext(connection) as queries:
            assert deliver_callback(sent.pk) == "nothing-to-send"
    statements = [query["sql"] for query in queries.captured_queries]
    assert len(statements) == 1 and statements[0].startswith("SELECT")
    assert "FOR UPDATE" not in statements[0]
    assert len(client.calls) == 1


def claim_reads(queries) -> int:
    """The claim's locked reads of callbacks (the only reads of their payloads; the claimable
    read takes ids, the record its kind and age): SQLite has no SKIP LOCKED to look for."""
    return sum(
        1
        for query in queries.captured_queries
        if query["sql"].startswith("SELECT") and '"approvals_callback"."payload"' in query["sql"].split(" FROM ")[0]
    )


@pytest.mark.django_db
def test_a_decisions_task_with_nothing_else_due_skips_the_read_of_what_else_is_due_and_else_takes_it(people):
    """The common case of a quiet portal: one decision, one task, nothing else due. Its claim
    locks its own callback and is spared the SKIP LOCKED read of what else is due; once another
    callback is due, that read is made and takes it into the batch."""
    alone = approve(ingest_body(title="Alone"), people["alice"])

    # mock: only the Send* calls are replaced (no execution behind these tokens); the claims are real.
    client = SelectiveStepFunctions({})
    with mock.patch("approvals.integrations.aws._sfn", return_value=client):
        with CaptureQueriesContext(connection) as queries:
            assert deliver_callback(alone.pk) == "delivered"
        assert claim_reads(queries) == 1  # its own row, locked

        first = approve(ingest_body(title="First"), people["alice"])
        other = approve(ingest_body(title="Other"), people["carol"])
        with CaptureQueriesContext(connection) as queries:
            assert deliver_callback(first.pk) == "delivered"
        assert claim_reads(queries) == 2  # its own row, then what else is due (SKIP LOCKED on PostgreSQL)
    other.refresh_from_db()
    assert other.status == CallbackStatus.DELIVERED
    assert len(client.calls) == 3


@pytest.mark.django_db
def test_a_batch_never_reads_the_requests_details(aws, demo_state_machine, people, settings):
    """Details fill a message up to its size limit; a batch claims and records its callbacks
    without reading any (no check or record needs them): 50 of them would be megabytes."""
    settings.CALLBACK_SEND_THREADS = 1
    big = {"order": {"id": 7, "lines": [{"item": f"part {n}", "note": "x" * 200} for n in range(100)]}}
    executions = start_executions(aws, demo_state_machine, 3, execution_input={**EXECUTION_INPUT, "details": big})
    arns, requests = [arn for arn, _ in executions], [request for _, request in executions]
    assert all(len(json.dumps(request.details)) > 20_000 for request in requests)
    callbacks = [approve(request, people["alice"]) for request in requests]
    with CaptureQueriesContext(connection) as queries:
        assert deliver_due_callbacks([callbacks[0].pk]) == {"delivered": 3}
    for arn in arns:
        wait_for_execution_end(arn)
        assert task_closures(arn) == ["TaskSucceeded"]
    reads = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SELECT")]
    assert reads
    assert not [sql for sql in reads if '"approvals_approvalrequest"."details"' in sql.split(" FROM ")[0]]


@pytest.mark.django_db
def test_a_row_that_breaks_the_claim_does_not_hold_up_the_callback_a_decision_queued(people, settings):
    # A row no check foresaw (an output missing from a success payload: written directly, no
    # service writes it), older than the decision's callback, so every batch would take it.
    broken_request = ingest_body(title="Broken")
    ApprovalRequest.objects.filter(pk=broken_request.pk).update(status=RequestStatus.CANCELLED)
    broken = Callback.objects.create(request=broken_request, kind=Callback.Kind.SUCCESS, payload={})
    good = approve(ingest_body(title="Good"), people["alice"])

    # mock: only the Send* calls are replaced (no execution behind these tokens); the claim is real.
    client = SelectiveStepFunctions({})
    with mock.patch("approvals.integrations.aws._sfn", return_value=client):
        assert deliver_callback(good.pk) == "delivered"
        with pytest.raises(KeyError):
            deliver_callback(broken.pk)  # its own task still fails on it, visibly
    good.refresh_from_db()
    broken.refresh_from_db()
    assert good.status == CallbackStatus.DELIVERED
    assert broken.status == CallbackStatus.PENDING and broken.attempts == 0
    assert len(client.calls) == 1


def test_a_process_keeps_its_send_threads_from_one_batch_to_the_next():
    """Starting CALLBACK_SEND_THREADS threads for every batch cost more than a Send* call."""
    from approvals.tasks import callbacks as delivery

    def names() -> set[str]:
        return {thread.name for thread in threading.enumerate() if thread.name.startswith("callback-send")}

    pool = delivery._send_pool(4)
    list(pool.map(lambda _: threading.current_thread().name, range(8)))
    before = names()
    assert before and delivery._send_pool(4) is pool
    list(delivery._send_pool(4).map(lambda _: None, range(8)))
    assert names() == before


@pytest.mark.django_db
@pytest.mark.parametrize("threads", [1, 4])
def test_a_task_whose_batch_was_full_goes_on_with_the_next_until_none_is_full_or_its_limit(
    aws, demo_state_machine, people, settings, monkeypatch, threads
):
    """A burst: the first delivery task takes its own callback and what is due, batch after
    batch (the next claimed while the current calls are in flight), each execution answered
    exactly once; at its limit of batches it leaves the rest due for the other tasks."""
    from approvals.tasks import callbacks as delivery

    settings.CALLBACK_BATCH_SIZE = 4
    settings.CALLBACK_SEND_THREADS = threads
    executions = start_executions(aws, demo_state_machine, 14)
    callbacks = [approve(request, people["alice"]) for _, request in executions]

    monkeypatch.setattr(delivery, "MAX_BATCHES_PER_TASK", 3)
    assert deliver_callback(callbacks[0].pk) == "delivered"
    statuses = dict(Callback.objects.values_list("pk", "status"))
    assert sorted(statuses.values()).count(CallbackStatus.DELIVERED) == 12  # 3 batches of 4
    assert sorted(statuses.values()).count(CallbackStatus.PENDING) == 2  # left due for the others

    monkeypatch.setattr(delivery, "MAX_BATCHES_PER_TASK", 20)
    assert deliver_due_callbacks([]) == {"delivered": 2}  # not full: one batch, then it stops
    for arn, _ in executions:
        wait_for_execution_end(arn)
        assert task_closures(arn) == ["TaskSucceeded"]


@pytest.mark.django_db
def test_a_task_whose_own_callback_was_sent_drains_the_backlog_its_own_row_took_room_in_the_batch(people, settings):
    """In a burst most tasks find their own callback sent by an earlier batch; that row still
    takes its room in the claim (locked, then skipped), so their first batch holds one fewer
    to send. It is full all the same: the task goes on until the backlog is drained, instead of
    stopping after one batch and leaving the rest to the tasks behind it."""
    settings.CALLBACK_BATCH_SIZE = 3
    sent = approve(ingest_body(title="Sent"), people["alice"])
    Callback.objects.filter(pk=sent.pk).update(status=CallbackStatus.DELIVERED, attempts=1)
    due = [approve(ingest_body(title=f"Due {n}"), people["carol"]) for n in range(7)]

    # mock: only the Send* calls are replaced (no execution behind these tokens); the claims are real.
    client = SelectiveStepFunctions({})
    with mock.patch("approvals.integrations.aws._sfn", return_value=client):
        assert deliver_callback(sent.pk) == "nothing-to-send"
    statuses = set(Callback.objects.filter(pk__in=[c.pk for c in due]).values_list("status", flat=True))
    assert statuses == {CallbackStatus.DELIVERED}  # 2 + 3 + 2: before, the first 2 and then a stop
    assert len(client.calls) == 7


@pytest.mark.postgres  # reads PostgreSQL's executed plan (EXPLAIN ANALYZE)
def test_a_claim_takes_the_due_callbacks_without_walking_past_the_delivered_ones(people):
    """The outbox keeps every delivered callback; a batch's claim of what is due (oldest first)
    reads the rows not settled yet, not the thousands delivered before them (a burst of
    decisions: hundreds due behind them, as in the bench's callback ceiling)."""
    template = approve(ingest_body(title="Template"), people["alice"])

    def callbacks(count: int, status: str) -> None:
        made = ApprovalRequest.objects.bulk_create(
            [
                ApprovalRequest(
                    token_fingerprint=uuid.uuid4().hex,
                    token_ciphertext=template.request.token_ciphertext,
                    title=f"{status} {n}",
                    state_machine_arn=template.request.state_machine_arn,
                    status=RequestStatus.APPROVED,
                )
                for n in range(count)
            ]
        )
        Callback.objects.bulk_create(
            [Callback(request=request, kind=template.kind, payload=template.payload, status=status) for request in made]
        )

    callbacks(3_000, CallbackStatus.DELIVERED)  # written directly: their history does not matter here
    callbacks(400, CallbackStatus.PENDING)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_callback")

    with CaptureQueriesContext(connection) as queries:
        services.callbacks_claim_batch(callback_ids=[], limit=50)
    (claim,) = [query["sql"] for query in queries.captured_queries if "SKIP LOCKED" in query["sql"]]

    scans = [scan for scan in executed_scans(claim) if scan.get("Relation Name") == "approvals_callback"]
    assert scans, claim
    read = sum(scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) for scan in scans)
    assert read <= 100, scans

    # A task whose callback was sent already, with nothing due: its one read (is anything due?)
    # finds that out without walking the delivered rows either.
    Callback.objects.filter(status=CallbackStatus.PENDING).update(status=CallbackStatus.DELIVERED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_callback")
    with CaptureQueriesContext(connection) as queries:
        assert services.callbacks_claim_batch(callback_ids=[template.pk], limit=50) == []
    (precheck,) = [query["sql"] for query in queries.captured_queries]
    scans = [scan for scan in executed_scans(precheck) if scan.get("Relation Name") == "approvals_callback"]
    assert scans, precheck
    read = sum(scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) for scan in scans)
    assert read <= 100, scans


# ---------------------------------------------------------------------------
# The lease ends while the batch still waits for a send thread
# ---------------------------------------------------------------------------
class HeldStepFunctions:
    """A stand-in Step Functions client (mock: the moto server cannot be made slow on demand).
    The calls of the first worker's batch hold until its lease has run out and a second worker
    has claimed and sent the same rows; every call is counted by token."""

    def __init__(self, first_token: str, leased: list, second_worker):
        self.first_token, self.leased, self.second_worker = first_token, leased, second_worker
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.second_started, self.second_done = threading.Event(), threading.Event()

    def send_task_success(self, **kwargs):
        with self.lock:
            self.calls.append(kwargs["taskToken"])
        if self.second_started.is_set():
            return {}  # the second worker's own calls, and any after it
        if kwargs["taskToken"] == self.first_token:
            lease_ends = self.leased[0] + timedelta(seconds=1)
            while timezone.now() <= lease_ends:
                threading.Event().wait(0.01)
            self.second_started.set()
            try:
                self.second_worker()
            finally:
                connection.close()
                self.second_done.set()
        else:
            self.second_done.wait(timeout=30)
        return {}


@pytest.mark.django_db(transaction=True)
def test_a_callback_whose_lease_ran_out_before_its_send_began_is_not_sent_again_by_the_worker_that_lost_it(
    settings,
):
    settings.CALLBACK_STALE_SECONDS = 1
    settings.CALLBACK_SEND_THREADS = 2  # three rows, two threads: the third waits for a thread
    team = finance_team()
    requests = [ingest_body(title=f"Order {n}") for n in range(3)]
    with mock.patch("approvals.services.callbacks.enqueue_on_commit"):  # the batch below is the only worker
        callbacks = [approve(request, team["alice"]) for request in requests]
    token_of = {c.pk: tokens.decrypt_token(c.request.token_ciphertext) for c in callbacks}
    leased: list = []
    claim = services.callbacks_claim_batch

    def first_claim(**kwargs):
        sends = claim(**kwargs)
        leased.append(timezone.now())
        return sends

    def second_worker():  # another worker's claim and sends, once the first one's lease ran out
        sends = claim(limit=50)
        assert {send.callback_id for send in sends} == set(token_of)
        tasks.callbacks._record(sends, [tasks.callbacks._send(send) for send in sends])

    standin = HeldStepFunctions(token_of[callbacks[0].pk], leased, second_worker)
    with (
        mock.patch.object(gateway, "_sfn", return_value=standin),
        mock.patch.object(services, "callbacks_claim_batch", side_effect=first_claim),
        mock.patch.object(tasks.deliver_callback, "apply_async"),
    ):
        tasks.callbacks._deliver_batch([callbacks[0].pk, callbacks[1].pk, callbacks[2].pk])

    waited = token_of[callbacks[2].pk]
    assert standin.calls.count(waited) == 1, "the row the second worker took is sent by it alone"
    assert set(Callback.objects.values_list("status", flat=True)) == {CallbackStatus.DELIVERED}
    for request in requests:
        assert AuditEvent.objects.filter(request=request, action="callback_delivered").count() == 1
