"""Deciding in the portal's pages: who may, how (POST + CSRF only), and never twice."""

import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import services, tokens
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Callback, RequestStatus
from tests.support import make_user
from tests.support import signed_in as client_for

pytestmark = pytest.mark.django_db

TOKEN = "AAAAKgAAAAIAAAAAAAAAAW" + "x/y+z=" * 200  # a long, real-looking opaque token


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "bob": make_user("bob"),
        "carol": make_user("carol", "portal-admins"),
        "dave": make_user("dave"),
        "erin": make_user("erin", "finance-approvers"),
    }


@pytest.fixture
def approval(people) -> ApprovalRequest:
    body = json.dumps(
        {
            "taskToken": TOKEN,
            "title": "Approve order 1234",
            "requester": "bob@example.com",
            "approvers": {"users": [], "groups": ["finance-approvers"]},
            "details": {"amount": "<b>5300</b>"},
        }
    )
    request, _ = services.approval_request_ingest(message=parse_message(body), sqs_message_id="m-1")
    return request


def post_decision(client: Client, approval: ApprovalRequest, decision: str = "approve", comment: str = ""):
    detail_url = f"/requests/{approval.public_id}/"
    client.get("/")  # sets the CSRF cookie, like a browser opening a page
    csrf = client.cookies["portal_csrftoken"].value
    return client.post(f"{detail_url}decide/", {"decision": decision, "comment": comment, "csrfmiddlewaretoken": csrf})


def test_a_group_member_approves_and_a_callback_is_queued_in_the_same_transaction(people, approval):
    response = post_decision(client_for(people["alice"]), approval, comment="fine")

    assert response.status_code == 302
    assert response["Location"] == f"/requests/{approval.public_id}/result/"
    approval.refresh_from_db()
    assert approval.status == RequestStatus.APPROVED
    assert approval.decided_by == people["alice"]
    callback = Callback.objects.get(request=approval)
    assert callback.kind == Callback.Kind.SUCCESS
    assert callback.payload["output"]["decidedBy"] == {
        "email": "alice@example.com",
        "sub": "sub-alice",
        "issuer": "https://idp.test",
    }
    assert callback.payload["output"]["comment"] == "fine"
    assert AuditEvent.objects.filter(request=approval, action="approved", actor=people["alice"]).exists()


