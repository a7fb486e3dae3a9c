"""The two admin roles, granted from SSO groups at every sign-in (approvals/auth.py).

- Admins (members of OIDC_ADMIN_GROUPS): staff and superusers — the whole admin.
- Approvers (every other active SSO user, while ADMIN_APPROVER_ACCESS is on): staff without
  superuser, and members of one Django group, APPROVER_ACCESS_GROUP, that holds exactly the
  permissions below. What they then see is narrowed to the requests they may decide or
  decided (selectors.admin_requests_for); the rule itself stays in approvals/permissions.py.

Permissions come from that group, never from editing a user by hand: the group is kept in
step with APPROVER_PERMISSIONS after every `migrate` (and after every test database flush).
"""

from django.db import DEFAULT_DB_ALIAS

# Not an SSO group: it never makes anyone an assignee, and an IdP claim with this name is ignored.
APPROVER_ACCESS_GROUP = "portal approver access"

# (app_label, codename): what the approver's admin needs, and nothing more.
APPROVER_PERMISSIONS = [
    ("approvals", "view_approvalrequest"),
    ("approvals", "decide_approvalrequest"),
]


def approver_access_group_sync(*, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """Create the approvers' permission group and set exactly APPROVER_PERMISSIONS on it.

    A post_migrate handler: Django creates permissions in post_migrate too, so this runs
    after `create_permissions` (registered first, by django.contrib.auth).
    """
    from django.contrib.auth.models import Group, Permission
    from django.db.models import Q

    match = Q(pk__in=[])
    for app_label, codename in APPROVER_PERMISSIONS:
        match |= Q(content_type__app_label=app_label, codename=codename)
    permissions = list(Permission.objects.using(using).filter(match))
    if len(permissions) != len(APPROVER_PERMISSIONS):
        return  # an app's permissions are not created yet; its own post_migrate comes later
    group, _ = Group.objects.using(using).get_or_create(name=APPROVER_ACCESS_GROUP)
    if set(group.permissions.all()) != set(permissions):
        group.permissions.set(permissions)
