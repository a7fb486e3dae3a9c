"""Batch ingest: a received batch is stored in one transaction with bulk inserts, and every
per-message guarantee of the one-by-one path still holds (docs/reliability.md, "Ingest").

Real parts: the moto server is SQS, PostgreSQL (or SQLite) the database. `unittest.mock` only
where a fault must strike at one exact statement, which a real database cannot do on demand;
each such test says so. Consumer passes use `django_db(transaction=True)` (see test_ingest.py).
"""

import json
import logging
import uuid
from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from approvals import services, tokens
from approvals.integrations import aws as gateway
from approvals.integrations.aws import QueueMessage
from approvals.models import ApprovalRequest, ApproverTrust, Assignment, AuditEvent, IngestError, User
from approvals.services import ingest
from tests.support import wait_for
from tests.test_ingest import (
    LONG_TOKEN,
    UNINDEXABLE_EXECUTION_ARN,
    assert_token_absent,
    consume,
    messages_on,
    new_token,
    rich_body,
)

GUARDED_MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:Guarded"
GUARDED_RUN = "arn:aws:states:us-east-1:123456789012:execution:Guarded:run-1"
FALLBACK_WARNING = "could not be stored at once"
INGESTED_LOG = "ingested approval request"


def body(token: str, title: str, **extra) -> str:
    return rich_body(token, title=title, **extra)


def ingested_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith(INGESTED_LOG)]


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_ten_with_every_kind_of_trouble_stores_each_good_message_once_and_deletes_all_ten(aws, caplog):
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    ApproverTrust.objects.create(
        name="guarded: only alice",
        mode=ApproverTrust.Mode.ALLOW_LIST,
        state_machine_arn=GUARDED_MACHINE,
        allowed_users=["alice@example.com"],
    )
    stored_token = new_token()
    gateway.send_message(queue_url=queue_url, body=body(stored_token, "Already stored"))
    assert consume(queue_url) == 1
    stored = ApprovalRequest.objects.get()

    copied_token, refused_token, bad_token = LONG_TOKEN, new_token(), new_token()
    good = {new_token(): f"Good {index}" for index in range(5)}
    bodies = [
        body(next(iter(good)), "Good 0"),
        json.dumps({"taskToken": bad_token, "title": ["not", "a", "string"]}),  # the contract refuses it
        body(stored_token, "Already stored, again"),
        body(copied_token, "Sent twice"),
        *(body(token, title) for token, title in list(good.items())[1:3]),
        body(refused_token, "Outside the allow-list", stateMachine=GUARDED_MACHINE, execution=GUARDED_RUN),
        body(copied_token, "Sent twice"),
        *(body(token, title) for token, title in list(good.items())[3:]),
    ]
    assert len(bodies) == 10
    ids = [gateway.send_message(queue_url=queue_url, body=text) for text in bodies]

    assert consume(queue_url) == 10  # one batch

    assert FALLBACK_WARNING not in caplog.text  # stored as a batch, not one by one
    titles = sorted(ApprovalRequest.objects.values_list("title", flat=True))
    assert titles == sorted(["Already stored", "Sent twice", *good.values()])
    assert ApprovalRequest.objects.get(pk=stored.pk).sqs_message_id == stored.sqs_message_id  # untouched
    twice = ApprovalRequest.objects.get(title="Sent twice")
    assert twice.sqs_message_id == ids[3]  # the first copy made it
    assert tokens.decrypt_token(twice.token_ciphertext) == copied_token
    for token, title in good.items():
        assert tokens.decrypt_token(ApprovalRequest.objects.get(title=title).token_ciphertext) == token
    # Each new request has its assignments and one audit event; nothing half-stored.
    assert AuditEvent.objects.filter(action="ingested").count() == 7
    assert set(Assignment.objects.values_list("request__title", flat=True)) == set(titles)
    assert Assignment.objects.filter(request=twice).count() == 3  # two users and a group, once

    errors = {error.sqs_message_id: error for error in IngestError.objects.all()}
    assert set(errors) == {ids[1], ids[6]}
    assert errors[ids[1]].code == "wrong_type"
    assert errors[ids[6]].code == "approver_not_allowed"
    for error in errors.values():
        assert error.receive_count == 1 and error.message_ciphertext
    assert tokens.decrypt_token(errors[ids[6]].message_ciphertext) == bodies[6]
    assert_token_absent(refused_token, errors[ids[6]].reason, errors[ids[6]].body_redacted)
    assert_token_absent(bad_token, errors[ids[1]].reason, errors[ids[1]].body_redacted)

    assert messages_on(queue_url) == 0  # all ten deleted: requests or errors that keep them
    # Logged once per new request, after the commit; never a token.
    assert len(ingested_lines(caplog)) == 1 + 6
    for token in (stored_token, copied_token, refused_token, bad_token, *good):
        assert_token_absent(token, caplog.text)

    # The batch again (a redelivery): nothing new, no second error row.
    for text in bodies:
        gateway.send_message(queue_url=queue_url, body=text)
    assert consume(queue_url) == 10
    assert ApprovalRequest.objects.count() == 7
    assert IngestError.objects.count() == 4  # each redelivery has its own message id


