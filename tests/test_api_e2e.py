"""The API end to end: the moto server, real web and Celery worker processes, and access tokens
from the dev IdP's real token endpoint (authorization code + PKCE for people, client
credentials for a service account)."""

import json

import jwt
import pytest
import requests

from approvals import services, tokens
from approvals.models import AuditEvent, Vote
from devidp import config as devidp_config
from tests.support import (
    client_credentials_token,
    make_user,
    sso_login,
    user_access_token,
    wait_for_execution_end,
)
from tests.test_e2e import start_and_wait_for_request

pytestmark = pytest.mark.e2e


def token_for(portal_stack, devidp, username: str) -> str:
    sso_login(portal_stack["url"], username)  # the portal account the token's (iss, sub) maps to
    return user_access_token(devidp, username, f"{portal_stack['url']}/oidc/callback/")


def decide(portal_stack, request, token: str, body: dict, key: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", **({"Idempotency-Key": key} if key else {})}
    return requests.post(
        f"{portal_stack['url']}/api/v1/requests/{request.public_id}/decision/", json=body, headers=headers, timeout=30
    )


def assert_secrets_nowhere(portal_stack, *secrets: str) -> None:
    for process in (portal_stack["web"], portal_stack["worker"]):
        output = process.output()
        for secret in secrets:
            assert secret not in output, f"a secret leaked into the {process.name} log"


def test_alice_approves_with_a_bearer_token_once_however_often_the_call_is_retried(
    portal_stack, devidp, demo_state_machine
):
    execution_arn, request = start_and_wait_for_request(demo_state_machine)
    token = token_for(portal_stack, devidp, "alice")

    inbox = requests.get(
        f"{portal_stack['url']}/api/v1/inbox/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert inbox.status_code == 200 and str(request.public_id) in [row["id"] for row in inbox.json()["results"]]

    body = {"decision": "approve", "comment": "Approved through the API ✓"}
    first = decide(portal_stack, request, token, body, key="deploy-1234")
    again = decide(portal_stack, request, token, body, key="deploy-1234")

    assert first.status_code == 201, first.text[:500]
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["Idempotency-Replayed"] == "true"
    assert Vote.objects.filter(request=request).count() == 1
    assert AuditEvent.objects.filter(request=request, action="approved").count() == 1

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    approval = json.loads(execution["output"])["approval"]
    assert approval["decidedBy"]["email"] == "alice@example.com"
    assert approval["decidedBy"]["issuer"] == devidp
    assert approval["decidedBy"]["sub"] == jwt.decode(token, options={"verify_signature": False})["sub"]
    assert approval["comment"] == "Approved through the API ✓"
    assert token not in first.text
    assert_secrets_nowhere(portal_stack, token, tokens.decrypt_token(request.token_ciphertext))


def test_the_requester_and_a_read_only_service_account_get_403_problems(portal_stack, devidp, demo_state_machine):
    _, request = start_and_wait_for_request(demo_state_machine)
    bob = token_for(portal_stack, devidp, "bob")

    refused = decide(portal_stack, request, bob, {"decision": "approve"})
    assert refused.status_code == 403
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:approvals:problem:requester_cannot_decide"

    services.service_account_save(
        actor=make_user("admin-carol", admin=True),
        name="deploy bot",
        issuer=devidp,
        subject=devidp_config.service_client_id(),
        email="deploy-bot@example.com",
        state_machines=[demo_state_machine],
        may_decide=False,
    )
    bot = client_credentials_token(devidp, devidp_config.service_client_id(), devidp_config.service_client_secret())
    seen = requests.get(
        f"{portal_stack['url']}/api/v1/requests/{request.public_id}/",
        headers={"Authorization": f"Bearer {bot}"},
        timeout=30,
    )
    assert seen.status_code == 200 and seen.json()["may_decide"] is False
    refused = decide(portal_stack, request, bot, {"decision": "approve"})
    assert refused.status_code == 403
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:approvals:problem:service_account_read_only"

    assert not Vote.objects.filter(request=request).exists()
    assert_secrets_nowhere(portal_stack, bob, bot)
    gone = requests.post(
        f"{portal_stack['url']}/api/v1/requests/{request.public_id}/cancel/",
        json={"reason": "test over"},
        headers={"Authorization": f"Bearer {bob}"},
        timeout=30,
    )
    assert gone.status_code == 403  # bob is no admin
