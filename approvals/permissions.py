"""The one rule for who may decide an approval request.

Views, admin, notifications and the callback task all ask this module; nobody re-implements it.

A person decides with an *authority*: their own assignment (named by email, or a member of an
assigned group), or — while a Delegation from an approver to them is active — that approver's.
On top of that come the request's policy (one vote per person, distinct groups) and separation
of duties (the requester never decides; optionally nobody decides two levels of one execution,
or shares a group with the requester).

A service account (a bot, approvals/api/) neither lends nor receives authority through a
delegation: its authority is what an admin gave it (its email and groups, its state machines,
"may decide"), and service_account_refusal judges the one deciding, so a delegate of a bot would
decide what the bot may not, and a bot named a delegate what no admin assigned it.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from approvals import delivery
from approvals.models import (
    SERVICE_USERNAME_PREFIX,
    ApprovalRequest,
    Assignment,
    Delegation,
    ServiceAccount,
    User,
    Vote,
)
from approvals.roles import APPROVER_ACCESS_GROUP


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


@dataclass(frozen=True)
class Authority:
    """Whose right a decision uses: `principal` (the user, or the approver they stand in for),
    through which assignment (`group`: a group name, or "user:<email>")."""

    principal: User
    group: str
    delegation: Delegation | None = None

    @property
    def on_behalf_of(self) -> User | None:
        return self.principal if self.delegation is not None else None


# Where preload_group_names() keeps a user's groups on the instance (see there).
_GROUPS_LOADED = "_sso_group_names_loaded"


def user_group_names(user: User) -> set[str]:
    """The user's SSO groups (as mirrored at sign-in), without the portal's own permission group."""
    loaded = getattr(user, _GROUPS_LOADED, None)
    if loaded is not None:
        return set(loaded)
    return set(user.groups.exclude(name=APPROVER_ACCESS_GROUP).values_list("name", flat=True))


def preload_group_names(users: Iterable[User]) -> None:
    """Load the groups of many users in one query and keep them on these instances.

    For a batch that asks the same rule many times (the callback re-check of a batch): each
    voter's groups are read once, at the start of the batch, and these instances live only for
    it. Other instances of the same users still read their groups afresh.
    """
    users = [user for user in users if user is not None]
    names: dict[int, set[str]] = {user.pk: set() for user in users}
    rows = User.groups.through.objects.filter(user_id__in=list(names)).exclude(group__name=APPROVER_ACCESS_GROUP)
    for user_id, name in rows.values_list("user_id", "group__name"):
        names[user_id].add(name)
    for user in users:
        setattr(user, _GROUPS_LOADED, frozenset(names[user.pk]))


def service_account_of(user: User) -> ServiceAccount | None:
    """The ServiceAccount whose user this is (a bot's), or None for a person: only a bot's user
    has a service username (services/service_accounts.py), so a person costs no query."""
    if user.pk is None or not user.username.startswith(SERVICE_USERNAME_PREFIX):
        return None
    return ServiceAccount.objects.filter(user_id=user.pk).first()


def is_service_account(user: User) -> bool:
    """A bot's user (a ServiceAccount's), not a person's."""
    return service_account_of(user) is not None


def lending_delegations(at: datetime | None = None):
    """The delegations that lend an approver's right at `at` (now by default): in force, and
    between people. One that names a service account on either side lends nothing (nobody can set
    one now, services.delegations; one set before this rule stays inert), so its delegate neither
    sees nor decides nor hears of the bot's requests, and a bot named a delegate gets nothing."""
    return Delegation.objects.active(at).filter(
        delegator__service_account__isnull=True, delegate__service_account__isnull=True
    )


# Where preload_delegations() keeps the delegations a user holds now (see there).
_DELEGATIONS_LOADED = "_active_delegations_loaded"


def preload_delegations(users: Iterable[User]) -> None:
    """Load the delegations each of these users holds now, and their delegators' groups, in two
    queries, and keep them on these instances (as preload_group_names does, for a batch: the
    notifications a task sends). authorities() then reads them instead of asking each time."""
    users = [user for user in users if user is not None]
    held: dict[int, list[Delegation]] = {user.pk: [] for user in users}
    delegations = lending_delegations().filter(delegate__in=list(held)).select_related("delegator")
    for delegation in delegations.order_by("starts_at", "pk"):
        held[delegation.delegate_id].append(delegation)
    preload_group_names(delegation.delegator for found in held.values() for delegation in found)
    for user in users:
        setattr(user, _DELEGATIONS_LOADED, tuple(held[user.pk]))


