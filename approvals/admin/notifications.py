"""The admin's view of notifications: every send, read-only, failures first to find.

Registered by approvals/admin/__init__.py. Nothing here writes a model: resending a failed
notification and editing someone's preferences go through approvals.services.notifications.
"""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from approvals.admin.base import ActionsOnlyMixin, BigTableChangeList, CraftedRequestsMixin
from approvals.models import Notification, NotificationPreference
from approvals.paginators import LargeTablePaginator
from approvals.services import notifications as services


@admin.register(Notification)
class NotificationAdmin(CraftedRequestsMixin, ActionsOnlyMixin, admin.ModelAdmin):
    # One row or more per request: counted like the other big tables (no full COUNT(*) over the
    # table; the page says "about"), and its order has an index (notification_created).
    paginator = LargeTablePaginator
    list_display = ["created_at", "kind", "channel", "recipient", "status", "attempts", "request_link", "short_error"]
    list_filter = ["status", "channel", "kind"]
    list_select_related = ["request"]
    search_fields = ["recipient", "=request__public_id"]
    ordering = ["-created_at", "-id"]
    sortable_by = ["created_at"]  # the one column with an index (notification_created)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    fields = [
        "request_link",
        "kind",
        "channel",
        "recipient",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "updated_at",
        "sent_at",
    ]
    readonly_fields = fields
    actions = ["resend_selected"]

    def get_changelist(self, request, **kwargs):
        return BigTableChangeList

    def has_resend_permission(self, request) -> bool:
        return request.user.has_perm("approvals.resend_notification")

    @admin.display(description="request")
    def request_link(self, obj: Notification) -> str:
        if obj.request_id is None:
            return "—"
        url = reverse("admin:approvals_approvalrequest_change", args=[obj.request_id])
        return format_html('<a href="{}">{}</a>', url, obj.request.title)

    @admin.display(description="last error")
    def short_error(self, obj: Notification) -> str:
        return obj.last_error[:80]

    @admin.action(description="Send the selected failed notifications again", permissions=["resend"])
    def resend_selected(self, request, queryset):
        ids = list(queryset.filter(status=Notification.Status.FAILED).values_list("pk", flat=True)[:500])
        sent = sum(services.notification_resend(notification_id=pk, actor=request.user) for pk in ids)
        self.message_user(request, f"Queued {sent} failed notifications again.", messages.SUCCESS)


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(CraftedRequestsMixin, admin.ModelAdmin):
    list_display = ["user", "email_enabled", "slack_enabled", "digest_enabled", "updated_at"]
    list_filter = ["email_enabled", "slack_enabled", "digest_enabled"]
    list_select_related = ["user"]
    search_fields = ["user__email"]
    autocomplete_fields = ["user"]
    fields = ["user", "email_enabled", "slack_enabled", "digest_enabled"]

    def get_readonly_fields(self, request, obj=None):
        return ["user"] if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        saved = services.notification_preference_update(
            user=obj.user,
            actor=request.user,
            email_enabled=obj.email_enabled,
            slack_enabled=obj.slack_enabled,
            digest_enabled=obj.digest_enabled,
        )
        obj.pk = saved.pk
