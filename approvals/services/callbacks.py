"""The callback outbox: queueing a delivery, claiming a row, recording what Step Functions answered,
and an admin's retry."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from approvals import tokens
from approvals.delivery import ExecutionReading
from approvals.integrations.aws import AwsRoute
from approvals.models import (
    ApprovalRequest,
    AuditAction,
    Callback,
    CallbackResolution,
    CallbackStatus,
    RequestStatus,
    User,
)
from approvals.ops import metrics
from approvals.redaction import redact
from approvals.selectors.sources import source_route
from approvals.services.common import (
    MAX_CAUSE_LENGTH,
    MAX_ERROR_LENGTH,
    ApprovalError,
    audit,
    audit_system_many,
    enqueue_on_commit,
)
from approvals.services.notifications import approval_decided_notify, approval_notify, outcomes_notify
from approvals.services.payloads import MAX_OUTPUT_BYTES, output_size
from approvals.services.recheck import RECHECK_FAILED, decision_recheck, recheck_load
from approvals.services.workflow_gone import FOUND_BY_CALLBACK, close_request_workflow_gone
from approvals.stepfunctions import CLOSED_TASK_CODES, NOT_SENT_CODES, TOKEN_UNKNOWN_CODES

# Step Functions' limits, checked before the call so a refusal is ours, clear and recorded.
MAX_TOKEN_LENGTH = 2048


# The delivery task (approvals/tasks/callbacks.py), enqueued by name.
DELIVER_CALLBACK = "worker.tasks.deliver_callback"


def queue_callback(callback: Callback) -> None:
    """Deliver the callback once the decision has committed (approvals/tasks/callbacks.py); if it
    cannot be queued then, the row stays pending and the outbox sweep delivers it."""
    enqueue_on_commit(DELIVER_CALLBACK, callback_id=callback.pk)


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
    # An earlier attempt may have been delivered: a "task closed" answer must be checked
    # against the execution (its ARN, "" when the message named none).
    maybe_delivered: bool = False
    execution_arn: str = ""
    # Where the Send* call goes: the execution's region with its source's role (None: the
    # default source's region and the portal's own credentials; selectors/sources.py).
    route: AwsRoute | None = None
    # When this claim's lease runs out: after it another worker may have taken the row (as a lost
    # attempt) and sent it, so a call not begun by then is not made (tasks/callbacks.py).
    lease_ends: datetime | None = None


# error_code of an attempt whose worker was lost before it recorded the result.
LEASE_EXPIRED = "lease_expired"
LEASE_EXPIRED_MESSAGE = "the previous attempt stopped before its result was recorded; it may have been delivered"


def callback_claim(*, callback_id: int) -> CallbackSend | None:
    """Claim one callback (callbacks_claim_batch with this id only). None when there is nothing
    to send (already delivered, failed, or claimed moments ago)."""
    sends = callbacks_claim_batch(callback_ids=[callback_id], limit=1)
    return sends[0] if sends else None


def _due(now, stale) -> Q:
    """What a batch may take besides the ids it was given: waiting to be sent, a retry whose
    time has come, an attempt whose worker was lost (sending for longer than the lease)."""
    return (
        Q(status=CallbackStatus.PENDING)
        | Q(status=CallbackStatus.RETRYING, next_attempt_at__lte=now)
        | Q(status=CallbackStatus.SENDING, updated_at__lte=stale)
    )


def _claimable(given: list[int], now, stale) -> tuple[bool, bool]:
    """Whether a claim would find anything to send, and whether anything besides the given ids
    is due: one small query, no lock, no transaction.

    In a burst every decision queued a task, and most find their callback already sent by an
    earlier task's batch: compiling and running the claim's locking reads (three tables joined)
    cost them 4 ms each, this a fraction. A single decision's task, with nothing else due, is
    spared the claim's read of what else is due. A row that becomes due after this read has a
    task or a sweep of its own, as when the claim itself finds nothing."""
    given_unsettled = (
        Q(pk__in=given)
        & ~Q(status__in=[CallbackStatus.DELIVERED, CallbackStatus.FAILED])
        & ~Q(status=CallbackStatus.SENDING, updated_at__gt=stale)
    )
    # One more row than the given ids: if as many match, one of them is not a given id.
    found = list(
        Callback.objects.filter(given_unsettled | _due(now, stale)).values_list("pk", flat=True)[: len(given) + 1]
    )
    return bool(found), any(pk not in given for pk in found)


def callbacks_claim_batch(*, callback_ids: Sequence[int] = (), limit: int) -> list[CallbackSend]:
    """Lock up to `limit` callbacks, re-check state and identity, mark them sending, and return
    what to send, in order: `callback_ids` first (the decision that queued the task, the rows a
    sweep leased), then whatever else is due, oldest first.

    The given ids are locked waiting (as a single claim always did: a row another transaction
    holds is about to change); the rest with SKIP LOCKED, so concurrent claimers take disjoint
    rows and never wait on each other (SQLite: a plain read, it has one writer). A row already
    delivered or failed, or being sent by another worker right now, is skipped: each row is
    claimed once per attempt. One transaction and a bounded number of statements whatever the
    batch's size (the re-check reads each voter's groups once: recheck.recheck_load).
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CALLBACK_STALE_SECONDS)
    given = list(dict.fromkeys(callback_ids))
    anything, others_due = _claimable(given, now, stale)
    if not anything:
        return []
    return _claim_batch(given, limit=limit, now=now, stale=stale, others_due=others_due)


