"""Nothing lost, nothing twice: crashes, duplicates, poison, outages, throttling, limits.

Real parts throughout (moto server, PostgreSQL or SQLite, Redis or the SQLite broker, Celery
worker processes). `unittest.mock` appears only where a fault must be produced on demand that
the real part cannot produce (throttling, a lost response, a crash at one exact line); each
such test says so.
"""

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import timedelta
from unittest import mock

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.utils import timezone

from approvals import selectors, services, tasks
from approvals.contract import parse_message
from approvals.integrations import aws as gateway
from approvals.management.commands.aws_bootstrap import demo_definition
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Callback,
    CallbackResolution,
    CallbackStatus,
    IngestError,
    Notification,
    RequestStatus,
    User,
)
from tests.conftest import Process, database_url, free_port, venv_bin
from tests.support import sso_login, wait_for
from worker.consumer import consume_once

BODY = {
    "title": "Approve order 42",
    "approvers": {"users": ["alice@example.com"], "groups": []},
    "requester": "bob@example.com",
    "details": {"amount": "42.00"},
}


def sqs_client(settings):
    return boto3.client(
        "sqs",
        region_name=settings.AWS_REGION,
        endpoint_url=settings.AWS_ENDPOINT_URL,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def queue_depth(settings, queue_url: str) -> int:
    attributes = sqs_client(settings).get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def message(token: str, **extra) -> str:
    return json.dumps({"taskToken": token, **BODY, **extra})


def consume(settings, *, visibility_timeout: int = 30, wait_seconds: int = 0) -> int:
    return consume_once(
        queue_url=settings.APPROVAL_QUEUE_URL,
        wait_seconds=wait_seconds,
        visibility_timeout=visibility_timeout,
        max_bytes=settings.APPROVAL_MAX_MESSAGE_BYTES,
    )


def alice() -> User:
    user, _ = User.objects.get_or_create(
        username="alice", defaults={"email": "alice@example.com", "oidc_issuer": "https://idp.test", "oidc_sub": "a"}
    )
    user.groups.add(Group.objects.get_or_create(name="finance-approvers")[0])
    return user


def state_machine(settings, **task_overrides) -> str:
    """The example state machine from deploy/, with some of its task state's fields changed."""
    definition = demo_definition(settings.APPROVAL_QUEUE_URL)
    task = definition["States"]["WaitForApproval"]
    body = task["Parameters"]["MessageBody"]
    if "HeartbeatSeconds" not in task_overrides:
        task.pop("HeartbeatSeconds", None)
        body.pop("heartbeatSeconds", None)
    task.update(task_overrides)
    if "HeartbeatSeconds" in task_overrides:
        body["heartbeatSeconds"] = task_overrides["HeartbeatSeconds"]
    if "TimeoutSeconds" in task_overrides:
        # As a workflow author might: the portal is not told, so only Step Functions times out.
        body.pop("timeoutSeconds", None)
    return gateway.ensure_state_machine(
        name=f"reliability-{uuid.uuid4().hex[:8]}",
        definition=definition,
        role_arn="arn:aws:iam::123456789012:role/approval-demo-states",
    )


def start(machine_arn: str) -> str:
    return gateway.start_execution(
        state_machine_arn=machine_arn, name=f"r-{uuid.uuid4().hex[:12]}", execution_input=BODY
    )


def ingest_execution(settings, execution_arn: str) -> ApprovalRequest:
    def arrived():
        consume(settings, wait_seconds=1)
        return ApprovalRequest.objects.filter(execution_arn=execution_arn).first()

    return wait_for(arrived, timeout=30, interval=0.1)


def status_of(execution_arn: str) -> dict:
    return gateway.describe_execution(execution_arn=execution_arn)


def approve_and_deliver(request: ApprovalRequest, *, comment: str = "") -> Callback:
    with transaction.atomic():  # on_commit publishes; the test delivers in-process below
        services.approval_decide(public_id=request.public_id, user=alice(), approve=True, comment=comment)
    callback = Callback.objects.get(request=request)
    tasks.deliver_callback(callback.pk)
    callback.refresh_from_db()
    return callback


class FaultInjectingClient:
    """Wraps the real Step Functions client; the first calls of a method fail as scripted."""

    def __init__(self, real, method: str, faults: list):
        self.real = real
        self.method = method
        self.faults = list(faults)
        self.calls = 0

    def __getattr__(self, name):
        attribute = getattr(self.real, name)
        if name != self.method:
            return attribute

        def call(**kwargs):
            self.calls += 1
            if self.faults:
                fault = self.faults.pop(0)
                if fault == "send-then-lose-response":
                    attribute(**kwargs)
                    raise ReadTimeoutError(endpoint_url="http://aws")
                raise fault
            return attribute(**kwargs)

        return call


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendTaskSuccess",
    )


