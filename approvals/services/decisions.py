"""Decisions on approval requests: approve, reject, an admin's cancel, expire, and every refusal."""

import json
import logging

from django.db import transaction
from django.utils import timezone

from approvals import permissions
from approvals.models import (
    ApprovalRequest,
    AuditAction,
    AuditEvent,
    Callback,
    RequestStatus,
    User,
    Vote,
)
from approvals.ops import metrics
from approvals.services.callbacks import queue_callback
from approvals.services.common import (
    MAX_CAUSE_LENGTH,
    ApprovalError,
    audit,
    locked_pending_request,
    locked_request,
    require_reason,
    truncate,
)
from approvals.services.notifications import approval_decided_notify
from approvals.services.payloads import callback_payload, identity

logger = logging.getLogger(__name__)

# The one "a rejection says why" rule: every channel (page, admin, email link, Slack, API) gets it here.
REASON_REQUIRED = "reason_required"
REASON_REQUIRED_MESSAGE = "Say why you reject: the requester and the workflow see it."


# ---------------------------------------------------------------------------
# Decide
# ---------------------------------------------------------------------------


@transaction.atomic
def _decide(*, public_id, user: User, approve: bool, comment: str) -> ApprovalRequest:
    # Only the second of two simultaneous votes completing a 2-of-2 closes it (one Callback).
    request = locked_request(public_id, related=("decided_by",))
    authority, refusal = permissions.decision_authority(user, request, approve=approve)
    if refusal is not None:
        raise ApprovalError(refusal.message, refusal.code, request=request)
    if not approve and not comment:
        # Checked after the authority: whoever may not decide at all hears that, not this.
        raise ApprovalError(REASON_REQUIRED_MESSAGE, REASON_REQUIRED, request=request)

    now = timezone.now()
    vote = Vote.objects.create(
        request=request,
        user=user,
        on_behalf_of=authority.on_behalf_of,
        approve=approve,
        comment=comment,
        group=authority.group,
        created_at=now,
    )
    on_behalf = {"on_behalf_of": authority.principal.email} if authority.on_behalf_of else {}
    votes = list(request.votes.all()) + [vote]
    approvals = sum(1 for each in votes if each.approve)
    rejections = len(votes) - approvals
    closes = rejections >= request.rejections_to_deny if not approve else approvals >= request.required_approvals
    if not closes:
        if request.claimed_by_id == user.pk:
            # The claimer did their part; what the quorum still needs is free for colleagues to take.
            request.claimed_by, request.claimed_at = None, None
            request.save(update_fields=["claimed_by", "claimed_at", "updated_at"])
            audit(action=AuditAction.UNCLAIMED, request=request, actor=user, ended_by="vote")
        audit(
            action=AuditAction.APPROVAL_RECORDED if approve else AuditAction.REJECTION_RECORDED,
            request=request,
            actor=user,
            comment=comment,
            approvals=approvals,
            required=request.required_approvals,
            rejections=rejections,
            rejections_to_deny=request.rejections_to_deny,
            **on_behalf,
        )
        logger.info(
            "approval request %s: %s by user %s (%s of %s approvals)",
            request.public_id,
            "approval" if approve else "rejection",
            user.pk,
            approvals,
            request.required_approvals,
        )
        return request

    request.status = RequestStatus.APPROVED if approve else RequestStatus.REJECTED
    request.decided_by = user
    request.decided_at = now
    request.decision_comment = comment
    request.awaiting_info = False
    request.save(
        update_fields=["status", "decided_by", "decided_at", "decision_comment", "awaiting_info", "updated_at"]
    )
    kind, payload = callback_payload(request, vote)
    callback = Callback.objects.create(request=request, kind=kind, payload=payload)
    quorum = {"approvals": approvals, "rejections": rejections} if request.has_quorum or len(votes) > 1 else {}
    audit(action=AuditAction(request.status), request=request, actor=user, comment=comment, **quorum, **on_behalf)
    metrics.request_closed(request)
    logger.info("approval request %s %s by user %s", request.public_id, request.status, user.pk)
    queue_callback(callback)
    approval_decided_notify(request=request)  # the requester hears once the callback is settled
    return request


def approval_decide(*, public_id, user: User, approve: bool, comment: str = "", via: str = "web") -> ApprovalRequest:
    """Approve or reject: a vote, which closes the request when its policy is met. A rejection
    needs a non-blank comment (its reason), whatever the channel.

    Raises ApprovalError (and audits the refusal) when not allowed."""
    comment = comment.strip()
    return refusals_recorded(
        lambda: _decide(public_id=public_id, user=user, approve=approve, comment=comment),
        user=user,
        attempted="approve" if approve else "reject",
        public_id=public_id,
        via=via,
    )


def refusals_recorded(attempt, *, user: User, attempted: str, public_id, via: str = "web"):
    """Run `attempt()` (a service's own transaction); a refusal it raises is recorded on its own,
    after that transaction rolled back, and raised again."""
    try:
        return attempt()
    except ApprovalError as error:
        refusal_record(
            user=user, request=error.request, code=error.code, attempted=attempted, via=via, public_id=str(public_id)
        )
        raise


@transaction.atomic
def refusal_record(*, user: User, request: ApprovalRequest | None, code: str, attempted: str, **data) -> AuditEvent:
    """Every refused attempt is visible to admins: who, what, why."""
    logger.info("refused %s for %s: %s", attempted, user.email or user.pk, code)
    metrics.decision_refused(reason=code)
    return audit(
        action=AuditAction.DECISION_REFUSED, request=request, actor=user, code=code, attempted=attempted, **data
    )


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
    request.awaiting_info = False
    request.save(update_fields=["status", "decided_at", "awaiting_info", "updated_at"])
    cause = json.dumps({"requestId": str(request.public_id), "deadline": request.deadline.isoformat()})
    callback = Callback.objects.create(
        request=request, kind=Callback.Kind.FAILURE, payload={"error": "ApprovalExpired", "cause": cause}
    )
    audit(action=AuditAction.EXPIRED, request=request, actor=None, deadline=request.deadline.isoformat())
    metrics.request_closed(request)
    queue_callback(callback)
    approval_decided_notify(request=request)  # the requester hears once the callback is settled
    return True


# ---------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------
@transaction.atomic
def approval_cancel(*, request_id: int, actor: User, reason: str) -> ApprovalRequest:
    """Close a pending request; the execution gets SendTaskFailure with ApprovalCancelled."""
    reason = require_reason(reason)
    request = locked_pending_request(request_id)
    request.status = RequestStatus.CANCELLED
    request.decided_by = actor
    request.decided_at = timezone.now()
    request.decision_comment = reason
    request.awaiting_info = False  # closed: nobody waits for an answer any more
    request.save(
        update_fields=["status", "decided_by", "decided_at", "decision_comment", "awaiting_info", "updated_at"]
    )
    cause = json.dumps(
        {
            "requestId": str(request.public_id),
            "cancelledBy": identity(actor),
            "cancelledAt": request.decided_at.isoformat(),
            "reason": reason,
        },
        ensure_ascii=False,
    )
    callback = Callback.objects.create(
        request=request,
        kind=Callback.Kind.FAILURE,
        payload={"error": "ApprovalCancelled", "cause": truncate(cause, MAX_CAUSE_LENGTH)},
    )
    audit(action=AuditAction.CANCELLED, request=request, actor=actor, reason=reason)
    queue_callback(callback)
    approval_decided_notify(request=request)  # the requester hears once the callback is settled
    return request
