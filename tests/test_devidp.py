"""End-to-end test of the dev OpenID provider: real processes, real HTTP, real JWT checks.

No Django database is used here: the IdP runs as `python -m devidp` subprocesses with
its own settings and a throw-away data directory.
"""

import base64
import hashlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import pytest
import requests

from devidp.seed import DEMO_USERS, demo_passwords

REPO_DIR = Path(__file__).resolve().parent.parent
CLIENT_ID = "approval-portal"
CLIENT_SECRET = "test-secret-for-devidp"
SCOPE = "openid email profile groups"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_devidp(env, *args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "devidp", *args],
        check=False,
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    port, rp_port = _free_port(), _free_port()
    issuer = f"http://127.0.0.1:{port}/o"
    env = {
        **os.environ,
        "DEVIDP_ISSUER": issuer,
        "DEVIDP_DATA_DIR": str(tmp_path_factory.mktemp("devidp")),
        "DEVIDP_CLIENT_ID": CLIENT_ID,
        "DEVIDP_CLIENT_SECRET": "first-secret-replaced-by-second-setup",
        # Comma and space separated on purpose.
        "DEVIDP_REDIRECT_URIS": f"http://127.0.0.1:{rp_port}/oidc/callback/, http://localhost:{rp_port}/cb/",
        "DEVIDP_POST_LOGOUT_REDIRECT_URIS": f"http://127.0.0.1:{rp_port}/",
        "DJANGO_SETTINGS_MODULE": "portal.settings",  # must be ignored by devidp
    }
    env.pop("DEVIDP_DEMO_PASSWORD", None)
    # Second run must update the existing client's secret rather than fail or duplicate.
    for secret in (env["DEVIDP_CLIENT_SECRET"], CLIENT_SECRET):
        env["DEVIDP_CLIENT_SECRET"] = secret
        result = _run_devidp(env, "setup", timeout=60)
        assert result.returncode == 0, result.stderr
    key_file = Path(env["DEVIDP_DATA_DIR"]) / "oidc-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devidp",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        discovery_url = f"{issuer}/.well-known/openid-configuration"
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"devidp serve exited early:\n{proc.stdout.read()}")
            try:
                response = requests.get(discovery_url, timeout=2)
                if response.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("devidp did not answer discovery within 20 s")
            time.sleep(0.2)
        yield {
            "issuer": issuer,
            "discovery": response.json(),
            "redirect_uri": f"http://127.0.0.1:{rp_port}/oidc/callback/",
            "post_logout_uri": f"http://127.0.0.1:{rp_port}/",
        }
    finally:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        # Whatever happened, nothing secret may have reached the server log.
        for needle in (
            "code=",
            "id_token_hint=",
            "access_token",
            CLIENT_SECRET,
            "alice-demo",
        ):
            assert needle not in output, f"{needle!r} leaked into the devidp log"


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize(session, idp, challenge, state, nonce, **extra):
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": idp["redirect_uri"],
        "scope": SCOPE,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return session.get(idp["discovery"]["authorization_endpoint"], params=params, allow_redirects=False)


def _login(session, login_url, username, password):
    page = session.get(login_url, allow_redirects=False)
    assert page.status_code == 200
    assert "Sign in" in page.text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    next_url = re.search(r'name="next" value="([^"]*)"', page.text).group(1).replace("&amp;", "&")
    return session.post(
        urljoin(login_url, "/accounts/login/"),
        data={
            "csrfmiddlewaretoken": csrf,
            "username": username,
            "password": password,
            "next": next_url,
        },
        allow_redirects=False,
    )


def _token_request(idp, code, verifier):
    # Client credentials in the POST body, as mozilla-django-oidc sends them.
    return requests.post(
        idp["discovery"]["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": idp["redirect_uri"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "code_verifier": verifier,
        },
        timeout=10,
    )


def _verify_id_token(idp, id_token, nonce):
    kid = jwt.get_unverified_header(id_token)["kid"]
    jwks = requests.get(idp["discovery"]["jwks_uri"], timeout=5).json()
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == kid]
    claims = jwt.decode(
        id_token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=idp["issuer"],
        options={"require": ["iss", "aud", "exp", "iat", "sub", "nonce"]},
    )
    assert claims["nonce"] == nonce
    return claims


