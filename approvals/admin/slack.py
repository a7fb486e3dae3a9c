"""The admin's view of Slack identities: who is linked to which account; unlinking is deleting.

Registered by approvals/admin/__init__.py. Links are made only by the account's owner (the bind page);
an admin can remove one (services.slack_identity_unbind, audited), e.g. for a Slack account
that was handed to someone else.
"""

from django.contrib import admin

from approvals.admin.base import ServiceWrittenAdmin
from approvals.models import SlackIdentity
from approvals.services import slack_identities


@admin.register(SlackIdentity)
class SlackIdentityAdmin(ServiceWrittenAdmin):
    list_display = ["slack_user_id", "team_id", "user", "bound_at"]
    list_select_related = ["user"]
    search_fields = ["slack_user_id", "user__email"]
    list_filter = ["team_id"]
    fields = ["slack_user_id", "team_id", "user", "bound_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def service_delete(self, request, pk):
        slack_identities.slack_identity_unbind(identity_id=pk, actor=request.user)
