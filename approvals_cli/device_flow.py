"""Signing in with the OAuth 2.0 device authorization grant (RFC 8628).

The command asks the IdP for a device code, prints where to go and the code to enter, and polls
the token endpoint at the interval the IdP asks for (slower after `slow_down`, section 3.5) until
the person has allowed it, denied it, or the code has expired. The IdP's endpoints come from its
OpenID discovery document (`device_authorization_endpoint`, `token_endpoint`).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from approvals_cli.errors import CLIError, ExitCode
from approvals_cli.terminal import safe, truncate

TIMEOUT = (5, 30)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5  # RFC 8628 section 3.2: when the IdP doesn't say
SLOW_DOWN_STEP = 5  # section 3.5: "the interval MUST be increased by 5 seconds"
MAX_INTERVAL = 60
MAX_WAIT = 1800  # never poll longer than this, whatever expires_in says
NETWORK_FAILURES_ALLOWED = 5  # consecutive failed polls before giving up


@dataclass(frozen=True)
class IdP:
    issuer: str
    device_authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str | None


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: int
    expires_in: int

    def __repr__(self) -> str:  # the device code is a credential until it is spent
        return f"DeviceAuthorization(user_code={self.user_code!r}, expires_in={self.expires_in!r})"


def _same_origin_or_https(url: object, issuer: str) -> bool:
    if not isinstance(url, str):
        return False
    parts, issuer_parts = urlsplit(url), urlsplit(issuer)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == issuer_parts.scheme and parts.netloc == issuer_parts.netloc


def _get_json(session: requests.Session, method: str, url: str, what: str, **kwargs) -> requests.Response:
    try:
        return session.request(method, url, timeout=TIMEOUT, allow_redirects=False, **kwargs)
    except requests.RequestException:
        raise CLIError(f"cannot reach the identity provider ({what}) at {safe(url)}", ExitCode.UNREACHABLE) from None


def discover(session: requests.Session, issuer: str) -> IdP:
    issuer = issuer.rstrip("/")
    response = _get_json(session, "GET", f"{issuer}/.well-known/openid-configuration", "discovery")
    try:
        document = response.json() if response.status_code == 200 else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise CLIError(f"{safe(issuer)} has no OpenID discovery document (HTTP {response.status_code})", ExitCode.ERROR)
    if str(document.get("issuer", "")).rstrip("/") != issuer:
        raise CLIError(f"the discovery document at {safe(issuer)} names another issuer", ExitCode.ERROR)
    endpoint = document.get("device_authorization_endpoint")
    if not endpoint:
        raise CLIError(
            f"the identity provider {safe(issuer)} does not offer the device authorization grant; "
            "sign in another way and set APPROVALS_TOKEN",
            ExitCode.NOT_SIGNED_IN,
        )
    token_endpoint = document.get("token_endpoint")
    for url in (endpoint, token_endpoint):
        if not _same_origin_or_https(url, issuer):
            raise CLIError(f"the identity provider's endpoint {truncate(safe(url), 120)} is not https", ExitCode.ERROR)
    userinfo = document.get("userinfo_endpoint")
    return IdP(
        issuer=issuer,
        device_authorization_endpoint=endpoint,
        token_endpoint=token_endpoint,
        userinfo_endpoint=userinfo if _same_origin_or_https(userinfo, issuer) else None,
    )


def _oauth_error(response: requests.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return ""
    return str(document.get("error", "")) if isinstance(document, dict) else ""


def start(session: requests.Session, idp: IdP, *, client_id: str, scope: str) -> DeviceAuthorization:
    response = _get_json(
        session, "POST", idp.device_authorization_endpoint, "device authorization",
        data={"client_id": client_id, "scope": scope},
    )  # fmt: skip
    if response.status_code != 200:
        error = _oauth_error(response)
        raise CLIError(
            f"the identity provider refused to start the sign-in ({safe(error) or f'HTTP {response.status_code}'}); "
            f"is the client `{safe(client_id)}` registered for the device grant?",
            ExitCode.NOT_SIGNED_IN,
        )
    try:
        document = response.json()
        authorization = DeviceAuthorization(
            device_code=str(document["device_code"]),
            user_code=str(document["user_code"]),
            verification_uri=str(document.get("verification_uri") or document["verification_url"]),
            verification_uri_complete=document.get("verification_uri_complete"),
            interval=int(document.get("interval") or DEFAULT_INTERVAL),
            expires_in=int(document.get("expires_in") or MAX_WAIT),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CLIError("the identity provider's device authorization answer is malformed", ExitCode.ERROR) from None
    # The person is told to open these: web pages, nothing else (no javascript:, file:, ...).
    for url in (authorization.verification_uri, authorization.verification_uri_complete):
        if url is not None and (not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https")):
            raise CLIError("the identity provider's verification address is not a web page", ExitCode.ERROR)
    return authorization


def poll(
    session: requests.Session,
    idp: IdP,
    authorization: DeviceAuthorization,
    *,
    client_id: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Poll until the person allows the sign-in; the token response (a dict with `access_token`)."""
    interval = min(max(authorization.interval, 1), MAX_INTERVAL)
    deadline = clock() + min(max(authorization.expires_in, 1), MAX_WAIT)
    failures = 0
    while True:
        sleep(interval)
        if clock() > deadline:
            raise CLIError("the code expired before the sign-in was allowed: run `approvals login` again",
                           ExitCode.NOT_SIGNED_IN)  # fmt: skip
        try:
            response = session.post(
                idp.token_endpoint,
                data={"grant_type": DEVICE_GRANT, "device_code": authorization.device_code, "client_id": client_id},
                timeout=TIMEOUT,
                allow_redirects=False,
            )
        except requests.RequestException:
            failures += 1
            if failures >= NETWORK_FAILURES_ALLOWED:
                raise CLIError("lost contact with the identity provider while waiting for the sign-in",
                               ExitCode.UNREACHABLE) from None  # fmt: skip
            interval = min(interval * 2, MAX_INTERVAL)  # back off while it's unreachable (section 3.5)
            continue
        if response.status_code == 200:
            try:
                token = response.json()
            except ValueError:
                token = None
            if not isinstance(token, dict) or not isinstance(token.get("access_token"), str):
                raise CLIError("the identity provider's token answer is malformed", ExitCode.ERROR)
            return token
        error = _oauth_error(response)
        if error == "authorization_pending":
            failures = 0
            continue
        if error == "slow_down":
            failures = 0
            interval = min(interval + SLOW_DOWN_STEP, MAX_INTERVAL)
            continue
        if error == "access_denied":
            raise CLIError("the sign-in was denied at the identity provider", ExitCode.NOT_SIGNED_IN)
        if error == "expired_token":
            raise CLIError("the code expired before the sign-in was allowed: run `approvals login` again",
                           ExitCode.NOT_SIGNED_IN)  # fmt: skip
        if response.status_code >= 500 or response.status_code == 429:
            failures += 1
            if failures >= NETWORK_FAILURES_ALLOWED:
                raise CLIError(f"the identity provider keeps failing (HTTP {response.status_code})", ExitCode.ERROR)
            interval = min(interval * 2, MAX_INTERVAL)
            continue
        raise CLIError(
            f"the identity provider refused the sign-in ({safe(error) or f'HTTP {response.status_code}'})",
            ExitCode.NOT_SIGNED_IN,
        )


def who(session: requests.Session, idp: IdP, access_token: str) -> str | None:
    """Who the token belongs to, for the "signed in as" line; None if the IdP won't say."""
    if not idp.userinfo_endpoint:
        return None
    try:
        response = session.get(
            idp.userinfo_endpoint, headers={"Authorization": f"Bearer {access_token}"}, timeout=TIMEOUT,
            allow_redirects=False,
        )  # fmt: skip
        claims = response.json() if response.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    name = claims.get("email") or claims.get("preferred_username") or claims.get("sub")
    return str(name) if name else None