@pytest.mark.postgres  # the refusal is PostgreSQL's btree row limit: a real fault, no mock
@pytest.mark.django_db(transaction=True)
def test_a_value_the_database_refuses_in_the_bulk_insert_falls_back_to_one_by_one_and_loses_nothing(aws, caplog):
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    good = {new_token(): f"Good {index}" for index in range(8)}
    bodies = [body(token, title) for token, title in good.items()]
    bodies.insert(4, body(LONG_TOKEN, "Refused by the database", execution=UNINDEXABLE_EXECUTION_ARN))
    bodies.insert(2, '{"taskToken": "' + new_token() + '", "details": {"amount": 1e400}}')
    ids = [gateway.send_message(queue_url=queue_url, body=text) for text in bodies]

    assert consume(queue_url) == 10

    assert FALLBACK_WARNING in caplog.text  # the batch failed as a whole ...
    assert sorted(ApprovalRequest.objects.values_list("title", flat=True)) == sorted(good.values())  # ... not the good
    codes = {error.sqs_message_id: error.code for error in IngestError.objects.all()}
    assert codes == {ids[2]: "bad_number", ids[5]: "store_failed"}
    assert IngestError.objects.get(code="bad_number").receive_count == 1  # the rolled-back batch left no trace
    assert AuditEvent.objects.filter(action="ingested").count() == 8
    assert AuditEvent.objects.filter(action="ingest_error").count() == 2
    assert messages_on(queue_url) == 0
    # "ingested" was logged for what was committed only: the rolled-back batch logged nothing.
    assert len(ingested_lines(caplog)) == 8
    assert_token_absent(LONG_TOKEN, caplog.text)


@pytest.mark.django_db(transaction=True)
def test_a_deadlock_in_the_middle_of_the_bulk_insert_falls_back_to_one_by_one_and_loses_nothing(aws, caplog):
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    existing_token = new_token()
    gateway.send_message(queue_url=queue_url, body=body(existing_token, "Before"))
    assert consume(queue_url) == 1
    tokens_ = [new_token() for _ in range(6)]
    bodies = [body(token, f"Batch {index}") for index, token in enumerate(tokens_)]
    bodies += [body(tokens_[0], "Batch 0"), body(existing_token, "Before"), "not json"]
    for text in bodies:
        gateway.send_message(queue_url=queue_url, body=text)

    real = Assignment.objects.bulk_create
    calls = []

    def deadlocked_once(objs, *args, **kwargs):
        calls.append(len(objs))
        if len(calls) == 1:
            raise OperationalError("deadlock detected")
        return real(objs, *args, **kwargs)

    # mock: PostgreSQL deadlocks only against a concurrent transaction's locks, never at one
    # exact statement on demand; this makes the batch's assignment insert (its middle write,
    # after the requests' bulk insert) fail as a deadlock would.
    with mock.patch.object(Assignment.objects, "bulk_create", deadlocked_once):
        assert consume(queue_url) == 9

    assert calls[0] == 6 * 3  # the batch's one insert of all assignments struck
    assert FALLBACK_WARNING in caplog.text
    assert ApprovalRequest.objects.count() == 7
    assert sorted(ApprovalRequest.objects.values_list("title", flat=True)) == sorted(
        ["Before", *(f"Batch {index}" for index in range(6))]
    )
    assert Assignment.objects.count() == 7 * 3
    assert AuditEvent.objects.filter(action="ingested").count() == 7
    error = IngestError.objects.get()
    assert (error.code, error.receive_count) == ("not_json", 1)  # the rolled-back batch's row left no trace
    assert messages_on(queue_url) == 0
    assert len(ingested_lines(caplog)) == 7  # once each, after its commit


