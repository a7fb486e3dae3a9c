"""Decisions on approval requests: approve, reject, expire, and every refusal."""

import json
import logging

from django.db import transaction
from django.utils import timezone

from approvals import metrics, permissions
from approvals.models import ApprovalRequest, AuditEvent, Callback, RequestStatus, User
from approvals.services.common import MAX_CAUSE_LENGTH, ApprovalError, audit, truncate
from approvals.services.notifications import approval_notify

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Decide
# ---------------------------------------------------------------------------
def _identity(user: User) -> dict:
    return {"email": user.email, "sub": user.oidc_sub, "issuer": user.oidc_issuer}


def _callback_payload(request: ApprovalRequest, *, approved: bool) -> tuple[str, dict]:
    outcome = {
        "requestId": str(request.public_id),
        "decision": request.status,
        "decidedBy": _identity(request.decided_by),
        "decidedAt": request.decided_at.isoformat(),
        "comment": request.decision_comment,
    }
    if approved:
        return Callback.Kind.SUCCESS, {"output": {"approved": True, **outcome}}
    cause = json.dumps({"approved": False, **outcome}, ensure_ascii=False)
    return Callback.Kind.FAILURE, {"error": "ApprovalDenied", "cause": truncate(cause, MAX_CAUSE_LENGTH)}


def _queue_callback(callback: Callback) -> None:
    from worker.tasks import queue_delivery  # worker imports services; import late

    transaction.on_commit(lambda: queue_delivery(callback.pk))


@transaction.atomic
def _decide(*, public_id, user: User, approve: bool, comment: str) -> ApprovalRequest:
    request = (
        ApprovalRequest.objects.select_for_update(of=("self",))
        .select_related("decided_by")
        .filter(public_id=public_id)
        .first()
    )
    if request is None:
        raise ApprovalError("This approval request does not exist.", "not_found")
    refusal = permissions.decision_refusal(user, request)
    if refusal is not None:
        raise ApprovalError(refusal.message, refusal.code, request=request)

    request.status = RequestStatus.APPROVED if approve else RequestStatus.REJECTED
    request.decided_by = user
    request.decided_at = timezone.now()
    request.decision_comment = comment
    request.save(update_fields=["status", "decided_by", "decided_at", "decision_comment", "updated_at"])
    kind, payload = _callback_payload(request, approved=approve)
    callback = Callback.objects.create(request=request, kind=kind, payload=payload)
    audit(action=request.status, request=request, actor=user, comment=comment)
    metrics.request_closed(request)
    logger.info("approval request %s %s by user %s", request.public_id, request.status, user.pk)
    _queue_callback(callback)
    approval_notify(request=request, kind="outcome")  # exception-safe; sent after commit
    return request


def approval_decide(*, public_id, user: User, approve: bool, comment: str = "", via: str = "web") -> ApprovalRequest:
    """Approve or reject. Raises ApprovalError (and audits the refusal) when not allowed."""
    comment = comment.strip()
    try:
        return _decide(public_id=public_id, user=user, approve=approve, comment=comment)
    except ApprovalError as error:
        # The decision's transaction rolled back; the refusal is recorded on its own.
        refusal_record(
            user=user,
            request=error.request,
            code=error.code,
            attempted="approve" if approve else "reject",
            via=via,
            public_id=str(public_id),
        )
        raise


@transaction.atomic
def refusal_record(*, user: User, request: ApprovalRequest | None, code: str, attempted: str, **data) -> AuditEvent:
    """Every refused attempt is visible to admins: who, what, why."""
    logger.info("refused %s for %s: %s", attempted, user.email or user.pk, code)
    metrics.decision_refused(reason=code)
    return audit(action="decision_refused", request=request, actor=user, code=code, attempted=attempted, **data)


# ---------------------------------------------------------------------------
# Expiry
# ---------------------------------------------------------------------------
@transaction.atomic
def approval_expire(*, request_id: int) -> bool:
    """Close a pending request whose deadline passed; tell Step Functions ApprovalExpired."""
    request = ApprovalRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None or not request.is_pending or not request.is_overdue:
        return False
    request.status = RequestStatus.EXPIRED
    request.decided_at = timezone.now()
    request.save(update_fields=["status", "decided_at", "updated_at"])
    cause = json.dumps({"requestId": str(request.public_id), "deadline": request.deadline.isoformat()})
    callback = Callback.objects.create(
        request=request, kind=Callback.Kind.FAILURE, payload={"error": "ApprovalExpired", "cause": cause}
    )
    audit(action="expired", request=request, actor=None, deadline=request.deadline.isoformat())
    metrics.request_closed(request)
    _queue_callback(callback)
    approval_notify(request=request, kind="outcome")  # exception-safe; sent after commit
    return True
