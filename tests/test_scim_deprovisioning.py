"""Deprovisioning by SCIM is immediate, on every channel, and tells the admins (docs/scim.md).

And the other half: people the IdP provisioned, who never signed in, are notified of their
group's requests and can be named as delegates. Real PostgreSQL; the callback re-check runs
against the moto server as the worker runs it.
"""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import permissions, services
from approvals.contract import parse_message
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Callback,
    Notification,
    RequestStatus,
    ScimUser,
    User,
    Vote,
)
from approvals.services.delegations import delegation_set
from approvals.services.scim_tokens import scim_token_create
from approvals.tasks.callbacks import deliver_callback
from tests.support import make_user, new_request_notifications_planned, signed_in
from tests.test_links import link_path
from tests.test_recheck_reopens import start_and_ingest
from tests.test_scim import GROUP_SCHEMA, PATCH_SCHEMA, Scim, user_body
from tests.test_slack import click, people, refusals, slack_api  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db
ISSUER = "https://idp.test"  # the issuer tests.support.make_user and test_slack's people sign in from


@pytest.fixture
def root(db):
    return User.objects.filter(username="root").first() or make_user("root", admin=True)


@pytest.fixture
def scim(client, root):
    return Scim(client, scim_token_create(actor=root, name="okta", issuer=ISSUER)[1])


def provision(scim, name: str, external_id: str | None = None) -> dict:
    response = scim.call("POST", "Users", user_body(f"{name}@example.com", external_id or f"sub-{name}"))
    assert response.status_code == 201, response.content
    return response.json()


def group(scim, name: str, *members: dict) -> dict:
    body = {"schemas": [GROUP_SCHEMA], "displayName": name, "members": [{"value": m["id"]} for m in members]}
    response = scim.call("POST", "Groups", body)
    assert response.status_code == 201, response.content
    return response.json()


def deactivate(scim, user: dict) -> None:
    body = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": False}]}
    response = scim.call("PATCH", f"Users/{user['id']}", body)
    assert response.status_code == 200, response.content


def ingest(**fields) -> ApprovalRequest:
    body = {
        "taskToken": "tok-" + "s" * 40,
        "title": "Approve order 88",
        "requester": "bob@example.com",
        "approvers": {"groups": ["finance-approvers"]},
        **fields,
    }
    return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]


def test_members_who_never_signed_in_are_notified_of_their_groups_request(scim):
    erin, frank = provision(scim, "erin"), provision(scim, "frank")
    group(scim, "finance-approvers", erin, frank)
    request = ingest()
    new_request_notifications_planned()  # what the ingest's after-commit planning task does
    notified = set(Notification.objects.filter(request=request, kind="new_request").values_list("recipient", flat=True))
    assert notified == {"erin@example.com", "frank@example.com"}
    assert not User.objects.filter(email__in=notified, last_login__isnull=False).exists()


def test_a_provisioned_member_who_never_signed_in_can_be_named_a_delegate(scim):
    alice = make_user("alice", "finance-approvers")
    provision(scim, "erin")
    delegation = delegation_set(
        delegator=alice, delegate_email="erin@example.com", ends_at=timezone.now() + timedelta(days=3), actor=alice
    )
    assert delegation.delegate.scim.user_name == "erin@example.com"


def test_a_deactivated_approvers_link_decision_is_refused(scim, root):
    alice = make_user("alice", "finance-approvers")  # signed in through SSO before SCIM was set up
    provision(scim, "alice")  # linked by issuer + subject
    request = ingest(approvers={"users": ["alice@example.com"]})
    browser = signed_in(alice)
    path = link_path(request)
    deactivate(scim, {"id": str(ScimUser.objects.get(user=alice).scim_id)})

    page = browser.get(path)
    assert page.status_code == 302  # the session is gone: to the sign-in page
    alice.refresh_from_db()
    browser.force_login(alice)  # a session made anyway (a stale cookie store): still anonymous
    _, post = browser.get(path), browser.post(path, {"comment": "x"})
    assert post.status_code in {302, 403}
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING and not request.votes.exists()


def test_a_deactivated_approvers_slack_click_is_refused(people, slack_api, celery_eager, scim):  # noqa: F811
    provision(scim, "alice", external_id="alice")  # test_slack's alice signed in with sub "alice"
    request = ingest(taskToken="tok-" + "k" * 40)
    deactivate(scim, {"id": str(ScimUser.objects.get(user=people["alice"]).scim_id)})
    click(slack_api, request)
    assert refusals() == [("inactive_user", "slack")]
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING


