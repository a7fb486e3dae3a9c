"""A message that arrives after the workflow stopped waiting for it.

Step Functions starts a task's timer (`TimeoutSeconds`, told to the portal as `timeoutSeconds`)
when it sends the message. A message can sit in the queue (workers down, a backlog, a redrive
from the dead-letter queue) until that timer ran out: Step Functions failed the task with
States.Timeout and its token is dead. Nobody can decide it any more, so nobody is asked to.

Real parts: the moto server runs a real execution whose task times out while nobody consumes
the queue (SQS's SentTimestamp is then Step Functions' send, seconds before the receipt: it
cannot be set by hand), `worker.consumer.consume_once` ingests it, Celery in eager mode plans
and sends the notifications after the commit, the Slack stand-in of test_slack.py is Slack.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from approvals import delivery, links, services
from approvals.contract import parse_message
from approvals.integrations import aws as gateway
from approvals.management.commands.aws_bootstrap import demo_definition
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Callback,
    Notification,
    RequestStatus,
    Vote,
)
from approvals.tasks import expire_overdue_requests
from tests.support import make_user, signed_in, wait_for, wait_for_execution_end
from tests.test_slack import TEAM, post_signed, slack_person, slack_stand_in
from worker.consumer import consume_once

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/approvals/approvalrequest/"

EXECUTION_INPUT = {
    "title": "Approve order 77",
    "approvers": {"users": ["alice@example.com"], "groups": ["finance-approvers"]},
    "requester": "bob@example.com",
    "details": {"amount": "77.00"},
}


@pytest.fixture
def slack_api(settings):
    stand_in = slack_stand_in(settings, email=True)  # both channels
    yield stand_in
    stand_in.stop()


@pytest.fixture
def people(db):
    return {
        "alice": slack_person("alice", "finance-approvers"),
        "erin": slack_person("erin", "finance-approvers"),
        "bob": slack_person("bob"),
    }


def timing_out_state_machine(aws, timer: str) -> str:
    """The example state machine whose task times out after 1 s, and says so in its message:
    by its TimeoutSeconds (`timer` "timeout"), or by a heartbeat it never got ("heartbeat")."""
    definition = demo_definition(aws.APPROVAL_QUEUE_URL, from_input=True)
    task = definition["States"]["WaitForApproval"]
    body = task["Parameters"]["MessageBody"]
    if timer == "timeout":
        task.pop("HeartbeatSeconds")
        body.pop("heartbeatSeconds")
        task["TimeoutSeconds"] = body["timeoutSeconds"] = 1
    else:
        task["HeartbeatSeconds"] = body["heartbeatSeconds"] = 1
        task["TimeoutSeconds"] = body["timeoutSeconds"] = 3600
    return gateway.ensure_state_machine(
        name=f"late-{uuid.uuid4().hex[:8]}",
        definition=definition,
        role_arn="arn:aws:iam::123456789012:role/approval-demo-states",
    )


def arrived_late(aws, timer: str) -> tuple[str, ApprovalRequest]:
    """A real execution whose task timed out while its message waited in the queue (the workers
    were down), then ingested by the consumer as in production."""
    execution_arn = gateway.start_execution(
        state_machine_arn=timing_out_state_machine(aws, timer),
        name=f"late-{uuid.uuid4().hex[:12]}",
        execution_input=EXECUTION_INPUT,
    )
    execution = wait_for_execution_end(execution_arn)
    # The example catches States.Timeout (the moto server's error for a missed heartbeat too).
    assert execution["status"] == "FAILED" and execution["error"] == "ApprovalTimedOut"
    # The workers come back after Step Functions gave up. The message was sent before the task
    # ended, so a second (the timer) after its end the timer has run out counted from the send
    # too, whichever of the send and the timer's start the emulator did first.
    wait_for(lambda: timezone.now() > execution["stopDate"] + timedelta(seconds=1), interval=0.05)
    consume_once(queue_url=aws.APPROVAL_QUEUE_URL, wait_seconds=1, visibility_timeout=30, max_bytes=256 * 1024)
    return execution_arn, ApprovalRequest.objects.get(execution_arn=execution_arn)


@pytest.mark.parametrize("timer", ["timeout", "heartbeat"])
def test_a_message_that_arrives_after_its_task_timed_out_asks_nobody_to_decide_and_is_closed_by_step_functions(
    aws, people, slack_api, celery_eager, timer
):
    execution_arn, request = arrived_late(aws, timer)
    # It waited in the queue past its timeout, or past the first heartbeat its task needed.
    seconds = request.timeout_seconds if timer == "timeout" else request.heartbeat_seconds
    stopped_waiting = request.message_sent_at + timedelta(seconds=seconds)
    assert request.message_sent_at < stopped_waiting <= request.received_at

    # Stored as what it is: Step Functions closed it (no callback, nobody decided), at once, not
    # "pending" until beat's expiry sweep comes by.
    assert request.status == RequestStatus.EXPIRED
    assert request.decided_by is None and request.decided_at == request.received_at
    assert delivery.request_status_label(request) == "Closed by Step Functions"
    event = AuditEvent.objects.get(request=request, action="closed_by_step_functions")
    assert event.actor is None and event.data["code"] == "timed_out_before_arrival"
    assert event.data["stopped_waiting_at"] == stopped_waiting.isoformat()
    assert event.data["timer"] == f"{timer}Seconds"
    assert f"{timer}Seconds" in event.data["reason"]

    # No approver is asked, on any channel, not even by a planned row the send would skip.
    approvers = {"alice@example.com", "erin@example.com"}
    assert not [message.to for message in mail.outbox if set(message.to) & approvers]
    assert [call["body"]["channel"] for call in slack_api.of("chat.postMessage")] == ["DU0BOB"]  # the requester's
    assert not Notification.objects.filter(request=request).exclude(kind="outcome").exists()
    # The requester hears how it ended, in the request page's words.
    (outcome,) = mail.outbox
    assert outcome.to == ["bob@example.com"]
    assert outcome.subject == "Closed by Step Functions: Approve order 77"
    assert "Step Functions stopped waiting for your request" in outcome.body

    # Nobody's inbox lists it as waiting; its page offers no decision.
    client = signed_in(people["alice"])
    assert "Approve order 77" not in client.get("/").content.decode()
    page = client.get(f"/requests/{request.public_id}/").content.decode()
    assert "Closed by Step Functions" in page
    assert f"/requests/{request.public_id}/decide/" not in page

    # The sweep finds nothing to expire and sends Step Functions nothing: the token is dead.
    assert expire_overdue_requests() == 0
    assert not Callback.objects.filter(request=request).exists()
    assert gateway.describe_execution(execution_arn=execution_arn)["error"] == "ApprovalTimedOut"


CLOSED_WORDS = "This request is already closed by Step Functions."


def test_every_channel_refuses_a_decision_on_a_request_that_arrived_after_its_timeout_in_the_same_words(
    people, slack_api, celery_eager
):
    """Each way to decide, as an approver who may decide it otherwise: refused, saying why."""
    root = make_user("root", "finance-approvers", admin=True)
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": "Approve order 78",
        "requester": "bob@example.com",
        "approvers": {"groups": ["finance-approvers"]},
        "timeoutSeconds": 3600,
    }
    # Sent two hours ago (what the consumer reads from SentTimestamp, or a DLQ redrive's
    # approvalFirstSentTimestamp): its hour ran out in the queue.
    request, created = services.approval_request_ingest(
        message=parse_message(json.dumps(body)), sent_at=timezone.now() - timedelta(hours=2)
    )
    assert created and request.status == RequestStatus.EXPIRED

    alice = signed_in(people["alice"])
    page = alice.get(f"/requests/{request.public_id}/").content.decode()
    assert "Closed by Step Functions" in page and 'value="approve"' not in page
    csrf = alice.cookies["portal_csrftoken"].value
    for url in (f"/requests/{request.public_id}/confirm/", f"/requests/{request.public_id}/decide/"):
        answer = alice.post(url, {"decision": "approve", "comment": "", "csrfmiddlewaretoken": csrf})
        assert answer.status_code == 409 and CLOSED_WORDS in answer.content.decode(), url

    link = links.make_link_token(public_id=request.public_id, approver_email="alice@example.com", action="approve")
    for answer in (alice.get(f"/links/{link}/"), alice.post(f"/links/{link}/", {"csrfmiddlewaretoken": csrf})):
        assert answer.status_code >= 400 and CLOSED_WORDS in answer.content.decode()

    api = alice.post(
        f"/api/v1/requests/{request.public_id}/decision/",
        data=json.dumps({"decision": "approve"}),
        content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )
    assert api.status_code == 409 and CLOSED_WORDS in api.json()["detail"]

    payload = {
        "type": "block_actions",
        "team": {"id": TEAM},
        "user": {"id": "U0ALICE", "username": "alice", "team_id": TEAM},
        "actions": [
            {"action_id": "approve", "block_id": f"approval:{request.public_id}", "value": str(request.public_id)}
        ],
        "trigger_id": "12345.98765.abcd2358fdea",
        "response_url": f"{slack_api.url}/respond/{uuid.uuid4().hex}",
    }
    assert post_signed(payload).status_code == 200
    assert any("closed by Step Functions" in json.dumps(answer) for answer in slack_api.responses())

    admin = signed_in(root)
    admin.get(CHANGELIST)
    token = admin.cookies["portal_csrftoken"].value
    selection = {"action": "approve_selected", "_selected_action": [str(request.pk)]}
    admin.post(CHANGELIST, {**selection, "index": "0", "csrfmiddlewaretoken": token})
    done = admin.post(
        CHANGELIST, {**selection, "confirm": "yes", "comment": "", "csrfmiddlewaretoken": token}, follow=True
    )
    notes = [str(message) for message in done.context["messages"]]
    assert any(
        note.startswith(f"Not approved: “{request.title}” (#{request.pk})") and CLOSED_WORDS in note for note in notes
    ), notes

    request.refresh_from_db()
    assert request.status == RequestStatus.EXPIRED and request.decided_by is None
    assert not Vote.objects.filter(request=request).exists()
    assert not Callback.objects.filter(request=request).exists()
    codes = set(
        AuditEvent.objects.filter(request=request, action="decision_refused").values_list("data__code", flat=True)
    )
    assert codes == {"not_pending"}
