"""SCIM 2.0 provisioning (docs/scim.md): tokens, Users and Groups, and attacks on each.

Real PostgreSQL; the SCIM endpoints are called through Django's test client with a real bearer
token made by the admin's service.
"""

import json

import pytest
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from approvals.models import AuditEvent, ScimGroup, ScimToken, ScimUser, User
from approvals.roles import APPROVER_ACCESS_GROUP
from approvals.services.scim_tokens import scim_token_create, scim_token_revoke, scim_token_rotate
from tests.support import make_user, signed_in

pytestmark = pytest.mark.django_db

ISSUER = "https://idp.test"
SCIM = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def admin_user(db):
    return make_user("root", admin=True)


@pytest.fixture
def token(admin_user):
    return scim_token_create(actor=admin_user, name="okta", issuer=ISSUER)[1]


class Scim:
    def __init__(self, client, secret):
        self.client, self.secret = client, secret

    def call(self, method, path, body=None, secret=None, raw=None):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {secret or self.secret}"} if (secret or self.secret) else {}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs = {"content_type": SCIM} if data is not None else {}
        if data is not None:
            kwargs["data"] = data
        return getattr(self.client, method.lower())(f"/scim/v2/{path}", **kwargs, **headers)


@pytest.fixture
def scim(client, token):
    return Scim(client, token)


def user_body(user_name="alice@example.com", external_id="okta-alice", email=None, **extra):
    return {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "externalId": external_id,
        "name": {"givenName": "Alice", "familyName": "Approver"},
        "emails": [{"value": email or user_name, "type": "work", "primary": True}],
        "active": True,
        **extra,
    }


def provision(scim, **kwargs):
    response = scim.call("POST", "Users", user_body(**kwargs))
    assert response.status_code == 201, response.content
    return response.json()


# --- Tokens --------------------------------------------------------------------------------------


def refusals():
    return list(AuditEvent.objects.filter(action="scim_auth_refused").values_list("data", flat=True))


def test_a_request_without_a_token_is_401_and_audited(scim):
    response = scim.client.get("/scim/v2/Users")
    assert response.status_code == 401
    assert response.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert [r["reason"] for r in refusals()] == ["missing"]


def test_a_wrong_token_is_401_and_audited_without_the_token(scim):
    response = scim.call("GET", "Users", secret="scim_guessed-token-value")
    assert response.status_code == 401
    assert [r["reason"] for r in refusals()] == ["unknown"]
    assert "guessed" not in json.dumps(refusals())


def test_a_flood_of_refused_requests_is_one_audit_row_per_window_which_counts_the_rest(scim):
    from django.core.cache import cache

    for _ in range(30):
        assert scim.call("GET", "Users", secret="scim_guessed-token-value").status_code == 401
    assert scim.client.get("/scim/v2/Users").status_code == 401
    assert sorted(r["reason"] for r in refusals()) == ["missing", "unknown"]

    cache.delete("scim-refused:unknown:127.0.0.1::window")  # the window passed
    assert scim.call("GET", "Users", secret="scim_another-guess").status_code == 401
    latest = AuditEvent.objects.filter(action="scim_auth_refused").latest("id").data
    assert latest["reason"] == "unknown" and latest["repeats_before"] == 29


def test_a_revoked_token_is_401_and_audited_with_its_name(scim, admin_user):
    token = ScimToken.objects.get()
    assert scim.call("GET", "Users").status_code == 200
    assert scim_token_revoke(actor=admin_user, token_id=token.pk)
    response = scim.call("GET", "Users")
    assert response.status_code == 401
    (refusal,) = refusals()
    assert refusal["reason"] == "revoked" and refusal["name"] == "okta"
    assert scim.secret not in json.dumps(list(AuditEvent.objects.values_list("data", flat=True)))


def test_a_token_another_admin_rotated_away_is_401_and_audited_and_the_new_one_works(scim, admin_user):
    other_admin = make_user("root2", admin=True)
    old = ScimToken.objects.get()
    new, new_secret = scim_token_rotate(actor=other_admin, token_id=old.pk)
    response = scim.call("GET", "Users")
    assert response.status_code == 401
    (refusal,) = refusals()
    assert refusal["reason"] == "rotated" and refusal["replaced_by"] == new.pk
    assert scim.call("GET", "Users", secret=new_secret).status_code == 200
    rotated = AuditEvent.objects.get(action="scim_token_rotated")
    assert rotated.actor == other_admin and new_secret not in json.dumps(rotated.data)


