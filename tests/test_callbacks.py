"""Callbacks: a decision (or expiry) resumes the paused execution through the outbox.

Real parts: the moto server runs the example state machine from deploy/, PostgreSQL holds the
outbox. Most tests use the plain `db` fixture, where `transaction.on_commit` never fires, so the
decision's `deliver_callback.delay` is not sent and each test runs `deliver_callback(id)` itself,
in-process. `worker.consumer.consume_once` cannot run inside a `db` test (its
`close_old_connections()` closes the test's connection, which sits in an atomic block), so those
tests take the execution's message off the real queue with the same steps consume_once performs;
one transactional test goes through consume_once and the on-commit enqueue itself.

`unittest.mock` appears only where the real part cannot produce a fault on demand, each one
commented.
"""

import base64
import json
import logging
import time
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals import services, tasks, tokens
from approvals.contract import parse_message
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, AuditEvent, Callback, CallbackStatus, IngestError, RequestStatus, User
from approvals.tasks import deliver_callback, expire_overdue_requests, sweep_callbacks
from portal.celery import app as celery_app
from tests.support import wait_for, wait_for_execution_end
from worker.consumer import consume_once

ISSUER = "https://sso.example.com/o"
EXECUTION_INPUT = {
    "title": "Approve order 1234 (EUR 5,300)",
    "approvers": {"users": [], "groups": ["finance-approvers"]},
    "requester": "bob@example.com",
    "details": {"order": {"id": 1234, "total": {"amount": "5300.00", "currency": "EUR"}}},
}
# A real-format task token (AWS: opaque base64, up to 2,048 characters; moto issues UUIDs).
LONG_TOKEN = "AQCEAAAAKgAAAA" + base64.b64encode(bytes(range(255, -1, -1)) * 4 + b"\x3e").decode()
CLOSED_TASK_CODES = {"InvalidToken", "TaskTimedOut", "TaskDoesNotExist"}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def take_from_queue(queue_url: str) -> None:
    """What consume_once does, minus its close_old_connections() (see the module docstring)."""
    batch = gateway.receive_batch(queue_url=queue_url, wait_seconds=1, visibility_timeout=30)
    for message in batch:
        services.approval_request_ingest(message=parse_message(message.body), sqs_message_id=message.message_id)
    if batch:
        assert gateway.delete_messages(queue_url=queue_url, receipt_handles=[m.receipt_handle for m in batch]) == []


def start_and_ingest(aws, state_machine_arn: str, **input_overrides) -> tuple[str, ApprovalRequest]:
    """Start a real execution of the demo state machine and ingest the message it sends."""
    execution_arn = gateway.start_execution(
        state_machine_arn=state_machine_arn,
        name=f"callback-{uuid.uuid4().hex[:12]}",
        execution_input={**EXECUTION_INPUT, **input_overrides},
    )

    def ingested():
        take_from_queue(aws.APPROVAL_QUEUE_URL)
        return ApprovalRequest.objects.filter(execution_arn=execution_arn).first()

    return execution_arn, wait_for(ingested)


def ingest_body(**fields) -> ApprovalRequest:
    """A request from a message body handed straight to the ingest service: no execution behind its token."""
    data = {
        "taskToken": str(uuid.uuid4()),
        "title": "Approve order 99",
        "approvers": {"groups": ["finance-approvers"]},
        "requester": "bob@example.com",
        **fields,
    }
    request, created = services.approval_request_ingest(message=parse_message(json.dumps(data)))
    assert created
    return request


def token_of(request: ApprovalRequest) -> str:
    return tokens.decrypt_token(request.token_ciphertext)


