"""Slack identities bound to portal accounts, and when the IdP last vouched for an account."""

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals.models import AuditAction, SlackIdentity, User
from approvals.services.common import ApprovalError, audit

logger = logging.getLogger(__name__)


def user_sso_verified(*, user: User) -> None:
    """A successful SSO sign-in or session refresh: the IdP vouched for `user` just now.

    A timestamp like Django's last_login, written on every refresh (every few minutes per active
    person), so it is logged, not audited."""
    now = timezone.now()
    User.objects.filter(pk=user.pk).update(sso_verified_at=now)
    user.sso_verified_at = now
    logger.info("SSO verified user %s", user.pk)


def slack_identity_bind(*, user: User, team_id: str, slack_user_id: str, slack_email: str) -> SlackIdentity:
    """Bind a Slack user to `user`'s account (the signed-in owner confirmed it).

    Refused (ApprovalError, audited) for another workspace than SLACK_TEAM_ID, a Slack user bound
    to another account, or, with SLACK_BIND_REQUIRE_EMAIL_MATCH, a Slack user whose email (as
    Slack knows it: `slack_email`) is not the account's. A new Slack user of the same account in
    the workspace replaces the old one."""
    try:
        return _bind(user=user, team_id=team_id, slack_user_id=slack_user_id, slack_email=slack_email)
    except ApprovalError as error:  # recorded after _bind's transaction rolled back
        slack_binding_refusal_record(
            user=user, code=error.code, team_id=team_id, slack_user_id=slack_user_id, slack_email=slack_email
        )
        raise


def slack_binding_refusal(
    *, user: User, team_id: str, slack_user_id: str, slack_email: str, existing: SlackIdentity | None = None
) -> ApprovalError | None:
    """Why this Slack user may not be bound to `user` (the bind page asks before showing its button)."""
    if existing is None:
        existing = SlackIdentity.objects.filter(team_id=team_id, slack_user_id=slack_user_id).first()
    if not settings.SLACK_TEAM_ID or team_id != settings.SLACK_TEAM_ID:
        return ApprovalError(
            "This link is for another Slack workspace than the one the portal uses.", "slack_other_team"
        )
    if existing is not None and existing.user_id != user.pk:
        return ApprovalError("This Slack account is already linked to another portal account.", "slack_identity_taken")
    if settings.SLACK_BIND_REQUIRE_EMAIL_MATCH and (slack_email or "").lower() != (user.email or "").lower():
        return ApprovalError(
            "This Slack account belongs to someone else: its email in Slack is not the one you signed in with. "
            "Only the person who clicked in Slack can link their own account.",
            "slack_email_mismatch",
        )
    return None


@transaction.atomic
def _bind(*, user: User, team_id: str, slack_user_id: str, slack_email: str) -> SlackIdentity:
    existing = SlackIdentity.objects.select_for_update().filter(team_id=team_id, slack_user_id=slack_user_id).first()
    refusal = slack_binding_refusal(
        user=user, team_id=team_id, slack_user_id=slack_user_id, slack_email=slack_email, existing=existing
    )
    if refusal is not None:
        raise refusal
    if existing is not None:
        return existing  # bound already: confirming twice is harmless
    replaced = list(
        SlackIdentity.objects.select_for_update()
        .filter(team_id=team_id, user=user)
        .values_list("slack_user_id", flat=True)
    )
    SlackIdentity.objects.filter(team_id=team_id, user=user).delete()
    identity = SlackIdentity.objects.create(team_id=team_id, slack_user_id=slack_user_id, user=user)
    audit(
        action=AuditAction.SLACK_IDENTITY_BOUND,
        request=None,
        actor=user,
        team_id=team_id,
        slack_user_id=slack_user_id,
        replaced=replaced,
    )
    return identity


@transaction.atomic
def slack_binding_refusal_record(*, user: User, code: str, **data) -> None:
    logger.info("refused Slack binding for user %s: %s", user.pk, code)
    audit(action=AuditAction.SLACK_BINDING_REFUSED, request=None, actor=user, code=code, **data)


@transaction.atomic
def slack_identity_unbind(*, identity_id: int, actor: User) -> bool:
    """Remove a binding (an admin, or the account's owner): that Slack user's clicks count no more."""
    identity = SlackIdentity.objects.select_for_update().select_related("user").filter(pk=identity_id).first()
    if identity is None:
        return False
    audit(
        action=AuditAction.SLACK_IDENTITY_UNBOUND,
        request=None,
        actor=actor,
        user=identity.user.email or identity.user.get_username(),
        team_id=identity.team_id,
        slack_user_id=identity.slack_user_id,
    )
    identity.delete()
    return True
