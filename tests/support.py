"""Small helpers the behaviour tests share: people and their signed-in browsers."""

import re
import time

import requests
from django.contrib.auth.models import Group
from django.test import Client

from approvals.models import User
from devidp.seed import demo_passwords


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
