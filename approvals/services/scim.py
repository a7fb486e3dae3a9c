"""SCIM provisioning: accounts and groups pushed by the company's IdP (docs/scim.md).

A provisioned account is the account SSO signs in to: it is keyed by (the token's issuer, the
IdP's subject — the SCIM attribute the token names, externalId by default), exactly as the OIDC
backend keys people by (iss, sub). Email never links two identities: a SCIM user whose email
belongs to another active account is refused (409), not merged.

Deprovisioning (`active: false` or DELETE) is immediate: the account is deactivated, its
sessions end, its delegations end both ways (a reactivation restores none), and every pending
request that loses an approver gets an audit event and a notification to the admins. Its votes
are withdrawn by the identity re-check before any callback (services/recheck.py), and every
decision channel refuses an inactive account (permissions.decision_authority).
"""

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from importlib import import_module

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from approvals.models import (
    CALLBACK_IN_FLIGHT,
    SERVICE_USERNAME_PREFIX,
    ApprovalRequest,
    Assignment,
    AuditAction,
    RequestStatus,
    ScimGroup,
    ScimToken,
    ScimUser,
    User,
    Vote,
)
from approvals.roles import APPROVER_ACCESS_GROUP
from approvals.services.claims import claims_release_held_by
from approvals.services.common import ApprovalError, audit
from approvals.services.delegations import delegations_end_for_account
from approvals.services.email_changes import user_email_changed
from approvals.services.notifications import approver_lost_notify, reassigned_notify

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScimUserData:
    """A SCIM User as the portal keeps it, validated (approvals/scim/resources.py parses it)."""

    user_name: str
    external_id: str
    given_name: str = ""
    family_name: str = ""
    display_name: str = ""
    email: str = ""
    # None: not said (true for a new account, unchanged for an existing one).
    active: bool | None = True
    # The declared SCIM attributes as sent (name, displayName, emails): returned as they came.
    attributes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ScimGroupData:
    display_name: str
    external_id: str = ""
    # SCIM ids of the members; None: leave the members as they are.
    members: tuple[str, ...] | None = None


def _token_fields(token: ScimToken) -> dict:
    return {"via": "scim", "token_id": token.pk, "token": token.name}


def _subject(token: ScimToken, data: ScimUserData) -> str:
    if token.subject_attribute == ScimToken.SubjectAttribute.USER_NAME:
        return data.user_name
    return data.external_id


def _username(issuer: str, subject: str) -> str:
    # The OIDC backend's username for the same identity (approvals/auth.py), so both agree.
    return "oidc-" + hashlib.sha256(f"{issuer}|{subject}".encode()).hexdigest()[:32]


def _check_email(email: str, *, user: User | None) -> None:
    if not email:
        return
    others = User.objects.filter(email__iexact=email, is_active=True)
    if user is not None:
        others = others.exclude(pk=user.pk)
    if others.exists():
        # Assignments are by email: two people with one email would share them. Never merged.
        raise ApprovalError("Another active account has this email.", "conflict")
    domains = settings.OIDC_ALLOWED_EMAIL_DOMAINS
    if domains and email.rsplit("@", 1)[-1] not in domains:
        raise ApprovalError("The email is outside the allowed email domains.", "bad_input")


def _check_user_name(token: ScimToken, user_name: str, *, scim_user: ScimUser | None) -> None:
    taken = ScimUser.objects.filter(issuer=token.issuer, user_name__iexact=user_name, deleted_at__isnull=True)
    if scim_user is not None:
        taken = taken.exclude(pk=scim_user.pk)
    if taken.exists():
        raise ApprovalError("Another user has this userName.", "conflict")


def _user_fields_set(user: User, data: ScimUserData) -> None:
    # Only these: staff, superuser, groups and the identity are never taken from a SCIM body.
    user.email = data.email
    user.first_name = data.given_name[:150]
    user.last_name = data.family_name[:150]


def scim_users(token: ScimToken):
    """The SCIM users this token sees: its issuer's, not deleted."""
    return ScimUser.objects.filter(issuer=token.issuer, deleted_at__isnull=True).select_related("user")


def scim_groups(token: ScimToken):
    return ScimGroup.objects.filter(issuer=token.issuer).select_related("group")


