"""Every state change of the portal: atomic, audited, side effects on commit.

Views, admin actions, management commands and Celery tasks call these functions; they never
write the models themselves.
"""

from approvals.services.assignments import approval_reassign, new_assignees_notify
from approvals.services.callbacks import (
    CallbackSend,
    HeartbeatSend,
    PermanentFailure,
    TransientFailure,
    approval_close_by_step_functions,
    callback_claim,
    callback_mark_delivered,
    callback_mark_failed,
    callback_mark_retrying,
    callback_retry,
    callbacks_claim_batch,
    callbacks_lease_stale,
    callbacks_mark_delivered,
    callbacks_mark_failed,
    callbacks_mark_retrying,
    heartbeat_recorded,
    heartbeat_send,
)
from approvals.services.claims import approval_claim, approval_unclaim, claims_release
from approvals.services.common import DATABASE_GONE, ApprovalError
from approvals.services.consumers import consumer_error_recorded, consumer_poll_recorded
from approvals.services.conversations import info_answer, info_request
from approvals.services.decisions import (
    ANSWERS_INVALID,
    CHOICE_INVALID,
    REASON_REQUIRED,
    approval_cancel,
    approval_decide,
    approval_expire,
    refusal_record,
)
from approvals.services.delegations import delegation_revoke, delegation_set
from approvals.services.idempotency import idempotency_keys_purge
from approvals.services.ingest import (
    approval_request_ingest,
    ingest_error_discard,
    ingest_error_record,
    ingest_error_replay,
    received_batch_ingest,
    received_message_ingest,
)
from approvals.services.keys import (
    KeyRotationReport,
    approval_token_erase,
    ingest_error_message_erase,
    token_keys_rotate,
)
from approvals.services.payloads import MAX_OUTPUT_BYTES, output_size
from approvals.services.routing import (
    approval_policy_delete,
    approval_policy_save,
    routing_rule_delete,
    routing_rule_save,
)
from approvals.services.service_accounts import service_account_save
from approvals.services.sources import (
    OUTSIDE_SOURCE,
    source_poll_failed,
    source_poll_succeeded,
    source_save,
    source_set_enabled,
    source_trust_check,
)
from approvals.services.trust import approver_trust_delete, approver_trust_save
from approvals.services.workflow_gone import (
    FOUND_AT_START,
    FOUND_BY_HEARTBEAT,
    approval_close_workflow_gone,
)
from approvals.stepfunctions import CLOSED_TASK_CODES, EXECUTION_UNKNOWN_CODE, TOKEN_UNKNOWN_CODES

__all__ = [
    "DATABASE_GONE",
    "CLOSED_TASK_CODES",
    "EXECUTION_UNKNOWN_CODE",
    "FOUND_AT_START",
    "FOUND_BY_HEARTBEAT",
    "TOKEN_UNKNOWN_CODES",
    "approval_close_workflow_gone",
    "MAX_OUTPUT_BYTES",
    "ANSWERS_INVALID",
    "CHOICE_INVALID",
    "REASON_REQUIRED",
    "approval_close_by_step_functions",
    "callbacks_claim_batch",
    "callbacks_lease_stale",
    "callbacks_mark_delivered",
    "callbacks_mark_failed",
    "callbacks_mark_retrying",
    "PermanentFailure",
    "TransientFailure",
    "consumer_error_recorded",
    "consumer_poll_recorded",
    "heartbeat_recorded",
    "HeartbeatSend",
    "heartbeat_send",
    "info_answer",
    "info_request",
    "output_size",
    "ApprovalError",
    "CallbackSend",
    "approval_cancel",
    "approval_claim",
    "approval_decide",
    "approval_policy_delete",
    "approval_policy_save",
    "approver_trust_delete",
    "approver_trust_save",
    "approval_expire",
    "approval_reassign",
    "approval_request_ingest",
    "approval_unclaim",
    "callback_claim",
    "callback_mark_delivered",
    "callback_mark_failed",
    "callback_mark_retrying",
    "callback_retry",
    "delegation_revoke",
    "delegation_set",
    "idempotency_keys_purge",
    "claims_release",
    "ingest_error_discard",
    "ingest_error_record",
    "ingest_error_replay",
    "received_batch_ingest",
    "received_message_ingest",
    "new_assignees_notify",
    "refusal_record",
    "routing_rule_delete",
    "routing_rule_save",
    "service_account_save",
    "token_keys_rotate",
    "approval_token_erase",
    "ingest_error_message_erase",
    "OUTSIDE_SOURCE",
    "source_poll_failed",
    "source_poll_succeeded",
    "source_save",
    "source_set_enabled",
    "source_trust_check",
    "KeyRotationReport",
]
