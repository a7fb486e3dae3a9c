"""An ambiguous callback is settled from Step Functions, and the requester's mail tells the truth.

A callback attempt is ambiguous when it may have reached Step Functions without the portal
recording it (its worker died between SendTaskSuccess and the record, or its response was lost).
The retry is then answered "task closed", which alone proves nothing: the worker reads the
execution (DescribeExecution / GetExecutionHistory) and the request shows what really happened.

Real parts: the moto server running the example state machine, PostgreSQL, Redis and real Celery
worker processes for the crash. `unittest.mock` appears only to refuse the execution read with
AccessDenied (moto does not enforce IAM by default) and to hold back the broker publish in
the mail-timing test; each use says so.
"""

import json
import os
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from botocore.exceptions import ClientError
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals import services, tasks, tokens
from approvals.contract import parse_message
from approvals.delivery import ExecutionReading, TaskClosure
from approvals.integrations import aws as gateway
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Callback,
    CallbackResolution,
    CallbackStatus,
    Notification,
    RequestStatus,
)
from approvals.notifications import channels, messages
from approvals.services.callbacks import _settle_from_execution
from tests.conftest import Process, database_url, venv_bin
from tests.support import make_user, signed_in, wait_for, wait_for_execution_end
from tests.test_reliability import ingest_execution, start, state_machine


@pytest.fixture
def people(db):
    return {
        "alice": make_user("alice", "finance-approvers"),
        "carol": make_user("carol", "portal-admins", admin=True),
    }


def approve(request: ApprovalRequest, user) -> Callback:
    with transaction.atomic():
        services.approval_decide(public_id=request.public_id, user=user, approve=True, comment="fine")
    return Callback.objects.get(request=request)


def worker_lost_after_claim(callback: Callback) -> None:
    """What a worker that died mid-call leaves: the row claimed ("sending", one attempt)."""
    assert services.callback_claim(callback_id=callback.pk) is not None
    assert Callback.objects.get(pk=callback.pk).status == CallbackStatus.SENDING


def pages_of(request: ApprovalRequest, admin) -> tuple[str, str, str]:
    client = signed_in(admin)
    detail = client.get(f"/requests/{request.public_id}/")
    change = client.get(f"/admin/approvals/approvalrequest/{request.pk}/change/")
    outbox = client.get("/admin/approvals/callback/")
    assert detail.status_code == change.status_code == outbox.status_code == 200
    return detail.content.decode(), change.content.decode(), outbox.content.decode()


def outcome_mail(request: ApprovalRequest):
    (notification,) = Notification.objects.filter(request=request, kind="outcome", channel="email")
    return messages.build(notification)


# ---------------------------------------------------------------------------
# A worker killed between SendTaskSuccess and recording it (real processes)
# ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_worker_killed_right_after_send_task_success_leaves_the_request_approved_and_delivered_not_expired(
    transactional_db, aws, demo_state_machine, log_dir, tmp_path
):
    alice = make_user("alice", "finance-approvers")
    carol = make_user("carol", "portal-admins", admin=True)
    execution_arn = start(demo_state_machine)
    approval = ingest_execution(aws, execution_arn)
    crash_flag = tmp_path / "crash-once"
    crash_flag.touch()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": aws.CELERY_BROKER_URL,
        "AWS_ENDPOINT_URL": aws.AWS_ENDPOINT_URL,
        "APPROVAL_QUEUE_URL": aws.APPROVAL_QUEUE_URL,
        "APPROVAL_CONSUMER_WAIT_SECONDS": "1",
    }
    command = [venv_bin("celery"), "-A", "portal", "worker", "--pool", "solo", "--loglevel", "INFO"]

    # The test-only fault point (worker/tasks.py): this worker exits right after Step Functions
    # accepted the SendTaskSuccess, before the callback is recorded as delivered.
    first = Process(
        "worker-dies-after-send", command, {**env, "PORTAL_TEST_CRASH_AFTER_SEND": str(crash_flag)}, log_dir
    )
    try:
        callback = approve(approval, alice)  # committed: the on-commit publish goes to the broker
        assert first.popen.wait(timeout=60) == 70, first.output()[-2000:]
    finally:
        first.stop()
    assert not crash_flag.exists()
    assert wait_for_execution_end(execution_arn)["status"] == "SUCCEEDED"  # the call did get through
    callback.refresh_from_db()
    assert callback.status == CallbackStatus.SENDING and callback.attempts == 1
    # Not delivered as far as the portal knows: the requester has been told nothing yet.
    assert not Notification.objects.filter(request=approval, kind="outcome").exists()

    second = Process("worker-after-the-crash", command, env, log_dir)
    try:
        # The lease has run out: the sweep takes the row again and the new worker retries.
        aws.CALLBACK_STALE_SECONDS = 0
        assert tasks.sweep_callbacks() == 1
        wait_for(lambda: Callback.objects.get(pk=callback.pk).status == CallbackStatus.DELIVERED, timeout=60)
    finally:
        second.stop()

    callback.refresh_from_db()
    assert callback.resolution == CallbackResolution.CONFIRMED
    assert callback.attempts == 2
    approval.refresh_from_db()
    assert approval.status == RequestStatus.APPROVED
    assert not AuditEvent.objects.filter(request=approval, action="closed_by_step_functions").exists()
    detail, change, _ = pages_of(approval, carol)
    assert "delivered (confirmed from the execution history)" in detail
    assert "delivered (confirmed from the execution history)" in change
    assert "Expired" not in detail
    # The requester hears "approved" once, now that the workflow has the decision.
    content = outcome_mail(approval)
    assert content.subject == f"Approved: {approval.title}"
    assert "The workflow was told." in content.intro
    # Which worker made the retry is not this test's point: with batches, any delivery task
    # running against this database (another test's worker too) takes a due callback with its own.
    logs = first.log.read_text(errors="replace") + second.log.read_text(errors="replace")
    assert tokens.decrypt_token(approval.token_ciphertext) not in logs


