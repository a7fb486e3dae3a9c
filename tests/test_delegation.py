"""Delegation: "out of office until D, delegate to X".

While a delegation from alice to xavier runs, xavier sees and decides what waits for alice —
requests that arrive during it and those already open — and every decision records both:
xavier, on behalf of alice. Before it starts, after it ends or once revoked, he cannot. Real
PostgreSQL, the real services and pages; time is moved by setting the window, never by sleeping.
"""

import json
import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Callback, Delegation, RequestStatus, User, Vote
from tests.support import make_user, new_request_notifications_planned, wait_for, wait_for_execution_end
from tests.support import signed_in as client_for

pytestmark = pytest.mark.django_db

ADMIN_CHANGELIST = "/admin/approvals/delegation/"


@pytest.fixture
def people() -> dict[str, User]:
    return {
        "alice": make_user("alice", "finance-approvers"),  # the approver who goes away
        "xavier": make_user("xavier"),  # who stands in for her
        "bob": make_user("bob"),  # requester
        "dave": make_user("dave"),  # a third person
        "erin": make_user("erin", "finance-approvers"),
        "carol": make_user("carol", admin=True),
    }


def ingest(title: str = "Approve order 1234", *, users=(), groups=("finance-approvers",), **fields) -> ApprovalRequest:
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": title,
        "requester": "bob@example.com",
        "approvers": {"users": list(users), "groups": list(groups)},
        "details": {"amount": 5300},
        **fields,
    }
    request, created = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    assert created
    return request


def delegate(people, *, starts_in=None, days: float = 7, to: str = "xavier", actor: str = "alice") -> Delegation:
    now = timezone.now()
    return services.delegation_set(
        delegator=people["alice"],
        delegate_email=f"{to}@example.com",
        starts_at=now + starts_in if starts_in else None,
        ends_at=(now + starts_in if starts_in else now) + timedelta(days=days),
        reason="holiday",
        actor=people[actor],
    )


def move_into_the_past(delegation: Delegation) -> None:
    """As if the whole window had passed: it ran from 10 days ago until yesterday."""
    now = timezone.now()
    Delegation.objects.filter(pk=delegation.pk).update(
        starts_at=now - timedelta(days=10), ends_at=now - timedelta(days=1)
    )


def csrf(client: Client) -> str:
    if "portal_csrftoken" not in client.cookies:
        client.get("/")
    return client.cookies["portal_csrftoken"].value


def post(client: Client, url: str, data: dict | None = None, **kwargs):
    return client.post(url, {**(data or {}), "csrfmiddlewaretoken": csrf(client)}, **kwargs)


def decide(client: Client, request: ApprovalRequest, decision: str = "approve", comment: str = "ok"):
    return post(client, f"/requests/{request.public_id}/decide/", {"decision": decision, "comment": comment})


def waiting_titles(client: Client) -> str:
    return client.get("/").content.decode()


def identity(user: User) -> dict:
    return {"email": user.email, "sub": user.oidc_sub, "issuer": user.oidc_issuer}


# ---------------------------------------------------------------------------
# The window
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("assigned", ["group", "user"])
def test_inside_the_window_the_delegate_sees_and_decides_on_behalf_of_the_approver(people, assigned):
    open_before = ingest(
        "Open before", **({"users": ["alice@example.com"], "groups": []} if assigned == "user" else {})
    )
    delegate(people)
    arriving_during = ingest("Arriving during")
    xavier = client_for(people["xavier"])

    inbox = waiting_titles(xavier)
    assert "Open before" in inbox and "Arriving during" in inbox
    assert inbox.count("for alice@example.com") == 2
    page = xavier.get(f"/requests/{open_before.public_id}/").content.decode()
    assert "You decide on behalf of <strong>alice@example.com</strong>" in page
    confirm = post(xavier, f"/requests/{open_before.public_id}/confirm/", {"decision": "approve", "comment": "ok"})
    assert re.search(r"<dt>On behalf of</dt><dd>alice@example.com</dd>", confirm.content.decode())

    response = decide(xavier, open_before, comment="covering for Alice")

    assert response.status_code == 302
    open_before.refresh_from_db()
    assert open_before.status == RequestStatus.APPROVED and open_before.decided_by == people["xavier"]
    vote = Vote.objects.get(request=open_before)
    assert (vote.user, vote.on_behalf_of) == (people["xavier"], people["alice"])
    event = AuditEvent.objects.get(request=open_before, action="approved")
    assert event.actor == people["xavier"] and event.data["on_behalf_of"] == "alice@example.com"
    output = Callback.objects.get(request=open_before).payload["output"]
    assert output["decidedBy"] == {**identity(people["xavier"]), "onBehalfOf": identity(people["alice"])}
    assert output["approvals"][0]["onBehalfOf"] == identity(people["alice"])
    assert decide(xavier, arriving_during, "reject", "no budget").status_code == 302
    assert '"onBehalfOf"' in Callback.objects.get(request=arriving_during).payload["cause"]