@transaction.atomic
def _claim_batch(given: list[int], *, limit: int, now, stale, others_due: bool) -> list[CallbackSend]:
    # The request's details (up to the message's size limit, 50 times over) are for pages and
    # mail, not for any check here: never read.
    locked = Callback.objects.select_related("request", "request__source").defer("request__details").order_by("pk")
    rows: list[Callback] = []
    if given:
        rows = list(locked.select_for_update(of=("self",)).filter(pk__in=given))
        rows.sort(key=lambda row: given.index(row.pk))
    room = limit - len(rows)
    if room > 0 and others_due:
        more = locked.select_for_update(skip_locked=True, of=("self",)).filter(_due(now, stale)).exclude(pk__in=given)
        rows += list(more[:room])

    claimable = []
    for callback in rows:
        if callback.status in {CallbackStatus.DELIVERED, CallbackStatus.FAILED}:
            continue
        if callback.status == CallbackStatus.SENDING:
            if callback.updated_at > stale:
                continue  # another worker is sending it right now
            _record_lost_attempt(callback)
        claimable.append(callback)
    decided = [c for c in claimable if c.request.status in {RequestStatus.APPROVED, RequestStatus.REJECTED}]
    votes = recheck_load(decided)

    lease_ends = now + timedelta(seconds=settings.CALLBACK_STALE_SECONDS)
    sends: list[CallbackSend] = []
    for callback in claimable:
        send = _claim_one(callback, votes=votes.get(callback.request_id), lease_ends=lease_ends)
        if send is not None:
            sends.append(send)
    if sends:
        Callback.objects.filter(pk__in=[send.callback_id for send in sends]).update(
            status=CallbackStatus.SENDING, attempts=F("attempts") + 1, updated_at=now
        )
    return sends


def _claim_one(callback: Callback, *, votes, lease_ends) -> CallbackSend | None:
    """The checks before one row is sent (its row locked): None when it must not be (then it
    failed, or its request reopened), else what to send once it is marked sending."""
    request = callback.request
    if request.status in {RequestStatus.APPROVED, RequestStatus.REJECTED}:
        # The same rule as the decision, once more (approvals/services/recheck.py): a vote that
        # no longer holds is withdrawn, and the request reopens unless the rest still decide it.
        maybe_delivered = callback.maybe_delivered or (
            callback.attempts > 0 and callback.error_code not in NOT_SENT_CODES
        )
        recheck = decision_recheck(callback, maybe_delivered=maybe_delivered, votes=votes)
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
    return CallbackSend(
        callback_id=callback.pk,
        kind=callback.kind,
        task_token=task_token,
        payload=callback.payload,
        attempts=callback.attempts + 1,
        maybe_delivered=callback.maybe_delivered,
        execution_arn=request.execution_arn,
        route=source_route(request.source, execution_arn=request.execution_arn),
        lease_ends=lease_ends,
    )


