"""The SSO backend's claim mapping: identity by (issuer, sub), groups, admins from SSO."""

import pytest
from django.core.exceptions import SuspiciousOperation

from approvals import permissions, selectors, services
from approvals.auth import PortalOIDCBackend
from approvals.contract import parse_message
from approvals.models import User

pytestmark = pytest.mark.django_db

ISSUER = "https://idp.example.com"


def claims(**extra) -> dict:
    return {
        "iss": ISSUER,
        "sub": "248289761001",
        "email": "Alice@Example.com",
        "email_verified": True,
        "given_name": "Alice",
        "family_name": "Approver",
        "groups": ["finance-approvers"],
        **extra,
    }


def sign_in(backend: PortalOIDCBackend, user_claims: dict) -> User:
    """What mozilla-django-oidc's get_or_create_user does with verified claims."""
    assert backend.verify_claims(user_claims)
    users = backend.filter_users_by_claims(user_claims)
    if users:
        return backend.update_user(users[0], user_claims)
    return backend.create_user(user_claims)


@pytest.fixture
def backend():
    return PortalOIDCBackend()


def test_a_new_user_is_keyed_by_issuer_and_subject_with_email_name_and_groups(backend):
    user = sign_in(backend, claims())

    assert (user.oidc_issuer, user.oidc_sub) == (ISSUER, "248289761001")
    assert user.email == "alice@example.com"
    assert user.get_full_name() == "Alice Approver"
    assert permissions.user_group_names(user) == {"finance-approvers"}
    assert user.is_staff and not user.is_superuser  # an approver in the admin (approvals/roles.py)


def test_an_email_change_at_the_idp_follows_the_same_user(backend):
    first = sign_in(backend, claims())

    second = sign_in(backend, claims(email="alice.smith@example.com"))

    assert second.pk == first.pk
    assert User.objects.get(pk=first.pk).email == "alice.smith@example.com"
    assert User.objects.count() == 1


def test_the_same_subject_at_another_issuer_is_another_person(backend):
    first = sign_in(backend, claims())

    other = sign_in(backend, claims(iss="https://other-idp.example.com", email="alice@other.example.com"))

    assert other.pk != first.pk


def test_a_second_account_claiming_an_active_users_email_cannot_sign_in(backend):
    # Assignments are by email: a second subject with alice's email would inherit her requests.
    sign_in(backend, claims())

    with pytest.raises(SuspiciousOperation):
        sign_in(backend, claims(sub="someone-else"))

    assert User.objects.filter(email="alice@example.com").count() == 1


def test_an_email_outside_the_allowed_domains_is_refused(backend, settings):
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["corp.example.com"]

    assert not backend.verify_claims(claims())
    assert backend.verify_claims(claims(email="alice@corp.example.com"))


def test_a_missing_email_verified_claim_is_not_trusted_unless_configured(backend, settings):
    without = {k: v for k, v in claims().items() if k != "email_verified"}

    assert not backend.verify_claims(without)
    settings.OIDC_REQUIRE_VERIFIED_EMAIL = False
    assert backend.verify_claims(without)
    assert not backend.verify_claims(claims(email_verified=False))


def test_groups_are_mirrored_at_every_sign_in(backend):
    sign_in(backend, claims(groups=["finance-approvers", "legal"]))

    user = sign_in(backend, claims(groups=["legal"]))

    assert permissions.user_group_names(user) == {"legal"}


def test_the_sso_admin_group_grants_and_revokes_admin(backend):
    admin = sign_in(backend, claims(groups=["portal-admins"]))
    assert admin.is_staff and admin.is_superuser

    demoted = sign_in(backend, claims(groups=[]))

    assert not demoted.is_superuser


def test_groups_can_come_from_a_nested_claim(backend, settings):
    settings.OIDC_GROUPS_CLAIM = "realm_access.roles"

    user = sign_in(backend, claims(groups=None, realm_access={"roles": ["finance-approvers"]}))

    assert permissions.user_group_names(user) == {"finance-approvers"}


def test_an_unverified_or_missing_email_is_refused(backend):
    assert not backend.verify_claims(claims(email_verified=False))
    assert not backend.verify_claims(claims(email=""))


def test_an_approver_named_by_email_before_first_sign_in_sees_the_request(backend):
    body = '{"taskToken": "tok-3c1f0b9e", "title": "Early bird", "approvers": {"users": ["alice@example.com"]}}'
    services.approval_request_ingest(message=parse_message(body))

    user = sign_in(backend, claims())

    assert [r.title for r in selectors.inbox_for(user)] == ["Early bird"]