def assert_token_nowhere(token: str, caplog) -> None:
    """The token is in no log line and no admin-visible field of any row."""
    escaped = json.dumps(token)[1:-1]
    texts = [caplog.text]
    for callback in Callback.objects.all():
        texts += [callback.last_error, callback.error_code, json.dumps(callback.payload)]
    for event in AuditEvent.objects.all():
        texts += [event.actor_label, event.action, json.dumps(event.data)]
    for request in ApprovalRequest.objects.all():
        texts += [request.title, json.dumps(request.details), request.decision_comment, request.sqs_message_id]
    for error in IngestError.objects.all():
        texts += [error.reason, error.body_redacted]
    for text in texts:
        assert token not in text
        assert escaped not in text


@pytest.fixture
def finance_group(db) -> Group:
    return Group.objects.create(name="finance-approvers")


@pytest.fixture
def alice(finance_group) -> User:
    user = User.objects.create(
        username="alice", email="alice@example.com", oidc_sub="sub-alice-1", oidc_issuer=ISSUER, first_name="Alice"
    )
    user.groups.add(finance_group)
    return user


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


# ---------------------------------------------------------------------------
# Delivery against real executions
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_approval_is_delivered_and_the_execution_succeeds_with_the_deciders_identity(
    aws, demo_state_machine, alice, logs
):
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    token = token_of(request)

    services.approval_decide(public_id=request.public_id, user=alice, approve=True, comment="Looks right — approved ✓")
    callback = Callback.objects.get(request=request)
    assert callback.kind == Callback.Kind.SUCCESS
    assert callback.status == CallbackStatus.PENDING
    assert callback.attempts == 0

    assert deliver_callback(callback.pk) == "delivered"

    callback.refresh_from_db()
    assert callback.status == CallbackStatus.DELIVERED
    assert callback.attempts == 1
    assert callback.delivered_at is not None
    assert callback.error_code == "" and callback.next_attempt_at is None
    delivered = AuditEvent.objects.get(request=request, action="callback_delivered")
    assert delivered.data == {"attempts": 1}
    assert delivered.actor_label == "system"

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    output = json.loads(execution["output"])
    assert output["title"] == EXECUTION_INPUT["title"]  # ResultPath keeps the input beside the approval
    approval = output["approval"]
    assert approval["approved"] is True
    assert approval["decision"] == "approved"
    assert approval["decidedBy"] == {"email": "alice@example.com", "sub": "sub-alice-1", "issuer": ISSUER}
    assert approval["comment"] == "Looks right — approved ✓"
    assert approval["requestId"] == str(request.public_id)
    request.refresh_from_db()
    assert approval["decidedAt"] == request.decided_at.isoformat()
    assert token not in json.dumps(approval)
    assert_token_nowhere(token, logs)


@pytest.mark.django_db
def test_a_rejection_is_delivered_as_task_failure_and_the_execution_fails_with_approval_denied(
    aws, demo_state_machine, alice, logs
):
    execution_arn, request = start_and_ingest(aws, demo_state_machine)

    services.approval_decide(public_id=request.public_id, user=alice, approve=False, comment="Budget is frozen")
    callback = Callback.objects.get(request=request)
    assert callback.kind == Callback.Kind.FAILURE
    assert callback.payload["error"] == "ApprovalDenied"
    cause = json.loads(callback.payload["cause"])
    assert cause["approved"] is False
    assert cause["decision"] == "rejected"
    assert cause["decidedBy"] == {"email": "alice@example.com", "sub": "sub-alice-1", "issuer": ISSUER}
    assert cause["comment"] == "Budget is frozen"

    assert deliver_callback(callback.pk) == "delivered"

    callback.refresh_from_db()
    assert callback.status == CallbackStatus.DELIVERED
    assert callback.attempts == 1
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "ApprovalDenied"
    assert_token_nowhere(token_of(request), logs)


@pytest.mark.django_db
def test_delivering_a_delivered_callback_again_sends_nothing(aws, demo_state_machine, alice):
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    callback = Callback.objects.get(request=request)
    assert deliver_callback(callback.pk) == "delivered"
    assert wait_for_execution_end(execution_arn)["status"] == "SUCCEEDED"

    assert deliver_callback(callback.pk) == "nothing-to-send"

    callback.refresh_from_db()
    assert callback.status == CallbackStatus.DELIVERED
    assert callback.attempts == 1
    assert AuditEvent.objects.filter(request=request, action="callback_delivered").count() == 1
    assert not AuditEvent.objects.filter(request=request, action="callback_failed").exists()


