"""Readers for notifications: what is due for a reminder, an escalation, a digest."""

from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef, Q, QuerySet

from approvals import selectors
from approvals.models import ApprovalRequest, FollowUp, NotificationPreference, RequestStatus, User


def follow_up_due_request_ids(*, kind: str, after: timedelta, now: datetime, limit: int = 500) -> list[int]:
    """Pending requests older than `after` at `now`, not yet reminded / escalated, deadline ahead."""
    done = FollowUp.objects.filter(request=OuterRef("pk"), kind=kind)
    return list(
        ApprovalRequest.objects.filter(status=RequestStatus.PENDING, received_at__lte=now - after)
        .filter(Q(deadline__isnull=True) | Q(deadline__gt=now))
        .exclude(Exists(done))
        .order_by("received_at")
        .values_list("pk", flat=True)[:limit]
    )


def unplanned_request_ids(*, before: datetime, limit: int = 500, batch: int = 100) -> list[list[int]]:
    """Requests whose "new request" notifications are still unplanned since before `before` (their
    planning task was lost), oldest first, in batches of `batch` ids."""
    ids = list(
        ApprovalRequest.objects.filter(notifications_unplanned_since__lt=before)
        .order_by("notifications_unplanned_since", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    return [ids[start : start + batch] for start in range(0, len(ids), batch)]


def pending_requests_for(user: User, *, now: datetime) -> QuerySet[ApprovalRequest]:
    """What waits for this person's decision now (their inbox, without the overdue)."""
    return selectors.inbox_for(user).filter(Q(deadline__isnull=True) | Q(deadline__gt=now))


def digest_user_ids() -> list[int]:
    """People who asked for the daily digest."""
    return list(
        NotificationPreference.objects.filter(digest_enabled=True, email_enabled=True, user__is_active=True)
        .exclude(user__email="")
        .values_list("user_id", flat=True)
    )