# ---------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(transactional_db, aws, log_dir):
    queue_url = aws.APPROVAL_QUEUE_URL
    sqs = sqs_client(aws)
    for start_at in range(0, 200, 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": message(f"kill-{start_at + i:04d}-{uuid.uuid4()}")} for i in range(10)
            ],
        )
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": aws.CELERY_BROKER_URL,
        "AWS_ENDPOINT_URL": aws.AWS_ENDPOINT_URL,
        "APPROVAL_QUEUE_URL": queue_url,
        "APPROVAL_CONSUMER_WAIT_SECONDS": "1",
        "APPROVAL_CONSUMER_VISIBILITY_TIMEOUT": "4",
    }
    command = [venv_bin("celery"), "-A", "portal", "worker", "--pool", "solo", "--loglevel", "INFO"]

    first = Process("worker-killed", command, env, log_dir)
    try:
        wait_for(lambda: ApprovalRequest.objects.count() >= 15, timeout=60, interval=0.02)
        os.killpg(first.popen.pid, signal.SIGKILL)
        first.popen.wait()
    finally:
        first.stop()
    ingested_before_restart = ApprovalRequest.objects.count()
    assert ingested_before_restart < 200, "the worker finished before it could be killed mid-batch"

    second = Process("worker-restarted", command, env, log_dir)
    try:
        wait_for(lambda: ApprovalRequest.objects.count() >= 200, timeout=120)
        wait_for(lambda: queue_depth(aws, queue_url) == 0, timeout=60)
    finally:
        second.stop()
    assert ApprovalRequest.objects.count() == 200
    assert ApprovalRequest.objects.values("token_fingerprint").distinct().count() == 200


@pytest.mark.django_db(transaction=True)
def test_the_same_message_three_times_and_two_racing_consumers_make_one_request(aws):
    body = message(f"dup-{uuid.uuid4()}")
    for _ in range(3):
        gateway.send_message(queue_url=aws.APPROVAL_QUEUE_URL, body=body)
    barrier = threading.Barrier(2)

    def consumer():
        try:
            barrier.wait()
            for _ in range(3):
                consume(aws)
        finally:
            connection.close()

    threads = [threading.Thread(target=consumer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert ApprovalRequest.objects.count() == 1
    assert queue_depth(aws, aws.APPROVAL_QUEUE_URL) == 0


@pytest.mark.django_db
def test_ten_poison_messages_among_a_hundred_good_ones_are_recorded_and_deleted_without_stopping_the_consumer(aws):
    sqs = sqs_client(aws)
    bodies = [message(f"good-{i}-{uuid.uuid4()}") for i in range(100)]
    poison = ["not json {", '{"title": "no token"}', '{"taskToken": 5}', "[]", '{"taskToken": "t", "approvers": "x"}']
    bodies += [poison[i % len(poison)] + " " * i for i in range(10)]
    for start_at in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=aws.APPROVAL_QUEUE_URL,
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start_at : start_at + 10])],
        )
    dlq_url = sqs.get_queue_url(QueueName=f"{aws.APPROVAL_QUEUE_NAME}-dlq")["QueueUrl"]

    def drained():
        consume(aws, visibility_timeout=1)
        return queue_depth(aws, aws.APPROVAL_QUEUE_URL) == 0 and IngestError.objects.count() == 10

    wait_for(drained, timeout=90, interval=0.2)

    assert ApprovalRequest.objects.count() == 100
    # Each poison message is kept with its error (for the admin's replay) and deleted at once:
    # seen once, and nothing for the redrive policy to move to the DLQ.
    assert all(error.receive_count == 1 and error.message_ciphertext for error in IngestError.objects.all())
    assert queue_depth(aws, dlq_url) == 0


