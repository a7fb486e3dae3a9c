"""The shipped demo state machine end to end: whatever its input says, the requester cannot
approve their own request (docs/security.md, "Trust boundary").

bob may start executions, so he writes the input: he names himself approver and carol as the
requester. The state machine from deploy/ takes approvers and requester from its definition,
the portal's approver trust setting (as `manage.py aws_bootstrap` makes it) allows only the
definition's group, and four eyes holds on every channel. Real processes: the moto server, the
dev IdP, gunicorn and a Celery worker.
"""

import json
import time
import uuid

import pytest
import requests

from approvals import links
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, ApproverTrust, Callback, RequestStatus
from tests.support import sso_login, wait_for, wait_for_execution_end

pytestmark = [pytest.mark.e2e, pytest.mark.trust_unconfigured]

BOBS_INPUT = {
    "title": "Grant production database access to Bob",
    "approvers": {"users": ["bob@example.com"], "groups": []},
    "requester": "carol@example.com",
    "details": {"system": "orders-db (production)", "role": "admin"},
}


def post_form(session: requests.Session, url: str, data: dict, *, page: str | None = None) -> requests.Response:
    session.get(page or url, timeout=15)  # the CSRF cookie, as a browser gets it
    return session.post(
        url,
        data={**data, "csrfmiddlewaretoken": session.cookies.get("portal_csrftoken", "")},
        headers={"Referer": page or url},
        timeout=15,
    )


def still_waiting(execution_arn: str, request: ApprovalRequest) -> None:
    time.sleep(3)  # the worker would have sent a callback by now (it polls every second)
    assert gateway.describe_execution(execution_arn=execution_arn)["status"] == "RUNNING"
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING and not request.votes.exists()
    assert not Callback.objects.filter(request=request).exists()


def test_the_requester_cannot_approve_their_own_request_and_the_execution_waits_for_a_real_approver(
    portal_stack, shipped_state_machine
):
    setting = ApproverTrust.objects.get(state_machine_arn=shipped_state_machine)
    assert setting.mode == ApproverTrust.Mode.ALLOW_LIST and setting.require_requester
    execution_arn = gateway.start_execution(
        state_machine_arn=shipped_state_machine, name=f"trust-{uuid.uuid4().hex[:12]}", execution_input=BOBS_INPUT
    )
    request = wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())

    # The definition, not bob's input, said who asks and who decides.
    assert request.requester_email == "bob@example.com"
    assert [(a.kind, a.value) for a in request.assignments.all()] == [("group", "finance-approvers")]
    url = portal_stack["url"]
    bob = sso_login(url, "bob")
    detail = f"{url}/requests/{request.public_id}/"

    # The request page's POST.
    page = post_form(bob, f"{detail}decide/", {"decision": "approve", "comment": "me"}, page=detail)
    assert page.status_code == 403 and "someone else has to decide" in page.text
    # The admin (every SSO user is an approver there).
    admin = post_form(
        bob,
        f"{url}/admin/approvals/approvalrequest/{request.pk}/decide/",
        {"decision": "approve", "comment": "me"},
        page=f"{url}/admin/",
    )
    assert admin.status_code == 404  # not his to decide, so not even listed for him there
    # A signed email link in his name (as if one had been mailed to him).
    token = links.make_link_token(
        public_id=request.public_id, approver_email="bob@example.com", action="approve", ttl_seconds=600
    )
    link = post_form(bob, f"{url}/links/{token}/", {"comment": "me"})
    assert link.status_code == 403 and "someone else has to decide" in link.text
    still_waiting(execution_arn, request)

    # A legitimate approver decides; only now does the workflow go on.
    alice = sso_login(url, "alice")
    decided = post_form(alice, f"{detail}decide/", {"decision": "approve", "comment": "checked"}, page=detail)
    assert decided.status_code == 200 and decided.url.endswith("/result/")

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    approval = json.loads(execution["output"])["approval"]
    assert approval["decidedBy"]["email"] == "alice@example.com"
    request.refresh_from_db()
    assert [vote.user.email for vote in request.votes.all()] == ["alice@example.com"]


def test_a_message_naming_someone_outside_the_demo_allow_list_is_an_ingest_error(portal_stack, shipped_state_machine):
    # A definition edited to copy approvers from the input again is caught by the allow-list.
    from approvals.management.commands.aws_bootstrap import demo_definition, demo_trust_configure
    from approvals.models import IngestError

    machine = gateway.ensure_state_machine(
        name=f"approval-edited-{uuid.uuid4().hex[:8]}",
        definition=demo_definition(gateway_queue_url(), from_input=True),
        role_arn="arn:aws:iam::123456789012:role/approval-demo-states",
    )
    demo_trust_configure(machine)
    execution_arn = gateway.start_execution(
        state_machine_arn=machine, name=f"trust-{uuid.uuid4().hex[:12]}", execution_input=BOBS_INPUT
    )

    row = wait_for(lambda: IngestError.objects.filter(code="approver_not_allowed").first())
    assert "allow-list" in row.reason and "bob@example.com" in row.reason
    assert not ApprovalRequest.objects.filter(execution_arn=execution_arn).exists()
    assert gateway.describe_execution(execution_arn=execution_arn)["status"] == "RUNNING"


def gateway_queue_url() -> str:
    from django.conf import settings

    return settings.APPROVAL_QUEUE_URL
