"""Where a decision stands with Step Functions: the one place its wording lives.

The request page, the admin and the requester's outcome mail all describe a callback with the
words below, so "delivered", "closed by Step Functions", "expired in the portal" and "delivery
uncertain" mean the same thing everywhere. Also the plain data the gateway returns after
reading an execution (`ExecutionReading`), which the callback service judges.
"""

from dataclasses import dataclass

from approvals.models import ApprovalRequest, Callback, CallbackResolution, CallbackStatus, RequestStatus

# ---------------------------------------------------------------------------
# What reading an execution showed (filled by worker.gateway.read_execution)
# ---------------------------------------------------------------------------
# Real AWS, GetExecutionHistory for a `.waitForTaskToken` task: TaskScheduled (its
# `parameters` are the resolved Parameters, the task token among them), TaskStarted,
# TaskSubmitted, then exactly one of TaskSucceeded (`taskSucceededEventDetails.output`: the
# SendTaskSuccess output, verbatim), TaskFailed (`taskFailedEventDetails.error` / `.cause` as
# sent with SendTaskFailure), TaskTimedOut (`taskTimedOutEventDetails.error`: States.Timeout or
# States.HeartbeatTimeout). An execution stopped or timed out meanwhile ends with
# ExecutionAborted / ExecutionTimedOut and no task event at all. Each event's previousEventId
# leads back to its TaskScheduled. moto 5.2.5 records the same events, except that TaskFailed
# carries no `cause` (moto drops it), so a failure is recognised by its error on our own task.


@dataclass(frozen=True)
class TaskClosure:
    """One TaskSucceeded / TaskFailed / TaskTimedOut event of the execution."""

    event: str
    ours: bool  # it closes the task our token was issued for (found by its TaskScheduled event)
    output: str = ""
    error: str = ""
    cause: str = ""


@dataclass(frozen=True)
class ExecutionReading:
    status: str  # DescribeExecution: RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, PENDING_REDRIVE
    output: str  # DescribeExecution's output (a succeeded execution's), "" otherwise
    task_found: bool  # the history shows the TaskScheduled event that issued our token
    closures: tuple[TaskClosure, ...]
    complete: bool = True  # False: the history was longer than the gateway reads


# ---------------------------------------------------------------------------
# The words
# ---------------------------------------------------------------------------
# "Step Functions: <label>" on the request page; the admin shows the same label.
IN_FLIGHT = {
    CallbackStatus.PENDING: "queued to be sent",
    CallbackStatus.SENDING: "being sent",
    CallbackStatus.RETRYING: "waiting to retry",
}
DELIVERED = "sent to Step Functions"
CONFIRMED = "delivered (confirmed from the execution history)"
CLOSED = "closed by Step Functions (timed out / execution ended)"
UNCERTAIN = "delivery uncertain: an admin must check the execution"
# A failure recorded before the execution was read (or a row from before resolutions existed).
CLOSED_ELSEWHERE = {
    "TaskTimedOut": "the workflow had already timed out",
    "TaskDoesNotExist": "the workflow no longer waits for it",
    "InvalidToken": "the workflow no longer waits for it",
}
FAILED_OTHERWISE = "failed, an admin has been told"
EXPIRED_IN_PORTAL = "Expired in the portal"
CLOSED_BY_STEP_FUNCTIONS = "Closed by Step Functions"

# Why a decision did not reach the workflow, in words for the requester (no error text).
FAILURE_REASONS = {
    CallbackResolution.CLOSED: "Step Functions had stopped waiting for it (the task timed out or the execution ended)",
    CallbackResolution.UNCERTAIN: (
        "the portal could not confirm that Step Functions received it; an admin has been told and will check"
    ),
    "identity_recheck_failed": "the decider was no longer allowed to decide it when it was sent",
}
DEFAULT_FAILURE_REASON = "the portal could not send it to Step Functions; an admin has been told"

FINAL = {CallbackStatus.DELIVERED, CallbackStatus.FAILED}


def callback_label(callback: Callback | None) -> str:
    """The callback's state in a few words (request page, admin)."""
    if callback is None:
        return "no callback"
    if callback.status == CallbackStatus.DELIVERED:
        return CONFIRMED if callback.resolution == CallbackResolution.CONFIRMED else DELIVERED
    if callback.status == CallbackStatus.FAILED:
        if callback.resolution == CallbackResolution.CLOSED:
            return CLOSED
        if callback.resolution == CallbackResolution.UNCERTAIN:
            return UNCERTAIN
        return f"not sent: {CLOSED_ELSEWHERE.get(callback.error_code, FAILED_OTHERWISE)}"
    return IN_FLIGHT.get(callback.status, callback.get_status_display())


def is_final(callback: Callback | None) -> bool:
    """Nothing more will happen to it on its own."""
    return callback is None or callback.status in FINAL


def failure_reason(callback: Callback) -> str:
    """Why a failed callback did not reach the workflow, for the requester."""
    if callback.resolution in FAILURE_REASONS:
        return FAILURE_REASONS[callback.resolution]
    return FAILURE_REASONS.get(callback.error_code, DEFAULT_FAILURE_REASON)


def request_callback(request: ApprovalRequest) -> Callback | None:
    try:
        return request.callback
    except Callback.DoesNotExist:
        return None


def closed_by_step_functions(request: ApprovalRequest) -> bool:
    """The request ended because Step Functions stopped waiting, not by the portal's deadline."""
    if request.status != RequestStatus.EXPIRED:
        return False
    callback = request_callback(request)
    return callback is None or callback.payload.get("error") != "ApprovalExpired"


def request_status_label(request: ApprovalRequest) -> str:
    if closed_by_step_functions(request):
        return CLOSED_BY_STEP_FUNCTIONS
    if request.status == RequestStatus.EXPIRED:
        return EXPIRED_IN_PORTAL
    return request.get_status_display()
