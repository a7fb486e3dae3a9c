"""Delivering decisions to Step Functions (SendTaskSuccess / SendTaskFailure) and the outbox sweep."""

import logging
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from approvals import services, stepfunctions
from approvals.delivery import ExecutionReading
from approvals.integrations import aws

logger = logging.getLogger(__name__)


def _backoff(attempt: int) -> float:
    # Exponential with full jitter, capped at 10 minutes.
    return random.uniform(1, min(600, 5 * 2**attempt))  # noqa: S311 - jitter, not crypto


# Rule: a decision still queues deliver_callback(id) on commit (its latency does not grow: its
# own callback is claimed and sent first); every delivery task then fills its batch with
# whatever else is due, up to CALLBACK_BATCH_SIZE, so a backlog (a burst of decisions, retries
# whose time has come, rows the sweep leased) drains in batches on one connection and one
# client. The sweep queues deliver_due_callbacks with the ids it leased. See docs/callbacks.md.
@shared_task(name="worker.tasks.deliver_callback", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_callback(callback_id: int) -> str:
    """Send one decision to Step Functions (SendTaskSuccess or SendTaskFailure), and whatever
    else is due with it. Returns what became of `callback_id`."""
    return _deliver_batch([callback_id]).get(callback_id, "nothing-to-send")


@shared_task(name="worker.tasks.deliver_due_callbacks", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_due_callbacks(callback_ids: list[int] | None = None) -> dict[str, int]:
    """Send `callback_ids` (e.g. what a sweep leased) and whatever else is due, up to
    CALLBACK_BATCH_SIZE; returns how many ended how."""
    counts: dict[str, int] = {}
    for outcome in _deliver_batch(list(callback_ids or [])).values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


class LeaseLost:
    """A call not made: the claim's lease ran out while the call waited for a send thread (a
    slow batch before it), and another worker may have taken the row and sent it since. Nothing
    is recorded for it: the row is that worker's now, or the sweep's once it is seen as lost."""


LEASE_LOST = LeaseLost()
SendResult = aws.AwsError | LeaseLost | None


def _send(send: services.CallbackSend) -> SendResult:
    """The Send* call for one callback: None when Step Functions accepted it. No database here:
    it may run on a pool thread."""
    if send.lease_ends is not None and timezone.now() >= send.lease_ends:
        return LEASE_LOST
    try:
        if send.kind == "success":
            aws.send_task_success(task_token=send.task_token, output=send.payload["output"], route=send.route)
        else:
            aws.send_task_failure(
                task_token=send.task_token,
                error=send.payload["error"],
                cause=send.payload.get("cause", ""),
                route=send.route,
            )
    except aws.AwsError as error:
        return error
    return None


# The send threads of this process, started once and kept (starting them for every batch cost
# more than a Send* call); one pool per size, normally just CALLBACK_SEND_THREADS.
_send_pools: dict[int, ThreadPoolExecutor] = {}
_send_pools_lock = threading.Lock()


def _send_pool(threads: int) -> ThreadPoolExecutor:
    with _send_pools_lock:
        pool = _send_pools.get(threads)
        if pool is None:
            pool = _send_pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="callback-send")
        return pool


def _start_sends(sends: list[services.CallbackSend]) -> Callable[[], list[SendResult]]:
    """Start every Send* call of a batch on up to CALLBACK_SEND_THREADS threads; returns what
    waits for their results, in order (with one thread: made here, one after the other)."""
    # The client of each route (the execution's region, its source's role) is made once and
    # shared by the threads (integrations/aws.py caches it; boto3 clients are thread-safe).
    threads = settings.CALLBACK_SEND_THREADS
    if threads <= 1 or len(sends) <= 1:
        results = [_send(send) for send in sends]
        return lambda: results
    pool = _send_pool(threads)
    futures = [pool.submit(_send, send) for send in sends]
    return lambda: [future.result() for future in futures]


# A task whose batch came back full (a burst of decisions, a backlog) goes on with the next one,
# claimed while the current batch's calls are in flight, for at most this many batches; then the
# other delivery tasks (one was queued per decision) take the rest.
MAX_BATCHES_PER_TASK = 20


def _deliver_batch(callback_ids: list[int]) -> dict[int, str]:
    """Claim (the given ids first, then what is due), send, record; what became of each claimed id.

    The database work (claims, marks) runs on this thread in short transactions whatever a
    batch's size; only the HTTP calls may go to the pool. While a full batch's calls are in
    flight, this thread claims the next batch (its rows are "sending" from then on, like any
    claimed row: a task lost mid-way leaves them to the lease).
    """
    outcomes: dict[int, str] = {}
    sends, full = _claim(callback_ids)
    batches = 0
    while sends:
        batches += 1
        results = _start_sends(sends)
        following: list[services.CallbackSend] = []
        if full and batches < MAX_BATCHES_PER_TASK:
            try:
                following, full = _claim([])
            except Exception:  # noqa: BLE001 - this batch is recorded first; the rest stays due
                logger.exception("could not claim the next batch of callbacks; they stay due")
        outcomes.update(_record(sends, results()))
        sends = following
    return outcomes


def _record(sends: list[services.CallbackSend], results: list[SendResult]) -> dict[int, str]:
    """Record what Step Functions answered for each call of a batch; what became of each."""
    outcomes: dict[int, str] = {}
    for send, result in zip(sends, results, strict=True):
        if result is LEASE_LOST:
            logger.warning("callback %s: its lease ran out before the call began; not sent here", send.callback_id)
            outcomes[send.callback_id] = "lease-lost"
    delivered = [send.callback_id for send, error in zip(sends, results, strict=True) if error is None]
    if delivered:
        _crash_here_in_tests()
        services.callbacks_mark_delivered(callback_ids=delivered)
        outcomes.update(dict.fromkeys(delivered, "delivered"))

    transient = []
    permanent = []
    for send, error in zip(sends, results, strict=True):
        if isinstance(error, aws.AwsTransientError):
            delay = _backoff(send.attempts)
            transient.append(
                services.TransientFailure(
                    callback_id=send.callback_id, code=error.code, message=error.message, retry_in=delay
                )
            )
        elif isinstance(error, aws.AwsError):
            permanent.append(_permanent_failure(send, error))
    if transient:
        retrying = services.callbacks_mark_retrying(failures=transient)
        by_id = {send.callback_id: send for send in sends}
        for failure in transient:
            if failure.callback_id in retrying:
                deliver_callback.apply_async((failure.callback_id,), countdown=failure.retry_in)
                logger.info(
                    "callback %s: %s, retry %s in %.0fs",
                    failure.callback_id,
                    failure.code,
                    by_id[failure.callback_id].attempts,
                    failure.retry_in,
                )
                outcomes[failure.callback_id] = "retrying"
            else:
                outcomes[failure.callback_id] = "failed"
    if permanent:
        settled = services.callbacks_mark_failed(failures=permanent)
        outcomes.update({callback_id: str(outcome) for callback_id, outcome in settled.items()})
    return outcomes


def _claim(callback_ids: list[int]) -> tuple[list[services.CallbackSend], bool]:
    """The batch's claim, and whether it was full (then more may be due: the task claims again).
    The given ids take room in a batch whether or not they are still to be sent (an earlier
    batch may have sent them), so a batch is full when it holds as many as its room for others.

    If the claim fails (a row that breaks the claim: a bug, or a payload no check foresaw), the
    given ids are claimed one by one, as before batches: one bad callback must not hold up the
    others, and its own task still fails on it, visibly."""
    limit = settings.CALLBACK_BATCH_SIZE
    try:
        sends = services.callbacks_claim_batch(callback_ids=callback_ids, limit=limit)
    except Exception:
        if limit <= len(callback_ids):
            raise  # nothing was added to the given ids: their own error
        logger.exception("callback batch claim failed; claiming %s callback(s) one by one", len(callback_ids))
    else:
        return sends, len(sends) >= limit - len(callback_ids)
    sends = []
    for callback_id in callback_ids:
        sends += services.callbacks_claim_batch(callback_ids=[callback_id], limit=1)
    return sends, False


def _permanent_failure(send: services.CallbackSend, error: aws.AwsError) -> services.PermanentFailure:
    """A refusal, with what the execution shows when that decides it (a closed task after an
    attempt that may have been delivered, a token for an execution that no longer exists)."""
    logger.warning("callback %s refused by Step Functions: %s %s", send.callback_id, error.code, error.message)
    reading, read_error = None, ""
    gone = error.code in stepfunctions.TOKEN_UNKNOWN_CODES and execution_gone(send.execution_arn, route=send.route)
    if error.code in stepfunctions.CLOSED_TASK_CODES and send.maybe_delivered and not gone:
        reading, read_error = _read_execution(send)
    return services.PermanentFailure(
        callback_id=send.callback_id,
        code=error.code,
        message=error.message,
        reading=reading,
        read_error=read_error,
        execution_gone=gone,
    )


def _read_execution(send: services.CallbackSend) -> tuple[ExecutionReading | None, str]:
    """What the execution shows about an earlier attempt: (reading, "") or (None, why not)."""
    if not send.execution_arn:
        return None, "the message named no execution to read"
    try:
        return aws.read_execution(execution_arn=send.execution_arn, task_token=send.task_token, route=send.route), ""
    except aws.AwsError as error:
        logger.warning("callback %s: cannot read its execution: %s", send.callback_id, error.code)
        if error.code in {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"}:
            return None, f"reading the execution is not allowed ({error.code}: see deploy/iam-policy.json)"
        return None, f"the execution could not be read ({error.code})"


def execution_gone(execution_arn: str, *, route: aws.AwsRoute | None = None) -> bool:
    """DescribeExecution answers that the execution does not exist (a restarted AWS emulator
    forgot it, or Step Functions no longer keeps it). False when it exists or cannot be read."""
    if not execution_arn:
        return False
    try:
        aws.describe_execution(execution_arn=execution_arn, route=route)
    except aws.AwsError as error:
        return error.code == stepfunctions.EXECUTION_UNKNOWN_CODE
    return False


def _crash_here_in_tests() -> None:
    """Test-only fault point, off unless PORTAL_TEST_CRASH_AFTER_SEND names a file that exists.

    tests/test_reliability.py sets it to make a real worker die right after Step Functions
    accepted a callback and before it is recorded; the file is removed first, so it fires once.
    """
    flag = os.environ.get("PORTAL_TEST_CRASH_AFTER_SEND")
    if flag and os.path.exists(flag):
        os.remove(flag)
        os._exit(70)


@shared_task(name="worker.tasks.sweep_callbacks", ignore_result=True)
def sweep_callbacks() -> int:
    """The outbox relay: queue again what the on-commit enqueue lost (a crash, a broker outage)."""
    ids = services.callbacks_lease_stale()
    size = settings.CALLBACK_BATCH_SIZE
    for start in range(0, len(ids), size):
        deliver_due_callbacks.delay(ids[start : start + size])
    return len(ids)