def test_tokens_are_stored_hashed_and_only_admins_make_them(admin_user):
    token, secret = scim_token_create(actor=admin_user, name="entra", issuer=ISSUER)
    assert secret not in json.dumps(list(ScimToken.objects.values()), default=str)
    from approvals.services.common import ApprovalError

    with pytest.raises(ApprovalError):
        scim_token_create(actor=make_user("mallory"), name="mine", issuer=ISSUER)


# --- Users ----------------------------------------------------------------------------------------


def test_a_provisioned_user_is_the_account_sso_signs_in_to(scim):
    body = provision(scim)
    user = User.objects.get(oidc_issuer=ISSUER, oidc_sub="okta-alice")
    assert user.email == "alice@example.com" and user.last_login is None
    assert body["id"] == str(user.scim.scim_id) and body["active"] is True
    assert not user.is_staff and not user.is_superuser


def test_an_sso_user_is_linked_by_issuer_and_subject_not_duplicated(scim):
    existing = make_user("alice", sub="okta-alice")
    provision(scim)
    assert User.objects.filter(email="alice@example.com").count() == 1
    assert ScimUser.objects.get().user == existing


def test_an_email_collision_with_another_identity_is_409_and_not_merged(scim):
    existing = make_user("alice", sub="sso-only-alice")
    response = scim.call("POST", "Users", user_body(external_id="someone-else"))
    assert response.status_code == 409 and response.json()["scimType"] == "uniqueness"
    existing.refresh_from_db()
    assert existing.oidc_sub == "sso-only-alice" and not ScimUser.objects.exists()


def test_a_scim_body_cannot_make_anyone_staff_superuser_or_a_portal_permission_group_member(scim):
    body = user_body(
        is_staff=True,
        is_superuser=True,
        roles=[{"value": "admin"}],
        groups=[{"value": "portal-admins"}],
        **{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "x"}}},
    )
    assert scim.call("POST", "Users", body).status_code == 201
    user = User.objects.get(oidc_sub="okta-alice")
    assert not user.is_staff and not user.is_superuser and not user.groups.exists()
    response = scim.call("POST", "Groups", {"schemas": [GROUP_SCHEMA], "displayName": APPROVER_ACCESS_GROUP})
    assert response.status_code == 400


def test_changing_the_external_id_never_moves_the_sso_link_to_another_identity(scim):
    victim = make_user("victim", sub="victim-sub")
    body = provision(scim)
    response = scim.call(
        "PATCH",
        f"Users/{body['id']}",
        {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "externalId", "value": "victim-sub"}]},
    )
    assert response.status_code == 200
    assert User.objects.get(pk=ScimUser.objects.get().user_id).oidc_sub == "okta-alice"
    victim.refresh_from_db()
    assert victim.is_active and victim.oidc_sub == "victim-sub"


def test_an_sso_only_user_is_not_reachable_by_scim_and_another_issuers_token_sees_nothing(scim, admin_user):
    provision(scim)
    other = scim_token_create(actor=admin_user, name="other idp", issuer="https://other.test")[1]
    listed = scim.call("GET", "Users", secret=other).json()
    assert listed["totalResults"] == 0
    scim_id = ScimUser.objects.get().scim_id
    assert scim.call("DELETE", f"Users/{scim_id}", secret=other).status_code == 404
    assert User.objects.get(oidc_sub="okta-alice").is_active


def test_filters_find_users_by_user_name_and_external_id(scim):
    provision(scim)
    provision(scim, user_name="carol@example.com", external_id="okta-carol")
    for query in ('userName eq "ALICE@example.com"', 'externalId eq "okta-alice"'):
        found = scim.call("GET", f"Users?filter={query}").json()
        assert [r["userName"] for r in found["Resources"]] == ["alice@example.com"], query
    response = scim.call("GET", 'Users?filter=userName co "a"')
    assert response.status_code == 400 and response.json()["scimType"] == "invalidFilter"


