"""Turning queue messages into approval requests, recording the ones that cannot become one, and an
admin's replay or discard of those."""

import functools
import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from approvals import selectors, tokens
from approvals.contract import ApprovalMessage, ContractError, parse_message
from approvals.integrations import aws
from approvals.models import (
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalSource,
    Assignment,
    AuditAction,
    AuditEvent,
    IngestError,
    RequestStatus,
    User,
)
from approvals.ops import metrics
from approvals.redaction import redact, redact_body
from approvals.selectors import trust
from approvals.selectors.sources import sources_by_account as read_sources_by_account
from approvals.services.common import SYSTEM, ApprovalError, audit
from approvals.services.notifications import new_requests_notify, outcomes_notify
from approvals.services.sources import source_trust_check
from portal.logging import bind_log_context

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------
# SQS keeps a message 14 days at most: a sent time older than that on arrival is no real one.
SQS_MAX_RETENTION = timedelta(days=14)


def message_sent_at(*stamps: datetime | None, received_at: datetime) -> datetime | None:
    """When a message was sent, as far as SQS's timestamps (aws.QueueMessage's `sent_at` and
    `first_sent_at`) can be believed on its arrival at `received_at`: the earliest, ignoring one
    older than SQS keeps a message. None: none to believe (count from receipt). One later than
    the receipt (SQS's clock ahead of ours) is stored as the receipt (`_request_fields`)."""
    believable = [stamp for stamp in stamps if stamp is not None and stamp >= received_at - SQS_MAX_RETENTION]
    return min(believable) if believable else None


def _effective_deadline(
    message: ApprovalMessage, received_at: datetime, sent_at: datetime | None = None
) -> datetime | None:
    """The earliest moment the workflow stops waiting.

    The seed's `approvalDeadline` is often `$$.State.EnteredTime` — already past on arrival —
    so a past value is not a deadline; `timeoutSeconds` counts from when the message was sent
    (`sent_at`, else receipt): Step Functions' timer starts with the task, when it sends the
    message, so a message that waited in the queue has used part of it (all of it: the deadline
    is already past: the request is stored closed by Step Functions, `_timed_out_before_arrival`).
    """
    candidates = []
    if message.deadline is not None and message.deadline > received_at:
        candidates.append(message.deadline)
    if message.timeout_seconds:
        candidates.append((sent_at or received_at) + timedelta(seconds=message.timeout_seconds))
    return min(candidates) if candidates else None


def _timed_out_before_arrival(
    *, deadline: datetime | None, heartbeat_seconds: int | None, sent_at: datetime | None, received_at: datetime
) -> tuple[str, datetime] | None:
    """(the timer, when it ran out) if Step Functions stopped waiting before the message arrived.

    Both of the task's timers start when Step Functions sends the message, and both ran out
    while it waited in the queue (workers down, a backlog, a redrive from the dead-letter queue
    that kept `approvalFirstSentTimestamp`): the task failed with States.Timeout (or
    States.HeartbeatTimeout) and its token is dead. Only `timeoutSeconds` can put the deadline
    behind the receipt (a past `approvalDeadline` is no deadline). `heartbeatSeconds`: the first
    heartbeat was due that long after the send, and nobody could send it before the message
    arrived (only with a sent time: counted from receipt, it has not run out).
    """
    ran_out = []
    if deadline is not None and deadline <= received_at:
        ran_out.append((deadline, "timeoutSeconds"))
    if heartbeat_seconds and sent_at is not None and sent_at + timedelta(seconds=heartbeat_seconds) <= received_at:
        ran_out.append((sent_at + timedelta(seconds=heartbeat_seconds), "heartbeatSeconds"))
    if not ran_out:
        return None
    when, timer = min(ran_out)  # the first to run out is what Step Functions failed the task with
    return timer, when


def _request_timed_out_before_arrival(request: ApprovalRequest) -> tuple[str, datetime] | None:
    return _timed_out_before_arrival(
        deadline=request.deadline,
        heartbeat_seconds=request.heartbeat_seconds,
        sent_at=request.message_sent_at,
        received_at=request.received_at,
    )


TIMED_OUT_BEFORE_ARRIVAL = (
    "The message arrived after Step Functions had stopped waiting for it: its {timer}, counted "
    "from when Step Functions sent it, ran out while it waited in the queue ({when}). Nobody was "
    "asked to decide it and Step Functions was not called."
)


