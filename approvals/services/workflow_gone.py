"""Requests whose workflow no longer exists: the system closes them, nobody else.

Two ways to find one: Step Functions refuses a request's token (InvalidToken / TaskDoesNotExist)
and DescribeExecution answers ExecutionDoesNotExist (approvals/tasks/), or `make run` finds, at
its start, waiting requests whose executions the restarted AWS emulator no longer knows
(manage.py close_forgotten_requests). Either way the request is closed as "Closed by the
system", audited with no person as its actor, never as expired or as anyone's decision.
"""

from django.db import transaction
from django.utils import timezone

from approvals import delivery
from approvals.models import ApprovalRequest, AuditAction, RequestStatus
from approvals.services.common import audit
from approvals.services.notifications import approval_decided_notify, approval_notify
from approvals.stepfunctions import EXECUTION_UNKNOWN_CODE

# How it was found (the audit event's `found_by`).
FOUND_AT_START = "start"  # `make run` asked the emulator before serving
FOUND_BY_CALLBACK = "callback"  # the decision's callback was refused
FOUND_BY_HEARTBEAT = "heartbeat"  # a heartbeat was refused


@transaction.atomic
def approval_close_workflow_gone(*, request_id: int, found_by: str, code: str = EXECUTION_UNKNOWN_CODE) -> bool:
    """Close a waiting request whose workflow no longer exists. False when it no longer waits."""
    request = ApprovalRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None or request.status != RequestStatus.PENDING:
        return False
    close_request_workflow_gone(request, found_by=found_by, code=code)
    return True


def close_request_workflow_gone(request: ApprovalRequest, *, found_by: str, code: str) -> None:
    """Inside the caller's transaction: the request, pending or decided, is closed by the system.

    A decided request keeps who decided it (the votes, decided_by): the decision was made, it
    only could not reach the workflow; the status says the system closed it.
    """
    request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
    if request.status == RequestStatus.CLOSED:
        return
    previous = request.status
    request.status = RequestStatus.CLOSED
    request.decided_at = request.decided_at or timezone.now()
    request.awaiting_info = False
    request.save(update_fields=["status", "decided_at", "awaiting_info", "updated_at"])
    audit(
        action=AuditAction.CLOSED_BY_SYSTEM,
        request=request,
        actor=None,
        reason=delivery.workflow_gone_audit_note(found_by),
        cause="workflow_gone",
        found_by=found_by,
        code=code,
        previous_status=previous,
    )
    if previous == RequestStatus.PENDING:
        # Nobody decided (no callback will tell): the requester still hears how it ended.
        approval_notify(request=request, kind="outcome")
    else:
        # The Slack messages closed at the decision said "Approved by …": no longer the outcome.
        approval_decided_notify(request=request)
