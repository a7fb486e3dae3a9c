"""Delegation ("out of office until D, delegate to X"): setting and revoking one.

Who may then see and decide what is the rule in approvals/permissions.py; these functions only
write Delegation rows, each change audited in its own transaction.
"""

import logging
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from approvals import permissions
from approvals.models import AuditAction, Delegation, User
from approvals.services.common import ApprovalError, audit, truncate

logger = logging.getLogger(__name__)

# Longer than this is a standing arrangement: reassign, or change the routing, instead.
MAX_DELEGATION_LENGTH = timedelta(days=365)
# The permission that lets someone set and revoke other people's delegations (superusers have it).
ADMIN_PERMISSION = "approvals.add_delegation"


def may_manage_delegations_of(actor: User, delegator: User) -> bool:
    """The delegator themselves, or an admin."""
    if not actor.is_active:
        return False
    return actor.pk == delegator.pk or actor.is_superuser or actor.has_perm(ADMIN_PERMISSION)


def _delegate_by_email(email: str) -> User:
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise ApprovalError(f"“{truncate(email, 80)}” is not an email address.", "bad_input") from None
    # Email is not unique (users are keyed by the IdP's sub); two active accounts with one
    # address would make "who stands in" a guess, so that is refused.
    found = list(User.objects.filter(email__iexact=email, is_active=True).order_by("pk")[:2])
    if not found:
        raise ApprovalError(
            f"Nobody with the email {email} uses the portal yet: they have to sign in once (or be "
            "provisioned by the company's identity provider) before they can stand in for someone.",
            "unknown_delegate",
        )
    if len(found) > 1:
        raise ApprovalError(f"Several portal accounts have the email {email}; ask an admin.", "unknown_delegate")
    return found[0]


def delegation_check(
    *,
    delegator: User,
    delegate_email: str,
    ends_at: datetime,
    starts_at: datetime | None = None,
    actor: User,
    now: datetime | None = None,
) -> tuple[User, datetime, datetime]:
    """Everything delegation_set refuses, without writing: (delegate, starts_at, ends_at).

    A start in the past (or none) means now: a delegation never reaches back in time.
    """
    now = now or timezone.now()
    if not may_manage_delegations_of(actor, delegator):
        raise ApprovalError("Only an admin may set or revoke someone else's delegation.", "not_allowed")
    if not delegator.is_active:
        raise ApprovalError(f"{delegator.email or delegator.pk}'s account is disabled.", "inactive_user")
    # A bot's authority is what an admin gave it (permissions.lending_delegations): it lends it
    # to nobody, and stands in for nobody.
    if permissions.is_service_account(delegator):
        raise ApprovalError(
            f"{delegator.email or 'This account'} is a service account: it lends its authority to nobody. "
            "To have a person decide its requests, an admin reassigns them.",
            "not_allowed",
        )
    delegate = _delegate_by_email(delegate_email)
    if permissions.is_service_account(delegate):
        raise ApprovalError(
            f"{delegate.email} is a service account: it stands in for nobody. Name a person.", "bad_input"
        )
    if delegate.pk == delegator.pk:
        raise ApprovalError("Someone else has to stand in: a delegation to oneself means nothing.", "bad_input")
    for moment in (starts_at, ends_at):
        if moment is not None and timezone.is_naive(moment):
            raise ValueError("delegation times must be timezone-aware")
    starts_at = max(starts_at or now, now)
    if ends_at <= now:
        raise ApprovalError("The end has to be in the future.", "bad_period")
    if ends_at <= starts_at:
        raise ApprovalError("The end has to come after the start.", "bad_period")
    if ends_at - starts_at > MAX_DELEGATION_LENGTH:
        raise ApprovalError("A delegation lasts at most a year.", "bad_period")
    return delegate, starts_at, ends_at


def _period(delegation: Delegation) -> dict:
    return {"from": delegation.starts_at.isoformat(), "until": delegation.ends_at.isoformat()}


def _revoke(delegation: Delegation, *, at: datetime, actor: User | None, **data) -> None:
    """End `delegation` at `at`, audited (`actor` None: the system)."""
    delegation.revoked_at = at
    delegation.save(update_fields=["revoked_at"])
    audit(
        action=AuditAction.DELEGATION_REVOKED,
        request=None,
        actor=actor,
        delegation=delegation.pk,
        delegator=delegation.delegator.email,
        delegate=delegation.delegate.email,
        **_period(delegation),
        revoked_from=at.isoformat(),
        **data,
    )


