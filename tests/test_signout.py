"""Signing out: where it lands, and that the IdP session ends even when the hint is stale."""

import re

from django.test import Client

from tests.support import make_user, signed_in, sso_login


def csrf_post(client, path: str):
    client.get("/")  # sets the CSRF cookie
    return client.post(path, {"csrfmiddlewaretoken": client.cookies["portal_csrftoken"].value}, follow=True)


def test_without_an_end_session_endpoint_signing_out_lands_on_the_sign_in_page_saying_so(db, settings):
    settings.OIDC_OP_LOGOUT_ENDPOINT = ""
    alice = signed_in(make_user("alice"))

    page = csrf_post(alice, "/oidc/logout/")

    assert page.request["PATH_INFO"] == "/signin/"
    assert "You are signed out." in page.content.decode()
    assert alice.get("/").status_code == 302  # the portal session is over


def test_with_an_end_session_endpoint_signing_out_redirects_to_it_with_the_id_token_hint(db, settings):
    settings.OIDC_OP_LOGOUT_ENDPOINT = "https://idp.example.com/logout"
    alice = signed_in(make_user("alice"))
    session = alice.session
    session["oidc_id_token"] = "id-token-of-alice"
    session.save()
    alice.get("/")

    response = alice.post("/oidc/logout/", {"csrfmiddlewaretoken": alice.cookies["portal_csrftoken"].value})

    assert response.status_code == 302
    assert response["Location"].startswith("https://idp.example.com/logout?id_token_hint=id-token-of-alice&")
    # The IdP sends the browser to the registered post-logout URI; the sign-in page says it.
    assert "You are signed out." in alice.get("/", follow=True).content.decode()


def test_a_forged_or_anonymous_sign_out_says_nothing(db):
    alice = signed_in(make_user("alice"))
    forged = alice.post("/oidc/logout/")
    assert forged.status_code == 403
    assert "You are signed out." not in alice.get("/").content.decode()

    stranger = Client()  # no CSRF checks: the anonymous POST reaches the view
    page = stranger.post("/oidc/logout/", follow=True)
    assert page.request["PATH_INFO"] == "/signin/"
    assert "You are signed out." not in page.content.decode()


def sign_out(session, portal_url: str):
    return session.post(
        f"{portal_url}/oidc/logout/",
        data={"csrfmiddlewaretoken": session.cookies["portal_csrftoken"]},
        headers={"Referer": f"{portal_url}/"},
        timeout=15,
    )


def test_signing_out_in_a_second_browser_after_the_first_ends_that_browsers_idp_session_too(portal_stack, devidp):
    url = portal_stack["url"]
    laptop = sso_login(url, "carol")
    phone = sso_login(url, "carol")
    # Signing out on the laptop makes the IdP revoke carol's tokens, the phone's ID token too:
    # the phone's id_token_hint is stale from now on.
    assert sign_out(laptop, url).url.startswith(f"{url}/signin/")

    out = sign_out(phone, url)

    if "/logout/" in out.url:  # the IdP asks whether to sign out of it too (the hint is no proof)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', out.text).group(1)
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', out.text))
        out = phone.post(
            out.url.split("?")[0],
            data={**fields, "csrfmiddlewaretoken": csrf, "allow": "on"},
            headers={"Referer": out.url},
            timeout=15,
        )
    assert out.status_code == 200, out.text[:300]
    assert out.url.startswith(f"{url}/signin/"), out.url  # back at the portal, not an IdP error
    again = phone.get(f"{url}/oidc/authenticate/?next=/", timeout=15)
    assert "/accounts/login/" in again.url  # the IdP asks the phone for the password again


def test_the_admins_log_out_button_ends_the_idp_session_too(db, settings):
    settings.OIDC_OP_LOGOUT_ENDPOINT = "https://idp.example.com/logout"
    admin = signed_in(make_user("erin", admin=True))
    session = admin.session
    session["oidc_id_token"] = "id-token-of-erin"
    session.save()
    page = admin.get("/admin/")
    assert page.status_code == 200
    assert 'action="/admin/logout/"' in page.content.decode()

    response = admin.post("/admin/logout/", {"csrfmiddlewaretoken": admin.cookies["portal_csrftoken"].value})

    assert response.status_code == 302
    assert response["Location"].startswith("https://idp.example.com/logout?id_token_hint=id-token-of-erin&")
    assert admin.get("/admin/").status_code == 302  # the portal session is over too
