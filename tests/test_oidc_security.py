"""Sign-in attacks that must fail: a rogue OpenID provider hands the portal bad tokens.

The real dev IdP only issues good tokens, so this file runs its own provider: a threaded HTTP
server on 127.0.0.1 with its own RSA key, serving a JWKS, a token endpoint (which insists on
PKCE, like the real one) and a userinfo endpoint whose answers each test chooses. The portal
runs in-process (Django's test client) with its OIDC settings pointed at that server, and goes
through its real code path: /oidc/authenticate/ → (the test plays the browser at the IdP) →
/oidc/callback/ → token endpoint → JWKS → userinfo → PortalOIDCBackend.

The first test is the positive control: with a correct token the harness signs in, so every
refusal below is for the reason its test names.
"""

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from approvals.models import User
from approvals.roles import APPROVER_ACCESS_GROUP
from tests.support import make_user, signed_in

pytestmark = pytest.mark.django_db

CLIENT_ID = "approval-portal"
CLIENT_SECRET = "rogue-test-client-secret-0123456789abcdef"  # long enough for HS256 without warnings
CALLBACK = "http://testserver/oidc/callback/"
SUB = "rogue-subject-1"
FAILURE_URL = "/signin/?failed=1"
DELETE = object()  # as a claim override: leave the claim out
SIGNED = object()  # as the id_token of a callback: a correctly signed token with the given claims


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), b64url(signature)])


