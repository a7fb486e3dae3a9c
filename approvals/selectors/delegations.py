"""Readers for delegations: the out-of-office page, the admin's states, the inbox's "for alice" mark."""

from datetime import datetime

from django.contrib.auth.models import Group
from django.db.models import Case, CharField, Exists, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce, Lower
from django.utils import timezone

from approvals import permissions, selectors
from approvals.models import ApprovalRequest, Assignment, Delegation, User
from approvals.roles import APPROVER_ACCESS_GROUP

DELEGATION_STATES = {
    "active": "Active",
    "upcoming": "Upcoming",
    "ended": "Ended",
    "revoked": "Revoked",
}


def _never_began() -> Q:
    return Q(revoked_at__isnull=False, revoked_at__lte=F("starts_at"))


def delegations_in_state(queryset: QuerySet[Delegation], state: str, at: datetime | None = None) -> QuerySet:
    """The same states as Delegation.state_at, in SQL (the admin's filter)."""
    at = at or timezone.now()
    never_began = _never_began()
    if state == "upcoming":
        return queryset.filter(starts_at__gt=at).exclude(never_began)
    if state == "active":
        return queryset.active(at)
    if state == "revoked":
        return queryset.filter(never_began | Q(revoked_at__lte=at, revoked_at__lt=F("ends_at")))
    if state == "ended":
        return queryset.filter(ends_at__lte=at).exclude(never_began).exclude(revoked_at__lt=F("ends_at"))
    raise ValueError(f"unknown delegation state {state!r}")


def delegations_of(user: User, at: datetime | None = None) -> dict[str, list[Delegation]]:
    """The user's current and upcoming delegations: `given` (they are away) and `received`
    (they stand in), soonest first."""
    at = at or timezone.now()
    rows = (
        Delegation.objects.not_over(at)
        .filter(Q(delegator=user) | Q(delegate=user))
        .exclude(_never_began())
        .select_related("delegator", "delegate", "created_by")
        .order_by("starts_at", "pk")
    )
    found: dict[str, list[Delegation]] = {"given": [], "received": []}
    for delegation in rows:
        delegation.state = delegation.state_at(at)
        found["given" if delegation.delegator_id == user.pk else "received"].append(delegation)
    return found


def _assigned(email: str, groups: set[str]) -> Exists:
    return Exists(Assignment.objects.filter(selectors.assignment_match([email], groups), request=OuterRef("pk")))


def with_delegated_for(
    requests: QuerySet[ApprovalRequest],
    user: User,
    *,
    groups: set[str] | None = None,
    delegated: tuple[set[str], set[str]] | None = None,
) -> QuerySet[ApprovalRequest]:
    """Annotate `delegated_for`: the email of the approver a row reaches the user through (an
    active delegation, as permissions.active_delegations_to), or "" when it is assigned to the
    user themselves.

    All in the list's own query (a subquery per row shown, no query per row, none up front).
    `delegated` (selectors.delegated_identities), when the caller has it: with no delegation to
    the user, every row is their own and the subqueries are left out.
    """
    if delegated is not None and not any(delegated):
        return requests.annotate(delegated_for=Value("", output_field=CharField()))
    groups = permissions.user_group_names(user) if groups is None else groups
    delegator_groups = (
        Group.objects.filter(user=OuterRef(OuterRef("delegator_id"))).exclude(name=APPROVER_ACCESS_GROUP).values("name")
    )
    delegators_assignment = Assignment.objects.filter(request=OuterRef(OuterRef("pk"))).filter(
        Q(kind=Assignment.Kind.USER, value=Lower(OuterRef("delegator__email")))
        | Q(kind=Assignment.Kind.GROUP, value__in=delegator_groups)
    )
    delegator = (
        permissions.lending_delegations()
        .filter(delegate=user, delegator__is_active=True)
        .filter(Exists(delegators_assignment))
        .order_by("starts_at", "pk")
        .values("delegator__email")[:1]
    )
    return requests.annotate(
        delegated_for=Case(
            When(_assigned(user.email or "", groups), then=Value("")),
            default=Coalesce(Subquery(delegator), Value("")),
            output_field=CharField(),
        )
    )