def _policy_fields(message: ApprovalMessage, policy: ApprovalPolicy | None) -> dict:
    """The message's policy over the admins' default; separation of duties from the default only."""

    def pick(name: str, fallback):
        value = getattr(message, name)
        if value is not None:
            return value
        return getattr(policy, name) if policy is not None else fallback

    return {
        "required_approvals": pick("required_approvals", 1),
        "distinct_groups": pick("distinct_groups", False),
        "rejections_to_deny": pick("rejections_to_deny", 1),
        "sod_distinct_levels": policy.sod_distinct_levels if policy is not None else False,
        "sod_exclude_requester_groups": policy.sod_exclude_requester_groups if policy is not None else False,
        "requester_groups": list(message.requester_groups),
    }


def _request_fields(
    *,
    message: ApprovalMessage,
    trusted: trust.TrustedApprovers,
    policy: ApprovalPolicy | None,
    sqs_message_id: str,
    source: ApprovalSource | None,
    sent_at: datetime | None,
) -> dict:
    """The new request's columns (all but its fingerprint)."""
    received_at = timezone.now()
    sent_at = min(sent_at, received_at) if sent_at is not None else None  # never after the receipt
    deadline = _effective_deadline(message, received_at, sent_at)
    timed_out = _timed_out_before_arrival(
        deadline=deadline, heartbeat_seconds=message.heartbeat_seconds, sent_at=sent_at, received_at=received_at
    )
    return {
        "title": message.title,
        "details": message.details,
        "requester_email": message.requester,
        "requester_user": trusted.requester_user,
        "ignored_approvers": trusted.ignored,
        "execution_arn": message.execution_arn,
        "state_machine_arn": message.state_machine_arn,
        "state_name": message.state_name,
        "deadline": deadline,
        "timeout_seconds": message.timeout_seconds,
        "heartbeat_seconds": message.heartbeat_seconds,
        "token_ciphertext": tokens.encrypt_token(message.task_token),
        "sqs_message_id": sqs_message_id,
        "received_at": received_at,
        "message_sent_at": sent_at,
        "options": [option.as_json() for option in message.options] or None,
        "multiple_options": message.multiple,
        "form_schema": message.form,
        "form_field_order": list(message.form["properties"]) if message.form else None,
        "source": source,
        # Step Functions closed it before it arrived: stored closed, nobody decided it.
        "status": RequestStatus.EXPIRED if timed_out else RequestStatus.PENDING,
        "decided_at": received_at if timed_out else None,
        # Its "new request" notifications are planned after the commit (services/notifications.py,
        # new_requests_notify): unplanned from the start, in the insert itself. None for a request
        # that arrived closed: nobody is asked to decide what can no longer be decided.
        "notifications_unplanned_since": None if timed_out else received_at,
        **_policy_fields(message, policy),
    }


def _assignments(request: ApprovalRequest, trusted: trust.TrustedApprovers) -> list[Assignment]:
    return [Assignment(request=request, kind=Assignment.Kind.USER, value=email) for email in trusted.users] + [
        Assignment(request=request, kind=Assignment.Kind.GROUP, value=name) for name in trusted.groups
    ]


def _ingested_event(
    *,
    request: ApprovalRequest,
    sqs_message_id: str,
    trusted: trust.TrustedApprovers,
    policy: ApprovalPolicy | None,
) -> AuditEvent:
    """The request's `ingested` audit event, not yet saved (the batch path saves them in bulk)."""
    rule = trusted.rule
    data = {
        "sqs_message_id": sqs_message_id,
        "users": trusted.users,
        "groups": trusted.groups,
        "routed_to_default_group": trusted.routed_to_default,
        "routing_rule": {"id": rule.pk, "name": rule.name} if rule is not None else None,
        "policy": request.policy,
        "policy_default": {"id": policy.pk, "name": policy.name} if policy is not None else None,
        "approver_trust": {"id": trusted.setting.pk, "name": trusted.setting.name} if trusted.setting else None,
        "approver_trust_mode": trusted.mode,
        "ignored_approvers": trusted.ignored,
    }
    return AuditEvent(request=request, actor=None, actor_label=SYSTEM, action=AuditAction.INGESTED, data=data)


def _notify_new(requests: list[ApprovalRequest]) -> None:
    """Tell the approvers of these new requests: the one place ingest does, for the batch and the
    single path. Cheap here (they were inserted marked unplanned: nothing more to write); the
    targets are computed and the rows made after the commit, in one task per call
    (services/notifications.py).

    A request that arrived closed (`_timed_out_before_arrival`) asks no approver: only its
    requester hears how it ended, as when Step Functions closes a waiting request."""
    new_requests_notify(requests=[request for request in requests if request.is_pending])
    closed = [request for request in requests if not request.is_pending]
    if closed:
        outcomes_notify(requests=closed)  # exception-safe; sent after commit