def hs256_jwt(claims: dict, secret: bytes, kid: str) -> str:
    """Built by hand: PyJWT refuses a PEM as an HMAC secret, which is the point of one attack."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def private_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Grant:
    """What the rogue IdP answers for one authorization code."""

    challenge: str
    id_token: str | None
    userinfo: dict
    used: bool = False


@dataclass
class RogueIdP:
    key: rsa.RSAPrivateKey
    other_key: rsa.RSAPrivateKey  # never published
    kid: str = "rogue-key-1"
    jwks_alg: bool = True
    issuer: str = ""
    grants: dict = field(default_factory=dict)
    access_tokens: dict = field(default_factory=dict)
    token_requests: list = field(default_factory=list)
    token_errors: list = field(default_factory=list)  # error_description of each refused exchange
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.jwks_alg = True
            self.grants.clear()
            self.access_tokens.clear()
            self.token_requests.clear()
            self.token_errors.clear()

    # ---- tokens ------------------------------------------------------------
    def claims(self, request_nonce, /, **overrides) -> dict:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": SUB,
            "nonce": request_nonce,
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not DELETE}

    def sign(self, claims: dict, *, key=None, kid: str | None = "default", alg: str = "RS256") -> str:
        headers = {"kid": self.kid if kid == "default" else kid} if kid is not None else {}
        token = jwt.encode(claims, private_pem(key or self.key), algorithm=alg, headers=headers)
        if kid is None:
            assert "kid" not in jwt.get_unverified_header(token)
        return token

    def jwks(self) -> dict:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig"})
        if self.jwks_alg:
            jwk["alg"] = "RS256"
        return {"keys": [jwk]}

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def issue_code(self, challenge: str, id_token: str | None, userinfo: dict) -> str:
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.grants[code] = Grant(challenge=challenge, id_token=id_token, userinfo=userinfo)
        return code

    # ---- endpoints ---------------------------------------------------------
    def token_endpoint(self, form: dict) -> tuple[int, dict]:
        status, body = self._exchange(form)
        if status != 200:
            self.token_errors.append(body.get("error_description", body["error"]))
        return status, body

    def _exchange(self, form: dict) -> tuple[int, dict]:
        with self.lock:
            self.token_requests.append(form)
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return 401, {"error": "invalid_client"}
            if form.get("grant_type") != "authorization_code" or form.get("redirect_uri") != CALLBACK:
                return 400, {"error": "invalid_request"}
            grant = self.grants.get(form.get("code", ""))
            if grant is None or grant.used:
                return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
            grant.used = True  # a code is single-use, even when the rest of the request is wrong
            verifier = form.get("code_verifier")
            if not verifier:
                return 400, {"error": "invalid_request", "error_description": "code_verifier required"}
            if b64url(hashlib.sha256(verifier.encode("ascii")).digest()) != grant.challenge:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
            access_token = secrets.token_urlsafe(24)
            self.access_tokens[access_token] = grant.userinfo
            body = {"access_token": access_token, "token_type": "Bearer", "expires_in": 300}
            if grant.id_token is not None:
                body["id_token"] = grant.id_token
            return 200, body

    def userinfo_endpoint(self, authorization: str) -> tuple[int, dict]:
        scheme, _, token = authorization.partition(" ")
        with self.lock:
            info = self.access_tokens.get(token) if scheme == "Bearer" else None
        return (200, info) if info is not None else (401, {"error": "invalid_token"})


def serve(rogue: RogueIdP) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's naming
            path = urlsplit(self.path).path
            if path == "/rogue/jwks":
                self._send(200, rogue.jwks())
            elif path == "/rogue/userinfo":
                self._send(*rogue.userinfo_endpoint(self.headers.get("Authorization", "")))
            else:
                self._send(404, {"error": "not_found"})

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if urlsplit(self.path).path == "/rogue/token":
                self._send(*rogue.token_endpoint(form))
            else:
                self._send(404, {"error": "not_found"})

        def log_message(self, *args):  # quiet: the portal's own logs are what matters
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="rogue-idp", daemon=True).start()
    return server


@pytest.fixture(scope="module")
def rogue_server():
    rogue = RogueIdP(
        key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        other_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )
    server = serve(rogue)
    rogue.issuer = f"http://127.0.0.1:{server.server_address[1]}/rogue"
    yield rogue
    server.shutdown()
    server.server_close()


@pytest.fixture
def rogue(rogue_server, settings):
    """The portal, configured (per test) to trust the rogue IdP; its state reset."""
    rogue_server.reset()
    base = rogue_server.issuer
    settings.OIDC_OP_ISSUER = base
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{base}/authorize"
    settings.OIDC_OP_TOKEN_ENDPOINT = f"{base}/token"
    settings.OIDC_OP_USER_ENDPOINT = f"{base}/userinfo"
    settings.OIDC_OP_JWKS_ENDPOINT = f"{base}/jwks"
    settings.OIDC_OP_LOGOUT_ENDPOINT = ""
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_RP_SIGN_ALGO = "RS256"
    settings.OIDC_RP_IDP_SIGN_KEY = None
    settings.OIDC_REQUIRE_VERIFIED_EMAIL = True
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = []
    return rogue_server


@pytest.fixture
def client():
    # A 500 must show up as a failed test, not as a "refused" sign-in.
    return Client(raise_request_exception=True)


# ---------------------------------------------------------------------------
# The browser's part of the flow
# ---------------------------------------------------------------------------
@dataclass
class Flow:
    state: str
    nonce: str
    challenge: str
    params: dict


def start(client: Client, next_url: str | None = "/", path: str = "/oidc/authenticate/") -> Flow:
    response = client.get(path, {"next": next_url} if next_url is not None else {})
    assert response.status_code == 302, response
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{settings_issuer()}/authorize"
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == CALLBACK
    assert params["response_type"] == "code"
    assert params["code_challenge_method"] == "S256"
    return Flow(state=params["state"], nonce=params["nonce"], challenge=params["code_challenge"], params=params)


def settings_issuer() -> str:
    from django.conf import settings

    return settings.OIDC_OP_ISSUER


def userinfo(**overrides) -> dict:
    info = {
        "sub": SUB,
        "email": "mallory@example.com",
        "email_verified": True,
        "given_name": "Mallory",
        "groups": ["finance-approvers"],
    }
    info.update(overrides)
    return {name: value for name, value in info.items() if value is not DELETE}


def callback(client: Client, rogue: RogueIdP, flow: Flow, *, id_token=SIGNED, info=None, **claims):
    """The IdP redirects back with a code whose token response the test chose."""
    if id_token is SIGNED:
        id_token = rogue.sign(rogue.claims(flow.nonce, **claims))
    code = rogue.issue_code(flow.challenge, id_token, info if info is not None else userinfo())
    return client.get("/oidc/callback/", {"code": code, "state": flow.state}), code


def sign_in(client: Client, rogue: RogueIdP, **kwargs):
    flow = start(client)
    response, _ = callback(client, rogue, flow, **kwargs)
    return response


def sso_groups(user: User) -> set[str]:
    """The user's groups that come from the IdP (not the portal's own permission group)."""
    return set(user.groups.values_list("name", flat=True)) - {APPROVER_ACCESS_GROUP}


def assert_signed_in(client: Client, response, location: str = "/") -> User:
    assert response.status_code == 302
    assert response["Location"] == location
    assert "_auth_user_id" in client.session
    user = User.objects.get(pk=client.session["_auth_user_id"])
    assert client.get("/").status_code == 200
    return user


@pytest.fixture
def refused(caplog):
    """Checks a refusal: back to the sign-in page with a failure, no session user, no new account,
    and the portal's log names the reason (so the test fails if it was refused for another one)."""
    caplog.set_level(logging.WARNING)

    def check(client: Client, response, because: str | None, users_before: int = 0) -> None:
        assert response.status_code == 302, response.status_code
        assert response["Location"] == FAILURE_URL
        assert "_auth_user_id" not in client.session
        assert client.get("/").status_code == 302  # the inbox still wants a sign-in
        assert User.objects.count() == users_before
        if because is not None:
            assert re.search(because, caplog.text), caplog.text

    return check