# --- Hostile input -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
user_like = st.fixed_dictionaries(
    {},
    optional={
        "schemas": st.just([USER_SCHEMA]) | json_values,
        "userName": st.text(max_size=300) | json_values,
        "externalId": st.text(max_size=300) | json_values,
        "name": json_values,
        "emails": json_values | st.lists(st.fixed_dictionaries({"value": st.emails() | json_values}), max_size=3),
        "active": json_values,
        "displayName": json_values,
    },
)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=user_like | json_values, path=st.sampled_from(["Users", "Groups"]))
def test_any_post_body_is_created_or_refused_with_a_scim_error_never_a_crash(scim, body, path):
    response = scim.call("POST", path, raw=json.dumps(body))
    assert response.status_code in {201, 400, 409}, response.content
    if response.status_code != 201:
        error = response.json()
        assert error["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and error["detail"]


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["Users", "Groups"]),
    query=st.text(max_size=80) | st.from_regex(r'(userName|externalId|displayName|id) eq "[^"]{0,20}"', fullmatch=True),
    attributes=st.none() | st.text(max_size=40),
    start=st.none() | st.integers(min_value=-(2**70), max_value=2**70).map(str) | st.text(max_size=8),
    count=st.none() | st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
def test_any_query_answers_200_or_a_400_scim_error(scim, path, query, attributes, start, count):
    params = {"filter": query, "attributes": attributes, "startIndex": start, "count": count}
    response = scim.client.get(
        f"/scim/v2/{path}",
        {key: value for key, value in params.items() if value is not None},
        HTTP_AUTHORIZATION=f"Bearer {scim.secret}",
    )
    assert response.status_code in {200, 400}, response.content
    if response.status_code == 400:
        assert response.json()["scimType"] in {"invalidFilter", "invalidValue"}
    else:
        assert response.json()["totalResults"] >= 0


patch_operation = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "remove", "replace", "Replace"]),
        "path": st.text(max_size=40) | json_values,
        "value": json_values,
    }
)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=json_values | st.lists(json_values | patch_operation, max_size=4))
def test_any_patch_leaves_a_good_user_intact_or_is_refused(scim, operations):
    if not ScimUser.objects.exists():
        provision(scim)
    scim_user = ScimUser.objects.get()
    response = scim.call("PATCH", f"Users/{scim_user.scim_id}", {"schemas": [PATCH_SCHEMA], "Operations": operations})
    assert response.status_code in {200, 400, 409}, response.content
    user = User.objects.get(pk=scim_user.user_id)
    assert user.oidc_sub == "okta-alice" and not user.is_staff and not user.is_superuser
    if response.status_code == 200:
        assert response.json()["userName"]


# --- Groups ------------------------------------------------------------------------------------


def test_a_group_with_members_who_never_signed_in_is_the_group_assignments_name(scim):
    alice = provision(scim)
    carol = provision(scim, user_name="carol@example.com", external_id="okta-carol")
    response = scim.call(
        "POST",
        "Groups",
        {
            "schemas": [GROUP_SCHEMA],
            "displayName": "finance-approvers",
            "members": [{"value": alice["id"]}, {"value": carol["id"]}],
        },
    )
    assert response.status_code == 201, response.content
    group = Group.objects.get(name="finance-approvers")
    assert sorted(group.user_set.values_list("email", flat=True)) == ["alice@example.com", "carol@example.com"]
    removed = scim.call(
        "PATCH",
        f"Groups/{response.json()['id']}",
        {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "remove", "path": f'members[value eq "{carol["id"]}"]'}]},
    )
    assert removed.status_code == 200
    assert list(group.user_set.values_list("email", flat=True)) == ["alice@example.com"]