def test_before_the_window_starts_the_delegate_neither_sees_nor_decides(people):
    request = ingest()
    delegate(people, starts_in=timedelta(days=2))
    xavier = client_for(people["xavier"])

    assert "Approve order 1234" not in waiting_titles(xavier)
    assert xavier.get(f"/requests/{request.public_id}/").status_code == 404
    response = decide(xavier, request)

    assert response.status_code == 404  # a POST answers like the GET: not his to see
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING and not Vote.objects.exists()
    refusal = AuditEvent.objects.get(action="decision_refused")
    assert refusal.data["code"] == "not_found" and refusal.data["public_id"] == str(request.public_id)


def test_after_the_window_ends_the_delegate_neither_sees_nor_decides(people):
    request = ingest()
    delegation = delegate(people)
    xavier = client_for(people["xavier"])
    assert xavier.get(f"/requests/{request.public_id}/").status_code == 200

    move_into_the_past(delegation)

    assert "Approve order 1234" not in waiting_titles(xavier)
    assert xavier.get(f"/requests/{request.public_id}/").status_code == 404
    assert decide(xavier, request).status_code == 404
    assert not Vote.objects.exists()
    # Alice decides her own requests throughout.
    assert decide(client_for(people["alice"]), request).status_code == 302


def test_a_revoked_delegation_gives_nothing_any_more(people):
    request = ingest()
    delegation = delegate(people)
    alice = client_for(people["alice"])

    response = post(alice, f"/out-of-office/{delegation.pk}/revoke/", follow=True)

    assert "xavier@example.com no longer stands in for you" in response.content.decode()
    xavier = client_for(people["xavier"])
    assert xavier.get(f"/requests/{request.public_id}/").status_code == 404
    assert decide(xavier, request).status_code == 404
    event = AuditEvent.objects.get(action="delegation_revoked")
    assert event.actor == people["alice"] and event.request is None
    assert (event.data["delegator"], event.data["delegate"]) == ("alice@example.com", "xavier@example.com")


def test_a_vote_cast_inside_the_window_still_counts_when_the_callback_is_checked_after_it(people):
    from approvals import permissions

    request = ingest()
    delegation = delegate(people)
    decide(client_for(people["xavier"]), request)
    vote = Vote.objects.get(request=request)

    move_into_the_past(delegation)
    Vote.objects.filter(pk=vote.pk).update(created_at=timezone.now() - timedelta(days=5))
    vote.refresh_from_db()

    assert permissions.vote_refusal(vote, request) is None
    Vote.objects.filter(pk=vote.pk).update(created_at=timezone.now() - timedelta(days=11))
    vote.refresh_from_db()
    assert permissions.vote_refusal(vote, request).code == "not_assignee"