# ---------------------------------------------------------------------------
# Positive control
# ---------------------------------------------------------------------------
def test_the_positive_control_a_correct_token_signs_in_keyed_by_issuer_and_subject(client, rogue):
    response = sign_in(client, rogue)

    user = assert_signed_in(client, response)
    assert (user.oidc_issuer, user.oidc_sub) == (rogue.issuer, SUB)
    assert user.email == "mallory@example.com"
    assert sso_groups(user) == {"finance-approvers"}
    # The token request carried the PKCE verifier for the challenge of this login.
    (token_request,) = rogue.token_requests
    assert token_request["code_verifier"]
    assert len(token_request["code_verifier"]) >= 43


# ---------------------------------------------------------------------------
# State, nonce, code and PKCE
# ---------------------------------------------------------------------------
def test_a_replayed_callback_state_is_refused_before_the_token_endpoint_is_asked_again(client, rogue):
    flow = start(client)
    first, code = callback(client, rogue, flow)
    assert_signed_in(client, first)

    replay = client.get("/oidc/callback/", {"code": code, "state": flow.state})

    assert replay.status_code == 400  # mozilla-django-oidc: state not in this session
    assert len(rogue.token_requests) == 1


def test_a_callback_url_replayed_in_another_browser_signs_nobody_in(client, rogue, refused):
    flow = start(client)
    code = rogue.issue_code(flow.challenge, rogue.sign(rogue.claims(flow.nonce)), userinfo())
    attacker = Client(raise_request_exception=True)

    response = attacker.get("/oidc/callback/", {"code": code, "state": flow.state})

    refused(attacker, response, None, users_before=0)
    assert rogue.token_requests == []


def test_a_callback_without_state_is_refused(client, rogue, refused):
    flow = start(client)
    code = rogue.issue_code(flow.challenge, rogue.sign(rogue.claims(flow.nonce)), userinfo())

    response = client.get("/oidc/callback/", {"code": code})

    refused(client, response, None, users_before=0)
    assert rogue.token_requests == []


def test_a_callback_with_an_unknown_state_is_refused(client, rogue):
    flow = start(client)
    code = rogue.issue_code(flow.challenge, rogue.sign(rogue.claims(flow.nonce)), userinfo())

    response = client.get("/oidc/callback/", {"code": code, "state": "not-the-state-we-sent"})

    assert response.status_code == 400
    assert "_auth_user_id" not in client.session
    assert rogue.token_requests == []


@pytest.mark.parametrize("nonce", ["another-login's-nonce", DELETE], ids=["wrong", "missing"])
def test_an_id_token_with_a_wrong_or_missing_nonce_is_refused(client, rogue, nonce, refused):
    response = sign_in(client, rogue, nonce=nonce)

    refused(client, response, "Nonce verification failed", users_before=0)


def test_a_replayed_authorization_code_is_refused(client, rogue, refused):
    flow = start(client)
    first, code = callback(client, rogue, flow)
    assert_signed_in(client, first)
    other_browser = Client(raise_request_exception=True)
    second = start(other_browser)

    response = other_browser.get("/oidc/callback/", {"code": code, "state": second.state})

    assert rogue.token_requests[-1]["code"] == code  # the IdP was asked, and refused
    assert rogue.token_errors == ["unknown or used code"]
    refused(other_browser, response, "the IdP request failed", users_before=1)


