"""Identity changes (SCIM, sign-in mirroring) against pending requests (docs/scim.md).

Requests are assigned to emails and group names, and four eyes knows the requester by email and
by the account that email named. These tests change the identities under a pending request.
"""

import time

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from approvals import permissions, services
from approvals.auth import PortalOIDCBackend
from approvals.models import AuditEvent, Callback, CallbackStatus, Notification, ScimUser, User
from approvals.services.recheck import decision_recheck
from tests.support import make_user
from tests.test_scim import GROUP_SCHEMA, PATCH_SCHEMA, user_body
from tests.test_scim_deprovisioning import deactivate, group, ingest, provision, root, scim  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def email_change(scim, user: dict, email: str) -> None:  # noqa: F811 - the fixture's name
    body = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "path": "emails", "value": [{"value": email, "primary": True}]}],
    }
    response = scim.call("PATCH", f"Users/{user['id']}", body)
    assert response.status_code == 200, response.content


def test_a_requester_provisioned_after_their_request_still_may_not_approve_it_after_an_email_change(scim):  # noqa: F811
    request = ingest()  # bob@example.com requests; he has no account yet
    assert request.requester_user is None
    bob = provision(scim, "bob")
    group(scim, "finance-approvers", bob)
    account = User.objects.get(email="bob@example.com")
    assert permissions.decision_refusal(account, request).code == "requester"

    email_change(scim, bob, "robert@example.com")

    account.refresh_from_db()
    request.refresh_from_db()
    assert account.email == "robert@example.com"
    refusal = permissions.decision_refusal(account, request)
    assert refusal is not None and refusal.code == "requester"
    bound = AuditEvent.objects.get(action="requester_account_bound", request=request)
    assert bound.data["user_id"] == account.pk and bound.data["email"] == "bob@example.com"


def test_a_requester_who_signed_in_after_their_request_still_may_not_approve_it_after_an_email_change():
    request = ingest()
    bob = make_user("bob", "finance-approvers")  # first sign-in after the request arrived
    claims = {"iss": "https://idp.test", "sub": "sub-bob", "email": "robert@example.com", "email_verified": True}
    PortalOIDCBackend().update_user(bob, {**claims, "groups": ["finance-approvers"]})

    bob.refresh_from_db()
    request.refresh_from_db()
    assert bob.email == "robert@example.com"
    request.refresh_from_db()
    refusal = permissions.decision_refusal(bob, request)
    assert refusal is not None and refusal.code == "requester"


def rename(scim, group: dict, name: str) -> None:  # noqa: F811 - the fixture's name
    body = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "displayName", "value": name}]}
    response = scim.call("PATCH", f"Groups/{group['id']}", body)
    assert response.status_code == 200, response.content


def group_names(request) -> set[str]:
    return set(request.assignments.filter(kind="group").values_list("value", flat=True))


def test_a_renamed_group_keeps_its_open_requests_and_a_new_group_on_the_old_name_gets_none(scim, root):  # noqa: F811
    erin, mallory = provision(scim, "erin"), provision(scim, "mallory")
    finance = group(scim, "finance-approvers", erin)
    assigned = ingest()
    closed = ingest(taskToken="tok-" + "c" * 40)
    services.approval_cancel(request_id=closed.pk, actor=root, reason="no longer needed")
    Callback.objects.filter(request=closed).update(status=CallbackStatus.DELIVERED)  # Step Functions has it
    elsewhere = ingest(taskToken="tok-" + "e" * 40, approvers={"groups": ["other"]})

    rename(scim, finance, "fin-approvers")

    assert group_names(assigned) == {"fin-approvers"}
    assert group_names(closed) == {"finance-approvers"}  # closed requests keep their history
    assert group_names(elsewhere) == {"other"}
    erin_account = ScimUser.objects.get(scim_id=erin["id"]).user
    assert permissions.decision_refusal(erin_account, assigned) is None
    event = AuditEvent.objects.get(action="assigned_group_renamed")
    assert event.request == assigned and event.actor is None
    assert event.data["group"] == "finance-approvers" and event.data["renamed_to"] == "fin-approvers"
    assert event.data["via"] == "scim" and event.data["token"] == "okta"
    # Whoever later takes the old name, by SCIM or by the sign-in groups claim, decides nothing.
    group(scim, "finance-approvers", mallory)
    mallory_account = ScimUser.objects.get(scim_id=mallory["id"]).user
    assert permissions.decision_refusal(mallory_account, assigned).code == "not_assignee"
    oscar = make_user("oscar")
    claims = {"iss": "https://idp.test", "sub": "sub-oscar", "email": "oscar@example.com", "email_verified": True}
    PortalOIDCBackend().update_user(oscar, {**claims, "groups": ["finance-approvers", "other-team"]})
    assert permissions.decision_refusal(oscar, assigned).code == "not_assignee"


