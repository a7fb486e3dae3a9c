"""Unit tests for the approval message contract and task-token redaction.

Pure functions only: no database, no Django settings, no network.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import pickle
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from approvals.contract import (
    MAX_NESTING_DEPTH,
    MAX_TOKEN_LENGTH,
    ApprovalMessage,
    ContractError,
    find_token,
    parse_message,
)
from approvals.integrations.aws import QueueMessage
from approvals.redaction import (
    MAX_STORED_BODY_BYTES,
    REDACTED,
    TokenRedactingFilter,
    redact,
    redact_body,
)

# A realistic AWS-style token: base64 of 1,201 random bytes (1,604 characters;
# 1,201 is not a multiple of 3, so it ends in "==" padding, and 1,600 random
# characters all but surely include '+' and '/'). Seeded: reproducible.
_rng = random.Random(20261125)  # noqa: S311 - test data, not cryptography
AWS_TOKEN = base64.b64encode(_rng.randbytes(1201)).decode("ascii")
UUID_TOKEN = str(uuid.UUID(int=_rng.getrandbits(128), version=4))
TOKEN = AWS_TOKEN

EXECUTION_ARN = "arn:aws:states:eu-west-1:123456789012:execution:OrderApproval:run-1234"
STATE_MACHINE_ARN = "arn:aws:states:eu-west-1:123456789012:stateMachine:OrderApproval"


def body(token: Any = TOKEN, **fields: Any) -> str:
    """A JSON message body with the given taskToken (omitted if ...) and extra keys."""
    data: dict[str, Any] = {} if token is ... else {"taskToken": token}
    data.update(fields)
    return json.dumps(data)


def refused(raw: str | bytes, code: str, field: str | None = None, **kwargs: Any) -> ContractError:
    """Parse ``raw``, expect a ContractError with ``code``, and check it leaks nothing."""
    with pytest.raises(ContractError) as info:
        parse_message(raw, **kwargs)
    error = info.value
    assert error.code == code, error.message
    if field is not None:
        assert error.field == field
    for secret in (AWS_TOKEN, UUID_TOKEN):
        assert secret not in str(error)
        assert secret not in error.message
        assert secret not in repr(error)
        assert all(secret not in str(arg) for arg in error.args)
    # Raised outside except blocks: nothing (e.g. a JSONDecodeError holding
    # the whole body) hangs off the exception.
    assert error.__cause__ is None
    assert error.__context__ is None
    assert error.message
    return error


# --------------------------------------------------------------------------
# Accepted shapes
# --------------------------------------------------------------------------


def test_the_seed_blogs_shape_is_accepted():
    request = {"orderId": "1234", "amount": {"value": 5300, "currency": "EUR"}}
    message = parse_message(body(approvalRequest=request, approvalDeadline="2026-11-25T10:00:00.123Z"))
    assert message.task_token == TOKEN
    assert message.details == request
    assert message.deadline == datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)
    assert message.title == "Approval requested"
    assert message.approver_users == ()
    assert message.approver_groups == ()
    assert message.requester == ""
    assert message.timeout_seconds is None
    assert message.heartbeat_seconds is None
    assert message.execution_arn == ""
    assert message.state_machine_arn == ""
    assert message.state_name == ""


def test_the_rich_shape_maps_every_field():
    details = {"order": {"id": 1234, "lines": [{"sku": "A-1", "qty": 2}]}, "note": None}
    message = parse_message(
        body(
            title="Approve order 1234 (EUR 5,300)",
            approvers={
                "users": [" Alice@Example.com ", "carol@example.com", "alice@example.com"],
                "groups": [" finance-approvers ", "cfo", "finance-approvers"],
            },
            requester="Bob@Example.COM",
            details=details,
            approvalDeadline="2026-11-25T12:00:00+02:00",
            timeoutSeconds=86400,
            heartbeatSeconds=3600,
            execution=EXECUTION_ARN,
            stateMachine=STATE_MACHINE_ARN,
            state="WaitForApproval",
        )
    )
    assert message == ApprovalMessage(
        task_token=TOKEN,
        title="Approve order 1234 (EUR 5,300)",
        details=details,
        approver_users=("alice@example.com", "carol@example.com"),
        approver_groups=("finance-approvers", "cfo"),
        requester="bob@example.com",
        deadline=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
        timeout_seconds=86400,
        heartbeat_seconds=3600,
        execution_arn=EXECUTION_ARN,
        state_machine_arn=STATE_MACHINE_ARN,
        state_name="WaitForApproval",
    )


def test_bytes_bodies_are_accepted_like_text():
    assert parse_message(body().encode("utf-8")).task_token == TOKEN


def test_a_long_opaque_aws_style_token_round_trips_exactly():
    assert len(AWS_TOKEN) > 1000
    assert all(c in AWS_TOKEN for c in "+/=")
    assert parse_message(body(AWS_TOKEN)).task_token == AWS_TOKEN


def test_a_token_with_json_escaped_slashes_round_trips_decoded():
    raw = json.dumps({"taskToken": AWS_TOKEN}).replace("/", "\\/")
    assert parse_message(raw).task_token == AWS_TOKEN


def test_a_token_of_exactly_2048_characters_is_accepted():
    token = ("AQCEAAAAKgAAAA+/=" * 200)[:MAX_TOKEN_LENGTH]
    assert len(token) == 2048
    assert parse_message(body(token)).task_token == token


def test_a_token_of_2049_characters_is_refused():
    token = ("AQCEAAAAKgAAAA+/=" * 200)[: MAX_TOKEN_LENGTH + 1]
    error = refused(body(token), "bad_value", "taskToken")
    assert token not in repr(error)
    assert "2,048" in error.message


def test_an_emulators_36_character_uuid_token_is_accepted():
    assert len(UUID_TOKEN) == 36
    assert parse_message(body(UUID_TOKEN)).task_token == UUID_TOKEN


def test_details_win_over_approval_request_when_both_are_given():
    message = parse_message(body(details={"a": 1}, approvalRequest={"b": 2}))
    assert message.details == {"a": 1}


def test_null_details_fall_back_to_approval_request():
    assert parse_message(body(details=None, approvalRequest=[1, 2])).details == [1, 2]


@pytest.mark.parametrize(
    "value",
    [
        {"deep": {"er": {"still": [1, {"deeper": [True, None, 1.5, "x"]}]}}},
        [{"a": 1}, [2, [3, [4]]]],
        "just a string",
        42,
        3.25,
        False,
    ],
)
def test_details_may_be_any_json_value_including_nested_ones(value):
    assert parse_message(body(details=value)).details == value
    assert parse_message(body(approvalRequest=value)).details == value


def test_unknown_keys_are_ignored():
    message = parse_message(
        body(
            title="T",
            somethingNew={"x": 1},
            Title="ignored: keys are case-sensitive",
            TaskToken="ignored too",
        )
    )
    assert message.title == "T"
    assert message.task_token == TOKEN


def test_null_optional_fields_count_as_absent():
    message = parse_message(
        body(
            title=None,
            approvers=None,
            requester=None,
            details=None,
            approvalRequest=None,
            approvalDeadline=None,
            timeoutSeconds=None,
            heartbeatSeconds=None,
            execution=None,
            stateMachine=None,
            state=None,
        )
    )
    assert message == ApprovalMessage(task_token=TOKEN)


def test_approvers_may_name_only_users_or_only_groups_or_nothing():
    assert parse_message(body(approvers={"users": ["a@example.com"]})).approver_groups == ()
    assert parse_message(body(approvers={"groups": ["g"]})).approver_users == ()
    message = parse_message(body(approvers={}))
    assert (message.approver_users, message.approver_groups) == ((), ())


def test_a_blank_requester_means_none():
    assert parse_message(body(requester="  ")).requester == ""


# --------------------------------------------------------------------------
# Titles
# --------------------------------------------------------------------------


def test_the_title_defaults_to_approval_requested():
    assert parse_message(body()).title == "Approval requested"
    assert parse_message(body(title="   ")).title == "Approval requested"


def test_the_default_title_names_the_state_when_known():
    assert parse_message(body(state="WaitForApproval")).title == "Approval requested — WaitForApproval"


def test_the_title_is_stripped_and_whitespace_collapsed():
    assert parse_message(body(title="  Approve\n\torder   1234  ")).title == "Approve order 1234"


def test_a_long_title_is_truncated_with_an_ellipsis():
    title = parse_message(body(title="word " * 100)).title
    assert len(title) <= 300
    assert title.endswith("…")
    assert title.startswith("word word")


def test_a_title_of_exactly_300_characters_is_kept_whole():
    assert parse_message(body(title="x" * 300)).title == "x" * 300


def test_a_unicode_title_is_preserved():
    title = "Freigabe: Bestellung 1234 – 5.300 € ✓"
    assert parse_message(body(title=title)).title == title
    assert parse_message(json.dumps({"taskToken": TOKEN, "title": title}, ensure_ascii=False).encode()).title == title


# --------------------------------------------------------------------------
# Deadlines
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
        ("2026-11-25T10:00:00.123Z", datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-25T10:00:00.123456789Z", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-25T11:30:00+01:30", datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
        ("2026-11-25T05:00:00.5-05:00", datetime(2026, 11, 25, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-25T10:00:00", datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
        ("2026-11-25 10:00", datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
    ],
)
def test_deadlines_with_z_offsets_fractions_or_no_zone_become_aware_utc(text, expected):
    deadline = parse_message(body(approvalDeadline=text)).deadline
    assert deadline == expected
    assert deadline is not None
    assert deadline.utcoffset() == timedelta(0)


def test_a_blank_deadline_means_none():
    assert parse_message(body(approvalDeadline=" ")).deadline is None


# --------------------------------------------------------------------------
# Body-level refusals
# --------------------------------------------------------------------------


def test_a_missing_token_is_refused():
    refused(body(..., title="no token here"), "missing_token", "taskToken")


def test_a_null_token_counts_as_missing():
    refused(body(None), "missing_token", "taskToken")


@pytest.mark.parametrize("token", ["", "   ", "\n\t"])
def test_an_empty_token_is_refused(token):
    refused(body(token), "missing_token", "taskToken")


@pytest.mark.parametrize("token", [12345, 1.5, True, [TOKEN], {"value": TOKEN}])
def test_a_token_that_is_not_a_string_is_refused(token):
    error = refused(body(token), "wrong_type", "taskToken")
    assert "string" in error.message


def test_the_token_key_is_case_sensitive():
    refused(json.dumps({"TaskToken": TOKEN}), "missing_token", "taskToken")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json at all " + TOKEN,
        '{"taskToken": "' + TOKEN + '", "approvers": 5',
        "{'taskToken': '" + TOKEN + "'}",
        '{"taskToken": "' + TOKEN + '", "details": NaN}',
        '{"taskToken": "' + TOKEN + '", "details": Infinity}',
        '{"taskToken": "' + TOKEN + '", "details": ' + "9" * 5000 + "}",
        "\ufeff" + body(),
    ],
)
def test_a_body_that_is_not_json_is_refused(raw):
    error = refused(raw, "not_json")
    assert error.field is None


@pytest.mark.parametrize("raw", ["[1, 2]", json.dumps([{"taskToken": TOKEN}]), '"' + TOKEN + '"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_refused(raw):
    refused(raw, "not_object")


def test_a_body_that_is_not_utf8_is_refused():
    raw = body().encode("utf-8").replace(b'"taskToken"', b'"task\xffToken"')
    error = refused(raw, "not_utf8")
    assert "UTF-8" in error.message
    refused(body(title="Bestellung").encode("latin-1") + b"\xe9", "not_utf8")


def test_an_oversized_body_is_refused_before_parsing():
    raw = body(details="x" * (256 * 1024))
    error = refused(raw, "oversized")
    assert "262,144" in error.message
    # Checked before anything else: an oversized body need not even be JSON.
    refused(b"\xff" * (256 * 1024 + 1), "oversized")
    refused("{" * (256 * 1024 + 1), "oversized")


def test_the_size_limit_counts_utf8_bytes_not_characters():
    raw = json.dumps({"taskToken": TOKEN, "details": "€" * 1000}, ensure_ascii=False)  # "€" is 3 bytes
    assert len(raw) < 4096 < len(raw.encode("utf-8"))
    refused(raw, "oversized", max_bytes=4096)
    refused(raw.encode("utf-8"), "oversized", max_bytes=4096)
    assert parse_message(raw, max_bytes=len(raw.encode("utf-8"))).task_token == TOKEN


# --------------------------------------------------------------------------
# Field-level refusals
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", 5),
        ("title", ["a title"]),
        ("title", {"text": "a title"}),
        ("title", True),
        ("requester", 5),
        ("requester", ["bob@example.com"]),
        ("approvalDeadline", 1764064800),
        ("approvalDeadline", {"at": "2026-11-25T10:00:00Z"}),
        ("timeoutSeconds", "86400"),
        ("timeoutSeconds", 86400.0),
        ("timeoutSeconds", [86400]),
        ("heartbeatSeconds", "3600"),
        ("heartbeatSeconds", 3600.5),
        ("execution", 5),
        ("execution", {"arn": EXECUTION_ARN}),
        ("stateMachine", ["arn"]),
        ("state", 7),
        ("state", False),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_and_named(field, value):
    error = refused(body(**{field: value}), "wrong_type", field)
    assert f"'{field}'" in error.message


@pytest.mark.parametrize("field", ["timeoutSeconds", "heartbeatSeconds"])
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_number_of_seconds(field, value):
    refused(body(**{field: value}), "wrong_type", field)


@pytest.mark.parametrize("field", ["timeoutSeconds", "heartbeatSeconds"])
@pytest.mark.parametrize("value", [0, -1, 31_536_001, 10**30])
def test_seconds_outside_one_second_to_one_year_are_refused(field, value):
    refused(body(**{field: value}), "bad_value", field)


@pytest.mark.parametrize("field", ["timeoutSeconds", "heartbeatSeconds"])
def test_seconds_at_the_limits_are_accepted(field):
    attribute = "timeout_seconds" if field == "timeoutSeconds" else "heartbeat_seconds"
    assert getattr(parse_message(body(**{field: 1})), attribute) == 1
    assert getattr(parse_message(body(**{field: 31_536_000})), attribute) == 31_536_000


@pytest.mark.parametrize(
    "deadline",
    [
        "tomorrow",
        "2026-13-01T00:00:00Z",
        "2026-11-25T25:00:00Z",
        "25/11/2026",
        "0001-01-01T00:00:00+05:00",
        "2026-11-25T10:00:00Z" + " " * 100 + "x",
        TOKEN,
    ],
)
def test_an_unparseable_deadline_is_refused(deadline):
    refused(body(approvalDeadline=deadline), "bad_value", "approvalDeadline")


@pytest.mark.parametrize("requester", ["bob", "bob@", "@example.com", "bob at example.com", TOKEN, UUID_TOKEN])
def test_a_requester_that_is_not_an_email_is_refused(requester):
    refused(body(requester=requester), "bad_value", "requester")


@pytest.mark.parametrize(("field", "limit"), [("execution", 2048), ("stateMachine", 2048), ("state", 80)])
def test_over_long_context_fields_are_refused(field, limit):
    assert parse_message(body(**{field: "s" * limit}))
    refused(body(**{field: "s" * (limit + 1)}), "bad_value", field)


@pytest.mark.parametrize(
    ("approvers", "field"),
    [
        ("alice@example.com", "approvers"),
        (["alice@example.com"], "approvers"),
        (5, "approvers"),
        (True, "approvers"),
        ({"users": ["a@example.com"], "admins": ["b@example.com"]}, "approvers"),
        ({"Users": ["a@example.com"]}, "approvers"),
        ({TOKEN: ["a@example.com"]}, "approvers"),
        ({"users": "alice@example.com"}, "approvers.users"),
        ({"users": {"alice": "alice@example.com"}}, "approvers.users"),
        ({"users": ["alice@example.com", 5]}, "approvers.users"),
        ({"users": [["alice@example.com"]]}, "approvers.users"),
        ({"users": ["alice"]}, "approvers.users"),
        ({"users": [""]}, "approvers.users"),
        ({"users": ["alice@example.com", TOKEN]}, "approvers.users"),
        ({"users": [UUID_TOKEN]}, "approvers.users"),
        ({"users": [f"u{i}@example.com" for i in range(101)]}, "approvers.users"),
        ({"groups": "finance"}, "approvers.groups"),
        ({"groups": ["finance", None]}, "approvers.groups"),
        ({"groups": ["  "]}, "approvers.groups"),
        ({"groups": ["g" * 151]}, "approvers.groups"),
        ({"groups": [f"g{i}" for i in range(101)]}, "approvers.groups"),
        ({"groups": ["fin\x00ance"]}, "approvers.groups"),
    ],
)
def test_approvers_in_an_unknown_format_are_refused(approvers, field):
    error = refused(body(approvers=approvers), "bad_approvers", field)
    assert f"'{field}'" in error.message


def test_the_approver_error_for_users_says_what_was_expected():
    error = refused(body(approvers={"users": ["not-an-email"]}), "bad_approvers")
    assert "field 'approvers.users' must be a list of email addresses" in error.message


def test_a_hundred_users_and_a_hundred_groups_are_accepted():
    approvers = {
        "users": [f"u{i}@example.com" for i in range(100)],
        "groups": [f"g{i}" for i in range(100)],
    }
    message = parse_message(body(approvers=approvers))
    assert len(message.approver_users) == 100
    assert len(message.approver_groups) == 100


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "Approve\u0000order"),
        ("details", {"note": "nul\u0000here"}),
        ("details", {"key\u0000": 1}),
        ("approvalRequest", ["\ud800"]),
        ("execution", "arn\u0000"),
    ],
)
def test_text_that_postgresql_cannot_store_is_refused(field, value):
    refused(body(**{field: value}), "bad_value", field)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"level": value}
    return value


def test_details_nested_exactly_to_the_limit_are_accepted():
    value = nested(MAX_NESTING_DEPTH)
    assert parse_message(body(details=value)).details == value


@pytest.mark.parametrize("field", ["details", "approvalRequest", "policy"])
def test_a_field_nested_one_level_deeper_than_the_limit_is_refused_and_named(field):
    error = refused(body(**{field: nested(MAX_NESTING_DEPTH + 1)}), "too_deep", field)
    assert f"{field}" in error.message and str(MAX_NESTING_DEPTH) in error.message


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_details_nested_too_deep_to_parse_are_refused_as_too_deep_and_named(depth):
    raw = '{"taskToken": "' + TOKEN + '", "title": "x", "details": ' + "[" * depth + "]" * depth + "}"
    refused(raw, "too_deep", "details")


def test_an_unknown_field_nested_too_deep_is_refused_without_echoing_its_name():
    error = refused(body(secretLookingKey=nested(MAX_NESTING_DEPTH + 1)), "too_deep")
    assert error.field is None
    assert "secretLookingKey" not in error.message
    error = refused('{"taskToken": "t", "secretLookingKey": ' + "[" * 5000 + "]" * 5000 + "}", "too_deep")
    assert error.field is None and "secretLookingKey" not in error.message


def test_a_body_that_is_only_deep_nesting_is_refused_as_too_deep():
    assert refused("[" * 5000 + "]" * 5000, "too_deep").field is None


@pytest.mark.parametrize("number", ["1e400", "-1e400", "123456789e999"])
@pytest.mark.parametrize("field", ["details", "approvalRequest"])
def test_a_number_beyond_a_double_is_refused_as_not_finite_and_the_field_named(field, number):
    # Python reads 1e400 as float("inf"), which PostgreSQL's jsonb cannot store.
    raw = '{"taskToken": "' + TOKEN + '", "' + field + '": {"amounts": [1, ' + number + "]}}"
    error = refused(raw, "bad_number", field)
    assert field in error.message


def test_numbers_at_the_edges_of_a_double_are_accepted():
    value = [1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 1e-400, -0.0, 10**300, -(2**63)]
    assert parse_message(body(details=value)).details == value


@pytest.mark.parametrize(
    "character",
    [
        "\u202e",  # RIGHT-TO-LEFT OVERRIDE
        "\u202a",  # LEFT-TO-RIGHT EMBEDDING
        "\u2066",  # LEFT-TO-RIGHT ISOLATE
        "\u200b",  # ZERO WIDTH SPACE
        "\u200d",  # ZERO WIDTH JOINER
        "\u200f",  # RIGHT-TO-LEFT MARK
        "\u2060",  # WORD JOINER
        "\ufeff",  # ZERO WIDTH NO-BREAK SPACE (BOM)
        "\u00ad",  # SOFT HYPHEN
        "\x07",  # BEL, a control character
        "\x1b",  # ESC
    ],
)
@pytest.mark.parametrize(
    ("field", "make", "code"),
    [
        ("title", lambda c: {"title": f"Approve order 12{c}34"}, "bad_value"),
        ("requester", lambda c: {"requester": f"bob{c}@example.com"}, "bad_value"),
        ("approvers.users", lambda c: {"approvers": {"users": [f"alice{c}@example.com"]}}, "bad_approvers"),
        ("approvers.groups", lambda c: {"approvers": {"groups": [f"finance{c}"]}}, "bad_approvers"),
        ("requesterGroups", lambda c: {"requesterGroups": [f"sales{c}"]}, "bad_value"),
        ("execution", lambda c: {"execution": f"arn:aws:states:eu-west-1:1:execution:M:{c}run"}, "bad_value"),
        ("stateMachine", lambda c: {"stateMachine": f"arn:aws:states:eu-west-1:1:stateMachine:{c}M"}, "bad_value"),
        ("state", lambda c: {"state": f"Wait{c}ForApproval"}, "bad_value"),
    ],
)
def test_control_and_invisible_format_characters_in_a_one_line_field_are_refused_and_named(
    field, make, code, character
):
    error = refused(body(**make(character)), code, field)
    assert f"U+{ord(character):04X}" in error.message


def test_a_title_keeps_ordinary_unicode_and_turns_line_breaks_into_spaces():
    title = "Zahlung\nfür Müller\u2028(€\u00a05.300) 👍 — 日本"
    assert parse_message(body(title=title)).title == "Zahlung für Müller (€ 5.300) 👍 — 日本"


def test_details_may_hold_format_characters_they_are_data_not_a_one_line_field():
    value = {"note": "right-to-left \u202e text, zero\u200bwidth"}
    assert parse_message(body(details=value)).details == value


def test_a_token_with_a_nul_character_is_refused():
    refused(body(TOKEN[:100] + "\u0000"), "bad_value", "taskToken")


# --------------------------------------------------------------------------
# The execution is of the state machine the message names
# --------------------------------------------------------------------------
ARN_EU = "arn:aws:states:eu-west-1:123456789012"


@pytest.mark.parametrize(
    ("execution", "state_machine"),
    [
        (EXECUTION_ARN, STATE_MACHINE_ARN),
        # Run through a version or an alias: $$.StateMachine.Id is qualified, the execution is not.
        (EXECUTION_ARN, f"{STATE_MACHINE_ARN}:3"),
        (EXECUTION_ARN, f"{STATE_MACHINE_ARN}:PROD"),
        # A Distributed Map's child workflow: its own ids carry the Map's label; its parent's name is fine too.
        (
            f"{ARN_EU}:execution:OrderApproval/ApproveEach:0b5e7e3c-3d0a-4b1c-9c56-2f3e7f6a1d22",
            f"{STATE_MACHINE_ARN}/ApproveEach",
        ),
        (f"{ARN_EU}:execution:OrderApproval/ApproveEach:0b5e7e3c-3d0a-4b1c-9c56-2f3e7f6a1d22", STATE_MACHINE_ARN),
        # Express (it cannot wait for a task token, but its ARN is a real one).
        (f"{ARN_EU}:express:OrderApproval:run-1:9d1c2f0e-5b7a-4e3d-8f61-0a2b3c4d5e6f", STATE_MACHINE_ARN),
        # Other partitions.
        (
            "arn:aws-cn:states:cn-north-1:123456789012:execution:OrderApproval:run-1",
            "arn:aws-cn:states:cn-north-1:123456789012:stateMachine:OrderApproval",
        ),
        (
            "arn:aws-us-gov:states:us-gov-west-1:123456789012:execution:OrderApproval:run-1",
            "arn:aws-us-gov:states:us-gov-west-1:123456789012:stateMachine:OrderApproval",
        ),
    ],
    ids=["standard", "version", "alias", "map child", "map child, parent named", "express", "aws-cn", "aws-us-gov"],
)
def test_an_execution_of_the_state_machine_the_message_names_is_accepted_as_sent(execution, state_machine):
    message = parse_message(body(execution=execution, stateMachine=state_machine))
    assert (message.execution_arn, message.state_machine_arn) == (execution, state_machine)


@pytest.mark.parametrize(
    ("execution", "state_machine", "shown"),
    [
        (f"{ARN_EU}:execution:Payroll:run-1", STATE_MACHINE_ARN, "'Payroll'"),
        (f"{ARN_EU}:execution:OrderApprovalV2:run-1", STATE_MACHINE_ARN, "'OrderApprovalV2'"),
        (f"{ARN_EU}:execution:orderapproval:run-1", STATE_MACHINE_ARN, "'orderapproval'"),
        ("arn:aws:states:eu-west-1:210987654321:execution:OrderApproval:run-1", STATE_MACHINE_ARN, "210987654321"),
        ("arn:aws:states:eu-central-1:123456789012:execution:OrderApproval:run-1", STATE_MACHINE_ARN, "eu-central-1"),
        ("arn:aws-cn:states:eu-west-1:123456789012:execution:OrderApproval:run-1", STATE_MACHINE_ARN, "aws-cn"),
        (f"{ARN_EU}:execution:Payroll/ApproveEach:0b5e7e3c", STATE_MACHINE_ARN, "'Payroll'"),
        (EXECUTION_ARN, f"{ARN_EU}:stateMachine:Payroll/OrderApproval", "'Payroll'"),
        (EXECUTION_ARN, f"{ARN_EU}:stateMachine:Payroll:OrderApproval", "'Payroll'"),
        (f"{ARN_EU}:express:Payroll:run-1:9d1c2f0e", STATE_MACHINE_ARN, "'Payroll'"),
    ],
    ids=[
        "other name",
        "longer name",
        "other case",
        "other account",
        "other region",
        "other partition",
        "map child of another",
        "another's map child",
        "another's alias",
        "another's express",
    ],
)
def test_an_execution_of_another_state_machine_is_refused_naming_both(execution, state_machine, shown):
    error = refused(body(execution=execution, stateMachine=state_machine), "execution_mismatch", "stateMachine")
    assert shown in error.message and "'OrderApproval'" in error.message


@pytest.mark.parametrize(
    ("execution", "state_machine", "field"),
    [
        ("not-an-execution-arn", STATE_MACHINE_ARN, "execution"),
        (STATE_MACHINE_ARN, STATE_MACHINE_ARN, "execution"),  # a state machine where the execution goes
        (f"{ARN_EU}:execution:OrderApproval", STATE_MACHINE_ARN, "execution"),
        (f"{ARN_EU}:execution:OrderApproval:run-1:extra", STATE_MACHINE_ARN, "execution"),
        (f"{ARN_EU}:express:OrderApproval:run-1", STATE_MACHINE_ARN, "execution"),
        (f"{ARN_EU}:execution:Order Approval:run-1", STATE_MACHINE_ARN, "execution"),
        ("arn:aws:states:eu-west-1:1:execution:OrderApproval:run-1", STATE_MACHINE_ARN, "execution"),
        ("arn:aws:lambda:eu-west-1:123456789012:execution:OrderApproval:run-1", STATE_MACHINE_ARN, "execution"),
        (EXECUTION_ARN, "OrderApproval", "stateMachine"),
        (EXECUTION_ARN, f"{ARN_EU}:activity:OrderApproval", "stateMachine"),
        (EXECUTION_ARN, f"{ARN_EU}:statemachine:OrderApproval", "stateMachine"),
        (EXECUTION_ARN, f"{STATE_MACHINE_ARN}:3:extra", "stateMachine"),
        (EXECUTION_ARN, f"{ARN_EU}:stateMachine:", "stateMachine"),
    ],
)
def test_with_both_fields_an_arn_of_an_unknown_form_is_refused_it_cannot_be_compared(execution, state_machine, field):
    refused(body(execution=execution, stateMachine=state_machine), "bad_arn", field)


@pytest.mark.parametrize(
    ("execution", "state_machine"),
    [
        (EXECUTION_ARN, STATE_MACHINE_ARN),
        (f"{ARN_EU}:execution:OrderApproval/ApproveEach:0b5e7e3c", f"{STATE_MACHINE_ARN}/ApproveEach"),
        (f"{ARN_EU}:express:OrderApproval:run-1:9d1c2f0e", STATE_MACHINE_ARN),
        ("not-an-execution-arn", ""),  # nothing to go by: as before, the catch-all settings match it
    ],
)
def test_a_message_naming_only_its_execution_is_matched_by_that_executions_state_machine(execution, state_machine):
    message = parse_message(body(execution=execution))
    assert (message.execution_arn, message.state_machine_arn) == (execution, state_machine)


def test_a_state_machine_named_like_the_token_is_refused_for_the_token_not_named():
    execution = f"{ARN_EU}:execution:Payroll:run-1"
    state_machine = f"{ARN_EU}:stateMachine:{UUID_TOKEN}"
    refused(body(UUID_TOKEN, execution=execution, stateMachine=state_machine), "token_repeated", "stateMachine")


# --------------------------------------------------------------------------
# Secrecy of the token
# --------------------------------------------------------------------------


@pytest.mark.parametrize("token", [AWS_TOKEN, UUID_TOKEN])
def test_the_repr_of_a_message_does_not_show_the_token(token):
    message = parse_message(body(token, title="T", state="S"))
    assert token not in repr(message)
    assert token not in str(message)
    assert "task_token" not in repr(message)


@pytest.mark.parametrize("token", [AWS_TOKEN, UUID_TOKEN])
def test_the_repr_of_a_received_queue_message_does_not_show_its_body(token):
    received = QueueMessage(message_id="m-1", receipt_handle="r-1", body=body(token), receive_count=1)
    assert token not in repr(received)
    assert token not in str(received)


def test_contract_errors_survive_pickling():
    error = refused(body(approvers="x"), "bad_approvers", "approvers")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.code, copy.message, copy.field) == (error.code, error.message, error.field)
    assert str(copy) == error.message


def test_find_token_returns_the_token_of_a_json_object_body():
    assert find_token(body()) == TOKEN
    assert find_token(body(UUID_TOKEN).encode()) == UUID_TOKEN
    # Lenient where parse_message is strict: other fields may be wrong.
    assert find_token(body(approvers=5, timeoutSeconds=True)) == TOKEN


@pytest.mark.parametrize(
    "raw",
    ["", "not json", "[1]", body(...), body(5), body("  "), b"\xff\xfe", '{"taskToken": "abc', "[" * 100_000],
)
def test_find_token_returns_none_rather_than_raising(raw):
    assert find_token(raw) is None


# --------------------------------------------------------------------------
# redact()
# --------------------------------------------------------------------------


def test_redact_removes_explicitly_given_secrets_wherever_they_appear():
    secret = "short-secret"
    text = f"token {secret} and again:{secret}."
    assert redact(text, secret) == f"token {REDACTED} and again:{REDACTED}."


def test_redact_removes_a_secrets_json_escaped_spelling_too():
    secret = 'we"ird\\token'
    assert secret not in redact(json.dumps({"t": secret}), secret)
    assert json.dumps(secret)[1:-1] not in redact(json.dumps({"t": secret}), secret)


def test_redact_ignores_none_and_blank_secrets():
    text = "an ordinary sentence, with spaces."
    assert redact(text, None, "", "  ") == text


def test_redact_removes_uuids():
    text = f"token {UUID_TOKEN} for run exec-{UUID_TOKEN.upper()}."
    assert redact(text) == f"token {REDACTED} for run exec-{REDACTED}."


def test_redact_removes_long_opaque_tokens():
    text = f"callback with {AWS_TOKEN} failed"
    assert redact(text) == f"callback with {REDACTED} failed"
    assert redact("(" + "A" * 64 + ")") == f"({REDACTED})"


def test_redact_removes_values_labelled_as_task_tokens_whatever_their_shape():
    assert redact('{"taskToken": "tiny"}') == f'{{"taskToken": "{REDACTED}"}}'
    assert redact("{'task_token': 'tiny'}") == f"{{'task_token': '{REDACTED}'}}"
    assert redact("send taskToken=tiny&x=1") == f"send taskToken={REDACTED}&x=1"
    assert redact('{"taskToken": "cut off') == f'{{"taskToken": "{REDACTED}'


def test_redact_keeps_ordinary_text_intact():
    texts = [
        "Please approve order 1234 (EUR 5,300) before Friday.",
        "alice@example.com and bob.smith+finance@example.co.uk",
        EXECUTION_ARN,
        STATE_MACHINE_ARN,
        "arn:aws:states:::sqs:sendMessage.waitForTaskToken: sent",
        "2026-11-25T10:00:00.123Z",
        "Freigabe: Bestellung 1234 – 5.300 € ✓",
        "field 'taskToken' must be a string, got number",
        'field \'taskToken\' is required (pass "taskToken.$": "$$.Task.Token" in the state\'s message body)',
        '{"taskToken": null, "approvers": {"users": []}}',
        "a-63-character-run:" + "b" * 63,
        "",
    ]
    for text in texts:
        assert redact(text) == text


def test_contract_error_messages_pass_through_redact_unchanged():
    for raw in [body(...), body(5), body(approvers={"users": ["x"]}), "nope", body(timeoutSeconds=0)]:
        with pytest.raises(ContractError) as info:
            parse_message(raw)
        assert redact(info.value.message) == info.value.message


def test_redact_is_fast_on_a_256_kib_input():
    nasty = ("a" * 63 + " ") * (256 * 1024 // 64)  # many runs just under the threshold
    hexy = ("0123abcd-" * 4 + " ") * (256 * 1024 // 37)  # many almost-UUIDs
    labels = '"taskToken": "\\' * (256 * 1024 // 15)  # many unterminated labelled values
    started = time.perf_counter()
    for text in (nasty, hexy, labels, body(details="x" * 250_000)):
        redact(text, TOKEN)
    assert time.perf_counter() - started < 2.0


# --------------------------------------------------------------------------
# redact_body()
# --------------------------------------------------------------------------


def test_redact_body_removes_the_token_from_a_truncated_json_body():
    raw = '{"taskToken": "' + AWS_TOKEN + '", "approvers": 5'
    cleaned = redact_body(raw)
    assert AWS_TOKEN not in cleaned
    assert '"approvers": 5' in cleaned


def test_redact_body_removes_a_short_token_only_findable_by_its_label():
    raw = b'{"taskToken": "emu-42", "title": "Approve order 1234", "approvers": '
    cleaned = redact_body(raw)
    assert "emu-42" not in cleaned
    assert "Approve order 1234" in cleaned


def test_redact_body_removes_every_copy_of_a_parsed_token():
    raw = body("emu-42", details={"echo": "the token was emu-42"})
    assert "emu-42" not in redact_body(raw)


def test_redact_body_handles_bytes_that_are_not_utf8():
    raw = b'{"taskToken": "' + AWS_TOKEN.encode() + b'", "title": "caf\xe9"}'
    cleaned = redact_body(raw)
    assert AWS_TOKEN not in cleaned
    assert "caf\ufffd" in cleaned


def test_redact_body_makes_nul_characters_and_lone_surrogates_storable():
    cleaned = redact_body('{"title": "a\x00b\ud800c"}')
    assert "\x00" not in cleaned
    cleaned.encode("utf-8")  # would raise on a lone surrogate


def test_redact_body_truncates_to_64_kib_with_a_note():
    raw = body(details="é" * 100_000)
    size = len(raw.encode("utf-8"))
    cleaned = redact_body(raw)
    assert TOKEN not in cleaned
    assert len(cleaned.encode("utf-8")) <= MAX_STORED_BODY_BYTES
    assert cleaned.endswith(f"[truncated, {size} bytes in all]")
    assert cleaned.startswith(f'{{"taskToken": "{REDACTED}"')


def test_redact_body_keeps_a_small_body_whole():
    raw = '{"title": "Approve order 1234", "approvers": 5}'
    assert redact_body(raw) == raw


# --------------------------------------------------------------------------
# TokenRedactingFilter
# --------------------------------------------------------------------------


@pytest.fixture
def captured_logger():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(TokenRedactingFilter())
    logger = logging.getLogger(f"tests.redaction.{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        handler.close()


@pytest.mark.parametrize("token", [AWS_TOKEN])
def test_the_log_filter_redacts_tokens_passed_as_percent_args(captured_logger, token):
    logger, stream = captured_logger
    logger.info("sending task success for %s (attempt %d)", token, 2)
    logger.warning("body was %r", {"taskToken": token})
    output = stream.getvalue()
    assert token not in output
    assert f"sending task success for {REDACTED} (attempt 2)" in output


@pytest.mark.parametrize("token", [AWS_TOKEN])
def test_the_log_filter_redacts_tokens_in_preformatted_messages(captured_logger, token):
    logger, stream = captured_logger
    logger.error(f"callback failed for token {token}")
    logger.info("100% done, nothing secret here")
    output = stream.getvalue()
    assert token not in output
    assert f"callback failed for token {REDACTED}" in output
    assert "100% done, nothing secret here" in output


def test_the_log_filter_keeps_uuids_because_request_and_message_ids_are_uuids(captured_logger):
    # Only emulators issue UUID tokens, and the code never logs a token (the e2e tests check
    # the processes' logs for the emulator's UUID tokens); a labelled one is still redacted.
    logger, stream = captured_logger
    logger.info("ingested request %s from message %s", UUID_TOKEN, UUID_TOKEN.upper())
    logger.warning("body was %r", {"taskToken": UUID_TOKEN})
    output = stream.getvalue()
    assert f"ingested request {UUID_TOKEN} from message {UUID_TOKEN.upper()}" in output
    assert "{'taskToken': '[redacted]'}" in output


def test_the_log_filter_redacts_tracebacks(captured_logger):
    logger, stream = captured_logger
    try:
        raise RuntimeError(f"AWS refused token {AWS_TOKEN}")
    except RuntimeError:
        logger.exception("callback failed")
    output = stream.getvalue()
    assert AWS_TOKEN not in output
    assert "RuntimeError: AWS refused token [redacted]" in output


def test_the_log_filter_leaves_ordinary_records_alone_and_keeps_them():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "approved by %s", ("alice@example.com",), None)
    assert TokenRedactingFilter().filter(record) is True
    assert record.msg == "approved by %s"
    assert record.args == ("alice@example.com",)


def test_the_log_filter_copes_with_broken_format_arguments():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d for " + AWS_TOKEN, (AWS_TOKEN,), None)
    assert TokenRedactingFilter().filter(record) is True
    assert AWS_TOKEN not in str(record.msg)
    assert AWS_TOKEN not in str(record.args)