@pytest.mark.django_db
def test_a_callback_another_worker_is_sending_right_now_is_left_alone_but_a_stale_one_is_sent(
    aws, demo_state_machine, alice
):
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    callback = Callback.objects.get(request=request)
    # Another worker claimed it (sending, one attempt) a moment ago ...
    Callback.objects.filter(pk=callback.pk).update(status=CallbackStatus.SENDING, attempts=1)

    assert deliver_callback(callback.pk) == "nothing-to-send"
    callback.refresh_from_db()
    assert callback.status == CallbackStatus.SENDING and callback.attempts == 1
    assert gateway.describe_execution(execution_arn=execution_arn)["status"] == "RUNNING"

    # ... and was lost with its worker: once stale, the claim is taken over and the call made.
    stale = timezone.now() - timedelta(seconds=aws.CALLBACK_STALE_SECONDS + 5)
    Callback.objects.filter(pk=callback.pk).update(updated_at=stale)
    assert deliver_callback(callback.pk) == "delivered"
    callback.refresh_from_db()
    assert callback.status == CallbackStatus.DELIVERED
    assert callback.attempts == 2
    assert wait_for_execution_end(execution_arn)["status"] == "SUCCEEDED"


# ---------------------------------------------------------------------------
# Permanent failures
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_task_already_closed_elsewhere_fails_the_callback_permanently_without_leaking_the_token(
    aws, demo_state_machine, alice, logs
):
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    token = token_of(request)
    # Someone else answers the task first (another portal, a script): the token is closed.
    gateway.send_task_success(task_token=token, output={"closedBy": "somebody else"})
    assert wait_for_execution_end(execution_arn)["status"] == "SUCCEEDED"

    services.approval_decide(public_id=request.public_id, user=alice, approve=True, comment="late")
    callback = Callback.objects.get(request=request)
    assert deliver_callback(callback.pk) == "failed"

    callback.refresh_from_db()
    assert callback.status == CallbackStatus.FAILED
    assert callback.error_code in CLOSED_TASK_CODES
    assert callback.attempts == 1
    assert callback.next_attempt_at is None
    assert callback.delivered_at is None
    failed = AuditEvent.objects.get(request=request, action="callback_failed")
    assert failed.data["code"] == callback.error_code
    assert failed.data["message"] == callback.last_error
    # Step Functions no longer waits for this decision: the portal shows the request as expired.
    request.refresh_from_db()
    assert request.status == RequestStatus.EXPIRED
    closed = AuditEvent.objects.get(request=request, action="closed_by_step_functions")
    assert closed.data == {"code": callback.error_code, "previous_status": "approved"}
    # Retrying cannot help, and a second run does not call AWS again.
    assert deliver_callback(callback.pk) == "nothing-to-send"
    callback.refresh_from_db()
    assert callback.attempts == 1
    assert_token_nowhere(token, logs)


@pytest.mark.django_db
def test_a_long_real_format_token_that_step_functions_does_not_know_fails_permanently_and_stays_secret(
    aws, alice, logs
):
    request = ingest_body(taskToken=LONG_TOKEN)
    assert len(LONG_TOKEN) > 1200 and {"+", "/", "="} <= set(LONG_TOKEN)
    services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    callback = Callback.objects.get(request=request)

    # The real call, with the long token, to the moto server: it knows no such task.
    assert deliver_callback(callback.pk) == "failed"

    callback.refresh_from_db()
    assert callback.status == CallbackStatus.FAILED
    assert callback.error_code in CLOSED_TASK_CODES
    assert_token_nowhere(LONG_TOKEN, logs)