def test_a_group_renamed_by_put_keeps_its_open_requests(scim, root):  # noqa: F811
    erin = provision(scim, "erin")
    finance = group(scim, "finance-approvers", erin)
    assigned = ingest()
    body = {"schemas": [GROUP_SCHEMA], "displayName": "fin-approvers", "members": [{"value": erin["id"]}]}
    assert scim.call("PUT", f"Groups/{finance['id']}", body).status_code == 200

    assert group_names(assigned) == {"fin-approvers"}
    assert AuditEvent.objects.get(action="assigned_group_renamed").request == assigned


def test_a_decision_whose_callback_is_in_flight_still_passes_the_recheck_after_its_group_is_renamed(scim, root):  # noqa: F811
    erin = provision(scim, "erin")
    finance = group(scim, "finance-approvers", erin)
    request = ingest()
    erin_account = ScimUser.objects.get(scim_id=erin["id"]).user
    services.approval_decide(public_id=request.public_id, user=erin_account, approve=True)
    callback = Callback.objects.get(request=request)
    assert callback.status == CallbackStatus.PENDING

    rename(scim, finance, "fin-approvers")

    request.refresh_from_db()
    assert group_names(request) == {"fin-approvers"}
    assert AuditEvent.objects.get(action="assigned_group_renamed").request == request
    callback = Callback.objects.select_related("request").get(pk=callback.pk)
    assert decision_recheck(callback, maybe_delivered=False).send


def test_an_approval_counted_for_a_renamed_group_still_counts_for_it(scim, root):  # noqa: F811
    """distinctGroups counts approvals by the group each came through (Vote.group): after a
    rename, erin's approval counts for the renamed group, and legal's completes the request,
    instead of the re-check withdrawing hers as "no longer an approver through finance-approvers"."""
    erin, frank = provision(scim, "erin"), provision(scim, "frank")
    finance = group(scim, "finance-approvers", erin)
    group(scim, "legal", frank)
    request = ingest(
        approvers={"groups": ["finance-approvers", "legal"]}, policy={"required": 2, "distinctGroups": True}
    )
    erin_account = ScimUser.objects.get(scim_id=erin["id"]).user
    frank_account = ScimUser.objects.get(scim_id=frank["id"]).user
    services.approval_decide(public_id=request.public_id, user=erin_account, approve=True)

    rename(scim, finance, "fin-approvers")

    assert set(request.votes.values_list("group", flat=True)) == {"fin-approvers"}
    services.approval_decide(public_id=request.public_id, user=frank_account, approve=True)
    request.refresh_from_db()
    assert request.status == "approved"
    callback = Callback.objects.select_related("request").get(request=request)
    assert decision_recheck(callback, maybe_delivered=False).send


