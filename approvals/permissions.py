"""The one rule for who may decide an approval request.

Views, admin, notifications and the callback task all ask this module; nobody re-implements it.
"""

from dataclasses import dataclass

from django.utils import timezone

from approvals.models import ApprovalRequest, Assignment, User
from approvals.roles import APPROVER_ACCESS_GROUP


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def user_group_names(user: User) -> set[str]:
    """The user's SSO groups (as mirrored at sign-in), without the portal's own permission group."""
    return set(user.groups.exclude(name=APPROVER_ACCESS_GROUP).values_list("name", flat=True))


def is_assignee(user: User, request: ApprovalRequest) -> bool:
    """A named assignee (by email) or a member of an assigned group."""
    email = (user.email or "").lower()
    groups = user_group_names(user)
    for assignment in request.assignments.all():
        if assignment.kind == Assignment.Kind.USER and email and assignment.value == email:
            return True
        if assignment.kind == Assignment.Kind.GROUP and assignment.value in groups:
            return True
    return False


def identity_refusal(user: User, request: ApprovalRequest) -> Refusal | None:
    """Who the person is, regardless of the request's state (re-checked before the callback)."""
    if not user.is_active:
        return Refusal("inactive_user", "Your account is disabled.")
    email = (user.email or "").lower()
    if request.requester_email and email == request.requester_email.lower():
        return Refusal("requester", "You requested this approval, so someone else has to decide it.")
    if not is_assignee(user, request):
        return Refusal("not_assignee", "You are not an approver of this request.")
    return None


def decision_refusal(user: User, request: ApprovalRequest) -> Refusal | None:
    """Why `user` may not decide `request` now, or None if they may."""
    refusal = identity_refusal(user, request)
    if refusal is not None:
        return refusal
    if not request.is_pending:
        return Refusal("not_pending", f"This request is already {request.get_status_display().lower()}.")
    if request.deadline is not None and request.deadline <= timezone.now():
        return Refusal("expired", "The deadline for this request has passed.")
    return None


def can_view(user: User, request: ApprovalRequest) -> bool:
    """Approvers, the requester, whoever decided it, and admins may look at a request.

    Admins are superusers: approvers are staff too (they use the admin), but see only their own.
    """
    if user.is_superuser:
        return True
    email = (user.email or "").lower()
    if email and email == request.requester_email.lower():
        return True
    if request.decided_by_id == user.pk:
        return True
    return is_assignee(user, request)