def _closed_on_arrival_events(requests: list[ApprovalRequest]) -> list[AuditEvent]:
    """The audit events (not yet saved) of the requests that arrived closed: why nobody decides."""
    events = []
    for request in requests:
        timed_out = None if request.is_pending else _request_timed_out_before_arrival(request)
        if timed_out is None:
            continue
        timer, stopped_waiting_at = timed_out
        data = {
            "code": "timed_out_before_arrival",
            "previous_status": RequestStatus.PENDING,
            "timer": timer,
            "stopped_waiting_at": stopped_waiting_at.isoformat(),
            "deadline": request.deadline.isoformat() if request.deadline else None,
            "message_sent_at": request.message_sent_at.isoformat() if request.message_sent_at else None,
            "timeout_seconds": request.timeout_seconds,
            "heartbeat_seconds": request.heartbeat_seconds,
            "reason": TIMED_OUT_BEFORE_ARRIVAL.format(timer=timer, when=stopped_waiting_at.isoformat()),
        }
        events.append(
            AuditEvent(
                request=request,
                actor=None,
                actor_label=SYSTEM,
                action=AuditAction.CLOSED_BY_STEP_FUNCTIONS,
                data=data,
            )
        )
    return events


def _log_ingested_on_commit(stored: list[tuple[ApprovalRequest, str]]) -> None:
    """Say "ingested" once it is true: after the commit (never before, never after a rollback)."""

    def log() -> None:
        for request, sqs_message_id in stored:
            bind_log_context(message_id=sqs_message_id, approval_id=request.public_id)
            logger.info("ingested approval request %s from message %s", request.public_id, sqs_message_id)
            if not request.is_pending:
                logger.warning(
                    "approval request %s arrived after Step Functions stopped waiting: closed by Step Functions, "
                    "no approver told",
                    request.public_id,
                )

    transaction.on_commit(log, robust=True)


@transaction.atomic
def approval_request_ingest(
    *,
    message: ApprovalMessage,
    sqs_message_id: str = "",
    source: ApprovalSource | None = None,
    sent_at: datetime | None = None,
) -> tuple[ApprovalRequest, bool]:
    """Create the request for a queue message; the same token again returns the existing one.

    `sent_at`: when the message was sent (`message_sent_at`, or a replay's original): the task's
    heartbeats and `timeoutSeconds` count from it, as Step Functions' timers do."""
    fingerprint = tokens.fingerprint_token(message.task_token)
    # Every configured fingerprint key: a request stored before a key rotation is a duplicate too.
    candidates = tokens.fingerprint_candidates(message.task_token)
    existing = ApprovalRequest.objects.filter(token_fingerprint__in=candidates).first()
    if existing is not None:
        return existing, False

    # Who decides, under the admins' approver trust setting; a refusal is an ingest error.
    trusted = trust.approvers_resolve(message)
    policy = selectors.approval_policy_for(state_machine_arn=message.state_machine_arn, state_name=message.state_name)
    request, created = ApprovalRequest.objects.get_or_create(
        token_fingerprint=fingerprint,
        defaults=_request_fields(
            message=message,
            trusted=trusted,
            policy=policy,
            sqs_message_id=sqs_message_id,
            source=source,
            sent_at=sent_at,
        ),
    )
    if not created:  # a concurrent consumer won the race
        return request, False

    Assignment.objects.bulk_create(_assignments(request, trusted))
    _ingested_event(request=request, sqs_message_id=sqs_message_id, trusted=trusted, policy=policy).save()
    for event in _closed_on_arrival_events([request]):
        event.save()
    _notify_new([request])  # exception-safe; sent after commit
    bind_log_context(approval_id=request.public_id)
    metrics.request_ingested(state_machine_arn=request.state_machine_arn)
    _log_ingested_on_commit([(request, sqs_message_id)])
    return request, True


# ---------------------------------------------------------------------------
# One received message
# ---------------------------------------------------------------------------
# SQLSTATE classes that say the database (connection, server, concurrency) failed, not this
# message: connection exception, transaction rollback (serialization, deadlock), insufficient
# resources, operator intervention (shutdown, statement timeout), system error; lock timeout.
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_MAX_FAILURE_TEXT = 500


