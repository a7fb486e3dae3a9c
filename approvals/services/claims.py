""" "I'm on it": an approver claims a request so colleagues of a group assignment see it taken.

A claim is information, not a lock: it never stops a colleague from deciding, and it stops
showing once the request is closed. Only someone who may decide now claims; only the claimer
unclaims; admins with `release_claim_approvalrequest` release anyone's claim; a claim whose holder
may no longer decide is released when a colleague claims, and at once when SCIM deprovisions them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from approvals import permissions
from approvals.models import ApprovalRequest, AuditAction, RequestStatus, User
from approvals.services.common import ApprovalError, audit, locked_request
from approvals.services.decisions import refusals_recorded

RELEASE_PERMISSION = "approvals.release_claim_approvalrequest"


@dataclass(frozen=True)
class ReleasedClaim:
    request: ApprovalRequest
    claimed_by: User
    claimed_at: datetime | None


def _claimed_since(request: ApprovalRequest) -> str:
    return f"{timezone.localtime(request.claimed_at):%Y-%m-%d %H:%M %Z}"


@transaction.atomic
def _claim(*, public_id, user: User) -> ApprovalRequest:
    request = locked_request(public_id, related=("claimed_by",))
    refusal = permissions.decision_refusal(user, request)
    if refusal is not None:
        raise ApprovalError(refusal.message, refusal.code, request=request)
    if request.claimed_by_id == user.pk:
        return request  # a second click, or a second tab: already theirs
    if request.claimed_by_id is not None:
        holder = request.claimed_by
        gone = permissions.decision_refusal(holder, request)
        if gone is None:
            raise ApprovalError(
                f"{holder.email} is already on it since {_claimed_since(request)}.", "claimed", request=request
            )
        # The holder may no longer decide it (deactivated, left the group, reassigned away): their
        # claim holds it for nobody. Released by the system, then taken.
        audit(
            action=AuditAction.CLAIM_RELEASED,
            request=request,
            actor=None,
            claimed_by=holder.email or holder.get_username(),
            claimed_at=request.claimed_at.isoformat() if request.claimed_at else None,
            code=gone.code,
        )
    request.claimed_by = user
    request.claimed_at = timezone.now()
    request.save(update_fields=["claimed_by", "claimed_at", "updated_at"])
    audit(action=AuditAction.CLAIMED, request=request, actor=user)
    return request


def approval_claim(*, public_id, user: User) -> ApprovalRequest:
    """`user` takes the request ("I'm on it"). Claiming one's own claim again changes nothing.

    Raises ApprovalError (and audits the refusal) for anyone who may not decide it now, and
    with the code "claimed" when a colleague already holds it.
    """
    return refusals_recorded(
        lambda: _claim(public_id=public_id, user=user), user=user, attempted="claim", public_id=public_id
    )


@transaction.atomic
def _unclaim(*, public_id, user: User) -> ApprovalRequest:
    request = locked_request(public_id, related=("claimed_by",))
    if request.claimed_by_id is None:
        return request  # released already (a second click, or an admin was quicker)
    if request.claimed_by_id != user.pk:
        raise ApprovalError(
            f"Only {request.claimed_by.email}, who is on it, can release this claim.", "not_claimer", request=request
        )
    claimed_at = request.claimed_at
    request.claimed_by = None
    request.claimed_at = None
    request.save(update_fields=["claimed_by", "claimed_at", "updated_at"])
    audit(action=AuditAction.UNCLAIMED, request=request, actor=user, claimed_at=claimed_at.isoformat())
    return request


def approval_unclaim(*, public_id, user: User) -> ApprovalRequest:
    """The claimer gives the request back to the group. Nothing to release changes nothing."""
    return refusals_recorded(
        lambda: _unclaim(public_id=public_id, user=user), user=user, attempted="unclaim", public_id=public_id
    )


@transaction.atomic
def claims_release(*, request_ids: Sequence[int], actor: User) -> list[ReleasedClaim]:
    """An admin releases whoever's claims on these requests; returns the claims released.

    Requests without a claim are skipped (releasing twice is harmless), and so are closed ones:
    their claim shows nowhere any more.
    """
    if not actor.has_perm(RELEASE_PERMISSION):
        raise ApprovalError("Only admins may release someone else's claim.", "not_allowed")
    # The holders are read after the lock (common.locked_request says why they are not joined).
    claimed = list(
        ApprovalRequest.objects.select_for_update(of=("self",))
        .prefetch_related("claimed_by")
        .filter(pk__in=list(request_ids), status=RequestStatus.PENDING, claimed_by__isnull=False)
        .order_by("pk")
    )
    released = []
    for request in claimed:
        released.append(ReleasedClaim(request=request, claimed_by=request.claimed_by, claimed_at=request.claimed_at))
        _release(request, holder=request.claimed_by, actor=actor)
    return released


def _release(request: ApprovalRequest, *, holder: User, actor: User | None, **data) -> None:
    """Clear the claim of a locked request, audited (`actor` None: the system)."""
    claimed_at = request.claimed_at
    request.claimed_by = None
    request.claimed_at = None
    request.save(update_fields=["claimed_by", "claimed_at", "updated_at"])
    audit(
        action=AuditAction.CLAIM_RELEASED,
        request=request,
        actor=actor,
        claimed_by=holder.email or holder.get_username(),
        claimed_at=claimed_at.isoformat() if claimed_at else None,
        **data,
    )


@transaction.atomic
def claims_release_held_by(*, user: User, code: str) -> list[ApprovalRequest]:
    """Release, by the system, the claims `user` holds on pending requests: they may no longer
    decide (`code`: why, e.g. deprovisioned), and colleagues must not wait for them."""
    claimed = list(
        ApprovalRequest.objects.select_for_update(of=("self",))
        .filter(claimed_by=user, status=RequestStatus.PENDING)
        .order_by("pk")
    )
    for request in claimed:
        _release(request, holder=user, actor=None, code=code)
    return claimed
