"""The audit trail: nobody adds, changes or deletes an event — superusers included."""

import uuid

from django.contrib import admin
from django.db.models import Q
from django.urls import reverse
from django.utils.html import format_html

from approvals import selectors
from approvals.admin.base import ActionsOnlyMixin, BigTableAdmin
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
)
from approvals.paginators import AuditTrailPaginator


# ---------------------------------------------------------------------------
# The audit trail: nobody adds, changes or deletes an event — superusers included.
# ---------------------------------------------------------------------------
class AuditActionFilter(admin.SimpleListFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        return [(action, action) for action in selectors.audit_actions()]

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(ActionsOnlyMixin, BigTableAdmin):
    paginator = AuditTrailPaginator
    list_display = ["created_at", "action", "actor_label", "request_link"]
    list_filter = [AuditActionFilter]
    list_select_related = ["request"]
    search_fields = ["actor_label"]
    search_help_text = "Who acted (email, exactly), an action, or a request id."
    ordering = ["-created_at", "-id"]
    sortable_by = ["created_at"]
    fields = ["created_at", "action", "actor_label", "request_link", "data"]
    readonly_fields = fields
    actions = None

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # Each branch has an index (Upper(actor_label), action, request): no scan of millions of rows.
        match = Q(actor_label__iexact=term) | Q(action=term)
        try:
            requests = ApprovalRequest.objects.filter(public_id=uuid.UUID(term))
            match |= Q(request__in=requests.values("pk"))
        except ValueError:
            pass
        return queryset.filter(match), False

    @admin.display(description="request")
    def request_link(self, obj: AuditEvent) -> str:
        if obj.request_id is None:
            return "—"
        url = reverse("admin:approvals_approvalrequest_change", args=[obj.request_id])
        return format_html('<a href="{}">{}</a>', url, obj.request.title)
