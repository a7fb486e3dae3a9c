"""Readers the API needs that the portal's selectors do not have yet: the audit trail filtered
and the ingest errors by status (they belong in approvals/selectors/ once it is a package)."""

from datetime import datetime
from uuid import UUID

from django.db.models import QuerySet

from approvals.models import AuditEvent, IngestError


def audit_events(
    *,
    action: str = "",
    request_public_id: UUID | None = None,
    actor: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
) -> QuerySet[AuditEvent]:
    """Newest first; `before_id` continues a page (ids only go up, so the order is stable)."""
    events = AuditEvent.objects.select_related("request").order_by("-id")
    if action:
        events = events.filter(action=action)
    if request_public_id:
        events = events.filter(request__public_id=request_public_id)
    if actor:
        events = events.filter(actor_label__iexact=actor)
    if since:
        events = events.filter(created_at__gte=since)
    if until:
        events = events.filter(created_at__lt=until)
    if before_id is not None:
        events = events.filter(id__lt=before_id)
    return events


def ingest_errors(*, status: str, before_id: int | None = None) -> QuerySet[IngestError]:
    rows = IngestError.objects.filter(status=status).order_by("-id")
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    return rows
