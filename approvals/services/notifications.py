"""Notifications: the only writers of Notification, FollowUp and NotificationPreference rows.

A new request's notifications are planned after the ingest commits: `new_requests_notify` only
marks the requests unplanned in the ingest's transaction and queues one planning task per call,
which computes the targets once per distinct approver set for the whole batch
(`new_requests_plan`). Other notifications (reassignment, conversation, follow-ups, outcome) are
planned in the caller's transaction (a savepoint, so a failure here rolls back only the
notifications and never blocks a decision). Sending happens in Celery tasks queued on commit
(approvals/tasks/notifications.py), up to SEND_BATCH_SIZE notifications per task on one SMTP
connection and one HTTP session. A lost planning task or a lost enqueue (broker down, a worker
killed) is made good by the sweep, which plans what stayed unplanned longer than PLAN_LEASE and
queues again what stayed pending too long.
"""

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Lower
from django.utils import timezone

from approvals import permissions
from approvals.models import (
    ApprovalRequest,
    Assignment,
    AuditAction,
    FollowUp,
    InfoMessage,
    Notification,
    NotificationPreference,
    RequestStatus,
    User,
    Vote,
)
from approvals.notifications import slack
from approvals.ops import metrics
from approvals.redaction import redact
from approvals.roles import APPROVER_ACCESS_GROUP
from approvals.selectors.notifications import pending_requests_for
from approvals.services.common import audit, enqueue, enqueue_on_commit, truncate

logger = logging.getLogger(__name__)

# The notification tasks (approvals/tasks/notifications.py), enqueued by name.
SEND_NOTIFICATION = "worker.notify_tasks.send_notification"
SEND_NOTIFICATIONS = "worker.notify_tasks.send_notifications"
PLAN_NEW_REQUEST_NOTIFICATIONS = "worker.notify_tasks.plan_new_request_notifications"
CLOSE_SLACK_MESSAGES = "worker.notify_tasks.close_slack_messages"
# One sending task takes this many notifications, on one SMTP connection and one HTTP session.
SEND_BATCH_SIZE = 50
# A request still unplanned this long after its ingest committed lost its planning task (a worker
# killed, the broker down): the sweep plans it. Longer than a planning task takes on a busy worker.
PLAN_LEASE = timedelta(seconds=60)
# A planning task also takes the new requests still waiting for theirs, up to this many requests
# in all (new_requests_plan's fill_to): on a busy worker the tasks of many ingested batches queue
# up, and the first to run plans and sends for all of them on one connection.
PLAN_BATCH_SIZE = 50

Kind = Notification.Kind
Channel = Notification.Channel
# Sent to approvers; pointless (and never sent) once the request is decided.
APPROVER_KINDS = {Kind.NEW_REQUEST, Kind.REASSIGNED, Kind.REOPENED, Kind.REMINDER, Kind.ESCALATION}
# A question nobody can answer any more, an answer nobody decides on: moot once decided too.
PENDING_ONLY_KINDS = APPROVER_KINDS | {Kind.QUESTION, Kind.ANSWER}
# How long one task may hold a row while it sends (SMTP and Slack calls have shorter timeouts).
SEND_LEASE = timedelta(minutes=2)
# At most one digest per person in this window, however often beat runs the task.
DIGEST_INTERVAL = timedelta(hours=20)
MAX_ERROR_LENGTH = 500


# ---------------------------------------------------------------------------
# Who hears about what
# ---------------------------------------------------------------------------
def _users_by_email(emails: Iterable[str]) -> dict[str, User]:
    """The account of each email, an active one when there is one (else a deactivated one)."""
    emails = {email.lower() for email in emails if email}
    users = (
        User.objects.annotate(email_lower=Lower("email"))
        .filter(email_lower__in=emails)
        .select_related("notification_preference")
        .order_by("-is_active", "pk")
    )
    found: dict[str, User] = {}
    for user in users:
        found.setdefault(user.email_lower, user)
    return found


def _group_member_emails(groups: Iterable[str]) -> list[str]:
    """The known members of SSO groups: portal users who signed in with the group."""
    groups = [name for name in groups if name and name != APPROVER_ACCESS_GROUP]
    if not groups:
        return []
    emails = (
        User.objects.filter(groups__name__in=groups, is_active=True)
        .exclude(email="")
        .annotate(email_lower=Lower("email"))
        .order_by("email_lower")
        .values_list("email_lower", flat=True)
        .distinct()
    )
    return list(emails)


