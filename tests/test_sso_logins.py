"""Real sign-ins through the dev IdP's login form, against the portal running as real processes.

What an admin changes at the IdP (groups, email, disabling an account) reaches the portal at the
person's next sign-in or at the next session refresh (prompt=none), and signing out ends both
the portal's and the IdP's session. The changes are made with ``python -m devidp demo_user``
on a dev IdP of this module's own, so other test files keep the seeded demo users.
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
import requests

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, RequestStatus, User
from approvals.roles import APPROVER_ACCESS_GROUP
from devidp.seed import demo_passwords
from tests.conftest import REPO_DIR, Process, free_port, wait_for_http
from tests.support import sso_login

pytestmark = pytest.mark.e2e

REFRESH_SECONDS = 2


# ---------------------------------------------------------------------------
# This module's IdP (overrides conftest's shared `devidp`, which portal_stack uses)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idp_env(web_port, tmp_path_factory) -> dict:
    issuer = f"http://127.0.0.1:{free_port()}/o"
    env = {
        **os.environ,
        "DEVIDP_ISSUER": issuer,
        "DEVIDP_DATA_DIR": str(tmp_path_factory.mktemp("devidp-sso-logins")),
        "DEVIDP_REDIRECT_URIS": f"http://127.0.0.1:{web_port}/oidc/callback/",
        "DEVIDP_POST_LOGOUT_REDIRECT_URIS": f"http://127.0.0.1:{web_port}/",
    }
    env.pop("DEVIDP_DEMO_PASSWORD", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def run_devidp(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "devidp", *args], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def devidp(idp_env, log_dir):
    """The dev IdP for this module: users changed here must not leak into other test files."""
    run_devidp(idp_env, "setup")
    issuer = idp_env["DEVIDP_ISSUER"]
    port = issuer.split(":")[2].split("/")[0]
    process = Process(
        "devidp-sso-logins",
        [sys.executable, "-m", "devidp", "serve", "--host", "127.0.0.1", "--port", port],
        idp_env,
        log_dir,
    )
    try:
        wait_for_http(f"{issuer}/.well-known/openid-configuration", process.popen, process.log)
        yield issuer
    finally:
        process.stop()


@pytest.fixture
def idp(idp_env, devidp):
    """`idp("alice", "--no-groups")`: change a user at the running IdP; seeded values come back after the test."""
    touched: set[str] = set()

    def change(username: str, *options: str) -> str:
        touched.add(username)
        return run_devidp(idp_env, "demo_user", username, *options)

    yield change
    if touched:
        run_devidp(idp_env, "demo_user", *sorted(touched), "--reset")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def make_request(title: str, *, users: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> ApprovalRequest:
    body = {
        "taskToken": "AAAAKgAAAAIAAAAAAAAAAW" + uuid.uuid4().hex * 8,
        "title": title,
        "requester": "requester@example.com",
        "approvers": {"users": list(users), "groups": list(groups)},
    }
    request, created = services.approval_request_ingest(
        message=parse_message(json.dumps(body)), sqs_message_id=uuid.uuid4().hex
    )
    assert created
    return request


def inbox_ids(browser: requests.Session, portal_url: str) -> set[str]:
    page = browser.get(f"{portal_url}/", timeout=15)
    assert page.status_code == 200 and page.url == f"{portal_url}/", page.url
    return set(re.findall(r'href="/requests/([0-9a-f-]{36})/"', page.text))


def post_decision(browser: requests.Session, portal_url: str, request: ApprovalRequest, **kwargs):
    url = f"{portal_url}/requests/{request.public_id}/decide/"
    return browser.post(
        url,
        data={"csrfmiddlewaretoken": browser.cookies["portal_csrftoken"], "decision": "approve", "comment": ""},
        headers={"Referer": f"{portal_url}/requests/{request.public_id}/"},
        timeout=15,
        **kwargs,
    )


def portal_user(email: str) -> User:
    return User.objects.get(email=email)


def sso_groups(user: User) -> set[str]:
    """The user's groups that come from the IdP (not the portal's own permission group)."""
    return set(user.groups.values_list("name", flat=True)) - {APPROVER_ACCESS_GROUP}


def assert_no_admin_powers(browser: requests.Session, portal_url: str, email: str, hidden_title: str = "") -> None:
    """Whatever the approvers' admin shows (ADMIN_APPROVER_ACCESS), only an SSO admin manages users."""
    assert browser.get(f"{portal_url}/admin/approvals/user/", timeout=15).status_code == 403
    assert not portal_user(email).is_superuser
    if hidden_title:
        listing = browser.get(f"{portal_url}/admin/approvals/approvalrequest/", timeout=15)
        assert hidden_title not in listing.text