def test_admins_are_told_which_requests_lost_an_approver(scim, root):
    erin, frank = provision(scim, "erin"), provision(scim, "frank")
    group(scim, "finance-approvers", erin, frank)
    assigned = ingest()
    elsewhere = ingest(taskToken="tok-" + "e" * 40, approvers={"groups": ["other"]})
    deactivate(scim, erin)

    lost = AuditEvent.objects.get(action="approver_deprovisioned")
    assert lost.request == assigned and lost.data["email"] == "erin@example.com"
    assert lost.data["how"] == ["group finance-approvers"]
    told = Notification.objects.filter(kind="approver_lost")
    assert [(n.request, n.recipient) for n in told] == [(assigned, "root@example.com")]
    summary = AuditEvent.objects.get(action="scim_user_deactivated")
    assert (
        summary.data["requests"] == [str(assigned.public_id)]
        and str(elsewhere.public_id) not in summary.data["requests"]
    )


def test_a_vote_given_before_deprovisioning_is_withdrawn_at_callback_time(aws, demo_state_machine, scim, root):
    alice = make_user("alice", "finance-approvers")
    provision(scim, "alice")
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    services.approval_decide(public_id=request.public_id, user=alice, approve=True, comment="fine")
    callback = Callback.objects.get(request=request)
    deactivate(scim, {"id": str(ScimUser.objects.get(user=alice).scim_id)})

    assert deliver_callback(callback.pk) == "nothing-to-send"
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    vote = (
        Vote.all_votes.get(request=request) if hasattr(Vote, "all_votes") else Vote._base_manager.get(request=request)
    )
    assert vote.withdrawn_at is not None and "disabled" in vote.withdrawn_reason
    assert AuditEvent.objects.filter(action="approver_deprovisioned", request=request).exists()


def test_the_admins_mail_names_the_request_and_links_to_it_in_the_admin(scim, root):
    from approvals.notifications import email, messages

    erin = provision(scim, "erin")
    group(scim, "finance-approvers", erin)
    request = ingest()
    deactivate(scim, erin)
    notification = Notification.objects.get(kind="approver_lost")
    mail = email.render(messages.build(notification), to=notification.recipient)
    assert mail.subject == "An approver was deprovisioned: Approve order 88"
    assert f"/admin/approvals/approvalrequest/{request.pk}/change/" in mail.body
    assert "/links/" not in mail.body  # no decision links for the admin who is not an approver


def test_a_deprovisioned_delegate_cannot_decide_on_behalf_and_a_deprovisioned_delegator_lends_nothing(scim):
    alice = make_user("alice", "finance-approvers")
    provision(scim, "alice")
    erin = provision(scim, "erin")
    erin_user = User.objects.get(email="erin@example.com")
    delegation_set(
        delegator=alice, delegate_email="erin@example.com", ends_at=timezone.now() + timedelta(days=1), actor=alice
    )
    request = ingest()
    assert permissions.decision_refusal(erin_user, request) is None  # erin stands in for alice

    deactivate(scim, {"id": str(ScimUser.objects.get(user=alice).scim_id)})
    erin_user.refresh_from_db()
    assert permissions.decision_refusal(erin_user, request).code == "not_assignee"
    deactivate(scim, erin)
    erin_user.refresh_from_db()
    assert permissions.decision_refusal(erin_user, request).code == "inactive_user"


# --- What deprovisioning leaves behind: delegations ------------------------------------------
def reactivate(scim, user: dict) -> None:
    body = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": True}]}
    response = scim.call("PATCH", f"Users/{user['id']}", body)
    assert response.status_code == 200, response.content


def scim_resource(user: User) -> dict:
    return {"id": str(ScimUser.objects.get(user=user).scim_id)}


def notified(request: ApprovalRequest) -> set[str]:
    new_request_notifications_planned()  # what the ingest's after-commit planning task does
    return set(Notification.objects.filter(request=request).values_list("recipient", flat=True))


