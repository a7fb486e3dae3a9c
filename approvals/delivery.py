"""Where a decision stands with Step Functions: the one place its wording lives.

The request page, the admin and the requester's outcome mail all describe a callback with the
words below, so "delivered", "closed by Step Functions", "expired in the portal" and "delivery
uncertain" mean the same thing everywhere. Also the plain data the gateway returns after
reading an execution (`ExecutionReading`), which the callback service judges.
"""

from dataclasses import dataclass

from django.conf import settings

from approvals.models import ApprovalRequest, Callback, CallbackResolution, CallbackStatus, RequestStatus

# ---------------------------------------------------------------------------
# What reading an execution showed (filled by approvals.integrations.aws.read_execution)
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


def _in_a_sentence(label: str) -> str:
    return label[:1].lower() + label[1:]


# The model's choice labels (what the admin's filters show) are these words, capitalised.
DELIVERED = _in_a_sentence(CallbackStatus.DELIVERED.label)
CONFIRMED = _in_a_sentence(CallbackResolution.CONFIRMED.label)
CLOSED = _in_a_sentence(CallbackResolution.CLOSED.label)
UNCERTAIN = "delivery uncertain: an admin must check the execution"
GONE = "not sent: the workflow no longer exists (closed by the system)"
# A failure recorded before the execution was read (or a row from before resolutions existed).
CLOSED_ELSEWHERE = {
    "TaskTimedOut": "the workflow had already timed out",
    "TaskDoesNotExist": "the workflow no longer waits for it",
    "InvalidToken": "the workflow no longer waits for it",
}
FAILED_OTHERWISE = "failed, an admin has been told"
EXPIRED_IN_PORTAL = "Expired in the portal"
CLOSED_BY_STEP_FUNCTIONS = "Closed by Step Functions"
CLOSED_BY_SYSTEM = "Closed by the system"

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
        if callback.resolution == CallbackResolution.GONE:
            return GONE
        if callback.resolution == CallbackResolution.UNCERTAIN:
            return UNCERTAIN
        return f"not sent: {CLOSED_ELSEWHERE.get(callback.error_code, FAILED_OTHERWISE)}"
    return IN_FLIGHT.get(callback.status, callback.get_status_display())


def is_final(callback: Callback | None) -> bool:
    """Nothing more will happen to it on its own."""
    return callback is None or callback.status in FINAL


def failure_reason(callback: Callback) -> str:
    """Why a failed callback did not reach the workflow, for the requester."""
    if callback.resolution == CallbackResolution.GONE:
        return f"it no longer exists ({workflow_gone_cause()})"
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
    if request.decided_by_id is not None:
        return True  # decided, then Step Functions closed it: the portal's deadline has no decider
    # Never decided: without a callback Step Functions closed it; with one it is the portal's
    # ApprovalExpired (services/decisions.py approval_expire). No read of the callback's payload,
    # which lists defer (the inbox shows this for every closed row).
    return request_callback(request) is None


def closed_by_others(request: ApprovalRequest) -> bool:
    """Step Functions or the system closed it: whoever decided it did not (their decision did
    not reach the workflow), so it is never "expired by" or "closed by" them."""
    return closed_by_system(request) or closed_by_step_functions(request)


def request_status_words(request: ApprovalRequest) -> str:
    """The status in a sentence: "This request is already closed by Step Functions."."""
    return _in_a_sentence(request_status_label(request))


def request_status_label(request: ApprovalRequest) -> str:
    if request.status == RequestStatus.CLOSED:
        return CLOSED_BY_SYSTEM
    if closed_by_step_functions(request):
        return CLOSED_BY_STEP_FUNCTIONS
    if request.status == RequestStatus.EXPIRED:
        return EXPIRED_IN_PORTAL
    return request.get_status_display()