def _database_unavailable(error: Exception) -> bool:
    """True when every message would fail alike: leave the batch to the consumer's backoff."""
    if isinstance(error, InterfaceError):
        return True
    if not isinstance(error, OperationalError):
        return False
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    # No SQLSTATE: the connection broke (or SQLite was locked).
    return sqlstate is None or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate == "55P03"


@dataclass
class IngestOutcome:
    """What became of one received message. Every outcome is committed (or was already there):
    a request (`created` when this message made it) or an IngestError that keeps the message."""

    message_id: str
    request: ApprovalRequest | None = None
    created: bool = False
    error: IngestError | None = None


def received_message_ingest(
    *,
    sqs_message_id: str,
    body: str | bytes,
    max_bytes: int,
    source: ApprovalSource | None = None,
    sent_at: datetime | None = None,
) -> IngestError | None:
    """Parse and store one received message, its failure its own. Once this returns, the
    message may be deleted from the queue: it is a request, or an IngestError that keeps it.

    A body the contract refuses, a rule applied at store time (the approver trust setting),
    and a failure while storing (`store_failed`: the database refusing a value, a bug) become
    an IngestError for this message alone, with the whole message kept encrypted so an admin
    replays it from the portal (`ingest_error_replay`) or discards it. The store runs in its
    own transaction (a savepoint inside a caller's), so a failure rolls back only this message.
    Only a database that is unavailable as a whole propagates: the consumer backs off and the
    message stays on the queue (its redrive policy moves it to the DLQ if that lasts).
    Returns the IngestError, or None when the message is a request (new, or already there).
    `sent_at`: when the message was sent, already checked (`message_sent_at`); kept by both.
    """
    return _received_message_store(
        sqs_message_id=sqs_message_id, body=body, max_bytes=max_bytes, source=source, sent_at=sent_at
    ).error


def _received_message_store(
    *,
    sqs_message_id: str,
    body: str | bytes,
    max_bytes: int,
    source: ApprovalSource | None,
    sent_at: datetime | None = None,
) -> IngestOutcome:
    outcome = IngestOutcome(message_id=sqs_message_id)
    record = functools.partial(
        ingest_error_record, sqs_message_id=sqs_message_id, body=body, source=source, sent_at=sent_at
    )
    try:
        message = parse_message(body, max_bytes=max_bytes)
        # The source's trust rule (approvals/services/sources.py): its region and account only.
        source_trust_check(
            source=source, execution_arn=message.execution_arn, state_machine_arn=message.state_machine_arn
        )
    except ContractError as error:
        outcome.error = record(error=error)
        return outcome
    try:
        outcome.request, outcome.created = approval_request_ingest(
            message=message, sqs_message_id=sqs_message_id, source=source, sent_at=sent_at
        )
    except ContractError as error:  # a rule applied at store time refused it
        outcome.error = record(error=error)
    except Exception as error:  # noqa: BLE001 - recorded for this message, logged with its traceback
        if _database_unavailable(error):
            raise
        fingerprint = tokens.fingerprint_token(message.task_token)
        existing = ApprovalRequest.objects.filter(token_fingerprint=fingerprint).first()
        if existing is not None:
            # Raised after the commit (an on-commit hook), or a concurrent consumer stored the
            # same token: the request is there, so the message is done, not failed.
            logger.error("message %s stored, then %s was raised after the commit", sqs_message_id, type(error).__name__)
            outcome.request = existing
            return outcome
        token = message.task_token
        outcome.error = _store_failure_record(
            sqs_message_id=sqs_message_id, error=error, body=body, task_token=token, source=source, sent_at=sent_at
        )
    return outcome


