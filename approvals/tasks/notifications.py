"""Celery tasks for notifications: thin, take ids, call services and the channels."""

import logging

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.utils import timezone

from approvals.models import ApprovalRequest, Notification
from approvals.notifications import DeliveryError, channels, slack
from approvals.selectors.notifications import (
    digest_user_ids,
    follow_up_due_request_ids,
    unplanned_request_ids,
)
from approvals.services import notifications as services
from approvals.tasks.each import DATABASE_GONE, one_of_many
from approvals.tokens import TokenKeyError

logger = logging.getLogger(__name__)

RETRY_OPTIONS = {
    "autoretry_for": (DeliveryError,),
    "retry_backoff": settings.NOTIFICATION_RETRY_BACKOFF_SECONDS,
    "retry_backoff_max": settings.NOTIFICATION_RETRY_BACKOFF_MAX_SECONDS,
    "retry_jitter": True,
}


@shared_task(
    name="worker.notify_tasks.send_notification",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # A bound, not the budget: the row's attempts (NOTIFICATION_MAX_ATTEMPTS) decide when to stop.
    max_retries=settings.NOTIFICATION_MAX_ATTEMPTS,
    **RETRY_OPTIONS,
)
def send_notification(self, notification_id: int) -> str:
    """Send one notification; a channel that is down is retried with backoff, then marked failed."""
    notification = services.notification_claim(notification_id=notification_id)
    if notification is None:
        return "nothing-to-send"
    try:
        reference = channels.deliver(notification)
    except channels.NothingToSend:
        services.notification_mark_skipped(notification_id=notification_id, channel=notification.channel)
        return "skipped"
    except DeliveryError as error:
        if _attempt_failed(notification, error.message, permanent=error.permanent) == "failed":
            return "failed"
        raise  # autoretry_for: again after an exponential, jittered countdown
    services.notification_mark_sent(
        notification_id=notification_id, channel=notification.channel, external_ref=reference
    )
    return "sent"


@shared_task(
    name="worker.notify_tasks.send_notifications",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=settings.NOTIFICATION_MAX_ATTEMPTS,
)
def send_notifications(self, notification_ids: list[int]) -> dict[str, int]:
    """Send a batch (services.SEND_BATCH_SIZE) on one SMTP connection and one Slack session.

    Each row is claimed as send_notification claims it (exactly once: a row another task holds
    is left to it) and marked as soon as its send returns, so a crash mid-batch re-sends none of
    those already marked. What failed and may be tried again is retried as a smaller batch, with
    the same exponential, jittered backoff; the rows' attempts decide when to stop.
    """
    try:
        counts, again = _send_batch(notification_ids)
    except DATABASE_GONE as error:
        # PostgreSQL ended the session mid-batch (a restart, a failover): the whole batch again, later,
        # on a fresh connection. Rows already marked are not sent twice; rows claimed but not sent
        # wait for their lease (or the sweep).
        raise self.retry(exc=error, countdown=_backoff(self.request.retries)) from None
    if again:
        raise self.retry(kwargs={"notification_ids": again}, countdown=_backoff(self.request.retries))
    return counts


def _send_batch(notification_ids: list[int]) -> tuple[dict[str, int], list[int]]:
    """Claim and send; returns the counts and the ids to try again later."""
    counts = {"sent": 0, "skipped": 0, "failed": 0, "retry": 0}
    again: list[int] = []
    claimed = services.notifications_claim(notification_ids=notification_ids)
    with channels.batch_of(claimed):
        for notification in claimed:
            try:
                reference = channels.deliver(notification)
            except channels.NothingToSend:
                services.notification_mark_skipped(notification_id=notification.pk, channel=notification.channel)
                counts["skipped"] += 1
                continue
            except DeliveryError as error:
                outcome = _attempt_failed(notification, error.message, permanent=error.permanent)
            except DATABASE_GONE:
                raise  # the database, not this mail: the whole batch again, later
            except Exception as error:  # noqa: BLE001 - a bug in this one mail must not cost the others theirs
                # Raised out of the loop, it left every later row of the batch claimed and unsent,
                # and the sweep sent them again behind the same row until their attempts ran out.
                logger.exception("notification %s could not be built or sent", notification.pk)
                what = f"{type(error).__name__} while building or sending it (the worker's log has the traceback)"
                outcome = _attempt_failed(notification, what, permanent=False)
            else:
                services.notification_mark_sent(
                    notification_id=notification.pk, channel=notification.channel, external_ref=reference
                )
                counts["sent"] += 1
                continue
            if outcome == "retry":
                again.append(notification.pk)
            counts[outcome] += 1
    return counts, again


def _attempt_failed(notification: Notification, error: str, *, permanent: bool) -> str:
    """Record a failed attempt: "retry" while attempts remain (and the error may pass), else "failed"."""
    final = permanent or notification.attempts >= settings.NOTIFICATION_MAX_ATTEMPTS
    services.notification_mark_failed(
        notification_id=notification.pk, channel=notification.channel, error=error, final=final
    )
    return "failed" if final else "retry"


def _backoff(retries: int) -> int:
    return get_exponential_backoff_interval(
        factor=settings.NOTIFICATION_RETRY_BACKOFF_SECONDS,
        retries=retries,
        maximum=settings.NOTIFICATION_RETRY_BACKOFF_MAX_SECONDS,
        full_jitter=True,
    )