def _record_lost_attempt(callback: Callback) -> None:
    """The attempt in flight was lost with its worker (between the call and its record)."""
    callback.status = CallbackStatus.RETRYING
    callback.maybe_delivered = True
    callback.error_code = LEASE_EXPIRED
    callback.last_error = LEASE_EXPIRED_MESSAGE
    callback.next_attempt_at = timezone.now()
    callback.save(update_fields=["status", "maybe_delivered", "error_code", "last_error", "next_attempt_at"])


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


def _callback_fail(callback: Callback, *, code: str, message: str, resolution: str = "") -> None:
    callback.status = CallbackStatus.FAILED
    callback.error_code = code
    callback.last_error = redact(message)[:2000]
    callback.next_attempt_at = None
    callback.resolution = resolution
    callback.save(update_fields=["status", "error_code", "last_error", "next_attempt_at", "resolution", "updated_at"])
    extra = {"resolution": resolution} if resolution else {}
    audit(
        action=AuditAction.CALLBACK_FAILED,
        request=callback.request,
        actor=None,
        code=code,
        message=callback.last_error,
        **extra,
    )
    metrics.callback_failed(code=code)
    _tell_requester(callback.request)


def _tell_requester(request: ApprovalRequest) -> None:
    """The outcome mail, once the callback's fate is known (delivered, or why it could not be)."""
    approval_notify(request=request, kind="outcome", close_slack=False)  # the Slack buttons closed at the decision


def callback_mark_delivered(*, callback_id: int) -> None:
    callbacks_mark_delivered(callback_ids=[callback_id])


@transaction.atomic
def callbacks_mark_delivered(*, callback_ids: Sequence[int]) -> None:
    """Step Functions accepted these: delivered, each with its audit event, metric and the
    requester's outcome mail, in one transaction (a row already delivered is left as it is)."""
    rows = list(
        Callback.objects.select_for_update(of=("self",))
        .select_related("request")
        # What the record reads: the audit events and mails name the request, the mail goes to its
        # requester, the metric reads the callback's kind and age (50 whole requests cost more
        # than the rest of the record).
        .only("kind", "attempts", "created_at", "request__requester_email")
        .filter(pk__in=list(callback_ids))
        .exclude(status=CallbackStatus.DELIVERED)
        .order_by("pk")
    )
    if not rows:
        return
    now = timezone.now()
    Callback.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=CallbackStatus.DELIVERED,
        delivered_at=now,
        error_code="",
        next_attempt_at=None,
        resolution="",
        updated_at=now,
    )
    audit_system_many(
        action=AuditAction.CALLBACK_DELIVERED, events=[(row.request, {"attempts": row.attempts}) for row in rows]
    )
    for row in rows:
        row.status, row.delivered_at = CallbackStatus.DELIVERED, now
        metrics.callback_delivered(row)
    # The requesters' outcome mails, planned for the whole batch at once (the Slack buttons
    # closed at the decision).
    outcomes_notify(requests=[row.request for row in rows])


def _callback_delivered(callback: Callback, *, resolution: str = "") -> None:
    callback.status = CallbackStatus.DELIVERED
    callback.delivered_at = timezone.now()
    callback.error_code = ""
    callback.next_attempt_at = None
    callback.resolution = resolution
    callback.save(update_fields=["status", "delivered_at", "error_code", "next_attempt_at", "resolution", "updated_at"])
    extra = {"resolution": resolution} if resolution else {}
    audit(
        action=AuditAction.CALLBACK_DELIVERED, request=callback.request, actor=None, attempts=callback.attempts, **extra
    )
    metrics.callback_delivered(callback)
    _tell_requester(callback.request)


@dataclass(frozen=True)
class TransientFailure:
    """A Send* call that may work later: its callback, AWS's code and message, the backoff."""

    callback_id: int
    code: str
    message: str
    retry_in: float