def test_a_code_injected_from_another_login_fails_pkce(client, rogue, refused):
    # The attacker starts a login of their own and slips its code into the victim's callback:
    # the victim's browser holds a different verifier, so the IdP refuses the exchange.
    attacker_flow = start(Client())
    victim_flow = start(client)
    code = rogue.issue_code(attacker_flow.challenge, rogue.sign(rogue.claims(victim_flow.nonce)), userinfo())

    response = client.get("/oidc/callback/", {"code": code, "state": victim_flow.state})

    assert rogue.token_requests[-1]["code_verifier"]  # sent, but the wrong one for this code
    assert rogue.token_errors == ["PKCE verification failed"]
    refused(client, response, "the IdP request failed", users_before=0)


def test_the_portal_always_sends_a_pkce_verifier_and_a_token_endpoint_refusing_without_one_signs_nobody_in(
    client, rogue, refused
):
    flow = start(client)
    # A session whose stored verifier is gone: the token request goes out without one.
    session = client.session
    session["oidc_states"][flow.state]["code_verifier"] = None
    session.save()

    response, _ = callback(client, rogue, flow)

    assert "code_verifier" not in rogue.token_requests[-1]
    assert rogue.token_errors == ["code_verifier required"]
    refused(client, response, "the IdP request failed", users_before=0)


# ---------------------------------------------------------------------------
# Signature, algorithm and key
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("jwks_alg", "because"),
    [(True, "Could not find a valid JWKS"), (False, "algorithm '{alg}' does not match")],
    ids=["jwks-names-alg", "jwks-without-alg"],
)
def test_an_unsigned_alg_none_id_token_is_refused(client, rogue, jwks_alg, because, refused):
    rogue.jwks_alg = jwks_alg
    flow = start(client)
    token = unsigned_jwt({"alg": "none", "typ": "JWT", "kid": rogue.kid}, rogue.claims(flow.nonce))

    response, _ = callback(client, rogue, flow, id_token=token)

    refused(client, response, because.format(alg="none"), users_before=0)


@pytest.mark.parametrize(
    ("jwks_alg", "because"),
    [(True, "Could not find a valid JWKS"), (False, "algorithm '{alg}' does not match")],
    ids=["jwks-names-alg", "jwks-without-alg"],
)
def test_an_hs256_id_token_signed_with_the_client_secret_is_refused_when_rs256_is_expected(
    client, rogue, jwks_alg, because, refused
):
    rogue.jwks_alg = jwks_alg
    flow = start(client)
    token = hs256_jwt(rogue.claims(flow.nonce), CLIENT_SECRET.encode(), rogue.kid)

    response, _ = callback(client, rogue, flow, id_token=token)

    refused(client, response, because.format(alg="HS256"), users_before=0)


def test_an_hs256_id_token_keyed_with_the_idps_public_key_is_refused(client, rogue, refused):
    rogue.jwks_alg = False
    flow = start(client)
    token = hs256_jwt(rogue.claims(flow.nonce), rogue.public_pem(), rogue.kid)

    response, _ = callback(client, rogue, flow, id_token=token)

    refused(client, response, "algorithm 'HS256' does not match", users_before=0)


@pytest.mark.parametrize(
    ("kid", "because"),
    [
        ("default", "JWS token verification failed"),  # the published kid, but another key signed
        ("not-in-the-jwks", "Could not find a valid JWKS"),
        (None, "ID token rejected: KeyError"),  # no kid at all
    ],
    ids=["published-kid", "unknown-kid", "no-kid"],
)
def test_an_id_token_signed_by_a_key_not_in_the_jwks_is_refused(client, rogue, kid, because, refused):
    flow = start(client)
    token = rogue.sign(rogue.claims(flow.nonce), key=rogue.other_key, kid=kid)

    response, _ = callback(client, rogue, flow, id_token=token)

    refused(client, response, because, users_before=0)


def test_an_id_token_from_the_right_key_under_an_unknown_kid_is_refused(client, rogue, refused):
    flow = start(client)
    token = rogue.sign(rogue.claims(flow.nonce), kid="rotated-away")

    response, _ = callback(client, rogue, flow, id_token=token)

    refused(client, response, "Could not find a valid JWKS", users_before=0)


def test_a_tampered_id_token_payload_is_refused(client, rogue, refused):
    flow = start(client)
    header, _, signature = rogue.sign(rogue.claims(flow.nonce)).split(".")
    forged = b64url(json.dumps(rogue.claims(flow.nonce, sub="carol-the-admin")).encode())

    response, _ = callback(client, rogue, flow, id_token=f"{header}.{forged}.{signature}")

    refused(client, response, "JWS token verification failed", users_before=0)