@shared_task(
    name="worker.notify_tasks.plan_new_request_notifications",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=3,
)
def plan_new_request_notifications(self, request_ids: list[int]) -> int:
    """After an ingest committed: plan its new requests' notifications (and those of other new
    requests still waiting, up to PLAN_BATCH_SIZE requests), then send them: the first batch
    here (no second task to wait for), the rest queued in batches."""
    try:
        ids = services.new_requests_plan(request_ids=request_ids, fill_to=services.PLAN_BATCH_SIZE)
    except DATABASE_GONE as error:  # planning is idempotent: again on a fresh connection (else the sweep)
        raise self.retry(exc=error, countdown=_backoff(self.request.retries)) from None
    first, rest = ids[: services.SEND_BATCH_SIZE], ids[services.SEND_BATCH_SIZE :]
    services.notifications_publish(rest)
    if first:
        try:
            _, again = _send_batch(first)
        except DATABASE_GONE:
            logger.warning("the database connection broke while sending %s notifications; queued again", len(first))
            again = first
        if again:
            try:
                send_notifications.apply_async(kwargs={"notification_ids": again}, countdown=_backoff(0))
            except Exception:  # noqa: BLE001 - the broker is down: the rows stay pending for the sweep
                logger.warning("could not queue the retry of %s notifications; the sweep will", len(again))
    return len(ids)


@shared_task(
    name="worker.notify_tasks.close_slack_messages", acks_late=True, ignore_result=True, max_retries=3, **RETRY_OPTIONS
)
def close_slack_messages(request_id: int) -> int:
    """After the outcome: replace the buttons of the request's Slack messages with the outcome."""
    request = ApprovalRequest.objects.select_related("decided_by").get(pk=request_id)
    kept = [Notification.Kind.OUTCOME, Notification.Kind.QUESTION, Notification.Kind.ANSWER]
    if request.is_pending:
        kept.append(Notification.Kind.REOPENED)  # reopened by the re-check: these carry the buttons now
    references = list(
        Notification.objects.filter(
            request_id=request_id, channel=Notification.Channel.SLACK, status=Notification.Status.SENT
        )
        # A question or an answer keeps its text: only messages with buttons get the outcome.
        .exclude(kind__in=kept)
        .exclude(external_ref="")
        .order_by("pk")
        .values_list("external_ref", flat=True)
    )
    if not references or not slack.enabled():
        return 0
    # A message Slack no longer has is skipped there; Slack unreachable raises (autoretry_for).
    return channels.close_slack_messages(request, references)


@shared_task(
    name="worker.notify_tasks.slack_respond",
    acks_late=True,
    ignore_result=True,
    max_retries=3,
    # Celery builds a retry's kwargsrepr from the arguments again: the retries hide them too.
    retry_kwargs={"kwargsrepr": slack.RESPOND_KWARGSREPR},
    **RETRY_OPTIONS,
)
def slack_respond(payload: dict, response_url_ciphertext: str = "", response_url: str = "") -> None:
    """Answer a Slack click through its response_url (the outcome, or why it was refused).

    The URL comes encrypted (slack.seal_response_url). `response_url` in plain is what the
    release before this one queued: still answered, checked like the rest, so an answer waiting
    in the broker during the deploy is not lost; the next release drops it (docs/security.md).
    """
    if response_url_ciphertext:
        try:
            response_url = slack.open_response_url(response_url_ciphertext)
        except TokenKeyError:
            logger.warning("a Slack answer was dropped: no configured key decrypts its response URL")
            return
    try:
        slack.respond(response_url, payload)
    except DeliveryError as error:
        if error.permanent:
            logger.info("Slack response_url refused the answer: %s", error.message)
            return
        raise


@shared_task(name="worker.notify_tasks.sweep_notifications", ignore_result=True)
def sweep_notifications() -> int:
    """Make good what a crash or a broker outage lost: plan the new requests whose planning task
    never ran (unplanned longer than PLAN_LEASE), and queue again the sends of notifications
    pending too long. Returns how many notifications it queued."""
    planned: list[int] = []
    for request_ids in unplanned_request_ids(before=timezone.now() - services.PLAN_LEASE):
        planned += services.new_requests_plan(request_ids=request_ids)
    services.notifications_publish(planned)
    ids = services.notifications_lease_stale()
    services.notifications_publish(ids)
    return len(planned) + len(ids)


@shared_task(name="worker.notify_tasks.send_follow_ups", ignore_result=True)
def send_follow_ups() -> int:
    """Reminders, then escalations, for pending requests that waited long enough."""
    now = timezone.now()
    done = 0
    for kind in (services.FollowUp.Kind.REMINDER, services.FollowUp.Kind.ESCALATION):
        after = services.follow_up_after(kind)
        if after is None:
            continue
        for request_id in follow_up_due_request_ids(kind=kind, after=after, now=now):
            with one_of_many(f"planning the {kind} of request {request_id}"):
                done += services.approval_follow_up(request_id=request_id, kind=kind, now=now)
    return done


@shared_task(name="worker.notify_tasks.send_digests", ignore_result=True)
def send_digests() -> int:
    """The daily digest, for people who turned it on and have many pending requests."""
    now = timezone.now()
    planned = 0
    for user_id in digest_user_ids():
        with one_of_many(f"planning the digest of user {user_id}"):
            planned += services.digest_plan(user_id=user_id, now=now) is not None
    return planned
