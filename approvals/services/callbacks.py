"""The callback outbox: claiming a row, and recording what Step Functions answered."""

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import permissions, tokens
from approvals.models import Callback, CallbackStatus, RequestStatus
from approvals.redaction import redact
from approvals.services.common import audit


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
    audit(action="callback_failed", request=callback.request, actor=None, code=code, message=callback.last_error)


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
    audit(action="callback_delivered", request=callback.request, actor=None, attempts=callback.attempts)


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