def callback_mark_retrying(*, callback_id: int, code: str, message: str, retry_in: float) -> bool:
    """Record a transient failure. False when the attempts are used up (then it failed)."""
    failure = TransientFailure(callback_id=callback_id, code=code, message=message, retry_in=retry_in)
    return callback_id in callbacks_mark_retrying(failures=[failure])


@transaction.atomic
def callbacks_mark_retrying(*, failures: Sequence[TransientFailure]) -> set[int]:
    """Record transient failures in one transaction; returns the ids to retry (the others used
    up their attempts and failed, or were delivered meanwhile)."""
    by_id = {failure.callback_id: failure for failure in failures}
    rows = list(
        Callback.objects.select_for_update(of=("self",))
        .select_related("request")
        .filter(pk__in=list(by_id))
        .order_by("pk")
    )
    now = timezone.now()
    retrying: list[Callback] = []
    for callback in rows:
        failure = by_id[callback.pk]
        code = failure.code
        if callback.status == CallbackStatus.DELIVERED:
            continue
        if callback.attempts >= settings.CALLBACK_MAX_ATTEMPTS:
            # Some attempt may have reached AWS (a timeout, a 5xx): then nobody knows, say so.
            maybe = callback.maybe_delivered or code not in NOT_SENT_CODES
            resolution = CallbackResolution.UNCERTAIN if maybe else ""
            message = f"gave up after {callback.attempts} attempts: {failure.message}"
            _callback_fail(callback, code=code, message=message, resolution=resolution)
            continue
        callback.status = CallbackStatus.RETRYING
        callback.error_code = code
        callback.last_error = redact(failure.message)[:2000]
        callback.next_attempt_at = now + timedelta(seconds=failure.retry_in)
        # A timeout or a 5xx may have been acted on by AWS; a throttle or no connection was not.
        callback.maybe_delivered = callback.maybe_delivered or code not in NOT_SENT_CODES
        callback.updated_at = now
        retrying.append(callback)
        metrics.callback_retried(code=code)
    if retrying:
        Callback.objects.bulk_update(
            retrying, ["status", "error_code", "last_error", "next_attempt_at", "maybe_delivered", "updated_at"]
        )
    return {callback.pk for callback in retrying}


@transaction.atomic
def callback_mark_failed(
    *,
    callback_id: int,
    code: str,
    message: str,
    reading: ExecutionReading | None = None,
    read_error: str = "",
    execution_gone: bool = False,
) -> str:
    """A permanent outcome; returns what the callback became (delivered / failed).

    A task closed in Step Functions shows the request as closed by Step Functions. After an
    attempt that may have been delivered (`maybe_delivered`), such an answer proves nothing: the
    caller read the execution (`reading`, or why it could not: `read_error`) and that decides —
    our output in the history means delivered (confirmed), the task timed out or the execution
    ended without it means closed, anything else is "delivery uncertain" and the decision stands.
    `execution_gone`: the token was refused and DescribeExecution says the execution does not
    exist (a restarted AWS emulator forgot it): the system closes the request.
    """
    callback = Callback.objects.select_for_update(of=("self",)).select_related("request").get(pk=callback_id)
    return _mark_failed(
        callback, code=code, message=message, reading=reading, read_error=read_error, execution_gone=execution_gone
    )


@dataclass(frozen=True)
class PermanentFailure:
    """A Send* call refused for good, with what the caller learnt about the execution (see
    callback_mark_failed)."""

    callback_id: int
    code: str
    message: str
    reading: ExecutionReading | None = None
    read_error: str = ""
    execution_gone: bool = False


@transaction.atomic
def callbacks_mark_failed(*, failures: Sequence[PermanentFailure]) -> dict[int, str]:
    """callback_mark_failed for each, in one transaction; returns what each callback became."""
    by_id = {failure.callback_id: failure for failure in failures}
    rows = Callback.objects.select_for_update(of=("self",)).select_related("request").filter(pk__in=list(by_id))
    outcomes = {}
    for callback in rows.order_by("pk"):
        failure = by_id[callback.pk]
        outcomes[callback.pk] = _mark_failed(
            callback,
            code=failure.code,
            message=failure.message,
            reading=failure.reading,
            read_error=failure.read_error,
            execution_gone=failure.execution_gone,
        )
    return outcomes