def test_a_token_response_without_an_id_token_is_refused(client, rogue, refused):
    response = sign_in(client, rogue, id_token=None)

    refused(client, response, "ID token rejected: DecodeError", users_before=0)


# ---------------------------------------------------------------------------
# Claims of the ID token
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("claims", "because"),
    [
        ({"aud": "some-other-client"}, "audience does not include this client"),
        ({"aud": ["some-other-client", "another-one"]}, "audience does not include this client"),
        ({"aud": DELETE}, "audience does not include this client"),
        ({"aud": [CLIENT_ID, "some-other-client"]}, "azp does not name this client"),  # no azp
        ({"aud": [CLIENT_ID, "some-other-client"], "azp": "some-other-client"}, "azp does not name this client"),
    ],
    ids=["wrong-aud", "wrong-aud-list", "no-aud", "multiple-aud-without-azp", "multiple-aud-azp-other"],
)
def test_an_id_token_for_another_audience_is_refused(client, rogue, claims, because, refused):
    response = sign_in(client, rogue, **claims)

    refused(client, response, because, users_before=0)


def test_an_id_token_with_multiple_audiences_and_our_azp_signs_in(client, rogue):
    # The control for the case above: azp naming this client makes multiple audiences valid.
    response = sign_in(client, rogue, aud=[CLIENT_ID, "some-other-client"], azp=CLIENT_ID)

    assert_signed_in(client, response)


@pytest.mark.parametrize(
    "iss", ["https://evil.example/rogue", "ISSUER/", DELETE], ids=["other-issuer", "trailing-slash", "no-issuer"]
)
def test_an_id_token_from_another_issuer_is_refused(client, rogue, iss, refused):
    if iss == "ISSUER/":
        iss = rogue.issuer + "/"
    response = sign_in(client, rogue, iss=iss)

    refused(client, response, "issuer does not match", users_before=0)


def test_an_expired_id_token_is_refused(client, rogue, refused):
    past = int(time.time()) - 3600
    response = sign_in(client, rogue, iat=past - 300, exp=past)

    refused(client, response, "ExpiredSignatureError", users_before=0)


def test_an_id_token_without_an_expiry_is_refused(client, rogue, refused):
    # PyJWT checks exp only when present; OIDC Core 2 makes it required.
    response = sign_in(client, rogue, exp=DELETE)

    refused(client, response, "ID token has no expiry", users_before=0)


def test_an_id_token_not_yet_valid_is_refused(client, rogue, refused):
    future = int(time.time()) + 3600
    response = sign_in(client, rogue, nbf=future)

    refused(client, response, "ImmatureSignatureError", users_before=0)


@pytest.mark.parametrize("sub", [DELETE, ""], ids=["missing", "empty"])
def test_an_id_token_without_a_subject_is_refused(client, rogue, sub, refused):
    response = sign_in(client, rogue, sub=sub, info=userinfo(sub=sub))

    refused(client, response, "ID token has no subject", users_before=0)


# ---------------------------------------------------------------------------
# Userinfo claims
# ---------------------------------------------------------------------------
def test_userinfo_for_another_subject_is_refused(client, rogue, refused):
    response = sign_in(client, rogue, info=userinfo(sub="someone-else"))

    refused(client, response, "userinfo subject does not match", users_before=0)


def test_userinfo_without_a_subject_is_refused(client, rogue, refused):
    response = sign_in(client, rogue, info=userinfo(sub=DELETE))

    refused(client, response, "userinfo subject does not match", users_before=0)


def test_an_unverified_email_naming_an_existing_user_neither_signs_in_nor_becomes_that_user(client, rogue, refused):
    victim = User.objects.create_user(
        username="bob", email="bob@example.com", oidc_issuer=rogue.issuer, oidc_sub="bob-real-subject"
    )

    response = sign_in(client, rogue, info=userinfo(email="bob@example.com", email_verified=False))

    refused(client, response, "email not verified", users_before=1)
    victim.refresh_from_db()
    assert (victim.email, victim.oidc_sub) == ("bob@example.com", "bob-real-subject")
    assert not User.objects.filter(oidc_sub=SUB).exists()