# ---------------------------------------------------------------------------
# A received batch
# ---------------------------------------------------------------------------
def received_batch_ingest(
    *,
    messages: Sequence[aws.QueueMessage],
    max_bytes: int,
    committed: list[aws.QueueMessage] | None = None,
    keep_hidden: Callable[[Sequence[aws.QueueMessage]], None] | None = None,
    source: ApprovalSource | None = None,
) -> list[IngestOutcome]:
    """Parse and store a received batch (SQS gives up to ten) in one transaction; one outcome
    per message, in order. Once a message is in `committed` it may be deleted from the queue.

    Every message of the batch is parsed, the duplicates of all of them are found in one query,
    the admins' settings are read once per state machine and state, and the new requests, their
    assignments and audit events are written with one bulk insert each. A message the contract
    or its approver trust setting refuses is its IngestError, in the same transaction. The same
    token twice in the batch makes one request; a token already stored returns that request.

    If the batch fails as a whole (a value the database refuses, a bug, a concurrent consumer
    that stored the same token first, a deadlock), nothing of it is kept and each message is
    stored again on its own, as `received_message_ingest` does: one bad message never fails the
    others. A database unavailable as a whole raises from there, with `committed` holding what
    was stored before it went.

    `committed` (out): the messages stored so far, appended as their transaction commits.
    `keep_hidden(remaining)`: called before each step with the messages not stored yet, so the
    consumer can extend their visibility when the batch is slow.
    """
    committed = committed if committed is not None else []
    if not messages:
        return []
    if keep_hidden is not None:
        keep_hidden(messages)
    done_marker: list[bool] = []
    try:
        with transaction.atomic():
            # Registered first, so it runs first: tells a hook failing after the commit apart
            # from a batch that rolled back.
            transaction.on_commit(lambda: done_marker.append(True))
            outcomes = _batch_store(messages, max_bytes=max_bytes, source=source)
    except Exception as error:  # noqa: BLE001 - each message is stored again on its own below
        if done_marker:
            name = type(error).__name__
            logger.error("a batch of %d was stored, then %s was raised after the commit", len(messages), name)
            committed.extend(messages)
            return outcomes
        # Only the type: a database error's text may quote a stored value.
        bind_log_context(message_id=None, approval_id=None)
        logger.warning(
            "a batch of %d messages could not be stored at once (%s); storing each on its own",
            len(messages),
            type(error).__name__,
        )
        return _one_by_one(messages, max_bytes=max_bytes, committed=committed, keep_hidden=keep_hidden, source=source)
    finally:
        bind_log_context(message_id=None, approval_id=None)
    committed.extend(messages)
    return outcomes


def _one_by_one(
    messages: Sequence[aws.QueueMessage],
    *,
    max_bytes: int,
    committed: list[aws.QueueMessage],
    keep_hidden: Callable[[Sequence[aws.QueueMessage]], None] | None,
    source: ApprovalSource | None,
) -> list[IngestOutcome]:
    """Today's per-message path, each message in its own transaction."""
    outcomes = []
    try:
        for index, message in enumerate(messages):
            if keep_hidden is not None:
                keep_hidden(messages[index:])
            bind_log_context(message_id=message.message_id, approval_id=None)
            outcomes.append(
                _received_message_store(
                    sqs_message_id=message.message_id,
                    body=message.body,
                    max_bytes=max_bytes,
                    source=source,
                    sent_at=_received_sent_at(message),
                )
            )
            committed.append(message)
    finally:
        bind_log_context(message_id=None, approval_id=None)
    return outcomes


def _received_sent_at(received: aws.QueueMessage) -> datetime | None:
    """When a message just received was sent (message_sent_at's rule)."""
    return message_sent_at(received.sent_at, received.first_sent_at, received_at=timezone.now())


def _refusal_record(received: aws.QueueMessage, error: ContractError, source: ApprovalSource | None) -> IngestError:
    return ingest_error_record(
        sqs_message_id=received.message_id,
        error=error,
        body=received.body,
        source=source,
        sent_at=_received_sent_at(received),
    )