# Where preload_assignments() keeps a request's assignments (see there).
_ASSIGNMENTS_LOADED = "_assignments_loaded"


def preload_assignments(requests: Iterable[ApprovalRequest]) -> None:
    """Load the assignments of many requests in one query and keep them on these instances.

    For a batch (the callback re-check): Django's prefetch builds a filtered queryset for every
    request, which cost more than the query itself; these are a plain tuple per request. The
    instances live only for the batch; others read their assignments afresh.
    """
    requests = [request for request in requests if request is not None]
    found: dict[int, list[Assignment]] = {request.pk: [] for request in requests}
    for assignment in Assignment.objects.filter(request_id__in=list(found)).order_by("pk"):
        found[assignment.request_id].append(assignment)
    for request in requests:
        setattr(request, _ASSIGNMENTS_LOADED, tuple(found[request.pk]))


def _assignments(request: ApprovalRequest) -> Iterable[Assignment]:
    loaded = getattr(request, _ASSIGNMENTS_LOADED, None)
    return loaded if loaded is not None else request.assignments.all()


def _assignment_keys(user: User, request: ApprovalRequest) -> list[str]:
    """The assignments of `request` that name `user`: "user:<email>" and assigned group names."""
    email = (user.email or "").lower()
    groups = user_group_names(user)
    keys = []
    for assignment in _assignments(request):
        if assignment.kind == Assignment.Kind.USER and email and assignment.value == email:
            keys.append(f"user:{email}")
        elif assignment.kind == Assignment.Kind.GROUP and assignment.value in groups:
            keys.append(assignment.value)
    return sorted(keys, key=lambda key: (not key.startswith("user:"), key))


def is_assignee(user: User, request: ApprovalRequest) -> bool:
    """A named assignee (by email) or a member of an assigned group."""
    return bool(_assignment_keys(user, request))


def active_delegations_to(user: User, at: datetime | None = None):
    """Delegations that let `user` stand in for someone at `at` (now by default)."""
    return lending_delegations(at).filter(delegate=user).select_related("delegator").order_by("starts_at", "pk")


def authorities(user: User, request: ApprovalRequest, at: datetime | None = None) -> list[Authority]:
    """Every right `user` has on `request`: their own first, then delegated ones."""
    found = [Authority(principal=user, group=key) for key in _assignment_keys(user, request)]
    loaded = getattr(user, _DELEGATIONS_LOADED, None) if at is None else None
    for delegation in loaded if loaded is not None else active_delegations_to(user, at):
        delegator = delegation.delegator
        if not delegator.is_active:
            continue
        found += [
            Authority(principal=delegator, group=key, delegation=delegation)
            for key in _assignment_keys(delegator, request)
        ]
    return found


def _is_requester(user: User, request: ApprovalRequest) -> bool:
    """The requester by email now, or the account that email named when the request arrived
    (an email changed since does not make them someone else)."""
    if request.requester_user_id is not None and user.pk == request.requester_user_id:
        return True
    email = (user.email or "").lower()
    return bool(request.requester_email) and email == request.requester_email.lower()


def requester_groups(request: ApprovalRequest) -> set[str]:
    """The requester's groups: what the message named, plus what the portal mirrored at their
    sign-in — of the account the email named when the request arrived (as _is_requester: an email
    changed since does not make them someone else), and of the account it names now."""
    groups = set(request.requester_groups or [])
    if request.requester_user_id is not None:
        groups |= user_group_names(request.requester_user)
    if request.requester_email:
        requester = User.objects.filter(email__iexact=request.requester_email, is_active=True).first()
        if requester is not None:
            groups |= user_group_names(requester)
    return groups