# ---------------------------------------------------------------------------
# Closed by Step Functions: the retry meets a task that timed out
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_retry_answered_invalid_token_because_the_task_timed_out_shows_closed_by_step_functions(aws, people):
    execution_arn = start(state_machine(aws, TimeoutSeconds=2))
    approval = ingest_execution(aws, execution_arn)
    callback = approve(approval, people["alice"])
    worker_lost_after_claim(callback)  # its worker died before the call went out
    assert wait_for_execution_end(execution_arn, timeout=30)["status"] == "FAILED"  # States.Timeout, caught

    aws.CALLBACK_STALE_SECONDS = 0
    assert services.callbacks_lease_stale() == [callback.pk]
    aws.CALLBACK_STALE_SECONDS = 120  # as a worker sees it: the sweep's lease is fresh, the row still retaken
    assert tasks.deliver_callback(callback.pk) == "failed"

    callback.refresh_from_db()
    assert callback.status == CallbackStatus.FAILED
    assert callback.resolution == CallbackResolution.CLOSED
    assert callback.error_code == "InvalidToken"
    assert "timed out" in callback.last_error
    approval.refresh_from_db()
    assert approval.status == RequestStatus.EXPIRED
    detail, change, outbox = pages_of(approval, people["carol"])
    for page in (detail, change, outbox):
        assert "closed by Step Functions (timed out / execution ended)" in page
    assert "Closed by Step Functions" in detail and "Expired in the portal" not in detail
    # The requester is told plainly that the approval never reached the workflow, and why.
    content = outcome_mail(approval)
    assert content.subject == f"Approved, but the workflow was not told: {approval.title}"
    assert "Step Functions had stopped waiting for it" in content.intro
    token = tokens.decrypt_token(approval.token_ciphertext)
    assert token not in content.intro + content.subject + callback.last_error
    assert "InvalidToken" not in content.intro