# ---------------------------------------------------------------------------
# Decisions and callbacks
# ---------------------------------------------------------------------------
@pytest.mark.e2e
# portal_stack's database, asked for below: pytest-django sets up databases for marked tests only.
@pytest.mark.django_db(transaction=True)
@pytest.mark.portal_worker_args("-B")
def test_a_decision_made_while_the_broker_is_down_is_delivered_exactly_once_when_it_returns(
    request, aws, demo_state_machine, log_dir
):
    broker_port = free_port()
    request.node.add_marker(
        pytest.mark.portal_env(
            CELERY_BROKER_URL=f"redis://127.0.0.1:{broker_port}/0",
            CALLBACK_SWEEP_SECONDS="1",
            CALLBACK_STALE_SECONDS="2",
        )
    )
    stack = request.getfixturevalue("portal_stack")
    execution_arn = start(demo_state_machine)
    approval = wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())
    session = sso_login(stack["url"], "alice")

    detail_url = f"{stack['url']}/requests/{approval.public_id}/"
    session.get(detail_url, timeout=15)
    response = session.post(
        f"{detail_url}decide/",
        data={"csrfmiddlewaretoken": session.cookies["portal_csrftoken"], "decision": "approve", "comment": "outage"},
        headers={"Referer": detail_url},
        timeout=30,
    )
    assert response.status_code == 200 and response.url.endswith("/result/"), response.text[:300]

    callback = Callback.objects.get(request=approval)
    assert callback.status == CallbackStatus.PENDING
    assert status_of(execution_arn)["status"] == "RUNNING"
    redis = subprocess.Popen(
        ["redis-server", "--port", str(broker_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: status_of(execution_arn)["status"] != "RUNNING", timeout=90)
        assert status_of(execution_arn)["status"] == "SUCCEEDED"
        wait_for(lambda: Callback.objects.get(pk=callback.pk).status == CallbackStatus.DELIVERED, timeout=30)
        time.sleep(3)  # a few more sweeps: nothing is sent twice
        assert Callback.objects.get(pk=callback.pk).attempts == 1
        assert AuditEvent.objects.filter(request=approval, action="callback_delivered").count() == 1
    finally:
        redis.terminate()
        redis.wait()


@pytest.mark.django_db
def test_throttling_and_5xx_are_retried_with_backoff_and_delivered_once(aws, demo_state_machine):
    execution_arn = start(demo_state_machine)
    approval = ingest_execution(aws, execution_arn)
    real = gateway._sfn()
    # Injected faults: the moto server cannot throttle or fail with a 5xx on demand.
    faulty = FaultInjectingClient(
        real,
        "send_task_success",
        [
            client_error("ThrottlingException", 400),
            client_error("ThrottlingException", 400),
            client_error("InternalFailure", 500),
        ],
    )
    with (
        mock.patch.object(gateway, "_sfn", return_value=faulty),
        mock.patch.object(tasks.deliver_callback, "apply_async") as scheduled,
    ):  # the retry is what a worker would run later: the test runs it itself
        callback = approve_and_deliver(approval)
        countdowns = []
        while callback.status == CallbackStatus.RETRYING:
            countdowns.append(scheduled.call_args.kwargs["countdown"])
            tasks.deliver_callback(callback.pk)
            callback.refresh_from_db()

    assert callback.status == CallbackStatus.DELIVERED
    assert callback.attempts == 4
    assert len(countdowns) == 3 and all(countdown >= 1 for countdown in countdowns)
    assert faulty.calls == 4
    wait_for(lambda: status_of(execution_arn)["status"] == "SUCCEEDED", timeout=15)


@pytest.mark.django_db
def test_a_token_that_timed_out_in_step_functions_marks_the_callback_permanent_and_the_request_expired(aws):
    execution_arn = start(state_machine(aws, TimeoutSeconds=2))
    approval = ingest_execution(aws, execution_arn)
    wait_for(lambda: status_of(execution_arn)["status"] != "RUNNING", timeout=20)

    callback = approve_and_deliver(approval)

    assert callback.status == CallbackStatus.FAILED
    assert callback.error_code in services.CLOSED_TASK_CODES
    approval.refresh_from_db()
    assert approval.status == RequestStatus.EXPIRED
    assert AuditEvent.objects.filter(request=approval, action="closed_by_step_functions").exists()
    tasks.deliver_callback(callback.pk)  # no loop: nothing more is sent
    assert Callback.objects.get(pk=callback.pk).attempts == 1


@pytest.mark.django_db(transaction=True)
def test_two_approvers_deciding_at_the_same_moment_make_exactly_one_decision(aws):
    services.approval_request_ingest(
        message=parse_message(
            json.dumps({"taskToken": f"race-{uuid.uuid4()}", "approvers": {"groups": ["finance-approvers"]}})
        )
    )
    approval = ApprovalRequest.objects.get()
    group = Group.objects.create(name="finance-approvers")
    people = []
    for name in ("alice", "erin"):
        user = User.objects.create(username=name, email=f"{name}@example.com", oidc_issuer="i", oidc_sub=name)
        user.groups.add(group)
        people.append(user)
    barrier = threading.Barrier(2)
    outcomes = []

    def decide_now(user):
        try:
            barrier.wait()
            services.approval_decide(public_id=approval.public_id, user=user, approve=True)
            outcomes.append("decided")
        except services.ApprovalError as error:
            outcomes.append(error.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide_now, args=(user,)) for user in people]
    with mock.patch("approvals.services.callbacks.enqueue_on_commit"):  # no worker in this test: nothing to publish to
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(outcomes) == ["decided", "not_pending"]
    assert Callback.objects.count() == 1
    assert AuditEvent.objects.filter(action="approved").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deadline_in_ms", [0, 5, 20])
@pytest.mark.parametrize("racers", [("decide", "sweep"), ("decide", "cancel", "sweep")])
def test_a_decision_an_admins_cancel_and_the_expiry_sweep_racing_at_the_deadline_make_exactly_one_outcome(
    deadline_in_ms, racers
):
    from tests.support import make_user

    alice, carol = make_user("alice", "finance-approvers"), make_user("carol", admin=True)
    body = {"taskToken": f"race-{uuid.uuid4()}", "approvers": {"groups": ["finance-approvers"]}}
    approval, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    deadline = timezone.now() + timedelta(milliseconds=deadline_in_ms)
    ApprovalRequest.objects.filter(pk=approval.pk).update(deadline=deadline)
    start = threading.Barrier(len(racers))
    outcomes: dict[str, object] = {}

    def decide():
        try:
            services.approval_decide(public_id=approval.public_id, user=alice, approve=True)
            return "decided"
        except services.ApprovalError as error:
            return error.code

    def cancel():
        try:
            services.approval_cancel(request_id=approval.pk, actor=carol, reason="wrong order")
            return "cancelled"
        except services.ApprovalError as error:
            return error.code

    def sweep():
        while timezone.now() <= deadline:  # beat's sweep finds only what is overdue
            time.sleep(0.001)
        return tasks.expire_overdue_requests()

    def run(name, attempt):
        try:
            start.wait()
            outcomes[name] = attempt()
        finally:
            connection.close()

    attempts = {"decide": decide, "cancel": cancel, "sweep": sweep}
    threads = [threading.Thread(target=run, args=(name, attempts[name])) for name in racers]
    with mock.patch("approvals.services.callbacks.enqueue_on_commit"):  # no worker here: nothing to publish to
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    approval.refresh_from_db()
    closed = {"decided": RequestStatus.APPROVED, "cancelled": RequestStatus.CANCELLED}
    won = [name for name, outcome in outcomes.items() if outcome in ("decided", "cancelled", 1)]
    assert len(won) == 1, outcomes
    assert approval.status == closed.get(outcomes[won[0]], RequestStatus.EXPIRED)
    assert outcomes["decide"] in ("decided", "not_pending", "expired")
    assert outcomes.get("cancel", "not_pending") in ("cancelled", "not_pending")
    assert Callback.objects.filter(request=approval).count() == 1
    closing = AuditEvent.objects.filter(request=approval, action__in=["approved", "cancelled", "expired"])
    assert [event.action for event in closing] == [approval.status]
    if approval.status == RequestStatus.APPROVED:
        assert approval.decided_at < deadline
    if approval.status == RequestStatus.EXPIRED:
        assert approval.decided_at >= deadline


@pytest.mark.django_db
def test_a_crash_between_commit_and_publish_is_repaired_by_the_relay_and_a_rollback_sends_nothing(
    aws, demo_state_machine, settings
):
    execution_arn = start(demo_state_machine)
    approval = ingest_execution(aws, execution_arn)
    other = ingest_execution(aws, start(demo_state_machine))
    # This test runs inside one database transaction, so on-commit hooks never fire: the
    # decision is committed (a savepoint here) and nothing is published, exactly the state a
    # crash between COMMIT and the broker publish leaves behind.
    with transaction.atomic():
        services.approval_decide(public_id=approval.public_id, user=alice(), approve=True)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.approval_decide(public_id=other.public_id, user=alice(), approve=True)
        raise RuntimeError("rolled back")
    settings.CALLBACK_STALE_SECONDS = 0

    leased = services.callbacks_lease_stale()

    callback = Callback.objects.get(request=approval)
    assert leased == [callback.pk]
    assert not Callback.objects.filter(request=other).exists()
    settings.CALLBACK_STALE_SECONDS = 120  # as a worker sees it: the sweep's lease is fresh
    assert tasks.deliver_callback(callback.pk) == "delivered"
    wait_for(lambda: status_of(execution_arn)["status"] == "SUCCEEDED", timeout=15)
    assert services.callbacks_lease_stale() == []


@pytest.mark.django_db
def test_an_ambiguous_send_answered_by_a_closed_token_is_confirmed_from_the_execution_history_without_a_loop(
    aws, demo_state_machine
):
    execution_arn = start(demo_state_machine)
    approval = ingest_execution(aws, execution_arn)
    # Injected: the first call reaches AWS but its response is lost (moto can't lose one).
    faulty = FaultInjectingClient(gateway._sfn(), "send_task_success", ["send-then-lose-response"])
    with (
        mock.patch.object(gateway, "_sfn", return_value=faulty),
        mock.patch.object(tasks.deliver_callback, "apply_async"),
    ):
        callback = approve_and_deliver(approval)
        assert callback.status == CallbackStatus.RETRYING
        tasks.deliver_callback(callback.pk)
        tasks.deliver_callback(callback.pk)

    callback.refresh_from_db()
    # The retry was answered "closed"; the execution's history shows our output: delivered.
    assert callback.status == CallbackStatus.DELIVERED
    assert callback.resolution == CallbackResolution.CONFIRMED
    assert callback.attempts == 2
    assert AuditEvent.objects.get(request=approval, action="callback_delivered").data["resolution"] == "confirmed"
    approval.refresh_from_db()
    assert approval.status == RequestStatus.APPROVED  # the decision stands
    wait_for(lambda: status_of(execution_arn)["status"] == "SUCCEEDED", timeout=15)


@pytest.mark.django_db
def test_an_output_of_exactly_the_limit_is_sent_and_one_byte_more_is_refused_before_the_call(aws, demo_state_machine):
    def comment_for(target: int, request: ApprovalRequest) -> str:
        # The comment appears twice in the output (on top, and in its approval): each character
        # counts double, so the closest sizes to `target` that can be made are target or target+1.
        identity = {"email": "alice@example.com", "sub": "a", "issuer": "https://idp.test"}
        at = "2026-11-25T16:00:00.123456+00:00"
        probe = {
            "approved": True,
            "requestId": str(request.public_id),
            "decision": "approved",
            "decidedBy": identity,
            "decidedAt": at,
            "comment": "",
            "policy": {"required": 1, "distinctGroups": False, "rejectOn": "any"},
            "approvals": [{**identity, "decidedAt": at, "comment": ""}],
            "rejections": [],
            "conversation": [],
        }
        missing = target - services.output_size(probe)
        return "é" * (missing // 4) + "x" * ((missing % 4 + 1) // 2)  # multi-byte characters

    exact_arn = start(demo_state_machine)
    exact = ingest_execution(aws, exact_arn)
    over = ingest_execution(aws, over_arn := start(demo_state_machine))

    sent = approve_and_deliver(exact, comment=comment_for(services.MAX_OUTPUT_BYTES - 1, exact))
    refused = approve_and_deliver(over, comment=comment_for(services.MAX_OUTPUT_BYTES + 1, over))

    limit = services.MAX_OUTPUT_BYTES
    assert services.output_size(sent.payload["output"]) in {limit - 1, limit}
    assert sent.status == CallbackStatus.DELIVERED, (sent.error_code, sent.last_error)
    # Step Functions accepted it and the task ended. (The moto server then re-measures the
    # result with escaped non-ASCII and fails the state with States.DataLimitExceeded; AWS
    # counts UTF-8 bytes. Either way the execution no longer waits.)
    wait_for(lambda: status_of(exact_arn)["status"] != "RUNNING", timeout=15)
    assert services.output_size(refused.payload["output"]) in {limit + 1, limit + 2}
    assert refused.status == CallbackStatus.FAILED
    assert refused.error_code == "over_limit"
    assert "262144" in refused.last_error
    assert refused.attempts == 0  # refused before any call
    assert status_of(over_arn)["status"] == "RUNNING"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("heartbeat_seconds", "since_last", "due"),
    [
        (40, 11, True),  # a third (13 s) plus the next sweep (30 s) is 43 s: the task would time out at 40
        (31, 0, True),  # only a heartbeat on every sweep (30 s apart) keeps it alive
        (3600, 11, False),  # a long interval keeps its third: no heartbeat every 30 s
        (3600, 1200, True),
    ],
)
def test_a_heartbeat_the_next_sweep_would_send_too_late_is_sent_by_this_one(
    settings, heartbeat_seconds, since_last, due
):
    settings.HEARTBEAT_SWEEP_SECONDS = 30
    body = {"taskToken": f"beat-{uuid.uuid4()}", "approvers": {"groups": ["finance-approvers"]}}
    approval, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    ApprovalRequest.objects.filter(pk=approval.pk).update(
        heartbeat_seconds=heartbeat_seconds, last_heartbeat_at=timezone.now() - timedelta(seconds=since_last)
    )

    assert (approval.pk in selectors.heartbeat_due_request_ids()) is due


@pytest.mark.django_db
def test_a_message_that_waited_most_of_its_heartbeat_interval_in_the_queue_gets_a_heartbeat_at_once(settings):
    settings.HEARTBEAT_SWEEP_SECONDS = 30
    body = {
        "taskToken": f"beat-{uuid.uuid4()}",
        "approvers": {"groups": ["finance-approvers"]},
        "heartbeatSeconds": 300,
    }
    received = timezone.now()
    # Sent 250 s before the portal received it (a backlog, the workers down for a deploy): Step
    # Functions' HeartbeatSeconds=300 started at the send and times the task out 50 s after receipt.
    waited, _ = services.approval_request_ingest(
        message=parse_message(json.dumps(body)), sent_at=received - timedelta(seconds=250)
    )
    fresh, _ = services.approval_request_ingest(
        message=parse_message(json.dumps({**body, "taskToken": f"beat-{uuid.uuid4()}"})), sent_at=received
    )
    assert waited.message_sent_at == received - timedelta(seconds=250)

    due = selectors.heartbeat_due_request_ids()

    assert waited.pk in due  # a third of the interval (100 s) since the send is long past
    assert fresh.pk not in due  # one sent as it was received still waits a third of its interval


@pytest.mark.django_db
def test_heartbeats_keep_a_waiting_task_alive_past_its_heartbeat_seconds(aws):
    machine = state_machine(aws, HeartbeatSeconds=3, TimeoutSeconds=120)
    kept_alive_arn = start(machine)
    kept_alive = ingest_execution(aws, kept_alive_arn)
    neglected_arn = start(machine)
    neglected = ingest_execution(aws, neglected_arn)
    assert kept_alive.heartbeat_seconds == 3
    ApprovalRequest.objects.filter(pk=neglected.pk).update(heartbeat_seconds=None)  # the control: no heartbeats

    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        tasks.send_heartbeats()  # what beat runs every HEARTBEAT_SWEEP_SECONDS
        time.sleep(0.5)

    assert status_of(neglected_arn)["status"] == "FAILED"  # moto enforces HeartbeatSeconds
    assert status_of(kept_alive_arn)["status"] == "RUNNING"
    assert ApprovalRequest.objects.get(pk=kept_alive.pk).last_heartbeat_at is not None
    approve_and_deliver(kept_alive)
    wait_for(lambda: status_of(kept_alive_arn)["status"] == "SUCCEEDED", timeout=15)


@pytest.mark.django_db
def test_a_heartbeat_answered_task_timed_out_closes_the_request_in_the_portal(aws):
    execution_arn = start(state_machine(aws, TimeoutSeconds=2, HeartbeatSeconds=1))
    approval = ingest_execution(aws, execution_arn)
    wait_for(lambda: status_of(execution_arn)["status"] != "RUNNING", timeout=20)
    ApprovalRequest.objects.filter(pk=approval.pk).update(last_heartbeat_at=None)

    tasks.send_heartbeats()

    approval.refresh_from_db()
    assert approval.status == RequestStatus.EXPIRED
    assert AuditEvent.objects.filter(request=approval, action="closed_by_step_functions").exists()
    # The requester hears how it ended.
    assert Notification.objects.filter(request=approval, kind="outcome", recipient="bob@example.com").exists()
