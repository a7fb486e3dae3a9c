"""The approval message contract: the JSON body a Step Functions state sends to SQS.

A state machine pauses on ``arn:aws:states:::sqs:sendMessage.waitForTaskToken``
and sends a message whose body carries the task token. The worker hands that
body to :func:`parse_message`, which either returns a validated
:class:`ApprovalMessage` or raises :class:`ContractError`.

Keys are the *output* keys Step Functions produces: ``"taskToken.$":
"$$.Task.Token"`` in the state definition arrives here as ``"taskToken"``.
Two shapes are accepted (they may also be mixed)::

    # the seed blog's shape
    {"taskToken": "...", "approvalRequest": {...}, "approvalDeadline": "2026-11-25T10:00:00.123Z"}

    # the rich shape
    {"taskToken": "...", "title": "Approve order 1234",
     "approvers": {"users": ["alice@example.com"], "groups": ["finance-approvers"]},
     "requester": "bob@example.com", "details": {...}, "approvalDeadline": "...",
     "timeoutSeconds": 86400, "heartbeatSeconds": 3600,
     "execution": "arn:aws:states:...", "stateMachine": "arn:aws:states:...",
     "state": "WaitForApproval",
     "policy": {"required": 2, "distinctGroups": false, "rejectOn": "any"},
     "requesterGroups": ["sales"]}

``policy`` (all keys optional) asks for N approvals out of the assignees
(``required``), each from a different assigned group or named approver
(``distinctGroups``), and says what ends it in a denial (``rejectOn``: ``"any"``,
the default, or a number of rejections). A key left out takes the admins'
default for the state machine and state. ``requesterGroups`` names the
requester's groups for the "not a member of the requester's groups" rule.

``options`` (2 to 10 choices, each ``{"id", "label", "outcome": "success" | "failure",
"error"?, "default"?}``, with ``"multiple": true`` beside it to let an approver pick several
success options) replaces the approve/reject pair; ``form`` is a JSON Schema in the subset
:mod:`approvals.form_schema` defines, for the approver to fill in (docs/approver-input.md).

Only ``taskToken`` is required; unknown keys are ignored because Step Functions
payloads grow over time. JSON ``null`` for an optional key means "absent".

Whatever the key, the body must be storable JSON: every number finite (``1e400``
reads as infinity, which PostgreSQL's jsonb refuses), arrays and objects nested at
most :data:`MAX_NESTING_DEPTH` levels inside a field's value. One-line fields (the
title, e-mail addresses, group names, ARNs, the state name) hold no control or
Unicode format characters (bidi overrides such as U+202E, zero-width characters
such as U+200B): shown to an approver they can disguise what is being approved.

``execution`` must be of the state machine ``stateMachine`` names (the admins' settings are
matched by the state machine); a message naming only its execution is matched by the
execution's state machine (see :func:`_execution_state_machine`).

The task token is a secret (anyone holding it can approve or reject the
execution), so no error produced here ever contains it or echoes any raw field
value: messages name the field and what was expected, nothing more (the one
exception: ``execution_mismatch`` names both state machines, parts of an ARN that
hold no whitespace, ``:`` or ``/``, checked after the token-repeat check). Errors are
raised *outside* ``except`` blocks so they carry no ``__context__`` (for
example a ``JSONDecodeError`` keeps the whole body, token included, in ``.doc``).

This module only parses and validates; it does not touch the database or AWS.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from approvals.form_schema import FormSchemaError, form_schema_check, json_type, storable_text
from approvals.stepfunctions import StateMachineRef, state_machine_of_arn, state_machine_of_execution

__all__ = [
    "DEFAULT_FAILURE_ERROR",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_OPTIONS",
    "DEFAULT_TITLE",
    "MAX_APPROVER_GROUPS",
    "MAX_APPROVER_USERS",
    "MAX_EXECUTION_ARN_LENGTH",
    "MAX_GROUP_NAME_LENGTH",
    "MAX_NESTING_DEPTH",
    "MAX_OPTIONS",
    "MAX_OPTION_LABEL_LENGTH",
    "MAX_POLICY_COUNT",
    "MAX_SECONDS",
    "MAX_STATE_MACHINE_ARN_LENGTH",
    "MAX_STATE_NAME_LENGTH",
    "MAX_TITLE_LENGTH",
    "MAX_TOKEN_LENGTH",
    "RESERVED_ERRORS",
    "ApprovalMessage",
    "ApprovalOption",
    "ContractError",
    "find_token",
    "parse_message",
    "stored_options",
]

# SQS's own maximum message size is 256 KiB, so a larger body cannot be a
# message Step Functions sent through SQS.
DEFAULT_MAX_BYTES = 256 * 1024
# Step Functions documents task tokens as up to 2,048 characters
# (SendTaskSuccess's taskToken parameter).
MAX_TOKEN_LENGTH = 2048
MAX_TITLE_LENGTH = 300
DEFAULT_TITLE = "Approval requested"
MAX_APPROVER_USERS = 100
MAX_APPROVER_GROUPS = 100
# Django's auth Group.name is max_length=150; groups may be mapped onto those.
MAX_GROUP_NAME_LENGTH = 150
# Step Functions' own upper bound for TimeoutSeconds / HeartbeatSeconds: 1 year.
MAX_SECONDS = 31_536_000
MAX_EXECUTION_ARN_LENGTH = 2048
MAX_STATE_MACHINE_ARN_LENGTH = 2048
# Step Functions state names are at most 80 characters.
MAX_STATE_NAME_LENGTH = 80
# N-of-M policies: at most as many as a message may name approvers.
MAX_POLICY_COUNT = MAX_APPROVER_USERS
# Arrays and objects inside one field's value (``details`` is the one that nests): deep
# enough for any real order or ticket, shallow enough that no walk over it (parsing,
# storing, rendering a table) comes near Python's recursion limit.
MAX_NESTING_DEPTH = 32
# The top-level fields the contract reads; only these are named in an error message
# (any other key is text the sender chose).
_KNOWN_FIELDS = frozenset(
    {
        "taskToken",
        "title",
        "approvers",
        "requester",
        "details",
        "approvalRequest",
        "approvalDeadline",
        "timeoutSeconds",
        "heartbeatSeconds",
        "execution",
        "stateMachine",
        "state",
        "policy",
        "requesterGroups",
        "options",
        "multiple",
        "form",
    }
)
# Options: the approver's choices when the message names them.
MIN_OPTIONS = 2
MAX_OPTIONS = 10
MAX_OPTION_LABEL_LENGTH = 80
_OPTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_OPTION_KEYS = ("id", "label", "outcome", "error", "default")
# What a failure option sends to SendTaskFailure as `error` (Step Functions allows 256
# characters). Our own charset, so an error name is safe in a Catch, a log line and a page.
DEFAULT_FAILURE_ERROR = "ApprovalDenied"
_ERROR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,255}")
# The portal's own errors: a workflow catching them must be able to trust what they mean.
RESERVED_ERRORS = frozenset({"ApprovalCancelled", "ApprovalExpired"})
# Unicode categories a one-line field may not hold: control (Cc), format (Cf: bidi
# overrides and isolates, zero-width space/joiners, soft hyphen, BOM, tags), and the
# line and paragraph separators (Zl, Zp).
_NOT_ONE_LINE = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Long enough for any ISO 8601 timestamp; a bound so garbage is refused cheaply.
_MAX_DEADLINE_LENGTH = 64

_ELLIPSIS = "…"


@dataclass(frozen=True)
class ApprovalOption:
    """One choice the approver is offered; ``error`` is what a failure option sends."""

    id: str
    label: str
    outcome: str  # "success" | "failure"
    error: str = ""
    default: bool = False

    def as_json(self) -> dict[str, Any]:
        """As the request stores it (and the contract spells it)."""
        data: dict[str, Any] = {"id": self.id, "label": self.label, "outcome": self.outcome}
        if self.outcome == "failure":
            data["error"] = self.error
        if self.default:
            data["default"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApprovalOption:
        """Back from what :meth:`as_json` stored."""
        return cls(
            id=data["id"],
            label=data["label"],
            outcome=data["outcome"],
            error=data.get("error", ""),
            default=data.get("default", False),
        )


#: The choices of a message without ``options``: today's approve and reject.
DEFAULT_OPTIONS = (
    ApprovalOption(id="approve", label="Approve", outcome="success"),
    ApprovalOption(id="reject", label="Reject", outcome="failure", error=DEFAULT_FAILURE_ERROR),
)


def stored_options(value: list[dict[str, Any]] | None) -> tuple[ApprovalOption, ...]:
    """A request's choices from its stored ``options``: :data:`DEFAULT_OPTIONS` when it has none."""
    return tuple(ApprovalOption.from_json(item) for item in value) if value else DEFAULT_OPTIONS


