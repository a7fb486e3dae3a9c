"""Workers keep their database connections across tasks, and survive PostgreSQL dropping them.

Real parts: PostgreSQL, the moto server with real executions of the example state machine, a
real Celery worker process (prefork pool, embedded beat, pool children replaced as they go).
The fault is real too: `pg_terminate_backend` on the worker's backends is what PostgreSQL does to
every session when it restarts or an operator ends them, produced on demand.
"""

import json
import os
import threading
import uuid
from urllib.parse import urlsplit

import boto3
import psycopg
import pytest
from django.contrib.auth.models import Group
from django.db import OperationalError, connection

from approvals import services
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, AuditEvent, Callback, CallbackStatus, RequestStatus, User
from approvals.services.notifications import new_requests_plan
from tests.conftest import Process, database_url, venv_bin
from tests.support import wait_for

BODY = {
    "title": "Approve order 42",
    "approvers": {"users": ["alice@example.com"], "groups": []},
    "requester": "bob@example.com",
    "details": {"amount": "42.00"},
}


def alice() -> User:
    user, _ = User.objects.get_or_create(
        username="alice", defaults={"email": "alice@example.com", "oidc_issuer": "https://idp.test", "oidc_sub": "a"}
    )
    user.groups.add(Group.objects.get_or_create(name="finance-approvers")[0])
    return user


def start_executions(machine_arn: str, count: int) -> list[str]:
    return [
        gateway.start_execution(state_machine_arn=machine_arn, name=f"c-{uuid.uuid4().hex[:12]}", execution_input=BODY)
        for _ in range(count)
    ]


def approve_as_they_arrive(execution_arns: list[str], approver: User) -> None:
    """Decide each request once the worker's consumer ingested it (the decision enqueues its callback)."""
    waiting = set(execution_arns)

    def arrived_and_approved():
        for request in ApprovalRequest.objects.filter(execution_arn__in=waiting, status=RequestStatus.PENDING):
            services.approval_decide(public_id=request.public_id, user=approver, approve=True, comment="")
            waiting.discard(request.execution_arn)
        return not waiting

    try:
        wait_for(arrived_and_approved, timeout=120, interval=0.2)
    except AssertionError:
        raise AssertionError(f"not approved: {len(waiting)} of {len(execution_arns)}; {diagnosis(waiting)}") from None


def diagnosis(execution_arns) -> str:
    from django.conf import settings

    from approvals.models import IngestError

    sqs = boto3.client(
        "sqs", endpoint_url=settings.AWS_ENDPOINT_URL, region_name=settings.AWS_REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",  # noqa: S106 - the emulator
    )  # fmt: skip
    queues = {}
    for url in (settings.APPROVAL_QUEUE_URL, settings.APPROVAL_QUEUE_URL + "-dlq"):
        try:
            queues[url.rsplit("/", 1)[1]] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        except Exception as error:  # noqa: BLE001 - a diagnosis only
            queues[url] = repr(error)
    executions = {arn: gateway.describe_execution(execution_arn=arn)["status"] for arn in execution_arns}
    found = list(ApprovalRequest.objects.filter(execution_arn__in=execution_arns).values("status"))
    errors = list(IngestError.objects.values_list("sqs_message_id", "code", "reason"))
    return (
        f"requests for them: {found}; all requests {ApprovalRequest.objects.count()}; ingest errors {errors}; "
        f"executions {executions}; queues {queues}"
    )


def all_delivered(execution_arns: list[str]) -> bool:
    delivered = Callback.objects.filter(request__execution_arn__in=execution_arns, status=CallbackStatus.DELIVERED)
    return delivered.count() == len(execution_arns)


