"""Signed one-click links for notifications: (request, approver, action, expiry[, option]).

A link only leads to a confirm page; the decision is a POST made by the signed-in approver.
The signature (django.core.signing, keyed by SECRET_KEY) makes links unforgeable; the link
carries no secret itself and never the task token.

A request with options gets one link per option (action "option"): the option's id is inside
the signed payload, so a link cannot be turned into another option's (approvals/one_click.py).
"""

import time
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.urls import reverse

SALT = "approvals.decision-link.v1"
ACTIONS = {"approve", "reject", "option"}
OPTION = "option"
MAX_OPTION_ID = 64  # the contract's limit for an option's id


class LinkError(Exception):
    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class DecisionLink:
    public_id: str
    approver_email: str
    action: str
    expires_at: int
    option: str = ""  # action "option": the chosen option's id


def make_link_token(
    *, public_id, approver_email: str, action: str, option: str = "", ttl_seconds: int | None = None
) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if (action == OPTION) != bool(option):
        raise ValueError("an option link names its option; approve and reject links do not")
    ttl = ttl_seconds if ttl_seconds is not None else settings.DECISION_LINK_TTL_SECONDS
    payload = {"r": str(public_id), "u": approver_email.lower(), "a": action, "e": int(time.time()) + ttl}
    if option:
        payload["o"] = option
    return signing.dumps(payload, salt=SALT, compress=True)


def decision_link_url(
    *, public_id, approver_email: str, action: str, option: str = "", ttl_seconds: int | None = None
) -> str:
    token = make_link_token(
        public_id=public_id, approver_email=approver_email, action=action, option=option, ttl_seconds=ttl_seconds
    )
    return settings.PORTAL_BASE_URL + reverse("decision-link", args=[token])


def read_link_token(token: str) -> DecisionLink:
    """The link's content, or LinkError("…", "link_tampered" | "link_expired")."""
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        raise LinkError("This link is not valid. Open the request from your inbox instead.", "link_tampered") from None
    if not isinstance(payload, dict) or payload.get("a") not in ACTIONS or not isinstance(payload.get("e"), int):
        raise LinkError("This link is not valid. Open the request from your inbox instead.", "link_tampered")
    option = payload.get("o", "")
    if (payload["a"] == OPTION) != bool(option) or not isinstance(option, str) or len(option) > MAX_OPTION_ID:
        raise LinkError("This link is not valid. Open the request from your inbox instead.", "link_tampered")
    if payload["e"] < time.time():
        raise LinkError("This link has expired. Open the request from your inbox instead.", "link_expired")
    return DecisionLink(
        public_id=str(payload["r"]),
        approver_email=str(payload["u"]),
        action=payload["a"],
        expires_at=payload["e"],
        option=option,
    )


# ---------------------------------------------------------------------------
# Slack account binding: (workspace id, Slack user id, expiry)
# ---------------------------------------------------------------------------
SLACK_BIND_SALT = "approvals.slack-bind.v1"


@dataclass(frozen=True)
class SlackBindLink:
    team_id: str
    slack_user_id: str
    expires_at: int


def slack_bind_url(*, team_id: str, slack_user_id: str, ttl_seconds: int | None = None) -> str:
    """The link a Slack user who is not bound yet gets: it names only who they are in Slack."""
    ttl = ttl_seconds if ttl_seconds is not None else settings.SLACK_BIND_LINK_TTL_SECONDS
    token = signing.dumps({"t": team_id, "s": slack_user_id, "e": int(time.time()) + ttl}, salt=SLACK_BIND_SALT)
    return settings.PORTAL_BASE_URL + reverse("slack-bind", args=[token])


def read_slack_bind_token(token: str) -> SlackBindLink:
    """The link's content, or LinkError("…", "link_tampered" | "link_expired")."""
    invalid = LinkError("This link is not valid. Click the button in Slack again for a new one.", "link_tampered")
    try:
        payload = signing.loads(token, salt=SLACK_BIND_SALT)
    except signing.BadSignature:
        raise invalid from None
    if not isinstance(payload, dict) or not isinstance(payload.get("e"), int):
        raise invalid
    if not all(isinstance(payload.get(key), str) and payload[key] for key in ("t", "s")):
        raise invalid
    if payload["e"] < time.time():
        raise LinkError("This link has expired. Click the button in Slack again for a new one.", "link_expired")
    return SlackBindLink(team_id=payload["t"], slack_user_id=payload["s"], expires_at=payload["e"])
