"""Users: kept in step with the IdP at every sign-in."""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group

from approvals.admin.base import CraftedRequestsMixin
from approvals.models import (
    User,
)


# ---------------------------------------------------------------------------
# Users: kept in step with the IdP at every sign-in
# ---------------------------------------------------------------------------
@admin.register(User)
class PortalUserAdmin(CraftedRequestsMixin, UserAdmin):
    list_display = ["email", "first_name", "last_name", "is_staff", "is_superuser", "oidc_issuer", "last_login"]
    search_fields = ["email", "first_name", "last_name", "oidc_sub"]
    # Email and groups are the IdP's (sign-in, SCIM): assignments and four eyes name people by them.
    # An admin who could edit them could take an approver's email or join an assigned group (or
    # shed a requester's email) and decide, unaudited and past the self-assignment refusal.
    readonly_fields = ["email", "groups", "oidc_issuer", "oidc_sub", "last_login", "sso_verified_at", "date_joined"]
    fieldsets = [
        (None, {"fields": ["username", "email", "first_name", "last_name"]}),
        ("SSO", {"fields": ["oidc_issuer", "oidc_sub"]}),
        ("Access (from SSO groups)", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        ("Dates", {"fields": ["last_login", "sso_verified_at", "date_joined"]}),
    ]


# Django's own admin of permission groups, with the portal's answers to hand-made URLs and POSTs.
admin.site.unregister(Group)


@admin.register(Group)
class PortalGroupAdmin(CraftedRequestsMixin, GroupAdmin):
    pass
