"""Ingest: queue messages become approval requests, bad messages become IngestError rows.

Real parts throughout: the moto server is SQS and Step Functions, PostgreSQL is the database.
Every message goes through the queue and `worker.consumer.consume_once`, as in production.

These tests use `django_db(transaction=True)`: consume_once starts with Django's
`close_old_connections()` (right for a long-lived consumer thread), which closes a connection
that is inside an atomic block, i.e. the one a plain `db` test runs in.
"""

import base64
import json
import logging
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from unittest import mock

import boto3
import pytest
from django.conf import settings as django_settings
from django.db import OperationalError, transaction
from django.utils import timezone

from approvals import services, tokens
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, Assignment, AuditEvent, IngestError, User
from tests.support import wait_for
from worker.consumer import consume_once

# A real-format task token: long, opaque base64 with '+', '/' and '=' padding (AWS issues up
# to 2,048 characters; the moto server only issues 36-character UUIDs).
LONG_TOKEN = "AQCEAAAAKgAAAA" + base64.b64encode(bytes(range(256)) * 4 + b"\xfb").decode()
assert len(LONG_TOKEN) > 1200 and {"+", "/", "="} <= set(LONG_TOKEN)


def new_token() -> str:
    """A token as the moto server issues them (a UUID), unique per call."""
    return str(uuid.uuid4())


def consume(queue_url: str, *, visibility_timeout: int = 0, max_bytes: int = 256 * 1024) -> int:
    """One consumer pass with no long poll. Visibility 0 makes a message left on the queue visible again at once."""
    return consume_once(queue_url=queue_url, wait_seconds=0, visibility_timeout=visibility_timeout, max_bytes=max_bytes)


def sqs_client():
    """A boto3 client of our own, built from settings, to look at the queue independently of the code under test."""
    return boto3.client(
        "sqs",
        endpoint_url=django_settings.AWS_ENDPOINT_URL,
        region_name=django_settings.AWS_REGION,
        aws_access_key_id=django_settings.AWS_ACCESS_KEY_ID,
        aws_secret_access_key=django_settings.AWS_SECRET_ACCESS_KEY,
    )


def messages_on(queue_url: str) -> int:
    """Visible plus in-flight messages: 0 means every message was deleted (or moved)."""
    attributes = sqs_client().get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def assert_token_absent(token: str, *texts: str) -> None:
    for text in texts:
        assert token not in text
        # The JSON-escaped spelling ('/' may be written '\/') must not slip through either.
        assert json.dumps(token)[1:-1] not in text


def rich_body(token: str, **overrides) -> str:
    data = {
        "taskToken": token,
        "title": "  Approve order 1234\n(EUR 5,300)  ",
        "approvers": {"users": ["Alice@Example.com", " carol@example.COM "], "groups": ["finance-approvers"]},
        "requester": "Bob@Example.com",
        "details": {"order": {"id": 1234, "total": "5300.00"}, "supplier": "Müller & Söhne <GmbH>"},
        "heartbeatSeconds": 3600,
        "execution": "arn:aws:states:us-east-1:123456789012:execution:OrderApproval:run-1",
        "stateMachine": "arn:aws:states:us-east-1:123456789012:stateMachine:OrderApproval",
        "state": "WaitForApproval",
    }
    data.update(overrides)
    return json.dumps(data)


# ---------------------------------------------------------------------------
# Good messages
# ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_rich_message_becomes_one_request_with_its_assignments_and_is_deleted_from_the_queue(aws, caplog):
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    token = new_token()
    message_id = gateway.send_message(queue_url=queue_url, body=rich_body(token))

    assert consume(queue_url) == 1

    request = ApprovalRequest.objects.get()
    assert request.title == "Approve order 1234 (EUR 5,300)"
    assert request.details == {"order": {"id": 1234, "total": "5300.00"}, "supplier": "Müller & Söhne <GmbH>"}
    assert request.requester_email == "bob@example.com"
    assert request.status == "pending"
    assert request.heartbeat_seconds == 3600
    assert request.deadline is None
    assert request.execution_arn.endswith(":execution:OrderApproval:run-1")
    assert request.state_machine_arn.endswith(":stateMachine:OrderApproval")
    assert request.state_name == "WaitForApproval"
    assert request.sqs_message_id == message_id
    assert sorted(request.assignments.values_list("kind", "value")) == [
        (Assignment.Kind.GROUP, "finance-approvers"),
        (Assignment.Kind.USER, "alice@example.com"),
        (Assignment.Kind.USER, "carol@example.com"),
    ]

    # The token is stored encrypted and found by its keyed fingerprint.
    assert request.token_ciphertext != token
    assert token not in request.token_ciphertext
    assert tokens.decrypt_token(request.token_ciphertext) == token
    assert request.token_fingerprint == tokens.fingerprint_token(token)

    event = AuditEvent.objects.get(request=request)
    assert event.action == "ingested"
    assert event.actor is None and event.actor_label == "system"
    assert event.data["sqs_message_id"] == message_id
    assert event.data["users"] == ["alice@example.com", "carol@example.com"]
    assert event.data["groups"] == ["finance-approvers"]
    assert event.data["routed_to_default_group"] is False

    # Deleted after commit: nothing visible, nothing in flight (visibility 0 would show it again).
    assert gateway.receive_batch(queue_url=queue_url, wait_seconds=0, visibility_timeout=0) == []
    assert messages_on(queue_url) == 0

    assert_token_absent(token, caplog.text, json.dumps(event.data), request.title, json.dumps(request.details))