def _earlier_level_vote(people: set[int], request: ApprovalRequest, before: datetime | None = None) -> Vote | None:
    """A vote by one of `people` on an earlier state of the same execution (not a Map sibling)."""
    if not request.execution_arn:
        return None
    earlier = Vote.objects.filter(
        request__execution_arn=request.execution_arn, request__received_at__lt=request.received_at
    ).exclude(request__state_name=request.state_name)
    if before is not None:
        earlier = earlier.filter(created_at__lt=before)
    return (
        earlier.filter(Q(user__in=people) | Q(on_behalf_of__in=people)).select_related("request").order_by("pk").first()
    )


def _duties_refusal(user: User, authority: Authority, request: ApprovalRequest, *, before=None) -> Refusal | None:
    """Separation of duties for the person deciding and the approver whose right they use."""
    people = {user, authority.principal}
    if any(_is_requester(person, request) for person in people):
        return Refusal(
            "requester",
            "You requested this approval, so someone else has to decide it."
            if _is_requester(user, request)
            else f"{authority.principal.email} requested this approval, so their delegate may not decide it.",
        )
    if request.sod_exclude_requester_groups:
        theirs = requester_groups(request)
        for person in people:
            shared = sorted(user_group_names(person) & theirs)
            if shared:
                who = "You share" if person == user else f"{person.email} shares"
                return Refusal(
                    "sod_requester_group",
                    f"Separation of duties: {who} the group {shared[0]!r} with the requester, "
                    "so someone outside the requester's groups has to decide.",
                )
    if request.sod_distinct_levels:
        vote = _earlier_level_vote({person.pk for person in people}, request, before=before)
        if vote is not None:
            return Refusal(
                "sod_previous_level",
                "Separation of duties: "
                f"{'you' if user.pk in {vote.user_id, vote.on_behalf_of_id} else authority.principal.email} "
                f"already decided an earlier step of this workflow ({vote.request.state_name or 'another step'}), "
                "so someone else has to decide this one.",
            )
    return None


def _assignment_creators(request: ApprovalRequest) -> dict[str, int | None]:
    """Who made each assignment of `request` (by its key, as _assignment_keys spells them):
    the admin whose reassignment added it, or None when the message or a routing rule named it."""
    return {
        (f"user:{assignment.value}" if assignment.kind == Assignment.Kind.USER else assignment.value): (
            assignment.created_by_id
        )
        for assignment in _assignments(request)
    }


def _self_assigned_refusal(user: User, authority: Authority, request: ApprovalRequest) -> Refusal | None:
    """Four eyes for admins too: nobody decides with an assignment they made themselves."""
    if _assignment_creators(request).get(authority.group) != user.pk:
        return None
    return Refusal(
        "self_assigned",
        "You assigned this request to yourself, so someone else has to decide it "
        "(or another admin has to assign it to you).",
    )


def _voted(request: ApprovalRequest, people: set[int]) -> bool:
    return any(vote.user_id in people or vote.on_behalf_of_id in people for vote in request.votes.all())


def service_account_refusal(user: User, request: ApprovalRequest) -> Refusal | None:
    """A service user (a bot's client-credentials token, approvals/api/) decides only where an
    admin allowed it: may decide, and the request's state machine in its scope."""
    account = service_account_of(user)
    if account is None:
        return None
    if not account.may_decide:
        return Refusal("service_account_read_only", f"The service account {account.name} may not decide.")
    if not account.covers(request.state_machine_arn):
        return Refusal(
            "service_account_out_of_scope", f"The service account {account.name} may not decide for this workflow."
        )
    return None


