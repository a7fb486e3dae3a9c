"""The callback outbox: claiming a row, and recording what Step Functions answered."""

import json
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from approvals import metrics, tokens
from approvals.models import ApprovalRequest, Callback, CallbackStatus, RequestStatus
from approvals.redaction import redact
from approvals.services.common import MAX_CAUSE_LENGTH, MAX_ERROR_LENGTH, audit
from approvals.services.recheck import RECHECK_FAILED, decision_recheck

# Step Functions' limits, checked before the call so a refusal is ours, clear and recorded.
MAX_OUTPUT_BYTES = 262_144
MAX_TOKEN_LENGTH = 2048


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
    callback = Callback.objects.select_for_update(of=("self",)).select_related("request").filter(pk=callback_id).first()
    if callback is None or callback.status in {CallbackStatus.DELIVERED, CallbackStatus.FAILED}:
        return None
    request = callback.request
    stale = timezone.now() - timedelta(seconds=settings.CALLBACK_STALE_SECONDS)
    if callback.status == CallbackStatus.SENDING and callback.updated_at > stale:
        return None  # another worker is sending it right now

    if request.status in {RequestStatus.APPROVED, RequestStatus.REJECTED}:
        # The same rule as the decision, once more (approvals/services/recheck.py): a vote that
        # no longer holds is withdrawn, and the request reopens unless the rest still decide it.
        maybe_delivered = callback.attempts > 0 and callback.error_code not in NOT_SENT_CODES
        recheck = decision_recheck(callback, maybe_delivered=maybe_delivered)
        if recheck.reopened:
            return None
        if not recheck.send:
            _callback_fail(callback, code=RECHECK_FAILED, message=recheck.failure)
            return None

    try:
        task_token = tokens.decrypt_token(request.token_ciphertext)
    except tokens.TokenErasedError as error:
        # Erased after the retention period: the request closed long ago, nothing can be sent.
        _callback_fail(callback, code="token_erased", message=str(error))
        return None
    except tokens.TokenKeyError as error:
        # A key was dropped too early: retrying cannot help, an admin must restore the key.
        _callback_fail(callback, code="token_key_missing", message=str(error))
        return None
    too_large = _limit_violation(callback, task_token)
    if too_large:
        _callback_fail(callback, code="over_limit", message=too_large)
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


def output_size(output: dict) -> int:
    """The UTF-8 size of the output exactly as the gateway sends it."""
    return len(json.dumps(output, ensure_ascii=False).encode())


def _limit_violation(callback: Callback, task_token: str) -> str:
    if len(task_token) > MAX_TOKEN_LENGTH:
        return f"the task token is longer than {MAX_TOKEN_LENGTH} characters"
    if callback.kind == Callback.Kind.SUCCESS:
        size = output_size(callback.payload["output"])
        if size > MAX_OUTPUT_BYTES:
            return f"the output is {size} bytes; Step Functions accepts at most {MAX_OUTPUT_BYTES}"
        return ""
    if len(callback.payload.get("error", "")) > MAX_ERROR_LENGTH:
        return f"the error is longer than {MAX_ERROR_LENGTH} characters"
    if len(callback.payload.get("cause", "")) > MAX_CAUSE_LENGTH:
        return f"the cause is longer than {MAX_CAUSE_LENGTH} characters"
    return ""


def _callback_fail(callback: Callback, *, code: str, message: str) -> None:
    callback.status = CallbackStatus.FAILED
    callback.error_code = code
    callback.last_error = redact(message)[:2000]
    callback.next_attempt_at = None
    callback.save(update_fields=["status", "error_code", "last_error", "next_attempt_at", "updated_at"])
    audit(action="callback_failed", request=callback.request, actor=None, code=code, message=callback.last_error)
    metrics.callback_failed(code=code)


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
    metrics.callback_delivered(callback)


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
    metrics.callback_retried(code=code)
    return True


