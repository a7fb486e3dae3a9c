"""Slack: Block Kit messages through the Web API, and what the interactivity endpoint checks.

Plain `requests` with a timeout, against SLACK_API_URL (https://slack.com/api; tests point it
at a local server). The bot needs the scopes chat:write, users:read, users:read.email and im:write.
Nothing here decides: approvals/views/slack.py verifies the request, maps the Slack user to its
bound portal account (approvals/slack_access.py) and calls services.approval_decide, which
applies the one authorization rule.
"""

import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from urllib.parse import urlsplit

import requests
from django.conf import settings

from approvals import delivery, one_click, slack_payloads, tokens
from approvals.models import ApprovalRequest, RequestStatus
from approvals.notifications import DeliveryError
from approvals.notifications.messages import (
    MessageContent,
    detail_lines,
    one_line,
    undelivered_decision,
)

logger = logging.getLogger(__name__)

# Slack's replay window for signed requests.
MAX_REQUEST_AGE_SECONDS = 5 * 60
# The interactivity endpoint must answer within 3 seconds: looking a user up gets less.
LOOKUP_TIMEOUT = (2.0, 2.0)
# Errors worth another attempt (https://api.slack.com/web#evaluating_responses).
TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
MAX_TEXT = 2900  # a section's text may have 3,000 characters
ACTION_APPROVE = "approve"
ACTION_REJECT = "reject"
ACTION_OPEN = "open"
# A request with options: one button per option, action_id "option:<id>", value "<request>|<id>".
ACTION_OPTION_PREFIX = slack_payloads.OPTION_ACTION_PREFIX


def enabled() -> bool:
    return bool(settings.SLACK_BOT_TOKEN)


def group_channel(group: str) -> str:
    return settings.SLACK_GROUP_CHANNELS.get(group, "")


# ---------------------------------------------------------------------------
# The Web API
# ---------------------------------------------------------------------------
_session: ContextVar[requests.Session | None] = ContextVar("slack_session", default=None)


@contextlib.contextmanager
def shared_session() -> Iterator[None]:
    """Within the block, Web API calls share one HTTP session (its kept-alive connections)."""
    session = requests.Session()
    token = _session.set(session)
    try:
        yield
    finally:
        _session.reset(token)
        session.close()