def test_discovery_document(idp):
    issuer, doc = idp["issuer"], idp["discovery"]
    assert doc["issuer"] == issuer
    assert doc["authorization_endpoint"] == f"{issuer}/authorize/"
    assert doc["token_endpoint"] == f"{issuer}/token/"
    assert doc["userinfo_endpoint"] == f"{issuer}/userinfo/"
    assert doc["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert doc["end_session_endpoint"] == f"{issuer}/logout/"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert "RS256" in doc["id_token_signing_alg_values_supported"]
    assert {"email", "email_verified", "groups", "preferred_username"} <= set(doc["claims_supported"])


def test_demo_passwords_api(monkeypatch):
    monkeypatch.delenv("DEVIDP_DEMO_PASSWORD", raising=False)
    assert demo_passwords() == {
        "alice": "alice-demo",
        "bob": "bob-demo",
        "carol": "carol-demo",
        "dave": "dave-demo",
    }
    monkeypatch.setenv("DEVIDP_DEMO_PASSWORD", "shared")
    assert set(demo_passwords().values()) == {"shared"}
    alice = DEMO_USERS[0]
    assert (alice.username, alice.name, alice.groups) == (
        "alice",
        "Alice Approver",
        ("finance-approvers",),
    )


def test_wrong_password_does_not_sign_in(idp):
    session = requests.Session()
    _, challenge = _pkce_pair()
    response = _authorize(session, idp, challenge, "s", "n")
    login_url = urljoin(idp["issuer"], response.headers["Location"])
    response = _login(session, login_url, "alice", "not-the-password")
    assert response.status_code == 200
    assert "Invalid username or password" in response.text
    # Still anonymous: authorize keeps sending us to the login page.
    again = _authorize(session, idp, challenge, "s", "n")
    assert urlsplit(again.headers["Location"]).path == "/accounts/login/"


def test_authorization_code_flow_with_pkce_and_logout(idp):
    session = requests.Session()
    verifier, challenge = _pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)

    response = _authorize(session, idp, challenge, state, nonce)
    assert response.status_code == 302
    login_url = urljoin(idp["issuer"], response.headers["Location"])
    assert urlsplit(login_url).path == "/accounts/login/"

    response = _login(session, login_url, "alice", demo_passwords()["alice"])
    assert response.status_code == 302
    assert "devidp_sessionid" in session.cookies
    assert "devidp_csrftoken" in session.cookies

    # Back to authorize; no consent page (skip_authorization), straight to the client.
    response = session.get(urljoin(login_url, response.headers["Location"]), allow_redirects=False)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(idp["redirect_uri"] + "?")
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == [state]
    code = params["code"][0]

    # PKCE: a code is refused with the wrong verifier (a second code, so `code` stays usable).
    _, other_challenge = _pkce_pair()
    other = _authorize(session, idp, other_challenge, "s2", "n2")
    other_code = parse_qs(urlsplit(other.headers["Location"]).query)["code"][0]
    refused = _token_request(idp, other_code, verifier)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    # PKCE is mandatory.
    no_pkce = session.get(
        idp["discovery"]["authorization_endpoint"],
        params={"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": idp["redirect_uri"],
                "scope": SCOPE, "state": "s3"},
        allow_redirects=False,
    )  # fmt: skip
    no_pkce_params = parse_qs(urlsplit(no_pkce.headers["Location"]).query)
    assert "code" not in no_pkce_params
    assert no_pkce_params["error"] == ["invalid_request"]

    response = _token_request(idp, code, verifier)
    assert response.status_code == 200, response.text
    tokens = response.json()
    claims = _verify_id_token(idp, tokens["id_token"], nonce)
    alice = DEMO_USERS[0]
    assert claims["email"] == alice.email
    assert claims["email_verified"] is True
    assert claims["name"] == "Alice Approver"
    assert claims["given_name"] == "Alice" and claims["family_name"] == "Approver"
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["finance-approvers"]
    assert isinstance(claims["sub"], str) and claims["sub"]

    # A code is single use.
    assert _token_request(idp, code, verifier).status_code == 400

    userinfo_url = idp["discovery"]["userinfo_endpoint"]
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    userinfo = requests.get(userinfo_url, headers=bearer, timeout=5)
    assert userinfo.status_code == 200, userinfo.text
    info = userinfo.json()
    assert info["sub"] == claims["sub"]
    assert info["email"] == "alice@example.com"
    assert info["email_verified"] is True
    assert info["groups"] == ["finance-approvers"]
    assert info["name"] == "Alice Approver"

    # RP-initiated logout: an unregistered post_logout_redirect_uri is refused...
    logout_url = idp["discovery"]["end_session_endpoint"]
    bad = session.get(
        logout_url,
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "http://evil.example/",
        },
        allow_redirects=False,
    )
    assert bad.status_code == 400
    # ...the registered one gets a redirect (no confirmation page) with the state.
    response = session.get(
        logout_url,
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": idp["post_logout_uri"],
            "state": "bye",
        },
        allow_redirects=False,
    )
    assert response.status_code == 302
    assert response.headers["Location"] == idp["post_logout_uri"] + "?state=bye"
    # The IdP session is gone and the tokens were revoked.
    again = _authorize(session, idp, challenge, "s", "n")
    assert urlsplit(again.headers["Location"]).path == "/accounts/login/"
    assert requests.get(userinfo_url, headers=bearer, timeout=5).status_code == 401


@pytest.mark.parametrize("hint", ["not-a-jwt", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"])
def test_a_stale_logout_hint_with_a_client_id_still_only_returns_to_a_registered_uri(idp, hint):
    logout_url = idp["discovery"]["end_session_endpoint"]

    def logout(**params):
        return requests.get(logout_url, params={"id_token_hint": hint, **params}, allow_redirects=False, timeout=5)

    # Without client_id, an unusable hint is an error (DOT's own answer).
    assert logout(post_logout_redirect_uri=idp["post_logout_uri"]).status_code == 400
    # With it, nobody signed in here: straight back to the registered post-logout URI...
    back = logout(client_id=CLIENT_ID, post_logout_redirect_uri=idp["post_logout_uri"], state="s")
    assert back.status_code == 302
    assert back.headers["Location"] == idp["post_logout_uri"] + "?state=s"
    # ...and never anywhere else, nor for a client that does not exist.
    assert logout(client_id=CLIENT_ID, post_logout_redirect_uri="http://evil.example/").status_code == 400
    refused = logout(client_id="someone-else", post_logout_redirect_uri="http://evil.example/")
    assert refused.status_code >= 400
    assert "evil.example" not in refused.headers.get("Location", "")
