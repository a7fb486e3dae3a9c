"""What Slack posts to the interactivity endpoint, read defensively.

The body is signed by Slack, but its shape is still input: every field is checked for its type
and size, and anything unexpected is a clear refusal (SlackPayloadError), never an exception
from deep inside a view.
"""

import json
import uuid
from dataclasses import dataclass

BLOCK_ACTIONS = "block_actions"
VIEW_SUBMISSION = "view_submission"
REJECT_MODAL = "reject_reason"
REASON_BLOCK = "reason"
REASON_ACTION = "reason"
MAX_ID = 64  # Slack ids (T…, U…) are short; anything longer is not one
MAX_URL = 2000
MAX_REASON = 2000
MAX_METADATA = 3000  # Slack's limit for a view's private_metadata
OPTION_ACTION_PREFIX = "option:"  # a request's option button: action_id "option:<id>"
MAX_OPTION_ID = 64  # the contract's limit for an option's id


class SlackPayloadError(Exception):
    def __init__(self, message: str, code: str = "bad_payload"):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Interaction:
    kind: str  # block_actions, view_submission, or whatever else Slack sent (ignored)
    team_id: str = ""
    slack_user_id: str = ""
    action: str = ""  # block_actions: the button's action_id
    public_id: uuid.UUID | None = None  # the request: a button's value, or the modal's metadata
    response_url: str = ""
    trigger_id: str = ""
    callback_id: str = ""  # view_submission: which modal
    reason: str = ""  # view_submission: the reason typed in the reject modal
    option: str = ""  # an option button, or the reason modal it opened: the option's id


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _text(value, limit: int) -> str:
    """A string field, or "" when it is missing, not a string or longer than `limit`."""
    return value if isinstance(value, str) and len(value) <= limit else ""


def _uuid(value) -> uuid.UUID | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def option_value(*, public_id, option_id: str) -> str:
    """An option button's value: "<request id>|<option id>"."""
    return f"{public_id}|{option_id}"


def _option_id(value) -> str:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_OPTION_ID else ""


def modal_metadata(*, public_id, response_url: str, option: str = "") -> str:
    """The reject modal's private_metadata: which request (and option), and where to answer the
    clicked message."""
    data = {"r": str(public_id), "u": response_url, **({"o": option} if option else {})}
    metadata = json.dumps(data)
    return metadata if len(metadata) <= MAX_METADATA else json.dumps({**data, "u": ""})


def parse_interaction(raw: str) -> Interaction:
    """The form field `payload` of an interaction request, or SlackPayloadError."""
    if not isinstance(raw, str) or not raw:
        raise SlackPayloadError("No payload.")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise SlackPayloadError("The payload is not JSON.") from None
    if not isinstance(body, dict):
        raise SlackPayloadError("The payload is not a JSON object.")
    kind = _text(body.get("type"), 64)
    user = _dict(body.get("user"))
    common = {
        "kind": kind,
        # Enterprise Grid may leave `team` empty; the user's own team_id says which workspace then.
        "team_id": _text(_dict(body.get("team")).get("id"), MAX_ID) or _text(user.get("team_id"), MAX_ID),
        "slack_user_id": _text(user.get("id"), MAX_ID),
        "trigger_id": _text(body.get("trigger_id"), 255),
    }
    if kind == BLOCK_ACTIONS:
        actions = body.get("actions")
        action = _dict(actions[0]) if isinstance(actions, list) and actions else {}
        action_id = _text(action.get("action_id"), 255)
        value, option = action.get("value"), ""
        if action_id.startswith(OPTION_ACTION_PREFIX):
            # "<request>|<option>", and the action_id names the same option; else no option at all.
            request_part, _, option_part = _text(value, 200).partition("|")
            value = request_part
            option = _option_id(option_part) if action_id == OPTION_ACTION_PREFIX + option_part else ""
        return Interaction(
            **common,
            action=action_id,
            public_id=_uuid(value),
            response_url=_text(body.get("response_url"), MAX_URL),
            option=option,
        )
    if kind == VIEW_SUBMISSION:
        view = _dict(body.get("view"))
        try:
            metadata = _dict(json.loads(_text(view.get("private_metadata"), MAX_METADATA) or "{}"))
        except (ValueError, RecursionError):
            metadata = {}
        values = _dict(_dict(view.get("state")).get("values"))
        reason = _dict(_dict(values.get(REASON_BLOCK)).get(REASON_ACTION)).get("value")
        if reason is not None and not isinstance(reason, str):
            raise SlackPayloadError("The reason is not text.")
        return Interaction(
            **common,
            callback_id=_text(view.get("callback_id"), 255),
            public_id=_uuid(metadata.get("r")),
            response_url=_text(metadata.get("u"), MAX_URL),
            reason=(reason or "")[: MAX_REASON + 1],  # one more: the service's length check still sees it
            option=_option_id(metadata.get("o")),
        )
    return Interaction(**common)