def _admin_emails() -> list[str]:
    emails = User.objects.filter(is_superuser=True, is_active=True).exclude(email="").values_list("email", flat=True)
    return sorted({email.lower() for email in emails})


def _channel_on(user: User | None, channel: str) -> bool:
    """The person's preference; people without an account (or a row) get the defaults."""
    preference = getattr(user, "notification_preference", None) if user is not None else None
    if preference is None:
        return True
    return preference.email_enabled if channel == Channel.EMAIL else preference.slack_enabled


def _targets(
    *, emails: Sequence[str], groups: Sequence[str], exclude: str = "", users: dict[str, User] | None = None
) -> list[tuple[str, str]]:
    """(channel, recipient) pairs for people (by email) and groups (expanded to known members).

    A group with a Slack channel (SLACK_GROUP_CHANNELS) gets one channel message instead of a
    direct message per member; email always goes to each person. `users`: the accounts of every
    address concerned, as _users_by_email read them for a batch (else read here).
    """
    exclude = exclude.lower()
    people: dict[str, None] = dict.fromkeys(email.lower() for email in emails if email)
    dm_people: dict[str, None] = dict(people)
    channels: dict[str, None] = {}
    for group in groups:
        members = _group_member_emails([group])
        people.update(dict.fromkeys(members))
        channel = slack.group_channel(group) if slack.enabled() else ""
        if channel:
            channels[channel] = None
        else:
            dm_people.update(dict.fromkeys(members))
    people.pop(exclude, None)
    dm_people.pop(exclude, None)
    if users is None:
        users = _users_by_email(people)
    # A person whose only account is deactivated (they left) hears nothing, even when a message
    # names them; an address with no account at all (someone who never signed in) still does.
    for email, user in users.items():
        if not user.is_active:
            people.pop(email, None)
            dm_people.pop(email, None)
    targets: list[tuple[str, str]] = []
    if settings.NOTIFICATION_EMAIL_ENABLED:
        targets += [(Channel.EMAIL, email) for email in people if _channel_on(users.get(email), Channel.EMAIL)]
    if slack.enabled():
        targets += [(Channel.SLACK, channel) for channel in channels]
        targets += [(Channel.SLACK, email) for email in dm_people if _channel_on(users.get(email), Channel.SLACK)]
    return targets


def _stand_ins(emails: list[str]) -> list[str]:
    """The emails of active delegates of these people, now. Not of a deactivated person, nor
    through a delegation that names a service account: it lends nothing (permissions.authorities),
    so the stand-in is not asked either."""
    if not emails:
        return []
    delegates = (
        permissions.lending_delegations()
        .annotate(delegator_email=Lower("delegator__email"))
        .filter(
            delegator_email__in={email.lower() for email in emails},
            delegator__is_active=True,
            delegate__is_active=True,
        )
        .values_list("delegate__email", flat=True)
    )
    return sorted({email.lower() for email in delegates if email})


def _approver_targets(request: ApprovalRequest, *, users=None, groups=None) -> list[tuple[str, str]]:
    if users is None and groups is None:
        rows = list(request.assignments.values_list("kind", "value"))
        users = [value for kind, value in rows if kind == Assignment.Kind.USER]
        groups = [value for kind, value in rows if kind == Assignment.Kind.GROUP]
    # Approvers who are away: their active delegates hear about it too (they may decide it).
    users = list(users or []) + _stand_ins(list(users or []) + _group_member_emails(groups or []))
    # Never the requester: they cannot decide their own request. Nor who already voted on it
    # (a quorum request stays pending after their vote): reminders are for those still to decide.
    targets = _targets(emails=users, groups=groups or [], exclude=request.requester_email)
    voted = set()
    for user_email, principal_email in request.votes.values_list("user__email", "on_behalf_of__email"):
        voted |= {email.lower() for email in (user_email, principal_email) if email}
    return [(channel, recipient) for channel, recipient in targets if recipient.lower() not in voted]


def _escalation_targets(request: ApprovalRequest) -> list[tuple[str, str]]:
    if settings.ESCALATION_GROUP:
        return _targets(emails=[], groups=[settings.ESCALATION_GROUP], exclude=request.requester_email)
    return _targets(emails=_admin_emails(), groups=[], exclude=request.requester_email)


# ---------------------------------------------------------------------------
# Planning and queueing
# ---------------------------------------------------------------------------
OUTSIDE_ALLOWED_DOMAINS = "not sent: the address is outside the allowed email domains (OIDC_ALLOWED_EMAIL_DOMAINS)"


