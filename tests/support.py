"""Small helpers the behaviour tests share: people and their signed-in browsers."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client

from approvals.models import ApprovalRequest, User
from devidp.seed import demo_passwords

REPO_DIR = Path(__file__).resolve().parent.parent


def make_user(username: str, *groups: str, admin: bool = False, sub: str | None = None) -> User:
    """A person as the SSO backend would create them: keyed by (issuer, sub), in SSO groups."""
    user = User.objects.create_user(
        username=username,
        email=f"{username}@example.com",
        oidc_issuer="https://idp.test",
        oidc_sub=sub if sub is not None else f"sub-{username}",
        is_staff=admin,
        is_superuser=admin,
    )
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


def finance_team() -> dict[str, User]:
    """alice, carol and dave, approvers in finance-approvers, and root, an admin."""
    return {
        "alice": make_user("alice", "finance-approvers"),
        "carol": make_user("carol", "finance-approvers"),
        "dave": make_user("dave", "finance-approvers"),
        "root": make_user("root", admin=True),
    }


def finance_execution_input(title: str, order_id: int) -> dict:
    """The input of an example execution that asks finance-approvers, requested by bob."""
    return {
        "title": title,
        "approvers": {"users": [], "groups": ["finance-approvers"]},
        "requester": "bob@example.com",
        "details": {"order": {"id": order_id}},
    }


def signed_in(user: User) -> Client:
    """A browser signed in as `user`, as after an SSO sign-in whose ID token is still fresh.

    The fresh expiry matters: without it the session-refresh middleware sends every request
    back to the IdP first.
    """
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    session = client.session
    session["oidc_id_token_expiration"] = time.time() + 3600
    session.save()
    return client


def wait_for(predicate, timeout: float = 60, interval: float = 0.2):
    """Poll until `predicate()` returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def wait_for_execution_end(execution_arn: str, timeout: float = 60) -> dict:
    """The execution's description once it no longer runs (on the moto server)."""
    from approvals.integrations import aws as gateway

    def ended():
        execution = gateway.describe_execution(execution_arn=execution_arn)
        return execution if execution["status"] != "RUNNING" else None

    return wait_for(ended, timeout=timeout)


def sso_login(portal_url: str, username: str) -> requests.Session:
    """Sign in through the portal's OIDC redirect flow and the dev IdP's real login form."""
    session = requests.Session()
    login_page = session.get(f"{portal_url}/oidc/authenticate/?next=/", timeout=15)
    assert "/accounts/login/" in login_page.url, login_page.url
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
    inbox = session.post(
        login_page.url,
        data={"csrfmiddlewaretoken": csrf, "username": username, "password": demo_passwords()[username]},
        headers={"Referer": login_page.url},
        timeout=15,
    )
    assert inbox.status_code == 200, inbox.text[:500]
    assert inbox.url == f"{portal_url}/", inbox.url
    return session


# ---------------------------------------------------------------------------
# API access tokens from the dev IdP's real endpoints (tests/test_api_*.py)
# ---------------------------------------------------------------------------
def client_credentials_token(issuer: str, client_id: str, client_secret: str) -> str:
    """A service account's access token: the client-credentials grant at the token endpoint."""
    response = requests.post(
        f"{issuer}/token/", data={"grant_type": "client_credentials"}, auth=(client_id, client_secret), timeout=15
    )
    assert response.status_code == 200, response.text[:300]
    return response.json()["access_token"]


