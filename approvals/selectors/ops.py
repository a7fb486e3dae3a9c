"""The operators' readers: what /metrics, /readyz and the admin dashboard show.

Each is a handful of aggregate queries on indexed columns, cheap enough for every scrape.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db import connection
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, Max, Min, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from approvals.models import ApprovalRequest, Callback, CallbackStatus, ConsumerStatus, IngestError, RequestStatus

DECIDED = [RequestStatus.APPROVED, RequestStatus.REJECTED]


# ---------------------------------------------------------------------------
# Scrape time (metrics) and readiness
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PendingSummary:
    count: int
    oldest_received_at: datetime | None
    nearest_deadline: datetime | None


def pending_summary() -> PendingSummary:
    row = ApprovalRequest.objects.filter(status=RequestStatus.PENDING).aggregate(
        count=Count("id"), oldest=Min("received_at"), nearest=Min("deadline")
    )
    return PendingSummary(count=row["count"], oldest_received_at=row["oldest"], nearest_deadline=row["nearest"])


def callback_status_counts() -> dict[str, int]:
    """Callbacks by status, delivered ones left out (they are the many, and done).

    The statuses named, not "not delivered": PostgreSQL reads those from the status index, where
    `<>` read every delivered callback ever sent on each scrape."""
    counted = [status for status in CallbackStatus.values if status != CallbackStatus.DELIVERED]
    rows = Callback.objects.filter(status__in=counted).values_list("status").annotate(n=Count("id")).order_by()
    counts = dict.fromkeys(counted, 0)
    counts.update(dict(rows))
    return counts


def open_ingest_error_count() -> int:
    return IngestError.objects.filter(status=IngestError.Status.OPEN).count()


@dataclass(frozen=True)
class ConsumerSummary:
    registered: int
    latest_poll_at: datetime | None


def consumer_summary() -> ConsumerSummary:
    row = ConsumerStatus.objects.aggregate(registered=Count("id"), latest=Max("last_poll_at"))
    return ConsumerSummary(registered=row["registered"], latest_poll_at=row["latest"])


def callback_log_ids(callback_id: int) -> dict[str, str]:
    """The ids a callback's log lines carry: its request's public id and SQS message id."""
    row = Callback.objects.filter(pk=callback_id).values_list("request__public_id", "request__sqs_message_id").first()
    if row is None:
        return {}
    return {"approval_id": str(row[0]), "message_id": row[1] or None}


# ---------------------------------------------------------------------------
# The admin dashboard
# ---------------------------------------------------------------------------
def request_status_counts() -> dict[str, int]:
    counts = dict.fromkeys(RequestStatus.values, 0)
    counts.update(dict(ApprovalRequest.objects.values_list("status").annotate(n=Count("id")).order_by()))
    return counts


class _Median(Aggregate):
    """PostgreSQL's percentile_cont(0.5): the median, computed in the database."""

    function = "percentile_cont"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()


@dataclass(frozen=True)
class DecisionTimes:
    state_machine_arn: str
    median_7d: timedelta | None
    decided_7d: int
    median_30d: timedelta | None
    decided_30d: int


def decision_time_medians(now: datetime | None = None) -> list[DecisionTimes]:
    """Median time from receipt to decision per state machine, over the last 7 and 30 days."""
    now = now or timezone.now()
    since_7, since_30 = now - timedelta(days=7), now - timedelta(days=30)
    decided = ApprovalRequest.objects.filter(status__in=DECIDED, decided_at__gte=since_30).order_by()
    waited = ExpressionWrapper(F("decided_at") - F("received_at"), output_field=DurationField())
    in_7 = Q(decided_at__gte=since_7)
    if connection.vendor == "postgresql":
        rows = decided.values("state_machine_arn").annotate(
            median_30d=_Median(waited),
            decided_30d=Count("id"),
            median_7d=_Median(waited, filter=in_7),
            decided_7d=Count("id", filter=in_7),
        )
        return sorted((DecisionTimes(**row) for row in rows), key=lambda row: -row.decided_30d)
    return _medians_in_python(decided, since_7)


def _medians_in_python(decided: QuerySet, since_7: datetime) -> list[DecisionTimes]:
    # SQLite (local development) has no percentile function: the same numbers, computed here.
    waits: dict[str, list[tuple[datetime, float]]] = {}
    for arn, received_at, decided_at in decided.values_list("state_machine_arn", "received_at", "decided_at"):
        waits.setdefault(arn, []).append((decided_at, (decided_at - received_at).total_seconds()))

    def median(values: list[float]) -> timedelta | None:
        return timedelta(seconds=statistics.median(values)) if values else None

    rows = []
    for arn, items in waits.items():
        week = [seconds for decided_at, seconds in items if decided_at >= since_7]
        rows.append(DecisionTimes(arn, median(week), len(week), median([s for _, s in items]), len(items)))
    return sorted(rows, key=lambda row: -row.decided_30d)


def decisions_per_day(days: int = 30, now: datetime | None = None) -> list[tuple[date, int, int]]:
    """(day, approved, rejected) for each of the last `days` days, oldest first, gaps as zero."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    first = today - timedelta(days=days - 1)
    # From the first day's midnight (the same days as `decided_at__date`, in the same time zone),
    # so the partial index on decided_at serves it: a date computed per row read every decision.
    since = timezone.make_aware(datetime.combine(first, time.min))
    rows = (
        ApprovalRequest.objects.filter(status__in=DECIDED, decided_at__gte=since)
        .annotate(day=TruncDate("decided_at"))
        .values_list("day")
        .annotate(
            approved=Count("id", filter=Q(status=RequestStatus.APPROVED)),
            rejected=Count("id", filter=Q(status=RequestStatus.REJECTED)),
        )
        .order_by()
    )
    by_day = {day: (approved, rejected) for day, approved, rejected in rows}
    return [(day, *by_day.get(day, (0, 0))) for day in (first + timedelta(days=n) for n in range(days))]


def failing_callbacks(limit: int = 25) -> list[Callback]:
    return list(
        Callback.objects.filter(status__in=[CallbackStatus.FAILED, CallbackStatus.RETRYING])
        .select_related("request")
        .order_by("-updated_at")[:limit]
    )


def consumers(limit: int = 20) -> list[ConsumerStatus]:
    return list(ConsumerStatus.objects.order_by(F("last_poll_at").desc(nulls_last=True))[:limit])
