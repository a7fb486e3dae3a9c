"""Admins follow four eyes too: an admin who assigns a request to themselves cannot decide it.

The rule (approvals/permissions.py): every assignment records who made it (an admin's
reassignment; null when the message or a routing rule named the approver), and nobody decides
with an assignment they made themselves. Someone else decides it, or another admin assigns it.
Attacked through every channel that decides: the request page, the admin's change page, the
admin's bulk approve, the signed email link, and once more by the callback's re-check.
"""

import json
import uuid

import pytest
from django.test import Client

from approvals import links, permissions, services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Callback, RequestStatus, Vote
from tests.support import make_user, signed_in

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/approvals/approvalrequest/"
SELF_ASSIGNED = "You assigned this request to yourself, so someone else has to decide it"


@pytest.fixture
def people(db):
    return {
        "root": make_user("root", "portal-admins", admin=True),
        "sam": make_user("sam", "portal-admins", admin=True),
        "alice": make_user("alice", "finance-approvers"),
    }


def ingest(title: str = "Approve order 12") -> ApprovalRequest:
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": title,
        "requester": "bob@example.com",
        "approvers": {"groups": ["finance-approvers"]},
    }
    request, created = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    assert created
    return request


def self_assigned(people, *, users=("root@example.com",), groups=(), mode="replace") -> ApprovalRequest:
    request = ingest()
    services.approval_reassign(
        request_id=request.pk, actor=people["root"], users=users, groups=groups, mode=mode, reason="I'll take it"
    )
    return request


def csrf_token(client: Client, url: str) -> str:
    client.get(url)
    return client.cookies["portal_csrftoken"].value


def assert_refused_and_undecided(request: ApprovalRequest, user) -> None:
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert not Vote.objects.filter(request=request).exists()
    assert not Callback.objects.filter(request=request).exists()
    assert AuditEvent.objects.filter(
        request=request, actor=user, action="decision_refused", data__code="self_assigned"
    ).exists()


def test_a_reassignment_records_the_admin_who_made_each_new_assignment(people):
    request = self_assigned(people, users=["root@example.com"], groups=["legal"], mode="add")
    made = {(a.kind, a.value): a.created_by for a in request.assignments.all()}
    assert made == {
        ("group", "finance-approvers"): None,
        ("user", "root@example.com"): people["root"],
        ("group", "legal"): people["root"],
    }


def test_an_admin_cannot_approve_a_request_they_assigned_to_themselves_on_the_request_page(people):
    request = self_assigned(people)
    root = signed_in(people["root"])
    page = root.get(f"/requests/{request.public_id}/")
    assert SELF_ASSIGNED in page.content.decode() and 'value="approve"' not in page.content.decode()

    token = root.cookies["portal_csrftoken"].value
    for url in (f"/requests/{request.public_id}/confirm/", f"/requests/{request.public_id}/decide/"):
        response = root.post(url, {"decision": "approve", "comment": "", "csrfmiddlewaretoken": token})
        assert response.status_code == 403
        assert SELF_ASSIGNED in response.content.decode()
    assert_refused_and_undecided(request, people["root"])


def test_an_admin_cannot_approve_their_self_assignment_from_the_admin_change_page(people):
    request = self_assigned(people)
    root = signed_in(people["root"])
    token = csrf_token(root, f"{CHANGELIST}{request.pk}/change/")

    response = root.post(
        f"{CHANGELIST}{request.pk}/decide/",
        {"decision": "approve", "comment": "", "csrfmiddlewaretoken": token},
        follow=True,
    )

    assert any(SELF_ASSIGNED in str(message) for message in response.context["messages"])
    assert_refused_and_undecided(request, people["root"])


def test_an_admin_cannot_approve_their_self_assignment_in_a_bulk_action(people):
    mine = self_assigned(people)
    other = ingest("Approve order 13")
    services.approval_reassign(
        request_id=other.pk, actor=people["sam"], users=["root@example.com"], reason="Root, please"
    )
    root = signed_in(people["root"])
    token = csrf_token(root, CHANGELIST)
    selection = {"action": "approve_selected", "_selected_action": [str(mine.pk), str(other.pk)]}

    root.post(CHANGELIST, {**selection, "index": "0", "csrfmiddlewaretoken": token})
    done = root.post(
        CHANGELIST, {**selection, "confirm": "yes", "comment": "", "csrfmiddlewaretoken": token}, follow=True
    )

    notes = [str(message) for message in done.context["messages"]]
    assert any(note.startswith(f"Not approved: “{mine.title}” (#{mine.pk}) — {SELF_ASSIGNED}") for note in notes)
    assert_refused_and_undecided(mine, people["root"])
    # Assigned to root by another admin: root may decide that one.
    other.refresh_from_db()
    assert other.status == RequestStatus.APPROVED and other.decided_by == people["root"]


def test_an_admin_cannot_approve_their_self_assignment_through_an_email_link(people):
    request = self_assigned(people)
    token = links.make_link_token(public_id=request.public_id, approver_email="root@example.com", action="approve")
    root = signed_in(people["root"])

    shown = root.get(f"/links/{token}/")
    assert shown.status_code == 403 and SELF_ASSIGNED in shown.content.decode()
    csrf = root.cookies["portal_csrftoken"].value
    posted = root.post(f"/links/{token}/", {"comment": "", "csrfmiddlewaretoken": csrf})
    assert posted.status_code == 403 and SELF_ASSIGNED in posted.content.decode()
    assert_refused_and_undecided(request, people["root"])


def test_a_group_the_admin_assigned_and_belongs_to_is_not_their_authority_but_the_other_members_decide(people):
    request = self_assigned(people, users=(), groups=["portal-admins"])
    assert permissions.decision_refusal(people["root"], request).code == "self_assigned"
    assert permissions.decision_refusal(people["sam"], request) is None

    services.approval_decide(public_id=request.public_id, user=people["sam"], approve=True)
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED


def test_the_admin_keeps_the_authority_they_had_before_reassigning(people):
    """Adding themselves to a request their group already had: the group's assignment still counts."""
    request = self_assigned(people, users=["root@example.com"], mode="add")
    services.approval_reassign(
        request_id=request.pk, actor=people["sam"], groups=["portal-admins"], mode="add", reason="admins"
    )
    assert permissions.decision_refusal(people["root"], request) is None
    services.approval_decide(public_id=request.public_id, user=people["root"], approve=True)
    vote = Vote.objects.get(request=request)
    assert vote.group == "portal-admins"


def test_the_email_to_a_self_assigned_admin_has_no_decision_links_but_one_from_another_admin_has(people):
    from approvals.models import Notification
    from approvals.notifications import messages

    mine = self_assigned(people)
    other = ingest("Approve order 13")
    services.approval_reassign(request_id=other.pk, actor=people["sam"], users=["root@example.com"], reason="Root")

    def mail(request):
        return messages.build(
            Notification(request=request, kind="reassigned", channel="email", recipient="root@example.com")
        )

    assert not mail(mine).has_decision_links
    assert mail(other).has_decision_links
