"""Readers: the querysets views, admin and tasks use, with their joins, so nothing is N+1."""

from datetime import timedelta

from django.db.models import DateTimeField, ExpressionWrapper, F, Prefetch, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from approvals.models import ApprovalRequest, Assignment, AuditEvent, ConsumerStatus, RequestStatus, User


def _assigned_to(user: User) -> Q:
    email = (user.email or "").lower()
    groups = list(user.groups.values_list("name", flat=True))
    match = Q(kind=Assignment.Kind.GROUP, value__in=groups)
    if email:
        match |= Q(kind=Assignment.Kind.USER, value=email)
    return Q(pk__in=Assignment.objects.filter(match).values("request_id"))


def inbox_for(user: User) -> QuerySet[ApprovalRequest]:
    """What this person may decide now: pending, assigned to them, not their own request."""
    queryset = ApprovalRequest.objects.filter(_assigned_to(user), status=RequestStatus.PENDING)
    if user.email:
        queryset = queryset.exclude(requester_email__iexact=user.email)
    return queryset.prefetch_related("assignments").order_by("-received_at", "-id")


def request_detail(public_id) -> ApprovalRequest | None:
    return (
        ApprovalRequest.objects.select_related("decided_by", "callback")
        .prefetch_related(
            "assignments",
            Prefetch("audit_events", queryset=AuditEvent.objects.select_related("actor").order_by("created_at", "id")),
        )
        .filter(public_id=public_id)
        .first()
    )


def overdue_pending_request_ids(limit: int = 500) -> list[int]:
    return list(
        ApprovalRequest.objects.filter(status=RequestStatus.PENDING, deadline__lte=timezone.now())
        .order_by("deadline")
        .values_list("pk", flat=True)[:limit]
    )


def heartbeat_due_request_ids(limit: int = 500) -> list[int]:
    """Pending requests whose task has HeartbeatSeconds and whose next heartbeat is due.

    Sent at a third of the interval, so one missed sweep still leaves a margin.
    """
    now = timezone.now()
    due = ApprovalRequest.objects.filter(status=RequestStatus.PENDING, heartbeat_seconds__isnull=False).annotate(
        last=Coalesce("last_heartbeat_at", "received_at"),
        due_at=ExpressionWrapper(
            F("last") + F("heartbeat_seconds") * timedelta(seconds=1) / 3, output_field=DateTimeField()
        ),
    )
    return list(due.filter(due_at__lte=now).order_by("due_at").values_list("pk", flat=True)[:limit])


def stale_consumers(max_age_seconds: int) -> list[ConsumerStatus]:
    """Consumers that have not completed a poll recently (a stuck or dead worker)."""
    cutoff = timezone.now() - timedelta(seconds=max_age_seconds)
    return list(ConsumerStatus.objects.filter(Q(last_poll_at__lt=cutoff) | Q(last_poll_at__isnull=True)))
