"""Celery tasks: thin, take ids, call services and the gateway."""

import logging
import random

from celery import shared_task

from approvals import selectors, services
from worker import gateway

logger = logging.getLogger(__name__)


def _backoff(attempt: int) -> float:
    # Exponential with full jitter, capped at 10 minutes.
    return random.uniform(1, min(600, 5 * 2**attempt))  # noqa: S311 - jitter, not crypto


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_callback(callback_id: int) -> str:
    """Send one decision to Step Functions: SendTaskSuccess or SendTaskFailure."""
    send = services.callback_claim(callback_id=callback_id)
    if send is None:
        return "nothing-to-send"
    try:
        if send.kind == "success":
            gateway.send_task_success(task_token=send.task_token, output=send.payload["output"])
        else:
            gateway.send_task_failure(
                task_token=send.task_token, error=send.payload["error"], cause=send.payload.get("cause", "")
            )
    except gateway.AwsPermanentError as error:
        services.callback_mark_failed(callback_id=callback_id, code=error.code, message=error.message)
        return "failed"
    except gateway.AwsTransientError as error:
        delay = _backoff(send.attempts)
        if services.callback_mark_retrying(
            callback_id=callback_id, code=error.code, message=error.message, retry_in=delay
        ):
            deliver_callback.apply_async((callback_id,), countdown=delay)
            logger.info("callback %s: %s, retry %s in %.0fs", callback_id, error.code, send.attempts, delay)
            return "retrying"
        return "failed"
    services.callback_mark_delivered(callback_id=callback_id)
    return "delivered"


@shared_task(ignore_result=True)
def sweep_callbacks() -> int:
    """Queue again what the on-commit enqueue lost (a crash between COMMIT and publish)."""
    ids = selectors.callbacks_needing_delivery()
    for callback_id in ids:
        deliver_callback.delay(callback_id)
    return len(ids)


@shared_task(ignore_result=True)
def expire_overdue_requests() -> int:
    expired = 0
    for request_id in selectors.overdue_pending_request_ids():
        expired += services.approval_expire(request_id=request_id)
    return expired