class ContractError(Exception):
    """A message body does not follow the approval message contract.

    ``code`` is a stable machine code (``oversized``, ``not_utf8``,
    ``not_json``, ``too_deep``, ``bad_number``, ``not_object``,
    ``missing_token``, ``wrong_type``, ``bad_approvers``, ``bad_value``,
    ``bad_policy``, ``bad_options``, ``bad_form``, ``token_repeated``, ``bad_arn``,
    ``execution_mismatch``); ``message`` is a human-readable
    explanation that names the offending ``field`` (a dotted path such as
    ``approvers.users``, or ``None`` for problems with the body as a whole).
    The message never contains the task token or any raw value from the body (but for the names
    of the two state machines ``execution_mismatch`` compares).
    """

    code: str
    message: str
    field: str | None

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        # All three go into args so the exception pickles (Celery result
        # backends, multiprocessing) and unpickles through __init__ again.
        super().__init__(code, message, field)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, field={self.field!r})"


@dataclass(frozen=True)
class ApprovalMessage:
    """A validated approval request, as carried by one SQS message.

    ``task_token`` is hidden from ``repr()`` because it is a secret; note that
    ``dataclasses.asdict()`` still includes it, so never log that.
    """

    task_token: str = field(repr=False)
    title: str = DEFAULT_TITLE
    #: Arbitrary JSON value (``details`` or, failing that, ``approvalRequest``).
    details: Any = None
    #: Lower-cased, stripped, de-duplicated e-mail addresses, in message order.
    approver_users: tuple[str, ...] = ()
    #: Stripped, de-duplicated group names (case preserved), in message order.
    approver_groups: tuple[str, ...] = ()
    #: Lower-cased e-mail address, or "" when the message names no requester.
    requester: str = ""
    #: Aware datetime in UTC, from ``approvalDeadline``.
    deadline: datetime | None = None
    timeout_seconds: int | None = None
    heartbeat_seconds: int | None = None
    execution_arn: str = ""
    state_machine_arn: str = ""
    state_name: str = ""
    #: The message's ``policy``: each None when the message leaves it to the admins' default.
    required_approvals: int | None = None
    distinct_groups: bool | None = None
    rejections_to_deny: int | None = None
    #: Stripped, de-duplicated group names from ``requesterGroups``.
    requester_groups: tuple[str, ...] = ()
    #: The message's ``options``; () means the default approve/reject (:data:`DEFAULT_OPTIONS`).
    options: tuple[ApprovalOption, ...] = ()
    #: ``multiple``: the approver may pick several success options at once.
    multiple: bool = False
    #: The ``form`` JSON Schema as it arrived (validated), or None.
    form: dict[str, Any] | None = None


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------