def address_allowed(recipient: str) -> bool:
    """May the portal write to `recipient`? With OIDC_ALLOWED_EMAIL_DOMAINS set, only to an email
    address in one of those domains: a message can name any address as approver or requester,
    and a mail with the request's details (and decision links) must not leave the company.
    A Slack channel id is not an address; Slack direct messages are found by email, so they obey it too."""
    domains = settings.OIDC_ALLOWED_EMAIL_DOMAINS
    if not domains or "@" not in recipient:
        return True
    return recipient.rsplit("@", 1)[1].lower() in domains


def _planned_rows(
    request: ApprovalRequest | None, kind: str, targets: list[tuple[str, str]], now
) -> list[Notification]:
    """Unsaved rows. A recipient outside the allowed domains gets a row too, `refused` with the
    reason, never sent: the admin sees who was not told, and why."""
    return [
        Notification(request=request, kind=kind, channel=channel, recipient=recipient, created_at=now)
        if address_allowed(recipient)
        else Notification(
            request=request,
            kind=kind,
            channel=channel,
            recipient=recipient,
            created_at=now,
            status=Notification.Status.REFUSED,
            last_error=OUTSIDE_ALLOWED_DOMAINS,
        )
        for channel, recipient in targets
    ]


def _create(request: ApprovalRequest | None, kind: str, targets: list[tuple[str, str]], now=None) -> list[int]:
    """The rows, planned; returns the ids to send (refused rows are audited, never sent)."""
    return _create_many(kind, [(request, targets)], now)


def _create_many(
    kind: str, targets_of: Sequence[tuple[ApprovalRequest | None, list[tuple[str, str]]]], now=None
) -> list[int]:
    """_create for several requests at once: every row in one insert, each request's refused
    rows audited with it; returns the ids to send."""
    now = now or timezone.now()
    planned = [(request, _planned_rows(request, kind, targets, now)) for request, targets in targets_of]
    Notification.objects.bulk_create([row for _, rows in planned for row in rows])
    for request, rows in planned:
        refused = [row for row in rows if row.status == Notification.Status.REFUSED]
        if refused:
            _refusals_audit(request, kind, refused)
            for row in refused:
                metrics.notification(channel=row.channel, status=row.status)
    return [row.pk for _, rows in planned for row in rows if row.status == Notification.Status.PENDING]


def _refusals_audit(request: ApprovalRequest | None, kind: str, rows: list[Notification]) -> None:
    logger.warning("%s notification(s) not sent: address outside the allowed email domains", len(rows))
    audit(
        action=AuditAction.NOTIFICATION_REFUSED,
        request=request,
        actor=None,
        code="outside_allowed_domains",
        kind=kind,
        recipients=[f"{row.channel}:{row.recipient}" for row in rows],
        reason=OUTSIDE_ALLOWED_DOMAINS,
    )


def notifications_publish(notification_ids: list[int]) -> None:
    """Queue the sends, SEND_BATCH_SIZE per task. Never raises: what cannot be queued now, the
    sweep queues later."""
    for start in range(0, len(notification_ids), SEND_BATCH_SIZE):
        if not enqueue(SEND_NOTIFICATIONS, notification_ids=notification_ids[start : start + SEND_BATCH_SIZE]):
            # The broker is down: the rows stay pending and sweep_notifications queues them.
            return


def _raise_if_caller_transaction_lost() -> None:
    """Inside `except`: re-raise when the failure took the caller's transaction down with it.

    A failure inside the planning savepoint is the notifications' own only while the savepoint
    could be rolled back. When the connection itself broke (PostgreSQL restarted or ended the
    session), Django cannot roll back to the savepoint and marks the whole transaction for
    rollback; swallowing the error then would let the caller return normally from a transaction
    that silently rolls back — an ingest would report a message stored (and the consumer would
    delete it) that never was.
    """
    if transaction.get_connection().needs_rollback:
        raise  # noqa: PLE0704 - called from an except block: re-raises the exception being handled


def _queue_on_commit(notification_ids: list[int]) -> None:
    if notification_ids:
        transaction.on_commit(lambda: notifications_publish(notification_ids), robust=True)