@pytest.mark.django_db(transaction=True)
def test_a_seed_shaped_message_without_approvers_goes_to_the_default_group_and_a_past_deadline_is_ignored(aws):
    aws.APPROVAL_DEFAULT_GROUP = "portal-admins-for-this-test"
    queue_url = aws.APPROVAL_QUEUE_URL
    entered = (datetime.now(UTC) - timedelta(seconds=5)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    approval_request = {"orderId": "1234", "amount": 5300, "lines": [{"sku": "LAP-1", "qty": 2}]}
    gateway.send_message(
        queue_url=queue_url,
        body=json.dumps({"taskToken": new_token(), "approvalRequest": approval_request, "approvalDeadline": entered}),
    )

    consume(queue_url)

    request = ApprovalRequest.objects.get()
    assert list(request.assignments.values_list("kind", "value")) == [
        (Assignment.Kind.GROUP, "portal-admins-for-this-test")
    ]
    event = AuditEvent.objects.get(request=request, action="ingested")
    assert event.data["routed_to_default_group"] is True
    assert event.data["groups"] == ["portal-admins-for-this-test"]
    # `$$.State.EnteredTime` is already past on arrival: not a deadline.
    assert request.deadline is None
    assert request.details == approval_request
    assert request.title == "Approval requested"
    assert request.requester_email == ""
    assert messages_on(queue_url) == 0


@pytest.mark.django_db(transaction=True)
def test_timeout_seconds_sets_the_deadline_counted_from_when_the_message_was_sent(aws):
    queue_url = aws.APPROVAL_QUEUE_URL
    gateway.send_message(queue_url=queue_url, body=rich_body(new_token(), timeoutSeconds=86400))

    consume(queue_url)

    request = ApprovalRequest.objects.get()
    assert request.timeout_seconds == 86400
    assert request.message_sent_at is not None and request.message_sent_at <= request.received_at
    assert request.deadline == request.message_sent_at + timedelta(seconds=86400)
    assert abs(request.received_at - datetime.now(UTC)) < timedelta(seconds=30)


@pytest.mark.django_db(transaction=True)
def test_a_message_that_waited_in_the_queue_counts_its_deadline_from_its_sqs_sent_timestamp(aws):
    queue_url = aws.APPROVAL_QUEUE_URL
    before = datetime.now(UTC) - timedelta(milliseconds=1)  # SentTimestamp is in whole milliseconds
    # Nobody can receive it for 2 s (DelaySeconds): a backlog in small. Step Functions' timer
    # (TimeoutSeconds, HeartbeatSeconds) started when it sent the message, not when we got it.
    message_id = sqs_client().send_message(
        QueueUrl=queue_url, MessageBody=rich_body(new_token(), timeoutSeconds=3600), DelaySeconds=2
    )["MessageId"]

    wait_for(lambda: consume(queue_url))

    request = ApprovalRequest.objects.get()
    assert request.sqs_message_id == message_id
    # What the moto server gives as SentTimestamp: the send, 2 s or more before the receipt.
    assert before <= request.message_sent_at <= request.received_at - timedelta(seconds=2)
    # The deadline approvers see is Step Functions' own: sent + timeoutSeconds.
    assert request.deadline == request.message_sent_at + timedelta(seconds=3600)


def received(body: str, sent_at: datetime | None) -> gateway.QueueMessage:
    """A message as receive_batch gives it, with the SentTimestamp SQS would have said."""
    return gateway.QueueMessage(
        message_id=str(uuid.uuid4()), receipt_handle=str(uuid.uuid4()), body=body, receive_count=1, sent_at=sent_at
    )


@pytest.mark.django_db
@pytest.mark.parametrize("batch", [True, False], ids=["batch", "one-by-one"])
def test_a_sent_time_ahead_of_our_clock_counts_from_receipt_and_an_absurdly_old_one_is_ignored(batch):
    now = timezone.now()
    messages = [
        received(rich_body(new_token(), title="ahead", timeoutSeconds=600), now + timedelta(minutes=5)),
        received(rich_body(new_token(), title="absurd", timeoutSeconds=600), now - timedelta(days=15)),
        received(rich_body(new_token(), title="unknown", timeoutSeconds=600), None),
        received(rich_body(new_token(), title="waited", timeoutSeconds=600), now - timedelta(days=13)),
    ]

    if batch:
        services.received_batch_ingest(messages=messages, max_bytes=256 * 1024)
    else:  # the path a batch that failed as a whole takes
        services.ingest._one_by_one(messages, max_bytes=256 * 1024, committed=[], keep_hidden=None, source=None)

    requests = {request.title: request for request in ApprovalRequest.objects.all()}
    # SQS's clock ahead of ours: never a send after the receipt.
    assert requests["ahead"].message_sent_at == requests["ahead"].received_at
    # Older than SQS keeps a message (14 days): no real SentTimestamp; from receipt, as before.
    for title in ("absurd", "unknown"):
        assert requests[title].message_sent_at is None
        assert requests[title].deadline == requests[title].received_at + timedelta(seconds=600)
    assert requests["waited"].message_sent_at == now - timedelta(days=13)
    # Its timeout ran out before it arrived: overdue at once, as Step Functions already timed it out.
    assert requests["waited"].deadline == now - timedelta(days=13) + timedelta(seconds=600)


@pytest.mark.django_db(transaction=True)
def test_the_earlier_of_a_future_approval_deadline_and_timeout_seconds_wins(aws):
    queue_url = aws.APPROVAL_QUEUE_URL
    soon = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    later = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    gateway.send_message(
        queue_url=queue_url, body=rich_body(new_token(), approvalDeadline=soon.isoformat(), timeoutSeconds=86400)
    )
    gateway.send_message(
        queue_url=queue_url, body=rich_body(new_token(), approvalDeadline=later.isoformat(), timeoutSeconds=86400)
    )

    consume(queue_url)

    by_deadline = {request.deadline == soon: request for request in ApprovalRequest.objects.all()}
    assert set(by_deadline) == {True, False}
    other = by_deadline[False]
    assert other.deadline == other.message_sent_at + timedelta(seconds=86400)


@pytest.mark.django_db(transaction=True)
def test_the_same_message_delivered_twice_makes_one_request_and_both_copies_are_deleted(aws):
    queue_url = aws.APPROVAL_QUEUE_URL
    body = rich_body(new_token())
    first_id = gateway.send_message(queue_url=queue_url, body=body)
    second_id = gateway.send_message(queue_url=queue_url, body=body)
    assert first_id != second_id

    handled = consume(queue_url)
    handled += consume(queue_url)  # in case the first receive returned only one of them

    assert handled == 2
    request = ApprovalRequest.objects.get()
    assert request.sqs_message_id in {first_id, second_id}
    assert AuditEvent.objects.filter(action="ingested").count() == 1
    assert request.assignments.count() == 3
    assert messages_on(queue_url) == 0


@pytest.mark.django_db(transaction=True)
def test_a_long_real_format_token_is_ingested_and_round_trips_exactly(aws, caplog):
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    gateway.send_message(queue_url=queue_url, body=rich_body(LONG_TOKEN))

    consume(queue_url)

    request = ApprovalRequest.objects.get()
    assert tokens.decrypt_token(request.token_ciphertext) == LONG_TOKEN
    assert request.token_fingerprint == tokens.fingerprint_token(LONG_TOKEN)
    assert ApprovalRequest.objects.filter(token_fingerprint=tokens.fingerprint_token(LONG_TOKEN)).exists()
    assert messages_on(queue_url) == 0
    events = " ".join(json.dumps(event.data) for event in AuditEvent.objects.all())
    assert_token_absent(LONG_TOKEN, caplog.text, events)


# ---------------------------------------------------------------------------
# Bad messages
# ---------------------------------------------------------------------------
BAD_MESSAGES = {
    "not JSON, cut off after the token": (
        lambda token: '{"taskToken": "' + token + '", "title": "Approve order',
        "not_json",
        "not valid JSON",
    ),
    "a JSON array, not an object": (lambda token: json.dumps([token, "approve me"]), "not_object", "JSON object"),
    "no task token": (lambda token: json.dumps({"title": "Approve order 1234"}), "missing_token", "taskToken"),
    "a task token that is a number": (lambda token: json.dumps({"taskToken": 12345}), "wrong_type", "taskToken"),
    "timeoutSeconds as a string": (
        lambda token: json.dumps({"taskToken": token, "timeoutSeconds": "one day"}),
        "wrong_type",
        "timeoutSeconds",
    ),
    "approvers as a list": (
        lambda token: json.dumps({"taskToken": token, "approvers": ["alice@example.com"]}),
        "bad_approvers",
        "approvers",
    ),
    "a requester that is not an email address": (
        lambda token: json.dumps({"taskToken": token, "requester": "bob"}),
        "bad_value",
        "requester",
    ),
    "oversized": (
        lambda token: json.dumps({"taskToken": token, "details": {"notes": "x" * 3000}}),
        "oversized",
        "too large",
    ),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("token", [new_token(), LONG_TOKEN], ids=["uuid-token", "long-token"])
@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_a_bad_message_is_recorded_with_its_token_redacted_kept_encrypted_and_deleted_without_blocking_a_good_one(
    aws, caplog, case, token
):
    caplog.set_level(logging.INFO)
    make_body, code, reason_mentions = BAD_MESSAGES[case]
    queue_url = aws.APPROVAL_QUEUE_URL
    bad_body = make_body(token)
    good_token = new_token()
    bad_id = gateway.send_message(queue_url=queue_url, body=bad_body)
    gateway.send_message(queue_url=queue_url, body=rich_body(good_token))
    # Small enough that the padded message is oversized, large enough for every other body.
    max_bytes = 2500

    assert consume(queue_url, max_bytes=max_bytes) == 2

    # The good message in the same batch was ingested and deleted.
    request = ApprovalRequest.objects.get()
    assert tokens.decrypt_token(request.token_ciphertext) == good_token

    error = IngestError.objects.get()
    assert error.sqs_message_id == bad_id
    assert error.code == code
    assert reason_mentions in error.reason
    assert error.receive_count == 1
    assert error.body_redacted  # admins see what arrived ...
    assert_token_absent(token, error.reason, error.body_redacted, caplog.text)  # ... but never the token
    assert AuditEvent.objects.filter(action="ingest_error", data__sqs_message_id=bad_id).count() == 1

    # Kept with its error (encrypted: it holds the token) for the admin's replay, so it is deleted
    # from the queue at once, like the good one.
    assert messages_on(queue_url) == 0
    assert tokens.decrypt_token(error.message_ciphertext) == bad_body
    assert_token_absent(token, error.message_ciphertext)
    # SQS delivers at least once: the same message again counts on the same row instead of adding one.
    services.received_message_ingest(sqs_message_id=bad_id, body=bad_body, max_bytes=max_bytes)
    error.refresh_from_db()
    assert IngestError.objects.count() == 1
    assert error.receive_count == 2
    assert error.last_seen_at >= error.first_seen_at
    assert ApprovalRequest.objects.count() == 1
    assert AuditEvent.objects.filter(action="ingest_error").count() == 1
    assert_token_absent(token, caplog.text)


@pytest.mark.django_db(transaction=True)
def test_a_bad_message_is_deleted_once_recorded_and_never_reaches_the_dlq(aws):
    queue_url = aws.APPROVAL_QUEUE_URL  # the fixture's queue redrives to "<name>-dlq" after 3 receives
    dlq_url = sqs_client().get_queue_url(QueueName=f"{aws.APPROVAL_QUEUE_NAME}-dlq")["QueueUrl"]
    token = new_token()
    gateway.send_message(queue_url=queue_url, body=json.dumps({"taskToken": token, "timeoutSeconds": -1}))

    assert consume(queue_url, visibility_timeout=1) == 1
    assert IngestError.objects.get().code == "bad_value"
    time.sleep(1.2)  # past the visibility timeout: a message left on the queue would be back
    for _ in range(4):  # more receives than the redrive policy's maxReceiveCount
        assert consume(queue_url) == 0
    assert messages_on(queue_url) == 0
    assert "Messages" not in sqs_client().receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)
    assert IngestError.objects.get().receive_count == 1
    assert ApprovalRequest.objects.count() == 0


# ---------------------------------------------------------------------------
# Real Step Functions executions (moto server)
# ---------------------------------------------------------------------------
EXECUTION_INPUT = {
    "title": "Approve order 1234",
    "approvers": {"users": ["alice@example.com"], "groups": ["finance-approvers"]},
    "requester": "bob@example.com",
    "details": {"order": {"id": 1234, "total": {"amount": "5300.00", "currency": "EUR"}}},
}


@pytest.mark.django_db(transaction=True)
def test_messages_from_real_executions_carry_the_execution_state_machine_and_state(aws, demo_state_machine):
    queue_url = aws.APPROVAL_QUEUE_URL
    executions = {
        gateway.start_execution(
            state_machine_arn=demo_state_machine,
            name=f"ingest-{index}-{uuid.uuid4().hex[:8]}",
            execution_input={**EXECUTION_INPUT, "title": f"Approve order {index}"},
        ): f"Approve order {index}"
        for index in range(3)
    }

    def three_ingested():
        consume(queue_url)
        return ApprovalRequest.objects.count() >= 3

    wait_for(three_ingested)

    requests_ = list(ApprovalRequest.objects.all())
    assert len(requests_) == 3
    assert {request.execution_arn for request in requests_} == set(executions)
    for request in requests_:
        assert request.title == executions[request.execution_arn]
        assert request.state_machine_arn == demo_state_machine
        assert request.state_name == "WaitForApproval"
        assert request.timeout_seconds == 86400
        # Step Functions' timer: from when the execution sent the message.
        assert request.deadline == request.message_sent_at + timedelta(seconds=86400)
        assert request.details == EXECUTION_INPUT["details"]
        assert tokens.decrypt_token(request.token_ciphertext)  # moto issued a token; we kept it
    assert len({request.token_fingerprint for request in requests_}) == 3
    assert messages_on(queue_url) == 0
    for execution_arn in executions:
        assert gateway.describe_execution(execution_arn=execution_arn)["status"] == "RUNNING"


# ---------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_consumers_racing_over_one_queue_ingest_every_request_exactly_once(aws):
    from django.db import connection

    queue_url = aws.APPROVAL_QUEUE_URL
    bodies = [rich_body(new_token(), title=f"Request {index}") for index in range(20)]
    # Six delivered twice, placed so that the first two batches (one per consumer) share them:
    # the two consumers then ingest the same tokens at the same moment.
    for body in bodies[:10] + bodies[:6] + bodies[10:]:
        gateway.send_message(queue_url=queue_url, body=body)

    errors: list[BaseException] = []
    start = threading.Barrier(2)

    handled_by: dict[str, int] = {}

    def consumer():
        name = threading.current_thread().name
        handled_by[name] = 0
        try:
            start.wait(timeout=10)
            empty_passes = 0
            while empty_passes < 2:
                handled = consume_once(queue_url=queue_url, wait_seconds=0, visibility_timeout=30, max_bytes=4096)
                handled_by[name] += handled
                empty_passes = empty_passes + 1 if handled == 0 else 0
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=consumer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert all(count > 0 for count in handled_by.values()), handled_by  # both consumers took part

    assert ApprovalRequest.objects.count() == 20
    assert sorted(ApprovalRequest.objects.values_list("title", flat=True)) == sorted(f"Request {i}" for i in range(20))
    assert AuditEvent.objects.filter(action="ingested").count() == 20
    assert Assignment.objects.count() == 20 * 3
    assert IngestError.objects.count() == 0
    assert messages_on(queue_url) == 0


# A syntactically valid address longer than the 254 characters an EmailField (and RFC 5321) allows.
TOO_LONG_EMAIL = "a" * 64 + "@" + ("b" * 63 + ".") * 3 + "com"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("fields", "code"),
    [({"requester": TOO_LONG_EMAIL}, "bad_value"), ({"approvers": {"users": [TOO_LONG_EMAIL]}}, "bad_approvers")],
    ids=["requester", "approver"],
)
def test_an_email_longer_than_the_database_allows_is_an_ingest_error_not_a_crashed_batch(aws, fields, code):
    # Regression: the contract used to accept it and the INSERT then raised DataError, aborting
    # the whole batch on every receive and leaving no IngestError for admins.
    assert len(TOO_LONG_EMAIL) > 254
    queue_url = aws.APPROVAL_QUEUE_URL
    bad_id = gateway.send_message(queue_url=queue_url, body=json.dumps({"taskToken": new_token(), **fields}))
    gateway.send_message(queue_url=queue_url, body=rich_body(new_token()))

    assert consume(queue_url) == 2

    error = IngestError.objects.get()
    assert (error.sqs_message_id, error.code) == (bad_id, code)
    assert TOO_LONG_EMAIL not in error.reason
    assert ApprovalRequest.objects.count() == 1
    assert messages_on(queue_url) == 0  # the bad one too: kept with its error