@pytest.mark.django_db
def test_a_request_expired_in_the_portal_is_not_called_closed_by_step_functions(aws, demo_state_machine, people):
    execution_arn = start(demo_state_machine)
    approval = ingest_execution(aws, execution_arn)
    ApprovalRequest.objects.filter(pk=approval.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    assert services.approval_expire(request_id=approval.pk)
    tasks.deliver_callback(Callback.objects.get(request=approval).pk)

    detail, _, _ = pages_of(approval, people["carol"])
    assert "Expired in the portal" in detail and "Closed by Step Functions" not in detail
    assert "sent to Step Functions" in detail
    assert outcome_mail(approval).subject == f"Expired: {approval.title}"


# ---------------------------------------------------------------------------
# Delivery uncertain: the execution may not be read
# ---------------------------------------------------------------------------
class ReadRefused:
    """The real Step Functions client, except that reading an execution is refused.

    Injected: the moto server does not enforce IAM by default, so a role without
    states:DescribeExecution / states:GetExecutionHistory cannot be produced with it.
    """

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        if name in {"describe_execution", "get_execution_history", "get_paginator"}:

            def refused(*args, **kwargs):
                raise ClientError(
                    {
                        "Error": {
                            "Code": "AccessDeniedException",
                            "Message": "not authorized: states:DescribeExecution",
                        },
                        "ResponseMetadata": {"HTTPStatusCode": 400},
                    },
                    "DescribeExecution",
                )

            return refused
        return getattr(self.real, name)


@pytest.mark.django_db
def test_when_reading_the_execution_is_not_allowed_the_admin_sees_delivery_uncertain_and_the_decision_stands(
    aws, demo_state_machine, people
):
    execution_arn = start(demo_state_machine)
    approval = ingest_execution(aws, execution_arn)
    callback = approve(approval, people["alice"])
    worker_lost_after_claim(callback)
    # The lost worker's call had gone through (the real call, as the worker made it).
    gateway.send_task_success(
        task_token=tokens.decrypt_token(approval.token_ciphertext), output=callback.payload["output"]
    )
    assert wait_for_execution_end(execution_arn)["status"] == "SUCCEEDED"

    aws.CALLBACK_STALE_SECONDS = 0
    assert services.callbacks_lease_stale() == [callback.pk]
    aws.CALLBACK_STALE_SECONDS = 120  # as a worker sees it: the sweep's lease is fresh, the row still retaken
    with mock.patch.object(gateway, "_sfn", return_value=ReadRefused(gateway._sfn())):
        assert tasks.deliver_callback(callback.pk) == "failed"

    callback.refresh_from_db()
    assert callback.status == CallbackStatus.FAILED
    assert callback.resolution == CallbackResolution.UNCERTAIN
    assert "not allowed" in callback.last_error and "AccessDeniedException" in callback.last_error
    approval.refresh_from_db()
    assert approval.status == RequestStatus.APPROVED  # not guessed to be expired
    detail, change, outbox = pages_of(approval, people["carol"])
    for page in (detail, change, outbox):
        assert "delivery uncertain" in page
    content = outcome_mail(approval)
    assert content.subject == f"Approved, not confirmed by the workflow: {approval.title}"
    assert "could not confirm" in content.intro
    assert "AccessDenied" not in content.intro


# ---------------------------------------------------------------------------
# The outcome mail waits for the workflow
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_requester_gets_no_approved_mail_before_the_workflow_has_the_decision(
    aws, demo_state_machine, people, django_capture_on_commit_callbacks
):
    execution_arn = start(demo_state_machine)
    approval = ingest_execution(aws, execution_arn)
    # mock: holds back the broker publish (no worker in this test), so the decision is
    # committed and the callback not yet sent, the state a busy or slow worker leaves.
    with mock.patch("approvals.services.callbacks.enqueue_on_commit"), django_capture_on_commit_callbacks(execute=True):
        callback = approve(approval, people["alice"])

    assert not Notification.objects.filter(request=approval, kind="outcome").exists()

    assert tasks.deliver_callback(callback.pk) == "delivered"
    assert wait_for_execution_end(execution_arn)["status"] == "SUCCEEDED"
    content = outcome_mail(approval)
    assert content.subject == f"Approved: {approval.title}"
    assert "The workflow was told." in content.intro


@pytest.mark.django_db
def test_a_decision_that_cannot_reach_the_workflow_is_mailed_as_such(aws, demo_state_machine, people):
    execution_arn = start(demo_state_machine)
    approval = ingest_execution(aws, execution_arn)
    # Someone answered the task first (another tool): the token is closed, nothing ambiguous.
    gateway.send_task_failure(
        task_token=tokens.decrypt_token(approval.token_ciphertext), error="Elsewhere", cause="another tool"
    )
    assert wait_for_execution_end(execution_arn)["status"] == "FAILED"
    callback = approve(approval, people["alice"])

    assert tasks.deliver_callback(callback.pk) == "failed"

    callback.refresh_from_db()
    assert callback.resolution == CallbackResolution.CLOSED
    content = outcome_mail(approval)
    assert content.subject.startswith("Approved, but the workflow was not told")
    assert "The decision could not reach the workflow: Step Functions had stopped waiting" in content.intro
    # A requester told in Slack reads the same (the message as channels.py posts it).
    text, blocks = channels._outcome_for_requester(approval, content)
    assert text.startswith("Approved, but the workflow was not told")
    assert any("could not reach the workflow" in json.dumps(block) for block in blocks)


@pytest.mark.django_db
def test_an_admin_retry_of_an_uncertain_delivery_is_settled_afresh(aws, demo_state_machine, people):
    execution_arn = start(demo_state_machine)
    approval = ingest_execution(aws, execution_arn)
    callback = approve(approval, people["alice"])
    worker_lost_after_claim(callback)
    gateway.send_task_success(
        task_token=tokens.decrypt_token(approval.token_ciphertext), output=callback.payload["output"]
    )
    aws.CALLBACK_STALE_SECONDS = 0
    services.callbacks_lease_stale()
    aws.CALLBACK_STALE_SECONDS = 120  # as a worker sees it: the sweep's lease is fresh
    with mock.patch.object(gateway, "_sfn", return_value=ReadRefused(gateway._sfn())):  # see ReadRefused
        assert tasks.deliver_callback(callback.pk) == "failed"
    assert Callback.objects.get(pk=callback.pk).resolution == CallbackResolution.UNCERTAIN

    # The admin granted the read permission and sends it again: now the history settles it.
    with mock.patch("approvals.services.callbacks.enqueue_on_commit"):  # no worker here: the test delivers below
        services.callback_retry(callback_id=callback.pk, actor=people["carol"])
    assert tasks.deliver_callback(callback.pk) == "delivered"

    callback.refresh_from_db()
    assert (callback.status, callback.resolution) == (CallbackStatus.DELIVERED, CallbackResolution.CONFIRMED)
    retried = AuditEvent.objects.get(request=approval, action="callback_retried")
    assert retried.data["previous"]["resolution"] == "uncertain"


# ---------------------------------------------------------------------------
# Judging a reading: only our own output confirms a delivery
# ---------------------------------------------------------------------------
EVENTS = st.sampled_from(["TaskSucceeded", "TaskFailed", "TaskTimedOut"])
TEXT = st.one_of(
    st.text(max_size=60),
    st.just(""),
    st.builds(lambda d: json.dumps(d), st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
)
CLOSURES = st.builds(TaskClosure, event=EVENTS, ours=st.booleans(), output=TEXT, error=TEXT, cause=TEXT)
READINGS = st.builds(
    ExecutionReading,
    status=st.sampled_from(["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", ""]),
    output=TEXT,
    task_found=st.booleans(),
    closures=st.lists(CLOSURES, max_size=6).map(tuple),
    complete=st.booleans(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reading=READINGS, kind=st.sampled_from(["success", "failure"]))
def test_a_reading_without_our_request_id_or_our_error_on_our_task_never_confirms_a_delivery(reading, kind):
    request = ApprovalRequest(public_id=uuid.uuid4())
    payload = {"output": {"approved": True}} if kind == "success" else {"error": "ApprovalDenied", "cause": "{}"}
    callback = Callback(request=request, kind=kind, payload=payload)

    resolution, why = _settle_from_execution(callback, reading, "")

    assert resolution in {CallbackResolution.CONFIRMED, CallbackResolution.CLOSED, CallbackResolution.UNCERTAIN}
    assert why
    if resolution == CallbackResolution.CONFIRMED:
        # Only an event on our own task (found by the secret token) confirms, or, with a history
        # too long to read whole, the succeeded execution's output naming the request.
        rid = str(request.public_id)
        ours = [c for c in reading.closures if c.ours]
        if kind == "success":
            assert any(c.event == "TaskSucceeded" and rid in c.output for c in ours) or (
                not reading.complete and rid in reading.output
            )
        else:
            assert any(c.event == "TaskFailed" and c.error == "ApprovalDenied" for c in ours)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.fixed_dictionaries(
            {
                "id": st.integers(1, 30),
                "previousEventId": st.integers(0, 30),
                "type": st.sampled_from(
                    ["TaskScheduled", "TaskStarted", "TaskSucceeded", "TaskFailed", "TaskTimedOut", "ExecutionAborted"]
                ),
                "taskScheduledEventDetails": st.fixed_dictionaries({"parameters": st.text(max_size=40)}),
                "taskSucceededEventDetails": st.fixed_dictionaries({"output": st.text(max_size=40)}),
            }
        ),
        max_size=30,
    )
)
def test_any_history_reads_without_crashing_and_the_reading_holds_no_token(events):
    token = "AQCEAAAA" + "x/+=" * 30
    reading = gateway._execution_reading({"status": "RUNNING"}, events, token)
    assert token not in repr(reading)
    assert len(reading.closures) == sum(e["type"] in {"TaskSucceeded", "TaskFailed", "TaskTimedOut"} for e in events)


@pytest.mark.django_db
def test_a_message_naming_someone_elses_execution_cannot_make_a_lost_delivery_look_confirmed(
    aws, demo_state_machine, people
):
    # The workflow author controls the message: its "execution" names another execution, which
    # they resume themselves with an output that names this request.
    other_arn = start(demo_state_machine)
    other = ingest_execution(aws, other_arn)
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": "Pay supplier",
        "approvers": {"groups": ["finance-approvers"]},
        "requester": "bob@example.com",
        "execution": other_arn,
    }
    approval, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    assert approval.execution_arn == other_arn
    gateway.send_task_success(
        task_token=tokens.decrypt_token(other.token_ciphertext),
        output={"approved": True, "requestId": str(approval.public_id)},
    )
    assert wait_for_execution_end(other_arn)["status"] == "SUCCEEDED"
    callback = approve(approval, people["alice"])
    worker_lost_after_claim(callback)
    aws.CALLBACK_STALE_SECONDS = 0
    services.callbacks_lease_stale()
    aws.CALLBACK_STALE_SECONDS = 120  # as a worker sees it: the sweep's lease is fresh

    assert tasks.deliver_callback(callback.pk) == "failed"  # its own token is unknown to Step Functions

    callback.refresh_from_db()
    assert callback.resolution == CallbackResolution.UNCERTAIN  # not "confirmed" by the other execution
    assert Callback.objects.get(pk=callback.pk).status == CallbackStatus.FAILED