def approval_notify(
    *,
    request: ApprovalRequest,
    kind: str,
    users: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    close_slack: bool = True,
) -> list[int]:
    """Plan notifications about `request` in the caller's transaction; sent after commit.

    `kind` new_request / reassigned (to `users` and `groups`, default: all approvers) or
    outcome (to the requester; `close_slack`: also close the approvers' Slack messages). An outcome
    that Step Functions must be told is planned by services/callbacks.py once the callback's fate
    is known, never at the decision (see approval_decided_notify). Exception-safe: a failure is
    logged and the caller's change (an ingest, a decision) goes ahead without notifications.
    """
    if kind == Kind.OUTCOME:
        ids = outcomes_notify(requests=[request])
        if close_slack:
            approval_decided_notify(request=request)
        return ids
    try:
        with transaction.atomic():  # a savepoint inside the caller's transaction
            ids = _create(request, kind, _approver_targets(request, users=users, groups=groups))
    except Exception:
        _raise_if_caller_transaction_lost()
        logger.exception("could not plan %s notifications for request %s", kind, request.pk)
        return []
    _queue_on_commit(ids)
    return ids


def outcomes_notify(*, requests: Sequence[ApprovalRequest]) -> list[int]:
    """Plan the outcome notification of each request (to its requester) in the caller's
    transaction, as a batch: the requesters' accounts in one query and every row in one insert,
    whatever the number of requests (a batch of delivered callbacks). Sent after commit.
    Exception-safe like approval_notify: the caller's change goes ahead without notifications."""
    if not requests:
        return []
    try:
        with transaction.atomic():  # a savepoint inside the caller's transaction
            users = _users_by_email(request.requester_email for request in requests)
            ids = _create_many(
                Kind.OUTCOME,
                [(request, _targets(emails=[request.requester_email], groups=[], users=users)) for request in requests],
            )
    except Exception:
        _raise_if_caller_transaction_lost()
        logger.exception("could not plan outcome notifications for %s request(s)", len(requests))
        return []
    _queue_on_commit(ids)
    return ids


# ---------------------------------------------------------------------------
# New requests: marked in the ingest's transaction, planned after its commit, in batches
# ---------------------------------------------------------------------------
def new_requests_notify(*, requests: Sequence[ApprovalRequest]) -> None:
    """In the ingest's transaction: these new requests need their "new request" notifications.

    Cheap on purpose (no target computation): the requests are marked unplanned, durably with
    themselves (the ingest inserts them marked; others get one UPDATE), and ONE planning task is
    queued for them after commit
    (`new_requests_plan`). If that task is lost (broker down, worker killed after the commit),
    sweep_notifications plans them once they stayed unplanned longer than PLAN_LEASE.
    """
    request_ids = [request.pk for request in requests]
    if not request_ids:
        return
    # The ingest inserts its requests already marked (services/ingest.py): no statement for those.
    unmarked = [request for request in requests if request.notifications_unplanned_since is None]
    if unmarked:
        now = timezone.now()
        ApprovalRequest.objects.filter(pk__in=[request.pk for request in unmarked]).update(
            notifications_unplanned_since=now
        )
        for request in unmarked:
            request.notifications_unplanned_since = now
    enqueue_on_commit(PLAN_NEW_REQUEST_NOTIFICATIONS, request_ids=request_ids)


def new_requests_plan(*, request_ids: Sequence[int], fill_to: int | None = None) -> list[int]:
    """Plan the "new request" notifications of these requests, if not planned yet; returns the
    ids to send. Idempotent: the requests are locked (SKIP LOCKED: a request another planner
    holds is that planner's) and only those still unplanned are planned, so two planners (the
    task and the sweep, or a task run twice) create one set of rows.

    `fill_to` (the planning task's batch): besides `request_ids`, the requests still unplanned
    that waited longest, up to `fill_to` requests in all. Their own tasks, queued behind this one
    on a busy worker, then find them planned. Never those unplanned longer than PLAN_LEASE: they
    are the sweep's, so a request that breaks planning is taken into other batches for that long
    at most. If such a batch fails, the given requests are planned again on their own.

    The same rows and refusal audit events as approval_notify: targets are computed once per
    distinct approver set (users and groups) in the batch, then each request drops its requester
    and whoever already voted on it. A failure in the batch falls back to one request at a time;
    a request whose planning fails on its own (a bug, a broken setting) is logged and left
    without notifications, as approval_notify did; a database error leaves it for the sweep.
    """
    request_ids = sorted(set(request_ids))
    if not request_ids:
        return []
    if fill_to is not None and fill_to > len(request_ids):
        try:
            return _new_requests_plan(request_ids, fill_to=fill_to)
        except Exception:  # noqa: BLE001 - one of the others may be what failed: these again, on their own
            logger.warning("could not plan %s requests with the others waiting; planning them alone", len(request_ids))
    try:
        return _new_requests_plan(request_ids)
    except DatabaseError:
        if len(request_ids) == 1:
            raise
        logger.warning("could not plan the notifications of %s requests at once; one by one", len(request_ids))
    except Exception:
        if len(request_ids) == 1:
            logger.exception("could not plan new_request notifications for request %s", request_ids[0])
            _new_requests_give_up(request_ids)
            return []
        logger.warning("could not plan the notifications of %s requests at once; one by one", len(request_ids))
    ids: list[int] = []
    for request_id in request_ids:
        try:
            ids += _new_requests_plan([request_id])
        except DatabaseError:
            logger.exception("could not plan new_request notifications for request %s; the sweep will", request_id)
        except Exception:
            logger.exception("could not plan new_request notifications for request %s", request_id)
            _new_requests_give_up([request_id])
    return ids