# ---------------------------------------------------------------------------
# The rule around it
# ---------------------------------------------------------------------------
def test_the_approver_and_their_delegate_cannot_both_vote_with_the_approvers_right(people):
    two_of_n = ingest("Two of three", policy={"required": 2})
    delegate(people)

    assert decide(client_for(people["alice"]), two_of_n).status_code == 302
    refused = decide(client_for(people["xavier"]), two_of_n)

    # (The status of an "already_voted" page belongs to views.ERROR_STATUS; the refusal is what counts.)
    assert refused.status_code >= 400
    assert "alice@example.com already decided this request themselves" in refused.content.decode()
    assert Vote.objects.filter(request=two_of_n).count() == 1

    # The other way round: xavier votes for alice first, then alice herself is refused.
    other = ingest("Two of three, again", policy={"required": 2})
    assert decide(client_for(people["xavier"]), other).status_code == 302
    refused = decide(client_for(people["alice"]), other)
    assert "xavier@example.com already decided this request on your behalf" in refused.content.decode()
    assert decide(client_for(people["erin"]), other).status_code == 302
    other.refresh_from_db()
    assert other.status == RequestStatus.APPROVED


def test_the_delegate_who_requested_it_is_still_refused(people):
    own = ingest("Xavier's own order", requester="xavier@example.com")
    delegate(people)

    response = decide(client_for(people["xavier"]), own)

    assert response.status_code == 403
    assert "someone else has to decide" in response.content.decode()
    own.refresh_from_db()
    assert own.status == RequestStatus.PENDING


def test_the_delegate_cannot_decide_what_the_approver_requested(people):
    alices = ingest("Alice's own order", requester="alice@example.com", groups=("finance-approvers",))
    delegate(people)

    response = decide(client_for(people["xavier"]), alices)

    assert response.status_code == 403
    assert "alice@example.com requested this approval" in response.content.decode()


def test_a_delegation_is_not_passed_on(people):
    request = ingest()
    delegate(people)
    services.delegation_set(
        delegator=people["xavier"],
        delegate_email="dave@example.com",
        ends_at=timezone.now() + timedelta(days=3),
        actor=people["xavier"],
    )
    dave = client_for(people["dave"])

    assert dave.get(f"/requests/{request.public_id}/").status_code == 404
    assert decide(dave, request).status_code == 404


# ---------------------------------------------------------------------------
# Setting and revoking
# ---------------------------------------------------------------------------
def test_the_approver_sets_a_delegation_and_it_is_audited(people):
    delegation = delegate(people)

    assert (delegation.delegator, delegation.delegate, delegation.created_by) == (
        people["alice"],
        people["xavier"],
        people["alice"],
    )
    event = AuditEvent.objects.get(action="delegation_set")
    assert event.actor == people["alice"] and event.request is None
    assert event.data["delegator"] == "alice@example.com" and event.data["delegate"] == "xavier@example.com"
    assert event.data["set_by"] == "alice@example.com"
    assert event.data["from"] == delegation.starts_at.isoformat()
    assert event.data["until"] == delegation.ends_at.isoformat()


def test_an_admin_sets_and_revokes_a_delegation_for_someone(people):
    delegation = delegate(people, actor="carol")

    assert delegation.created_by == people["carol"]
    assert AuditEvent.objects.get(action="delegation_set").data["set_by"] == "carol@example.com"
    services.delegation_revoke(delegation_id=delegation.pk, actor=people["carol"])
    delegation.refresh_from_db()
    assert delegation.revoked_at is not None
    assert AuditEvent.objects.get(action="delegation_revoked").actor == people["carol"]


def test_a_third_person_can_neither_set_nor_revoke_someone_elses_delegation(people):
    with pytest.raises(services.ApprovalError) as refused:
        delegate(people, actor="dave")
    assert refused.value.code == "not_allowed"
    delegation = delegate(people)

    with pytest.raises(services.ApprovalError) as refused:
        services.delegation_revoke(delegation_id=delegation.pk, actor=people["xavier"])
    assert refused.value.code == "not_allowed"
    response = post(client_for(people["dave"]), f"/out-of-office/{delegation.pk}/revoke/")
    assert response.status_code == 403
    delegation.refresh_from_db()
    assert delegation.revoked_at is None
    assert not AuditEvent.objects.filter(action="delegation_revoked").exists()


