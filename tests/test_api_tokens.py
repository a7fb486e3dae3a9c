"""Bearer tokens of the API: the negative suite (like tests/test_oidc_security.py for ID tokens).

Every token here is refused with 401 problem details, except the controls that prove the
refusals are about the one thing each token gets wrong: a token signed with the dev IdP's own
key and right in every claim, and tokens from the dev IdP's real token endpoint."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from jwcrypto import jwk

from approvals import permissions, services
from approvals.contract import parse_message
from approvals.models import AuditEvent, ServiceAccount, User, Vote
from approvals.services import slack_identities
from devidp import config as devidp_config
from tests.support import client_credentials_token, make_user, user_access_token, wait_for

pytestmark = pytest.mark.django_db
INBOX = "/api/v1/inbox/"


@pytest.fixture
def api(settings, devidp):
    """The portal (in this process) trusting the session's dev IdP; caches emptied."""
    settings.OIDC_OP_ISSUER = devidp
    settings.OIDC_OP_JWKS_ENDPOINT = f"{devidp}/.well-known/jwks.json"
    settings.API_INTROSPECTION_ENDPOINT = f"{devidp}/introspect/"
    settings.OIDC_OP_USER_ENDPOINT = f"{devidp}/userinfo/"
    settings.API_AUDIENCE = "approvals-api"
    cache.clear()
    yield settings
    cache.clear()


@pytest.fixture
def idp_key(devidp, devidp_data_dir) -> tuple[str, str]:
    """The dev IdP's private signing key (PEM) and its kid as the JWKS publishes it."""
    pem = (devidp_data_dir / "oidc-key.pem").read_text()
    return pem, jwk.JWK.from_pem(pem.encode()).thumbprint()


@pytest.fixture
def alice(api):
    user = make_user("alice", "finance-approvers")
    user.oidc_issuer, user.oidc_sub = api.OIDC_OP_ISSUER, "sub-alice"
    user.save()
    return user