def went_through(response: requests.Response, fragment: str) -> bool:
    return any(fragment in r.headers.get("Location", "") for r in response.history)


# ---------------------------------------------------------------------------
# The demo roles
# ---------------------------------------------------------------------------
def test_each_demo_role_gets_what_its_idp_groups_grant(portal_stack, devidp):
    url = portal_stack["url"]
    finance = make_request("Finance: order 1234", groups=("finance-approvers",))

    alice = sso_login(url, "alice")
    assert inbox_ids(alice, url) == {str(finance.public_id)}
    detail = alice.get(f"{url}/requests/{finance.public_id}/", timeout=15)
    assert 'name="decision"' in detail.text  # she may decide it
    user = portal_user("alice@example.com")
    assert user.oidc_issuer == devidp and user.oidc_sub
    assert sso_groups(user) == {"finance-approvers"}
    assert_no_admin_powers(alice, url, "alice@example.com")

    bob = sso_login(url, "bob")
    assert inbox_ids(bob, url) == set()
    assert bob.get(f"{url}/requests/{finance.public_id}/", timeout=15).status_code == 404
    assert_no_admin_powers(bob, url, "bob@example.com", hidden_title=finance.title)

    carol = sso_login(url, "carol")
    admin = carol.get(f"{url}/admin/", timeout=15)
    assert admin.status_code == 200 and admin.url == f"{url}/admin/"
    assert carol.get(f"{url}/admin/approvals/user/", timeout=15).status_code == 200
    assert finance.title in carol.get(f"{url}/admin/approvals/approvalrequest/", timeout=15).text
    assert portal_user("carol@example.com").is_superuser

    dave = sso_login(url, "dave")
    assert inbox_ids(dave, url) == set()
    assert post_decision(dave, url, finance).status_code == 404  # like the GET: not his to see
    assert_no_admin_powers(dave, url, "dave@example.com", hidden_title=finance.title)
    finance.refresh_from_db()
    assert finance.status == RequestStatus.PENDING


# ---------------------------------------------------------------------------
# Changes at the IdP
# ---------------------------------------------------------------------------
def test_a_group_granted_at_the_idp_after_the_first_sign_in_counts_from_the_next_sign_in(portal_stack, idp):
    url = portal_stack["url"]
    finance = make_request("Finance: order 2000", groups=("finance-approvers",))
    first = sso_login(url, "dave")
    assert inbox_ids(first, url) == set()
    dave_pk = portal_user("dave@example.com").pk

    idp("dave", "--groups", "finance-approvers")
    again = sso_login(url, "dave")

    assert inbox_ids(again, url) == {str(finance.public_id)}
    dave = portal_user("dave@example.com")
    assert dave.pk == dave_pk
    assert sso_groups(dave) == {"finance-approvers"}


def test_an_email_changed_at_the_idp_follows_the_same_portal_user_and_brings_its_requests(portal_stack, idp):
    url = portal_stack["url"]
    old = make_request("For bob@example.com", users=("bob@example.com",))
    new = make_request("For bob.renamed@example.com", users=("bob.renamed@example.com",))
    before = sso_login(url, "bob")
    assert inbox_ids(before, url) == {str(old.public_id)}
    bob = portal_user("bob@example.com")

    idp("bob", "--email", "bob.renamed@example.com")
    after = sso_login(url, "bob")

    assert inbox_ids(after, url) == {str(new.public_id)}
    bob.refresh_from_db()
    assert bob.email == "bob.renamed@example.com"
    assert User.objects.filter(oidc_sub=bob.oidc_sub).count() == 1


