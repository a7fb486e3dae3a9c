"""Delivering decisions to Step Functions (SendTaskSuccess / SendTaskFailure) and the outbox sweep."""

import logging
import os
import random

from celery import shared_task

from approvals import services, stepfunctions
from approvals.delivery import ExecutionReading
from approvals.integrations import aws
from approvals.selectors import sources as source_selectors

logger = logging.getLogger(__name__)


def _backoff(attempt: int) -> float:
    # Exponential with full jitter, capped at 10 minutes.
    return random.uniform(1, min(600, 5 * 2**attempt))  # noqa: S311 - jitter, not crypto


@shared_task(name="worker.tasks.deliver_callback", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_callback(callback_id: int) -> str:
    """Send one decision to Step Functions: SendTaskSuccess or SendTaskFailure."""
    send = services.callback_claim(callback_id=callback_id)
    if send is None:
        return "nothing-to-send"
    route = callback_route(send)
    try:
        if send.kind == "success":
            aws.send_task_success(task_token=send.task_token, output=send.payload["output"], route=route)
        else:
            aws.send_task_failure(
                task_token=send.task_token,
                error=send.payload["error"],
                cause=send.payload.get("cause", ""),
                route=route,
            )
    except aws.AwsPermanentError as error:
        logger.warning("callback %s refused by Step Functions: %s %s", callback_id, error.code, error.message)
        reading, read_error = None, ""
        gone = error.code in stepfunctions.TOKEN_UNKNOWN_CODES and execution_gone(send.execution_arn, route=route)
        if error.code in stepfunctions.CLOSED_TASK_CODES and send.maybe_delivered and not gone:
            reading, read_error = _read_execution(send, route=route)
        outcome = services.callback_mark_failed(
            callback_id=callback_id,
            code=error.code,
            message=error.message,
            reading=reading,
            read_error=read_error,
            execution_gone=gone,
        )
        return str(outcome)
    except aws.AwsTransientError as error:
        delay = _backoff(send.attempts)
        if services.callback_mark_retrying(
            callback_id=callback_id, code=error.code, message=error.message, retry_in=delay
        ):
            deliver_callback.apply_async((callback_id,), countdown=delay)
            logger.info("callback %s: %s, retry %s in %.0fs", callback_id, error.code, send.attempts, delay)
            return "retrying"
        return "failed"
    _crash_here_in_tests()
    services.callback_mark_delivered(callback_id=callback_id)
    return "delivered"


def callback_route(send: services.CallbackSend) -> aws.AwsRoute | None:
    """Where this callback goes: the Step Functions endpoint of its execution's region, with its
    request's source's role (None: the default source's region and credentials)."""
    return source_selectors.callback_route(callback_id=send.callback_id)


def _read_execution(
    send: services.CallbackSend, *, route: aws.AwsRoute | None = None
) -> tuple[ExecutionReading | None, str]:
    """What the execution shows about an earlier attempt: (reading, "") or (None, why not)."""
    if not send.execution_arn:
        return None, "the message named no execution to read"
    try:
        return aws.read_execution(execution_arn=send.execution_arn, task_token=send.task_token, route=route), ""
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
    for callback_id in ids:
        deliver_callback.delay(callback_id)
    return len(ids)