# ---------------------------------------------------------------------------
# A workflow that no longer exists: the system, not a person, closed the request
# ---------------------------------------------------------------------------
# Step Functions refused the token (InvalidToken / TaskDoesNotExist) and DescribeExecution says
# ExecutionDoesNotExist; or `make run` found, at its start, waiting requests whose executions the
# restarted AWS emulator no longer knows (manage.py close_forgotten_requests).
WORKFLOW_GONE = "the workflow no longer exists"
EMULATOR_FORGOT = "the local AWS emulator was restarted, and it keeps nothing across restarts"
EXECUTION_UNKNOWN = "Step Functions no longer knows its execution"
START_FRESH_COMMAND = "make clean && make run"
# {} is the command (in <code> on a page).
START_FRESH = (
    "To start fresh, stop make run (Ctrl-C) and run {}: it deletes var/ (the local database with it) "
    "and starts again with new demo approvals."
)
START_AGAIN = "If the decision is still needed, whoever runs the workflow must start a new execution."


def workflow_gone_cause() -> str:
    """Why a workflow can be gone, in words for people: on the emulator, it was restarted."""
    return EMULATOR_FORGOT if settings.AWS_EMULATOR else EXECUTION_UNKNOWN


def workflow_gone_next_step(command: str = START_FRESH_COMMAND) -> str:
    """What the people who see a request closed by the system can do about it (`command`: the
    start-fresh command as the caller shows it)."""
    return START_FRESH.format(command) if settings.AWS_EMULATOR else START_AGAIN


def closed_by_system(request: ApprovalRequest) -> bool:
    return request.status == RequestStatus.CLOSED


def closed_by_system_notice(request: ApprovalRequest) -> str:
    """The request page's explanation of a request the system closed."""
    callback = request_callback(request)
    decided = callback is not None and request.decided_by_id is not None
    before = "after it was decided, before the decision reached it" if decided else "before anyone decided it"
    return (
        f"The system closed this request {before}: {WORKFLOW_GONE} ({workflow_gone_cause()}). "
        "Nobody closed it by hand, and no workflow was resumed."
    )


def outcome_title(request: ApprovalRequest, user_id: int | None) -> str:
    """The first line of the result page after a decision: who closed the request, truly."""
    if closed_by_system(request):
        return f"The system closed this request: {WORKFLOW_GONE}."
    if closed_by_step_functions(request):
        return "Step Functions closed this request (the task timed out or the execution ended)."
    if request.decided_by_id is not None and request.decided_by_id == user_id:
        return f"You {request.status} this request."
    by = f" by {request.decided_by.email}" if request.decided_by_id else ""
    return f"This request was {request.status}{by}."


def closed_by_system_mail_intro(request: ApprovalRequest, *, decider: str, decision_word: str) -> str:
    """The requester's outcome mail for a request the system closed (no "Approved" headline:
    no workflow resumed)."""
    callback = request_callback(request)
    cause = workflow_gone_cause()
    if callback is None:
        intro = f"The system closed your request before anyone decided it: {WORKFLOW_GONE} ({cause})."
        closed = "No workflow was resumed."
    elif callback.maybe_delivered:
        intro = (
            f"{decider or 'An approver'} {decision_word.lower()} your request, and the portal cannot tell whether "
            f"the decision reached the workflow before it was gone: {WORKFLOW_GONE} ({cause})."
        )
        closed = "The system closed the request."
    else:
        intro = (
            f"{decider or 'An approver'} {decision_word.lower()} your request, but the decision could not reach "
            f"the workflow because it no longer exists ({cause})."
        )
        closed = "The system closed the request; no workflow was resumed."
    return f"{intro} {closed} {workflow_gone_next_step()}"


# When it was found (services/workflow_gone.py FOUND_*), for the audit event.
FOUND_WHEN = {
    "start": "found when make run started",
    "callback": "found when the decision was sent",
    "heartbeat": "found by a heartbeat",
}


def workflow_gone_audit_note(found_by: str) -> str:
    """The audit event's words for a request the system closed (the event reads "Closed by system")."""
    when = FOUND_WHEN.get(found_by, found_by)
    return f"The workflow no longer exists: {workflow_gone_cause()} ({when})."


def forgotten_requests_notice(count: int) -> str:
    """`make run`'s line, at its start, for waiting requests the restarted emulator forgot."""
    if count == 1:
        what = "1 waiting request belonged to an execution the AWS emulator no longer knows"
        closed = "the system closed it"
    else:
        what = f"{count} waiting requests belonged to executions the AWS emulator no longer knows"
        closed = "the system closed them"
    return (
        f"{what} (it keeps nothing across restarts): {closed} ({CLOSED_BY_SYSTEM}). Start fresh: {START_FRESH_COMMAND}"
    )