# ---------------------------------------------------------------------------
# One message's failure is that message's alone
# ---------------------------------------------------------------------------
def dead_letter_queue_url(aws) -> str:
    return sqs_client().get_queue_url(QueueName=f"{aws.APPROVAL_QUEUE_NAME}-dlq")["QueueUrl"]


def dead_lettered_ids(aws) -> set[str]:
    # Visibility 0: a look that leaves them there for the admin's replay or discard.
    received = sqs_client().receive_message(
        QueueUrl=dead_letter_queue_url(aws), MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    return {message["MessageId"] for message in received.get("Messages", [])}


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_ten_with_an_infinite_number_and_a_thousand_deep_message_stores_the_eight_good_ones(aws, caplog):
    # Before: 1e400 parsed to float("inf"), PostgreSQL's jsonb refused it, and the whole batch
    # failed on every receive until all ten, the eight good ones too, sat in the DLQ with no
    # IngestError an admin could replay.
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    good = {new_token(): f"Good request {index}" for index in range(8)}
    infinite_token, deep_token = new_token(), LONG_TOKEN
    infinite = '{"taskToken": "' + infinite_token + '", "details": {"amount": 1e400}}'
    deep = '{"taskToken": "' + deep_token + '", "details": ' + "[" * 1000 + "]" * 1000 + "}"
    bodies = [rich_body(token, title=title) for token, title in good.items()]
    bodies[3:3] = [infinite]
    bodies[7:7] = [deep]
    ids = [gateway.send_message(queue_url=queue_url, body=body) for body in bodies]
    infinite_id, deep_id = ids[3], ids[7]

    assert consume(queue_url) == 10  # one batch

    assert sorted(ApprovalRequest.objects.values_list("title", flat=True)) == sorted(good.values())
    assert {tokens.decrypt_token(request.token_ciphertext) for request in ApprovalRequest.objects.all()} == set(good)
    errors = {error.sqs_message_id: error for error in IngestError.objects.all()}
    assert set(errors) == {infinite_id, deep_id}
    assert errors[infinite_id].code == "bad_number" and "'details'" in errors[infinite_id].reason
    assert errors[deep_id].code == "too_deep" and "'details'" in errors[deep_id].reason
    for error in errors.values():
        assert error.status == IngestError.Status.OPEN and error.body_redacted
        assert_token_absent(infinite_token, error.reason, error.body_redacted)
        assert_token_absent(deep_token, error.reason, error.body_redacted)
    # All ten were deleted: the two refused ones are kept with their errors (encrypted) for the
    # admin's replay or discard, so nothing is left for the redrive policy to move to the DLQ.
    assert messages_on(queue_url) == 0
    assert tokens.decrypt_token(errors[infinite_id].message_ciphertext) == infinite
    assert tokens.decrypt_token(errors[deep_id].message_ciphertext) == deep
    for _ in range(4):  # more receives than the redrive policy's maxReceiveCount
        assert consume(queue_url) == 0
    assert dead_lettered_ids(aws) == set()
    assert IngestError.objects.count() == 2
    assert ApprovalRequest.objects.count() == 8
    for token in (infinite_token, deep_token):
        assert_token_absent(token, caplog.text)


def cjk_text(length: int, seed: int) -> str:
    """Random CJK ideographs: three UTF-8 bytes each, and incompressible."""
    rng = random.Random(seed)  # noqa: S311 - test data
    return "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(length))


# An execution ARN the contract accepts (at most 2,048 characters) that PostgreSQL refuses: ~6 KB
# of UTF-8 cannot go into the btree index on execution_arn ("index row size ... exceeds btree
# maximum", SQLSTATE 54000).
UNINDEXABLE_EXECUTION_ARN = "arn:aws:states:us-east-1:123456789012:execution:OrderApproval:" + cjk_text(1900, 20)


@pytest.mark.postgres  # the refusal under test is PostgreSQL's btree row limit
@pytest.mark.django_db(transaction=True)
def test_a_message_the_database_refuses_becomes_a_store_failed_ingest_error_and_the_others_commit(aws, caplog):
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    bad_token = LONG_TOKEN
    bad_body = rich_body(bad_token, title="Refused by the database", execution=UNINDEXABLE_EXECUTION_ARN)
    first_good = gateway.send_message(queue_url=queue_url, body=rich_body(new_token(), title="Before"))
    bad_id = gateway.send_message(queue_url=queue_url, body=bad_body)
    last_good = gateway.send_message(queue_url=queue_url, body=rich_body(new_token(), title="After"))

    assert consume(queue_url) == 3

    assert sorted(ApprovalRequest.objects.values_list("sqs_message_id", flat=True)) == sorted([first_good, last_good])
    assert not ApprovalRequest.objects.filter(title="Refused by the database").exists()
    assert not Assignment.objects.filter(request__isnull=True).exists()
    assert AuditEvent.objects.filter(action="ingested").count() == 2  # the refused one's audit rolled back too
    error = IngestError.objects.get()
    assert (error.sqs_message_id, error.code, error.status) == (bad_id, "store_failed", IngestError.Status.OPEN)
    assert error.reason.startswith("could not store the message: OperationalError: index row size")
    assert "Refused by the database" in error.body_redacted  # what arrived, for the admin ...
    assert_token_absent(bad_token, error.reason, error.body_redacted, caplog.text)  # ... without the token
    assert AuditEvent.objects.filter(action="ingest_error", data__code="store_failed").count() == 1
    assert f"message {bad_id} could not be stored" in caplog.text  # with its traceback, for operators
    assert messages_on(queue_url) == 0  # kept with its error, so deleted like the others
    assert dead_lettered_ids(aws) == set()

    # The admin replays it from the kept copy: refused again, the error stays open with the new
    # sighting counted, and nothing else is lost.
    admin = User.objects.create_superuser(username="carol", email="carol@example.com")
    replayed = services.ingest_error_replay(ingest_error_id=error.pk, actor=admin)
    assert (replayed.pk, replayed.status, replayed.code) == (error.pk, IngestError.Status.OPEN, "store_failed")
    assert replayed.receive_count == 2
    assert AuditEvent.objects.filter(action="ingest_error_replay_refused", actor=admin).count() == 1
    assert ApprovalRequest.objects.count() == 2
    assert_token_absent(bad_token, caplog.text)


def failing_for(title: str, error: Exception):
    """A stand-in for the ingest's audit event (`_ingested_event`, both the batch's and the
    single message's path) that raises `error` for the request titled `title`.

    The audit event is the store's last write: the request row and its assignments are
    written by then, so a failure there shows they roll back with it (the batch's too: it
    falls back to one transaction per message, where the fault strikes again).
    """
    real = services.ingest._ingested_event

    def ingested_event(**kwargs):
        if kwargs.get("request") is not None and kwargs["request"].title == title:
            raise error
        return real(**kwargs)

    return ingested_event


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", [RecursionError, ValueError, KeyError])
def test_an_unexpected_exception_while_storing_one_message_is_its_store_failed_error_alone(aws, caplog, kind):
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    token = new_token()
    # A bug's message may quote the token: it must not reach the stored error or the log.
    fault = kind(f"unexpected while storing {token}")
    bad_id = gateway.send_message(queue_url=queue_url, body=rich_body(token, title="Boom"))
    good_id = gateway.send_message(queue_url=queue_url, body=rich_body(new_token(), title="Fine"))

    # mock: a real part cannot be made to raise an arbitrary exception on demand; this
    # simulates a bug at the end of the store, after the request row was written.
    with mock.patch("approvals.services.ingest._ingested_event", failing_for("Boom", fault)):
        assert consume(queue_url) == 2

    assert list(ApprovalRequest.objects.values_list("sqs_message_id", flat=True)) == [good_id]
    assert set(Assignment.objects.values_list("request__sqs_message_id", flat=True)) == {good_id}
    error = IngestError.objects.get()
    assert (error.sqs_message_id, error.code) == (bad_id, "store_failed")
    assert error.reason.startswith(f"could not store the message: {kind.__name__}")
    assert_token_absent(token, error.reason, error.body_redacted, caplog.text)
    assert messages_on(queue_url) == 0  # kept with its error


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("token", [LONG_TOKEN, "8f0e3c1a-6b2d-4f4e-9a7c-2d5b1e0f9c3a"], ids=["aws", "emulator"])
@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        # A definition with "details.$": "$$" sends the whole context object, the token with it.
        ("details", lambda token: {"details": {"Execution": {"Name": "run-1"}, "Task": {"Token": token}}}),
        ("approvalRequest", lambda token: {"details": None, "approvalRequest": {token: "as a key"}}),
        # Longer than a title may be: the cut to 300 characters would leave a piece of it.
        ("title", lambda token: {"title": "Approve " + "x" * 270 + token}),
    ],
)
def test_a_message_that_repeats_its_token_where_people_would_read_it_is_refused_naming_the_field(
    aws, caplog, token, field, overrides
):
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    message_id = gateway.send_message(queue_url=queue_url, body=rich_body(token, **overrides(token)))

    assert consume(queue_url) == 1

    # Not a request: its page, the API, mails and Slack would show the token to approvers.
    assert not ApprovalRequest.objects.exists()
    error = IngestError.objects.get()
    assert (error.sqs_message_id, error.code) == (message_id, "token_repeated")
    assert f"field '{field}' repeats the task token" in error.reason
    assert_token_absent(token, error.reason, error.body_redacted, caplog.text)
    assert token[:16] not in error.body_redacted + caplog.text
    assert messages_on(queue_url) == 0  # kept with its error for the admin


