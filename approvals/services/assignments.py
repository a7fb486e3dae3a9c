"""Who decides a request: reassign (with the new assignees told), and the assignee list's cleaning.

Each function is one audited state change for one row; the admin's bulk actions call them row
by row, so one refused row never blocks the others.
"""

import logging
from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from approvals.models import (
    ApprovalRequest,
    Assignment,
    AuditAction,
    User,
)
from approvals.roles import APPROVER_ACCESS_GROUP
from approvals.services.common import ApprovalError, audit, locked_pending_request, require_reason, truncate
from approvals.services.notifications import reassigned_notify

logger = logging.getLogger(__name__)

MAX_GROUP_NAME_LENGTH = 150
OVERDUE_REFUSAL = (
    "The deadline for this request has passed: nobody can decide it any more, so it is not reassigned. "
    "The expiry sweep closes it (ApprovalExpired); cancel it to close it now."
)


def clean_assignees(*, users: Sequence[str], groups: Sequence[str]) -> tuple[list[str], list[str]]:
    """Emails lower-cased and checked, group names trimmed; duplicates dropped, order kept."""
    clean_users: dict[str, None] = {}
    for value in users:
        email = value.strip().lower()
        if not email:
            continue
        try:
            validate_email(email)
        except ValidationError:
            raise ApprovalError(f"“{truncate(email, 80)}” is not an email address.", "bad_input") from None
        clean_users[email] = None
    clean_groups: dict[str, None] = {}
    for value in groups:
        name = value.strip()
        if not name:
            continue
        if len(name) > MAX_GROUP_NAME_LENGTH or name == APPROVER_ACCESS_GROUP:
            raise ApprovalError(f"“{truncate(name, 80)}” cannot be an approver group.", "bad_input")
        clean_groups[name] = None
    return list(clean_users), list(clean_groups)


# ---------------------------------------------------------------------------
# Reassign
# ---------------------------------------------------------------------------
def _assignees(request: ApprovalRequest) -> dict[str, list[str]]:
    rows = list(request.assignments.order_by("kind", "value").values_list("kind", "value"))
    return {
        "users": [value for kind, value in rows if kind == Assignment.Kind.USER],
        "groups": [value for kind, value in rows if kind == Assignment.Kind.GROUP],
    }


def new_assignees_notify(*, request_id: int, users: list[str], groups: list[str]) -> None:
    """Tell newly assigned approvers about a request (after the reassignment committed).

    The `reassigned` audit event records who needs telling (`needs_notification`).
    """

    reassigned_notify(request_id=request_id, users=users, groups=groups)  # exception-safe


@transaction.atomic
def approval_reassign(
    *,
    request_id: int,
    actor: User,
    users: Sequence[str] = (),
    groups: Sequence[str] = (),
    mode: str = "replace",
    reason: str,
) -> ApprovalRequest:
    """Give a pending request new approvers: `replace` all of them, or `add` to them.

    Refused (ApprovalError) once decided or closed (`not_pending`), and once its deadline has
    passed (`expired`), even before the expiry sweep closes it."""
    reason = require_reason(reason)
    if mode not in {"replace", "add"}:
        raise ApprovalError("Choose replace or add.", "bad_input")
    users, groups = clean_assignees(users=users, groups=groups)
    if not users and not groups:
        raise ApprovalError("Name at least one approver: an email or a group.", "bad_input")
    request = locked_pending_request(request_id)
    if request.is_overdue:
        # Pending only until the expiry sweep runs: every channel refuses to decide it, so new
        # approvers would be asked for what they cannot do (and the admin told it was done).
        raise ApprovalError(OVERDUE_REFUSAL, "expired", request=request)

    before = _assignees(request)
    if mode == "replace":
        after = {"users": sorted(users), "groups": sorted(groups)}
    else:
        after = {"users": sorted({*before["users"], *users}), "groups": sorted({*before["groups"], *groups})}
    if after == before:
        raise ApprovalError("The request already has exactly these approvers.", "unchanged", request=request)

    added_users = [email for email in after["users"] if email not in before["users"]]
    added_groups = [name for name in after["groups"] if name not in before["groups"]]
    removed_users = [email for email in before["users"] if email not in after["users"]]
    removed_groups = [name for name in before["groups"] if name not in after["groups"]]
    if removed_users:
        request.assignments.filter(kind=Assignment.Kind.USER, value__in=removed_users).delete()
    if removed_groups:
        request.assignments.filter(kind=Assignment.Kind.GROUP, value__in=removed_groups).delete()
    # Each new assignment records who made it: its maker may not decide with it (four eyes).
    Assignment.objects.bulk_create(
        [Assignment(request=request, kind=Assignment.Kind.USER, value=email, created_by=actor) for email in added_users]
        + [
            Assignment(request=request, kind=Assignment.Kind.GROUP, value=name, created_by=actor)
            for name in added_groups
        ]
    )
    request.save(update_fields=["updated_at"])
    audit(
        action=AuditAction.REASSIGNED,
        request=request,
        actor=actor,
        mode=mode,
        reason=reason,
        before=before,
        after=after,
        needs_notification={"users": added_users, "groups": added_groups},
    )
    transaction.on_commit(lambda: new_assignees_notify(request_id=request.pk, users=added_users, groups=added_groups))
    return request