def claims_for(issuer: str, sub: str = "sub-alice", **changes) -> dict:
    now = int(time.time())
    claims = {"iss": issuer, "sub": sub, "aud": "approvals-api", "iat": now, "nbf": now, "exp": now + 600}
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def sign(claims: dict, pem: str, kid: str, algorithm: str = "RS256") -> str:
    return jwt.encode(claims, pem, algorithm=algorithm, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict, secret: bytes | None = None) -> str:
    """A token built by hand: `alg: none` (no signature) or HS256 with `secret` as the HMAC key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def other_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def call(token: str | None, path: str = INBOX):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return Client().get(path, **headers)


def assert_refused(response, code: str = "invalid_token") -> None:
    assert response.status_code == 401, response.content[:300]
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    body = response.json()
    assert body["type"] == f"urn:approvals:problem:{code}"
    assert body["status"] == 401


# ---------------------------------------------------------------------------
# The controls
# ---------------------------------------------------------------------------
def test_a_token_signed_by_the_idp_for_this_api_is_accepted(api, alice, idp_key):
    response = call(sign(claims_for(api.OIDC_OP_ISSUER), *idp_key))

    assert response.status_code == 200, response.content[:300]
    assert response.json()["results"] == []


def test_a_persons_token_from_the_idps_token_endpoint_maps_to_their_portal_account(api, web_port):
    token = user_access_token(api.OIDC_OP_ISSUER, "alice", f"http://127.0.0.1:{web_port}/oidc/callback/")
    sub = jwt.decode(token, options={"verify_signature": False})["sub"]
    make_user("alice-sso", sub=sub).__class__.objects.filter(oidc_sub=sub).update(oidc_issuer=api.OIDC_OP_ISSUER)

    assert call(token).status_code == 200
    # The same subject at another issuer is someone else: no account, refused.
    User.objects.filter(oidc_sub=sub).update(oidc_issuer="https://other-idp.test")
    cache.clear()
    assert_refused(call(token))


def test_a_service_accounts_client_credentials_token_is_accepted_and_refused_once_deactivated(api):
    admin = make_user("carol", admin=True)
    account = services.service_account_save(
        actor=admin, name="demo bot", issuer=api.OIDC_OP_ISSUER, subject=devidp_config.service_client_id()
    )
    token = client_credentials_token(
        api.OIDC_OP_ISSUER, devidp_config.service_client_id(), devidp_config.service_client_secret()
    )
    assert call(token).status_code == 200

    services.service_account_save(
        actor=admin,
        account_id=account.pk,
        name="demo bot",
        issuer=api.OIDC_OP_ISSUER,
        subject=devidp_config.service_client_id(),
        active=False,
    )
    assert_refused(call(token))


# ---------------------------------------------------------------------------
# The refusals
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"aud": "another-api"}, id="wrong-aud"),
        pytest.param({"aud": None}, id="no-aud"),
        pytest.param({"iss": "http://127.0.0.1:1/o"}, id="wrong-iss"),
        pytest.param({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, id="expired"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"nbf": int(time.time()) + 3600}, id="nbf-in-the-future"),
        pytest.param({"iat": int(time.time()) + 3600}, id="issued-in-the-future"),
        pytest.param({"sub": None}, id="no-sub"),
    ],
)
def test_a_token_with_a_wrong_claim_is_refused(api, alice, idp_key, changes):
    assert_refused(call(sign(claims_for(api.OIDC_OP_ISSUER, **changes), *idp_key)))


def test_alg_none_is_refused(api, alice, idp_key):
    token = unsigned({"alg": "none", "typ": "JWT", "kid": idp_key[1]}, claims_for(api.OIDC_OP_ISSUER))

    assert_refused(call(token))


def test_hs256_signed_with_the_idps_public_key_is_refused(api, alice, idp_key):
    public_pem = (
        serialization.load_pem_private_key(idp_key[0].encode(), password=None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    token = unsigned({"alg": "HS256", "typ": "JWT", "kid": idp_key[1]}, claims_for(api.OIDC_OP_ISSUER), public_pem)

    assert_refused(call(token))


def test_a_token_of_another_key_with_the_idps_kid_is_refused(api, alice, idp_key):
    assert_refused(call(sign(claims_for(api.OIDC_OP_ISSUER), other_key(), idp_key[1])))


def test_a_token_of_another_idp_is_refused(api, alice):
    pem = other_key()
    kid = jwk.JWK.from_pem(pem.encode()).thumbprint()

    assert_refused(call(sign(claims_for("https://other-idp.test", sub="sub-alice"), pem, kid)))
    # Even claiming this IdP as its issuer: its key is not in this IdP's JWKS.
    assert_refused(call(sign(claims_for(api.OIDC_OP_ISSUER), pem, kid)))


def jwks_fetched(api, log_dir) -> int:
    """The JWKS fetches the dev IdP logged, once it logged every request made before this call:
    its access log line is written after the response is sent, so the portal may be done with a
    fetch whose line is not there yet. A request of our own after it is the barrier."""
    log = log_dir / "devidp.log"
    barrier = f"/barrier-{uuid.uuid4().hex}"
    requests.get(api.OIDC_OP_ISSUER.rstrip("/") + barrier, timeout=10)
    wait_for(lambda: barrier in log.read_text(), timeout=10)
    return log.read_text().count("/.well-known/jwks.json")


def test_an_unknown_kid_refetches_the_jwks_once_then_is_refused(api, alice, idp_key, log_dir):
    def jwks_fetches() -> int:
        return jwks_fetched(api, log_dir)

    assert call(sign(claims_for(api.OIDC_OP_ISSUER), *idp_key)).status_code == 200
    fetched = jwks_fetches()
    assert_refused(call(sign(claims_for(api.OIDC_OP_ISSUER), idp_key[0], "rotated-" + uuid.uuid4().hex)))
    assert jwks_fetches() == fetched + 1  # one refetch: perhaps the IdP rotated its key
    assert_refused(call(sign(claims_for(api.OIDC_OP_ISSUER), idp_key[0], "made-up-" + uuid.uuid4().hex)))
    assert jwks_fetches() == fetched + 1  # rate-limited: made-up kids don't hammer the IdP


# What the bounds of approvals.E043 (BOUNDED_SETTINGS) keep from happening: the harm itself.
def test_without_a_refetch_interval_every_made_up_kid_fetches_the_jwks_which_is_why_the_check_refuses_it(
    api, alice, idp_key, log_dir
):
    api.API_JWKS_REFETCH_SECONDS = 0  # approvals.E043 refuses it at start-up

    def jwks_fetches() -> int:
        return jwks_fetched(api, log_dir)

    assert call(sign(claims_for(api.OIDC_OP_ISSUER), *idp_key)).status_code == 200
    fetched = jwks_fetches()
    for _ in range(3):
        assert_refused(call(sign(claims_for(api.OIDC_OP_ISSUER), idp_key[0], "made-up-" + uuid.uuid4().hex)))
    assert jwks_fetches() == fetched + 3  # one IdP request per junk token: anyone sets the pace


def test_a_negative_leeway_refuses_a_good_token_which_is_why_the_check_refuses_it(api, alice, idp_key):
    api.API_TOKEN_LEEWAY_SECONDS = -601  # approvals.E043 refuses it at start-up
    token = sign(claims_for(api.OIDC_OP_ISSUER), *idp_key)  # valid for another 600 s

    assert_refused(call(token))
    api.API_TOKEN_LEEWAY_SECONDS = 0
    assert call(token).status_code == 200


def test_an_idp_timeout_of_no_seconds_answers_every_token_503_which_is_why_the_check_refuses_it(api, alice, idp_key):
    api.OIDC_TIMEOUT = 0  # approvals.E043 refuses it at start-up
    token = sign(claims_for(api.OIDC_OP_ISSUER), *idp_key)

    # requests raises ValueError for the JWKS fetch before connecting: "the IdP is unavailable".
    assert call(token).status_code == 503
    api.OIDC_TIMEOUT = 10.0
    assert call(token).status_code == 200


def test_a_token_with_an_algorithm_outside_the_allow_list_is_refused(api, alice, idp_key):
    api.API_JWT_ALGORITHMS = ["PS256"]

    assert_refused(call(sign(claims_for(api.OIDC_OP_ISSUER), *idp_key)))


def test_a_valid_token_of_a_deactivated_person_is_refused(api, alice, idp_key):
    alice.is_active = False
    alice.save()

    assert_refused(call(sign(claims_for(api.OIDC_OP_ISSUER), *idp_key)))


def test_a_valid_token_of_someone_without_a_portal_account_is_refused(api, idp_key):
    assert_refused(call(sign(claims_for(api.OIDC_OP_ISSUER, sub="never-signed-in"), *idp_key)))


def test_an_opaque_token_the_idp_does_not_know_is_refused_by_introspection(api, alice):
    assert_refused(call("not-a-jwt-" + uuid.uuid4().hex))


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer \u00e9t\u00e9.x.y"])
def test_a_malformed_authorization_header_is_refused(api, header):
    response = Client().get(INBOX, HTTP_AUTHORIZATION=header)

    assert_refused(response)


def test_no_token_and_no_session_is_401_not_authenticated(api):
    assert_refused(call(None), code="not_authenticated")


def test_a_refused_token_is_never_echoed_in_the_answer_or_the_logs(api, alice, idp_key, caplog):
    token = sign(claims_for(api.OIDC_OP_ISSUER, aud="another-api"), *idp_key)

    response = call(token)

    assert response.status_code == 401
    signature = token.rsplit(".", 1)[1]
    assert signature not in response.content.decode()
    assert signature not in caplog.text
    assert token.split(".")[1] not in caplog.text


@pytest.mark.parametrize("algorithms", [["RS256", "none"], ["HS256"], []])
def test_a_weak_algorithm_allow_list_fails_the_system_check(settings, algorithms):
    from approvals.checks import api_settings_check

    settings.API_JWT_ALGORITHMS = algorithms

    assert [error.id for error in api_settings_check(None)] == ["approvals.E040"]


def test_the_portals_own_client_id_as_the_api_audience_fails_the_system_check(settings):
    """The IdP issues the portal's ID tokens with `aud` = the portal's client id. With the API's
    audience set to it, an ID token (kept in the session, sent in the sign-out URL's
    id_token_hint) would pass as an access token for the API."""
    from approvals.checks import api_settings_check

    settings.API_AUDIENCE = settings.OIDC_RP_CLIENT_ID

    [error] = api_settings_check(None)
    assert error.id == "approvals.E042"
    assert "OIDC_RP_CLIENT_ID" in error.msg


# ---------------------------------------------------------------------------
# Opaque tokens: the IdP's introspection endpoint (RFC 7662), its answer cached briefly
# ---------------------------------------------------------------------------
@pytest.fixture
def opaque_bot(api):
    """The dev IdP's opaque-token demo client, mapped to a service account; and its real token."""
    admin = make_user("carol", admin=True)
    services.service_account_save(
        actor=admin, name="opaque bot", issuer=api.OIDC_OP_ISSUER, subject=devidp_config.opaque_client_id()
    )
    token = client_credentials_token(
        api.OIDC_OP_ISSUER, devidp_config.opaque_client_id(), devidp_config.opaque_client_secret()
    )
    assert token.count(".") != 2, "the dev IdP should issue an opaque token to this client"
    return token