@pytest.mark.django_db(transaction=True)
def test_a_bugs_message_cut_to_fit_the_stored_reason_keeps_no_piece_of_a_real_format_token(aws, caplog):
    caplog.set_level(logging.INFO)
    queue_url = aws.APPROVAL_QUEUE_URL
    # The reason keeps the first 500 characters of the message's first line: here the cut falls
    # 40 characters into the token, a piece too short to look like a token by its shape alone.
    lead = "unexpected while storing "
    fault = ValueError(lead + "." * (460 - len(lead)) + LONG_TOKEN)
    bad_id = gateway.send_message(queue_url=queue_url, body=rich_body(LONG_TOKEN, title="Boom"))

    # mock: a real part cannot be made to raise an arbitrary exception on demand; this
    # simulates a bug at the end of the store, after the request row was written.
    with mock.patch("approvals.services.ingest._ingested_event", failing_for("Boom", fault)):
        assert consume(queue_url) == 1

    error = IngestError.objects.get()
    assert (error.sqs_message_id, error.code) == (bad_id, "store_failed")
    assert error.reason.startswith("could not store the message: ValueError: unexpected while storing ...")
    for text in (error.reason, error.body_redacted, caplog.text):
        assert LONG_TOKEN[:16] not in text and LONG_TOKEN[-16:] not in text