@pytest.mark.parametrize(
    ("email", "ends_in", "code", "says"),
    [
        ("nobody@example.com", timedelta(days=1), "unknown_delegate", "sign in once"),
        ("not an email", timedelta(days=1), "bad_input", "not an email address"),
        ("alice@example.com", timedelta(days=1), "bad_input", "oneself"),
        ("xavier@example.com", timedelta(minutes=-1), "bad_period", "in the future"),
        ("xavier@example.com", timedelta(days=366), "bad_period", "at most a year"),
    ],
)
def test_a_delegation_is_refused_clearly(people, email, ends_in, code, says):
    with pytest.raises(services.ApprovalError) as refused:
        services.delegation_set(
            delegator=people["alice"], delegate_email=email, ends_at=timezone.now() + ends_in, actor=people["alice"]
        )

    assert refused.value.code == code and says in refused.value.message
    assert not Delegation.objects.exists() and not AuditEvent.objects.filter(action="delegation_set").exists()


def test_a_deactivated_user_cannot_be_the_delegate(people):
    User.objects.filter(pk=people["xavier"].pk).update(is_active=False)

    with pytest.raises(services.ApprovalError) as refused:
        delegate(people)

    assert refused.value.code == "unknown_delegate"


def test_a_new_delegation_replaces_the_one_it_overlaps(people):
    first = delegate(people, to="xavier")
    second = delegate(people, to="dave")

    first.refresh_from_db()
    assert first.revoked_at is not None and first.state_at(timezone.now()) == "revoked"
    assert second.state_at(timezone.now()) == "active"
    revoked = AuditEvent.objects.get(action="delegation_revoked")
    assert revoked.data["delegation"] == first.pk and revoked.data["replaced_by_new"] is True
    assert AuditEvent.objects.filter(action="delegation_set").last().data["replaced"] == [first.pk]
    request = ingest()
    assert client_for(people["xavier"]).get(f"/requests/{request.public_id}/").status_code == 404
    assert client_for(people["dave"]).get(f"/requests/{request.public_id}/").status_code == 200


def test_a_later_delegation_cuts_the_current_one_short_where_it_begins(people):
    current = delegate(people, to="xavier", days=10)
    later = delegate(people, to="dave", starts_in=timedelta(days=3), days=10)

    current.refresh_from_db()
    assert current.effective_end == later.starts_at
    assert current.state_at(timezone.now()) == "active"
    assert current.state_at(later.starts_at) == "revoked"
    assert later.state_at(timezone.now()) == "upcoming"
    assert current.active_at(timezone.now()) and not current.active_at(later.starts_at)


def test_revoking_twice_is_harmless(people):
    delegation = delegate(people)
    services.delegation_revoke(delegation_id=delegation.pk, actor=people["alice"])
    services.delegation_revoke(delegation_id=delegation.pk, actor=people["alice"])

    assert AuditEvent.objects.filter(action="delegation_revoked").count() == 1


