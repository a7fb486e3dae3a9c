"""Turning queue messages into approval requests, and recording the ones that cannot become one."""

import logging
import traceback
from datetime import timedelta

from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from approvals import metrics, selectors, tokens, trust
from approvals.contract import ApprovalMessage, ContractError, parse_message
from approvals.models import ApprovalPolicy, ApprovalRequest, Assignment, IngestError
from approvals.redaction import redact, redact_body
from approvals.services.common import audit
from approvals.services.notifications import approval_notify
from portal.logging import bind_log_context

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------
def _effective_deadline(message: ApprovalMessage, received_at) -> tuple:
    """The earliest future moment the workflow stops waiting, and why.

    The seed's `approvalDeadline` is often `$$.State.EnteredTime` — already past on arrival —
    so a past value is not a deadline; `timeoutSeconds` counts from receipt (a little late
    against Step Functions' own timer, which the callback's TaskTimedOut then corrects).
    """
    candidates = []
    if message.deadline is not None and message.deadline > received_at:
        candidates.append(message.deadline)
    if message.timeout_seconds:
        candidates.append(received_at + timedelta(seconds=message.timeout_seconds))
    return min(candidates) if candidates else None


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


@transaction.atomic
def approval_request_ingest(*, message: ApprovalMessage, sqs_message_id: str = "") -> tuple[ApprovalRequest, bool]:
    """Create the request for a queue message; the same token again returns the existing one."""
    fingerprint = tokens.fingerprint_token(message.task_token)
    # Every configured fingerprint key: a request stored before a key rotation is a duplicate too.
    candidates = tokens.fingerprint_candidates(message.task_token)
    existing = ApprovalRequest.objects.filter(token_fingerprint__in=candidates).first()
    if existing is not None:
        return existing, False

    # Who decides, under the admins' approver trust setting; a refusal is an ingest error.
    trusted = trust.approvers_resolve(message)
    received_at = timezone.now()
    policy = selectors.approval_policy_for(state_machine_arn=message.state_machine_arn, state_name=message.state_name)
    request, created = ApprovalRequest.objects.get_or_create(
        token_fingerprint=fingerprint,
        defaults={
            "title": message.title,
            "details": message.details,
            "requester_email": message.requester,
            "requester_user": trusted.requester_user,
            "ignored_approvers": trusted.ignored,
            "execution_arn": message.execution_arn,
            "state_machine_arn": message.state_machine_arn,
            "state_name": message.state_name,
            "deadline": _effective_deadline(message, received_at),
            "timeout_seconds": message.timeout_seconds,
            "heartbeat_seconds": message.heartbeat_seconds,
            "token_ciphertext": tokens.encrypt_token(message.task_token),
            "sqs_message_id": sqs_message_id,
            "received_at": received_at,
            "options": [option.as_json() for option in message.options] or None,
            "multiple_options": message.multiple,
            "form_schema": message.form,
            **_policy_fields(message, policy),
        },
    )
    if not created:  # a concurrent consumer won the race
        return request, False

    users, groups, rule = trusted.users, trusted.groups, trusted.rule
    Assignment.objects.bulk_create(
        [Assignment(request=request, kind=Assignment.Kind.USER, value=email) for email in users]
        + [Assignment(request=request, kind=Assignment.Kind.GROUP, value=name) for name in groups]
    )
    audit(
        action="ingested",
        request=request,
        actor=None,
        sqs_message_id=sqs_message_id,
        users=users,
        groups=groups,
        routed_to_default_group=trusted.routed_to_default,
        routing_rule={"id": rule.pk, "name": rule.name} if rule is not None else None,
        policy=request.policy,
        policy_default={"id": policy.pk, "name": policy.name} if policy is not None else None,
        approver_trust={"id": trusted.setting.pk, "name": trusted.setting.name} if trusted.setting else None,
        approver_trust_mode=trusted.mode,
        ignored_approvers=trusted.ignored,
    )
    approval_notify(request=request, kind="new_request")  # exception-safe; sent after commit
    bind_log_context(approval_id=request.public_id)
    metrics.request_ingested(state_machine_arn=request.state_machine_arn)
    logger.info("ingested approval request %s from message %s", request.public_id, sqs_message_id)
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


def received_message_ingest(*, sqs_message_id: str, body: str | bytes, max_bytes: int) -> IngestError | None:
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
    """
    try:
        message = parse_message(body, max_bytes=max_bytes)
    except ContractError as error:
        return ingest_error_record(sqs_message_id=sqs_message_id, error=error, body=body)
    try:
        approval_request_ingest(message=message, sqs_message_id=sqs_message_id)
    except ContractError as error:  # a rule applied at store time refused it
        return ingest_error_record(sqs_message_id=sqs_message_id, error=error, body=body)
    except Exception as error:  # noqa: BLE001 - recorded for this message, logged with its traceback
        if _database_unavailable(error):
            raise
        if ApprovalRequest.objects.filter(token_fingerprint=tokens.fingerprint_token(message.task_token)).exists():
            # Raised after the commit (an on-commit hook), or a concurrent consumer stored the
            # same token: the request is there, so the message is done, not failed.
            logger.error("message %s stored, then %s was raised after the commit", sqs_message_id, type(error).__name__)
            return None
        token = message.task_token
        return _store_failure_record(sqs_message_id=sqs_message_id, error=error, body=body, task_token=token)
    return None


def _store_failure_record(*, sqs_message_id: str, error: Exception, body: str | bytes, task_token: str) -> IngestError:
    # The exception's text and traceback may quote what was being stored (the token too, in
    # a bug's message): redacted with the token itself, not only by its shape.
    first_line = (str(error).strip().splitlines() or [""])[0][:_MAX_FAILURE_TEXT]
    reason = redact(f"could not store the message: {type(error).__name__}: {first_line}".rstrip(": "), task_token)
    trace = redact("".join(traceback.format_exception(error)), task_token)
    logger.error("message %s could not be stored (%s); traceback:\n%s", sqs_message_id, type(error).__name__, trace)
    return _ingest_error_upsert(sqs_message_id=sqs_message_id, code="store_failed", reason=reason, body=body)


@transaction.atomic
def ingest_error_record(*, sqs_message_id: str, error: ContractError, body: str | bytes) -> IngestError:
    """Record a message that broke the contract, once per message however often it returns."""
    return _ingest_error_upsert(sqs_message_id=sqs_message_id, code=error.code, reason=error.message, body=body)


@transaction.atomic
def _ingest_error_upsert(*, sqs_message_id: str, code: str, reason: str, body: str | bytes) -> IngestError:
    """One row per message however often it comes (again from the queue, or replayed): the
    newest reason, counted; the message kept encrypted unless it was erased."""
    metrics.ingest_error(reason=code)
    now = timezone.now()
    row = IngestError.objects.select_for_update().filter(sqs_message_id=sqs_message_id).first()
    if row is not None:
        row.receive_count += 1
        row.last_seen_at = now
        row.code = code
        row.reason = redact(reason)
        fields = ["receive_count", "last_seen_at", "code", "reason"]
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
        first_seen_at=now,
        last_seen_at=now,
    )
    audit(action="ingest_error", request=None, actor=None, sqs_message_id=sqs_message_id, code=code)
    logger.warning("message %s refused: %s (%s)", sqs_message_id, code, redact(reason))
    return row


def _message_encrypt(body: str | bytes) -> str:
    # The message holds a task token (or may): kept like one, with the same keys.
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return tokens.encrypt_token(text)