@pytest.mark.django_db(transaction=True)
def test_a_database_gone_mid_batch_stops_the_batch_without_errors_and_what_was_committed_is_deleted(aws):
    queue_url = aws.APPROVAL_QUEUE_URL
    for title in ("First", "Lost connection", "Third"):
        gateway.send_message(queue_url=queue_url, body=rich_body(new_token(), title=title))

    # mock: PostgreSQL cannot be made to drop one connection at an exact statement on demand.
    lost = OperationalError("server closed the connection unexpectedly")
    with (
        mock.patch("approvals.services.ingest._ingested_event", failing_for("Lost connection", lost)),
        pytest.raises(OperationalError),
    ):
        consume(queue_url)  # to the consumer loop, which backs off and says so

    # Not the message's fault: no IngestError for it or for the one after it ...
    assert IngestError.objects.count() == 0
    assert list(ApprovalRequest.objects.values_list("title", flat=True)) == ["First"]
    # ... and the committed one was deleted all the same; the other two come back.
    assert messages_on(queue_url) == 2
    assert consume(queue_url) == 2
    assert sorted(ApprovalRequest.objects.values_list("title", flat=True)) == ["First", "Lost connection", "Third"]
    assert messages_on(queue_url) == 0


@pytest.mark.django_db(transaction=True)
def test_a_failure_after_the_commit_leaves_the_stored_request_done_not_a_store_failed_error(aws):
    queue_url = aws.APPROVAL_QUEUE_URL
    message_id = gateway.send_message(queue_url=queue_url, body=rich_body(new_token(), title="Stored"))

    def broken_hook():
        raise RuntimeError("an on-commit hook broke")

    # mock: no real on-commit hook of the ingest fails on demand; this one raises once the
    # request is committed, which Django propagates out of the atomic block.
    with mock.patch(
        "approvals.services.ingest.metrics.request_ingested",
        lambda **_: transaction.on_commit(broken_hook),
    ):
        assert consume(queue_url) == 1

    assert ApprovalRequest.objects.get().sqs_message_id == message_id
    assert IngestError.objects.count() == 0
    assert messages_on(queue_url) == 0