def _batch_store(
    messages: Sequence[aws.QueueMessage], *, max_bytes: int, source: ApprovalSource | None
) -> list[IngestOutcome]:
    """The batch's writes, in the caller's transaction. Raises if any of them fails."""
    outcomes = [IngestOutcome(message_id=message.message_id) for message in messages]
    parsed: list[tuple[int, ApprovalMessage]] = []
    # Read at most once per batch, and only if a message names an account (the default queue's check).
    sources_by_account = functools.cache(read_sources_by_account)
    for index, received in enumerate(messages):
        bind_log_context(message_id=received.message_id, approval_id=None)
        try:
            message = parse_message(received.body, max_bytes=max_bytes)
            # The source's trust rule (approvals/services/sources.py): its region and account only.
            source_trust_check(
                source=source,
                execution_arn=message.execution_arn,
                state_machine_arn=message.state_machine_arn,
                sources_by_account=sources_by_account,
            )
            parsed.append((index, message))
        except ContractError as error:
            outcomes[index].error = _refusal_record(received, error, source)
    if not parsed:
        return outcomes

    # Duplicates of every message at once, under every configured fingerprint key (a request
    # stored before a key rotation is a duplicate too).
    candidates = {index: tokens.fingerprint_candidates(message.task_token) for index, message in parsed}
    wanted = {fingerprint for values in candidates.values() for fingerprint in values}
    existing = {row.token_fingerprint: row for row in ApprovalRequest.objects.filter(token_fingerprint__in=wanted)}

    lookups = trust.TrustLookups()
    lookups.requesters_prefetch(message.requester for _, message in parsed)
    policies: dict[tuple[str, str], ApprovalPolicy | None] = {}
    new: list[tuple[int, ApprovalMessage, trust.TrustedApprovers, ApprovalPolicy | None]] = []
    requests: list[ApprovalRequest] = []
    first_index: dict[str, int] = {}  # fingerprint -> the message of this batch that makes it
    copies: list[tuple[int, int]] = []  # (a later copy, the message that makes the request)
    for index, message in parsed:
        received = messages[index]
        bind_log_context(message_id=received.message_id, approval_id=None)
        found = next((existing[value] for value in candidates[index] if value in existing), None)
        if found is not None:
            outcomes[index].request = found
            continue
        fingerprint = candidates[index][0]  # the newest key's
        if fingerprint in first_index:
            copies.append((index, first_index[fingerprint]))
            continue
        try:
            trusted = trust.approvers_resolve(message, lookups=lookups)
        except ContractError as error:  # the approver trust setting refused it
            outcomes[index].error = _refusal_record(received, error, source)
            continue
        key = (message.state_machine_arn, message.state_name)
        if key not in policies:
            policies[key] = selectors.approval_policy_for(state_machine_arn=key[0], state_name=key[1])
        fields = _request_fields(
            message=message,
            trusted=trusted,
            policy=policies[key],
            sqs_message_id=received.message_id,
            source=source,
            sent_at=_received_sent_at(received),
        )
        requests.append(ApprovalRequest(token_fingerprint=fingerprint, **fields))
        new.append((index, message, trusted, policies[key]))
        first_index[fingerprint] = index

    if requests:
        ApprovalRequest.objects.bulk_create(requests)
        if any(request.pk is None for request in requests):  # a backend that returns no ids
            made = ApprovalRequest.objects.filter(token_fingerprint__in=[r.token_fingerprint for r in requests])
            ids = dict(made.values_list("token_fingerprint", "pk"))
            for request in requests:
                request.pk = ids[request.token_fingerprint]
        stored = list(zip(new, requests, strict=True))
        Assignment.objects.bulk_create(
            [assignment for (_, _, trusted, _), request in stored for assignment in _assignments(request, trusted)]
        )
        AuditEvent.objects.bulk_create(
            [
                _ingested_event(
                    request=request, sqs_message_id=messages[index].message_id, trusted=trusted, policy=policy
                )
                for (index, _, trusted, policy), request in stored
            ]
            + _closed_on_arrival_events(requests)
        )
        for (index, _, _, _), request in stored:
            outcomes[index].request, outcomes[index].created = request, True
            metrics.request_ingested(state_machine_arn=request.state_machine_arn)
        _notify_new(requests)  # exception-safe; sent after commit
        _log_ingested_on_commit([(request, messages[index].message_id) for (index, _, _, _), request in stored])
    for index, maker in copies:
        outcomes[index].request = outcomes[maker].request
    return outcomes


def _store_failure_record(
    *,
    sqs_message_id: str,
    error: Exception,
    body: str | bytes,
    task_token: str,
    source: ApprovalSource | None = None,
    sent_at: datetime | None = None,
) -> IngestError:
    # The exception's text and traceback may quote what was being stored (the token too, in
    # a bug's message): redacted with the token itself, not only by its shape, and before the
    # cut (a cut through the token would leave a piece neither the token nor its shape matches).
    first_line = redact((str(error).strip().splitlines() or [""])[0], task_token)[:_MAX_FAILURE_TEXT]
    reason = f"could not store the message: {type(error).__name__}: {first_line}".rstrip(": ")
    trace = redact("".join(traceback.format_exception(error)), task_token)
    logger.error("message %s could not be stored (%s); traceback:\n%s", sqs_message_id, type(error).__name__, trace)
    return _ingest_error_upsert(
        sqs_message_id=sqs_message_id, code="store_failed", reason=reason, body=body, source=source, sent_at=sent_at
    )


@transaction.atomic
def ingest_error_record(
    *,
    sqs_message_id: str,
    error: ContractError,
    body: str | bytes,
    source: ApprovalSource | None = None,
    sent_at: datetime | None = None,
) -> IngestError:
    """Record a message that broke the contract, once per message however often it returns."""
    return _ingest_error_upsert(
        sqs_message_id=sqs_message_id, code=error.code, reason=error.message, body=body, source=source, sent_at=sent_at
    )