@pytest.mark.parametrize("verified", [DELETE, "true", 1], ids=["missing", "string-true", "integer-1"])
def test_an_email_not_verified_as_boolean_true_is_refused_by_default(client, rogue, verified, refused):
    response = sign_in(client, rogue, info=userinfo(email_verified=verified))

    refused(client, response, "email not verified", users_before=0)


def test_a_verified_email_of_another_active_user_is_refused(client, rogue, refused):
    # Assignments are by email: a second subject with bob's email would inherit his requests.
    User.objects.create_user(username="bob", email="bob@example.com", oidc_issuer=rogue.issuer, oidc_sub="bob-sub")

    response = sign_in(client, rogue, info=userinfo(email="Bob@Example.com"))

    refused(client, response, "belongs to another active account", users_before=1)


def test_an_email_outside_the_allowed_domains_is_refused(client, rogue, settings, refused):
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["corp.example.com"]

    outside = sign_in(client, rogue, info=userinfo(email="mallory@corp.example.com.evil.example"))
    refused(client, outside, "email domain not allowed", users_before=0)

    allowed = sign_in(client, rogue, info=userinfo(email="mallory@corp.example.com"))
    assert_signed_in(client, allowed)


def test_userinfo_without_an_email_is_refused(client, rogue, refused):
    response = sign_in(client, rogue, info=userinfo(email=DELETE))

    refused(client, response, "sent no email", users_before=0)