def parse_message(body: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ApprovalMessage:
    """Parse and validate one message body; raise :class:`ContractError` if it is unusable."""
    _check_size(body, max_bytes)
    text = _decode(body)
    data = _load_json(text)
    if not isinstance(data, dict):
        raise ContractError(
            "not_object",
            f"message body must be a JSON object, got {json_type(data)}",
        )
    _check_values(data)

    token = _parse_token(data)
    # State context first: the default title mentions the state name.
    execution_arn = _optional_text(data, "execution", MAX_EXECUTION_ARN_LENGTH)
    state_machine_arn = _optional_text(data, "stateMachine", MAX_STATE_MACHINE_ARN_LENGTH)
    state_name = _optional_text(data, "state", MAX_STATE_NAME_LENGTH)
    title = _parse_title(data, state_name)
    details = _parse_details(data)
    users, groups = _parse_approvers(data)
    requester = _parse_requester(data)
    deadline = _parse_deadline(data)
    timeout_seconds = _optional_seconds(data, "timeoutSeconds")
    heartbeat_seconds = _optional_seconds(data, "heartbeatSeconds")
    required, distinct_groups, rejections = _parse_policy(data, users, groups)
    requester_groups = _group_names(data, "requesterGroups", "wrong_type") if "requesterGroups" in data else ()
    options, multiple = _parse_options(data)
    form = _parse_form(data)
    # Last: a field that holds the token where it does not fit is refused for that first.
    _check_token_not_repeated(data, token)
    # After it: the refusal names the state machines, which then cannot be the token.
    state_machine_arn = _execution_state_machine(execution_arn, state_machine_arn)

    return ApprovalMessage(
        task_token=token,
        title=title,
        details=details,
        approver_users=users,
        approver_groups=groups,
        requester=requester,
        deadline=deadline,
        timeout_seconds=timeout_seconds,
        heartbeat_seconds=heartbeat_seconds,
        execution_arn=execution_arn,
        state_machine_arn=state_machine_arn,
        state_name=state_name,
        required_approvals=required,
        distinct_groups=distinct_groups,
        rejections_to_deny=rejections,
        requester_groups=requester_groups,
        options=options,
        multiple=multiple,
        form=form,
    )


def find_token(body: str | bytes) -> str | None:
    """Best effort: the ``taskToken`` of a body that is a JSON object, else ``None``.

    Used to redact (or fail back) a message that :func:`parse_message` refused,
    so it is deliberately lenient (undecodable bytes are replaced, no size
    limit) and never raises. Returns ``None`` for a blank token as well.
    """
    try:
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        data = json.loads(text)
    except Exception:  # noqa: BLE001 - best effort by contract: any failure means "no token"
        return None
    if not isinstance(data, dict):
        return None
    token = data.get("taskToken")
    if isinstance(token, str) and token.strip():
        return token
    return None


# --------------------------------------------------------------------------
# Body-level checks
# --------------------------------------------------------------------------


def _check_size(body: str | bytes, max_bytes: int) -> None:
    """Refuse an oversized body before any decoding or parsing work."""
    if isinstance(body, bytes):
        size: int | None = len(body)
    elif len(body) > max_bytes:
        # Every character is at least one UTF-8 byte: too big without encoding it.
        size = None
    else:
        # surrogatepass: a str may hold lone surrogates; count them, don't fail.
        size = len(body.encode("utf-8", errors="surrogatepass"))
    if size is None or size > max_bytes:
        actual = f"{size:,} bytes" if size is not None else f"more than {max_bytes:,} bytes"
        raise ContractError(
            "oversized",
            f"message body is too large ({actual}); the limit is {max_bytes:,} bytes",
        )


def _decode(body: str | bytes) -> str:
    if not isinstance(body, bytes):
        return body
    error: ContractError | None = None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        error = ContractError("not_utf8", f"message body is not valid UTF-8 (invalid byte at offset {exc.start})")
    raise error


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and PostgreSQL's jsonb cannot store them.
    raise ValueError(f"{name} is not valid JSON")


def _load_json(text: str) -> Any:
    error: ContractError | None = None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        # exc.msg is a fixed phrase from the json module (never body content);
        # exc.doc holds the whole body, so exc itself must not travel further.
        error = ContractError(
            "not_json",
            f"message body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
        )
    except RecursionError:
        # Far deeper than the limit (the parser ran out of stack first).
        error = _too_deep(_deep_field(text))
    except ValueError:
        # NaN/Infinity, or an integer literal beyond Python's digit limit.
        error = ContractError("not_json", "message body is not valid JSON (NaN, Infinity or an oversized number)")
    raise error


def _field_label(key: str | None) -> tuple[str, str | None]:
    """How an error names a top-level key: by name if the contract knows it, else generically."""
    if key is None:
        return "the message body", None
    if key in _KNOWN_FIELDS:
        return f"field '{key}'", key
    return "a field", None


def _too_deep(key: str | None) -> ContractError:
    label, name = _field_label(key)
    return ContractError(
        "too_deep",
        f"{label} nests arrays and objects more than {MAX_NESTING_DEPTH} levels deep (the limit)",
        name,
    )


def _check_values(data: dict[str, Any]) -> None:
    """Every field's value: nested at most MAX_NESTING_DEPTH levels, every number finite.

    Level by level, not recursive, so a value nested just short of the parser's limit cannot
    exhaust the stack here (and a 256 KiB value costs one pass).
    """
    for key, value in data.items():
        level = [value]
        depth = 0
        while level:
            below: list[Any] = []
            for item in level:
                kind = type(item)
                if kind is float:
                    if not math.isfinite(item):
                        label, name = _field_label(key)
                        raise ContractError(
                            "bad_number",
                            f"{label} holds a number too large to store (beyond ±1.8e308, it reads as infinity)",
                            name,
                        )
                elif kind is dict:
                    if depth == MAX_NESTING_DEPTH:
                        raise _too_deep(key)
                    below.extend(item.values())
                elif kind is list:
                    if depth == MAX_NESTING_DEPTH:
                        raise _too_deep(key)
                    below.extend(item)
            level = below
            depth += 1


# A JSON string or a structural character: enough to follow nesting without parsing.
# Possessive: a string is consumed once, never re-tried from inside (linear time).
_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}:]')