class Terminator:
    """A connection of the test's own that ends every other session on the test database."""

    def __init__(self):
        parts = urlsplit(database_url())
        self.connection = psycopg.connect(parts.geturl(), autocommit=True)
        with connection.cursor() as cursor:  # the test's Django connection is spared
            cursor.execute("SELECT pg_backend_pid()")
            self.spared = [cursor.fetchone()[0], self.connection.info.backend_pid]

    def worker_backends(self) -> set[tuple[int, str]]:
        rows = self.connection.execute(
            "SELECT pid, backend_start::text FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend' AND NOT pid = ANY(%s)",
            [self.spared],
        ).fetchall()
        return set(rows)

    def terminate_all(self) -> int:
        rows = self.connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend' AND NOT pid = ANY(%s)",
            [self.spared],
        ).fetchall()
        return sum(1 for (ended,) in rows if ended)

    def close(self) -> None:
        self.connection.close()


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_database_sessions_are_terminated_mid_run_loses_nothing_and_recovers(
    aws, demo_state_machine, log_dir
):
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "600",  # persistent connections, as in production
        "CELERY_BROKER_URL": aws.CELERY_BROKER_URL,
        "AWS_ENDPOINT_URL": aws.AWS_ENDPOINT_URL,
        "APPROVAL_QUEUE_URL": aws.APPROVAL_QUEUE_URL,
        "APPROVAL_CONSUMER_WAIT_SECONDS": "1",
        # A batch whose ingestion lost its connection comes back soon (it was not deleted).
        "APPROVAL_CONSUMER_VISIBILITY_TIMEOUT": "5",
        # A callback whose task lost its connection is queued again by the outbox sweep.
        "CALLBACK_SWEEP_SECONDS": "1",
        "CALLBACK_STALE_SECONDS": "2",
        "WORKER_METRICS_PORT": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(log_dir / f"metrics-{uuid.uuid4().hex[:8]}"),
    }
    command = [
        venv_bin("celery"), "-A", "portal", "worker", "-B", "--loglevel", "INFO",
        "--concurrency", "2", "--max-tasks-per-child", "50",  # pool children are replaced during the run
        "--schedule", str(log_dir / f"beat-{uuid.uuid4().hex[:8]}"),
    ]  # fmt: skip
    approver = alice()
    terminator = Terminator()
    worker = Process("worker-connections", command, env, log_dir)
    try:
        # 1. Connections live across tasks: the same backends before and after more deliveries.
        first = start_executions(demo_state_machine, 6)
        approve_as_they_arrive(first, approver)
        wait_for(lambda: all_delivered(first), timeout=90)
        kept_before = terminator.worker_backends()
        second = start_executions(demo_state_machine, 6)
        approve_as_they_arrive(second, approver)
        wait_for(lambda: all_delivered(second), timeout=90)
        kept = kept_before & terminator.worker_backends()
        # The consumer thread's connection and at least one pool child's outlived 6 more deliveries
        # (with a connection per task only the consumer's would).
        assert len(kept) >= 2, f"worker connections not kept across tasks: {kept_before} then {kept}"

        # 2. PostgreSQL ends the idle worker's sessions (a restart between tasks): each task's health
        # check replaces its connection before using it, so no task fails for it.
        log_mark = len(worker.output())
        assert terminator.terminate_all() >= 2
        idle = start_executions(demo_state_machine, 4)
        approve_as_they_arrive(idle, approver)
        wait_for(lambda: all_delivered(idle), timeout=90)
        failed = [line for line in worker.output()[log_mark:].splitlines() if "raised unexpected" in line]
        assert failed == [], failed

        # 3. PostgreSQL ends every worker session again and again while messages and callbacks flow.
        third = start_executions(demo_state_machine, 30)
        terminated: list[int] = []
        stop = threading.Event()

        def keep_terminating() -> None:
            # At once, then every 0.7 s: the flow may take less than the first interval now.
            while len(terminated) < 8:
                terminated.append(terminator.terminate_all())
                if stop.wait(0.7):
                    break

        killer = threading.Thread(target=keep_terminating)
        killer.start()
        try:
            approve_as_they_arrive(third, approver)
        finally:
            stop.set()
            killer.join()
        assert sum(terminated) > 0, "the fault never hit a worker session"
        wait_for(lambda: all_delivered(third), timeout=120)

        # 4. Recovered: new work goes through with nothing terminating any more.
        fourth = start_executions(demo_state_machine, 5)
        approve_as_they_arrive(fourth, approver)
        wait_for(lambda: all_delivered(fourth), timeout=90)
        assert worker.popen.poll() is None, worker.output()[-3000:]
    finally:
        worker.stop()
        terminator.close()

    executions = first + second + idle + third + fourth
    # Every execution's message became exactly one request, and its decision reached Step Functions once.
    assert ApprovalRequest.objects.filter(execution_arn__in=executions).count() == len(executions)
    assert ApprovalRequest.objects.values("execution_arn").distinct().count() == len(executions)
    assert Callback.objects.filter(request__execution_arn__in=executions).count() == len(executions)
    for arn in executions:
        assert gateway.describe_execution(execution_arn=arn)["status"] == "SUCCEEDED", arn
    delivered_events = AuditEvent.objects.filter(action="callback_delivered", request__execution_arn__in=executions)
    assert delivered_events.count() == len(executions)
    assert delivered_events.values("request").distinct().count() == len(executions)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_session_ended_while_planning_notifications_leaves_the_request_to_plan_again_not_silent():
    # The fault is PostgreSQL's own: a trigger ends the inserting session (pg_terminate_backend
    # on itself) when notification planning inserts its first row, as a restart would end it at
    # that moment. Planning runs after the ingest's commit now (a task per batch): the message is
    # stored and may be deleted, and the planning's failure must neither be swallowed nor mark
    # the request planned, or nobody would ever hear of it. (Before planning moved out of the
    # ingest, this fault rolled the ingest back and had to keep the message on the queue.)
    alice()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION end_my_session() RETURNS trigger AS $$ "
            "BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER end_my_session BEFORE INSERT ON approvals_notification "
            "FOR EACH ROW EXECUTE FUNCTION end_my_session()"
        )
    body = json.dumps({**BODY, "taskToken": f"lost-{uuid.uuid4()}"})
    try:
        assert services.received_message_ingest(sqs_message_id="m-1", body=body, max_bytes=256 * 1024) is None
        request = ApprovalRequest.objects.get(sqs_message_id="m-1")
        assert request.notifications_unplanned_since is not None
        with pytest.raises(OperationalError):
            new_requests_plan(request_ids=[request.pk])
    finally:
        connection.close()  # the ended session; the next query opens a new one
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER end_my_session ON approvals_notification")
            cursor.execute("DROP FUNCTION end_my_session()")

    request.refresh_from_db()
    assert request.notifications_unplanned_since is not None and not request.notifications.exists()
    # The sweep's next planning (or the task's retry) plans it, once.
    assert new_requests_plan(request_ids=[request.pk])
    request.refresh_from_db()
    assert request.notifications_unplanned_since is None and request.notifications.exists()


# ---------------------------------------------------------------------------
# The Step Functions client: made once per process, at its start
# ---------------------------------------------------------------------------
def test_a_worker_process_makes_its_step_functions_client_at_start_not_in_its_first_callback():
    from celery import signals

    gateway._client.cache_clear()
    signals.worker_process_init.send(sender=None)
    assert gateway._client.cache_info().currsize == 1
    misses = gateway._client.cache_info().misses
    gateway._sfn()  # what the first callback asks for
    assert gateway._client.cache_info().misses == misses


def test_threads_that_need_the_same_client_at_once_make_it_once():
    """A batch's Send* calls start on several threads with no client made yet: one makes it,
    the others wait for it (each making its own would load the service model again)."""
    gateway._client.cache_clear()
    start = threading.Barrier(8)
    clients = []

    def first_call():
        start.wait()
        clients.append(gateway._sfn())

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gateway._client.cache_info().misses == 1
    assert len({id(client) for client in clients}) == 1