# Step Functions' answers that mean the task is gone: no retry can help.
CLOSED_TASK_CODES = {"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"}
# Transient failures where the request certainly did not reach (or was refused by) AWS.
NOT_SENT_CODES = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestThrottled",
    "EndpointConnectionError",
    "ConnectTimeoutError",
}


@transaction.atomic
def callback_mark_failed(*, callback_id: int, code: str, message: str) -> None:
    """A permanent outcome. A task closed in Step Functions shows the request as expired.

    After an ambiguous attempt (its response lost, so it may have been delivered) a "closed"
    answer is expected and proves nothing: the decision is kept and the doubt recorded.
    """
    callback = Callback.objects.select_for_update(of=("self",)).select_related("request").get(pk=callback_id)
    if callback.status in {CallbackStatus.DELIVERED, CallbackStatus.FAILED}:
        return
    # The previous attempt failed in a way where AWS may still have acted on it.
    ambiguous = callback.attempts > 1 and callback.error_code not in {"", *NOT_SENT_CODES}
    if code in CLOSED_TASK_CODES and ambiguous:
        message = f"{message} (an earlier attempt's response was lost: it may have been delivered)"
    _callback_fail(callback, code=code, message=message)
    if code in CLOSED_TASK_CODES and not ambiguous:
        _close_request(callback.request, code=code)


def _close_request(request: ApprovalRequest, *, code: str) -> None:
    """Step Functions stopped waiting (timeout, heartbeat missed, execution stopped)."""
    request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
    if request.status == RequestStatus.EXPIRED:
        return
    previous = request.status
    request.status = RequestStatus.EXPIRED
    request.decided_at = request.decided_at or timezone.now()
    request.awaiting_info = False
    request.save(update_fields=["status", "decided_at", "awaiting_info", "updated_at"])
    audit(action="closed_by_step_functions", request=request, actor=None, code=code, previous_status=previous)
    if previous == RequestStatus.PENDING:
        # Nobody decided: the requester still hears how it ended (a decision already told them).
        from approvals.services.notifications import approval_notify

        approval_notify(request=request, kind="outcome")


@transaction.atomic
def callbacks_lease_stale(*, limit: int = 200) -> list[int]:
    """Claim a lease on callbacks whose delivery was lost, so several relays never share one.

    SKIP LOCKED lets concurrent sweeps take disjoint rows; bumping updated_at is the lease:
    the row is not stale again until CALLBACK_STALE_SECONDS pass.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.CALLBACK_STALE_SECONDS)
    rows = list(
        Callback.objects.select_for_update(skip_locked=True).filter(_stale(cutoff)).order_by("updated_at")[:limit]
    )
    ids = [row.pk for row in rows]
    if ids:
        Callback.objects.filter(pk__in=ids).update(updated_at=now)
    return ids


def _stale(cutoff) -> Q:
    return Q(status__in=[CallbackStatus.PENDING, CallbackStatus.SENDING], updated_at__lte=cutoff) | Q(
        status=CallbackStatus.RETRYING, next_attempt_at__lte=cutoff, updated_at__lte=cutoff
    )


# ---------------------------------------------------------------------------
# Heartbeats: keep a waiting task alive (HeartbeatSeconds) until it is decided
# ---------------------------------------------------------------------------
def heartbeat_token(*, request_id: int) -> str | None:
    """The token to send a heartbeat for, or None when the request no longer waits."""
    request = ApprovalRequest.objects.filter(pk=request_id, status=RequestStatus.PENDING).first()
    if request is None:
        return None
    try:
        return tokens.decrypt_token(request.token_ciphertext)
    except tokens.TokenKeyError:
        return None


def heartbeat_recorded(*, request_id: int) -> None:
    # A timestamp, not a state change: no audit event for every heartbeat.
    ApprovalRequest.objects.filter(pk=request_id).update(last_heartbeat_at=timezone.now())


@transaction.atomic
def approval_close_by_step_functions(*, request_id: int, code: str) -> None:
    """A heartbeat answered TaskTimedOut/InvalidToken: the execution no longer waits."""
    request = ApprovalRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is not None and request.status == RequestStatus.PENDING:
        _close_request(request, code=code)