# ---------------------------------------------------------------------------
# Redirects and the session
# ---------------------------------------------------------------------------
OFF_SITE = [
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example/",
    "https:evil.example",
    "http://testserver.evil.example/",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("next_url", OFF_SITE)
def test_an_off_site_next_on_the_sso_start_ends_on_the_portal(client, rogue, next_url):
    flow = start(client, next_url=next_url)

    response, _ = callback(client, rogue, flow)

    assert_signed_in(client, response, location="/")


@pytest.mark.parametrize("next_url", OFF_SITE)
def test_an_off_site_next_on_the_signin_page_ends_on_the_portal(client, rogue, next_url):
    page = client.get("/signin/", {"next": next_url})
    assert page.status_code == 200
    sso_url = page.context["sso_url"]
    assert "evil" not in sso_url and "javascript" not in sso_url
    assert "evil.example" not in page.content.decode()

    flow = start(client, next_url=None, path=sso_url)
    response, _ = callback(client, rogue, flow)

    assert_signed_in(client, response, location="/")
    again = client.get("/signin/", {"next": next_url})  # signed in: /signin/ redirects at once
    assert again.status_code == 302
    assert again["Location"] == "/"


def test_a_same_site_next_is_kept(client, rogue):
    flow = start(client, next_url="/requests/00000000-0000-0000-0000-000000000000/")

    response, _ = callback(client, rogue, flow)

    assert_signed_in(client, response, location="/requests/00000000-0000-0000-0000-000000000000/")


def test_signing_in_gives_a_new_session_key_and_a_planted_one_gains_nothing(client, rogue):
    # The attacker gets an anonymous session of their own and plants its cookie in the victim's browser.
    attacker = Client()
    attacker.get("/oidc/authenticate/", {"next": "/"})
    planted = attacker.cookies["portal_sessionid"].value
    client.cookies["portal_sessionid"] = planted

    flow = start(client)
    assert client.cookies["portal_sessionid"].value == planted  # the flow really ran in the planted session
    response, _ = callback(client, rogue, flow)

    assert_signed_in(client, response)
    assert client.cookies["portal_sessionid"].value != planted
    assert attacker.get("/").status_code == 302  # the planted key is not signed in
    assert "_auth_user_id" not in attacker.session


# ---------------------------------------------------------------------------
# Session refresh (prompt=none after OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS)
# ---------------------------------------------------------------------------
def expire_sign_in(client: Client) -> None:
    session = client.session
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()


def refresh_flow(client: Client, path: str = "/") -> Flow:
    """The prompt=none trip to the IdP that a GET of `path` (as the browser sends it) starts."""
    path, _, query = path.partition("?")
    response = client.get("/", PATH_INFO=path, QUERY_STRING=query)
    assert response.status_code == 302
    assert response["Location"].startswith(f"{settings_issuer()}/authorize?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}
    assert params["prompt"] == "none"
    return Flow(state=params["state"], nonce=params["nonce"], challenge=params["code_challenge"], params=params)


def test_a_session_refresh_brings_the_idps_current_groups(client, rogue):
    user = assert_signed_in(client, sign_in(client, rogue))
    expire_sign_in(client)

    flow = refresh_flow(client)
    response, _ = callback(client, rogue, flow, info=userinfo(groups=[]))

    assert response["Location"] == "/"
    assert client.session["_auth_user_id"] == str(user.pk)
    assert sso_groups(user) == set()


def test_a_refresh_interval_of_no_seconds_sends_every_page_to_the_idp_without_end_which_is_why_the_check_refuses_it(
    client, rogue, settings
):
    settings.OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = 0  # approvals.E043 refuses it at start-up
    response = sign_in(client, rogue)
    assert response["Location"] == "/" and "_auth_user_id" in client.session

    for _ in range(3):  # each trip back ends at "/", which starts the next: no page is ever shown
        back, _ = callback(client, rogue, refresh_flow(client))
        assert back["Location"] == "/"


def test_a_session_age_of_no_seconds_never_keeps_a_sign_in_which_is_why_the_check_refuses_it(client, rogue, settings):
    settings.SESSION_COOKIE_AGE = 0  # approvals.E043 refuses it at start-up

    response = sign_in(client, rogue)

    # The session that holds the sign-in's state and nonce has expired by the time the IdP sends
    # the browser back: every sign-in fails, with nothing to say which setting did it.
    assert response["Location"] == FAILURE_URL
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302


@pytest.mark.parametrize(
    ("path", "back_to"),
    [("//evil.example/", "/"), ("///evil.example/requests/", "/"), ("/out-of-office/?x=1", "/out-of-office/?x=1")],
)
def test_a_session_refresh_on_a_path_a_browser_reads_as_another_site_ends_on_the_portal(client, rogue, path, back_to):
    # A link https://portal//evil.example/ (a browser sends /\evil.example/ so too), followed after the
    # refresh window: the page to come back to is that path, and "//evil.example/" is another site.
    assert_signed_in(client, sign_in(client, rogue))
    expire_sign_in(client)
    flow = refresh_flow(client, path)

    back, _ = callback(client, rogue, flow)

    assert back["Location"] == back_to
    assert "_auth_user_id" in client.session


def browser_stays_on_this_site(url: str) -> bool:
    """Whether a browser following `url` from a portal page stays on the portal (WHATWG URL
    parsing: outer spaces and controls stripped, tabs and newlines dropped, \\ read as /, any
    number of slashes before a host; "//" alone names no host and goes nowhere)."""
    url = re.sub(r"[\t\n\r]", "", url.strip("".join(map(chr, range(33))))).replace("\\", "/")
    host = re.match(r"//+([^/?#]*)", url)
    return not (host and host.group(1)) and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", url)


PATH_PARTS = st.sampled_from(["/", "\\", "//", ".", ":", "@", "%2F", "%5C", "%09", "\t", " ", "evil.example", "https:"])


@pytest.mark.django_db
@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(PATH_PARTS | st.text(max_size=3).filter(lambda text: "\x00" not in text), max_size=8))
def test_whatever_path_starts_a_session_refresh_the_way_back_stays_on_the_portal(parts):
    browser = signed_in(make_user(f"u{User.objects.count()}"))
    expire_sign_in(browser)
    path = "/" + "".join(parts).split("?")[0].split("#")[0]

    response = browser.get("/", PATH_INFO=path.encode().decode("iso-8859-1"))

    if response.status_code == 302 and "prompt=none" in response["Location"]:
        assert browser_stays_on_this_site(browser.session["oidc_login_next"]), browser.session["oidc_login_next"]


def test_a_session_refresh_answered_with_login_required_signs_the_person_out(client, rogue):
    assert_signed_in(client, sign_in(client, rogue))
    expire_sign_in(client)
    flow = refresh_flow(client)

    response = client.get("/oidc/callback/", {"error": "login_required", "state": flow.state})

    assert response["Location"] == FAILURE_URL
    assert "_auth_user_id" not in client.session
    assert client.get("/")["Location"].startswith("/signin/")


def test_a_session_refresh_the_portal_refuses_signs_the_person_out(client, rogue, refused):
    assert_signed_in(client, sign_in(client, rogue))
    expire_sign_in(client)
    flow = refresh_flow(client)

    response, _ = callback(client, rogue, flow, info=userinfo(email_verified=False))

    refused(client, response, "email not verified", users_before=1)
    signin = client.get(FAILURE_URL)
    assert signin.status_code == 200  # the sign-in page, not another trip to the IdP