@transaction.atomic
def scim_user_create(*, token: ScimToken, data: ScimUserData) -> ScimUser:
    """Provision an account, or link the account SSO already made for the same (issuer, subject)."""
    subject = _subject(token, data)
    if not subject:
        raise ApprovalError(
            f"{token.subject_attribute} is required: it carries the IdP's user id that SSO signs in with.",
            "bad_input",
        )
    _check_user_name(token, data.user_name, scim_user=None)
    user = User.objects.select_for_update().filter(oidc_issuer=token.issuer, oidc_sub=subject).first()
    linked = None
    if user is not None and user.username.startswith(SERVICE_USERNAME_PREFIX):
        # A bot's identity (a client id) is not a person's: SCIM never takes over a service account.
        raise ApprovalError("This identity belongs to a service account, not a person.", "conflict")
    if user is not None:
        linked = ScimUser.objects.filter(user=user).first()
        if linked is not None and linked.deleted_at is None:
            raise ApprovalError("This user is already provisioned.", "conflict")
    _check_email(data.email, user=user)
    created = user is None
    if created:
        user = User(username=_username(token.issuer, subject), oidc_issuer=token.issuer, oidc_sub=subject)
        user.set_unusable_password()
    else:  # linking the SSO account: its email may change here too
        user_email_changed(user=user, old_email=user.email, new_email=data.email, via="scim")
    _user_fields_set(user, data)
    if created:
        user.is_active = data.active is not False
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:  # a concurrent create of the same identity
        raise ApprovalError("This user is already provisioned.", "conflict") from exc
    if linked is not None:  # provisioned, deleted, and now provisioned again
        scim_user = linked
        scim_user.deleted_at = None
        scim_user.scim_id = uuid.uuid4()  # a new SCIM resource: the deleted one stays gone
    else:
        scim_user = ScimUser(user=user, issuer=token.issuer)
    scim_user.user_name = data.user_name
    scim_user.external_id = data.external_id
    scim_user.display_name = data.display_name
    scim_user.attributes = data.attributes
    try:
        with transaction.atomic():
            scim_user.save()
    except IntegrityError as exc:  # the same userName provisioned concurrently
        raise ApprovalError("Another user has this userName.", "conflict") from exc
    audit(
        action=AuditAction.SCIM_USER_CREATED if created else AuditAction.SCIM_USER_LINKED,
        request=None,
        actor=None,
        user_id=user.pk,
        email=user.email,
        user_name=data.user_name,
        active=data.active is not False,
        **_token_fields(token),
    )
    if not created and user.is_active and data.active is False:
        _deprovision(user, token=token, reason="active: false")
    elif not created and not user.is_active and data.active is not False:
        # The IdP is the source of truth once it provisions an account: a DELETEd (or disabled)
        # account provisioned again as active is active again — audited as such.
        _reactivate(user, token=token)
    return scim_user


def _locked_scim_user(token: ScimToken, scim_id) -> ScimUser:
    scim_user = scim_users(token).select_for_update(of=("self",)).filter(scim_id=scim_id).first()
    if scim_user is None:
        raise ApprovalError("No such user.", "not_found")
    scim_user.user = User.objects.select_for_update().get(pk=scim_user.user_id)
    return scim_user


@transaction.atomic
def scim_user_replace(*, token: ScimToken, scim_id, data: ScimUserData) -> ScimUser:
    """PUT, and PATCH once applied: the portal's attributes become `data`'s."""
    scim_user = _locked_scim_user(token, scim_id)
    user = scim_user.user
    # The link to the SSO identity is made once, at provisioning, and never moves: a later
    # externalId (or userName) names no one else's account. The change is kept and audited.
    relinked = _subject(token, data) != user.oidc_sub
    _check_user_name(token, data.user_name, scim_user=scim_user)
    _check_email(data.email, user=user)
    before = {"email": user.email, "user_name": scim_user.user_name, "active": user.is_active}
    user_email_changed(user=user, old_email=before["email"], new_email=data.email, via="scim")
    _user_fields_set(user, data)
    user.save(update_fields=["email", "first_name", "last_name"])
    scim_user.user_name = data.user_name
    scim_user.external_id = data.external_id
    scim_user.display_name = data.display_name
    scim_user.attributes = data.attributes
    scim_user.save()
    active = user.is_active if data.active is None else data.active
    after = {"email": user.email, "user_name": scim_user.user_name, "active": active}
    audit(
        action=AuditAction.SCIM_USER_UPDATED,
        request=None,
        actor=None,
        user_id=user.pk,
        before=before,
        after=after,
        **({"subject_changed_not_relinked": True} if relinked else {}),
        **_token_fields(token),
    )
    if user.is_active and not active:
        _deprovision(user, token=token, reason="active: false")
    elif not user.is_active and active:
        _reactivate(user, token=token)
    return scim_user


