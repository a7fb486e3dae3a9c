""" "I'm on it": an approver of a group assignment claims a request so colleagues see it taken.

A claim is information, never a lock: colleagues still decide. Only who may decide claims,
only the claimer unclaims, admins release anyone's claim; every step and refusal is audited.
"""

import json
import uuid

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, RequestStatus
from approvals.roles import APPROVER_ACCESS_GROUP
from tests.support import make_user, signed_in

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/approvals/approvalrequest/"


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "erin": make_user("erin", "finance-approvers"),
        "bob": make_user("bob", "finance-approvers"),  # the requester, in the group too
        "dave": make_user("dave", "travel-approvers"),
        "carol": make_user("carol", admin=True),
    }


def ingest(title: str = "Approve order 1234", *, groups=("finance-approvers",), **extra) -> ApprovalRequest:
    body = {
        "taskToken": f"tok-{uuid.uuid4()}",
        "title": title,
        "requester": "bob@example.com",
        "approvers": {"users": [], "groups": list(groups)},
        **extra,
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    return request


def post(client: Client, url: str, data: dict | None = None, follow: bool = False):
    if "portal_csrftoken" not in client.cookies:
        client.get("/")
    return client.post(
        url, {**(data or {}), "csrfmiddlewaretoken": client.cookies["portal_csrftoken"].value}, follow=follow
    )


def claim(client: Client, request: ApprovalRequest, follow: bool = False):
    return post(client, f"/requests/{request.public_id}/claim/", follow=follow)


def unclaim(client: Client, request: ApprovalRequest, follow: bool = False):
    return post(client, f"/requests/{request.public_id}/unclaim/", follow=follow)


def page(client: Client, request: ApprovalRequest) -> str:
    response = client.get(f"/requests/{request.public_id}/")
    assert response.status_code == 200
    return response.content.decode()


def actions(request: ApprovalRequest) -> list[tuple[str, str, str]]:
    return [
        (event.action, event.actor_label, event.data.get("code", ""))
        for event in AuditEvent.objects.filter(request=request).exclude(action="ingested").order_by("pk")
    ]


# ---------------------------------------------------------------------------
# Claim and unclaim on the request page
# ---------------------------------------------------------------------------
def test_an_approver_claims_and_colleagues_see_it_on_the_page_and_in_the_inbox(people):
    request = ingest()
    alice, erin = signed_in(people["alice"]), signed_in(people["erin"])
    assert "I'm on it</button>" in page(alice, request)

    response = claim(alice, request, follow=True)

    assert response.redirect_chain == [(f"/requests/{request.public_id}/", 302)]
    request.refresh_from_db()
    assert request.claimed_by == people["alice"] and request.claimed_at is not None
    assert actions(request) == [("claimed", "alice@example.com", "")]
    mine = response.content.decode()
    assert "You're on it</strong> since" in mine and ">Release</button>" in mine
    assert "I'm on it</button>" not in mine
    theirs = page(erin, request)
    assert "alice@example.com is on it</strong> since" in theirs
    assert "you can still decide" in theirs
    assert "Release</button>" not in theirs and "I'm on it</button>" not in theirs
    assert 'class="claimed">alice@example.com is on it</span>' in erin.get("/").content.decode()
    assert 'class="claimed">You\'re on it</span>' in alice.get("/").content.decode()


def test_claiming_again_changes_nothing(people):
    request = ingest()
    alice = signed_in(people["alice"])
    claim(alice, request)
    first = ApprovalRequest.objects.get(pk=request.pk).claimed_at

    assert claim(alice, request).status_code == 302

    assert ApprovalRequest.objects.get(pk=request.pk).claimed_at == first
    assert actions(request) == [("claimed", "alice@example.com", "")]


def test_a_colleague_cannot_take_a_claimed_request_and_learns_who_is_on_it_since_when(people):
    request = ingest()
    claim(signed_in(people["alice"]), request)

    response = claim(signed_in(people["erin"]), request)

    assert response.status_code == 409
    body = response.content.decode()
    assert "<h1>Someone is already on it</h1>" in body
    assert "alice@example.com is already on it since 20" in body
    assert f'href="/requests/{request.public_id}/"' in body
    assert ApprovalRequest.objects.get(pk=request.pk).claimed_by == people["alice"]
    assert actions(request)[-1] == ("decision_refused", "erin@example.com", "claimed")
    assert AuditEvent.objects.filter(request=request, action="decision_refused").get().data["attempted"] == "claim"


def leaves_finance(user) -> None:
    user.groups.remove(Group.objects.get(name="finance-approvers"))


def is_deactivated(user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


@pytest.mark.parametrize("change", [leaves_finance, is_deactivated], ids=["left-group", "deactivated"])
def test_a_claim_whose_holder_may_no_longer_decide_does_not_keep_colleagues_from_taking_it(people, change):
    """alice claimed, then lost her right: "alice is on it" would hold the request for nobody,
    and every colleague's claim was refused as taken."""
    request = ingest()
    claim(signed_in(people["alice"]), request)
    change(people["alice"])

    assert claim(signed_in(people["erin"]), request).status_code == 302

    assert ApprovalRequest.objects.get(pk=request.pk).claimed_by == people["erin"]
    released = AuditEvent.objects.get(request=request, action="claim_released")
    assert released.actor is None and released.data["claimed_by"] == "alice@example.com"
    assert released.data["code"] in {"not_assignee", "inactive_user"}
    assert actions(request)[-1] == ("claimed", "erin@example.com", "")


def test_who_may_not_decide_cannot_claim_and_the_refusal_is_audited(people):
    request = ingest()

    response = claim(signed_in(people["bob"]), request)

    assert response.status_code == 403
    assert ApprovalRequest.objects.get(pk=request.pk).claimed_by is None
    assert actions(request) == [("decision_refused", "bob@example.com", "requester")]


def test_who_may_not_see_the_request_gets_the_404_a_get_gives_and_nothing_is_recorded_against_it(people):
    request = ingest()

    response = claim(signed_in(people["dave"]), request)

    assert response.status_code == 404 and "not yours to see" in response.content.decode()
    assert ApprovalRequest.objects.get(pk=request.pk).claimed_by is None
    assert actions(request) == []
    refusal = AuditEvent.objects.get(action="decision_refused", actor=people["dave"])
    assert (refusal.request, refusal.data["code"], refusal.data["attempted"]) == (None, "not_found", "claim")


def test_the_requester_sees_no_claim_button_but_sees_who_is_on_it(people):
    request = ingest()
    bob = signed_in(people["bob"])
    assert "I'm on it</button>" not in page(bob, request)

    claim(signed_in(people["alice"]), request)

    body = page(bob, request)
    assert "alice@example.com is on it</strong>" in body
    assert "you can still decide" not in body


def test_a_closed_request_cannot_be_claimed_and_an_old_claim_no_longer_shows(people):
    request = ingest()
    alice, erin = signed_in(people["alice"]), signed_in(people["erin"])
    claim(alice, request)
    services.approval_decide(public_id=request.public_id, user=people["erin"], approve=True)

    assert claim(erin, request).status_code == 409
    for client in (alice, erin):
        body = page(client, request)
        assert "on it</strong>" not in body and "Release</button>" not in body
        assert "on it</span>" not in client.get("/?tab=groups").content.decode()


def test_a_claim_does_not_stop_a_colleague_from_deciding(people):
    request = ingest()
    claim(signed_in(people["alice"]), request)
    erin = signed_in(people["erin"])
    assert "data-decision-form" in page(erin, request)

    response = post(erin, f"/requests/{request.public_id}/decide/", {"decision": "approve", "comment": "done"})

    assert response.status_code == 302
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED and request.decided_by == people["erin"]


def test_only_the_claimer_releases_a_claim_and_releasing_twice_is_harmless(people):
    request = ingest()
    alice, erin = signed_in(people["alice"]), signed_in(people["erin"])
    claim(alice, request)

    refused = unclaim(erin, request)
    assert refused.status_code == 403
    assert "Only alice@example.com, who is on it, can release this claim." in refused.content.decode()
    assert ApprovalRequest.objects.get(pk=request.pk).claimed_by == people["alice"]

    assert unclaim(alice, request).status_code == 302
    assert unclaim(alice, request).status_code == 302
    request.refresh_from_db()
    assert request.claimed_by is None and request.claimed_at is None
    assert actions(request) == [
        ("claimed", "alice@example.com", ""),
        ("decision_refused", "erin@example.com", "not_claimer"),
        ("unclaimed", "alice@example.com", ""),
    ]
    assert "I'm on it</button>" in page(erin, request)
    assert claim(erin, request).status_code == 302


def test_claim_and_release_need_a_post_with_csrf(people):
    request = ingest()
    client = signed_in(people["alice"])

    assert client.get(f"/requests/{request.public_id}/claim/").status_code == 405
    assert client.post(f"/requests/{request.public_id}/claim/").status_code == 403  # no CSRF token
    anonymous = Client().post(f"/requests/{request.public_id}/claim/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/signin/")
    assert ApprovalRequest.objects.get(pk=request.pk).claimed_by is None


def test_claiming_an_unknown_request_is_a_404_and_audited(people):
    response = post(signed_in(people["alice"]), f"/requests/{uuid.uuid4()}/claim/")

    assert response.status_code == 404
    assert AuditEvent.objects.filter(action="decision_refused", data__code="not_found", actor=people["alice"]).exists()


def test_a_claimer_who_votes_on_a_quorum_frees_the_request_for_the_next_approver(people):
    request = ingest(policy={"required": 2})
    claim(signed_in(people["alice"]), request)

    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)

    request.refresh_from_db()
    assert request.is_pending and request.claimed_by is None
    assert [action for action, _, _ in actions(request)] == ["claimed", "unclaimed", "approval_recorded"]
    assert claim(signed_in(people["erin"]), request).status_code == 302


# ---------------------------------------------------------------------------
# Admins release claims
# ---------------------------------------------------------------------------
def approver_in_admin(user):
    """An approver as the SSO backend makes one: staff, with the approvers' admin permissions."""
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.groups.add(Group.objects.get(name=APPROVER_ACCESS_GROUP))
    return signed_in(user)


def test_an_admin_releases_claims_in_bulk_and_each_release_is_audited(people):
    held, free, closed = ingest("Held"), ingest("Free"), ingest("Closed")
    services.approval_claim(public_id=held.public_id, user=people["alice"])
    services.approval_claim(public_id=closed.public_id, user=people["erin"])
    services.approval_decide(public_id=closed.public_id, user=people["alice"], approve=True)
    carol = signed_in(people["carol"])
    listing = carol.get(CHANGELIST).content.decode()
    assert ">Claimed by<" in listing and '<td class="field-claimed_by_email">alice@example.com</td>' in listing
    assert "Release claims on the selected requests" in listing
    assert {row.title for row in carol.get(f"{CHANGELIST}?claimed=yes").context["cl"].result_list} == {"Held"}
    assert {row.title for row in carol.get(f"{CHANGELIST}?claimed=no").context["cl"].result_list} == {"Free"}

    response = post(
        carol,
        CHANGELIST,
        {"action": "release_claims_selected", "_selected_action": [held.pk, free.pk, closed.pk], "index": "0"},
        follow=True,
    )

    notes = [str(message) for message in response.context["messages"]]
    assert notes == [
        f"Released 1 claim(s): “Held” (#{held.pk}, alice@example.com).",
        "2 selected request(s) had no claim.",
    ]
    held.refresh_from_db()
    assert held.claimed_by is None
    event = AuditEvent.objects.get(request=held, action="claim_released")
    assert event.actor == people["carol"] and event.data["claimed_by"] == "alice@example.com"
    assert not AuditEvent.objects.filter(request__in=[free, closed], action="claim_released").exists()


def test_an_approver_is_not_offered_the_release_action_and_cannot_post_it(people):
    request = ingest()
    services.approval_claim(public_id=request.public_id, user=people["erin"])
    alice = approver_in_admin(people["alice"])
    listing = alice.get(CHANGELIST)
    assert listing.status_code == 200
    assert "Release claims" not in listing.content.decode()
    assert '<td class="field-claimed_by_email">erin@example.com</td>' in listing.content.decode()

    post(alice, CHANGELIST, {"action": "release_claims_selected", "_selected_action": [request.pk], "index": "0"})

    assert ApprovalRequest.objects.get(pk=request.pk).claimed_by == people["erin"]
    with pytest.raises(services.ApprovalError) as refused:
        services.claims_release(request_ids=[request.pk], actor=people["alice"])
    assert refused.value.code == "not_allowed"
    assert not AuditEvent.objects.filter(action="claim_released").exists()


def test_the_release_permission_alone_lets_a_non_superuser_release(people):
    from django.contrib.auth.models import Permission

    request = ingest()
    services.approval_claim(public_id=request.public_id, user=people["erin"])
    people["dave"].user_permissions.add(Permission.objects.get(codename="release_claim_approvalrequest"))
    dave = type(people["dave"]).objects.get(pk=people["dave"].pk)  # a fresh permission cache

    released = services.claims_release(request_ids=[request.pk], actor=dave)

    assert [claim.request.pk for claim in released] == [request.pk]
    assert released[0].claimed_by == people["erin"]
    assert ApprovalRequest.objects.get(pk=request.pk).claimed_by is None