def _deep_field(text: str) -> str | None:
    """The top-level key whose value nests too deep, for a body too deep to parse; None if unknown."""
    depth = 0
    key: str | None = None
    candidate: str | None = None
    for match in _JSON_STRUCTURE.finditer(text):
        piece = match.group()
        if piece in ("[", "{"):
            depth += 1
            if depth - 1 > MAX_NESTING_DEPTH:
                return key
        elif piece in ("]", "}"):
            depth -= 1
        elif piece == ":":
            if depth == 1 and candidate is not None:
                key = candidate
        elif depth == 1:
            candidate = piece[1:-1] if "\\" not in piece else None
    return None


# --------------------------------------------------------------------------
# Field helpers
# --------------------------------------------------------------------------


def _check_one_line(value: str, name: str, code: str = "bad_value") -> None:
    """Refuse control and invisible formatting characters in a one-line field."""
    if value.isprintable():  # the common case, at C speed (False also for harmless ones such as NBSP)
        return
    for index, char in enumerate(value):
        if unicodedata.category(char) in _NOT_ONE_LINE:
            what = unicodedata.name(char, "a control character")
            raise ContractError(
                code,
                f"field '{name}' contains U+{ord(char):04X} ({what}) at character {index}: a one-line field "
                f"may not hold control or invisible formatting characters (bidi overrides, zero-width characters)",
                name,
            )