@transaction.atomic
def _ingest_error_upsert(
    *,
    sqs_message_id: str,
    code: str,
    reason: str,
    body: str | bytes,
    source: ApprovalSource | None = None,
    sent_at: datetime | None = None,
) -> IngestError:
    """One row per message however often it comes (again from the queue, or replayed): the
    newest reason, counted; the message kept encrypted unless it was erased; when it was sent,
    once known (a replay counts from it)."""
    metrics.ingest_error(reason=code)
    now = timezone.now()
    sent_at = min(sent_at, now) if sent_at is not None else None  # never after the receipt
    row = IngestError.objects.select_for_update().filter(sqs_message_id=sqs_message_id).first()
    if row is not None:
        row.receive_count += 1
        row.last_seen_at = now
        row.code = code
        row.reason = redact(reason)
        fields = ["receive_count", "last_seen_at", "code", "reason"]
        if row.message_sent_at is None and sent_at is not None:
            row.message_sent_at = sent_at
            fields.append("message_sent_at")
        if not row.message_ciphertext and row.message_erased_at is None:
            row.message_ciphertext = _message_encrypt(body)
            fields.append("message_ciphertext")
        row.save(update_fields=fields)
        return row
    row = IngestError.objects.create(
        sqs_message_id=sqs_message_id,
        code=code,
        reason=redact(reason),
        body_redacted=redact_body(body),
        message_ciphertext=_message_encrypt(body),
        source=source,
        source_queue_url=source.queue_url if source is not None else "",
        first_seen_at=now,
        last_seen_at=now,
        message_sent_at=sent_at,
    )
    audit(action=AuditAction.INGEST_ERROR, request=None, actor=None, sqs_message_id=sqs_message_id, code=code)
    logger.warning("message %s refused: %s (%s)", sqs_message_id, code, redact(reason))
    return row


def _message_encrypt(body: str | bytes) -> str:
    # The message holds a task token (or may): kept like one, with the same keys.
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return tokens.encrypt_token(text)


# ---------------------------------------------------------------------------
# Ingest errors
# ---------------------------------------------------------------------------
def _locked_open_ingest_error(ingest_error_id: int) -> IngestError:
    row = IngestError.objects.select_for_update().filter(pk=ingest_error_id).first()
    if row is None:
        raise ApprovalError("This ingest error does not exist.", "not_found")
    if row.status != IngestError.Status.OPEN:
        raise ApprovalError(f"This ingest error was already {row.get_status_display().lower()}.", "resolved")
    return row


def _dead_letter_queue_url() -> str:
    try:
        url = aws.dead_letter_queue_url(queue_url=settings.APPROVAL_QUEUE_URL)
    except aws.AwsError as error:
        raise ApprovalError(f"AWS did not answer: {error.code}. Try again later.", "aws_error") from None
    if url is None:
        raise ApprovalError("The approval queue has no dead-letter queue (no redrive policy).", "no_dlq")
    return url


@transaction.atomic
def ingest_error_replay(*, ingest_error_id: int, actor: User) -> IngestError:
    """Ingest the message again, now that its cause is fixed (a raised size limit, a newer
    contract, a widened approver trust setting, an outage).

    The message kept with the error (encrypted) is ingested again in place: a request, and the
    error marked replayed (the kept message erased: the request holds the token now). Refused
    again, the error stays open with the new reason and count: check `status` on the result.
    An error recorded before messages were kept is replayed from the dead-letter queue.
    """
    row = _locked_open_ingest_error(ingest_error_id)
    if row.message_ciphertext:
        return _ingest_error_replay_kept(row, actor)
    if row.message_erased_at is not None:
        raise ApprovalError(
            "The message was erased after the retention period (TOKEN_RETENTION_DAYS); discard this error.",
            "message_erased",
        )
    return _ingest_error_replay_from_dlq(row, actor)