def test_a_group_renamed_onto_a_name_requests_already_use_merges_into_it(
    scim,  # noqa: F811
    root,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    # No group has the name yet (the message named one nobody signed in with): the IdP says the
    # renamed group is that group now, so its members decide both sets of requests.
    erin = provision(scim, "erin")
    finance = group(scim, "finance-approvers", erin)
    both = ingest(approvers={"groups": ["finance-approvers", "audit-approvers"]})
    audit_only = ingest(taskToken="tok-" + "a" * 40, approvers={"groups": ["audit-approvers"]})
    finance_only = ingest(taskToken="tok-" + "f" * 40)

    with django_capture_on_commit_callbacks(execute=True):
        rename(scim, finance, "audit-approvers")

    assert group_names(both) == {"audit-approvers"}
    assert group_names(audit_only) == {"audit-approvers"}
    assert group_names(finance_only) == {"audit-approvers"}
    erin_account = ScimUser.objects.get(scim_id=erin["id"]).user
    for request in (both, audit_only, finance_only):
        assert permissions.decision_refusal(erin_account, request) is None
    events = {event.request_id: event.data for event in AuditEvent.objects.filter(action="assigned_group_renamed")}
    assert set(events) == {both.pk, audit_only.pk, finance_only.pk}
    assert events[both.pk]["merged"] is True and events[audit_only.pk]["merged"] is True
    assert "merged" not in events[finance_only.pk]
    # Told only of what is new to them: the request that named just the other name.
    told = Notification.objects.filter(kind="reassigned", recipient="erin@example.com")
    assert [n.request_id for n in told] == [audit_only.pk]


def test_a_rename_onto_a_group_another_source_already_has_is_refused_and_moves_nothing(scim, root):  # noqa: F811
    erin = provision(scim, "erin")
    finance = group(scim, "finance-approvers", erin)
    make_user("oscar", "audit-approvers")  # the sign-in groups claim made this group
    assigned = ingest()
    operation = {"op": "replace", "path": "displayName", "value": "audit-approvers"}
    body = {"schemas": [PATCH_SCHEMA], "Operations": [operation]}
    assert scim.call("PATCH", f"Groups/{finance['id']}", body).status_code == 409

    assert group_names(assigned) == {"finance-approvers"}
    assert not AuditEvent.objects.filter(action="assigned_group_renamed").exists()


def test_deleting_a_group_records_the_change_on_each_open_request_assigned_to_it(scim, root):  # noqa: F811
    erin = provision(scim, "erin")
    finance = group(scim, "finance-approvers", erin)
    assigned = ingest()
    assert scim.call("DELETE", f"Groups/{finance['id']}").status_code == 204

    event = AuditEvent.objects.get(action="assigned_group_deleted")
    assert event.request == assigned and event.data["group"] == "finance-approvers" and event.data["members"] == 1


def test_an_assignees_email_change_is_recorded_on_each_open_request_assigned_to_the_old_email(scim, root):  # noqa: F811
    erin = provision(scim, "erin")
    assigned = ingest(approvers={"users": ["erin@example.com"]})
    elsewhere = ingest(taskToken="tok-" + "e" * 40, approvers={"users": ["frank@example.com"]})

    email_change(scim, erin, "erin.new@example.com")

    events = AuditEvent.objects.filter(action="assigned_email_changed")
    assert [event.request for event in events] == [assigned]
    assert events[0].data["email"] == "erin@example.com" and events[0].data["new_email"] == "erin.new@example.com"
    assert not AuditEvent.objects.filter(request=elsewhere, action="assigned_email_changed").exists()
    # Measured, left as it is: the assignment names the old email, which is nobody's any more.
    account = ScimUser.objects.get(scim_id=erin["id"]).user
    assert permissions.decision_refusal(account, assigned).code == "not_assignee"


def test_an_assignees_email_change_at_sign_in_is_recorded_too():
    erin = make_user("erin")
    assigned = ingest(approvers={"users": ["erin@example.com"]})
    claims = {"iss": "https://idp.test", "sub": "sub-erin", "email": "Erin.New@example.com", "email_verified": True}
    PortalOIDCBackend().update_user(erin, {**claims, "groups": []})

    event = AuditEvent.objects.get(action="assigned_email_changed")
    assert event.request == assigned and event.data["via"] == "sign-in"
    # A change of case only is no change: nothing recorded, the assignment still names them.
    PortalOIDCBackend().update_user(erin, {**claims, "email": "ERIN.NEW@example.com", "groups": []})
    assert AuditEvent.objects.filter(action="assigned_email_changed").count() == 1


def test_a_deprovisioned_approvers_claim_is_released_so_colleagues_do_not_wait_for_them(scim, root):  # noqa: F811
    erin, frank = provision(scim, "erin"), provision(scim, "frank")
    group(scim, "finance-approvers", erin, frank)
    request = ingest()
    erin_account = ScimUser.objects.get(scim_id=erin["id"]).user
    services.approval_claim(public_id=request.public_id, user=erin_account)

    deactivate(scim, erin)

    request.refresh_from_db()
    assert request.claimed_by is None and request.claimed_at is None
    released = AuditEvent.objects.get(action="claim_released", request=request)
    assert released.actor is None and released.data["claimed_by"] == "erin@example.com"
    assert released.data["code"] == "inactive_user"


def test_a_requester_whose_sso_account_scim_links_under_another_email_still_may_not_approve(scim):  # noqa: F811
    request = ingest()
    bob = make_user("bob", "finance-approvers")  # first sign-in after the request arrived
    response = scim.call("POST", "Users", user_body("robert@example.com", "sub-bob"))
    assert response.status_code == 201, response.content

    bob.refresh_from_db()
    assert bob.email == "robert@example.com"
    request.refresh_from_db()
    refusal = permissions.decision_refusal(bob, request)
    assert refusal is not None and refusal.code == "requester"


def admin_browser(user) -> Client:
    browser = Client()
    browser.force_login(user)
    session = browser.session
    session["oidc_id_token_expiration"] = time.time() + 3600  # a fresh SSO sign-in
    session.save()
    return browser


def test_an_admin_cannot_rename_a_group_in_the_group_admin_to_strand_or_take_its_requests(root):  # noqa: F811
    make_user("alice", "finance-approvers")
    request = ingest()
    finance = Group.objects.get(name="finance-approvers")
    browser = admin_browser(root)
    assert browser.get(f"/admin/auth/group/{finance.pk}/change/").status_code == 200  # still shown

    browser.post(f"/admin/auth/group/{finance.pk}/change/", {"name": "finance-old", "permissions": []})
    browser.post("/admin/auth/group/add/", {"name": "audit-approvers", "permissions": []})
    browser.post(f"/admin/auth/group/{finance.pk}/delete/", {"post": "yes"})

    finance.refresh_from_db()
    assert finance.name == "finance-approvers" and finance.user_set.count() == 1
    assert not Group.objects.filter(name="audit-approvers").exists()
    assert group_names(request) == {"finance-approvers"}


def test_an_admin_cannot_deactivate_a_user_in_the_user_admin_around_deprovisioning(root):  # noqa: F811
    alice = make_user("alice", "finance-approvers")
    request = ingest()
    services.approval_claim(public_id=request.public_id, user=alice)
    alice_browser = admin_browser(alice)
    browser = admin_browser(root)
    form = {"username": alice.username, "first_name": "", "last_name": "", "is_staff": "on"}  # is_active unticked
    browser.post(f"/admin/approvals/user/{alice.pk}/change/", form)

    alice.refresh_from_db()
    request.refresh_from_db()
    # Either the IdP deprovisions her (sessions end, claims released, admins told) or she stays:
    # never inactive with a live session and a claim that keeps colleagues waiting.
    assert alice.is_active
    assert request.claimed_by == alice
    assert alice_browser.get("/admin/").status_code == 200


def test_an_admin_cannot_take_an_assignees_email_in_the_user_admin_to_decide_for_them(root):  # noqa: F811
    alice = make_user("alice")
    request = ingest(approvers={"users": ["alice@example.com"]})
    browser = Client()
    browser.force_login(root)
    session = browser.session
    session["oidc_id_token_expiration"] = time.time() + 3600  # a fresh SSO sign-in
    session.save()
    form = {
        "username": root.username,
        "email": "alice@example.com",
        "first_name": "",
        "last_name": "",
        "is_active": "on",
        "is_staff": "on",
        "is_superuser": "on",
    }
    browser.post(f"/admin/approvals/user/{root.pk}/change/", form)

    root.refresh_from_db()
    assert root.email == "root@example.com"  # the IdP's email, as at the last sign-in
    assert permissions.decision_refusal(root, request).code == "not_assignee"
    assert permissions.decision_refusal(alice, request) is None


def test_an_admin_cannot_join_an_assigned_group_in_the_user_admin_to_decide_its_requests(root):  # noqa: F811
    make_user("alice", "finance-approvers")
    request = ingest()
    browser = Client()
    browser.force_login(root)
    session = browser.session
    session["oidc_id_token_expiration"] = time.time() + 3600
    session.save()
    finance = Group.objects.get(name="finance-approvers")
    form = {"username": root.username, "is_active": "on", "is_staff": "on", "is_superuser": "on"}
    form["groups"] = [finance.pk]
    browser.post(f"/admin/approvals/user/{root.pk}/change/", form)

    assert not root.groups.filter(name="finance-approvers").exists()  # groups are the IdP's
    assert permissions.decision_refusal(root, request).code == "not_assignee"