@transaction.atomic
def _new_requests_give_up(request_ids: list[int]) -> None:
    ApprovalRequest.objects.filter(pk__in=request_ids).update(notifications_unplanned_since=None)


@transaction.atomic
def _new_requests_plan(request_ids: list[int], *, fill_to: int | None = None) -> list[int]:
    unplanned = ApprovalRequest.objects.select_for_update(skip_locked=True).filter(
        notifications_unplanned_since__isnull=False
    )
    if fill_to is None:
        requests = list(unplanned.filter(pk__in=request_ids).order_by("pk"))
    else:
        # Its own first, then those that waited longest but less than the lease (one read, from
        # the partial index of the unplanned).
        since = timezone.now() - PLAN_LEASE
        requests = list(
            unplanned.filter(Q(pk__in=request_ids) | Q(notifications_unplanned_since__gte=since)).order_by(
                Case(When(pk__in=request_ids, then=Value(0)), default=Value(1)), "notifications_unplanned_since", "pk"
            )[:fill_to]
        )
    if not requests:
        return []
    # Decided before its planning ran: approvers have nothing to do (the claim would skip them).
    pending = [request for request in requests if request.is_pending]
    approvers: dict[int, tuple[list[str], list[str]]] = {request.pk: ([], []) for request in pending}
    for request_id, kind, value in (
        Assignment.objects.filter(request__in=pending).order_by("pk").values_list("request_id", "kind", "value")
    ):
        approvers[request_id][0 if kind == Assignment.Kind.USER else 1].append(value)
    voted: dict[int, set[str]] = {}
    for request_id, *emails in Vote.objects.filter(request__in=pending).values_list(
        "request_id", "user__email", "on_behalf_of__email"
    ):
        voted.setdefault(request_id, set()).update(email.lower() for email in emails if email)
    targets_of_set: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[str, str]]] = {}
    targets_of: list[tuple[ApprovalRequest, list[tuple[str, str]]]] = []
    for request in pending:
        users, groups = approvers[request.pk]
        key = (tuple(users), tuple(groups))
        if key not in targets_of_set:
            # What _approver_targets computes, without the per-request exclusions (below).
            stand_ins = _stand_ins(users + _group_member_emails(groups))
            targets_of_set[key] = _targets(emails=users + stand_ins, groups=groups)
        excluded = {request.requester_email.lower()} | voted.get(request.pk, set())
        targets = [
            (channel, recipient) for channel, recipient in targets_of_set[key] if recipient.lower() not in excluded
        ]
        targets_of.append((request, targets))
    ids = _create_many(Kind.NEW_REQUEST, targets_of)
    ApprovalRequest.objects.filter(pk__in=[request.pk for request in requests]).update(
        notifications_unplanned_since=None
    )
    return ids


def approval_decided_notify(*, request: ApprovalRequest) -> None:
    """A request was closed in the portal: its approvers' Slack messages lose their buttons now.

    The requester's outcome mail waits until Step Functions has the decision, or until it is
    known why it could not (services/callbacks.py): "approved" only once the workflow resumed.
    """
    if slack.enabled():
        enqueue_on_commit(CLOSE_SLACK_MESSAGES, request_id=request.pk)


def reassigned_notify(*, request_id: int, users: list[str], groups: list[str]) -> list[int]:
    """Tell the approvers a reassignment added (runs after the reassignment committed)."""
    request = ApprovalRequest.objects.filter(pk=request_id, status=RequestStatus.PENDING).first()
    if request is None or not (users or groups):
        return []
    return approval_notify(request=request, kind=Kind.REASSIGNED, users=users, groups=groups)