# ---------------------------------------------------------------------------
# Afterwards, everywhere: an approval Step Functions or the system closed is nobody's "expired"
# ---------------------------------------------------------------------------
def task_timed_out(aws) -> ApprovalRequest:
    execution_arn = start(state_machine(aws, TimeoutSeconds=1))
    request = ingest_execution(aws, execution_arn)
    wait_for_execution_end(execution_arn)
    return request


def workflow_gone(aws) -> ApprovalRequest:
    machine = f"arn:aws:states:{aws.AWS_REGION}:123456789012:stateMachine:forgotten"
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": "Approve order 43",
        "approvers": {"users": ["alice@example.com"], "groups": []},
        "requester": "bob@example.com",
        "stateMachine": machine,
        "execution": machine.replace(":stateMachine:", ":execution:") + f":run-{uuid.uuid4().hex[:8]}",
    }
    return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arrange", "word"),
    [(task_timed_out, "Closed by Step Functions"), (workflow_gone, "Closed by the system")],
    ids=["task-timed-out", "workflow-gone"],
)
def test_the_inbox_and_the_refusal_page_never_say_the_approver_expired_or_closed_a_request_they_approved(
    aws, people, arrange, word
):
    request = arrange(aws)
    callback = approve(request, people["alice"])
    assert tasks.deliver_callback(callback.pk) == "failed"
    request.refresh_from_db()
    assert request.decided_by == people["alice"]

    client = signed_in(people["alice"])
    inbox = client.get("/?tab=decided").content.decode()
    row = inbox[inbox.index('<div class="request-side">') :].split("</li>")[0]
    status = " ".join(row.split())
    assert word in status, status
    assert "Expired" not in status and f"{word} by" not in status, status
    assert "decided by you" in status, status

    # The same decision again (a second tab, an old link): already closed — by whom, truly.
    client.handler.enforce_csrf_checks = False  # the refusal, not CSRF, is under test
    refused = client.post(f"/requests/{request.public_id}/decide/", {"decision": "approve", "comment": ""})
    assert refused.status_code == 409
    page = " ".join(refused.content.decode().split())
    assert "expired by alice" not in page.lower() and "already expired" not in page.lower(), page
    assert word.lower() in page.lower()


@pytest.mark.django_db
def test_the_poll_the_api_and_the_cli_say_closed_by_step_functions_not_expired_or_failed(aws, people, capsys):
    from approvals_cli import cli

    request = task_timed_out(aws)
    callback = approve(request, people["alice"])
    assert tasks.deliver_callback(callback.pk) == "failed"

    client = signed_in(people["alice"])
    poll = client.get(f"/requests/{request.public_id}/status/").json()
    assert poll["statusText"] == "Closed by Step Functions"
    resource = client.get(f"/api/v1/requests/{request.public_id}/").json()
    assert resource["status"] == "expired"  # the machine value stays
    assert resource["status_text"] == "Closed by Step Functions"
    assert resource["callback"]["text"] == "closed by Step Functions (timed out / execution ended)"

    cli.print_request(resource)
    printed = capsys.readouterr().out
    assert "Closed by Step Functions" in printed and "closed by Step Functions (timed out" in printed
    assert "expired" not in printed.lower() and "failed" not in printed, printed
