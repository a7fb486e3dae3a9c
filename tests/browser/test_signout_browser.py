"""Signing out, and every other form whose answer goes by way of the IdP, in a real browser.

A page's CSP `form-action` also governs the redirects that follow a form's POST. The portal's
sign-out POST is answered with a redirect to the IdP's end-session endpoint, and a POST after
the sign-in window with a redirect back to the page, which re-checks with the IdP: both leave
the portal's origin. Only a real browser enforces that, so only a real browser tests it.
"""

import re
import time

import pytest
from django.contrib.sessions.backends.db import SessionStore

from devidp.seed import demo_passwords
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser


def sign_in_at_the_idp(page, portal_url: str, username: str) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_label("Username")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(demo_passwords()[username])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{portal_url}/")


def test_signing_out_ends_the_idp_session_so_the_next_person_can_sign_in_in_the_same_browser(
    portal_stack, devidp, new_page
):
    from playwright.sync_api import expect

    url = portal_stack["url"]
    page = new_page()
    blocked = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    sign_in(page, url, "alice")
    expect(page.locator(".who")).to_have_text("alice@example.com")

    page.get_by_role("button", name="Sign out").click()

    # Back at the portal, signed out: the IdP ended its session and sent the browser back.
    expect(page).to_have_url(re.compile(rf"^{re.escape(url)}/signin/"))
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    assert not blocked, blocked

    # "Sign in" asks the IdP, which now asks for credentials instead of signing alice back in.
    page.get_by_role("link", name="Sign in with company SSO").click()
    expect(page).to_have_url(re.compile(rf"^{re.escape(devidp.rsplit('/o', 1)[0])}/accounts/login/"))
    sign_in_at_the_idp(page, url, "bob")
    expect(page.locator(".who")).to_have_text("bob@example.com")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert not blocked, blocked


def test_a_form_sent_after_the_sign_in_window_is_rechecked_at_the_idp_and_lands_back_on_its_page(
    portal_stack, new_page
):
    from playwright.sync_api import expect

    url = portal_stack["url"]
    page = new_page()
    blocked = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    sign_in(page, url, "alice")
    page.get_by_role("link", name="Notifications").click()
    expect(page).to_have_url(f"{url}/preferences/")
    # The sign-in window is over (as after OIDC_SESSION_REFRESH_SECONDS): the portal's next
    # GET asks the IdP again (prompt=none), which answers at once while alice is signed in there.
    key = next(c["value"] for c in page.context.cookies() if c["name"] == "portal_sessionid")
    session = SessionStore(session_key=key)
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()

    page.get_by_role("button", name="Save").click()

    # The POST is answered with the page again (303), whose GET goes through the IdP and back.
    expect(page).to_have_url(f"{url}/preferences/")
    expect(page.get_by_role("heading", name="How you hear about approvals")).to_be_visible()
    key = next(c["value"] for c in page.context.cookies() if c["name"] == "portal_sessionid")
    assert SessionStore(session_key=key).get("oidc_id_token_expiration", 0) > time.time()  # re-checked
    assert not blocked, blocked