def approving_reads(user, approval: ApprovalRequest) -> list[str]:
    """The SELECTs of `user`'s approving POST (it succeeds)."""
    client = client_for(user)
    client.get("/")
    csrf = client.cookies["portal_csrftoken"].value
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            f"/requests/{approval.public_id}/decide/",
            {"decision": "approve", "comment": "", "csrfmiddlewaretoken": csrf},
        )
    assert response.status_code == 302
    return [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SELECT")]


def test_a_decision_post_does_not_read_the_pages_history(people, approval):
    """The page's history (every audit event) is what the page shows; the decision does not need
    it, however long it grew (questions, reminders, reassignments)."""
    for n in range(30):
        services.info_request(public_id=approval.public_id, user=people["alice"], question=f"Question {n}?")
    reads = approving_reads(people["erin"], approval)
    assert not [sql for sql in reads if 'FROM "approvals_auditevent"' in sql]
    # The conversation is read once: by the decision itself (Step Functions receives it).
    assert len([sql for sql in reads if 'FROM "approvals_infomessage"' in sql]) == 1


def test_a_decision_post_reads_the_request_once_to_check_it_and_once_locked_to_decide(people, approval):
    """The visibility check's read of the status row is what the form and the view use; only the
    decision itself reads the request again, locked (its checks are the ones that count). Neither
    reads the details, which fill a message up to its size limit."""
    ApprovalRequest.objects.filter(pk=approval.pk).update(details={"lines": ["x" * 200] * 1000})
    reads = approving_reads(people["erin"], approval)
    assert len([sql for sql in reads if 'FROM "approvals_approvalrequest"' in sql]) == 2
    assert not [sql for sql in reads if '"approvals_approvalrequest"."details"' in sql.split(" FROM ")[0]]


@pytest.mark.parametrize("reason", ["", "   ", "\n\t "])
def test_a_rejection_without_a_reason_is_refused_by_the_decision_service_itself(people, approval, reason):
    # Not only the page's form: any channel calling the service (admin, link, Slack, an API) gets it.
    with pytest.raises(services.ApprovalError) as refused:
        services.approval_decide(public_id=approval.public_id, user=people["alice"], approve=False, comment=reason)

    assert refused.value.code == "reason_required"
    assert refused.value.message == "Say why you reject: the requester and the workflow see it."
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING
    assert not approval.votes.exists()
    assert not Callback.objects.filter(request=approval).exists()
    event = AuditEvent.objects.get(action="decision_refused")
    assert (event.actor, event.data["code"], event.data["attempted"]) == (people["alice"], "reason_required", "reject")


def test_someone_who_may_not_decide_hears_that_rather_than_that_a_reason_is_missing(people, approval):
    with pytest.raises(services.ApprovalError) as refused:
        services.approval_decide(public_id=approval.public_id, user=people["dave"], approve=False, comment="")

    assert refused.value.code == "not_assignee"


def test_an_approval_needs_no_reason(people, approval):
    services.approval_decide(public_id=approval.public_id, user=people["alice"], approve=True, comment=" ")

    approval.refresh_from_db()
    assert (approval.status, approval.decision_comment) == (RequestStatus.APPROVED, "")


def test_rejecting_queues_a_task_failure_with_approval_denied(people, approval):
    post_decision(client_for(people["alice"]), approval, "reject", comment="no budget")

    callback = Callback.objects.get(request=approval)
    assert callback.kind == Callback.Kind.FAILURE
    assert callback.payload["error"] == "ApprovalDenied"
    assert '"email": "alice@example.com"' in callback.payload["cause"]


def test_the_requester_cannot_approve_their_own_request(people, approval):
    # bob is the requester; make him a group member too, to prove four eyes wins.
    people["bob"].groups.add(Group.objects.get(name="finance-approvers"))

    response = post_decision(client_for(people["bob"]), approval)

    assert response.status_code == 403
    assert "someone else has to decide" in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING
    assert not Callback.objects.exists()
    assert AuditEvent.objects.filter(request=approval, action="decision_refused", actor=people["bob"]).exists()


def test_someone_who_is_not_an_approver_gets_the_404_of_a_request_they_may_not_see(people, approval):
    response = post_decision(client_for(people["dave"]), approval)

    assert response.status_code == 404
    assert "not yours to see" in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING
    refusal = AuditEvent.objects.get(action="decision_refused")
    assert refusal.request is None and refusal.data["code"] == "not_found"
    assert refusal.data["public_id"] == str(approval.public_id)


def test_a_get_on_the_decide_url_changes_nothing(people, approval):
    client = client_for(people["alice"])

    response = client.get(f"/requests/{approval.public_id}/decide/?decision=approve")

    assert response.status_code == 405
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING
    assert not Callback.objects.exists()


def test_a_post_without_csrf_token_is_refused(people, approval):
    client = client_for(people["alice"])

    response = client.post(f"/requests/{approval.public_id}/decide/", {"decision": "approve"})

    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING


def test_nothing_is_decided_twice_and_the_second_post_says_who_decided(people, approval):
    post_decision(client_for(people["alice"]), approval)

    second = post_decision(client_for(people["erin"]), approval, "reject")

    assert second.status_code == 409
    page = second.content.decode()
    assert "already approved" in page
    assert "alice@example.com" in page
    approval.refresh_from_db()
    assert approval.status == RequestStatus.APPROVED
    assert Callback.objects.count() == 1


def test_the_same_person_posting_twice_gets_a_clear_message(people, approval):
    client = client_for(people["alice"])
    post_decision(client, approval)

    again = post_decision(client, approval)

    assert again.status_code == 409
    assert Callback.objects.count() == 1


def test_pages_show_escaped_details_and_never_the_token(people, approval):
    client = client_for(people["alice"])

    detail = client.get(f"/requests/{approval.public_id}/").content.decode()
    inbox = client.get("/").content.decode()

    assert "&lt;b&gt;5300&lt;/b&gt;" in detail
    assert "<b>5300</b>" not in detail
    assert "Approve order 1234" in inbox
    for page in (detail, inbox):
        assert TOKEN not in page
        assert approval.token_fingerprint not in page
        assert tokens.encrypt_token(TOKEN)[:20] not in page


def test_the_inbox_lists_only_what_the_user_may_decide(people, approval):
    # "Waiting for me" by name: bob, the requester with nothing waiting, lands on "I requested".
    assert "Approve order 1234" in client_for(people["alice"]).get("/?tab=waiting").content.decode()
    assert "Approve order 1234" not in client_for(people["bob"]).get("/?tab=waiting").content.decode()
    assert "Approve order 1234" not in client_for(people["dave"]).get("/?tab=waiting").content.decode()


def test_someone_unrelated_cannot_even_see_the_request(people, approval):
    response = client_for(people["dave"]).get(f"/requests/{approval.public_id}/")

    assert response.status_code == 404


def test_an_unknown_request_is_a_clear_404(people):
    client = client_for(people["alice"])
    client.get("/")
    csrf = client.cookies["portal_csrftoken"].value
    unknown = uuid.uuid4()

    assert client.get(f"/requests/{unknown}/").status_code == 404
    response = client.post(f"/requests/{unknown}/decide/", {"decision": "approve", "csrfmiddlewaretoken": csrf})
    assert response.status_code == 404
    assert "There is no such approval request" in response.content.decode()
    assert AuditEvent.objects.get(action="decision_refused").data["code"] == "not_found"


def test_pages_need_a_signed_in_user(approval):
    response = Client().get(f"/requests/{approval.public_id}/")

    assert response.status_code == 302
    assert response["Location"].startswith("/signin/")


def test_an_expired_request_cannot_be_decided(people, approval):
    ApprovalRequest.objects.filter(pk=approval.pk).update(deadline=timezone.now() - timedelta(minutes=1))

    response = post_decision(client_for(people["alice"]), approval)

    assert response.status_code == 410
    assert "deadline" in response.content.decode()
    assert AuditEvent.objects.get(request=approval, action="decision_refused").data["code"] == "expired"