def _ingest_error_replay_kept(row: IngestError, actor: User) -> IngestError:
    if row.source is not None and row.source_queue_url and row.source_queue_url != row.source.queue_url:
        raise ApprovalError(
            f"The message came from another queue than source {row.source.name!r} reads now: its senders "
            "were that queue's account's, so it is not replayed through this source. Discard it (its "
            "execution waits until its timeout, or start it again).",
            "source_moved",
        )
    try:
        body = tokens.decrypt_token(row.message_ciphertext)
    except tokens.TokenKeyError:
        raise ApprovalError(
            "The kept message cannot be decrypted with the configured TOKEN_ENCRYPTION_KEYS.", "key_error"
        ) from None
    refused = received_message_ingest(
        sqs_message_id=row.sqs_message_id,
        body=body,
        max_bytes=settings.APPROVAL_MAX_MESSAGE_BYTES,
        source=row.source,  # checked against the source as it is now (fixed by an admin, maybe)
        # Step Functions' timers started when the original was sent, not now: its sent time,
        # checked when it arrived (not again now: a kept message may be older than SQS keeps
        # one); for a row recorded before sent times were kept, its first arrival, which the
        # send preceded.
        sent_at=row.message_sent_at or row.first_seen_at,
    )
    if refused is not None:
        audit(
            action=AuditAction.INGEST_ERROR_REPLAY_REFUSED,
            request=None,
            actor=actor,
            ingest_error_id=row.pk,
            sqs_message_id=row.sqs_message_id,
            code=refused.code,
        )
        return refused
    request = ApprovalRequest.objects.filter(sqs_message_id=row.sqs_message_id).order_by("pk").first()
    row.status = IngestError.Status.REPLAYED
    row.resolved_by = actor
    row.resolved_at = timezone.now()
    row.message_ciphertext = ""
    row.message_erased_at = row.resolved_at
    row.save(update_fields=["status", "resolved_by", "resolved_at", "message_ciphertext", "message_erased_at"])
    audit(
        action=AuditAction.INGEST_ERROR_REPLAYED,
        request=request,
        actor=actor,
        ingest_error_id=row.pk,
        sqs_message_id=row.sqs_message_id,
        code=row.code,
        in_place=True,
    )
    logger.info("ingest error %s: message %s ingested again", row.pk, row.sqs_message_id)
    return row


def _ingest_error_replay_from_dlq(row: IngestError, actor: User) -> IngestError:
    dlq_url = _dead_letter_queue_url()
    try:
        new_id = aws.move_message(
            source_queue_url=dlq_url, target_queue_url=settings.APPROVAL_QUEUE_URL, message_id=row.sqs_message_id
        )
    except aws.AwsError as error:
        raise ApprovalError(f"AWS did not answer: {error.code}. Try again later.", "aws_error") from None
    if new_id is None:
        raise ApprovalError(
            "The message is not on the dead-letter queue: it may still be on the approval queue (being "
            "retried until the redrive policy moves it), or it was deleted or outlived the retention period.",
            "not_in_dlq",
        )
    row.status = IngestError.Status.REPLAYED
    row.resolved_by = actor
    row.resolved_at = timezone.now()
    row.replayed_as_message_id = new_id
    row.save(update_fields=["status", "resolved_by", "resolved_at", "replayed_as_message_id"])
    audit(
        action=AuditAction.INGEST_ERROR_REPLAYED,
        request=None,
        actor=actor,
        ingest_error_id=row.pk,
        sqs_message_id=row.sqs_message_id,
        new_sqs_message_id=new_id,
        code=row.code,
    )
    logger.info("ingest error %s: message %s sent to the queue again as %s", row.pk, row.sqs_message_id, new_id)
    return row


@transaction.atomic
def ingest_error_discard(*, ingest_error_id: int, actor: User) -> IngestError:
    """Give up on a message: mark the error discarded and erase the kept message (or, for an
    error recorded before messages were kept, delete it from the DLQ if it is there)."""
    row = _locked_open_ingest_error(ingest_error_id)
    deleted = None
    if not row.message_ciphertext and row.message_erased_at is None:
        dlq_url = _dead_letter_queue_url()
        try:
            deleted = aws.delete_message_by_id(queue_url=dlq_url, message_id=row.sqs_message_id)
        except aws.AwsError as error:
            raise ApprovalError(f"AWS did not answer: {error.code}. Try again later.", "aws_error") from None
    row.status = IngestError.Status.DISCARDED
    row.resolved_by = actor
    row.resolved_at = timezone.now()
    row.message_ciphertext = ""
    row.message_erased_at = row.message_erased_at or row.resolved_at
    row.save(update_fields=["status", "resolved_by", "resolved_at", "message_ciphertext", "message_erased_at"])
    audit(
        action=AuditAction.INGEST_ERROR_DISCARDED,
        request=None,
        actor=actor,
        ingest_error_id=row.pk,
        sqs_message_id=row.sqs_message_id,
        code=row.code,
        deleted_from_dlq=deleted,
    )
    return row
