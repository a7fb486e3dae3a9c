"""What an account's email change means for the open requests that name the old email.

Requests name people by email: their assignees, and their requester (who four eyes refuses,
permissions._is_requester). An email is an attribute of an account, keyed by (issuer, subject),
and the IdP may change it (SCIM, or the email claim at sign-in):

- the requester stays the requester: a requester who had no account when the request arrived is
  known by the email alone, so the account that carried it when it changed is bound to the
  request (else they could approve their own request after the change);
- an assignment by the old email is not moved (the message, a rule or an admin named that
  address, and another account may get it later): it is recorded on the request's audit trail,
  where the admins see that the person it named no longer has it (docs/scim.md).
"""

from django.db import transaction
from django.db.models import Q

from approvals.models import CALLBACK_IN_FLIGHT, ApprovalRequest, Assignment, AuditAction, RequestStatus, User
from approvals.services.common import audit


def _open_requests():
    return ApprovalRequest.objects.filter(
        Q(status=RequestStatus.PENDING) | Q(callback__status__in=CALLBACK_IN_FLIGHT)
    ).values("pk")


@transaction.atomic
def user_email_changed(*, user: User, old_email: str, new_email: str, via: str) -> None:
    """Called before `user`'s email becomes `new_email` (via "scim" or "sign-in")."""
    if not old_email or old_email.lower() == (new_email or "").lower():
        return
    fields = {"user_id": user.pk, "email": old_email, "new_email": new_email, "via": via}
    requested = (
        ApprovalRequest.objects.select_for_update(of=("self",))
        .filter(pk__in=_open_requests(), requester_email__iexact=old_email, requester_user__isnull=True)
        .order_by("pk")
    )
    for request in requested:
        request.requester_user = user
        request.save(update_fields=["requester_user"])
        audit(action=AuditAction.REQUESTER_ACCOUNT_BOUND, request=request, actor=None, **fields)
    assigned = ApprovalRequest.objects.filter(
        pk__in=_open_requests(),
        assignments__kind=Assignment.Kind.USER,
        assignments__value=old_email.lower(),
    )
    for request in assigned.distinct().order_by("pk"):
        audit(action=AuditAction.ASSIGNED_EMAIL_CHANGED, request=request, actor=None, **fields)