def _unstorable(name: str) -> ContractError:
    return ContractError(
        "bad_value",
        f"field '{name}' contains a NUL character or invalid Unicode, which cannot be stored",
        name,
    )


def _optional_text(data: dict[str, Any], name: str, max_length: int) -> str:
    """An optional string field, stripped; "" when absent, null or blank."""
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ContractError("wrong_type", f"field '{name}' must be a string, got {json_type(value)}", name)
    value = value.strip()
    if len(value) > max_length:
        raise ContractError(
            "bad_value",
            f"field '{name}' must be at most {max_length:,} characters, got {len(value):,}",
            name,
        )
    if not storable_text(value):
        raise _unstorable(name)
    _check_one_line(value, name)
    return value


def _is_email(value: str) -> bool:
    # Catch-and-return keeps ValidationError (whose params hold the value) out
    # of any ContractError's __context__.
    if len(value) > 254:  # RFC 5321's limit and EmailField's max_length: a longer one cannot be stored
        return False
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


# --------------------------------------------------------------------------
# Individual fields
# --------------------------------------------------------------------------


def _parse_token(data: dict[str, Any]) -> str:
    name = "taskToken"
    token = data.get(name)
    if token is None:
        # Absent and null are the same mistake: the state did not pass $$.Task.Token.
        raise ContractError(
            "missing_token",
            f'field \'{name}\' is required (pass "taskToken.$": "$$.Task.Token" in the state\'s message body)',
            name,
        )
    if not isinstance(token, str):
        raise ContractError("wrong_type", f"field '{name}' must be a string, got {json_type(token)}", name)
    if not token.strip():
        raise ContractError("missing_token", f"field '{name}' must not be empty", name)
    if len(token) > MAX_TOKEN_LENGTH:
        raise ContractError(
            "bad_value",
            f"field '{name}' must be at most {MAX_TOKEN_LENGTH:,} characters, got {len(token):,}",
            name,
        )
    if not storable_text(token):
        raise _unstorable(name)
    # Returned exactly as sent: the token is opaque and must go back to
    # Step Functions byte for byte.
    return token


# Shorter than this is no token Step Functions issues (an emulator's UUID has 36 characters):
# looking for it in the other fields would refuse ordinary words.
MIN_REPEATED_TOKEN_LENGTH = 16


def _check_token_not_repeated(data: dict[str, Any], token: str) -> None:
    """Refuse a message that repeats its token in a field the portal keeps: its pages, the API,
    mails and Slack would show it to whoever sees the request. A definition that passes the
    whole context object (``"details.$": "$$"``) does. Checked on the fields as sent, not as
    kept (a long title is cut short, which would leave a piece of it)."""
    if len(token) < MIN_REPEATED_TOKEN_LENGTH:
        return
    spellings = {token, json.dumps(token)[1:-1], json.dumps(token, ensure_ascii=False)[1:-1]}
    for name in sorted(_KNOWN_FIELDS - {"taskToken"}):
        value = data.get(name)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if any(spelling in text for spelling in spellings):
            raise ContractError(
                "token_repeated",
                f"field '{name}' repeats the task token, which anyone who sees the request would read; "
                'take it out of the state machine\'s message ("details.$": "$$" copies the whole context '
                "object, token included)",
                name,
            )


def _execution_state_machine(execution_arn: str, state_machine_arn: str) -> str:
    """The state machine the admins' settings are matched by: ``stateMachine``, checked against
    the execution's; or, for a message that names only its execution, the execution's.

    Trust settings, routing rules and default policies are matched by the state machine, so a
    message naming machine X (approvers named freely) from an execution of machine Y (routing
    only) would let whoever writes Y's definition borrow X's settings: refused when partition,
    region, account or name differ. A version's or an alias's ARN (``…:stateMachine:Y:3``) and a
    Distributed Map's child (``…:stateMachine:Y/label``, ``…:execution:Y/label:id``) are Y's.
    With both fields, an ARN of another form is refused too, as it cannot be compared. A message
    that names no state machine would be matched by the catch-all settings only; its
    execution's state machine is what ``$$.StateMachine.Id`` would have said."""
    if not execution_arn:
        return state_machine_arn
    execution_machine = state_machine_of_execution(execution_arn)
    if not state_machine_arn:
        return execution_machine.arn if execution_machine is not None else ""
    named = state_machine_of_arn(state_machine_arn)
    for field_name, found, form in (
        ("execution", execution_machine, "arn:<partition>:states:<region>:<account>:execution:<stateMachine>:<name>"),
        ("stateMachine", named, "arn:<partition>:states:<region>:<account>:stateMachine:<name>"),
    ):
        if found is None:
            raise ContractError(
                "bad_arn",
                f"field '{field_name}' must be a Step Functions ARN ({form}) when the message names both its "
                "execution and its state machine: the admins' settings are matched by the state machine, so the "
                'portal checks that the execution is one of its own. Send "execution.$": "$$.Execution.Id" '
                'and "stateMachine.$": "$$.StateMachine.Id"',
                field_name,
            )
    if execution_machine.identity != named.identity:
        raise ContractError(
            "execution_mismatch",
            f"the execution is of state machine {_described(execution_machine)}, but field 'stateMachine' names "
            f"{_described(named)}: the admins' settings (approver trust, routing rules, default policies) are "
            "matched by the state machine, so a message's execution must be of the state machine it names. Send "
            '"execution.$": "$$.Execution.Id" and "stateMachine.$": "$$.StateMachine.Id", then replay the message',
            "stateMachine",
        )
    return state_machine_arn