def _mark_failed(
    callback: Callback,
    *,
    code: str,
    message: str,
    reading: ExecutionReading | None,
    read_error: str,
    execution_gone: bool,
) -> str:
    if callback.status in {CallbackStatus.DELIVERED, CallbackStatus.FAILED}:
        return callback.status
    if code not in CLOSED_TASK_CODES:
        _callback_fail(callback, code=code, message=message)
        return CallbackStatus.FAILED
    if execution_gone and code in TOKEN_UNKNOWN_CODES:
        _callback_fail(
            callback,
            code=code,
            message=f"{message}; the execution no longer exists",
            resolution=CallbackResolution.GONE,
        )
        close_request_workflow_gone(callback.request, found_by=FOUND_BY_CALLBACK, code=code)
        return CallbackStatus.FAILED
    if not callback.maybe_delivered:
        _callback_fail(callback, code=code, message=message, resolution=CallbackResolution.CLOSED)
        _close_request(callback.request, code=code)
        return CallbackStatus.FAILED
    resolution, why = _settle_from_execution(callback, reading, read_error)
    if resolution == CallbackResolution.CONFIRMED:
        _callback_delivered(callback, resolution=resolution)
        return CallbackStatus.DELIVERED
    _callback_fail(callback, code=code, message=f"{message}; {why}", resolution=resolution)
    if resolution == CallbackResolution.CLOSED:
        _close_request(callback.request, code=code)
    return CallbackStatus.FAILED


def _settle_from_execution(callback: Callback, reading: ExecutionReading | None, read_error: str) -> tuple[str, str]:
    """(resolution, why) for a closed answer after an attempt that may have been delivered.

    The execution ARN is the message's claim; only our secret token (in the TaskScheduled event
    that issued it) ties an event to our task, so an execution that is not ours can at worst
    leave the delivery uncertain, never confirm it.
    """
    if reading is None:
        return CallbackResolution.UNCERTAIN, f"an earlier attempt may have been delivered, and {read_error}"
    request_id = str(callback.request.public_id)
    ours = [closure for closure in reading.closures if closure.ours]
    if callback.kind == Callback.Kind.SUCCESS:
        if any(c.event == "TaskSucceeded" and _names_request(c.output, request_id) for c in ours):
            return CallbackResolution.CONFIRMED, "the execution history shows our output"
        # A history longer than the gateway reads may end before our task does: a succeeded
        # execution whose output carries our request id (the example keeps it under $.approval).
        if not reading.complete and reading.status == "SUCCEEDED" and request_id in reading.output:
            return CallbackResolution.CONFIRMED, "the execution's output shows our decision"
    else:
        error = callback.payload.get("error", "")
        # AWS keeps the cause we sent (it names the request); moto drops it.
        if any(c.event == "TaskFailed" and c.error == error and (request_id in c.cause or not c.cause) for c in ours):
            return CallbackResolution.CONFIRMED, "the execution history shows our error"
    if any(closure.event == "TaskTimedOut" for closure in ours):
        return CallbackResolution.CLOSED, "the execution history shows the task timed out before it arrived"
    if ours:
        return CallbackResolution.CLOSED, "the execution history shows the task was answered with something else"
    if reading.task_found and reading.complete and reading.status not in {"RUNNING", ""}:
        return CallbackResolution.CLOSED, f"the execution ended ({reading.status}) without it"
    status = reading.status or "unknown"
    return CallbackResolution.UNCERTAIN, f"the execution ({status}) does not show what became of it"


def _names_request(output: str, request_id: str) -> bool:
    try:
        data = json.loads(output)
    except ValueError:
        return request_id in output  # cut short: the id still tells
    return isinstance(data, dict) and data.get("requestId") == request_id


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
    audit(action=AuditAction.CLOSED_BY_STEP_FUNCTIONS, request=request, actor=None, code=code, previous_status=previous)
    if previous == RequestStatus.PENDING:
        # Nobody decided (no callback): the requester still hears how it ended.
        approval_notify(request=request, kind="outcome")
    else:
        # The Slack messages closed at the decision said "Approved by …": no longer the outcome.
        approval_decided_notify(request=request)


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
    lost = [row.pk for row in rows if row.status == CallbackStatus.SENDING]
    if lost:
        # Their worker is gone mid-call; the claim must be able to take them again.
        Callback.objects.filter(pk__in=lost).update(
            status=CallbackStatus.RETRYING,
            maybe_delivered=True,
            error_code=LEASE_EXPIRED,
            last_error=LEASE_EXPIRED_MESSAGE,
            next_attempt_at=now,
        )
    return ids