def user_access_token(issuer: str, username: str, redirect_uri: str, *, scope: str = "openid email") -> str:
    """A person's access token: the authorization-code grant with PKCE, through the dev IdP's
    login form, as the portal's client (its registered redirect URI is only read, not visited)."""
    import base64
    import hashlib
    import secrets
    from urllib.parse import parse_qs, urljoin, urlsplit

    from devidp.seed import client_id

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    session = requests.Session()
    params = {
        "response_type": "code",
        "client_id": client_id(),
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    login_page = session.get(f"{issuer}/authorize/", params=params, timeout=15)
    assert "/accounts/login/" in login_page.url, login_page.url
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
    response = session.post(
        login_page.url,
        data={"csrfmiddlewaretoken": csrf, "username": username, "password": demo_passwords()[username]},
        headers={"Referer": login_page.url},
        allow_redirects=False,
        timeout=15,
    )
    for _ in range(5):  # login → authorize → the redirect URI with ?code=
        location = urljoin(response.url, response.headers.get("Location", ""))
        if location.startswith(redirect_uri):
            break
        response = session.get(location, allow_redirects=False, timeout=15)
    code = parse_qs(urlsplit(location).query)["code"][0]
    from django.conf import settings

    token = requests.post(
        f"{issuer}/token/",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=(client_id(), settings.OIDC_RP_CLIENT_SECRET),
        timeout=15,
    )
    assert token.status_code == 200, token.text[:300]
    return token.json()["access_token"]


# ---------------------------------------------------------------------------
# The command line's device sign-in (approvals_cli, tests/test_cli_*.py): the test plays the person
# ---------------------------------------------------------------------------
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def post_form(session: requests.Session, page: requests.Response, **fields) -> requests.Response:
    csrf = CSRF_FIELD.search(page.text).group(1)
    return session.post(
        page.url, data={"csrfmiddlewaretoken": csrf, **fields}, headers={"Referer": page.url}, timeout=15
    )


def act_on_device_code(issuer: str, username: str, user_code: str, action: str = "accept") -> requests.Response:
    """The person: opens the IdP's device page, signs in with the login form, enters the code, allows/denies."""
    session = requests.Session()
    login = session.get(f"{issuer}/device/", timeout=15)
    assert "/accounts/login/" in login.url, login.url
    code_page = post_form(session, login, username=username, password=demo_passwords()[username])
    assert code_page.url.startswith(f"{issuer}/device/"), code_page.url
    confirm = post_form(session, code_page, user_code=user_code)
    assert "/device-confirm/" in confirm.url, confirm.text[-500:]
    return post_form(session, confirm, action=action)


class CliLogin:
    """`python -m approvals_cli login` as a child process, with its own config dir."""

    def __init__(self, issuer: str, config_home: Path, *extra: str, portal: str = "http://127.0.0.1:8000"):
        env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), "PYTHONUNBUFFERED": "1"}
        env.pop("APPROVALS_TOKEN", None)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "approvals_cli", "login", "--issuer", issuer, "--portal", portal,
             *extra],
            cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []

    def user_code(self) -> str:
        """Read what the command prints until the code appears (as a person reads the screen)."""
        timer = threading.Timer(60, self.popen.kill)  # a hung command fails the test instead of hanging it
        timer.start()
        try:
            for line in self.popen.stdout:
                self.lines.append(line)
                match = re.search(r"enter the code: (\S+)", line)
                if match:
                    return match.group(1)
        finally:
            timer.cancel()
        raise AssertionError(f"no code printed: {self.lines} {self.popen.stderr.read()}")

    def finish(self) -> tuple[int, str, str]:
        stdout, stderr = self.popen.communicate(timeout=90)
        return self.popen.returncode, "".join(self.lines) + stdout, stderr


def run_cli(config_home: Path, *argv: str, portal: str) -> subprocess.CompletedProcess:
    """`python -m approvals_cli ...` with the token `approvals login` stored in `config_home`."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), "APPROVALS_PORTAL_URL": portal}
    env.pop("APPROVALS_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "approvals_cli", *argv],
        cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def new_request_notifications_planned() -> list[int]:
    """Plan the "new request" notifications the ingest left for its after-commit task, as that task
    would (without sending). A plain `db` test never commits, so its on-commit hooks never run."""
    from approvals.services.notifications import new_requests_plan

    unplanned = ApprovalRequest.objects.filter(notifications_unplanned_since__isnull=False)
    return new_requests_plan(request_ids=list(unplanned.values_list("pk", flat=True)))


def executed_scans(sql: str) -> list[dict]:
    """Every scan node of the plan PostgreSQL executed for `sql` (EXPLAIN ANALYZE): what a plan
    test reads ("Relation Name", "Node Type", "Actual Rows", "Rows Removed by Filter").
    `sql` as CaptureQueriesContext captured it (values inlined), run as it was."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    scans: list[dict] = []

    def walk(node: dict) -> None:
        if "Scan" in node["Node Type"]:
            scans.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return scans


def breaking_for(real: Callable, broken: Callable[..., bool]) -> Callable:
    """`real`, except that it raises KeyError where `broken(*args, **kwargs)`: a bug simulated in
    one item of a loop (no real input is known to break the code it stands for)."""

    def wrapper(*args, **kwargs):
        if broken(*args, **kwargs):
            raise KeyError("a simulated bug in one item")
        return real(*args, **kwargs)

    return wrapper