@pytest.mark.portal_env(OIDC_SESSION_REFRESH_SECONDS=str(REFRESH_SECONDS))
def test_removal_from_the_approver_group_at_the_idp_takes_the_decision_away_at_the_next_refresh(portal_stack, idp):
    url = portal_stack["url"]
    finance = make_request("Finance: order 3000", groups=("finance-approvers",))
    alice = sso_login(url, "alice")
    assert inbox_ids(alice, url) == {str(finance.public_id)}

    idp("alice", "--no-groups")
    time.sleep(REFRESH_SECONDS + 0.5)
    inbox = alice.get(f"{url}/", timeout=15)

    assert went_through(inbox, "prompt=none")  # the portal asked the IdP again, silently
    assert inbox.url == f"{url}/"  # and she is still signed in
    assert str(finance.public_id) not in inbox.text
    assert sso_groups(portal_user("alice@example.com")) == set()
    decision = post_decision(alice, url, finance, allow_redirects=False)
    if decision.status_code == 303:  # the window ran out again: back to a GET page, which re-checks
        decision = alice.get(decision.headers["Location"], timeout=15)
        assert decision.status_code in {403, 404}
    else:
        assert decision.status_code == 404  # no longer hers to see: the POST answers like the GET
    finance.refresh_from_db()
    assert finance.status == RequestStatus.PENDING


@pytest.mark.portal_env(OIDC_SESSION_REFRESH_SECONDS=str(REFRESH_SECONDS))
def test_a_user_disabled_at_the_idp_is_signed_out_at_the_next_refresh(portal_stack, idp):
    url = portal_stack["url"]
    dave = sso_login(url, "dave")

    idp("dave", "--inactive")
    time.sleep(REFRESH_SECONDS + 0.5)
    page = dave.get(f"{url}/", timeout=15)

    assert went_through(page, "prompt=none")
    assert went_through(page, "error=login_required")  # the IdP no longer knows him
    assert page.url.startswith(f"{url}/signin/")
    assert dave.get(f"{url}/", allow_redirects=False, timeout=15).headers["Location"].startswith("/signin/")
    # Nor can he sign in again.
    login_page = dave.get(f"{url}/oidc/authenticate/?next=/", timeout=15)
    assert "/accounts/login/" in login_page.url
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
    refused = dave.post(
        login_page.url,
        data={"csrfmiddlewaretoken": csrf, "username": "dave", "password": demo_passwords()["dave"]},
        headers={"Referer": login_page.url},
        timeout=15,
    )
    assert "/accounts/login/" in refused.url
    assert "Invalid username or password" in refused.text


# ---------------------------------------------------------------------------
# Signing out
# ---------------------------------------------------------------------------
def test_signing_out_takes_a_csrf_post_and_ends_the_portal_session_and_the_idp_session(portal_stack, devidp):
    url = portal_stack["url"]
    carol = sso_login(url, "carol")
    # Control: while the IdP session lives, a new portal sign-in needs no password.
    silent = carol.get(f"{url}/oidc/authenticate/?next=/", timeout=15)
    assert silent.url == f"{url}/"
    assert not any("/accounts/login/" in r.url for r in silent.history)
    # Signing out is a POST with CSRF: a GET or a forged POST leaves her signed in.
    assert carol.get(f"{url}/oidc/logout/", allow_redirects=False, timeout=15).status_code == 405
    forged = carol.post(f"{url}/oidc/logout/", headers={"Referer": f"{url}/"}, allow_redirects=False, timeout=15)
    assert forged.status_code == 403
    assert carol.get(f"{url}/", allow_redirects=False, timeout=15).status_code == 200

    out = carol.post(
        f"{url}/oidc/logout/",
        data={"csrfmiddlewaretoken": carol.cookies["portal_csrftoken"]},
        headers={"Referer": f"{url}/"},
        timeout=15,
    )

    assert out.history[0].headers["Location"].startswith(f"{devidp}/logout/?")  # RP-initiated logout
    assert out.url.startswith(f"{url}/signin/")  # back at the portal, signed out
    assert carol.get(f"{url}/", allow_redirects=False, timeout=15).headers["Location"].startswith("/signin/")
    again = carol.get(f"{url}/oidc/authenticate/?next=/", timeout=15)
    assert "/accounts/login/" in again.url  # the IdP asks for the password again