@pytest.mark.django_db
def test_a_token_encrypted_with_a_key_no_longer_configured_fails_visibly_without_calling_aws(settings, alice, logs):
    request = ingest_body()
    services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    callback = Callback.objects.get(request=request)
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the old key was dropped too early

    assert deliver_callback(callback.pk) == "nothing-to-send"

    callback.refresh_from_db()
    assert callback.status == CallbackStatus.FAILED
    assert callback.error_code == "token_key_missing"
    assert callback.attempts == 0  # claimed for no send: nothing went to AWS
    assert AuditEvent.objects.filter(request=request, action="callback_failed", data__code="token_key_missing").exists()


# ---------------------------------------------------------------------------
# Transient failures
# ---------------------------------------------------------------------------
class FailingStepFunctions:
    """A stand-in Step Functions client whose every callback call raises `error`."""

    def __init__(self, error: Exception):
        self.error = error
        self.calls: list[dict] = []

    def send_task_success(self, **kwargs):
        self.calls.append(kwargs)
        raise self.error

    send_task_failure = send_task_success


def throttling(token: str) -> ClientError:
    # The message quotes the token to prove the gateway redacts whatever AWS says back.
    return ClientError(
        {
            "Error": {"Code": "ThrottlingException", "Message": f"Rate exceeded for task {token}"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "SendTaskSuccess",
    )


def service_unavailable(token: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "ServiceUnavailableException", "Message": "Try again"},
            "ResponseMetadata": {"HTTPStatusCode": 503},
        },
        "SendTaskSuccess",
    )


def connection_refused(token: str) -> EndpointConnectionError:
    return EndpointConnectionError(endpoint_url="https://states.us-east-1.amazonaws.com/")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (throttling, "ThrottlingException"),
        (service_unavailable, "ServiceUnavailableException"),
        (connection_refused, "EndpointConnectionError"),
    ],
    ids=["throttled", "5xx", "connection-error"],
)
def test_a_transient_aws_fault_schedules_a_retry_until_the_attempts_are_used_up(settings, alice, logs, fault, code):
    settings.CALLBACK_MAX_ATTEMPTS = 2
    request = ingest_body(taskToken=LONG_TOKEN)
    services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    callback = Callback.objects.get(request=request)
    client = FailingStepFunctions(fault(LONG_TOKEN))

    # mock: the moto server cannot throttle, answer 5xx or drop the connection on demand, so the
    # Step Functions client is replaced by one that raises what boto3 raises in those cases.
    # apply_async is captured because no Celery worker consumes in this test: we only check the
    # retry was scheduled, with a countdown.
    with (
        mock.patch("approvals.integrations.aws._sfn", return_value=client),
        mock.patch.object(tasks.deliver_callback, "apply_async") as scheduled,
    ):
        before = timezone.now()
        assert deliver_callback(callback.pk) == "retrying"

        callback.refresh_from_db()
        assert callback.status == CallbackStatus.RETRYING
        assert callback.attempts == 1
        assert callback.error_code == code
        assert callback.next_attempt_at > before
        scheduled.assert_called_once()
        assert scheduled.call_args.args == ((callback.pk,),)
        countdown = scheduled.call_args.kwargs["countdown"]
        assert countdown > 0
        expected_at = before + timedelta(seconds=countdown)
        assert abs(callback.next_attempt_at - expected_at) < timedelta(seconds=5)
        assert client.calls[0]["taskToken"] == LONG_TOKEN  # the real token went to the (stand-in) API

        # The scheduled retry runs and meets the same fault: CALLBACK_MAX_ATTEMPTS=2 is used up.
        assert deliver_callback(callback.pk) == "failed"

    callback.refresh_from_db()
    assert callback.status == CallbackStatus.FAILED
    assert callback.attempts == 2
    assert callback.error_code == code
    assert callback.next_attempt_at is None
    assert "gave up after 2 attempts" in callback.last_error
    # A 5xx may have been acted on: nobody knows whether it arrived, and the page says so.
    assert callback.resolution == ("uncertain" if code == "ServiceUnavailableException" else "")
    assert scheduled.call_count == 1
    assert len(client.calls) == 2
    assert AuditEvent.objects.filter(request=request, action="callback_failed", data__code=code).count() == 1
    assert_token_nowhere(LONG_TOKEN, logs)


