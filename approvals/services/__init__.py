"""Every state change of the portal: atomic, audited, side effects on commit.

Views, admin actions, management commands and Celery tasks call these functions; they never
write the models themselves.
"""

from approvals.services.callbacks import (
    CLOSED_TASK_CODES,
    CallbackSend,
    callback_claim,
    callback_mark_delivered,
    callback_mark_failed,
    callback_mark_retrying,
)
from approvals.services.common import ApprovalError
from approvals.services.decisions import approval_decide, approval_expire, refusal_record
from approvals.services.ingest import approval_request_ingest, ingest_error_record
from approvals.services.keys import token_keys_rotate

__all__ = [
    "CLOSED_TASK_CODES",
    "ApprovalError",
    "CallbackSend",
    "approval_decide",
    "approval_expire",
    "approval_request_ingest",
    "callback_claim",
    "callback_mark_delivered",
    "callback_mark_failed",
    "callback_mark_retrying",
    "ingest_error_record",
    "refusal_record",
    "token_keys_rotate",
]