def conversation_notify(*, request: ApprovalRequest, message: InfoMessage) -> list[int]:
    """A question goes to the requester; an answer to the approvers and to whoever asked since
    the last answer (a delegate who asked is not an assignee). Planned in the caller's
    transaction, sent after commit, exception-safe like approval_notify.

    The rows share the message's `created_at`: the content (approvals/notifications/messages.py)
    finds the message by it."""
    try:
        with transaction.atomic():
            if message.kind == InfoMessage.Kind.QUESTION:
                kind, targets = Kind.QUESTION, _targets(emails=[request.requester_email], groups=[])
            else:
                askers = _open_question_askers(request, before=message)
                targets = _approver_targets(request)
                targets += [
                    target
                    for target in _targets(emails=askers, groups=[], exclude=request.requester_email)
                    if target not in targets
                ]
                kind = Kind.ANSWER
            ids = _create(request, kind, targets, now=message.created_at)
    except Exception:
        _raise_if_caller_transaction_lost()
        logger.exception("could not plan %s notifications for request %s", message.kind, request.pk)
        return []
    _queue_on_commit(ids)
    return ids


def _open_question_askers(request: ApprovalRequest, *, before: InfoMessage) -> list[str]:
    """Who asked the questions this answer answers: every question since the previous answer."""
    earlier = request.info_messages.exclude(pk=before.pk).select_related("author").order_by("created_at", "id")
    emails = (question.author.email.lower() for question in InfoMessage.unanswered(earlier) if question.author.email)
    return list(dict.fromkeys(emails))


# ---------------------------------------------------------------------------
# Sending: claim, then sent or failed
# ---------------------------------------------------------------------------
@transaction.atomic
def notification_claim(*, notification_id: int) -> Notification | None:
    """Take a pending notification for one send attempt, or None if there is nothing to send."""
    now = timezone.now()
    notification = (
        Notification.objects.select_for_update(of=("self",))
        .select_related("request")
        .filter(pk=notification_id)
        .first()
    )
    if notification is None or not _claimable(notification, now):
        return None
    notification.save(update_fields=["attempts", "locked_until", "updated_at"])
    return notification


@transaction.atomic
def notifications_claim(*, notification_ids: Sequence[int]) -> list[Notification]:
    """notification_claim for a batch: one locking read, one update for those taken. A row
    another task holds (locked now, or within its lease) is left to that task."""
    now = timezone.now()
    rows = list(
        Notification.objects.select_for_update(of=("self",), skip_locked=True)
        .select_related("request")
        # What the content and the "may they decide?" check read, once for the batch.
        .prefetch_related("request__assignments", "request__votes")
        .filter(pk__in=notification_ids, status=Notification.Status.PENDING)
        .order_by("pk")
    )
    claimed = [notification for notification in rows if _claimable(notification, now)]
    for notification in claimed:
        notification.updated_at = now
    if claimed:
        # The same attempt and lease for every row taken (as _claimable set them on the instances).
        Notification.objects.filter(pk__in=[notification.pk for notification in claimed]).update(
            attempts=F("attempts") + 1, locked_until=now + SEND_LEASE, updated_at=now
        )
    return claimed


def _claimable(notification: Notification, now: datetime) -> bool:
    """With the row locked: take it for one attempt (attempts and lease set, not saved), or close
    it (saved) when it must not be sent, or leave it to the task that holds its lease."""
    if notification.status != Notification.Status.PENDING:
        return False
    if notification.locked_until is not None and notification.locked_until > now:
        return False  # another task is sending it right now
    if not address_allowed(notification.recipient):
        # Planned before the domains were restricted (or resent by an admin): still never sent.
        notification.status = Notification.Status.REFUSED
        notification.last_error = OUTSIDE_ALLOWED_DOMAINS
        notification.save(update_fields=["status", "last_error", "updated_at"])
        _refusals_audit(notification.request, notification.kind, [notification])
        metrics.notification(channel=notification.channel, status=notification.status)
        return False
    request = notification.request
    # Past its deadline a request is as good as expired, even before beat's expiry sweep says so:
    # approvers are not asked to decide what every channel would refuse.
    if (notification.kind in PENDING_ONLY_KINDS and not request.is_pending) or (
        notification.kind in APPROVER_KINDS and request.is_overdue
    ):
        notification.status = Notification.Status.SKIPPED
        notification.save(update_fields=["status", "updated_at"])
        metrics.notification(channel=notification.channel, status=notification.status)
        return False
    if notification.attempts >= settings.NOTIFICATION_MAX_ATTEMPTS:
        notification.status = Notification.Status.FAILED
        notification.last_error = notification.last_error or "gave up: too many attempts"
        notification.save(update_fields=["status", "last_error", "updated_at"])
        metrics.notification(channel=notification.channel, status=notification.status)
        return False
    notification.attempts += 1
    notification.locked_until = now + SEND_LEASE
    return True