@transaction.atomic
def delegation_set(
    *,
    delegator: User,
    delegate_email: str,
    ends_at: datetime,
    starts_at: datetime | None = None,
    reason: str = "",
    actor: User,
) -> Delegation:
    """From `starts_at` (default now) until `ends_at`, the delegate may see and decide what
    `delegator` may. One delegation per person at a time: one that overlaps the new period is
    revoked (audited), from the moment the new one starts.
    """
    now = timezone.now()
    delegate, starts_at, ends_at = delegation_check(
        delegator=delegator, delegate_email=delegate_email, ends_at=ends_at, starts_at=starts_at, actor=actor, now=now
    )
    reason = truncate((reason or "").strip(), 200)
    # Two settings for one person at the same moment take turns on the person's row.
    User.objects.select_for_update().filter(pk=delegator.pk).first()
    overlapping = (
        Delegation.objects.select_for_update(of=("self",))
        .filter(delegator=delegator, starts_at__lt=ends_at, ends_at__gt=starts_at)
        .filter(Q(revoked_at__isnull=True) | Q(revoked_at__gt=starts_at))
        .select_related("delegator", "delegate")
        .order_by("pk")
    )
    replaced = []
    for old in overlapping:
        # One that began earlier runs until the new one begins; one that had not begun yet never will.
        _revoke(old, at=starts_at if old.starts_at < starts_at else now, actor=actor, replaced_by_new=True)
        replaced.append(old.pk)
    delegation = Delegation.objects.create(
        delegator=delegator,
        delegate=delegate,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=reason,
        created_by=actor,
        created_at=now,
    )
    audit(
        action=AuditAction.DELEGATION_SET,
        request=None,
        actor=actor,
        delegation=delegation.pk,
        delegator=delegator.email,
        delegate=delegate.email,
        **_period(delegation),
        set_by=actor.email,
        reason=reason,
        replaced=replaced,
    )
    logger.info("delegation %s: user %s to user %s", delegation.pk, delegator.pk, delegate.pk)
    return delegation


@transaction.atomic
def delegation_revoke(*, delegation_id: int, actor: User) -> Delegation:
    """End a delegation now (or cancel one that has not begun). Revoking twice is harmless."""
    delegation = (
        Delegation.objects.select_for_update(of=("self",))
        .select_related("delegator", "delegate")
        .filter(pk=delegation_id)
        .first()
    )
    if delegation is None:
        raise ApprovalError("This delegation does not exist.", "not_found")
    if not may_manage_delegations_of(actor, delegation.delegator):
        raise ApprovalError("Only the person who delegated, or an admin, may revoke this delegation.", "not_allowed")
    now = timezone.now()
    if delegation.effective_end <= now:
        return delegation  # already over: nothing to revoke
    _revoke(delegation, at=now, actor=actor)
    return delegation


@transaction.atomic
def delegations_end_for_account(*, user: User, ended_by: str, actor: User | None = None, **data) -> list[int]:
    """End now every delegation `user` gives or holds that is not over (active or upcoming): the
    account was deprovisioned by SCIM (`ended_by` "deprovisioned"), a service account deactivated by
    an admin ("deactivated"), or an account reactivated with some left open by a deactivation from
    before deactivating ended them ("reactivated"). Each is audited (`delegation_revoked` by
    `actor`, None: the system; with `ended_by` and `data`); returns their ids.

    While an account is inactive its delegations lend nothing and give it nothing
    (permissions.authorities); ended, a reactivation restores none of them without the people
    concerned setting them again."""
    now = timezone.now()
    open_delegations = (
        Delegation.objects.select_for_update(of=("self",))
        .not_over(now)
        .filter(Q(delegator=user) | Q(delegate=user))
        .select_related("delegator", "delegate")
        .order_by("pk")
    )
    ended = []
    for delegation in open_delegations:
        _revoke(delegation, at=now, actor=actor, ended_by=ended_by, **data)
        ended.append(delegation.pk)
    if ended:
        logger.info("delegations %s of user %s ended: %s", ended, user.pk, ended_by)
    return ended
