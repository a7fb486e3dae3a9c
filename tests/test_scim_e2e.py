"""SCIM end to end (must-show of docs/scim.md): the IdP provisions a group with two people who
never signed in; a request assigned to the group reaches both; one is deprovisioned by SCIM
after voting, and that vote is refused at callback time, while the other's approval resumes
the execution on the moto server.

Real processes: the portal's web server (gunicorn) and Celery workers (`portal_stack`), the dev
IdP for the SSO sign-ins, the moto server running the demo state machine, PostgreSQL, Redis.
"""

import json
import sqlite3
import uuid

import pytest
import requests

from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, AuditEvent, Notification, RequestStatus, ScimUser, User, Vote
from approvals.services.scim_tokens import scim_token_create
from tests.support import make_user, sso_login, wait_for, wait_for_execution_end

pytestmark = pytest.mark.e2e

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def devidp_subjects(tmp_path_factory, portal_url: str) -> dict[str, str]:
    """The dev IdP's `sub` of each demo user (its user id): what an IdP's SCIM client sends as
    externalId. Read from the data directory of the dev IdP that serves this portal."""
    for database in tmp_path_factory.getbasetemp().glob("devidp*/db.sqlite3"):
        with sqlite3.connect(database) as connection:
            clients = connection.execute("SELECT redirect_uris FROM oauth2_provider_application").fetchall()
            if any(f"{portal_url}/oidc/callback/" in uris for (uris,) in clients):
                return {name: str(pk) for pk, name in connection.execute("SELECT id, username FROM auth_user")}
    raise AssertionError("the dev IdP's database was not found")


def decide(session: requests.Session, portal_url: str, request: ApprovalRequest, comment: str) -> None:
    detail_url = f"{portal_url}/requests/{request.public_id}/"
    assert session.get(detail_url, timeout=15).status_code == 200
    response = session.post(
        f"{detail_url}decide/",
        data={"csrfmiddlewaretoken": session.cookies["portal_csrftoken"], "decision": "approve", "comment": comment},
        headers={"Referer": detail_url},
        timeout=15,
    )
    assert response.status_code == 200, response.text[:500]


def test_provisioned_group_members_are_notified_and_a_deprovisioned_voters_vote_is_refused_at_callback(
    portal_stack, devidp, demo_state_machine, tmp_path_factory
):
    url = portal_stack["url"]
    make_user("root", admin=True)  # an admin, told when a request loses an approver
    _, secret = scim_token_create(actor=User.objects.get(username="root"), name="okta", issuer=devidp)
    scim = requests.Session()
    scim.headers.update({"Authorization": f"Bearer {secret}", "Content-Type": "application/scim+json"})
    subjects = devidp_subjects(tmp_path_factory, url)

    # The IdP provisions alice and dave (neither has ever signed in) and a group with both.
    ids = {}
    for name in ("alice", "dave"):
        body = {
            "schemas": [USER_SCHEMA],
            "userName": f"{name}@example.com",
            "externalId": subjects[name],
            "name": {"givenName": name.title(), "familyName": "Example"},
            "emails": [{"value": f"{name}@example.com", "type": "work", "primary": True}],
            "active": True,
        }
        response = scim.post(f"{url}/scim/v2/Users", json=body, timeout=15)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    members = [{"value": ids["alice"]}, {"value": ids["dave"]}]
    response = scim.post(
        f"{url}/scim/v2/Groups",
        json={"schemas": [GROUP_SCHEMA], "displayName": "treasury-approvers", "members": members},
        timeout=15,
    )
    assert response.status_code == 201, response.text
    assert not User.objects.filter(email__in=["alice@example.com", "dave@example.com"], last_login__isnull=False)

    # A request for the group: both are notified, before either ever signed in.
    execution_arn = gateway.start_execution(
        state_machine_arn=demo_state_machine,
        name=f"scim-{uuid.uuid4().hex[:12]}",
        execution_input={
            "title": "Approve payment run 42",
            "approvers": {"users": [], "groups": ["treasury-approvers"]},
            "requester": "bob@example.com",
            "details": {"run": 42},
        },
    )
    request = wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())
    sent = wait_for(
        lambda: (
            set(
                Notification.objects.filter(request=request, kind="new_request", status="sent").values_list(
                    "recipient", flat=True
                )
            )
            >= {"alice@example.com", "dave@example.com"}
        )
    )
    assert sent

    # The worker is down for a while (a deploy, a backlog): alice approves in the meantime,
    # signing in for the first time — into the account the IdP provisioned.
    portal_stack["worker"].stop()
    alice_browser = sso_login(url, "alice")
    alice = User.objects.get(email="alice@example.com")
    assert alice.scim.scim_id == uuid.UUID(ids["alice"]) and alice.last_login is not None
    assert alice.groups.filter(name="treasury-approvers").exists()  # SCIM's group, kept at sign-in
    decide(alice_browser, url, request, "fine by me")
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED  # its callback waits for a worker

    # The IdP deprovisions alice.
    response = scim.patch(
        f"{url}/scim/v2/Users/{ids['alice']}",
        json={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": False}}]},
        timeout=15,
    )
    assert response.status_code == 200 and response.json()["active"] is False
    assert alice_browser.get(f"{url}/", timeout=15).url.startswith(f"{url}/signin/")  # her session ended

    # A worker again: the callback's identity re-check refuses alice's vote; the request reopens.
    portal_stack["start_worker"]("worker-restarted")
    wait_for(lambda: Vote.with_withdrawn.filter(request=request, withdrawn_at__isnull=False).exists())
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert gateway.describe_execution(execution_arn=execution_arn)["status"] == "RUNNING"
    assert AuditEvent.objects.filter(action="approver_deprovisioned", request=request).exists()
    assert Notification.objects.filter(request=request, kind="approver_lost", recipient="root@example.com").exists()

    # dave approves: the execution resumes with his identity.
    decide(sso_login(url, "dave"), url, request, "approved")
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    decided_by = json.loads(execution["output"])["approval"]["decidedBy"]
    assert decided_by["email"] == "dave@example.com" and decided_by["sub"] == subjects["dave"]
    assert ScimUser.objects.get(user__email="dave@example.com").user.last_login is not None