@transaction.atomic
def scim_user_delete(*, token: ScimToken, scim_id) -> None:
    """DELETE: deactivate (never erase: votes and the audit trail keep their author) and unlink."""
    scim_user = _locked_scim_user(token, scim_id)
    scim_user.deleted_at = timezone.now()
    scim_user.save(update_fields=["deleted_at", "updated_at"])
    audit(
        action=AuditAction.SCIM_USER_DELETED,
        request=None,
        actor=None,
        user_id=scim_user.user_id,
        email=scim_user.user.email,
        **_token_fields(token),
    )
    if scim_user.user.is_active:
        _deprovision(scim_user.user, token=token, reason="deleted")


def _reactivate(user: User, *, token: ScimToken) -> None:
    user.is_active = True
    user.save(update_fields=["is_active"])
    # Deprovisioning ended its delegations; one still open was left by a deactivation from before
    # it did (or outside SCIM): it ends too, so the account comes back with none in force.
    ended = delegations_end_for_account(user=user, ended_by="reactivated", **_token_fields(token))
    audit(
        action=AuditAction.SCIM_USER_REACTIVATED,
        request=None,
        actor=None,
        user_id=user.pk,
        email=user.email,
        **({"delegations_ended": ended} if ended else {}),
        **_token_fields(token),
    )


