"""Who a Slack click speaks for, and whether the IdP still vouches for them.

Slack tells us a workspace id and a user id, nothing the company's IdP checked. A click counts
only when it comes from the configured workspace, from a Slack user bound to a portal account
(once, by that account's owner in a signed-in SSO session), whose account is active and whose
last SSO sign-in or session refresh is recent (SLACK_SSO_MAX_AGE_SECONDS). Whether that person
may decide the request is then permissions' one rule, as on every other channel.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from approvals.models import SlackIdentity, User
from approvals.permissions import Refusal

OTHER_TEAM = "slack_other_team"
UNBOUND = "slack_unbound"
SSO_STALE = "slack_sso_stale"
INACTIVE = "inactive_user"


@dataclass(frozen=True)
class SlackClicker:
    team_id: str
    slack_user_id: str
    user: User | None = None
    refusal: Refusal | None = None


def sso_is_fresh(user: User, now=None, *, max_age_seconds: int | None = None) -> bool:
    """The IdP vouched for `user` (sign-in or session refresh) at most `max_age_seconds` ago
    (default SLACK_SSO_MAX_AGE_SECONDS); the API asks with its own (approvals/api/authentication.py)."""
    if user.sso_verified_at is None:
        return False
    now = now or timezone.now()
    max_age = settings.SLACK_SSO_MAX_AGE_SECONDS if max_age_seconds is None else max_age_seconds
    return now - user.sso_verified_at <= timedelta(seconds=max_age)


def slack_clicker(*, team_id: str, slack_user_id: str) -> SlackClicker:
    """The portal account behind a Slack user, or why a click from them is refused."""
    clicker = {"team_id": team_id, "slack_user_id": slack_user_id}
    if not settings.SLACK_TEAM_ID or team_id != settings.SLACK_TEAM_ID:
        return SlackClicker(
            **clicker, refusal=Refusal(OTHER_TEAM, "This Slack workspace is not the one the approval portal uses.")
        )
    identity = (
        SlackIdentity.objects.select_related("user").filter(team_id=team_id, slack_user_id=slack_user_id).first()
        if slack_user_id
        else None
    )
    if identity is None:
        return SlackClicker(
            **clicker,
            refusal=Refusal(
                UNBOUND, "Your Slack account is not linked to your portal account yet. Link it once, then click again."
            ),
        )
    user = identity.user
    if not user.is_active:
        return SlackClicker(**clicker, user=user, refusal=Refusal(INACTIVE, "Your account is disabled."))
    if not sso_is_fresh(user):
        return SlackClicker(
            **clicker,
            user=user,
            refusal=Refusal(
                SSO_STALE, "Your portal sign-in is too old to decide from Slack. Sign in, then click again."
            ),
        )
    return SlackClicker(**clicker, user=user)