def api_call(method: str, *, json: dict | None = None, data: dict | None = None, timeout=None) -> dict:
    """One Web API call; DeliveryError (transient or permanent) unless Slack says ok."""
    url = f"{settings.SLACK_API_URL}/{method}"
    headers = {"Authorization": f"Bearer {settings.SLACK_BOT_TOKEN}"}
    try:
        response = (_session.get() or requests).post(
            url, json=json, data=data, headers=headers, timeout=timeout or settings.SLACK_TIMEOUT
        )
    except requests.RequestException as error:
        raise DeliveryError(f"Slack {method}: {type(error).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise DeliveryError(f"Slack {method}: HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise DeliveryError(f"Slack {method}: HTTP {response.status_code}, not JSON") from None
    if not body.get("ok"):
        error = str(body.get("error") or f"HTTP {response.status_code}")[:100]
        raise DeliveryError(f"Slack {method}: {error}", permanent=error not in TRANSIENT_ERRORS)
    return body


def direct_message_channel(email: str) -> str:
    """The DM channel with the Slack user who has this email."""
    user = api_call("users.lookupByEmail", data={"email": email})["user"]
    return api_call("conversations.open", data={"users": user["id"]})["channel"]["id"]


def post_message(*, channel: str, text: str, blocks: list[dict]) -> str:
    """chat.postMessage; returns "channel:ts", the reference for updating the message later."""
    body = api_call("chat.postMessage", json={"channel": channel, "text": text, "blocks": blocks})
    return f"{body['channel']}:{body['ts']}"


def update_message(*, reference: str, text: str, blocks: list[dict]) -> None:
    channel, _, ts = reference.partition(":")
    api_call("chat.update", json={"channel": channel, "ts": ts, "text": text, "blocks": blocks})


def user_email(slack_user_id: str) -> str:
    """The email of a Slack user (users.info → profile.email), or "" for bots and deleted users."""
    user = api_call("users.info", data={"user": slack_user_id}, timeout=LOOKUP_TIMEOUT)["user"]
    if user.get("deleted") or user.get("is_bot"):
        return ""
    return str(user.get("profile", {}).get("email") or "").lower()


# What the worker's log lines and monitoring (Celery's kwargsrepr) show of slack_respond's
# arguments, on the first attempt and on every retry: not the response URL, not even encrypted.
RESPOND_KWARGSREPR = "{'response_url_ciphertext': '[not shown]', 'payload': '[not shown]'}"


def seal_response_url(response_url: str) -> str:
    """The response URL encrypted for the broker, with the task tokens' keys and their rotation
    (approvals/tokens.py): for 30 minutes whoever holds it may post into the clicker's conversation."""
    return tokens.encrypt_token(response_url)


def open_response_url(ciphertext: str) -> str:
    """The response URL seal_response_url encrypted; tokens.TokenKeyError when no configured key can."""
    return tokens.decrypt_token(ciphertext)


def response_url_allowed(url: str) -> bool:
    """Slack's response URLs live on hooks.slack.com (or on the local stand-in SLACK_API_URL names)."""
    parts, api = urlsplit(url), urlsplit(settings.SLACK_API_URL)
    if parts.scheme == "https" and parts.hostname == "hooks.slack.com":
        return True
    return (parts.scheme, parts.netloc) == (api.scheme, api.netloc) and api.hostname in {"127.0.0.1", "localhost"}


def respond(response_url: str, payload: dict) -> None:
    """Answer an interaction through its response_url (replace the message, or an ephemeral note)."""
    if not response_url_allowed(response_url):
        raise DeliveryError("not a Slack response URL", permanent=True)
    try:
        # No redirect is followed: the host check above is for the one URL posted to.
        response = requests.post(response_url, json=payload, timeout=settings.SLACK_TIMEOUT, allow_redirects=False)
    except requests.RequestException as error:
        raise DeliveryError(f"Slack response_url: {type(error).__name__}") from None
    if response.is_redirect:
        raise DeliveryError(
            f"Slack response_url: HTTP {response.status_code} (a redirect, not followed)", permanent=True
        )
    if response.status_code == 429 or response.status_code >= 500:
        raise DeliveryError(f"Slack response_url: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise DeliveryError(f"Slack response_url: HTTP {response.status_code}", permanent=True)


# ---------------------------------------------------------------------------
# Request signatures (https://api.slack.com/authentication/verifying-requests-from-slack)
# ---------------------------------------------------------------------------
def signature_refusal(*, body: bytes, timestamp: str, signature: str, now: float | None = None) -> str | None:
    """Why this request is not from Slack ("bad_signature" / "stale_timestamp"), or None."""
    secret = settings.SLACK_SIGNING_SECRET
    if not secret or not timestamp or not signature:
        return "bad_signature"
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "bad_signature"
    now = time.time() if now is None else now
    if abs(now - sent_at) > MAX_REQUEST_AGE_SECONDS:
        return "stale_timestamp"
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "bad_signature"
    return None


# ---------------------------------------------------------------------------
# Block Kit
# ---------------------------------------------------------------------------
def escape(text: str) -> str:
    """Slack's mrkdwn needs &, < and > escaped (else `<!channel>` or a link could be injected)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str, limit: int = 75) -> dict:
    return {"type": "plain_text", "text": one_line(text, limit), "emoji": True}


def _mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text[:MAX_TEXT]}


def _summary_blocks(content: MessageContent) -> list[dict]:
    request = content.request
    blocks: list[dict] = [
        {"type": "header", "text": _plain(f"{content.headline}: {request.title}", 150)},
        {"type": "section", "text": _mrkdwn(escape(content.intro))},
    ]
    fields = [_mrkdwn(f"*{escape(label)}*\n{escape(value)}") for label, value in content.facts[:10]]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    lines = detail_lines(request.details, limit=20)
    if lines:
        blocks.append({"type": "section", "text": _mrkdwn("```" + escape("\n".join(lines)) + "```")})
    return blocks


def _confirm(action: str, title: str) -> dict:
    verb = "Approve" if action == ACTION_APPROVE else "Reject"
    return {
        "title": _plain(f"{verb}?", 100),
        "text": _mrkdwn(f"{verb} “{escape(one_line(title, 200))}”?"),
        "confirm": _plain(f"Yes, {verb.lower()}", 30),
        "deny": _plain("Cancel", 30),
    }


def _option_confirm(label: str, title: str) -> dict:
    return {
        "title": _plain(f"{label}?", 100),
        "text": _mrkdwn(f"{escape(one_line(label, 80))}: “{escape(one_line(title, 200))}”?"),
        "confirm": _plain("Yes", 30),
        "deny": _plain("Cancel", 30),
    }


def _option_buttons(request: ApprovalRequest) -> list[dict]:
    """One button per option (approvals/one_click.py); the view re-reads the option by its id."""
    return [
        {
            "type": "button",
            "action_id": f"{ACTION_OPTION_PREFIX}{option.id}",
            "text": _plain(option.label),
            **({"style": "danger"} if option.outcome == "failure" else {}),
            "value": slack_payloads.option_value(public_id=request.public_id, option_id=option.id),
            "confirm": _option_confirm(option.label, request.title),
        }
        for option in one_click.choices(request)
    ]


def request_message(content: MessageContent, *, with_buttons: bool) -> tuple[str, list[dict]]:
    """(fallback text, blocks) for an approver: the summary, Approve / Reject (or the request's
    options), a link to the portal. A required form: no decision buttons, the page decides."""
    request = content.request
    blocks = _summary_blocks(content)
    elements = []
    if with_buttons and one_click.needs_page(request):
        blocks.append(
            {"type": "section", "text": _mrkdwn("This request asks you to fill in a form: decide in the portal.")}
        )
    elif with_buttons and one_click.has_options(request):
        elements += _option_buttons(request)
    elif with_buttons:
        value = str(request.public_id)
        elements += [
            {
                "type": "button",
                "action_id": ACTION_APPROVE,
                "text": _plain("Approve"),
                "style": "primary",
                "value": value,
                "confirm": _confirm(ACTION_APPROVE, request.title),
            },
            {
                "type": "button",
                "action_id": ACTION_REJECT,
                "text": _plain("Reject"),
                "style": "danger",
                "value": value,
                "confirm": _confirm(ACTION_REJECT, request.title),
            },
        ]
    elements.append(
        {"type": "button", "action_id": ACTION_OPEN, "text": _plain("Open in portal"), "url": content.request_url}
    )
    blocks.append({"type": "actions", "block_id": f"approval:{request.public_id}", "elements": elements})
    # The fallback text (notifications, screen readers) is mrkdwn too: escaped like the rest.
    return escape(one_line(content.subject, 300)), blocks


def _chosen_labels(request: ApprovalRequest) -> str:
    """ " — <the labels of the deciding vote's options>", for a request that offered options."""
    if not request.options or request.status not in {RequestStatus.APPROVED, RequestStatus.REJECTED}:
        return ""
    vote = (
        request.votes.filter(user_id=request.decided_by_id, withdrawn_at__isnull=True).order_by("-created_at").first()
    )
    labels = vote.choice_labels if vote is not None else []
    return f" — {one_line(', '.join(labels), 200)}" if labels else ""


REOPENED_WORDS = "Waiting for a decision again"
REOPENED_LINE = "A vote on this request no longer counts (its approver may no longer decide it); it was not sent."


def outcome_message(request: ApprovalRequest, *, request_url: str) -> tuple[str, list[dict]]:
    """The message once decided: the buttons are gone, who decided shows. A request the
    callback's re-check reopened says so (the new "Approval needed again" message has the buttons)."""
    if request.is_pending:
        text = escape(f"{REOPENED_WORDS}: {one_line(request.title, 200)}")
        blocks = [
            {"type": "header", "text": _plain(request.title, 150)},
            {"type": "section", "text": _mrkdwn(f"*{REOPENED_WORDS}*\n{escape(REOPENED_LINE)}")},
            {"type": "context", "elements": [_mrkdwn(f"<{request_url}|Open in portal>")]},
        ]
        return text, blocks
    # The request page's words: "Expired in the portal" (its deadline), "Closed by Step Functions".
    word = delivery.request_status_label(request)
    # Closed by the system or by Step Functions: whoever decided did not close it, and their
    # decision did not reach the workflow (a line of its own says so).
    who = f" by {request.decided_by.email}" if request.decided_by_id and not delivery.closed_by_others(request) else ""
    chosen = _chosen_labels(request)
    text = escape(f"{word}{who}{chosen}: {one_line(request.title, 200)}")
    lines = [f"*{escape(word)}*{escape(who)}{escape(chosen)}"]
    if undelivered := undelivered_decision(request):
        lines.append(escape(undelivered))
    if request.decision_comment:
        lines.append(f"> {escape(one_line(request.decision_comment, 500))}")
    blocks = [
        {"type": "header", "text": _plain(request.title, 150)},
        {"type": "section", "text": _mrkdwn("\n".join(lines))},
        {"type": "context", "elements": [_mrkdwn(f"<{request_url}|Open in portal>")]},
    ]
    return text, blocks


def conversation_message(content: MessageContent) -> tuple[str, list[dict]]:
    """A question for the requester or the requester's answer: the text, quoted, and a link to
    the request page. No buttons: the requester has nothing to decide, and the approvers read
    the answer on the page before deciding there."""
    quoted = "\n".join(f">{escape(line)}" for line in content.comment.splitlines() or [""])
    request = content.request
    url = content.request_url
    open_button = {"type": "button", "action_id": ACTION_OPEN, "text": _plain("Open in portal"), "url": url}
    blocks = [
        {"type": "header", "text": _plain(f"{content.headline}: {request.title}", 150)},
        {"type": "section", "text": _mrkdwn(f"{escape(content.intro)}\n{quoted}")},
        {"type": "actions", "block_id": f"conversation:{request.public_id}", "elements": [open_button]},
    ]
    return escape(one_line(content.subject, 300)), blocks


def reject_modal(request: ApprovalRequest, *, private_metadata: str, label: str = "Reject") -> dict:
    """The modal a Reject click (or a failure option's) opens (views.open): the reason is asked
    here, like on every channel."""
    question = f"{escape(one_line(label, 80))} “{escape(one_line(request.title, 200))}”?"
    return {
        "type": "modal",
        "callback_id": slack_payloads.REJECT_MODAL,
        "private_metadata": private_metadata,
        "title": _plain(label, 24),
        "submit": _plain(label, 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            {"type": "section", "text": _mrkdwn(question)},
            {
                "type": "input",
                "block_id": slack_payloads.REASON_BLOCK,
                "label": _plain("Why do you reject?", 2000),
                "hint": _plain("The requester and the workflow see it.", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": slack_payloads.REASON_ACTION,
                    "multiline": True,
                    "min_length": 1,
                    "max_length": slack_payloads.MAX_REASON,
                },
            },
        ],
    }


def notice_modal(text: str) -> dict:
    """A modal that only tells something (the submission was refused): no submit button."""
    return {
        "type": "modal",
        "title": _plain("Not rejected", 24),
        "close": _plain("Close", 24),
        "blocks": [{"type": "section", "text": _mrkdwn(text)}],
    }


def open_view(*, trigger_id: str, view: dict) -> None:
    """views.open: the trigger is valid for 3 seconds, so this gets the short timeout."""
    api_call("views.open", json={"trigger_id": trigger_id, "view": view}, timeout=LOOKUP_TIMEOUT)


def note(text: str) -> dict:
    """An ephemeral reply to the person who clicked, leaving the message as it is."""
    return {"response_type": "ephemeral", "replace_original": False, "text": text[:MAX_TEXT]}
