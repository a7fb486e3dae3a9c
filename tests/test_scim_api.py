"""SCIM and the REST API together: a provisioned person is the account the API's bearer tokens
map to, and deprovisioning refuses their still-valid access token at once.

The access token is signed with the session's dev IdP's own key (a token the IdP could have
issued, valid for minutes more): the portal cannot revoke it at the IdP, so the refusal must come
from the account being inactive.
"""

import json

import pytest

from approvals.models import AuditEvent, User
from approvals.services.scim_tokens import scim_token_create
from tests.support import make_user
from tests.test_api_tokens import api, assert_refused, call, claims_for, idp_key, sign  # noqa: F401 - fixtures
from tests.test_scim import PATCH_SCHEMA, Scim, user_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def scim(api, client):  # noqa: F811 - the api fixture imported above
    admin = make_user("root", admin=True)
    return Scim(client, scim_token_create(actor=admin, name="idp", issuer=api.OIDC_OP_ISSUER)[1])


def test_a_deprovisioned_persons_valid_access_token_is_refused_at_once(api, scim, idp_key):  # noqa: F811
    created = scim.call("POST", "Users", user_body(user_name="erin@example.com", external_id="sub-erin"))
    assert created.status_code == 201, created.content
    token = sign(claims_for(api.OIDC_OP_ISSUER, sub="sub-erin"), *idp_key)

    # Provisioned before any sign-in, and the token of that IdP subject is that account's.
    assert call(token).status_code == 200
    erin = User.objects.get(email="erin@example.com")

    patch = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": False}}]}
    deactivated = scim.call("PATCH", f"Users/{created.json()['id']}", patch)
    assert deactivated.status_code == 200, deactivated.content
    erin.refresh_from_db()
    assert erin.is_active is False

    # The same token, still unexpired: refused, and nothing of it in what the portal wrote down.
    assert_refused(call(token))
    assert token not in json.dumps(list(AuditEvent.objects.values_list("data", flat=True)))


def test_a_scim_user_named_like_a_service_accounts_client_is_not_that_service_account(api, scim, idp_key):  # noqa: F811
    from approvals import services

    admin = User.objects.get(username__startswith="root")
    services.service_account_save(
        actor=admin,
        account_id=None,
        name="deploy-bot",
        issuer=api.OIDC_OP_ISSUER,
        subject="deploy-bot-client",
        state_machines=["*"],
        may_decide=False,
        email="deploy-bot@example.com",
        groups=[],
    )
    # A SCIM client provisions a person whose IdP subject is the bot's client id.
    created = scim.call("POST", "Users", user_body(user_name="mallory@example.com", external_id="deploy-bot-client"))
    assert created.status_code in {201, 409}, created.content
    mallory = User.objects.filter(email="mallory@example.com").first()
    bot = User.objects.get(service_account__name="deploy-bot")
    # Whatever SCIM did, it did not hand the bot's account to a person or make a person the bot.
    assert mallory is None or mallory.pk != bot.pk
    bot.refresh_from_db()
    assert bot.email == "deploy-bot@example.com" and bot.is_active


def test_a_service_account_cannot_take_a_persons_identity(api, scim):  # noqa: F811
    from approvals import services
    from approvals.services.common import ApprovalError

    created = scim.call("POST", "Users", user_body(user_name="erin@example.com", external_id="sub-erin"))
    assert created.status_code == 201, created.content
    admin = User.objects.get(username__startswith="root")
    with pytest.raises(ApprovalError, match="another account's identity"):
        services.service_account_save(
            actor=admin, name="erin-bot", issuer=api.OIDC_OP_ISSUER, subject="sub-erin", email="erin-bot@example.com"
        )
    assert not User.objects.filter(email="erin-bot@example.com").exists()


def test_a_service_account_cannot_take_a_persons_email(api, scim):  # noqa: F811
    from approvals import services
    from approvals.services.common import ApprovalError

    created = scim.call("POST", "Users", user_body(user_name="erin@example.com", external_id="sub-erin"))
    assert created.status_code == 201, created.content
    admin = User.objects.get(username__startswith="root")
    with pytest.raises(ApprovalError, match="email belongs to another active account"):
        services.service_account_save(
            actor=admin, name="erin-bot", issuer=api.OIDC_OP_ISSUER, subject="erin-bot", email="Erin@example.com"
        )
    # Changing a bot keeps its own email: it is not "another account".
    bot = services.service_account_save(
        actor=admin, name="bot", issuer=api.OIDC_OP_ISSUER, subject="bot", email="bot@example.com"
    )
    services.service_account_save(
        actor=admin, account_id=bot.pk, name="bot", issuer=api.OIDC_OP_ISSUER, subject="bot", email="bot@example.com"
    )
