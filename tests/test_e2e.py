"""One approval travels end to end with real processes.

Step Functions (moto server) → SQS → Celery worker (consumer) → database → alice signs in
through the dev IdP (real OIDC redirect flow) → approves in the portal (gunicorn) → Celery
worker → SendTaskSuccess/SendTaskFailure → the execution ends.
"""

import json
import uuid

import pytest
import requests

from approvals import tokens
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, CallbackStatus
from tests.support import sso_login, wait_for, wait_for_execution_end

pytestmark = pytest.mark.e2e

EXECUTION_INPUT = {
    "title": "Freigabe: Bestellung 1234 – 5.300 € ✓",
    "approvers": {"users": ["alice@example.com"], "groups": []},
    "requester": "bob@example.com",
    "details": {
        "order": {"id": 1234, "total": {"amount": "5300.00", "currency": "EUR"}},
        "supplier": "Müller & Söhne <GmbH>",
        "lines": [{"item": "Laptop", "qty": 2}, {"item": "Dock", "qty": 2}],
    },
}


def start_and_wait_for_request(state_machine_arn: str) -> tuple[str, ApprovalRequest]:
    execution_arn = gateway.start_execution(
        state_machine_arn=state_machine_arn, name=f"e2e-{uuid.uuid4().hex[:12]}", execution_input=EXECUTION_INPUT
    )
    request = wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())
    return execution_arn, request


def decide(session: requests.Session, portal_url: str, request: ApprovalRequest, decision: str, comment: str):
    detail_url = f"{portal_url}/requests/{request.public_id}/"
    detail = session.get(detail_url, timeout=15)
    assert detail.status_code == 200
    assert "Freigabe: Bestellung 1234 – 5.300 € ✓" in detail.text
    assert "Müller &amp; Söhne &lt;GmbH&gt;" in detail.text  # details are escaped
    csrf = session.cookies["portal_csrftoken"]
    response = session.post(
        f"{detail_url}decide/",
        data={"csrfmiddlewaretoken": csrf, "decision": decision, "comment": comment},
        headers={"Referer": detail_url},
        timeout=15,
    )
    assert response.status_code == 200, response.text[:500]
    assert response.url.endswith(f"/requests/{request.public_id}/result/")
    return detail.text + response.text


def assert_token_nowhere(token: str, pages: str, portal_stack) -> None:
    assert token not in pages
    for process in (portal_stack["web"], portal_stack["worker"]):
        assert token not in process.output(), f"task token leaked into the {process.name} log"


def test_alice_approves_and_the_execution_succeeds_with_her_identity(portal_stack, demo_state_machine):
    execution_arn, request = start_and_wait_for_request(demo_state_machine)
    assert request.title == EXECUTION_INPUT["title"]
    assert request.details == EXECUTION_INPUT["details"]

    session = sso_login(portal_stack["url"], "alice")
    inbox = session.get(f"{portal_stack['url']}/", timeout=15)
    assert str(request.public_id) in inbox.text

    pages = decide(session, portal_stack["url"], request, "approve", "Looks right — approved ✓")

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    approval = json.loads(execution["output"])["approval"]
    assert approval["approved"] is True
    assert approval["decision"] == "approved"
    assert approval["decidedBy"]["email"] == "alice@example.com"
    assert approval["decidedBy"]["sub"]
    assert approval["decidedBy"]["issuer"].startswith("http://127.0.0.1:")
    assert approval["comment"] == "Looks right — approved ✓"
    assert approval["requestId"] == str(request.public_id)

    request.refresh_from_db()
    wait_for(lambda: request.callback.__class__.objects.get(pk=request.callback.pk).status == CallbackStatus.DELIVERED)
    result = session.get(f"{portal_stack['url']}/requests/{request.public_id}/result/", timeout=15)
    assert "sent to Step Functions" in result.text
    assert_token_nowhere(tokens.decrypt_token(request.token_ciphertext), pages + result.text, portal_stack)


def test_alice_rejects_and_the_execution_fails_with_approval_denied(portal_stack, demo_state_machine):
    execution_arn, request = start_and_wait_for_request(demo_state_machine)
    session = sso_login(portal_stack["url"], "alice")

    pages = decide(session, portal_stack["url"], request, "reject", "Budget is frozen")

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "ApprovalDenied"
    assert_token_nowhere(tokens.decrypt_token(request.token_ciphertext), pages, portal_stack)


def test_carol_an_sso_admin_sees_requests_in_the_admin_without_the_token(portal_stack, demo_state_machine):
    _, request = start_and_wait_for_request(demo_state_machine)
    session = sso_login(portal_stack["url"], "carol")

    listing = session.get(f"{portal_stack['url']}/admin/approvals/approvalrequest/", timeout=15)
    change = session.get(f"{portal_stack['url']}/admin/approvals/approvalrequest/{request.pk}/change/", timeout=15)

    assert listing.status_code == 200
    assert EXECUTION_INPUT["title"] in listing.text
    assert change.status_code == 200
    token = tokens.decrypt_token(request.token_ciphertext)
    for page in (listing.text, change.text):
        assert token not in page
        assert request.token_fingerprint not in page


def test_bob_the_requester_gets_403_from_the_running_portal(portal_stack, demo_state_machine):
    _, request = start_and_wait_for_request(demo_state_machine)
    session = sso_login(portal_stack["url"], "bob")
    session.get(f"{portal_stack['url']}/", timeout=15)
    url = f"{portal_stack['url']}/requests/{request.public_id}/decide/"

    response = session.post(
        url,
        data={"csrfmiddlewaretoken": session.cookies["portal_csrftoken"], "decision": "approve"},
        headers={"Referer": url},
        timeout=15,
    )

    assert response.status_code == 403
    request.refresh_from_db()
    assert request.status == "pending"
    admin = session.get(f"{portal_stack['url']}/admin/approvals/approvalrequest/", timeout=15)
    assert EXECUTION_INPUT["title"] not in admin.text  # the admin is for portal admins