def test_a_reactivated_delegate_stands_in_for_nobody_through_a_delegation_from_before_deprovisioning(scim):
    # erin leaves (SCIM), and is re-hired months later: alice's old "delegate to erin" must not
    # come back into force without alice setting it again.
    alice = make_user("alice", "finance-approvers")
    erin = provision(scim, "erin")
    erin_user = User.objects.get(email="erin@example.com")
    delegation = delegation_set(
        delegator=alice, delegate_email="erin@example.com", ends_at=timezone.now() + timedelta(days=30), actor=alice
    )

    deactivate(scim, erin)
    reactivate(scim, erin)

    erin_user.refresh_from_db()
    assert erin_user.is_active
    request = ingest()
    assert permissions.decision_refusal(erin_user, request).code == "not_assignee"
    with pytest.raises(services.ApprovalError) as refused:
        services.approval_decide(public_id=request.public_id, user=erin_user, approve=True, comment="ok")
    assert refused.value.code == "not_assignee"
    assert "erin@example.com" not in notified(request)
    delegation.refresh_from_db()
    assert delegation.revoked_at is not None
    ended = AuditEvent.objects.get(action="delegation_revoked", data__delegation=delegation.pk)
    assert ended.actor is None
    assert ended.data["ended_by"] == "deprovisioned"
    assert (ended.data["delegator"], ended.data["delegate"]) == ("alice@example.com", "erin@example.com")
    deactivated = AuditEvent.objects.get(action="scim_user_deactivated")
    assert deactivated.data["delegations_ended"] == [delegation.pk]


def test_a_reactivated_delegator_lends_nothing_through_a_delegation_they_set_before_deprovisioning(scim):
    alice = make_user("alice", "finance-approvers")
    provision(scim, "alice")  # linked by issuer + subject
    provision(scim, "erin")
    erin_user = User.objects.get(email="erin@example.com")
    upcoming = delegation_set(
        delegator=alice,
        delegate_email="erin@example.com",
        starts_at=timezone.now() + timedelta(days=2),
        ends_at=timezone.now() + timedelta(days=9),
        actor=alice,
    )

    deactivate(scim, scim_resource(alice))
    reactivate(scim, scim_resource(alice))

    request = ingest()
    assert permissions.decision_refusal(erin_user, request).code == "not_assignee"
    upcoming.refresh_from_db()
    assert upcoming.state_at(timezone.now() + timedelta(days=3)) == "revoked"  # it never begins
    assert AuditEvent.objects.filter(action="delegation_revoked", data__ended_by="deprovisioned").count() == 1


def test_the_delegate_of_a_deactivated_named_approver_is_not_asked_to_decide_for_them(scim):
    # A message may name a person who has left: their stand-in cannot decide for them
    # (permissions.authorities skips an inactive delegator), so is not asked to either.
    alice = make_user("alice", "finance-approvers")
    provision(scim, "alice")
    provision(scim, "erin")
    delegation_set(
        delegator=alice, delegate_email="erin@example.com", ends_at=timezone.now() + timedelta(days=3), actor=alice
    )
    deactivate(scim, scim_resource(alice))

    request = ingest(approvers={"users": ["alice@example.com"]})

    assert permissions.decision_refusal(User.objects.get(email="erin@example.com"), request).code == "not_assignee"
    assert "erin@example.com" not in notified(request)


def test_a_delegation_left_open_by_a_deactivation_before_this_release_ends_when_the_account_is_reactivated(scim):
    # Accounts deactivated before deprovisioning ended delegations kept theirs open: their stand-in
    # is still not asked while the delegator is away, and a reactivation restores nothing.
    alice = make_user("alice", "finance-approvers")
    provision(scim, "alice")
    provision(scim, "erin")
    erin_user = User.objects.get(email="erin@example.com")
    kept = delegation_set(
        delegator=alice, delegate_email="erin@example.com", ends_at=timezone.now() + timedelta(days=3), actor=alice
    )
    User.objects.filter(pk=alice.pk).update(is_active=False)  # as the release before this one left it

    assert "erin@example.com" not in notified(ingest(approvers={"users": ["alice@example.com"]}))
    reactivate(scim, scim_resource(alice))

    kept.refresh_from_db()
    assert kept.revoked_at is not None
    assert AuditEvent.objects.get(action="delegation_revoked").data["ended_by"] == "reactivated"
    request = ingest(taskToken="tok-" + "r" * 40)
    assert permissions.decision_refusal(erin_user, request).code == "not_assignee"