def introspections(api, log_dir) -> int:
    """The introspection requests in the dev IdP's access log, once every earlier request is in it:
    gunicorn writes a line after answering, so a marker request is logged and waited for first."""
    log = log_dir / "devidp.log"
    marker = f"/o/log-marker-{uuid.uuid4().hex}/"
    requests.get(f"{api.OIDC_OP_ISSUER.rsplit('/o', 1)[0]}{marker}", timeout=15)
    wait_for(lambda: marker in log.read_text(), timeout=15)
    return log.read_text().count("/introspect/")


def test_an_opaque_token_is_introspected_cached_briefly_and_refused_once_revoked(api, opaque_bot, log_dir):
    api.API_INTROSPECTION_CACHE_SECONDS = 1
    before = introspections(api, log_dir)

    assert call(opaque_bot).status_code == 200
    assert introspections(api, log_dir) == before + 1
    assert call(opaque_bot).status_code == 200
    assert introspections(api, log_dir) == before + 1  # the second call used the cached answer

    revoked = requests.post(
        f"{api.OIDC_OP_ISSUER}/revoke_token/",
        data={"token": opaque_bot, "token_type_hint": "access_token"},
        auth=(devidp_config.opaque_client_id(), devidp_config.opaque_client_secret()),
        timeout=15,
    )
    assert revoked.status_code == 200, revoked.text[:300]
    time.sleep(1.5)  # past the cache time: the next call asks the IdP again (a wait, not a timing assert)

    assert_refused(call(opaque_bot))
    assert introspections(api, log_dir) == before + 2


