"""Ingest errors by status, newest first (the API's ingest-error list)."""

from django.db.models import QuerySet

from approvals.models import IngestError


def ingest_errors(*, status: str, before_id: int | None = None) -> QuerySet[IngestError]:
    rows = IngestError.objects.filter(status=status).order_by("-id")
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    return rows