# ---------------------------------------------------------------------------
# The identity re-check before sending
# ---------------------------------------------------------------------------
def leaves_the_group(user: User, request: ApprovalRequest) -> None:
    user.groups.clear()


def is_deactivated(user: User, request: ApprovalRequest) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


def changes_email_at_the_idp(user: User, request: ApprovalRequest) -> None:
    user.email = "alice.smith@example.com"
    user.save(update_fields=["email"])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "approvers"),
    [
        (leaves_the_group, {"users": [], "groups": ["finance-approvers"]}),
        (is_deactivated, {"users": [], "groups": ["finance-approvers"]}),
        (changes_email_at_the_idp, {"users": ["alice@example.com"], "groups": []}),
    ],
    ids=["left-group", "deactivated", "email-changed"],
)
def test_a_decider_who_is_no_longer_allowed_by_send_time_is_refused_and_the_execution_keeps_waiting(
    aws, demo_state_machine, alice, logs, change, approvers
):
    execution_arn, request = start_and_ingest(aws, demo_state_machine, approvers=approvers)
    services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    callback = Callback.objects.get(request=request)

    change(alice, request)
    assert deliver_callback(callback.pk) == "nothing-to-send"

    # Never sent: the vote is withdrawn, the request waits for a decision again, and the
    # unsent callback is gone (tests/test_recheck_reopens.py follows it to the end).
    assert not Callback.objects.filter(pk=callback.pk).exists()
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    reopened = AuditEvent.objects.get(request=request, action="reopened")
    assert reopened.data["code"] == "identity_recheck_failed"
    assert reopened.data["callback"]["attempts"] == 0  # never sent
    assert reopened.data["reason"]
    time.sleep(0.3)
    assert gateway.describe_execution(execution_arn=execution_arn)["status"] == "RUNNING"
    assert_token_nowhere(token_of(request), logs)


# ---------------------------------------------------------------------------
# Expiry
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_overdue_request_expires_and_its_execution_is_told_approval_expired(aws, demo_state_machine, alice, logs):
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    _, still_open = start_and_ingest(aws, demo_state_machine)
    assert request.deadline is not None  # the demo sends timeoutSeconds: 86400
    # Time passes: the deadline is now behind us (nothing in the portal moves deadlines).
    ApprovalRequest.objects.filter(pk=request.pk).update(deadline=timezone.now() - timedelta(minutes=1))

    assert expire_overdue_requests() == 1

    request.refresh_from_db()
    assert request.status == RequestStatus.EXPIRED
    assert request.decided_at is not None and request.decided_by is None
    still_open.refresh_from_db()
    assert still_open.status == RequestStatus.PENDING
    assert AuditEvent.objects.filter(request=request, action="expired").count() == 1
    callback = Callback.objects.get(request=request)
    assert callback.kind == Callback.Kind.FAILURE
    assert callback.payload["error"] == "ApprovalExpired"
    assert json.loads(callback.payload["cause"])["requestId"] == str(request.public_id)
    assert expire_overdue_requests() == 0  # once only

    # Deciding is no longer possible.
    with pytest.raises(services.ApprovalError) as refused:
        services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    assert refused.value.code == "not_pending"

    assert deliver_callback(callback.pk) == "delivered"
    execution = wait_for_execution_end(execution_arn)
    # The demo state machine catches ApprovalExpired and ends in its "Withdrawn" Fail state.
    assert execution["status"] == "FAILED"
    assert execution["error"] == "ApprovalWithdrawn"
    assert_token_nowhere(token_of(request), logs)