def test_the_idps_introspection_answers_the_claims_its_jwts_carry(api, opaque_bot):
    from django.conf import settings

    answer = requests.post(
        f"{api.OIDC_OP_ISSUER}/introspect/",
        data={"token": opaque_bot},
        auth=(settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET),
        timeout=15,
    ).json()

    assert answer["active"] is True
    assert answer["sub"] == answer["client_id"] == devidp_config.opaque_client_id()
    assert (answer["iss"], answer["aud"], answer["token_type"]) == (api.OIDC_OP_ISSUER, "approvals-api", "Bearer")
    assert answer["exp"] > time.time()


def test_an_opaque_token_introspected_as_inactive_is_refused(api, opaque_bot):
    requests.post(
        f"{api.OIDC_OP_ISSUER}/revoke_token/",
        data={"token": opaque_bot},
        auth=(devidp_config.opaque_client_id(), devidp_config.opaque_client_secret()),
        timeout=15,
    ).raise_for_status()

    assert_refused(call(opaque_bot))


def test_an_introspection_answer_for_another_audience_is_refused(api, opaque_bot):
    api.API_AUDIENCE = "another-api"  # the IdP answers aud=approvals-api: not this API's

    assert_refused(call(opaque_bot))


def test_an_introspection_answer_of_another_issuer_is_refused(api, opaque_bot):
    # The IdP answers iss=<its issuer>; a portal trusting another issuer must not take it.
    api.OIDC_OP_ISSUER = "https://other-idp.test"
    ServiceAccount.objects.update(issuer="https://other-idp.test")

    assert_refused(call(opaque_bot))