def _described(machine: StateMachineRef) -> str:
    return f"{machine.name!r} (partition {machine.partition}, region {machine.region}, account {machine.account})"


def _parse_title(data: dict[str, Any], state_name: str) -> str:
    name = "title"
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ContractError("wrong_type", f"field '{name}' must be a string, got {json_type(value)}", name)
    # split()/join() strips and collapses every kind of Unicode whitespace,
    # including newlines and tabs, so a title is always one line.
    title = " ".join(value.split()) if value else ""
    if not title:
        return f"{DEFAULT_TITLE} — {state_name}" if state_name else DEFAULT_TITLE
    if not storable_text(title):
        raise _unstorable(name)
    _check_one_line(title, name)
    if len(title) > MAX_TITLE_LENGTH:
        # A long title is a display problem, not a reason to refuse the request.
        title = title[: MAX_TITLE_LENGTH - len(_ELLIPSIS)].rstrip() + _ELLIPSIS
    return title


def _parse_details(data: dict[str, Any]) -> Any:
    """``details`` if given (and not null), else ``approvalRequest``, else None."""
    name = "details"
    value = data.get(name)
    if value is None:
        name = "approvalRequest"
        value = data.get(name)
    if value is not None and not _json_is_storable(value):
        raise _unstorable(name)
    return value