def notification_mark_sent(*, notification_id: int, channel: str, external_ref: str = "") -> None:
    """`channel`: the claimed row's, for the metrics (no second read per mail)."""
    # One UPDATE, its own transaction (autocommit): a batch marks each mail as soon as it went,
    # so a crash mid-batch re-sends none of those, at one round trip per mail.
    marked = Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING).update(
        status=Notification.Status.SENT,
        sent_at=timezone.now(),
        locked_until=None,
        external_ref=external_ref[:200],
        last_error="",
        updated_at=timezone.now(),
    )
    if marked:  # not when another task (after this one's lease ran out) marked it first
        metrics.notification(channel=channel, status=Notification.Status.SENT)


@transaction.atomic
def notification_mark_failed(*, notification_id: int, channel: str, error: str, final: bool) -> None:
    """Record a failed attempt; `final`: no more attempts, the admin sees it failed."""
    fields = {
        "last_error": truncate(redact(error), MAX_ERROR_LENGTH),
        "locked_until": None,
        "updated_at": timezone.now(),
    }
    if final:
        fields["status"] = Notification.Status.FAILED
    marked = Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING).update(**fields)
    if marked and final:
        metrics.notification(channel=channel, status=Notification.Status.FAILED)
    log = logger.warning if final else logger.info
    log("notification %s %s: %s", notification_id, "failed" if final else "will be retried", fields["last_error"])


@transaction.atomic
def notification_mark_skipped(*, notification_id: int, channel: str) -> None:
    marked = Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING).update(
        status=Notification.Status.SKIPPED, locked_until=None, updated_at=timezone.now()
    )
    if marked:
        metrics.notification(channel=channel, status=Notification.Status.SKIPPED)


@transaction.atomic
def notification_resend(*, notification_id: int, actor: User) -> bool:
    """An admin sends a failed notification again, with a fresh budget of attempts."""
    notification = Notification.objects.select_for_update().filter(pk=notification_id).first()
    if notification is None or notification.status != Notification.Status.FAILED:
        return False
    previous = {"attempts": notification.attempts, "error": notification.last_error}
    notification.status = Notification.Status.PENDING
    notification.attempts = 0
    notification.locked_until = None
    notification.save(update_fields=["status", "attempts", "locked_until", "updated_at"])
    audit(
        action=AuditAction.NOTIFICATION_RESENT,
        request=notification.request,
        actor=actor,
        notification_id=notification.pk,
        channel=notification.channel,
        recipient=notification.recipient,
        previous=previous,
    )
    _queue_on_commit([notification.pk])
    return True