def decision_authority(
    user: User, request: ApprovalRequest, *, approve: bool | None = None, at: datetime | None = None
) -> tuple[Authority | None, Refusal | None]:
    """The authority `user` decides `request` with now, or why they may not.

    `approve` True checks distinctGroups too (a rejection may come from any group). `at`: the
    moment the decision is recorded at (now by default), so that the deadline and a delegation's
    window are judged at the very moment the vote carries, which the callback's re-check reads.
    """
    if not user.is_active:
        return None, Refusal("inactive_user", "Your account is disabled.")
    if (refused := service_account_refusal(user, request)) is not None:
        return None, refused
    if _is_requester(user, request):
        return None, Refusal("requester", "You requested this approval, so someone else has to decide it.")
    candidates = authorities(user, request, at)
    if not candidates:
        return None, Refusal("not_assignee", "You are not an approver of this request.")
    if not request.is_pending:
        return None, Refusal("not_pending", f"This request is already {delivery.request_status_words(request)}.")
    if request.deadline is not None and request.deadline <= (at or timezone.now()):
        return None, Refusal("expired", "The deadline for this request has passed.")
    stood_in = next((vote for vote in request.votes.all() if vote.on_behalf_of_id == user.pk), None)
    if stood_in is not None:
        return None, Refusal("already_voted", f"{stood_in.user.email} already decided this request on your behalf.")
    if _voted(request, {user.pk}):
        return None, Refusal(
            "already_voted", "You already decided this request; it waits for other approvers to reach its policy."
        )
    used_groups = {vote.group for vote in request.votes.all() if vote.approve}
    refusal = None
    for authority in candidates:
        if authority.delegation is not None and _voted(request, {authority.principal.pk}):
            refusal = refusal or Refusal(
                "already_voted", f"{authority.principal.email} already decided this request themselves."
            )
            continue
        duties = _self_assigned_refusal(user, authority, request) or _duties_refusal(user, authority, request)
        if duties is not None:
            refusal = refusal or duties
            continue
        if approve and request.distinct_groups and authority.group in used_groups:
            refusal = refusal or Refusal(
                "distinct_groups",
                f"This request needs approvals from different groups, and {authority.group} has already approved.",
            )
            continue
        return authority, None
    return None, refusal


def decision_refusal(user: User, request: ApprovalRequest, *, approve: bool | None = None) -> Refusal | None:
    """Why `user` may not decide `request` now, or None if they may."""
    return decision_authority(user, request, approve=approve)[1]


def vote_refusal(vote: Vote, request: ApprovalRequest) -> Refusal | None:
    """The same rule once more before the callback: the voter must still be allowed.

    Checked as of the vote (a delegation that ended since still covered it), against who the
    people are now (deactivated, removed from the group they decided through).
    """
    user = vote.user
    if not user.is_active:
        return Refusal("inactive_user", f"{user.email or user.pk}'s account is disabled.")
    if (refused := service_account_refusal(user, request)) is not None:
        return refused
    principal = vote.on_behalf_of or user
    if vote.on_behalf_of is not None:
        delegation = active_delegations_to(user, at=vote.created_at).filter(delegator=vote.on_behalf_of).exists()
        if not delegation:
            return Refusal("not_assignee", f"{user.email} no longer stands in for {principal.email}.")
        if not principal.is_active:
            return Refusal("inactive_user", f"{principal.email}'s account is disabled.")
    keys = _assignment_keys(principal, request)
    if not keys:
        return Refusal("not_assignee", f"{principal.email or principal.pk} is no longer an approver of this request.")
    if _is_requester(user, request):
        return Refusal("requester", "The requester may not decide their own request.")
    creators = _assignment_creators(request)
    group = vote.group or keys[0]
    if group not in keys:
        # The assignment the vote counted for is gone (left the group, reassigned away). With
        # distinctGroups that group is what the approval counts as: it no longer does. Otherwise
        # another of their assignments may carry it, but never one they made themselves.
        if request.distinct_groups and vote.approve:
            return Refusal(
                "not_assignee",
                f"{principal.email or principal.pk} is no longer an approver through {group}, "
                "the group their approval counted for.",
            )
        group = next((key for key in keys if creators.get(key) != user.pk), keys[0])
    authority = Authority(principal=principal, group=group, delegation=None)
    if creators.get(authority.group) == user.pk:
        return Refusal("self_assigned", f"{user.email} decided with an assignment they made themselves.")
    return _duties_refusal(user, authority, request, before=vote.created_at)


def can_view(user: User, request: ApprovalRequest) -> bool:
    """Approvers (and their active delegates), the requester, whoever decided it, and admins.

    Admins are superusers: approvers are staff too (they use the admin), but see only their own.
    """
    if user.is_superuser:
        return True
    if _is_requester(user, request):
        return True
    if request.decided_by_id == user.pk or any(vote.user_id == user.pk for vote in request.votes.all()):
        return True
    return bool(authorities(user, request))
