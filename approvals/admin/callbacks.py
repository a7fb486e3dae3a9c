"""Callbacks (the outbox): where each decision stands with Step Functions; retry."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from approvals import delivery, services
from approvals.admin.base import ActionsOnlyMixin, BigTableAdmin, BulkAction, run_bulk
from approvals.models import (
    Callback,
)

# ---------------------------------------------------------------------------
# Callbacks (the outbox)
# ---------------------------------------------------------------------------
RETRY = BulkAction(
    name="retry_selected",
    title="Send the selected callbacks again",
    verb="Queued",
    run=lambda request, pk, data: services.callback_retry(callback_id=pk, actor=request.user),
    intro="Only failed callbacks are sent again, with a fresh set of attempts.",
)


@admin.register(Callback)
class CallbackAdmin(ActionsOnlyMixin, BigTableAdmin):
    list_display = ["request_link", "kind", "delivery_state", "attempts", "error_code", "next_attempt_at", "updated_at"]
    list_filter = ["status", "resolution", "kind"]
    list_select_related = ["request"]
    search_fields = ["=request__public_id"]
    ordering = ["-updated_at", "-id"]
    sortable_by = ["updated_at"]  # the one column with an index (callback_updated)
    fields = [
        "request_link",
        "kind",
        "status",
        "delivery_state",
        "resolution",
        "maybe_delivered",
        "attempts",
        "error_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
        "payload",
    ]
    readonly_fields = fields
    actions = ["retry_selected"]

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("approvals.retry_callback")

    @admin.display(description="delivery", ordering="status")
    def delivery_state(self, obj: Callback) -> str:
        return delivery.callback_label(obj)

    @admin.display(description="request")
    def request_link(self, obj: Callback) -> str:
        url = reverse("admin:approvals_approvalrequest_change", args=[obj.request_id])
        return format_html('<a href="{}">{}</a>', url, obj.request.title)

    def bulk_labels(self, request, ids: list[int]) -> dict[int, str]:
        titles = dict(Callback.objects.filter(pk__in=ids).values_list("pk", "request__title"))
        return {pk: f"callback #{pk} (“{titles.get(pk, '?')}”)" for pk in ids}

    @admin.action(description="Send the selected failed callbacks again", permissions=["retry"])
    def retry_selected(self, request, queryset):
        return run_bulk(self, request, queryset, RETRY)