# ---------------------------------------------------------------------------
# A decision with a person's token: the groups it uses are the portal's, from the last sign-in
# ---------------------------------------------------------------------------
def decide_with(token: str, request, key: str | None = None) -> object:
    return Client().post(
        f"/api/v1/requests/{request.public_id}/decision/",
        data=json.dumps({"decision": "approve", "comment": "from the CLI"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        **({"HTTP_IDEMPOTENCY_KEY": key} if key else {}),
    )


def test_a_persons_token_does_not_decide_with_groups_the_portal_last_saw_at_a_sign_in_long_ago(api, alice, idp_key):
    """A person's access token proves who they are now, not which groups they are in: those are
    what the portal mirrored at their last SSO sign-in or session refresh. Removed from
    finance-approvers at the IdP (without SCIM), alice stays in it here until she signs in again,
    and through the API (the CLI) she never has to. The web refreshes every few minutes and a Slack
    click needs a recent sign-in; a decision with a token needs one too."""
    body = {"taskToken": f"t-{uuid.uuid4()}", "title": "Order 11", "approvers": {"groups": ["finance-approvers"]}}
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    User.objects.filter(pk=alice.pk).update(sso_verified_at=timezone.now() - timedelta(days=30))
    token = sign(claims_for(api.OIDC_OP_ISSUER), *idp_key)

    refused = decide_with(token, request)

    assert refused.status_code == 403, refused.content[:300]
    assert refused.json()["type"] == "urn:approvals:problem:sso_stale"
    assert "sign in to the portal" in refused.json()["detail"]
    assert not Vote.objects.exists()
    assert AuditEvent.objects.filter(action="decision_refused", data__code="sso_stale", data__via="api").exists()
    assert call(token).status_code == 200  # reading stays open: nothing is decided with it

    slack_identities.user_sso_verified(user=alice)  # what a sign-in (or the web's session refresh) records
    assert decide_with(token, request, key="cli-1").status_code == 201
    assert Vote.objects.get().user == alice
    # A retry of that decision gets its first answer, however old the sign-in has grown since.
    User.objects.filter(pk=alice.pk).update(sso_verified_at=timezone.now() - timedelta(days=30))
    again = decide_with(token, request, key="cli-1")
    assert again.status_code == 201 and again["Idempotency-Replayed"] == "true"


def test_an_old_sign_in_is_refreshed_from_the_idp_with_the_persons_own_token_before_it_decides(api, web_port):
    """The CLI's person has not opened the portal for a month: instead of sending them to a
    browser, the portal asks the IdP's userinfo endpoint with their own token who they are now and
    mirrors it as a sign-in does. The dev IdP has alice in finance-approvers only; the portal still
    had her in legal from long ago."""
    token = user_access_token(
        api.OIDC_OP_ISSUER, "alice", f"http://127.0.0.1:{web_port}/oidc/callback/", scope="openid email profile groups"
    )
    sub = jwt.decode(token, options={"verify_signature": False})["sub"]
    alice = make_user("alice-sso", "finance-approvers", "legal", sub=sub)
    month_ago = timezone.now() - timedelta(days=30)
    User.objects.filter(pk=alice.pk).update(oidc_issuer=api.OIDC_OP_ISSUER, sso_verified_at=month_ago)

    def waiting_for(group: str):
        body = {"taskToken": f"t-{uuid.uuid4()}", "title": f"For {group}", "approvers": {"groups": [group]}}
        return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]

    refused = decide_with(token, waiting_for("legal"))

    # Out of legal, she no longer sees its request: the same answer as for any request not hers.
    assert refused.status_code == 404, refused.content[:300]
    assert refused.json()["type"] == "urn:approvals:problem:not_found"
    alice.refresh_from_db()
    assert permissions.user_group_names(alice) == {"finance-approvers"}
    assert alice.email == "alice@example.com"
    assert alice.sso_verified_at > month_ago + timedelta(days=29)

    assert decide_with(token, waiting_for("finance-approvers")).status_code == 201
    assert Vote.objects.get().user == alice


def test_an_old_sign_in_stays_refused_when_the_idp_does_not_say_which_groups_the_person_is_in(api, web_port):
    """A token without the groups scope gets a userinfo answer without groups: mirroring it would
    take every group away, and keeping the old ones would decide with them. Neither: sso_stale."""
    token = user_access_token(api.OIDC_OP_ISSUER, "alice", f"http://127.0.0.1:{web_port}/oidc/callback/")
    sub = jwt.decode(token, options={"verify_signature": False})["sub"]
    alice = make_user("alice-sso", "finance-approvers", sub=sub)
    User.objects.filter(pk=alice.pk).update(
        oidc_issuer=api.OIDC_OP_ISSUER, sso_verified_at=timezone.now() - timedelta(days=30)
    )
    body = {"taskToken": f"t-{uuid.uuid4()}", "title": "Order 12", "approvers": {"groups": ["finance-approvers"]}}
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))

    refused = decide_with(token, request)

    assert refused.status_code == 403, refused.content[:300]
    assert refused.json()["type"] == "urn:approvals:problem:sso_stale"
    assert set(User.objects.get(pk=alice.pk).groups.values_list("name", flat=True)) == {"finance-approvers"}
