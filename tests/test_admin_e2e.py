"""The admin end to end: real SSO sign-ins (dev IdP), gunicorn, a Celery worker, the moto server.

An approver (alice, no admin group at the IdP) signs in and works in the admin; an admin (carol,
`portal-admins`) cancels a request there. Decisions and cancellations travel through the worker
to Step Functions, and the executions end the way the state machine says.
"""

import html
import json
import re
import uuid

import pytest
import requests

from approvals import services
from approvals.contract import parse_message
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, AuditEvent, RequestStatus, User
from tests.support import sso_login, wait_for, wait_for_execution_end

pytestmark = pytest.mark.e2e

CHANGELIST = "/admin/approvals/approvalrequest/"


def start(state_machine_arn: str, title: str, **approvers) -> tuple[str, ApprovalRequest]:
    """A real execution; the worker's consumer turns its message into a request."""
    execution_arn = gateway.start_execution(
        state_machine_arn=state_machine_arn,
        name=f"admin-e2e-{uuid.uuid4().hex[:10]}",
        execution_input={
            "title": title,
            "approvers": {"users": approvers.get("users", []), "groups": approvers.get("groups", [])},
            "requester": "bob@example.com",
            "details": {"order": title},
        },
    )
    return execution_arn, wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())


def without_execution(title: str, *, groups: list[str], requester: str = "bob@example.com") -> ApprovalRequest:
    body = {"taskToken": str(uuid.uuid4()), "title": title, "requester": requester, "approvers": {"groups": groups}}
    return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]


def admin_post(session: requests.Session, url: str, data: dict) -> requests.Response:
    response = session.post(
        url,
        data={**data, "csrfmiddlewaretoken": session.cookies["portal_csrftoken"]},
        headers={"Referer": url},
        timeout=15,
    )
    assert response.status_code == 200, response.text[:500]
    return response


def page_messages(response: requests.Response) -> list[str]:
    return [
        html.unescape(m) for m in re.findall(r'<li class="(?:success|error|warning|info)">(.*?)</li>', response.text)
    ]


def test_an_approver_signed_in_through_sso_sees_and_decides_only_their_requests_in_the_admin(
    portal_stack, demo_state_machine
):
    url = portal_stack["url"]
    single_arn, single = start(demo_state_machine, "Order 100: approve on its page", users=["alice@example.com"])
    bulk_arn, bulk = start(demo_state_machine, "Order 200: approve in bulk", groups=["finance-approvers"])
    legal = without_execution("Contract 300: for legal", groups=["legal"])
    own = without_execution("Order 400: alice's own", groups=["finance-approvers"], requester="alice@example.com")

    alice = sso_login(url, "alice")
    assert User.objects.get(email="alice@example.com").is_staff

    listing = alice.get(f"{url}{CHANGELIST}", timeout=15)
    assert listing.status_code == 200
    assert single.title in listing.text and bulk.title in listing.text
    assert legal.title not in listing.text and "alice&#x27;s own" not in listing.text
    # A forged change URL of someone else's request.
    assert alice.get(f"{url}{CHANGELIST}{legal.pk}/change/", timeout=15).status_code == 404

    # Approve on the change page.
    change_url = f"{url}{CHANGELIST}{single.pk}/change/"
    assert 'value="approve"' in alice.get(change_url, timeout=15).text
    done = admin_post(alice, f"{url}{CHANGELIST}{single.pk}/decide/", {"decision": "approve", "comment": "ok"})
    assert any(m.startswith("Approved") for m in page_messages(done))
    assert wait_for_execution_end(single_arn)["status"] == "SUCCEEDED"

    # Bulk approve over her row, someone else's and her own request.
    selection = {"action": "approve_selected", "_selected_action": [bulk.pk, legal.pk, own.pk]}
    confirm = admin_post(alice, f"{url}{CHANGELIST}", {**selection, "index": "0"})
    assert "Each request is checked on its own" in confirm.text
    result = admin_post(alice, f"{url}{CHANGELIST}", {**selection, "confirm": "yes", "comment": "weekly batch"})

    notes = page_messages(result)
    assert f"Approved 1: “{bulk.title}” (#{bulk.pk})." in notes
    # Not in her list: answered like an id that does not exist (tests/test_no_oracle.py).
    assert f"Not approved: request #{legal.pk} — There is no such row, or it is not yours to see." in notes
    assert f"Not approved: request #{own.pk} — There is no such row, or it is not yours to see." in notes
    execution = wait_for_execution_end(bulk_arn)
    assert execution["status"] == "SUCCEEDED"
    assert '"comment": "weekly batch"' in execution["output"] or '"comment":"weekly batch"' in execution["output"]
    assert {r.pk: r.status for r in ApprovalRequest.objects.filter(pk__in=[legal.pk, own.pk])} == {
        legal.pk: RequestStatus.PENDING,
        own.pk: RequestStatus.PENDING,
    }

    for admin_only in ("auditevent", "callback", "ingesterror", "routingrule", "user"):
        assert alice.get(f"{url}/admin/approvals/{admin_only}/", timeout=15).status_code == 403, admin_only
    assert alice.get(f"{url}/admin/auth/group/", timeout=15).status_code == 403


def test_an_admin_cancels_in_the_admin_and_the_execution_fails_with_approval_cancelled(
    portal_stack, demo_state_machine
):
    url = portal_stack["url"]
    execution_arn, request = start(demo_state_machine, "Order 500: to be withdrawn", groups=["finance-approvers"])
    carol = sso_login(url, "carol")
    cancel_url = f"{url}{CHANGELIST}{request.pk}/cancel/"
    assert carol.get(cancel_url, timeout=15).status_code == 200

    admin_post(carol, cancel_url, {"reason": "The supplier withdrew the offer"})

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "ApprovalWithdrawn"  # the state machine's Catch → Fail "Withdrawn"
    failed = [e for e in gateway.get_execution_history(execution_arn=execution_arn) if e["type"] == "TaskFailed"]
    assert [e["taskFailedEventDetails"]["error"] for e in failed] == ["ApprovalCancelled"]
    request.refresh_from_db()
    assert request.status == RequestStatus.CANCELLED
    event = AuditEvent.objects.get(request=request, action="cancelled")
    assert event.actor.email == "carol@example.com"
    assert event.data == {"reason": "The supplier withdrew the offer"}
