"""Service accounts: bots and tools that call the API with client-credentials tokens (docs/api.md)."""

import hashlib
from collections.abc import Sequence

from django.contrib.auth.models import Group
from django.db import transaction

from approvals.models import SERVICE_USERNAME_PREFIX, AuditAction, ServiceAccount, User
from approvals.services.common import ApprovalError, audit
from approvals.services.delegations import delegations_end_for_account


def _service_username(issuer: str, subject: str) -> str:
    digest = hashlib.sha256(f"{issuer}|{subject}".encode()).hexdigest()[:32]
    return f"{SERVICE_USERNAME_PREFIX}{digest}"


def _account_data(account: ServiceAccount) -> dict:
    return {
        "name": account.name,
        "issuer": account.issuer,
        "subject": account.subject,
        "email": account.user.email,
        "groups": sorted(account.user.groups.values_list("name", flat=True)),
        "state_machines": account.state_machines,
        "may_decide": account.may_decide,
        "active": account.user.is_active,
    }


@transaction.atomic
def service_account_save(
    *,
    actor: User,
    name: str,
    issuer: str,
    subject: str,
    email: str = "",
    groups: Sequence[str] = (),
    state_machines: Sequence[str] = (),
    may_decide: bool = False,
    active: bool = True,
    account_id: int | None = None,
) -> ServiceAccount:
    """Create or change a service account and its service user (never staff, never an admin).

    The service user's email and groups are what assignments name, so a bot is an assignee
    like a person; (issuer, subject) is its identity in a decision's output."""
    name, issuer, subject, email = name.strip(), issuer.strip(), subject.strip(), email.strip().lower()
    if not (name and issuer and subject):
        raise ApprovalError("A service account needs a name, an issuer and a subject.", "validation_error")
    account = ServiceAccount.objects.select_for_update().filter(pk=account_id).first() if account_id else None
    others = User.objects.exclude(pk=account.user_id) if account is not None else User.objects.all()
    if email and others.filter(email__iexact=email, is_active=True).exists():
        # Assignments name people by email: a bot with a person's email would be that person's assignee too.
        raise ApprovalError("That email belongs to another active account.", "validation_error")
    if others.filter(oidc_issuer=issuer, oidc_sub=subject).exists():
        # The token's (iss, sub) picks one account: a person's (SSO, SCIM) or this bot's, never both.
        raise ApprovalError("That issuer and subject are another account's identity.", "validation_error")
    if account is None:
        user = User.objects.create_user(username=_service_username(issuer, subject))
        user.set_unusable_password()
        account = ServiceAccount(user=user, created_by=actor)
    before = _account_data(account) if account.pk else None
    user = account.user
    user.email, user.oidc_issuer, user.oidc_sub = email, issuer, subject
    user.first_name = name[:150]
    user.is_active, user.is_staff, user.is_superuser = active, False, False
    user.save()
    user.groups.set(
        [Group.objects.get_or_create(name=group)[0] for group in sorted({g.strip() for g in groups} - {""})]
    )
    account.name, account.issuer, account.subject = name, issuer, subject
    account.state_machines = sorted({arn.strip() for arn in state_machines} - {""})
    account.may_decide = may_decide
    account.save()
    after = _account_data(account)
    if before is not None and before["active"] and not active:
        # Switched off: its delegations end both ways, as SCIM deprovisioning ends a person's, so
        # switching it on again puts none of them back in force.
        delegations_end_for_account(user=user, ended_by="deactivated", actor=actor, service_account=account.name)
    audit(
        action=AuditAction.SERVICE_ACCOUNT_SAVED if before else AuditAction.SERVICE_ACCOUNT_CREATED,
        request=None,
        actor=actor,
        service_account=account.name,
        **({"before": before} if before else {}),
        after=after,
    )
    return account