def test_a_scim_group_keeps_scims_membership_when_an_id_token_says_otherwise(scim, settings):
    from approvals.auth import PortalOIDCBackend

    settings.OIDC_OP_ISSUER = ISSUER
    alice = provision(scim)
    scim.call("POST", "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "finance-approvers", "members": []})
    scim.call(
        "POST", "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "payments", "members": [{"value": alice["id"]}]}
    )
    user = User.objects.get(oidc_sub="okta-alice")
    claims = {
        "iss": ISSUER,
        "sub": "okta-alice",
        "email": "alice@example.com",
        "groups": ["finance-approvers", "sso-only"],
    }
    PortalOIDCBackend().update_user(user, claims)
    assert sorted(user.groups.exclude(name=APPROVER_ACCESS_GROUP).values_list("name", flat=True)) == [
        "payments",
        "sso-only",
    ]


# --- Deprovisioning ------------------------------------------------------------------------------


def test_active_false_deactivates_ends_every_session_and_the_next_request_is_anonymous(scim):
    body = provision(scim)
    user = User.objects.get(oidc_sub="okta-alice")
    browsers = [signed_in(user), signed_in(user)]
    bystander = make_user("dave")
    signed_in(bystander)
    response = scim.call(
        "PATCH",
        f"Users/{body['id']}",
        {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": "False"}}]},
    )
    assert response.status_code == 200 and response.json()["active"] is False
    user.refresh_from_db()
    assert not user.is_active
    remaining = [s.get_decoded().get("_auth_user_id") for s in Session.objects.all()]
    assert remaining == [str(bystander.pk)]
    for browser in browsers:
        assert browser.get("/").status_code == 302  # to the sign-in page
    event = AuditEvent.objects.get(action="scim_user_deactivated")
    assert event.data["sessions_ended"] == 2


def test_a_session_the_store_kept_is_anonymous_once_the_account_is_inactive(scim):
    user = make_user("alice")
    browser = signed_in(user)
    User.objects.filter(pk=user.pk).update(is_active=False)  # e.g. deactivated by an admin
    assert browser.get("/").status_code == 302


def test_delete_deactivates_keeps_the_account_and_get_is_404(scim):
    body = provision(scim)
    assert scim.call("DELETE", f"Users/{body['id']}").status_code == 204
    assert scim.call("GET", f"Users/{body['id']}").status_code == 404
    user = User.objects.get(oidc_sub="okta-alice")
    assert not user.is_active
    again = provision(scim)
    assert again["id"] != body["id"]
    user.refresh_from_db()
    assert user.is_active and User.objects.filter(oidc_sub="okta-alice").count() == 1


def test_a_group_the_idp_takes_over_keeps_only_the_members_scim_names(scim):
    sso_only = make_user("dave", "finance-approvers")  # put there by the groups claim at sign-in
    alice = provision(scim)
    response = scim.call(
        "POST",
        "Groups",
        {"schemas": [GROUP_SCHEMA], "displayName": "finance-approvers", "members": [{"value": alice["id"]}]},
    )
    assert response.status_code == 201
    group = Group.objects.get(name="finance-approvers")
    assert list(group.user_set.values_list("email", flat=True)) == ["alice@example.com"]
    assert sso_only.is_active  # they only left the group
    assert AuditEvent.objects.get(action="scim_group_created").data["adopted"] is True


def test_entra_ids_oid_claim_keys_accounts_so_sso_finds_the_provisioned_account(scim, settings):
    from approvals.auth import PortalOIDCBackend

    settings.OIDC_SUBJECT_CLAIM = "oid"
    provision(scim, external_id="6f1c-oid-of-alice")
    claims = {
        "iss": ISSUER,
        "sub": "pairwise-per-app",
        "oid": "6f1c-oid-of-alice",
        "email": "alice@example.com",
        "email_verified": True,
    }
    backend = PortalOIDCBackend()
    assert backend.verify_claims(claims)
    (found,) = backend.filter_users_by_claims(claims)
    assert found.scim.user_name == "alice@example.com"
    assert not backend.verify_claims({**claims, "oid": ""})


def test_the_admin_shows_a_new_token_once_never_stores_it_and_rotates_through_the_service(admin_user):
    browser = signed_in(admin_user)
    page = browser.get("/admin/approvals/scimtoken/add/")
    assert page.status_code == 200
    csrf = browser.cookies["portal_csrftoken"].value
    created = browser.post(
        "/admin/approvals/scimtoken/add/",
        {"name": "entra", "issuer": ISSUER, "subject_attribute": "externalId", "csrfmiddlewaretoken": csrf},
    )
    assert created.status_code == 200, created.content[:500]
    assert "no-store" in created["Cache-Control"]
    token = ScimToken.objects.get(name="entra")
    secret = created.content.decode().split("<code>")[1].split("</code>")[0]
    assert secret.startswith(token.prefix) and secret not in json.dumps(list(ScimToken.objects.values()), default=str)
    assert secret not in browser.get(f"/admin/approvals/scimtoken/{token.pk}/change/").content.decode()
    assert secret not in browser.get("/admin/approvals/scimtoken/").content.decode()
    assert AuditEvent.objects.filter(action="scim_token_created", actor=admin_user).exists()

    rotated = browser.post(
        "/admin/approvals/scimtoken/",
        {"action": "rotate_tokens", "_selected_action": [token.pk], "csrfmiddlewaretoken": csrf},
    )
    assert rotated.status_code == 200 and "<code>scim_" in rotated.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None and token.replaced_by is not None


def test_staff_who_are_not_admins_cannot_see_or_make_scim_tokens(admin_user):
    approver = make_user("alice")
    approver.is_staff = True
    approver.save()
    browser = signed_in(approver)
    assert browser.get("/admin/approvals/scimtoken/").status_code == 403
    assert browser.get("/admin/approvals/scimtoken/add/").status_code == 403


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    operations=st.lists(
        json_values | patch_operation | st.builds(lambda v: {"op": "add", "path": "members", "value": v}, json_values),
        max_size=4,
    )
)
def test_any_group_patch_keeps_the_group_or_is_refused(scim, operations):
    if not ScimUser.objects.exists():
        member = provision(scim)
        scim.call(
            "POST",
            "Groups",
            {"schemas": [GROUP_SCHEMA], "displayName": "finance-approvers", "members": [{"value": member["id"]}]},
        )
    scim_group = ScimGroup.objects.get()
    response = scim.call("PATCH", f"Groups/{scim_group.scim_id}", {"schemas": [PATCH_SCHEMA], "Operations": operations})
    assert response.status_code in {200, 400, 409}, response.content
    scim_group.refresh_from_db()
    assert scim_group.group.name and scim_group.group.name != APPROVER_ACCESS_GROUP
    if response.status_code == 200:
        assert response.json()["displayName"] == scim_group.group.name


def test_linking_an_account_an_admin_disabled_reactivates_it_only_visibly(scim):
    existing = make_user("alice", sub="okta-alice")
    User.objects.filter(pk=existing.pk).update(is_active=False)
    provision(scim)
    existing.refresh_from_db()
    assert existing.is_active
    assert AuditEvent.objects.filter(action="scim_user_reactivated", data__user_id=existing.pk).exists()


def test_linking_an_active_sso_account_as_inactive_deprovisions_it(scim):
    existing = make_user("alice", sub="okta-alice")
    browser = signed_in(existing)
    provision(scim, active=False)
    existing.refresh_from_db()
    assert not existing.is_active and browser.get("/").status_code == 302
    assert AuditEvent.objects.filter(action="scim_user_deactivated", data__user_id=existing.pk).exists()


def test_a_put_that_leaves_out_active_does_not_reactivate_a_deprovisioned_account(scim):
    body = provision(scim, active=False)
    replaced = user_body(displayName="Alice A.")
    del replaced["active"]
    response = scim.call("PUT", f"Users/{body['id']}", replaced)
    assert response.status_code == 200 and response.json()["active"] is False
    assert not User.objects.get(oidc_sub="okta-alice").is_active


def test_listing_groups_without_members_reads_no_members(scim, django_assert_max_num_queries):
    alice = provision(scim)
    for index in range(5):
        body = {"schemas": [GROUP_SCHEMA], "displayName": f"group-{index}", "members": [{"value": alice["id"]}]}
        assert scim.call("POST", "Groups", body).status_code == 201
    with django_assert_max_num_queries(8):
        listed = scim.call("GET", 'Groups?excludedAttributes=members&filter=displayName eq "group-3"').json()
    assert [group["displayName"] for group in listed["Resources"]] == ["group-3"]
    assert "members" not in listed["Resources"][0]
    full = scim.call("GET", "Groups").json()
    assert all(
        group["members"] == [{"value": alice["id"], "$ref": alice["meta"]["location"]}] for group in full["Resources"]
    )


@pytest.mark.parametrize("size", [2 * 1024 * 1024 + 1, 3 * 1024 * 1024])
def test_a_body_past_the_limit_is_a_scim_413_at_any_size(scim, size):
    # Past Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) reading the body raised, and SCIM
    # clients got Django's HTML "Bad Request (400)" page instead of the tooLarge error.
    response = scim.call("post", "Users", raw=json.dumps(user_body(nickName="x" * size)))
    assert response.status_code == 413
    assert response.json()["scimType"] == "tooLarge"
