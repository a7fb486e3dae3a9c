"""Ingest errors: messages the consumer could not take in; replay or discard."""

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from approvals import services
from approvals.admin.base import ActionsOnlyMixin, BigTableAdmin, BulkAction, run_bulk
from approvals.models import (
    IngestError,
)


# ---------------------------------------------------------------------------
# Ingest errors
# ---------------------------------------------------------------------------
def _replay(request: HttpRequest, pk: int, data: dict) -> IngestError:
    row = services.ingest_error_replay(ingest_error_id=pk, actor=request.user)
    if row.status == IngestError.Status.OPEN:  # recorded (new reason, count) and committed
        raise services.ApprovalError(f"refused again: {row.reason}", row.code)
    return row


REPLAY = BulkAction(
    name="replay_selected",
    title="Replay the selected messages",
    verb="Replayed",
    run=_replay,
    intro="Each message is ingested again from the copy kept with its error (older errors: from the "
    "dead-letter queue). Do it once the cause is fixed: a message refused again keeps its error, "
    "with the new reason.",
)
DISCARD = BulkAction(
    name="discard_selected",
    title="Discard the selected messages",
    verb="Discarded",
    run=lambda request, pk, data: services.ingest_error_discard(ingest_error_id=pk, actor=request.user),
    intro="The copy of each message kept with its error is erased (older errors: the message is deleted "
    "from the dead-letter queue). Its execution keeps waiting until its own timeout: stop it in Step "
    "Functions if it should not.",
)


@admin.register(IngestError)
class IngestErrorAdmin(ActionsOnlyMixin, BigTableAdmin):
    list_display = ["sqs_message_id", "code", "short_reason", "status", "receive_count", "last_seen_at"]
    list_filter = ["status", "code"]
    search_fields = ["=sqs_message_id"]
    ordering = ["-last_seen_at", "-id"]
    sortable_by = ["last_seen_at"]  # the one column with an index (ingest_error_seen)
    fields = [
        "sqs_message_id",
        "code",
        "reason",
        "status",
        "receive_count",
        "message_sent_at",
        "first_seen_at",
        "last_seen_at",
        "resolved_by_email",
        "resolved_at",
        "replayed_as_message_id",
        "message_kept",
        "body",
    ]
    readonly_fields = fields
    list_select_related = ["resolved_by"]
    actions = ["replay_selected", "discard_selected"]

    def has_resolve_permission(self, request) -> bool:
        return request.user.has_perm("approvals.resolve_ingesterror")

    @admin.display(description="reason")
    def short_reason(self, obj: IngestError) -> str:
        return obj.reason if len(obj.reason) <= 120 else obj.reason[:119] + "…"

    @admin.display(description="resolved by")
    def resolved_by_email(self, obj: IngestError) -> str:
        return obj.resolved_by.email if obj.resolved_by else "—"

    @admin.display(description="message kept for replay", boolean=True)
    def message_kept(self, obj: IngestError) -> bool:
        return bool(obj.message_ciphertext)

    @admin.display(description="body (token redacted)")
    def body(self, obj: IngestError) -> str:
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', obj.body_redacted)

    def bulk_labels(self, request, ids: list[int]) -> dict[int, str]:
        rows = dict(IngestError.objects.filter(pk__in=ids).values_list("pk", "sqs_message_id"))
        return {pk: f"message {rows.get(pk, '?')} (#{pk})" for pk in ids}

    @admin.action(description="Replay: ingest the message again", permissions=["resolve"])
    def replay_selected(self, request, queryset):
        return run_bulk(self, request, queryset, REPLAY)

    @admin.action(description="Discard: give up on the message", permissions=["resolve"])
    def discard_selected(self, request, queryset):
        return run_bulk(self, request, queryset, DISCARD)
