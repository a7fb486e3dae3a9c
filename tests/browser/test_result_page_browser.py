"""The result page after a decision, in a real browser (Chromium) against the real portal
processes: while it polls the request's status, what it says follows what became of the
decision — here, the callback's identity re-check reopened the request (the other vote of a
2-of-2 no longer held), so the callback row is gone and the poll answers `callback: null`.
"""

import json
import re
import uuid

import pytest

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, Callback, RequestStatus
from approvals.tasks import deliver_callback
from tests.browser.conftest import sign_in
from tests.support import make_user

pytestmark = pytest.mark.browser

MACHINE = "arn:aws:states:eu-central-1:123456789012:stateMachine:purchase-orders"


def two_of_two_for_alice_and_erin() -> ApprovalRequest:
    name = f"order-4712-{uuid.uuid4().hex[:8]}"
    body = {
        "taskToken": f"tok-{uuid.uuid4()}",
        "title": "Approve order 4712 (EUR 8,000)",
        "requester": "bob@example.com",
        "approvers": {"users": ["alice@example.com", "erin@example.com"], "groups": []},
        "policy": {"required": 2},
        "stateMachine": MACHINE,
        "execution": MACHINE.replace(":stateMachine:", ":execution:") + f":{name}",
        "state": "ManagerApproval",
        "details": {"total": {"amount": "8000.00", "currency": "EUR"}},
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    return request


def test_a_result_page_whose_request_the_recheck_reopens_says_it_waits_again_not_that_it_is_being_sent(
    portal_stack, new_page
):
    from playwright.sync_api import expect

    # No worker: the callback waits until this test delivers it, after erin's right went.
    portal_stack["worker"].stop()
    erin = make_user("erin")
    request = two_of_two_for_alice_and_erin()
    services.approval_decide(public_id=request.public_id, user=erin, approve=True)

    page = new_page()
    sign_in(page, portal_stack["url"], "alice")
    page.goto(f"{portal_stack['url']}/requests/{request.public_id}/")
    page.get_by_role("button", name="Approve…").click()
    page.get_by_role("button", name="Yes, approve").click()
    expect(page).to_have_url(re.compile(rf"/requests/{request.public_id}/result/$"))
    expect(page.locator("#callback-status")).to_have_text("queued to be sent")

    erin.is_active = False
    erin.save(update_fields=["is_active"])
    assert deliver_callback(Callback.objects.get(request=request).pk) == "nothing-to-send"
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING

    # The page, still open, stops saying the workflow is being told: the request waits again.
    outcome = page.locator(".outcome")
    expect(outcome).to_contain_text("waits for the other approvers", timeout=20_000)
    expect(page.locator(".notice-reopened")).to_contain_text("Reopened")
    expect(page.locator(".status")).to_have_text("Pending")
    expect(page.get_by_text("You approved this request.")).to_have_count(0)
    expect(page.locator("#callback-status")).to_have_count(0)