def _sessions_end(user: User) -> int:
    """End every session of `user` (database-backed session engines: the default one)."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if not hasattr(store, "get_model_class"):
        # Cookie or cache sessions cannot be listed; the backend's get_user refuses an inactive
        # account on the next request anyway (approvals/auth.py).
        logger.warning("sessions of a deprovisioned user not ended: %s cannot list sessions", settings.SESSION_ENGINE)
        return 0
    model = store.get_model_class()
    ended = []
    for session in model.objects.filter(expire_date__gt=timezone.now()).iterator(chunk_size=2000):
        if str(session.get_decoded().get("_auth_user_id")) == str(user.pk):
            ended.append(session.session_key)
    for key in ended:
        store(session_key=key).delete()  # through the store: cached_db forgets its cache too
    return len(ended)


def _requests_losing(user: User) -> list[tuple[ApprovalRequest, list[str]]]:
    """Open requests where `user` was an approver or voted: each with how (for the admins)."""
    email = (user.email or "").lower()
    groups = list(user.groups.exclude(name=APPROVER_ACCESS_GROUP).values_list("name", flat=True))
    open_requests = Q(status=RequestStatus.PENDING) | Q(callback__status__in=CALLBACK_IN_FLIGHT)
    assigned = Q(assignments__kind=Assignment.Kind.USER, assignments__value=email) if email else Q(pk__in=[])
    assigned |= Q(assignments__kind=Assignment.Kind.GROUP, assignments__value__in=groups)
    voted = Q(votes__user=user, votes__withdrawn_at__isnull=True)
    found = []
    candidates = ApprovalRequest.objects.filter(open_requests).filter(assigned | voted).distinct().order_by("pk")
    for request in candidates.prefetch_related("assignments"):
        how = [
            f"group {a.value}" if a.kind == Assignment.Kind.GROUP else "named approver"
            for a in request.assignments.all()
            if (a.kind == Assignment.Kind.USER and a.value == email)
            or (a.kind == Assignment.Kind.GROUP and a.value in groups)
        ]
        if request.votes.filter(user=user, withdrawn_at__isnull=True).exists():
            how.append("voted (the vote no longer counts)")
        found.append((request, how))
    return found


def _deprovision(user: User, *, token: ScimToken, reason: str) -> None:
    """Deactivate now: sessions end, requests that lose an approver are recorded and admins told."""
    user.is_active = False
    user.save(update_fields=["is_active"])
    sessions = _sessions_end(user)
    claims_release_held_by(user=user, code="inactive_user")
    # Both ways: what it lent and what it held. Left open, a reactivation (SCIM active: true, a
    # re-hire) put them back in force without anyone setting them again.
    delegations = delegations_end_for_account(user=user, ended_by="deprovisioned", **_token_fields(token))
    affected = _requests_losing(user)
    for request, how in affected:
        audit(
            action=AuditAction.APPROVER_DEPROVISIONED,
            request=request,
            actor=None,
            user_id=user.pk,
            email=user.email,
            how=how,
            **_token_fields(token),
        )
        approver_lost_notify(request=request)
    audit(
        action=AuditAction.SCIM_USER_DEACTIVATED,
        request=None,
        actor=None,
        user_id=user.pk,
        email=user.email,
        reason=reason,
        sessions_ended=sessions,
        requests=[str(request.public_id) for request, _ in affected],
        delegations_ended=delegations,
        **_token_fields(token),
    )


# --- Groups -------------------------------------------------------------------------------


def _members(token: ScimToken, scim_ids: tuple[str, ...]) -> list[User]:
    wanted = set(scim_ids)
    found = {str(su.scim_id): su.user for su in scim_users(token).filter(scim_id__in=_valid_uuids(wanted))}
    missing = sorted(wanted - found.keys())
    if missing:
        raise ApprovalError(f"No such user: {missing[0][:64]}", "bad_input")
    return list(found.values())


def _valid_uuids(values) -> list[str]:
    valid = []
    for value in values:
        try:
            valid.append(str(uuid.UUID(str(value))))
        except ValueError:
            continue
    return valid


def _check_group_name(token: ScimToken, name: str, *, scim_group: ScimGroup | None) -> Group:
    if name == APPROVER_ACCESS_GROUP:
        # The portal's own permission group is never an IdP group (approvals/roles.py).
        raise ApprovalError("This group name is reserved by the portal.", "bad_input")
    group = Group.objects.filter(name=name).first()
    if group is not None:
        owner = ScimGroup.objects.filter(group=group).first()
        if owner is not None and (scim_group is None or owner.pk != scim_group.pk):
            raise ApprovalError("Another group has this displayName.", "conflict")
    return group


def _members_set(token: ScimToken, group: Group, members: tuple[str, ...] | None) -> dict:
    if members is None:
        return {}
    wanted = {user.pk: user for user in _members(token, members)}
    current = set(group.user_set.values_list("pk", flat=True))
    added = [wanted[pk] for pk in wanted.keys() - current]
    # SCIM wins for the groups it manages: whoever is not in its list leaves, also a member the
    # groups claim put there before the IdP took the group over (docs/scim.md).
    removed = list(current - wanted.keys())
    if added:
        group.user_set.add(*added)
    if removed:
        group.user_set.remove(*removed)
    return {"added": sorted(u.email or str(u.pk) for u in added), "removed": len(removed)}


def _open_requests_assigned_to(name: str):
    # Open: pending, or decided with the callback in flight (its re-check reads the assignments).
    open_requests = Q(status=RequestStatus.PENDING) | Q(callback__status__in=CALLBACK_IN_FLIGHT)
    assigned = Q(assignments__kind=Assignment.Kind.GROUP, assignments__value=name)
    return ApprovalRequest.objects.filter(open_requests).filter(assigned).distinct().order_by("pk")


def _assigned_group_deleted(name: str, *, token: ScimToken, members: int) -> None:
    """Record on each open request assigned to the group `name` that the IdP deleted it.

    The assignments stay as they are: nobody is in the group any more (the request waits for an
    admin to reassign it), and a group that later takes the name inherits it (docs/scim.md).
    """
    for request in _open_requests_assigned_to(name):
        audit(
            action=AuditAction.ASSIGNED_GROUP_DELETED,
            request=request,
            actor=None,
            group=name,
            members=members,
            **_token_fields(token),
        )


def _assigned_group_renamed(old: str, new: str, *, token: ScimToken) -> None:
    """The IdP renamed the group `old` to `new`: its open requests follow it to the new name.

    Assignments name groups by name; left on the old one, they would wait for nobody, and a
    group that later takes the old name (SCIM or the groups claim) would decide them. Closed
    requests keep the name they were decided under. Requests that already named `new` (a group
    nobody had: a rename onto an existing group is refused) now have this group's members:
    the IdP said the two are one group, so the assignments merge, recorded as `merged`, and
    the members are told of the requests that are new to them (after commit).
    """
    moving = list(_open_requests_assigned_to(old))
    already = {r.pk: r for r in _open_requests_assigned_to(new)}
    kept = [r.pk for r in moving if r.pk in already]
    if kept:  # both names on one request: one assignment stays (unique per request)
        Assignment.objects.filter(request_id__in=kept, kind=Assignment.Kind.GROUP, value=old).delete()
    Assignment.objects.filter(
        request_id__in=[r.pk for r in moving if r.pk not in already], kind=Assignment.Kind.GROUP, value=old
    ).update(value=new)
    # The approvals these requests counted through the old name count through the new one
    # (distinctGroups counts them by Vote.group; left on the old name, the re-check withdrew them).
    Vote.objects.filter(request_id__in=[r.pk for r in moving], group=old).update(group=new)
    affected = {r.pk: r for r in moving} | already
    for pk in sorted(affected):
        audit(
            action=AuditAction.ASSIGNED_GROUP_RENAMED,
            request=affected[pk],
            actor=None,
            group=old,
            renamed_to=new,
            **({"merged": True} if pk in already else {}),
            **_token_fields(token),
        )
    moved = {r.pk for r in moving}
    for pk in sorted(already.keys() - moved):  # new to the group's members: tell them, as a reassignment does
        transaction.on_commit(lambda pk=pk: reassigned_notify(request_id=pk, users=[], groups=[new]))


@transaction.atomic
def scim_group_create(*, token: ScimToken, data: ScimGroupData) -> ScimGroup:
    """A SCIM group is the group assignments and the groups claim name (by displayName)."""
    group = _check_group_name(token, data.display_name, scim_group=None)
    adopted = group is not None
    try:
        with transaction.atomic():
            if group is None:
                group = Group.objects.create(name=data.display_name)
            scim_group = ScimGroup.objects.create(group=group, issuer=token.issuer, external_id=data.external_id)
    except IntegrityError as exc:  # the same group provisioned concurrently
        raise ApprovalError("Another group has this displayName.", "conflict") from exc
    changes = _members_set(token, group, data.members)
    audit(
        action=AuditAction.SCIM_GROUP_CREATED,
        request=None,
        actor=None,
        group=group.name,
        adopted=adopted,
        **changes,
        **_token_fields(token),
    )
    return scim_group


def _locked_scim_group(token: ScimToken, scim_id) -> ScimGroup:
    scim_group = scim_groups(token).select_for_update(of=("self",)).filter(scim_id=scim_id).first()
    if scim_group is None:
        raise ApprovalError("No such group.", "not_found")
    return scim_group


@transaction.atomic
def scim_group_replace(*, token: ScimToken, scim_id, data: ScimGroupData) -> ScimGroup:
    scim_group = _locked_scim_group(token, scim_id)
    group = scim_group.group
    before = group.name
    if data.display_name != group.name:
        if _check_group_name(token, data.display_name, scim_group=scim_group) is not None:
            raise ApprovalError("Another group has this displayName.", "conflict")
        group.name = data.display_name
        group.save(update_fields=["name"])
    scim_group.external_id = data.external_id
    scim_group.save()
    if before != group.name:
        _assigned_group_renamed(before, group.name, token=token)
    changes = _members_set(token, group, data.members)
    audit(
        action=AuditAction.SCIM_GROUP_UPDATED,
        request=None,
        actor=None,
        group=group.name,
        **({"renamed_from": before} if before != group.name else {}),
        **changes,
        **_token_fields(token),
    )
    return scim_group


@transaction.atomic
def scim_group_delete(*, token: ScimToken, scim_id) -> None:
    """The IdP no longer manages the group: its members leave it; the name stays usable."""
    scim_group = _locked_scim_group(token, scim_id)
    group = scim_group.group
    members = group.user_set.count()
    group.user_set.clear()
    scim_group.delete()
    _assigned_group_deleted(group.name, token=token, members=members)
    audit(
        action=AuditAction.SCIM_GROUP_DELETED,
        request=None,
        actor=None,
        group=group.name,
        members=members,
        **_token_fields(token),
    )


def scim_managed_group_names() -> set[str]:
    """Groups whose membership SCIM keeps: the ID token's groups claim neither adds nor removes them."""
    return set(ScimGroup.objects.values_list("group__name", flat=True))
