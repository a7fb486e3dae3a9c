"""Four eyes across an email change: the requester stays the requester.

A request remembers its requester by email and, when that email named an account on arrival,
by the account (permissions._is_requester). A requester who had no account yet is known by the
email alone: once their account's email changes (SCIM, or the IdP at sign-in), the email no
longer names them. So the account that carried the email at the moment it changed is bound to
their open requests, before the email goes.
"""

from django.db import transaction
from django.db.models import Q

from approvals.models import CALLBACK_IN_FLIGHT, ApprovalRequest, AuditAction, RequestStatus, User
from approvals.services.common import audit


@transaction.atomic
def requester_account_bind(*, user: User, old_email: str, new_email: str, via: str) -> list[ApprovalRequest]:
    """Bind `user` as the requester of the open requests `old_email` asked for without an account."""
    if not old_email or old_email.lower() == (new_email or "").lower():
        return []
    open_requests = Q(status=RequestStatus.PENDING) | Q(callback__status__in=CALLBACK_IN_FLIGHT)
    found = list(
        ApprovalRequest.objects.select_for_update(of=("self",))
        .filter(pk__in=ApprovalRequest.objects.filter(open_requests).values("pk"))
        .filter(requester_email__iexact=old_email, requester_user__isnull=True)
        .order_by("pk")
    )
    for request in found:
        request.requester_user = user
        request.save(update_fields=["requester_user"])
        audit(
            action=AuditAction.REQUESTER_ACCOUNT_BOUND,
            request=request,
            actor=None,
            user_id=user.pk,
            email=old_email,
            new_email=new_email,
            via=via,
        )
    return found