def _stale(cutoff) -> Q:
    return Q(status__in=[CallbackStatus.PENDING, CallbackStatus.SENDING], updated_at__lte=cutoff) | Q(
        status=CallbackStatus.RETRYING, next_attempt_at__lte=cutoff, updated_at__lte=cutoff
    )


# ---------------------------------------------------------------------------
# Heartbeats: keep a waiting task alive (HeartbeatSeconds) until it is decided
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HeartbeatSend:
    """What a heartbeat needs, from one read of the request."""

    task_token: str = field(repr=False)
    # The execution's region, with its source's role (selectors/sources.py).
    route: AwsRoute | None
    execution_arn: str


def heartbeat_send(*, request_id: int) -> HeartbeatSend | None:
    """The heartbeat to send for a waiting request, or None when it no longer waits (or its
    token can no longer be read)."""
    request = (
        ApprovalRequest.objects.select_related("source").filter(pk=request_id, status=RequestStatus.PENDING).first()
    )
    if request is None:
        return None
    try:
        task_token = tokens.decrypt_token(request.token_ciphertext)
    except tokens.TokenKeyError:
        return None
    return HeartbeatSend(
        task_token=task_token,
        route=source_route(request.source, execution_arn=request.execution_arn),
        execution_arn=request.execution_arn,
    )


def heartbeat_recorded(*, request_id: int) -> None:
    # A timestamp, not a state change: no audit event for every heartbeat.
    ApprovalRequest.objects.filter(pk=request_id).update(last_heartbeat_at=timezone.now())


@transaction.atomic
def approval_close_by_step_functions(*, request_id: int, code: str) -> None:
    """A heartbeat answered TaskTimedOut/InvalidToken: the execution no longer waits."""
    request = ApprovalRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is not None and request.status == RequestStatus.PENDING:
        _close_request(request, code=code)


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------
@transaction.atomic
def callback_retry(*, callback_id: int, actor: User) -> Callback:
    """Send a failed callback again, with a fresh budget of CALLBACK_MAX_ATTEMPTS.

    The attempts start from zero again (what failed before is kept in the audit event): an
    admin retries after fixing the cause, e.g. restoring a dropped token key.
    """
    callback = Callback.objects.select_for_update(of=("self",)).select_related("request").filter(pk=callback_id).first()
    if callback is None:
        raise ApprovalError("This callback does not exist.", "not_found")
    if callback.status != CallbackStatus.FAILED:
        raise ApprovalError(
            f"Only a failed callback can be sent again; this one is {callback.get_status_display().lower()}.",
            "not_failed",
            request=callback.request,
        )
    if tokens.is_erased(callback.request.token_ciphertext):
        raise ApprovalError(
            "This request's task token was erased after the retention period (TOKEN_RETENTION_DAYS): "
            "nothing can be sent to Step Functions any more.",
            "token_erased",
            request=callback.request,
        )
    previous = {"attempts": callback.attempts, "error_code": callback.error_code, "error": callback.last_error}
    if callback.resolution:
        previous["resolution"] = callback.resolution
    callback.status = CallbackStatus.PENDING
    callback.attempts = 0
    callback.error_code = ""
    callback.last_error = ""
    callback.next_attempt_at = None
    callback.resolution = ""  # settled again by this attempt (maybe_delivered stays: the past is unchanged)
    callback.save(
        update_fields=["status", "attempts", "error_code", "last_error", "next_attempt_at", "resolution", "updated_at"]
    )
    audit(
        action=AuditAction.CALLBACK_RETRIED,
        request=callback.request,
        actor=actor,
        callback_id=callback.pk,
        previous=previous,
    )
    queue_callback(callback)
    return callback
