"""The Content-Security-Policy's `form-action`: the portal itself and the IdP, nothing wider."""

import re

import pytest
from django.conf import settings
from django.test import Client, override_settings
from hypothesis import given
from hypothesis import strategies as st

from portal.middleware import content_security_policy
from tests.support import make_user, signed_in

ORIGIN = re.compile(r"https?://[a-z0-9.\[\]:-]+")


def form_action(policy: str) -> list[str]:
    found = [d.split()[1:] for d in policy.split(";") if d.split() and d.split()[0] == "form-action"]
    assert len(found) == 1, policy
    return found[0]


def test_form_action_names_only_the_portal_and_the_idp_origin_on_every_page(db, settings):
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://login.example.com/realms/staff/protocol/openid-connect/auth"
    settings.OIDC_OP_LOGOUT_ENDPOINT = "https://login.example.com/realms/staff/protocol/openid-connect/logout"
    alice = signed_in(make_user("alice"))

    for response in (Client().get("/signin/"), alice.get("/"), alice.get("/preferences/")):
        assert form_action(response["Content-Security-Policy"]) == ["'self'", "https://login.example.com"]


def test_an_end_session_endpoint_on_another_host_is_allowed_too_and_ports_are_kept(settings):
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "http://127.0.0.1:9000/o/authorize/"
    settings.OIDC_OP_LOGOUT_ENDPOINT = "https://Logout.Example.com:8443/end?x=1#f"

    assert form_action(content_security_policy()) == [
        "'self'",
        "http://127.0.0.1:9000",
        "https://logout.example.com:8443",
    ]


def test_without_an_end_session_endpoint_only_the_authorization_endpoints_origin_is_added(settings):
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://idp.example.com/authorize"
    settings.OIDC_OP_LOGOUT_ENDPOINT = ""

    assert form_action(content_security_policy()) == ["'self'", "https://idp.example.com"]


def test_the_rest_of_the_policy_is_left_as_configured(settings):
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://idp.example.com/authorize"
    settings.OIDC_OP_LOGOUT_ENDPOINT = "https://idp.example.com/logout"
    policy = content_security_policy()

    assert policy.replace(" https://idp.example.com", "") == "; ".join(
        d.strip() for d in settings.CONTENT_SECURITY_POLICY.split(";")
    )
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_an_operators_form_action_none_stays_none(settings):
    settings.CONTENT_SECURITY_POLICY = "default-src 'self'; form-action 'none'"
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://idp.example.com/authorize"

    assert content_security_policy() == "default-src 'self'; form-action 'none'"


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://idp.example.com; script-src *",
        "https://idp.example.com 'unsafe-inline'/x",
        "javascript:alert(1)",
        "https://*.example.com/authorize",
        "https://user:pw@idp.example.com:99999/",
        "//idp.example.com/authorize",
        "",
    ],
)
def test_a_malformed_endpoint_adds_nothing_to_the_policy(settings, endpoint):
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = endpoint
    settings.OIDC_OP_LOGOUT_ENDPOINT = endpoint

    assert form_action(content_security_policy()) == ["'self'"]


URLISH = st.builds(
    "{}://{}{}".format,
    st.sampled_from(["https", "http", "HTTPS", "ftp", "javascript", ""]),
    st.text(max_size=30),
    st.text(max_size=20),
)


@given(authorization=st.one_of(URLISH, st.text(max_size=60)), logout=st.one_of(URLISH, st.text(max_size=60)))
def test_whatever_the_endpoints_say_form_action_gains_at_most_two_bare_origins(authorization, logout):
    configured = [d.strip() for d in settings.CONTENT_SECURITY_POLICY.split(";") if d.strip()]
    with override_settings(OIDC_OP_AUTHORIZATION_ENDPOINT=authorization, OIDC_OP_LOGOUT_ENDPOINT=logout):
        policy = content_security_policy()

    sources = form_action(policy)
    assert sources[0] == "'self'" and len(sources) <= 3
    assert all(ORIGIN.fullmatch(source) for source in sources[1:]), sources
    directives = policy.split("; ")
    assert len(directives) == len(configured)
    assert [d for d in directives if not d.startswith("form-action")] == [
        d for d in configured if not d.startswith("form-action")
    ]