# ---------------------------------------------------------------------------
# The out-of-office page
# ---------------------------------------------------------------------------
def test_the_out_of_office_page_sets_a_delegation_and_shows_both_sides(people):
    alice = client_for(people["alice"])
    page = alice.get("/out-of-office/").content.decode()
    assert 'href="/out-of-office/" aria-current="page">Out of office</a>' in page
    assert "Nobody stands in for you." in page
    until = (timezone.localtime() + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")

    response = post(
        alice, "/out-of-office/", {"delegate_email": "Xavier@Example.com", "ends_at": until, "reason": "holiday"}
    )

    assert response.status_code == 302 and response["Location"] == "/out-of-office/"
    delegation = Delegation.objects.get()
    assert delegation.delegate == people["xavier"] and delegation.reason == "holiday"
    assert timezone.localtime(delegation.ends_at).strftime("%Y-%m-%dT%H:%M") == until
    shown = alice.get("/out-of-office/").content.decode()
    assert "<strong>xavier@example.com</strong>" in shown and "stands in for you" in shown
    assert f'action="/out-of-office/{delegation.pk}/revoke/"' in shown
    theirs = client_for(people["xavier"]).get("/out-of-office/").content.decode()
    assert "You stand in for" in theirs and "<strong>alice@example.com</strong>" in theirs
    assert f"/out-of-office/{delegation.pk}/revoke/" not in theirs


def test_the_out_of_office_page_explains_a_refusal_next_to_the_field(people):
    alice = client_for(people["alice"])
    until = (timezone.localtime() + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")

    response = post(alice, "/out-of-office/", {"delegate_email": "nobody@example.com", "ends_at": until})

    assert response.status_code == 400
    page = response.content.decode()
    assert "they have to sign in once" in page
    assert re.search(r'<input type="email" name="delegate_email"[^>]*aria-invalid="true"', page)
    assert not Delegation.objects.exists()
    past = (timezone.localtime() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    response = post(alice, "/out-of-office/", {"delegate_email": "xavier@example.com", "ends_at": past})
    assert response.status_code == 400 and "The end has to be in the future." in response.content.decode()


def test_the_out_of_office_page_needs_a_post_with_csrf_to_change_anything(people):
    delegation = delegate(people)
    alice = client_for(people["alice"])

    assert alice.get(f"/out-of-office/{delegation.pk}/revoke/").status_code == 405
    assert alice.post(f"/out-of-office/{delegation.pk}/revoke/").status_code == 403  # no CSRF token
    delegation.refresh_from_db()
    assert delegation.revoked_at is None


# ---------------------------------------------------------------------------
# The inbox stays cheap
# ---------------------------------------------------------------------------
def test_the_delegates_inbox_needs_the_same_queries_for_5_or_50_requests(people):
    delegate(people)
    xavier = client_for(people["xavier"])
    for number in range(5):
        ingest(f"Order {number}")

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = xavier.get("/")
        assert response.status_code == 200
        return len(queries)

    few = count()
    for number in range(45):
        ingest(f"Order {number + 5}")
    assert count() == few
    assert xavier.get("/").content.decode().count("for alice@example.com") == 25  # one page


# ---------------------------------------------------------------------------
# The admin
# ---------------------------------------------------------------------------
def test_the_admin_lists_delegations_with_their_state_and_finds_them(people):
    active = delegate(people)
    ended = services.delegation_set(
        delegator=people["erin"],
        delegate_email="dave@example.com",
        ends_at=timezone.now() + timedelta(days=1),
        actor=people["erin"],
    )
    move_into_the_past(ended)
    carol = client_for(people["carol"])

    page = carol.get(ADMIN_CHANGELIST).content.decode()
    assert "alice@example.com" in page and "erin@example.com" in page
    assert "Active" in page and "Ended" in page
    only_active = carol.get(f"{ADMIN_CHANGELIST}?state=active").content.decode()
    assert "alice@example.com" in only_active and "erin@example.com" not in only_active
    only_ended = carol.get(f"{ADMIN_CHANGELIST}?state=ended").content.decode()
    assert "erin@example.com" in only_ended and "alice@example.com" not in only_ended
    found = carol.get(f"{ADMIN_CHANGELIST}?q=xavier").content.decode()
    assert "alice@example.com" in found and "erin@example.com" not in found
    view = carol.get(f"{ADMIN_CHANGELIST}{active.pk}/change/")
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()


def test_an_admin_adds_a_delegation_for_someone_through_the_service(people):
    carol = client_for(people["carol"])
    until = (timezone.localtime() + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")

    response = post(
        carol,
        f"{ADMIN_CHANGELIST}add/",
        {"delegator_email": "alice@example.com", "delegate_email": "xavier@example.com", "ends_at": until},
        follow=True,
    )

    assert response.status_code == 200
    delegation = Delegation.objects.get()
    assert (delegation.delegator, delegation.delegate, delegation.created_by) == (
        people["alice"],
        people["xavier"],
        people["carol"],
    )
    assert AuditEvent.objects.get(action="delegation_set").data["set_by"] == "carol@example.com"
    refused = post(
        carol,
        f"{ADMIN_CHANGELIST}add/",
        {"delegator_email": "alice@example.com", "delegate_email": "alice@example.com", "ends_at": until},
    )
    assert refused.status_code == 200 and "oneself" in refused.content.decode()
    assert Delegation.objects.count() == 1


def test_the_admin_revokes_through_the_service_and_never_deletes(people):
    delegation = delegate(people)
    carol = client_for(people["carol"])
    selection = {"action": "revoke_selected", "_selected_action": [str(delegation.pk)]}

    confirm = post(carol, ADMIN_CHANGELIST, {**selection, "index": "0"})
    assert confirm.status_code == 200 and "alice@example.com → xavier@example.com" in confirm.content.decode()
    done = post(carol, ADMIN_CHANGELIST, {**selection, "confirm": "yes"}, follow=True)

    assert "Revoked 1" in done.content.decode()
    delegation.refresh_from_db()
    assert delegation.revoked_at is not None
    assert AuditEvent.objects.get(action="delegation_revoked").actor == people["carol"]
    assert carol.get(f"{ADMIN_CHANGELIST}{delegation.pk}/delete/").status_code == 403
    assert Delegation.objects.filter(pk=delegation.pk).exists()


def test_an_approver_in_the_admin_has_no_delegation_pages(people):
    # Approvers are staff without superuser (approvals/roles.py): the delegation admin is not theirs.
    User.objects.filter(pk=people["alice"].pk).update(is_staff=True)
    people["alice"].refresh_from_db()
    alice = client_for(people["alice"])

    assert alice.get(ADMIN_CHANGELIST).status_code == 403
    assert alice.get(f"{ADMIN_CHANGELIST}add/").status_code == 403


def test_the_inbox_marks_only_what_reaches_the_delegate_through_the_delegation(people):
    services.delegation_set(
        delegator=people["alice"],
        delegate_email="erin@example.com",
        ends_at=timezone.now() + timedelta(days=2),
        actor=people["alice"],
    )
    ingest("Group order")  # finance-approvers: erin's own right too
    ingest("Named order", users=["Alice@Example.com"], groups=[])

    rows = re.findall(
        r'class="request-title"[^>]*>([^<]+)</a>\s*<div class="meta">\s*(.*?)<span>from',
        waiting_titles(client_for(people["erin"])),
        re.S,
    )

    marks = {title: "for alice@example.com" in meta for title, meta in rows}
    assert marks == {"Group order": False, "Named order": True}


# ---------------------------------------------------------------------------
# Step Functions (the moto server): the execution's output names both
# ---------------------------------------------------------------------------
def test_the_delegate_approves_and_the_execution_output_says_on_behalf_of_whom(aws, demo_state_machine, people):
    from approvals.integrations import aws as gateway
    from approvals.tasks import deliver_callback
    from worker.consumer import consume_once

    delegate(people)
    execution_arn = gateway.start_execution(
        state_machine_arn=demo_state_machine,
        name=f"delegation-{uuid.uuid4().hex[:12]}",
        execution_input={
            "title": "Approve order 1234 (EUR 5,300)",
            "approvers": {"users": ["alice@example.com"], "groups": []},
            "requester": "bob@example.com",
            "details": {"order": {"id": 1234}},
        },
    )

    def ingested():
        consume_once(queue_url=aws.APPROVAL_QUEUE_URL, wait_seconds=1, visibility_timeout=0, max_bytes=256 * 1024)
        return ApprovalRequest.objects.filter(execution_arn=execution_arn).first()

    request = wait_for(ingested)
    assert decide(client_for(people["xavier"]), request, comment="for Alice, who is away").status_code == 302
    assert deliver_callback(Callback.objects.get(request=request).pk) == "delivered"

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    decided_by = json.loads(execution["output"])["approval"]["decidedBy"]
    assert decided_by == {**identity(people["xavier"]), "onBehalfOf": identity(people["alice"])}


def test_a_new_request_also_notifies_the_active_delegate_of_an_approver(people, settings):
    from approvals.models import Notification

    settings.NOTIFICATION_EMAIL_ENABLED = True
    delegate(people)
    request = ingest()
    new_request_notifications_planned()  # what the ingest's after-commit planning task does
    told = set(Notification.objects.filter(request=request, kind="new_request").values_list("recipient", flat=True))
    assert told == {"alice@example.com", "erin@example.com", "xavier@example.com"}

    services.delegation_revoke(delegation_id=Delegation.objects.get().pk, actor=people["alice"])
    later = ingest("Approve order 1235")
    new_request_notifications_planned()
    told = set(Notification.objects.filter(request=later, kind="new_request").values_list("recipient", flat=True))
    assert told == {"alice@example.com", "erin@example.com"}


# ---------------------------------------------------------------------------
# The moment itself: a window (or a deadline) that closes while a decision is being recorded
# ---------------------------------------------------------------------------
def _held_after_the_check_until(moment, monkeypatch) -> None:
    """Hold the deciding thread after the decision's authority check until the real clock has
    passed `moment` (mock only holds it there: nothing real pauses between those two lines)."""
    import time

    from approvals import permissions

    checked = permissions.decision_authority

    def check_then_wait(*args, **kwargs):
        found = checked(*args, **kwargs)
        while timezone.now() <= moment:
            time.sleep(0.005)
        return found

    monkeypatch.setattr(permissions, "decision_authority", check_then_wait)


def test_a_vote_allowed_just_before_the_window_ends_still_counts_when_the_callback_is_checked(people, monkeypatch):
    request = ingest()
    delegation = delegate(people)
    ends_at = timezone.now() + timedelta(milliseconds=50)
    Delegation.objects.filter(pk=delegation.pk).update(ends_at=ends_at)
    _held_after_the_check_until(ends_at, monkeypatch)

    services.approval_decide(public_id=request.public_id, user=people["xavier"], approve=True, comment="ok")
    monkeypatch.undo()

    vote = Vote.objects.get(request=request)
    assert vote.on_behalf_of == people["alice"]
    assert vote.created_at < ends_at, "the vote is recorded at the moment its right was checked"
    send = services.callback_claim(callback_id=Callback.objects.get(request=request).pk)
    request.refresh_from_db()
    assert send is not None and request.status == RequestStatus.APPROVED
    assert not AuditEvent.objects.filter(request=request, action="reopened").exists()
    assert Vote.objects.get(pk=vote.pk).withdrawn_at is None


def test_a_decision_allowed_just_before_the_deadline_is_recorded_before_it(people, monkeypatch):
    request = ingest()
    deadline = timezone.now() + timedelta(milliseconds=50)
    ApprovalRequest.objects.filter(pk=request.pk).update(deadline=deadline)
    _held_after_the_check_until(deadline, monkeypatch)

    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True, comment="ok")
    monkeypatch.undo()

    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    assert request.decided_at < request.deadline
    assert Vote.objects.get(request=request).created_at < request.deadline
    assert services.approval_expire(request_id=request.pk) is False


def test_a_service_account_an_admin_deactivates_and_reactivates_stands_in_for_nobody_again(people):
    # The admin's path of deprovisioning: a bot's account switched off, and on again later. Its
    # delegations end when it is switched off, as SCIM deprovisioning ends a person's. Nobody can
    # name a bot a delegate now (tests/test_service_account_delegations.py), and one set before
    # lends nothing; one left from before still ends here, audited, rather than stay open.
    from approvals import permissions

    def save_bot(active: bool, account_id=None):
        return services.service_account_save(
            actor=people["carol"],
            account_id=account_id,
            name="stand-in bot",
            issuer="https://idp.test",
            subject="bot-client",
            email="bot@example.com",
            state_machines=["*"],
            may_decide=True,
            active=active,
        )

    account = save_bot(True)
    now = timezone.now()
    delegation = Delegation.objects.create(  # as the release before let alice set it
        delegator=people["alice"], delegate=account.user, ends_at=now + timedelta(days=7), created_by=people["alice"]
    )
    request = ingest()
    assert permissions.decision_refusal(account.user, request).code == "not_assignee"  # it lends nothing

    save_bot(False, account.pk)
    save_bot(True, account.pk)

    bot = User.objects.get(pk=account.user_id)
    assert bot.is_active
    assert permissions.decision_refusal(bot, request).code == "not_assignee"
    delegation.refresh_from_db()
    assert delegation.revoked_at is not None
    ended = AuditEvent.objects.get(action="delegation_revoked", data__delegation=delegation.pk)
    assert ended.data["ended_by"] == "deactivated" and ended.data["service_account"] == "stand-in bot"
