"""Beat's sweeps over waiting and closed requests: expiry, heartbeats, token retention."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from approvals import selectors, services, stepfunctions
from approvals.integrations import aws
from approvals.ops import metrics
from approvals.tasks.callbacks import execution_gone
from approvals.tasks.each import one_of_many

logger = logging.getLogger(__name__)


@shared_task(name="worker.tasks.expire_overdue_requests", ignore_result=True)
def expire_overdue_requests() -> int:
    expired = 0
    for request_id in selectors.overdue_pending_request_ids():
        with one_of_many(f"expiring request {request_id}"):
            expired += services.approval_expire(request_id=request_id)
    return expired


@shared_task(name="worker.tasks.send_heartbeats", ignore_result=True)
def send_heartbeats() -> int:
    """SendTaskHeartbeat for waiting requests whose state has HeartbeatSeconds."""
    sent = 0
    for request_id in selectors.heartbeat_due_request_ids():
        with one_of_many(f"the heartbeat of request {request_id}"):
            sent += _heartbeat(request_id)
    return sent


def _heartbeat(request_id: int) -> int:
    """One waiting request's heartbeat: 1 when Step Functions took it."""
    heartbeat = services.heartbeat_send(request_id=request_id)
    if heartbeat is None:
        return 0
    try:
        aws.send_task_heartbeat(task_token=heartbeat.task_token, route=heartbeat.route)
    except aws.AwsPermanentError as error:
        metrics.heartbeat("closed" if error.code in stepfunctions.CLOSED_TASK_CODES else "refused")
        if error.code in stepfunctions.TOKEN_UNKNOWN_CODES and execution_gone(
            heartbeat.execution_arn, route=heartbeat.route
        ):
            services.approval_close_workflow_gone(
                request_id=request_id, found_by=services.FOUND_BY_HEARTBEAT, code=error.code
            )
        elif error.code in stepfunctions.CLOSED_TASK_CODES:
            services.approval_close_by_step_functions(request_id=request_id, code=error.code)
        else:
            logger.warning("heartbeat for request %s refused: %s", request_id, error.code)
        return 0
    except aws.AwsTransientError as error:
        metrics.heartbeat("transient")
        logger.warning("heartbeat for request %s failed (%s); next sweep retries", request_id, error.code)
        return 0
    services.heartbeat_recorded(request_id=request_id)
    metrics.heartbeat("sent")
    return 1


@shared_task(name="worker.tasks.erase_closed_tokens", ignore_result=True)
def erase_closed_tokens() -> int:
    """Retention: erase the task tokens of requests closed more than TOKEN_RETENTION_DAYS ago,
    and the messages (with their tokens) that ingest errors kept for replay that long; forget the
    API's idempotency keys older than API_IDEMPOTENCY_KEY_HOURS."""
    erased = 0
    for request_id in selectors.closed_token_request_ids():
        with one_of_many(f"erasing the token of request {request_id}"):
            erased += services.approval_token_erase(request_id=request_id)
    for ingest_error_id in selectors.expired_ingest_message_ids():
        with one_of_many(f"erasing the kept message of ingest error {ingest_error_id}"):
            erased += services.ingest_error_message_erase(ingest_error_id=ingest_error_id)
    services.idempotency_keys_purge(created_before=timezone.now() - timedelta(hours=settings.API_IDEMPOTENCY_KEY_HOURS))
    return erased
