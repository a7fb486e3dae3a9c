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
    # is_active is the IdP's too: unticked here, it skipped deprovisioning (services/scim.py:
    # sessions ended, claims released, admins told); ticked, it undid the IdP's. Deactivate in
    # the IdP (SCIM), or let the account's next sign-in be refused there.
    readonly_fields = [
        *["email", "groups", "is_active"],
        *["oidc_issuer", "oidc_sub", "last_login", "sso_verified_at", "date_joined"],
    ]
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
    """Read-only: every group is the IdP's (SCIM or the groups claim) or the portal's own.

    Assignments name groups by name, so a rename here stranded a group's requests and left the
    old name to whoever took it next; a delete or a new group skipped SCIM's audit; permissions
    added to a group the claim fills were granted by the IdP's say. SCIM renames keep the
    requests (services/scim.py); the approvers' permission group is set in code (roles.py).
    """

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
