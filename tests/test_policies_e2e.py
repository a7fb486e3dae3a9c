"""A 2-of-3 policy end to end: real executions on the moto server, the Celery worker ingesting and
sending callbacks, approvers signing in through the dev IdP and deciding in the portal (gunicorn).
"""

import json
import time
import uuid

import pytest
import requests

from approvals.integrations import aws as gateway
from approvals.management.commands.aws_bootstrap import demo_definition
from approvals.models import ApprovalRequest, Callback, CallbackStatus, RequestStatus, Vote
from tests.support import sso_login, wait_for, wait_for_execution_end

pytestmark = pytest.mark.e2e

EXECUTION_INPUT = {
    "title": "Wire 250,000 EUR to Müller & Söhne",
    "approvers": {"users": ["alice@example.com", "carol@example.com", "dave@example.com"], "groups": []},
    "requester": "bob@example.com",
    "details": {"amount": {"amount": "250000.00", "currency": "EUR"}},
}


@pytest.fixture
def two_of_three_machine(aws) -> str:
    """The example state machine from deploy/, asking for two approvals."""
    definition = demo_definition(aws.APPROVAL_QUEUE_URL, from_input=True)
    definition["States"]["WaitForApproval"]["Parameters"]["MessageBody"]["policy"] = {"required": 2}
    return gateway.ensure_state_machine(
        name=f"two-of-three-{uuid.uuid4().hex[:8]}",
        definition=definition,
        role_arn="arn:aws:iam::123456789012:role/approval-demo-states",
    )


def start(machine: str) -> tuple[str, ApprovalRequest]:
    execution_arn = gateway.start_execution(
        state_machine_arn=machine, name=f"quorum-{uuid.uuid4().hex[:12]}", execution_input=EXECUTION_INPUT
    )
    return execution_arn, wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())


def decide(session: requests.Session, portal_url: str, request: ApprovalRequest, decision: str, comment: str) -> str:
    detail_url = f"{portal_url}/requests/{request.public_id}/"
    assert session.get(detail_url, timeout=15).status_code == 200
    response = session.post(
        f"{detail_url}decide/",
        data={"csrfmiddlewaretoken": session.cookies["portal_csrftoken"], "decision": decision, "comment": comment},
        headers={"Referer": detail_url},
        timeout=15,
    )
    assert response.status_code == 200, response.text[:500]
    return response.text


def still_running_after_the_worker_had_time(execution_arn: str, request: ApprovalRequest) -> None:
    time.sleep(3)  # the worker would have sent a callback by now (it polls every second)
    assert gateway.describe_execution(execution_arn=execution_arn)["status"] == "RUNNING"
    assert not Callback.objects.filter(request=request).exists()


def test_two_of_three_the_second_approval_succeeds_with_both_identities(portal_stack, two_of_three_machine):
    execution_arn, request = start(two_of_three_machine)
    assert request.required_approvals == 2
    url = portal_stack["url"]

    page = decide(sso_login(url, "alice"), url, request, "approve", "Checked the invoice")
    assert "1 of 2 approvals" in page
    still_running_after_the_worker_had_time(execution_arn, request)

    decide(sso_login(url, "carol"), url, request, "approve", "Agreed")

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    approval = json.loads(execution["output"])["approval"]
    assert approval["approved"] is True
    assert [entry["email"] for entry in approval["approvals"]] == ["alice@example.com", "carol@example.com"]
    assert [entry["comment"] for entry in approval["approvals"]] == ["Checked the invoice", "Agreed"]
    assert all(entry["sub"] and entry["issuer"].startswith("http://127.0.0.1:") for entry in approval["approvals"])
    assert approval["policy"] == {"required": 2, "distinctGroups": False, "rejectOn": "any"}


def test_a_rejection_before_the_second_approval_fails_it_with_the_approvals_so_far(portal_stack, aws):
    # A workflow that lets ApprovalDenied end the execution, so its cause is the portal's own.
    definition = demo_definition(aws.APPROVAL_QUEUE_URL, from_input=True)
    task = definition["States"]["WaitForApproval"]
    task["Parameters"]["MessageBody"]["policy"] = {"required": 2}
    task["Catch"] = [catch for catch in task["Catch"] if "ApprovalDenied" not in catch["ErrorEquals"]]
    machine = gateway.ensure_state_machine(
        name=f"two-of-three-deny-{uuid.uuid4().hex[:8]}",
        definition=definition,
        role_arn="arn:aws:iam::123456789012:role/approval-demo-states",
    )
    execution_arn, request = start(machine)
    url = portal_stack["url"]

    decide(sso_login(url, "alice"), url, request, "approve", "Fine by me")
    decide(sso_login(url, "dave"), url, request, "reject", "Supplier is not vetted")

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "ApprovalDenied"
    # The moto server keeps the error but drops SendTaskFailure's cause (DescribeExecution and the
    # history alike; AWS keeps it): the cause checked is the one Step Functions accepted from us.
    # The worker records the delivery just after Step Functions accepted it, so the execution may
    # end a moment before the row says delivered (test_e2e waits the same way).
    callback = Callback.objects.get(request=request)
    wait_for(lambda: Callback.objects.get(pk=callback.pk).status == CallbackStatus.DELIVERED)
    cause = json.loads(callback.payload["cause"])
    assert [entry["email"] for entry in cause["approvals"]] == ["alice@example.com"]
    assert cause["rejections"][0]["email"] == "dave@example.com"
    assert cause["rejections"][0]["comment"] == "Supplier is not vetted"
    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED
    assert Vote.objects.filter(request=request).count() == 2
