"""Every state change of the portal: atomic, audited, side effects on commit.

Views, admin actions, management commands and Celery tasks call these functions; they never
write the models themselves.
"""

import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import permissions, tokens
from approvals.contract import ApprovalMessage, ContractError
from approvals.models import (
    ApprovalRequest,
    Assignment,
    AuditEvent,
    Callback,
    CallbackStatus,
    IngestError,
    RequestStatus,
    User,
)
from approvals.redaction import redact, redact_body

logger = logging.getLogger(__name__)

SYSTEM = "system"
# SendTaskFailure's documented limits.
MAX_ERROR_LENGTH = 256
MAX_CAUSE_LENGTH = 32768


class ApprovalError(Exception):
    """A refused or impossible action, with a code the views map to a page and status."""

    def __init__(self, message: str, code: str, *, request: ApprovalRequest | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.request = request


def _audit(*, action: str, request: ApprovalRequest | None, actor: User | None, **data) -> AuditEvent:
    label = actor.email or actor.get_username() if actor is not None else SYSTEM
    return AuditEvent.objects.create(request=request, actor=actor, actor_label=label, action=action, data=data)


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


@transaction.atomic
def approval_request_ingest(*, message: ApprovalMessage, sqs_message_id: str = "") -> tuple[ApprovalRequest, bool]:
    """Create the request for a queue message; the same token again returns the existing one."""
    fingerprint = tokens.fingerprint_token(message.task_token)
    existing = ApprovalRequest.objects.filter(token_fingerprint=fingerprint).first()
    if existing is not None:
        return existing, False

    received_at = timezone.now()
    request, created = ApprovalRequest.objects.get_or_create(
        token_fingerprint=fingerprint,
        defaults={
            "title": message.title,
            "details": message.details,
            "requester_email": message.requester,
            "execution_arn": message.execution_arn,
            "state_machine_arn": message.state_machine_arn,
            "state_name": message.state_name,
            "deadline": _effective_deadline(message, received_at),
            "timeout_seconds": message.timeout_seconds,
            "heartbeat_seconds": message.heartbeat_seconds,
            "token_ciphertext": tokens.encrypt_token(message.task_token),
            "sqs_message_id": sqs_message_id,
            "received_at": received_at,
        },
    )
    if not created:  # a concurrent consumer won the race
        return request, False

    users = list(message.approver_users)
    groups = list(message.approver_groups)
    routed_to_default = not users and not groups
    if routed_to_default:
        groups = [settings.APPROVAL_DEFAULT_GROUP]
    Assignment.objects.bulk_create(
        [Assignment(request=request, kind=Assignment.Kind.USER, value=email) for email in users]
        + [Assignment(request=request, kind=Assignment.Kind.GROUP, value=name) for name in groups]
    )
    _audit(
        action="ingested",
        request=request,
        actor=None,
        sqs_message_id=sqs_message_id,
        users=users,
        groups=groups,
        routed_to_default_group=routed_to_default,
    )
    logger.info("ingested approval request %s from message %s", request.public_id, sqs_message_id)
    return request, True


@transaction.atomic
def ingest_error_record(*, sqs_message_id: str, error: ContractError, body: str | bytes) -> IngestError:
    """Record a message that broke the contract, once per message however often it returns."""
    now = timezone.now()
    row = IngestError.objects.select_for_update().filter(sqs_message_id=sqs_message_id).first()
    if row is not None:
        row.receive_count += 1
        row.last_seen_at = now
        row.save(update_fields=["receive_count", "last_seen_at"])
        return row
    row = IngestError.objects.create(
        sqs_message_id=sqs_message_id,
        code=error.code,
        reason=redact(error.message),
        body_redacted=redact_body(body),
        first_seen_at=now,
        last_seen_at=now,
    )
    _audit(action="ingest_error", request=None, actor=None, sqs_message_id=sqs_message_id, code=error.code)
    logger.warning("message %s refused: %s (%s)", sqs_message_id, error.code, redact(error.message))
    return row


# ---------------------------------------------------------------------------
# Decide
# ---------------------------------------------------------------------------
def _identity(user: User) -> dict:
    return {"email": user.email, "sub": user.oidc_sub, "issuer": user.oidc_issuer}


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _callback_payload(request: ApprovalRequest, *, approved: bool) -> tuple[str, dict]:
    outcome = {
        "requestId": str(request.public_id),
        "decision": request.status,
        "decidedBy": _identity(request.decided_by),
        "decidedAt": request.decided_at.isoformat(),
        "comment": request.decision_comment,
    }
    if approved:
        return Callback.Kind.SUCCESS, {"output": {"approved": True, **outcome}}
    cause = json.dumps({"approved": False, **outcome}, ensure_ascii=False)
    return Callback.Kind.FAILURE, {"error": "ApprovalDenied", "cause": _truncate(cause, MAX_CAUSE_LENGTH)}


def _queue_callback(callback: Callback) -> None:
    from worker.tasks import deliver_callback  # worker imports services; import late

    transaction.on_commit(lambda: deliver_callback.delay(callback.pk))


@transaction.atomic
def _decide(*, public_id, user: User, approve: bool, comment: str) -> ApprovalRequest:
    request = (
        ApprovalRequest.objects.select_for_update(of=("self",))
        .select_related("decided_by")
        .filter(public_id=public_id)
        .first()
    )
    if request is None:
        raise ApprovalError("This approval request does not exist.", "not_found")
    refusal = permissions.decision_refusal(user, request)
    if refusal is not None:
        raise ApprovalError(refusal.message, refusal.code, request=request)

    request.status = RequestStatus.APPROVED if approve else RequestStatus.REJECTED
    request.decided_by = user
    request.decided_at = timezone.now()
    request.decision_comment = comment
    request.save(update_fields=["status", "decided_by", "decided_at", "decision_comment", "updated_at"])
    kind, payload = _callback_payload(request, approved=approve)
    callback = Callback.objects.create(request=request, kind=kind, payload=payload)
    _audit(action=request.status, request=request, actor=user, comment=comment)
    _queue_callback(callback)
    return request


def approval_decide(*, public_id, user: User, approve: bool, comment: str = "", via: str = "web") -> ApprovalRequest:
    """Approve or reject. Raises ApprovalError (and audits the refusal) when not allowed."""
    comment = comment.strip()
    try:
        return _decide(public_id=public_id, user=user, approve=approve, comment=comment)
    except ApprovalError as error:
        # The decision's transaction rolled back; the refusal is recorded on its own.
        refusal_record(
            user=user,
            request=error.request,
            code=error.code,
            attempted="approve" if approve else "reject",
            via=via,
            public_id=str(public_id),
        )
        raise


@transaction.atomic
def refusal_record(*, user: User, request: ApprovalRequest | None, code: str, attempted: str, **data) -> AuditEvent:
    """Every refused attempt is visible to admins: who, what, why."""
    logger.info("refused %s for %s: %s", attempted, user.email or user.pk, code)
    return _audit(action="decision_refused", request=request, actor=user, code=code, attempted=attempted, **data)


# ---------------------------------------------------------------------------
# Expiry
# ---------------------------------------------------------------------------
@transaction.atomic
def approval_expire(*, request_id: int) -> bool:
    """Close a pending request whose deadline passed; tell Step Functions ApprovalExpired."""
    request = ApprovalRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None or not request.is_pending or not request.is_overdue:
        return False
    request.status = RequestStatus.EXPIRED
    request.decided_at = timezone.now()
    request.save(update_fields=["status", "decided_at", "updated_at"])
    cause = json.dumps({"requestId": str(request.public_id), "deadline": request.deadline.isoformat()})
    callback = Callback.objects.create(
        request=request, kind=Callback.Kind.FAILURE, payload={"error": "ApprovalExpired", "cause": cause}
    )
    _audit(action="expired", request=request, actor=None, deadline=request.deadline.isoformat())
    _queue_callback(callback)
    return True


# ---------------------------------------------------------------------------
# Callback delivery (the outbox)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CallbackSend:
    """What the worker must send, handed out only after every check passed."""

    callback_id: int
    kind: str
    task_token: str = field(repr=False)
    payload: dict
    attempts: int


@transaction.atomic
def callback_claim(*, callback_id: int) -> CallbackSend | None:
    """Lock the row, re-check state and identity, mark it sending, and return what to send.

    None when there is nothing to send (already delivered, failed, or claimed moments ago).
    """
    callback = (
        Callback.objects.select_for_update(of=("self",))
        .select_related("request", "request__decided_by")
        .filter(pk=callback_id)
        .first()
    )
    if callback is None or callback.status in {CallbackStatus.DELIVERED, CallbackStatus.FAILED}:
        return None
    request = callback.request
    stale = timezone.now() - timedelta(seconds=settings.CALLBACK_STALE_SECONDS)
    if callback.status == CallbackStatus.SENDING and callback.updated_at > stale:
        return None  # another worker is sending it right now

    decider = request.decided_by
    if request.status in {RequestStatus.APPROVED, RequestStatus.REJECTED}:
        # The same rule as the decision, once more: the decider must still be allowed.
        refusal = permissions.identity_refusal(decider, request) if decider else None
        if decider is None or refusal is not None:
            reason = refusal.message if refusal else "The decision has no decider."
            _callback_fail(callback, code="identity_recheck_failed", message=reason)
            return None

    try:
        task_token = tokens.decrypt_token(request.token_ciphertext)
    except tokens.TokenKeyError as error:
        # A key was dropped too early: retrying cannot help, an admin must restore the key.
        _callback_fail(callback, code="token_key_missing", message=str(error))
        return None
    callback.status = CallbackStatus.SENDING
    callback.attempts += 1
    callback.save(update_fields=["status", "attempts", "updated_at"])
    return CallbackSend(
        callback_id=callback.pk,
        kind=callback.kind,
        task_token=task_token,
        payload=callback.payload,
        attempts=callback.attempts,
    )


def _callback_fail(callback: Callback, *, code: str, message: str) -> None:
    callback.status = CallbackStatus.FAILED
    callback.error_code = code
    callback.last_error = redact(message)[:2000]
    callback.next_attempt_at = None
    callback.save(update_fields=["status", "error_code", "last_error", "next_attempt_at", "updated_at"])
    _audit(action="callback_failed", request=callback.request, actor=None, code=code, message=callback.last_error)


@transaction.atomic
def callback_mark_delivered(*, callback_id: int) -> None:
    callback = Callback.objects.select_for_update(of=("self",)).select_related("request").get(pk=callback_id)
    if callback.status == CallbackStatus.DELIVERED:
        return
    callback.status = CallbackStatus.DELIVERED
    callback.delivered_at = timezone.now()
    callback.error_code = ""
    callback.next_attempt_at = None
    callback.save(update_fields=["status", "delivered_at", "error_code", "next_attempt_at", "updated_at"])
    _audit(action="callback_delivered", request=callback.request, actor=None, attempts=callback.attempts)


@transaction.atomic
def callback_mark_retrying(*, callback_id: int, code: str, message: str, retry_in: float) -> bool:
    """Record a transient failure. False when the attempts are used up (then it failed)."""
    callback = Callback.objects.select_for_update(of=("self",)).select_related("request").get(pk=callback_id)
    if callback.status == CallbackStatus.DELIVERED:
        return False
    if callback.attempts >= settings.CALLBACK_MAX_ATTEMPTS:
        _callback_fail(callback, code=code, message=f"gave up after {callback.attempts} attempts: {message}")
        return False
    callback.status = CallbackStatus.RETRYING
    callback.error_code = code
    callback.last_error = redact(message)[:2000]
    callback.next_attempt_at = timezone.now() + timedelta(seconds=retry_in)
    callback.save(update_fields=["status", "error_code", "last_error", "next_attempt_at", "updated_at"])
    return True


# Step Functions' answers that mean the task is gone: no retry can help.
CLOSED_TASK_CODES = {"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"}


@transaction.atomic
def callback_mark_failed(*, callback_id: int, code: str, message: str) -> None:
    """A permanent outcome. A task closed elsewhere leaves a pending-looking request expired."""
    callback = Callback.objects.select_for_update(of=("self",)).select_related("request").get(pk=callback_id)
    if callback.status in {CallbackStatus.DELIVERED, CallbackStatus.FAILED}:
        return
    _callback_fail(callback, code=code, message=message)


# ---------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------
def token_keys_rotate(*, actor: User | None = None, batch_size: int = 500) -> int:
    """Re-encrypt every stored task token with the newest key in TOKEN_ENCRYPTION_KEYS.

    Rotation: put a new key first in the list and deploy, run this, then drop the old key.
    Each batch is its own transaction, so a long run never holds many locks.
    """
    rotated = 0
    last_pk = 0
    while True:
        with transaction.atomic():
            batch = list(
                ApprovalRequest.objects.select_for_update()
                .filter(pk__gt=last_pk)
                .order_by("pk")
                .only("pk", "token_ciphertext")[:batch_size]
            )
            if not batch:
                break
            for request in batch:
                request.token_ciphertext = tokens.rotate_token(request.token_ciphertext)
            ApprovalRequest.objects.bulk_update(batch, ["token_ciphertext"])
            rotated += len(batch)
            last_pk = batch[-1].pk
    with transaction.atomic():
        _audit(action="token_keys_rotated", request=None, actor=actor, count=rotated)
    return rotated