@transaction.atomic
def notifications_lease_stale(*, limit: int = 500) -> list[int]:
    """Pending notifications nobody touched for NOTIFICATION_STALE_SECONDS: their enqueue was lost.

    Touched here, so the next sweep leaves them alone while they are being sent.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.NOTIFICATION_STALE_SECONDS)
    ids = list(
        Notification.objects.select_for_update(skip_locked=True)
        .filter(status=Notification.Status.PENDING, updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    Notification.objects.filter(pk__in=ids).update(updated_at=now)
    return ids


# ---------------------------------------------------------------------------
# Reminders and escalation
# ---------------------------------------------------------------------------
FOLLOW_UPS = {
    FollowUp.Kind.REMINDER: ("REMINDER_AFTER_SECONDS", Kind.REMINDER, AuditAction.REMINDER_SENT),
    FollowUp.Kind.ESCALATION: ("ESCALATION_AFTER_SECONDS", Kind.ESCALATION, AuditAction.ESCALATED),
}


def follow_up_after(kind: str) -> timedelta | None:
    """How long after arrival a reminder / escalation is due; None when it is turned off."""
    seconds = getattr(settings, FOLLOW_UPS[kind][0])
    return timedelta(seconds=seconds) if seconds > 0 else None


@transaction.atomic
def approval_follow_up(*, request_id: int, kind: str, now: datetime | None = None) -> bool:
    """Remind the approvers, or escalate: at most once per request, never after a decision.

    `now` is the clock (tests pass their own). Returns whether it happened now.
    """
    now = now or timezone.now()
    after = follow_up_after(kind)
    request = ApprovalRequest.objects.select_for_update(of=("self",)).filter(pk=request_id).first()
    if after is None or request is None or not request.is_pending:
        return False
    if request.received_at > now - after or (request.deadline is not None and request.deadline <= now):
        return False
    if FollowUp.objects.filter(request=request, kind=kind).exists():
        return False
    FollowUp.objects.create(request=request, kind=kind, created_at=now)
    _, notification_kind, action = FOLLOW_UPS[kind]
    targets = _escalation_targets(request) if kind == FollowUp.Kind.ESCALATION else _approver_targets(request)
    ids = _create(request, notification_kind, targets, now=now)
    audit(
        action=action,
        request=request,
        actor=None,
        waited_seconds=int((now - request.received_at).total_seconds()),
        recipients=[f"{channel}:{recipient}" for channel, recipient in targets],
        **({"escalated_to": settings.ESCALATION_GROUP or "portal admins"} if kind == FollowUp.Kind.ESCALATION else {}),
    )
    _queue_on_commit(ids)
    return True


# ---------------------------------------------------------------------------
# The daily digest
# ---------------------------------------------------------------------------
@transaction.atomic
def digest_plan(*, user_id: int, now: datetime | None = None) -> int | None:
    """One digest email for a person with many pending requests (at most one a day)."""
    now = now or timezone.now()
    user = (
        User.objects.select_for_update(of=("self",))
        .select_related("notification_preference")
        .filter(pk=user_id)
        .first()
    )
    if user is None or not user.is_active or not user.email:
        return None
    preference = getattr(user, "notification_preference", None)
    if preference is None or not preference.digest_enabled or not preference.email_enabled:
        return None
    if pending_requests_for(user, now=now).count() < settings.DIGEST_MIN_PENDING:
        return None
    recent = Notification.objects.filter(
        kind=Kind.DIGEST, recipient=user.email.lower(), created_at__gt=now - DIGEST_INTERVAL
    )
    if recent.exists():
        return None
    ids = _create(None, Kind.DIGEST, [(Channel.EMAIL, user.email.lower())], now=now)
    _queue_on_commit(ids)
    return ids[0]


# ---------------------------------------------------------------------------
# Preferences
# ---------------------------------------------------------------------------
@transaction.atomic
def notification_preference_update(
    *, user: User, actor: User, email_enabled: bool, slack_enabled: bool, digest_enabled: bool
) -> NotificationPreference:
    preference, _ = NotificationPreference.objects.select_for_update().get_or_create(user=user)
    before = {"email": preference.email_enabled, "slack": preference.slack_enabled, "digest": preference.digest_enabled}
    preference.email_enabled = email_enabled
    preference.slack_enabled = slack_enabled
    preference.digest_enabled = digest_enabled
    preference.save()
    after = {"email": email_enabled, "slack": slack_enabled, "digest": digest_enabled}
    if after != before:
        audit(
            action=AuditAction.NOTIFICATION_PREFERENCES_CHANGED,
            request=None,
            actor=actor,
            user=user.email or user.get_username(),
            before=before,
            after=after,
        )
    return preference


# ---------------------------------------------------------------------------
# Slack interactivity: refusals the decision service never sees
# ---------------------------------------------------------------------------
def slack_refusal_record(
    *, code: str, request: ApprovalRequest | None = None, user: User | None = None, **data
) -> None:
    """A Slack click refused before any decision: bad signature, stale, unknown user. Counted
    with the decision service's refusals (approvals_decision_refusals_total); `code` is one of the
    portal's own."""
    logger.info("refused Slack interaction: %s", code)
    metrics.decision_refused(reason=code)
    audit(
        action=AuditAction.DECISION_REFUSED,
        request=request,
        actor=user,
        code=code,
        attempted="slack",
        via="slack",
        **data,
    )


def approver_lost_notify(*, request: ApprovalRequest) -> list[int]:
    """Tell the admins (or the escalation group) that `request` lost an approver: deprovisioned
    by SCIM (services/scim.py). Planned in the caller's transaction, sent after commit."""
    try:
        with transaction.atomic():  # a savepoint inside the caller's transaction
            ids = _create(request, Kind.APPROVER_LOST, _escalation_targets(request))
    except Exception:
        logger.exception("could not plan approver_lost notifications for request %s", request.pk)
        return []
    _queue_on_commit(ids)
    return ids
