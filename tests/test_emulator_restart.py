"""A restarted AWS emulator is not a trap.

The moto server keeps everything in memory: after `make run` restarts it, the database still
holds requests whose executions no longer exist anywhere. Deciding one must not read "You expired
this request", nor send the requester an "Approved" mail as if the workflow had resumed: the
system closed it, because the workflow no longer exists, and the page says how to start fresh.

Real parts: a moto server of this test's own (restarted on the same port, as `make run` does),
PostgreSQL, the example state machine.
"""

import importlib.util
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from approvals import links, services, tasks
from approvals.contract import ContractError, parse_message
from approvals.integrations import aws as gateway
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Callback,
    CallbackResolution,
    Notification,
    RequestStatus,
)
from approvals.notifications import email, messages
from tests.conftest import REPO_DIR, Process, database_url, free_port, venv_bin, wait_for_http
from tests.support import make_user, signed_in, wait_for_execution_end
from tests.test_reliability import BODY, ingest_execution, start, state_machine


class RestartableMoto:
    """A moto server that can be restarted on its port: a new process, an empty memory."""

    def __init__(self, log_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.starts = 0
        self.process = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        command = [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = Process(f"moto-restarted-{self.port}-{self.starts}", command, env, self.log_dir)
        wait_for_http(f"{self.url}/moto-api/", self.process.popen, self.process.log)
        gateway.configure_emulator(self.url)

    def restart(self) -> None:
        self.process.stop()
        self.start()
        gateway._client.cache_clear()

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def emulator(log_dir, settings):
    """The portal pointed at a moto server of its own, with the approval queue, as `make run` has."""
    moto = RestartableMoto(log_dir)
    settings.AWS_ENDPOINT_URL = moto.url
    settings.AWS_EMULATOR = True
    settings.AWS_ACCESS_KEY_ID = "testing"
    settings.AWS_SECRET_ACCESS_KEY = "testing"
    gateway._client.cache_clear()
    settings.APPROVAL_QUEUE_NAME = f"approvals-{uuid.uuid4().hex[:10]}"
    settings.APPROVAL_QUEUE_URL = gateway.ensure_queue(
        name=settings.APPROVAL_QUEUE_NAME, visibility_timeout=30, max_receive_count=3
    )
    try:
        yield moto
    finally:
        moto.stop()
        gateway._client.cache_clear()


def bootstrap_again(settings) -> str:
    """What `make run` does after starting the emulator: the queue and the state machine again."""
    settings.APPROVAL_QUEUE_URL = gateway.ensure_queue(
        name=settings.APPROVAL_QUEUE_NAME, visibility_timeout=30, max_receive_count=3
    )
    return state_machine(settings)


def approve_on_the_page(approval: ApprovalRequest, user) -> str:
    """Approve as a person does (page, POST with CSRF), deliver in-process, open the result page."""
    client = signed_in(user)
    client.get("/")
    csrf = client.cookies["portal_csrftoken"].value
    response = client.post(
        f"/requests/{approval.public_id}/decide/",
        {"decision": "approve", "comment": "fine", "csrfmiddlewaretoken": csrf},
    )
    assert response.status_code == 302, response.content[:500]
    callback = Callback.objects.get(request=approval)
    tasks.deliver_callback(callback.pk)
    page = client.get(response["Location"])
    assert page.status_code == 200
    return page.content.decode()


def outcome_mail(approval: ApprovalRequest):
    """The requester's outcome mail, rendered as it is sent (subject, plain-text body)."""
    (notification,) = Notification.objects.filter(request=approval, kind="outcome", channel="email")
    return email.render(messages.build(notification), to=notification.recipient)


# ---------------------------------------------------------------------------
# The first callback refused: the execution is gone
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_approving_after_the_emulator_restarted_says_the_system_closed_it_not_you_expired_it(emulator, settings):
    alice = make_user("alice", "finance-approvers")
    make_user("bob")
    execution_arn = start(state_machine(settings))
    approval = ingest_execution(settings, execution_arn)

    emulator.restart()  # `make run` stopped and started again: the execution is forgotten
    bootstrap_again(settings)
    page = approve_on_the_page(approval, alice)

    approval.refresh_from_db()
    assert "You expired this request" not in page
    assert "You closed this request" not in page
    assert "Expired" not in page
    assert "The system closed this request" in page
    assert "the workflow no longer exists" in page
    assert "<code>make clean &amp;&amp; make run</code>" in page  # what to do: start fresh

    mail = outcome_mail(approval)
    body = " ".join(mail.body.split())
    assert not mail.subject.startswith("Approved")
    assert mail.subject.startswith("Closed by the system: ")
    assert "could not reach the workflow because it no longer exists" in body
    assert "The workflow was told" not in body
    assert "make clean && make run" in body

    closing = AuditEvent.objects.get(request=approval, action="closed_by_system")
    assert closing.actor is None and closing.actor_label == "system"
    assert closing.data["cause"] == "workflow_gone" and closing.data["found_by"] == "callback"
    assert "the local AWS emulator was restarted" in closing.data["reason"]
    assert "expired" not in closing.data["reason"].lower()
    assert not AuditEvent.objects.filter(request=approval, action__in=["expired", "closed_by_step_functions"]).exists()


@pytest.mark.django_db
def test_a_rejection_after_the_restart_is_closed_by_the_system_and_the_mail_says_the_workflow_never_heard_it(
    emulator, settings
):
    alice = make_user("alice", "finance-approvers")
    approval = ingest_execution(settings, start(state_machine(settings)))
    emulator.restart()

    with transaction.atomic():
        services.approval_decide(public_id=approval.public_id, user=alice, approve=False, comment="too much")
    callback = Callback.objects.get(request=approval)
    tasks.deliver_callback(callback.pk)  # SendTaskFailure: InvalidToken, and the execution is unknown

    approval.refresh_from_db()
    callback.refresh_from_db()
    assert approval.status == RequestStatus.CLOSED
    assert callback.resolution == CallbackResolution.GONE
    assert approval.decided_by == alice  # the decision was made; it only reached no workflow
    mail = outcome_mail(approval)
    body = " ".join(mail.body.split())
    assert mail.subject.startswith("Closed by the system: ")
    assert "alice@example.com rejected your request, but the decision could not reach the workflow" in body
    # The page as the requester sees it later: the system closed it, nobody expired it.
    page = signed_in(make_user("bob")).get(f"/requests/{approval.public_id}/").content.decode()
    assert "Closed by the system" in page and "Expired" not in page
    assert "The system closed this request after it was decided" in page


@pytest.mark.django_db
def test_a_heartbeat_refused_because_the_emulator_forgot_the_execution_closes_the_request_as_the_system(
    emulator, settings
):
    approval = ingest_execution(settings, start(state_machine(settings, HeartbeatSeconds=60, TimeoutSeconds=600)))
    assert approval.heartbeat_seconds == 60
    an_hour_ago = timezone.now() - timedelta(hours=1)
    # A heartbeat is due (the first counts from when the message was sent).
    ApprovalRequest.objects.filter(pk=approval.pk).update(received_at=an_hour_ago, message_sent_at=an_hour_ago)
    emulator.restart()

    tasks.send_heartbeats()

    approval.refresh_from_db()
    assert approval.status == RequestStatus.CLOSED
    assert AuditEvent.objects.get(request=approval, action="closed_by_system").data["found_by"] == "heartbeat"
    assert not AuditEvent.objects.filter(request=approval, action="closed_by_step_functions").exists()
    body = " ".join(outcome_mail(approval).body.split())
    assert "The system closed your request before anyone decided it: the workflow no longer exists" in body


@pytest.mark.django_db
def test_a_callback_refused_while_its_execution_still_exists_stays_closed_by_step_functions(aws):
    # The control: a task that timed out in a running emulator is Step Functions' closing, not the system's.
    alice = make_user("alice", "finance-approvers")
    execution_arn = start(state_machine(aws, TimeoutSeconds=1))
    approval = ingest_execution(aws, execution_arn)
    wait_for_execution_end(execution_arn)

    with transaction.atomic():
        services.approval_decide(public_id=approval.public_id, user=alice, approve=True, comment="")
    tasks.deliver_callback(Callback.objects.get(request=approval).pk)

    approval.refresh_from_db()
    assert approval.status == RequestStatus.EXPIRED
    assert Callback.objects.get(request=approval).resolution == CallbackResolution.CLOSED
    assert not AuditEvent.objects.filter(request=approval, action="closed_by_system").exists()


# ---------------------------------------------------------------------------
# At `make run`'s start: manage.py close_forgotten_requests
# ---------------------------------------------------------------------------
def close_forgotten_requests(**env_overrides) -> subprocess.CompletedProcess:
    """The command as `make run` runs it: its own process, on the test database."""
    env = {**os.environ, "DATABASE_URL": database_url(), **env_overrides}
    return subprocess.run(
        [sys.executable, "manage.py", "close_forgotten_requests"],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.django_db(transaction=True)
def test_at_start_only_the_requests_whose_executions_the_restarted_emulator_forgot_are_closed(emulator, settings):
    make_user("alice", "finance-approvers")
    forgotten = [ingest_execution(settings, start(state_machine(settings))) for _ in range(2)]
    emulator.restart()
    live_arn = start(bootstrap_again(settings))
    live = ingest_execution(settings, live_arn)
    no_execution = services.approval_request_ingest(
        message=parse_message(json.dumps({"taskToken": "t-" + uuid.uuid4().hex, **BODY})), sqs_message_id="m-none"
    )[0]
    malformed = services.approval_request_ingest(
        message=parse_message(
            json.dumps({"taskToken": "t-" + uuid.uuid4().hex, **BODY, "execution": "not-an-execution-arn"})
        ),
        sqs_message_id="m-malformed",
    )[0]

    result = close_forgotten_requests(AWS_ENDPOINT_URL=emulator.url)

    assert result.returncode == 0, result.stderr
    assert (
        "2 waiting requests belonged to executions the AWS emulator no longer knows "
        "(it keeps nothing across restarts)" in result.stdout
    )
    assert "Start fresh: make clean && make run" in result.stdout
    for approval in forgotten:
        approval.refresh_from_db()
        assert approval.status == RequestStatus.CLOSED
        event = AuditEvent.objects.get(request=approval, action="closed_by_system")
        assert event.actor is None and event.actor_label == "system"
        assert event.data["found_by"] == "start" and event.data["previous_status"] == "pending"
        assert "(found when make run started)" in event.data["reason"]
        body = " ".join(outcome_mail(approval).body.split())
        assert "The system closed your request before anyone decided it" in body
        assert "expired" not in body.lower()
    # A live execution on the same emulator waits on; so do the ones that cannot be asked about.
    for approval in (live, no_execution, malformed):
        approval.refresh_from_db()
        assert approval.status == RequestStatus.PENDING
    assert gateway.describe_execution(execution_arn=live_arn)["status"] == "RUNNING"
    assert "1 waiting request(s) left as they are" in result.stderr  # the malformed ARN

    again = close_forgotten_requests(AWS_ENDPOINT_URL=emulator.url)
    assert again.returncode == 0 and "belonged to executions" not in again.stdout  # idempotent


@pytest.mark.django_db(transaction=True)
def test_against_real_aws_the_start_check_does_nothing(emulator, settings):
    approval = ingest_execution(settings, start(state_machine(settings)))
    emulator.restart()  # the execution is forgotten, but the portal is not pointed at the emulator

    # AWS_ENDPOINT_URL empty = real AWS (portal/settings.py); so is an endpoint on another host.
    for endpoint in ("", "https://states.eu-west-1.amazonaws.com"):
        result = close_forgotten_requests(AWS_ENDPOINT_URL=endpoint)
        assert result.returncode == 0, result.stderr
        assert "not a local AWS emulator: nothing checked" in result.stdout

    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING
    assert not AuditEvent.objects.filter(action="closed_by_system").exists()


@pytest.mark.django_db(transaction=True)
def test_make_run_closes_the_forgotten_requests_before_serving_and_has_the_line_for_its_banner(
    emulator, settings, capsys
):
    approval = ingest_execution(settings, start(state_machine(settings)))
    emulator.restart()
    spec = importlib.util.spec_from_file_location("devstack", REPO_DIR / "scripts" / "devstack.py")
    devstack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(devstack)
    env = {**os.environ, "DATABASE_URL": database_url(), "AWS_ENDPOINT_URL": emulator.url}

    notice = devstack.close_forgotten_requests(env)

    assert notice == (
        "1 waiting request belonged to an execution the AWS emulator no longer knows (it keeps nothing across "
        "restarts): the system closed it (Closed by the system). Start fresh: make clean && make run"
    )
    assert f"[devstack] {notice}" in capsys.readouterr().out
    approval.refresh_from_db()
    assert approval.status == RequestStatus.CLOSED
    # Nothing forgotten any more: nothing to say under the banner.
    assert devstack.close_forgotten_requests(env) == ""


# ---------------------------------------------------------------------------
# The execution ARN is the message's claim: any text, checked against the emulator
# ---------------------------------------------------------------------------
_NAME = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=80)
EXECUTION_CLAIMS = st.one_of(
    st.text(max_size=300),  # anything at all: unicode, empty, huge
    st.builds(lambda machine, name: f"arn:aws:states:us-east-1:123456789012:execution:{machine}:{name}", _NAME, _NAME),
    st.builds(lambda account: f"arn:aws:states:us-east-1:{account}:execution:m:n", st.text(max_size=20)),
)


@pytest.fixture
def live_request(aws, demo_state_machine) -> ApprovalRequest:
    """A request whose execution runs on the emulator (one for all of a property test's examples)."""
    return ingest_execution(aws, start(demo_state_machine))


@pytest.mark.django_db
@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=st.lists(EXECUTION_CLAIMS, min_size=1, max_size=4))
def test_whatever_execution_a_message_claims_the_start_check_never_crashes_and_never_closes_a_live_one(
    live_request, claims
):
    claimed = []
    for claim in claims:
        body = {"taskToken": f"t-{uuid.uuid4().hex}", **BODY, "execution": claim}
        try:
            message = parse_message(json.dumps(body))
        except ContractError:
            continue  # refused at ingest (an ingest error): it never becomes a waiting request
        request, _ = services.approval_request_ingest(message=message, sqs_message_id=uuid.uuid4().hex)
        claimed.append((request.pk, request.execution_arn))

    call_command("close_forgotten_requests", stdout=io.StringIO(), stderr=io.StringIO())

    assert ApprovalRequest.objects.get(pk=live_request.pk).status == RequestStatus.PENDING
    for request_id, claim in claimed:
        status = ApprovalRequest.objects.get(pk=request_id).status
        if status == RequestStatus.CLOSED:
            # Closed only on the emulator's own word that this execution does not exist.
            with pytest.raises(gateway.AwsPermanentError) as refused:
                gateway.describe_execution(execution_arn=claim)
            assert refused.value.code == "ExecutionDoesNotExist"
        else:
            assert status == RequestStatus.PENDING
    # The next example starts with only the live request waiting (test bookkeeping, not a service).
    ApprovalRequest.objects.filter(pk__in=[pk for pk, _ in claimed]).update(status=RequestStatus.CANCELLED)


@pytest.mark.django_db
def test_an_approver_arriving_later_by_page_or_mailed_link_reads_closed_by_the_system_and_cannot_decide(
    emulator, settings
):
    alice = make_user("alice", "finance-approvers")
    approval = ingest_execution(settings, start(state_machine(settings)))
    emulator.restart()
    call_command("close_forgotten_requests", stdout=io.StringIO())  # what `make run` did at its start
    client = signed_in(alice)
    client.get("/")
    csrf = client.cookies["portal_csrftoken"].value

    page = client.post(
        f"/requests/{approval.public_id}/decide/", {"decision": "approve", "csrfmiddlewaretoken": csrf}
    ).content.decode()
    token = links.make_link_token(public_id=approval.public_id, approver_email="alice@example.com", action="approve")
    link_page = client.get(f"/links/{token}/").content.decode()

    for shown in (page, link_page):
        assert "Already closed by the system" in shown
        assert "The system closed this request before anyone decided it" in shown
        assert "<code>make clean &amp;&amp; make run</code>" in shown
        assert "expired" not in shown.lower()
    approval.refresh_from_db()
    assert approval.status == RequestStatus.CLOSED and approval.decided_by is None
    assert not Callback.objects.filter(request=approval).exists()
    detail = client.get(f"/requests/{approval.public_id}/").content.decode()
    assert "Closed by the system" in detail and "Your decision" not in detail


@pytest.mark.django_db
def test_after_an_attempt_that_may_have_arrived_the_mail_does_not_claim_the_workflow_never_heard_it(settings):
    settings.AWS_EMULATOR = True
    alice = make_user("alice", "finance-approvers")
    body = {"taskToken": f"t-{uuid.uuid4().hex}", **BODY, "approvers": {"groups": ["finance-approvers"]}}
    approval, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)), sqs_message_id="m-1")
    with transaction.atomic():
        services.approval_decide(public_id=approval.public_id, user=alice, approve=True, comment="")
    callback = Callback.objects.get(request=approval)
    Callback.objects.filter(pk=callback.pk).update(maybe_delivered=True)  # an earlier attempt's answer was lost

    outcome = services.callback_mark_failed(
        callback_id=callback.pk, code="InvalidToken", message="Invalid Token", execution_gone=True
    )

    assert outcome == "failed"
    approval.refresh_from_db()
    assert approval.status == RequestStatus.CLOSED
    assert Callback.objects.get(pk=callback.pk).resolution == CallbackResolution.GONE
    body = " ".join(outcome_mail(approval).body.split())
    assert "the portal cannot tell whether the decision reached the workflow before it was gone" in body
    assert "could not reach the workflow" not in body and "no workflow was resumed" not in body