@pytest.mark.django_db(transaction=True)
def test_a_database_unavailable_for_the_whole_batch_raises_and_deletes_nothing(aws):
    queue_url = aws.APPROVAL_QUEUE_URL
    for index in range(4):
        gateway.send_message(queue_url=queue_url, body=body(new_token(), f"Request {index}"))

    def connection_lost(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    # mock: PostgreSQL cannot be made to drop the connection at one exact statement on demand.
    with (
        mock.patch("approvals.services.ingest._ingested_event", connection_lost),
        pytest.raises(OperationalError),
    ):
        consume(queue_url, visibility_timeout=30)

    assert ApprovalRequest.objects.count() == 0
    assert IngestError.objects.count() == 0  # not the messages' fault
    assert messages_on(queue_url) == 4  # all still there, for the next receive


# ---------------------------------------------------------------------------
# Round trips: O(1) per batch
# ---------------------------------------------------------------------------
def received(count: int, *, machine: str, first: int = 0) -> list[QueueMessage]:
    messages = []
    for index in range(first, first + count):
        run = machine.replace(":stateMachine:", ":execution:") + f":run-{index}"
        data = json.loads(rich_body(new_token(), title=f"Counted {index}", stateMachine=machine, execution=run))
        data["requester"] = f"requester{index}@example.com"
        if index % 2:
            data.pop("approvers")  # routed by the admins' rules, else the default group
        messages.append(
            QueueMessage(
                message_id=str(uuid.uuid4()), receipt_handle=str(uuid.uuid4()), body=json.dumps(data), receive_count=1
            )
        )
    return messages


def statements_to_store(messages: list[QueueMessage]) -> int:
    """The ingest's own statements for one batch, without notification planning (which #23.2
    moves after the commit, in batches): that is counted apart, by the real planning code."""
    planning: list[int] = []
    real_notify = ingest._notify_new

    def counted_notify(requests):
        with CaptureQueriesContext(connection) as inner:
            real_notify(requests)
        planning.append(len(inner.captured_queries))

    # mock: not a fault; a wrapper that runs the real planning and counts its statements apart.
    with mock.patch.object(ingest, "_notify_new", counted_notify), CaptureQueriesContext(connection) as total:
        outcomes = services.received_batch_ingest(messages=messages, max_bytes=256 * 1024)
    assert all(outcome.created for outcome in outcomes)
    assert planning, "notifications were planned"
    return len(total.captured_queries) - sum(planning)


@pytest.mark.django_db
def test_a_batch_of_ten_new_messages_takes_as_many_statements_as_a_batch_of_two(settings):
    User.objects.create(username="r1", email="Requester1@Example.com")  # an account for one requester
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:Counted"
    two = statements_to_store(received(2, machine=machine))
    ten = statements_to_store(received(10, machine=machine, first=2))
    print(f"statements: 2 new -> {two}, 10 new -> {ten}")
    assert ten == two
    # Savepoint, duplicates, trust setting, requesters, routing rule, policy, three bulk inserts,
    # release: a dozen, where one message at a time took ~17 each.
    assert ten <= 12
    assert ApprovalRequest.objects.count() == 12
    assert ApprovalRequest.objects.get(requester_email="requester1@example.com").requester_user.username == "r1"
    routed = ApprovalRequest.objects.get(title="Counted 1")
    assert list(routed.assignments.values_list("kind", "value")) == [("group", settings.APPROVAL_DEFAULT_GROUP)]


@pytest.mark.django_db
def test_a_batch_asks_to_keep_hidden_what_is_not_stored_yet_before_each_step_also_when_it_falls_back():
    messages = received(3, machine="arn:aws:states:us-east-1:123456789012:stateMachine:Slow", first=100)
    asked: list[list[str]] = []
    committed: list[QueueMessage] = []
    real = Assignment.objects.bulk_create

    def deadlocked_once(objs, *args, **kwargs):
        if ["(deadlock)"] not in asked:
            asked.append(["(deadlock)"])
            raise OperationalError("deadlock detected")
        return real(objs, *args, **kwargs)

    def keep_hidden(remaining):
        assert not {message.message_id for message in remaining} & {message.message_id for message in committed}
        asked.append([message.message_id for message in remaining])

    # mock: as in the deadlock test above, a deadlock at one exact statement on demand.
    with mock.patch.object(Assignment.objects, "bulk_create", deadlocked_once):
        outcomes = services.received_batch_ingest(
            messages=messages, max_bytes=256 * 1024, committed=committed, keep_hidden=keep_hidden
        )

    ids = [message.message_id for message in messages]
    # Before the batch: all three; it failed; then before each message: what is still to store.
    assert asked == [ids, ["(deadlock)"], ids, ids[1:], ids[2:]]
    assert committed == messages
    assert [outcome.message_id for outcome in outcomes] == ids
    assert ApprovalRequest.objects.filter(title__startswith="Counted 10").count() == 3


# ---------------------------------------------------------------------------
# Two consumer threads per worker (APPROVAL_CONSUMER_THREADS)
# ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_consumer_threads_share_the_queue_and_store_every_message_once(aws, settings):
    """The worker's consumer step with two threads, in this process, on the moto server's
    queue: while one stores its batch the other receives. Every message ends as exactly one
    request, the queue is left empty, and stopping the step stops both threads."""
    import threading

    from worker.consumer import QueueConsumerStep

    settings.APPROVAL_CONSUMER_THREADS = 2
    settings.APPROVAL_CONSUMER_WAIT_SECONDS = 1
    queue_url = aws.APPROVAL_QUEUE_URL
    tokens_sent = [new_token() for _ in range(60)]
    for n, token in enumerate(tokens_sent):
        gateway.send_message(queue_url=queue_url, body=body(token, f"Order {n}"))

    step = QueueConsumerStep(None)
    step.start(None)
    try:
        names = sorted(thread.name for thread in threading.enumerate() if thread.name.startswith("approval-queue"))
        assert names == ["approval-queue-consumer-1", "approval-queue-consumer-2"]
        wait_for(lambda: ApprovalRequest.objects.count() >= len(tokens_sent), timeout=60)
        wait_for(lambda: messages_on(queue_url) == 0, timeout=30)
    finally:
        step.stop(None)
    assert not any(consumer.is_alive() for consumer in step.consumers)

    assert ApprovalRequest.objects.count() == len(tokens_sent)
    fingerprints = set(ApprovalRequest.objects.values_list("token_fingerprint", flat=True))
    assert fingerprints == {tokens.fingerprint_token(token) for token in tokens_sent}
