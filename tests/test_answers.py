"""The answer validator (approvals/answers.py): typed answers out, or an error per field.

Examples for every field type from a form and from JSON, then the property: for any schema in
the subset and any answers (good ones, hostile ones, mixed), what the validator accepts the
`jsonschema` library accepts too (with its own format checks, not ours), and what it refuses it
refuses with an error on a field of the form, never echoing the value.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from approvals.answers import NON_FIELD_ERRORS, InvalidAnswers, answers_clean, needs_input
from approvals.form_schema import MAX_ANSWER_LENGTH, MAX_PATTERN_INPUT, MAX_SAFE_INTEGER, form_schema_check

FORM: dict[str, Any] = {
    "type": "object",
    "required": ["version", "amount"],
    "properties": {
        "version": {"type": "string", "pattern": r"^v[0-9]+\.[0-9]+$", "maxLength": 20},
        "note": {"type": "string", "minLength": 3, "maxLength": 50},
        "region": {"type": "string", "enum": ["eu", "us"]},
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "date-time"},
        "owner": {"type": "string", "format": "email"},
        "amount": {"type": "number", "minimum": 0, "maximum": 10000},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 50},
        "rollback": {"type": "boolean"},
    },
}


def clean(data: Any, **kwargs: Any) -> dict[str, Any]:
    return answers_clean(FORM, data, **kwargs)


def errors_of(data: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(InvalidAnswers) as info:
        answers_clean(FORM, data, **kwargs)
    return info.value.errors


# --------------------------------------------------------------------------
# From a form
# --------------------------------------------------------------------------


def test_a_filled_in_form_comes_out_typed_as_the_schema_says():
    answers = clean(
        {
            "version": " v1.2 ",
            "note": "ship it",
            "region": "us",
            "day": "2026-11-25",
            "at": "2026-11-25T10:30",
            "owner": "alice@example.com",
            "amount": "5300.50",
            "replicas": ["3"],
            "rollback": "on",
        },
        from_form=True,
    )
    assert answers == {
        "version": "v1.2",
        "note": "ship it",
        "region": "us",
        "day": "2026-11-25",
        "at": "2026-11-25T10:30:00Z",
        "owner": "alice@example.com",
        "amount": 5300.5,
        "replicas": 3,
        "rollback": True,
    }
    assert list(answers) == list(FORM["properties"])


def test_empty_inputs_are_absent_and_an_unticked_box_is_false():
    answers = clean({"version": "v1.0", "amount": "12", "note": "  ", "replicas": ""}, from_form=True)
    assert answers == {"version": "v1.0", "amount": 12, "rollback": False}
    assert type(answers["amount"]) is int


def test_a_zone_less_date_time_from_a_browser_is_read_in_the_approvers_zone():
    zone = timezone(timedelta(hours=2))
    answers = clean({"version": "v1.0", "amount": "1", "at": "2026-11-25T10:30"}, from_form=True, naive_zone=zone)
    assert answers["at"] == "2026-11-25T08:30:00Z"


def test_required_fields_are_required_for_a_success_outcome_only():
    assert errors_of({}, from_form=True) == {"version": "This field is required.", "amount": "This field is required."}
    assert clean({}, from_form=True, outcome="failure") == {"rollback": False}
    # A failure outcome still checks what was filled in.
    assert errors_of({"amount": "-1"}, from_form=True, outcome="failure") == {"amount": "Must be at least 0."}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("version", "1.2", "Does not have the expected form."),
        ("version", "v" + "1" * 30, "Must be at most 20 characters."),
        ("note", "ab", "Must be at least 3 characters."),
        ("region", "EU", "Must be one of the listed choices."),
        ("day", "25/11/2026", "Must be a date (YYYY-MM-DD)."),
        ("day", "2026-02-30", "Must be a date (YYYY-MM-DD)."),
        ("day", "２０２６-11-25", "Must be a date (YYYY-MM-DD)."),
        ("at", "2026-11-25T25:00", "Must be a date and time (YYYY-MM-DDTHH:MM)."),
        ("owner", "alice@", "Must be an email address."),
        ("amount", "NaN", "Must be a number."),
        ("amount", "Infinity", "Must be a number."),
        ("amount", "-inf", "Must be a number."),
        ("amount", "1e400", "Must be a number a double can hold (within ±1.8e308)."),
        ("amount", "1,5", "Must be a number."),
        ("amount", "٥", "Must be a number."),
        ("amount", "0x10", "Must be a number."),
        ("amount", "9" * 41, "Is too long for a number."),
        ("amount", "10000.01", "Must be at most 10000."),
        ("replicas", "3.0", "Must be a whole number."),
        ("replicas", "३", "Must be a whole number."),
        ("replicas", "99999999999999999", "Must be a whole number."),
        ("replicas", "51", "Must be at most 50."),
        ("rollback", "yes please", "Must be ticked or not."),
        ("note", "a\u202eb c", "Contains control or invisible formatting characters."),
        ("note", "abc\x1b[31m", "Contains control or invisible formatting characters."),
        ("note", "abc\x00", "Contains a character that cannot be stored."),
        ("note", "x" * 5000, "Must be at most 50 characters."),
        ("version", ["v1.0", "v2.0"], "Give one value only."),
        ("version", 12, "Must be text."),
    ],
)
def test_a_bad_form_value_is_refused_on_its_field(field, value, message):
    errors = errors_of({"version": "v1.0", "amount": "1", field: value}, from_form=True)
    assert errors == {field: message}


def test_fields_the_form_does_not_have_are_refused_without_naming_them():
    errors = errors_of({"version": "v1.0", "amount": "1", "is_admin": "on", "<b>x</b>": "1"}, from_form=True)
    assert errors == {NON_FIELD_ERRORS: "The answers include 2 fields the form does not have."}


def test_a_multi_line_answer_keeps_its_line_breaks():
    assert clean({"version": "v1.0", "amount": "1", "note": "one\r\ntwo\tthree"}, from_form=True)["note"] == (
        "one\r\ntwo\tthree"
    )


# --------------------------------------------------------------------------
# From JSON
# --------------------------------------------------------------------------


def test_json_answers_are_checked_by_type_and_kept_as_sent():
    answers = clean(
        {"version": "v1.0", "amount": 12.0, "replicas": 4.0, "rollback": False, "note": " padded ", "owner": None},
        from_form=False,
    )
    assert answers == {"version": "v1.0", "note": " padded ", "amount": 12, "replicas": 4, "rollback": False}
    assert type(answers["replicas"]) is int


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount", "12", "Must be a number."),
        ("amount", True, "Must be a number."),
        ("amount", float("nan"), "Must be a number a double can hold (within ±1.8e308)."),
        ("amount", float("inf"), "Must be a number a double can hold (within ±1.8e308)."),
        ("amount", 10**400, "Must be a number a double can hold (within ±1.8e308)."),
        ("amount", [1], "Must be a number."),
        ("replicas", 2.5, "Must be a whole number."),
        ("replicas", float("inf"), "Must be a whole number."),
        ("replicas", 2**53, f"Must be between -{MAX_SAFE_INTEGER:,} and {MAX_SAFE_INTEGER:,}."),
        ("replicas", False, "Must be a whole number."),
        ("rollback", "on", "Must be true or false."),
        ("rollback", 1, "Must be true or false."),
        ("version", 1.0, "Must be a string."),
        ("version", {"$gt": ""}, "Must be a string."),
        ("note", "abc\ud800", "Contains a character that cannot be stored."),
        ("day", "2026-11-25T00:00:00Z", "Must be a date (YYYY-MM-DD)."),
    ],
)
def test_a_bad_json_value_is_refused_on_its_field(field, value, message):
    errors = errors_of({"version": "v1.0", "amount": 1, field: value}, from_form=False)
    assert errors == {field: message}


@pytest.mark.parametrize("data", [None, [], "answers", 3, [["version", "v1.0"]]])
def test_answers_that_are_not_an_object_are_refused(data):
    assert errors_of(data, from_form=False) == {NON_FIELD_ERRORS: "The answers must be a JSON object."}


def test_without_a_form_only_no_answers_are_accepted():
    assert answers_clean(None, {}, from_form=False) == {}
    with pytest.raises(InvalidAnswers):
        answers_clean(None, {"x": 1}, from_form=False)


def test_only_a_success_option_with_required_fields_needs_input():
    assert needs_input(FORM, "success") is True
    assert needs_input(FORM, "failure") is False
    assert needs_input({**FORM, "required": []}, "success") is False
    assert needs_input(None, "success") is False


# --------------------------------------------------------------------------
# The property: accepted means jsonschema accepts; refused means a field error
# --------------------------------------------------------------------------

# Patterns a sender might write, each with a generator of text it matches.
PATTERNS = [
    (r"^[A-Z]{2}-[0-9]{4,8}$", st.from_regex(r"\A[A-Z]{2}-[0-9]{4,8}\Z")),
    (r"^v[0-9]{1,3}\.[0-9]{1,3}$", st.from_regex(r"\Av[0-9]{1,3}\.[0-9]{1,3}\Z")),
    (r"^[a-z0-9_]+$", st.from_regex(r"\A[a-z0-9_]{1,40}\Z")),
    (r"[0-9]", st.from_regex(r"\A[a-z]{0,5}[0-9][a-z]{0,5}\Z")),
]
# Django's email check (the portal's) takes internationalised domains, not local parts.
EMAILS = ["alice@example.com", "Bob.Smith+tag@sub.example.org", "ops@bücher.example"]
# Text without surrounding whitespace (a form strips it) and without control characters.
WORDS = st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=30)
HOSTILE_TEXT = [
    "",
    " ",
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1e-400",
    "9" * 5000,
    "-" + "9" * 30,
    "0.1e1",
    "1_000",
    "٥",
    "１２",
    "\u0000",
    "\ud800",
    "\u202e1",
    "\u200b",
    "on",
    "true",
    "2026-02-30",
    "2026-11-25T24:00",
    "0000-01-01",
    "9999-12-31T23:59:59-23:59",
    "x" * (MAX_ANSWER_LENGTH + 1),
    "a" * (MAX_PATTERN_INPUT + 1),
    "<script>alert(1)</script>",
    "alice@",
    "@example.com",
]
HOSTILE_JSON = [
    None,
    True,
    False,
    0,
    -0.0,
    1.5,
    2**53,
    -(2**53) - 1,
    2**64,
    10**400,
    float("nan"),
    float("inf"),
    -float("inf"),
    1.7976931348623157e308,
    5e-324,
    [],
    {},
    ["on", "on"],
    {"nested": 1},
]
MARKER = "Zq7marker"


def bounded_numbers(integer: bool):
    low = st.none() | (st.integers(-1000, 1000) if integer else st.floats(-1e6, 1e6, allow_nan=False))
    return st.tuples(low, low).map(lambda pair: sorted(pair, key=lambda v: (v is None, v or 0)))


@st.composite
def fields(draw) -> tuple[dict[str, Any], Any]:
    """One field in the subset, and a strategy for good typed values of it."""
    kind = draw(
        st.sampled_from(["string", "text", "enum", "date", "date-time", "email", "number", "integer", "boolean"])
    )
    if kind in ("number", "integer"):
        field: dict[str, Any] = {"type": kind}
        low, high = draw(bounded_numbers(kind == "integer"))
        if low is not None and draw(st.booleans()):
            field["minimum"] = low
        if high is not None and draw(st.booleans()):
            field["maximum"] = high
        if draw(st.booleans()):
            field.pop("minimum", None)
            field.pop("maximum", None)
            field["enum"] = draw(
                st.lists(
                    st.integers(-100, 100)
                    | (st.floats(-100, 100, allow_nan=False) if kind == "number" else st.nothing()),
                    min_size=1,
                    max_size=4,
                    unique_by=float,
                )
            )
        bounds = {"min_value": field.get("minimum"), "max_value": field.get("maximum")}
        if kind == "integer":
            values = st.integers(
                min_value=math.ceil(bounds["min_value"]) if bounds["min_value"] is not None else -MAX_SAFE_INTEGER,
                max_value=math.floor(bounds["max_value"]) if bounds["max_value"] is not None else MAX_SAFE_INTEGER,
            )
        else:
            values = st.floats(**bounds, allow_nan=False, allow_infinity=False)
            whole_low = math.ceil(bounds["min_value"]) if bounds["min_value"] is not None else -(10**12)
            whole_high = math.floor(bounds["max_value"]) if bounds["max_value"] is not None else 10**12
            if whole_low <= whole_high:
                values |= st.integers(min_value=whole_low, max_value=whole_high)
        if "enum" in field:
            values = st.sampled_from(field["enum"])
        return field, values
    if kind == "boolean":
        return {"type": "boolean"}, st.booleans()
    if kind == "enum":
        choices = draw(st.lists(WORDS, min_size=1, max_size=5, unique=True))
        return {"type": "string", "enum": choices}, st.sampled_from(choices)
    if kind == "date":
        return {"type": "string", "format": "date"}, st.dates().map(lambda day: day.isoformat())
    if kind == "date-time":
        zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))])
        moments = st.datetimes(
            min_value=datetime(1000, 1, 2),  # noqa: DTZ001 - hypothesis takes naive bounds and adds the zone
            max_value=datetime(9999, 12, 30),  # noqa: DTZ001
            timezones=zones,
        )
        return {"type": "string", "format": "date-time"}, moments.map(lambda moment: moment.isoformat())
    if kind == "email":
        return {"type": "string", "format": "email"}, st.sampled_from(EMAILS)
    if kind == "string" and draw(st.booleans()):
        pattern, matching = draw(st.sampled_from(PATTERNS))
        return {"type": "string", "pattern": pattern, "maxLength": 64}, matching.filter(lambda text: len(text) <= 64)
    low = draw(st.integers(0, 5))
    high = draw(st.integers(max(low, 1), 60) if kind == "string" else st.just(MAX_ANSWER_LENGTH))
    field = {"type": "string", "minLength": low, "maxLength": high}
    return field, st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=max(low, 1), max_size=high)


@st.composite
def schemas(draw) -> tuple[dict[str, Any], dict[str, Any]]:
    names = draw(st.lists(st.from_regex(r"\A[A-Za-z][A-Za-z0-9_]{0,10}\Z"), min_size=1, max_size=6, unique=True))
    properties, values = {}, {}
    for name in names:
        properties[name], values[name] = draw(fields())
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    if required:
        schema["required"] = required
    form_schema_check(schema)  # the generator stays inside the subset
    return schema, values


def as_form_text(field: dict[str, Any], value: Any) -> Any:
    """What a browser sends for a good typed value."""
    if field["type"] == "boolean":
        return "on" if value else None
    if field.get("format") == "date-time" and isinstance(value, str):
        return value  # RFC 3339 with a zone is accepted as well as the browser's zone-less form
    return repr(value) if isinstance(value, float) else str(value)


@st.composite
def answers(draw, schema: dict[str, Any], values: dict[str, Any], from_form: bool) -> tuple[dict[str, Any], bool]:
    """Answers to a schema: each field good, absent or hostile; perhaps unknown fields. And
    whether every field given is good (then nothing good may be refused)."""
    data: dict[str, Any] = {}
    all_good = True
    for name, field in schema["properties"].items():
        how = draw(st.sampled_from(["good", "good", "absent", "hostile"]))
        if how == "good":
            value = draw(values[name])
            data[name] = as_form_text(field, value) if from_form else value
            if data[name] is None:
                del data[name]
        elif how == "hostile":
            all_good = False
            if from_form:
                data[name] = draw(
                    st.sampled_from(HOSTILE_TEXT)
                    | st.text(max_size=50).map(lambda text: text + MARKER)
                    | st.lists(st.sampled_from(HOSTILE_TEXT), max_size=3)
                    | st.sampled_from(HOSTILE_JSON)
                )
            else:
                data[name] = draw(
                    st.sampled_from(HOSTILE_JSON)
                    | st.sampled_from(HOSTILE_TEXT)
                    | st.text(max_size=50).map(lambda text: text + MARKER)
                )
    if draw(st.integers(0, 9)) == 0:
        all_good = False
        data[draw(st.sampled_from(["__all__", "csrfmiddlewaretoken", MARKER, "constructor", ""]))] = MARKER
    return data, all_good


def independent_format_checker() -> jsonschema.FormatChecker:
    """jsonschema's own format checks (date, email), plus RFC 3339 for date-time, which
    jsonschema checks only with an extra package: written here, not taken from the portal."""
    checker = jsonschema.FormatChecker(formats=["date", "email"])
    rfc3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.ASCII)

    @checker.checks("date-time")
    def _datetime(value: object) -> bool:
        if not isinstance(value, str) or not rfc3339.fullmatch(value):
            return False
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True

    return checker


FORMATS = independent_format_checker()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), from_form=st.booleans(), outcome=st.sampled_from(["success", "success", "failure"]))
def test_what_the_validator_accepts_jsonschema_accepts_and_what_it_refuses_has_a_field_error(data, from_form, outcome):
    schema, values = data.draw(schemas())
    submitted, all_good = data.draw(answers(schema, values, from_form))
    required = set(schema.get("required", ())) if outcome == "success" else set()
    try:
        cleaned = answers_clean(schema, submitted, from_form=from_form, outcome=outcome)
    except InvalidAnswers as refusal:
        event("refused")
        errors = refusal.errors
        assert errors and set(errors) <= {*schema["properties"], NON_FIELD_ERRORS}
        assert all(isinstance(message, str) and message.endswith(".") for message in errors.values())
        assert not any(MARKER in message for message in errors.values())
        # Nothing good is refused: an answer made only of good values fails only for a missing one.
        if all_good:
            assert all(message == "This field is required." for message in errors.values()), errors
            assert set(errors) <= required - set(submitted)
        return
    event("accepted")
    assert set(cleaned) <= set(schema["properties"]) and required <= set(cleaned)
    # Typed as the schema says, and storable as JSON.
    for name, value in cleaned.items():
        kind = schema["properties"][name]["type"]
        expected = {"string": str, "boolean": bool, "integer": int, "number": (int, float)}[kind]
        assert isinstance(value, expected) and (kind == "boolean" or not isinstance(value, bool)), (name, value)
    json.dumps(cleaned, allow_nan=False)
    checked = schema if outcome == "success" else {key: item for key, item in schema.items() if key != "required"}
    jsonschema.Draft202012Validator(checked, format_checker=FORMATS).validate(cleaned)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_good_answers_from_a_form_and_from_json_come_out_the_same(data):
    schema, values = data.draw(schemas())
    typed = {name: data.draw(values[name]) for name in schema["properties"]}
    as_json = answers_clean(schema, typed, from_form=False)
    texts = {name: as_form_text(schema["properties"][name], value) for name, value in typed.items()}
    as_form = answers_clean(schema, {name: text for name, text in texts.items() if text is not None}, from_form=True)
    for name, field in schema["properties"].items():
        if field["type"] == "number":
            assert as_form[name] == pytest.approx(as_json[name], rel=1e-15)
        else:
            assert as_form[name] == as_json[name], name