def _json_is_storable(value: Any) -> bool:
    # Iterative, not recursive: json.loads accepts nesting close to the
    # interpreter's recursion limit, and a recursive walk on top would exceed it.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not storable_text(item):
                return False
        elif isinstance(item, dict):
            for key, child in item.items():
                if not storable_text(key):
                    return False
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _parse_approvers(data: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    value = data.get("approvers")
    if value is None:
        return (), ()
    if not isinstance(value, dict):
        raise ContractError(
            "bad_approvers",
            f"field 'approvers' must be an object with optional keys 'users' and 'groups', got {json_type(value)}",
            "approvers",
        )
    if set(value) - {"users", "groups"}:
        # The unknown keys are not echoed: they are sender-controlled text.
        raise ContractError(
            "bad_approvers",
            "field 'approvers' may only contain the keys 'users' and 'groups'",
            "approvers",
        )
    users = _approver_list(value, "users", MAX_APPROVER_USERS, "email addresses")
    groups = _approver_list(value, "groups", MAX_APPROVER_GROUPS, "group names")

    clean_users: dict[str, None] = {}  # a dict de-duplicates and keeps order
    for index, item in enumerate(users):
        email = item.strip()
        _check_one_line(email, "approvers.users", "bad_approvers")
        if not _is_email(email):
            raise ContractError(
                "bad_approvers",
                f"field 'approvers.users' must be a list of email addresses "
                f"(item {index} is not a valid email address)",
                "approvers.users",
            )
        clean_users[email.lower()] = None

    return tuple(clean_users), _clean_group_names(groups, "approvers.groups", "bad_approvers")


def _clean_group_names(groups: list[str], name: str, code: str) -> tuple[str, ...]:
    clean: dict[str, None] = {}
    for index, item in enumerate(groups):
        group = item.strip()
        if not group or len(group) > MAX_GROUP_NAME_LENGTH:
            raise ContractError(
                code,
                f"field '{name}' must be a list of group names of 1 to "
                f"{MAX_GROUP_NAME_LENGTH} characters (item {index} is "
                f"{'empty' if not group else f'{len(group):,} characters'})",
                name,
            )
        if not storable_text(group):
            raise ContractError(
                code,
                f"field '{name}' item {index} contains a NUL character or invalid Unicode",
                name,
            )
        _check_one_line(group, name, code)
        clean[group] = None
    return tuple(clean)


def _group_names(data: dict[str, Any], name: str, code: str) -> tuple[str, ...]:
    """An optional top-level list of group names (``requesterGroups``)."""
    items = data.get(name)
    if items is None:
        return ()
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ContractError(code, f"field '{name}' must be a list of group names", name)
    if len(items) > MAX_APPROVER_GROUPS:
        raise ContractError(
            "bad_value", f"field '{name}' may list at most {MAX_APPROVER_GROUPS} group names, got {len(items):,}", name
        )
    return _clean_group_names(items, name, "bad_value")


def _policy_count(policy: dict[str, Any], key: str) -> int | None:
    name = f"policy.{key}"
    value = policy.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError("wrong_type", f"field '{name}' must be a whole number, got {json_type(value)}", name)
    if not 1 <= value <= MAX_POLICY_COUNT:
        raise ContractError("bad_policy", f"field '{name}' must be between 1 and {MAX_POLICY_COUNT}", name)
    return value


def _parse_policy(
    data: dict[str, Any], users: tuple[str, ...], groups: tuple[str, ...]
) -> tuple[int | None, bool | None, int | None]:
    """``policy``: (required approvals, distinct groups, rejections that deny), None where absent."""
    policy = data.get("policy")
    if policy is None:
        return None, None, None
    if not isinstance(policy, dict):
        raise ContractError(
            "bad_policy",
            f"field 'policy' must be an object with optional keys 'required', 'distinctGroups' and 'rejectOn', "
            f"got {json_type(policy)}",
            "policy",
        )
    if set(policy) - {"required", "distinctGroups", "rejectOn"}:
        raise ContractError(
            "bad_policy",
            "field 'policy' may only contain the keys 'required', 'distinctGroups' and 'rejectOn'",
            "policy",
        )
    required = _policy_count(policy, "required")
    distinct = policy.get("distinctGroups")
    if distinct is not None and not isinstance(distinct, bool):
        raise ContractError(
            "wrong_type",
            f"field 'policy.distinctGroups' must be true or false, got {json_type(distinct)}",
            "policy.distinctGroups",
        )
    reject_on = policy.get("rejectOn")
    if isinstance(reject_on, str) and reject_on != "any":
        raise ContractError(
            "bad_policy", "field 'policy.rejectOn' must be \"any\" or a whole number", "policy.rejectOn"
        )
    rejections = 1 if reject_on == "any" else _policy_count(policy, "rejectOn")
    # Only when the message names every possible approver can it ask for too many: a group can
    # hold any number of people, but with distinctGroups it gives one approval at most.
    possible = None
    if distinct and (users or groups):
        possible, what = len(users) + len(groups), "approvers and groups (distinctGroups)"
    elif users and not groups:
        possible, what = len(users), "approvers"
    if required is not None and possible is not None and required > possible:
        raise ContractError(
            "bad_policy",
            f"field 'policy.required' asks for {required} approvals but 'approvers' names only {possible} {what}",
            "policy.required",
        )
    return required, distinct, rejections


def _approver_list(approvers: dict[str, Any], key: str, limit: int, what: str) -> list[str]:
    name = f"approvers.{key}"
    items = approvers.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ContractError("bad_approvers", f"field '{name}' must be a list of {what}", name)
    if len(items) > limit:
        raise ContractError(
            "bad_approvers",
            f"field '{name}' may list at most {limit} {what}, got {len(items):,}",
            name,
        )
    return items


def _parse_requester(data: dict[str, Any]) -> str:
    name = "requester"
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ContractError(
            "wrong_type",
            f"field '{name}' must be a string (an email address), got {json_type(value)}",
            name,
        )
    email = value.strip()
    if not email:
        return ""
    _check_one_line(email, name)
    if not _is_email(email):
        raise ContractError("bad_value", f"field '{name}' must be an email address", name)
    return email.lower()


def _parse_deadline(data: dict[str, Any]) -> datetime | None:
    name = "approvalDeadline"
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ContractError(
            "wrong_type",
            f"field '{name}' must be an ISO 8601 date-time string, got {json_type(value)}",
            name,
        )
    text = value.strip()
    if not text:
        return None
    error: ContractError | None = None
    expected = f"field '{name}' must be an ISO 8601 date-time such as '2026-11-25T10:00:00Z'"
    if len(text) > _MAX_DEADLINE_LENGTH:
        raise ContractError("bad_value", expected, name)
    try:
        # Python 3.11's fromisoformat accepts 'Z', offsets, and any number of
        # fractional digits (truncated to microseconds).
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            # Step Functions timestamps are UTC; a naive one is read as UTC.
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        # OverflowError: e.g. year 1 with a positive offset falls before datetime.min.
        error = ContractError("bad_value", expected, name)
    raise error


def _optional_seconds(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    # bool is a subclass of int in Python, but `true` is not a number of seconds.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(
            "wrong_type",
            f"field '{name}' must be a whole number of seconds, got {json_type(value)}",
            name,
        )
    if not 1 <= value <= MAX_SECONDS:
        raise ContractError(
            "bad_value",
            f"field '{name}' must be between 1 and {MAX_SECONDS:,} seconds (one year)",
            name,
        )
    return value


# --------------------------------------------------------------------------
# Options and form
# --------------------------------------------------------------------------


def _options_error(name: str, expected: str) -> ContractError:
    return ContractError("bad_options", f"field '{name}' {expected}", name)


def _parse_options(data: dict[str, Any]) -> tuple[tuple[ApprovalOption, ...], bool]:
    """``options`` and ``multiple``; ((), False) without options (``multiple`` alone means nothing)."""
    items = data.get("options")
    if items is None:
        return (), False
    if not isinstance(items, list) or not MIN_OPTIONS <= len(items) <= MAX_OPTIONS:
        what = f"a list of {len(items):,}" if isinstance(items, list) else json_type(items)
        raise _options_error("options", f"must be a list of {MIN_OPTIONS} to {MAX_OPTIONS} choices, got {what}")
    multiple = data.get("multiple")
    if multiple is not None and not isinstance(multiple, bool):
        raise ContractError(
            "wrong_type", f"field 'multiple' must be true or false, got {json_type(multiple)}", "multiple"
        )
    options = tuple(_parse_option(item, f"options[{index}]") for index, item in enumerate(items))
    seen: set[str] = set()
    for index, option in enumerate(options):
        if option.id in seen:
            raise _options_error(f"options[{index}].id", "repeats the id of an earlier option (ids must be unique)")
        seen.add(option.id)
    successes = [option for option in options if option.outcome == "success"]
    defaults = [option for option in options if option.default]
    if not successes:
        raise _options_error("options", 'must offer at least one option with outcome "success"')
    if multiple and len(successes) < 2:
        raise _options_error("multiple", 'needs at least two options with outcome "success" to choose from')
    if not multiple and len(defaults) > 1:
        raise _options_error("options", "may mark at most one option as the default (unless 'multiple' is true)")
    if multiple and any(option.outcome == "failure" for option in defaults):
        raise _options_error("options", "may only mark success options as defaults when 'multiple' is true")
    return options, bool(multiple)


def _parse_option(item: Any, name: str) -> ApprovalOption:
    if not isinstance(item, dict):
        raise _options_error(name, f"must be an object with keys 'id', 'label' and 'outcome', got {json_type(item)}")
    if set(item) - set(_OPTION_KEYS):
        raise _options_error(name, "may only contain the keys 'id', 'label', 'outcome', 'error' and 'default'")
    option_id = item.get("id")
    if not isinstance(option_id, str) or not _OPTION_ID.fullmatch(option_id):
        raise _options_error(
            f"{name}.id", "must be 1 to 64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    label = item.get("label")
    if not isinstance(label, str):
        raise _options_error(f"{name}.label", f"must be a string, got {json_type(label)}")
    label = " ".join(label.split())
    if not label or len(label) > MAX_OPTION_LABEL_LENGTH:
        raise _options_error(f"{name}.label", f"must be 1 to {MAX_OPTION_LABEL_LENGTH} characters")
    if not storable_text(label):
        raise _unstorable(f"{name}.label")
    _check_one_line(label, f"{name}.label", "bad_options")
    outcome = item.get("outcome")
    if outcome not in ("success", "failure"):
        raise _options_error(f"{name}.outcome", 'must be "success" or "failure"')
    error = item.get("error")
    if error is not None and outcome == "success":
        raise _options_error(f"{name}.error", 'is only for options with outcome "failure"')
    if error is None:
        error = DEFAULT_FAILURE_ERROR if outcome == "failure" else ""
    elif not isinstance(error, str) or not _ERROR_NAME.fullmatch(error) or error.startswith("States."):
        raise _options_error(
            f"{name}.error",
            "must be a Step Functions error name of 1 to 256 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter and not with 'States.'",
        )
    elif error in RESERVED_ERRORS:
        raise _options_error(
            f"{name}.error", "may not be ApprovalCancelled or ApprovalExpired (the portal's own errors)"
        )
    default = item.get("default")
    if default is not None and not isinstance(default, bool):
        raise _options_error(f"{name}.default", f"must be true or false, got {json_type(default)}")
    return ApprovalOption(id=option_id, label=label, outcome=outcome, error=error, default=bool(default))


def _parse_form(data: dict[str, Any]) -> dict[str, Any] | None:
    """``form``: the JSON Schema as it arrived, once it is known to be in the subset."""
    form = data.get("form")
    if form is None:
        return None
    error: ContractError | None = None
    if not _json_is_storable(form):
        raise _unstorable("form")
    try:
        form_schema_check(form)
    except FormSchemaError as exc:
        # Built outside the except block: the jsonschema error behind it holds values.
        error = ContractError("bad_form", exc.message, exc.path)
    if error is not None:
        raise error
    return form