# ---------------------------------------------------------------------------
# The outbox sweep
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_sweep_requeues_stale_pending_sending_and_overdue_retrying_callbacks_only(settings, alice):
    settings.CALLBACK_STALE_SECONDS = 120
    callbacks = {}
    for name in [
        "stale-pending",
        "fresh-pending",
        "stale-sending",
        "fresh-sending",
        "overdue-retry",
        "due-retry",
        "old-delivered",
        "old-failed",
    ]:
        request = ingest_body(title=name)
        services.approval_decide(public_id=request.public_id, user=alice, approve=True)
        callbacks[name] = Callback.objects.get(request=request).pk
    now = timezone.now()
    long_ago = now - timedelta(seconds=600)
    # The states a crash leaves behind (set directly: reaching them takes a lost worker or broker message).
    Callback.objects.filter(pk=callbacks["stale-pending"]).update(updated_at=long_ago)
    Callback.objects.filter(pk=callbacks["stale-sending"]).update(status=CallbackStatus.SENDING, updated_at=long_ago)
    Callback.objects.filter(pk=callbacks["fresh-sending"]).update(status=CallbackStatus.SENDING)
    Callback.objects.filter(pk=callbacks["overdue-retry"]).update(
        status=CallbackStatus.RETRYING, next_attempt_at=long_ago, updated_at=long_ago
    )
    Callback.objects.filter(pk=callbacks["due-retry"]).update(status=CallbackStatus.RETRYING, next_attempt_at=now)
    Callback.objects.filter(pk=callbacks["old-delivered"]).update(status=CallbackStatus.DELIVERED, updated_at=long_ago)
    Callback.objects.filter(pk=callbacks["old-failed"]).update(status=CallbackStatus.FAILED, updated_at=long_ago)

    # mock: simulates the lost on-commit enqueue being made good; no Celery worker consumes in
    # this test, so we capture what the sweep queues instead of publishing it. The sweep queues
    # the batch task with the ids it leased (CALLBACK_BATCH_SIZE a task; one task here).
    with mock.patch.object(tasks.deliver_due_callbacks, "delay") as queued:
        assert sweep_callbacks() == 3
        assert sorted(i for call in queued.call_args_list for i in call.args[0]) == sorted(
            [callbacks["stale-pending"], callbacks["stale-sending"], callbacks["overdue-retry"]]
        )
        # A sweep leases what it queued: the next one (or a concurrent relay) does not queue it again.
        assert sweep_callbacks() == 0
        assert queued.call_count == 1


# ---------------------------------------------------------------------------
# Through the consumer and the on-commit enqueue
# ---------------------------------------------------------------------------
@pytest.fixture
def celery_eager():
    """Run tasks in-process when queued (Celery's eager mode) instead of publishing to the broker."""
    old = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


@pytest.mark.django_db(transaction=True)
def test_a_consumed_message_and_a_committed_decision_resume_the_execution_through_the_on_commit_enqueue(
    aws, demo_state_machine, celery_eager, logs
):
    group = Group.objects.create(name="finance-approvers")
    alice = User.objects.create(username="alice", email="alice@example.com", oidc_sub="sub-alice-1", oidc_issuer=ISSUER)
    alice.groups.add(group)
    execution_arn = gateway.start_execution(
        state_machine_arn=demo_state_machine, name=f"commit-{uuid.uuid4().hex[:12]}", execution_input=EXECUTION_INPUT
    )

    def ingested():
        consume_once(queue_url=aws.APPROVAL_QUEUE_URL, wait_seconds=1, visibility_timeout=30, max_bytes=256 * 1024)
        return ApprovalRequest.objects.filter(execution_arn=execution_arn).first()

    request = wait_for(ingested)

    # No explicit deliver_callback call: the decision's on-commit hook queues it (run eagerly here).
    services.approval_decide(public_id=request.public_id, user=alice, approve=True, comment="ok")

    callback = Callback.objects.get(request=request)
    assert callback.status == CallbackStatus.DELIVERED
    assert callback.attempts == 1
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["approval"]["decidedBy"]["email"] == "alice@example.com"
    assert_token_nowhere(token_of(request), logs)
