"""Readers: the querysets views, admin and tasks use, with their joins, so nothing is N+1."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from approvals.models import ApprovalRequest, Assignment, AuditEvent, Callback, CallbackStatus, RequestStatus, User


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


def callbacks_needing_delivery(limit: int = 500) -> list[int]:
    """Callbacks whose delivery was never queued, was lost with a worker, or is overdue a retry."""
    cutoff = timezone.now() - timedelta(seconds=settings.CALLBACK_STALE_SECONDS)
    return list(
        Callback.objects.filter(
            Q(status__in=[CallbackStatus.PENDING, CallbackStatus.SENDING], updated_at__lte=cutoff)
            | Q(status=CallbackStatus.RETRYING, next_attempt_at__lte=cutoff)
        )
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
