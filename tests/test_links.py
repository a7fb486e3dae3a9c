"""Signed one-click links: they lead to a confirm page; only the approver's POST decides."""

import json
import time

import pytest
from django.core import signing
from django.test import Client

from approvals import links, services
from approvals.contract import parse_message
from approvals.models import AuditEvent, Callback, RequestStatus
from tests.support import make_user, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return make_user("alice", "finance-approvers")


@pytest.fixture
def approval():
    body = {
        "taskToken": "tok-" + "q" * 40,
        "title": "Approve order 1234",
        "requester": "bob@example.com",
        "approvers": {"users": ["alice@example.com"]},
    }
    return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]


def link_path(approval, email="alice@example.com", action="approve", ttl=3600) -> str:
    token = links.make_link_token(public_id=approval.public_id, approver_email=email, action=action, ttl_seconds=ttl)
    return f"/links/{token}/"


def confirm(client: Client, path: str, comment: str = ""):
    page = client.get(path)
    csrf = client.cookies["portal_csrftoken"].value
    return page, client.post(path, {"comment": comment, "csrfmiddlewaretoken": csrf})


def refusal_codes() -> list[str]:
    return list(AuditEvent.objects.filter(action="decision_refused").values_list("data__code", flat=True))


def test_a_link_shows_a_confirm_page_and_only_the_post_decides(alice, approval):
    client = signed_in(alice)
    path = link_path(approval)

    page = client.get(path)

    assert page.status_code == 200
    assert "Yes, approve" in page.content.decode()
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING  # GET changed nothing (mail scanners follow links)

    _, decided = confirm(client, path, comment="via email")

    assert decided.status_code == 302
    approval.refresh_from_db()
    assert approval.status == RequestStatus.APPROVED
    assert approval.decision_comment == "via email"
    assert Callback.objects.filter(request=approval).count() == 1


def test_a_reject_link_with_a_reason_rejects_and_the_reason_reaches_step_functions(alice, approval):
    page, decided = confirm(signed_in(alice), link_path(approval, action="reject"), comment="  Budget is frozen ")

    assert "Reason (required)" in page.content.decode()
    assert decided.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.decision_comment) == (RequestStatus.REJECTED, "Budget is frozen")
    payload = Callback.objects.get(request=approval).payload
    assert payload["error"] == "ApprovalDenied"
    cause = json.loads(payload["cause"])
    assert cause["comment"] == "Budget is frozen"
    assert cause["rejections"][0]["comment"] == "Budget is frozen"


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_reject_link_without_a_reason_is_refused_and_the_page_asks_for_it(alice, approval, reason):
    _, refused = confirm(signed_in(alice), link_path(approval, action="reject"), comment=reason)

    assert refused.status_code == 400
    page = refused.content.decode()
    assert "Say why you reject" in page and "Yes, reject" in page  # the same confirm page, with the reason missing
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING
    assert not Callback.objects.filter(request=approval).exists()
    assert refusal_codes() == ["reason_required"]


def test_following_a_link_needs_sign_in_first(approval):
    response = Client().get(link_path(approval))

    assert response.status_code == 302
    assert response["Location"].startswith("/signin/?next=/links/")


def test_a_link_for_someone_else_is_refused_for_the_signed_in_user(alice, approval):
    erin = make_user("erin", "finance-approvers")

    response = signed_in(erin).get(link_path(approval))

    assert response.status_code == 403
    assert "sent to someone else" in response.content.decode()
    assert refusal_codes() == ["other_user"]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"),  # signature changed
        lambda t: t.replace(t.split(":")[0], signing.dumps({"r": "x"}).split(":")[0], 1),  # payload swapped
        lambda t: "garbage",
    ],
    ids=["signature", "payload", "garbage"],
)
def test_a_tampered_link_is_refused_and_audited(alice, approval, tamper):
    token = links.make_link_token(public_id=approval.public_id, approver_email="alice@example.com", action="approve")

    response = signed_in(alice).get(f"/links/{tamper(token)}/")

    assert response.status_code == 403
    assert "not valid" in response.content.decode()
    assert refusal_codes() == ["link_tampered"]


def test_a_link_signed_for_approve_cannot_be_turned_into_reject(alice, approval):
    token = links.make_link_token(public_id=approval.public_id, approver_email="alice@example.com", action="approve")
    payload, rest = token.split(":", 1)
    forged = signing.dumps(
        {"r": str(approval.public_id), "u": "alice@example.com", "a": "reject", "e": int(time.time()) + 60},
        compress=True,
    ).split(":", 1)[0]

    response = signed_in(alice).get(f"/links/{forged}:{rest}/")

    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING


def test_an_expired_link_is_refused_with_410(alice, approval):
    response = signed_in(alice).get(link_path(approval, ttl=-1))

    assert response.status_code == 410
    assert "expired" in response.content.decode()
    assert refusal_codes() == ["link_expired"]


def test_a_replayed_link_after_the_decision_is_refused_with_who_decided(alice, approval):
    client = signed_in(alice)
    path = link_path(approval)
    confirm(client, path)

    page, again = confirm(client, path)

    assert page.status_code == 409
    assert again.status_code == 409
    assert "alice@example.com" in again.content.decode()
    assert Callback.objects.count() == 1
    assert set(refusal_codes()) == {"not_pending"}


def test_a_link_for_the_requester_is_still_refused(approval):
    bob = make_user("bob")

    response = signed_in(bob).get(link_path(approval, email="bob@example.com"))

    assert response.status_code == 403
    assert refusal_codes() == ["requester"]


def test_a_post_to_a_link_without_csrf_is_refused(alice, approval):
    client = signed_in(alice)

    response = client.post(link_path(approval), {"comment": ""})

    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING


def test_the_link_url_carries_no_task_token(approval):
    url = links.decision_link_url(public_id=approval.public_id, approver_email="alice@example.com", action="approve")

    assert "tok-" not in url
    assert "tok-" not in json.dumps(signing.loads(url.rsplit("/", 2)[1], salt=links.SALT))
