"""The message contract's `options`, `multiple` and `form` (docs/approver-input.md).

Pure parsing tests (no database) for every field type, every constraint and every refusal
with its path, then the ingest service storing what arrived.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from approvals import services
from approvals.contract import DEFAULT_OPTIONS, ApprovalOption, ContractError, parse_message, stored_options
from approvals.form_schema import MAX_FIELDS, MAX_PATTERN_INPUT, META_SCHEMA, pattern_problem

TOKEN = "AAAAKgAAAAIAAAAAAAAAAb6K2ZBLvfIe0" + "x" * 600
APPROVE = {"id": "approve", "label": "Approve", "outcome": "success"}
REJECT = {"id": "reject", "label": "Reject", "outcome": "failure"}
MACHINE = "arn:aws:states:eu-west-1:123456789012:stateMachine:datacenter-choice"
EXECUTION = "arn:aws:states:eu-west-1:123456789012:execution:datacenter-choice:run-1"

FULL_FORM: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "title": "Release details",
    "description": "Filled in by the approver.",
    "required": ["version", "window"],
    "additionalProperties": False,
    "properties": {
        "version": {"type": "string", "title": "Version", "pattern": r"^v\d+\.\d+\.\d+$", "maxLength": 32},
        "note": {"type": "string", "minLength": 3, "maxLength": 500, "description": "Why"},
        "region": {"type": "string", "enum": ["eu-west-1", "us-east-1"], "default": "eu-west-1"},
        "window": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "date-time", "default": "2026-11-25T10:00:00Z"},
        "owner": {"type": "string", "format": "email"},
        "amount": {"type": "number", "minimum": 0, "maximum": 1e6, "default": 12.5},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 50, "default": 3},
        "size": {"type": "integer", "enum": [1, 2, 4]},
        "rollback": {"type": "boolean", "default": True},
    },
}


def parse(**fields: Any):
    return parse_message(json.dumps({"taskToken": TOKEN, **fields}))


def refused(code: str, field: str, **fields: Any) -> ContractError:
    with pytest.raises(ContractError) as info:
        parse(**fields)
    error = info.value
    assert (error.code, error.field) == (code, field), error.message
    assert f"'{field}'" in error.message
    assert TOKEN not in error.message
    assert error.__context__ is None and error.__cause__ is None
    return error


def form_with(**field: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"x": field}}


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def test_a_message_without_options_keeps_todays_approve_and_reject():
    message = parse(title="Deploy")
    assert message.options == () and message.multiple is False and message.form is None
    assert [(option.id, option.outcome, option.error) for option in DEFAULT_OPTIONS] == [
        ("approve", "success", ""),
        ("reject", "failure", "ApprovalDenied"),
    ]


def test_options_are_parsed_with_labels_cleaned_and_the_default_error_filled_in():
    message = parse(
        options=[
            {"id": "eu", "label": "  Deploy to\n EU ", "outcome": "success", "default": True},
            {"id": "us", "label": "Deploy to US", "outcome": "success"},
            {"id": "later", "label": "Not now", "outcome": "failure", "error": "Release.Postponed"},
            {"id": "no", "label": "Never", "outcome": "failure"},
        ],
        multiple=None,
    )
    assert message.options == (
        ApprovalOption(id="eu", label="Deploy to EU", outcome="success", default=True),
        ApprovalOption(id="us", label="Deploy to US", outcome="success"),
        ApprovalOption(id="later", label="Not now", outcome="failure", error="Release.Postponed"),
        ApprovalOption(id="no", label="Never", outcome="failure", error="ApprovalDenied"),
    )
    assert message.multiple is False
    never = {"id": "no", "label": "Never", "outcome": "failure", "error": "ApprovalDenied"}
    assert message.options[3].as_json() == never
    assert message.options[0].as_json() == {"id": "eu", "label": "Deploy to EU", "outcome": "success", "default": True}


def test_multiple_lets_several_success_options_be_defaults():
    options = [{**APPROVE, "id": "a", "default": True}, {**APPROVE, "id": "b", "default": True}, REJECT]
    assert parse(options=options, multiple=True).multiple is True


def test_a_message_may_offer_ten_options_and_an_error_name_of_256_characters():
    options = [{**APPROVE, "id": f"o{index}"} for index in range(9)] + [{**REJECT, "error": "E" * 256}]
    assert len(parse(options=options).options) == 10


def test_multiple_without_options_means_nothing_so_old_messages_stay_valid():
    assert parse(multiple="anything").multiple is False


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        ("approve", "options", "got string"),
        ({"id": "a"}, "options", "got object"),
        ([APPROVE], "options", "2 to 10"),
        ([{**APPROVE, "id": f"o{index}"} for index in range(11)], "options", "got a list of 11"),
        ([APPROVE, "reject"], "options[1]", "must be an object"),
        ([APPROVE, {**REJECT, "colour": "red"}], "options[1]", "may only contain"),
        ([APPROVE, {**REJECT, "id": ""}], "options[1].id", "1 to 64"),
        ([APPROVE, {**REJECT, "id": "no way"}], "options[1].id", "letters, digits"),
        ([APPROVE, {**REJECT, "id": "-no"}], "options[1].id", "starting with"),
        ([APPROVE, {**REJECT, "id": "x" * 65}], "options[1].id", "1 to 64"),
        ([APPROVE, {**REJECT, "id": "rejéct"}], "options[1].id", "letters, digits"),
        ([APPROVE, {**REJECT, "id": 7}], "options[1].id", "letters, digits"),
        ([APPROVE, {**REJECT, "id": "approve"}], "options[1].id", "unique"),
        ([APPROVE, {**REJECT, "label": None}], "options[1].label", "must be a string"),
        ([APPROVE, {**REJECT, "label": " \n "}], "options[1].label", "1 to 80"),
        ([APPROVE, {**REJECT, "label": "x" * 81}], "options[1].label", "1 to 80"),
        ([APPROVE, {**REJECT, "label": "Reject\u202e"}], "options[1].label", "U+202E"),
        ([APPROVE, {**REJECT, "label": "Re\u200bject"}], "options[1].label", "U+200B"),
        ([APPROVE, {**REJECT, "outcome": "maybe"}], "options[1].outcome", '"success" or "failure"'),
        ([APPROVE, {**REJECT, "outcome": None}], "options[1].outcome", '"success" or "failure"'),
        ([{**APPROVE, "error": "Oops"}, REJECT], "options[0].error", 'only for options with outcome "failure"'),
        ([APPROVE, {**REJECT, "error": ""}], "options[1].error", "1 to 256"),
        ([APPROVE, {**REJECT, "error": "E" * 257}], "options[1].error", "1 to 256"),
        ([APPROVE, {**REJECT, "error": "States.Timeout"}], "options[1].error", "not with 'States.'"),
        ([APPROVE, {**REJECT, "error": "Denied by\nme"}], "options[1].error", "letters, digits"),
        ([APPROVE, {**REJECT, "error": 42}], "options[1].error", "letters, digits"),
        ([APPROVE, {**REJECT, "error": "ApprovalCancelled"}], "options[1].error", "portal's own errors"),
        ([APPROVE, {**REJECT, "error": "ApprovalExpired"}], "options[1].error", "portal's own errors"),
        ([APPROVE, {**REJECT, "default": "yes"}], "options[1].default", "true or false"),
        ([REJECT, {**REJECT, "id": "no"}], "options", 'at least one option with outcome "success"'),
        ([{**APPROVE, "default": True}, {**REJECT, "default": True}], "options", "at most one option"),
    ],
)
def test_bad_options_are_refused_with_their_path(options, field, words):
    error = refused("bad_options", field, options=options)
    assert words in error.message


def test_multiple_must_be_a_boolean_and_needs_two_success_options():
    refused("wrong_type", "multiple", options=[APPROVE, REJECT], multiple="yes")
    error = refused("bad_options", "multiple", options=[APPROVE, REJECT], multiple=True)
    assert "at least two" in error.message
    options = [APPROVE, {**APPROVE, "id": "b"}, {**REJECT, "default": True}]
    assert "only mark success options" in refused("bad_options", "options", options=options, multiple=True).message


# --------------------------------------------------------------------------
# The form: accepted
# --------------------------------------------------------------------------


def test_a_form_using_every_field_type_and_constraint_is_kept_as_it_arrived():
    form = copy.deepcopy(FULL_FORM)
    message = parse(options=[APPROVE, REJECT], form=form)
    assert message.form == FULL_FORM


@pytest.mark.parametrize(
    "field",
    [
        {"type": "string"},
        {"type": "string", "minLength": 0, "maxLength": 2000},
        {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4,8}$"},
        {"type": "string", "pattern": r"(\d{1,3}\.){3}\d{1,3}", "maxLength": MAX_PATTERN_INPUT},
        {"type": "string", "pattern": r"^\d+-\d+$"},
        {"type": "string", "format": "date", "default": "2026-02-28"},
        {"type": "string", "format": "date-time", "default": "2026-11-25T10:00:00.123+05:30"},
        {"type": "string", "format": "email", "default": "alice@example.com"},
        {"type": "string", "enum": ["a", "b"], "default": "b"},
        {"type": "string", "description": "Line one\nline two"},
        {"type": "number", "minimum": -1.5, "maximum": 1.5, "default": 0},
        {"type": "number", "enum": [0.5, 1, 2.25]},
        {"type": "integer", "minimum": 1, "maximum": 1, "default": 1},
        {"type": "integer", "default": 9_007_199_254_740_991},
        {"type": "integer", "enum": [1, 2], "default": 2.0},
        {"type": "boolean", "default": False},
        {"type": "boolean", "title": "Roll back on failure?"},
    ],
)
def test_each_field_type_and_constraint_of_the_subset_is_accepted(field):
    assert parse(form=form_with(**field)).form["properties"]["x"] == field


def test_a_form_may_have_thirty_fields_and_declare_draft_07():
    fields = {f"f{index}": {"type": "boolean"} for index in range(MAX_FIELDS)}
    form = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": fields}
    assert len(parse(form=form).form["properties"]) == MAX_FIELDS


def test_the_subset_is_itself_a_valid_json_schema_and_accepts_the_documented_example():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(META_SCHEMA)
    jsonschema.validate(FULL_FORM, META_SCHEMA)


# --------------------------------------------------------------------------
# The form: refused, with the path
# --------------------------------------------------------------------------

BAD_FORMS = [
    ("a string", "form", "must be a JSON Schema object"),
    ([], "form", "got array"),
    ({"properties": {"x": {"type": "string"}}}, "form.type", "is required"),
    ({"type": "array", "properties": {"x": {"type": "string"}}}, "form.type", 'must be "object"'),
    ({"type": "object"}, "form.properties", "is required"),
    ({"type": "object", "properties": {}}, "form.properties", "at least 1 field"),
    ({"type": "object", "properties": []}, "form.properties", "must be an object"),
    (
        {"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(MAX_FIELDS + 1)}},
        "form.properties",
        "at most 30 fields",
    ),
    ({"type": "object", "properties": {"a b": {"type": "string"}}}, "form.properties", "letters, digits"),
    ({"type": "object", "properties": {"1a": {"type": "string"}}}, "form.properties", "starting with a letter"),
    ({"type": "object", "properties": {"x" * 65: {"type": "string"}}}, "form.properties", "1 to 64"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "$ref": "#/x"}, "form", "'$ref'"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "$defs": {}}, "form", "'$defs'"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "oneOf": []}, "form", "'oneOf'"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "color": 1}, "form", "a key the form subset"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "required": "x"}, "form.required", "a list"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x", "x"]}, "form.required", "twice"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["y"]}, "form.required[0]", "does not"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "required": [3]}, "form.required[0]", "string"),
    (
        {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": True},
        "form.additionalProperties",
        "may only be false",
    ),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "$schema": "urn:x"}, "form.$schema", "one of"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "title": 5}, "form.title", "a string"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "title": "x" * 201}, "form.title", "at most 200"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "title": "a\u200bb"}, "form.title", "U+200B"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "description": "\u202e"}, "form.description", "202E"),
    ({"type": "object", "properties": {"x": "string"}}, "form.properties.x", "must be an object"),
    ({"type": "object", "properties": {"x": {}}}, "form.properties.x.type", "is required"),
]

BAD_FIELDS = [
    ({"type": "object"}, "form.properties.x.type", "nested objects and arrays are refused"),
    ({"type": "array"}, "form.properties.x.type", "nested objects and arrays are refused"),
    ({"type": ["string", "null"]}, "form.properties.x.type", "one of"),
    ({"type": "null"}, "form.properties.x.type", "one of"),
    ({"type": "string", "$ref": "#/$defs/a"}, "form.properties.x", "'$ref': nesting and references"),
    ({"type": "string", "properties": {}}, "form.properties.x", "'properties': nesting"),
    ({"type": "string", "items": {}}, "form.properties.x", "'items': nesting"),
    ({"type": "string", "anyOf": []}, "form.properties.x", "'anyOf'"),
    ({"type": "number", "exclusiveMinimum": 0}, "form.properties.x", "'exclusiveMinimum', which the form subset"),
    ({"type": "number", "multipleOf": 2}, "form.properties.x", "'multipleOf'"),
    ({"type": "string", "const": "a"}, "form.properties.x", "'const'"),
    ({"type": "string", "minimum": 1}, "form.properties.x", "'minimum'"),
    ({"type": "number", "pattern": "a"}, "form.properties.x", "'pattern'"),
    ({"type": "boolean", "enum": [True]}, "form.properties.x", "'enum'"),
    ({"type": "string", "x-widget": "textarea"}, "form.properties.x", "a key the form subset does not support"),
    ({"type": "string", "title": 3}, "form.properties.x.title", "must be a string"),
    ({"type": "string", "title": "x" * 201}, "form.properties.x.title", "at most 200 characters"),
    ({"type": "string", "title": "a\nb"}, "form.properties.x.title", "U+000A"),
    ({"type": "string", "description": "x" * 1001}, "form.properties.x.description", "at most 1,000"),
    ({"type": "string", "description": "\u2066x"}, "form.properties.x.description", "U+2066"),
    ({"type": "string", "default": "a\u0000b"}, "form.properties.x", None),
    ({"type": "string", "minLength": -1}, "form.properties.x.minLength", "at least 0"),
    ({"type": "string", "minLength": 1.5}, "form.properties.x.minLength", "a whole number"),
    ({"type": "string", "maxLength": 2001}, "form.properties.x.maxLength", "at most 2000"),
    ({"type": "string", "maxLength": "10"}, "form.properties.x.maxLength", "a whole number"),
    ({"type": "string", "minLength": 5, "maxLength": 4}, "form.properties.x.minLength", "not be greater"),
    ({"type": "string", "format": "uri"}, "form.properties.x.format", '"date", "date-time", "email"'),
    ({"type": "string", "format": "date", "default": "2026-02-30"}, "form.properties.x.default", "a date"),
    ({"type": "string", "format": "date", "default": "25/11/2026"}, "form.properties.x.default", "a date"),
    ({"type": "string", "format": "date-time", "default": "tomorrow"}, "form.properties.x.default", "date and time"),
    ({"type": "string", "format": "email", "default": "not-an-email"}, "form.properties.x.default", "an email"),
    ({"type": "string", "default": 5}, "form.properties.x.default", "must be a string"),
    ({"type": "string", "minLength": 3, "default": "ab"}, "form.properties.x.default", "at least 3 characters"),
    ({"type": "string", "enum": []}, "form.properties.x.enum", "at least 1 value"),
    ({"type": "string", "enum": ["a", "a"]}, "form.properties.x.enum", "twice"),
    ({"type": "string", "enum": ["a", 1]}, "form.properties.x.enum[1]", "must be a string"),
    ({"type": "string", "enum": ["a\u202e"]}, "form.properties.x.enum[0]", "U+202E"),
    ({"type": "string", "enum": [str(i) for i in range(101)]}, "form.properties.x.enum", "at most 100"),
    ({"type": "string", "enum": ["a", "b"], "default": "c"}, "form.properties.x.default", "listed choices"),
    ({"type": "string", "enum": ["ab", "a"], "minLength": 2}, "form.properties.x.enum[1]", "at least 2"),
    ({"type": "number", "minimum": "0"}, "form.properties.x.minimum", "must be a number"),
    ({"type": "number", "maximum": True}, "form.properties.x.maximum", "must be a number"),
    ({"type": "number", "minimum": 2, "maximum": 1}, "form.properties.x.minimum", "not be greater"),
    ({"type": "number", "default": "1"}, "form.properties.x.default", "must be a number"),
    ({"type": "number", "maximum": 10, "default": 11}, "form.properties.x.default", "at most 10"),
    ({"type": "number", "minimum": 0.5, "default": 0}, "form.properties.x.default", "at least 0.5"),
    ({"type": "number", "enum": [1, "2"]}, "form.properties.x.enum[1]", "must be a number"),
    ({"type": "integer", "default": 1.5}, "form.properties.x.default", "a whole number"),
    ({"type": "integer", "default": 2**53}, "form.properties.x.default", "between -9,007,199,254,740,991"),
    ({"type": "integer", "enum": [1, 2.5]}, "form.properties.x.enum[1]", "a whole number"),
    ({"type": "boolean", "default": "true"}, "form.properties.x.default", "true or false"),
    ({"type": "string", "pattern": ""}, "form.properties.x.pattern", "at least 1 character"),
    ({"type": "string", "pattern": "x" * 201}, "form.properties.x.pattern", "at most 200"),
    ({"type": "string", "pattern": "(unclosed"}, "form.properties.x.pattern", "Python's re module"),
    ({"type": "string", "pattern": "[z-a]"}, "form.properties.x.pattern", "Python's re module"),
    ({"type": "string", "pattern": "a{99999999999}"}, "form.properties.x.pattern", "Python's re module"),
    ({"type": "string", "pattern": "a\u0000"}, "form.properties.x", None),
    ({"type": "string", "pattern": "^x", "maxLength": 257}, "form.properties.x.maxLength", "at most 256"),
    ({"type": "string", "pattern": "^a+$", "default": "a" * 257}, "form.properties.x.default", "at most 256"),
    ({"type": "string", "pattern": "^[0-9]+$", "default": "12a"}, "form.properties.x.default", "expected form"),
]


@pytest.mark.parametrize(("form", "field", "words"), BAD_FORMS)
def test_a_form_outside_the_subset_is_refused_with_its_path(form, field, words):
    error = refused("bad_form", field, form=form)
    assert words in error.message


@pytest.mark.parametrize(("field", "path", "words"), BAD_FIELDS)
def test_a_field_outside_the_subset_is_refused_with_its_path(field, path, words):
    if words is None:  # a NUL is refused before the subset is even checked
        with pytest.raises(ContractError) as info:
            parse(form=form_with(**field))
        assert info.value.code == "bad_value" and info.value.field == "form"
        return
    error = refused("bad_form", path, form=form_with(**field))
    assert words in error.message


def test_a_bad_field_is_named_by_its_path_in_a_larger_form():
    form = copy.deepcopy(FULL_FORM)
    form["properties"]["amount"]["minimum"] = "zero"
    error = refused("bad_form", "form.properties.amount.minimum", form=form)
    assert error.message == "field 'form.properties.amount.minimum' must be a number"


def test_refusals_name_the_unknown_keyword_only_when_it_is_json_schemas_own():
    secret = "AKIA" + "Z" * 16
    error = refused("bad_form", "form.properties.x", form=form_with(type="string", **{secret: 1}))
    assert secret not in error.message
    error = refused("bad_form", "form.properties", form={"type": "object", "properties": {secret + " ": {}}})
    assert secret not in error.message


def test_an_error_never_echoes_a_value_from_the_form():
    marker = "S3cr3t-marker"
    for form in (
        form_with(type="string", default=5, title=marker),
        form_with(type="string", format="date", default=f"{marker}"),
        form_with(type="string", enum=[marker, marker]),
        form_with(type="string", pattern=f"({marker}+)+"),
        {"type": "object", "properties": {"x": {"type": "string"}}, "required": [marker]},
    ):
        with pytest.raises(ContractError) as info:
            parse(form=form)
        assert marker not in info.value.message and marker not in repr(info.value)


@pytest.mark.parametrize(
    "pattern",
    [
        r"^(a+)+$",
        r"(a*)*b",
        r"(x+x+)+y",
        r"(a|aa)+$",
        r"(a|a)*",
        r"^(\w+\s?)*$",
        r"(a?){30}a{30}",
        r"((a?){4}){5}",
        r"(.*a){20}",
        r"\S+@\S+\.\S+$",
        r"a*a*a*a*b",
        "a?" * 20,
        r"(a)\1",
        r"(?=a)a",
        r"(?<!a)b",
        r"(?(1)a|b)",
    ],
)
def test_catastrophic_and_unsupported_patterns_are_refused(pattern):
    assert pattern_problem(pattern) is not None
    refused("bad_form", "form.properties.x.pattern", form=form_with(type="string", pattern=pattern))


# Each of these passed and then held one process (a worker checking a default at ingest, a web
# process checking an answer) for minutes or hours on one answer within the limit: the
# alternatives of an alternation and an optional separator between repetitions were not
# counted (^(?:a|aa){16}(?:a|aa){16}c ran over 245 s on "a" * 256, ^\w*-?\w*-?\w*-?\w*$ 2.3 s).
@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param(r"^(?:a|aa){16}(?:a|aa){16}c", id="an alternation repeated a fixed number of times"),
        pytest.param(r"(a|a?){16}c", id="an alternation with an optional branch"),
        pytest.param("^" + "(?:a|aa)" * 24 + "c", id="alternations side by side"),
        pytest.param(r"^(?:-|){16}.+(?:-|){16}c", id="an alternation with an empty branch"),
        pytest.param(r"^(?>(?:a|aa){8}(?:a|aa){8}(?:a|aa){8}(?:a|aa){8}c)", id="alternations in an atomic group"),
        pytest.param(r"^\w*-?\w*-?\w*-?\w*$", id="optional separators between repetitions"),
        pytest.param(r"^\d*,?\d*,?\d*,?\d*,?\d*x", id="optional commas between digit runs"),
        pytest.param(r"^a*b{0,3}a*b{0,3}a*b{0,3}a*c", id="separators that may be absent"),
        pytest.param(r"^a*x{0}a*x{0}a*x{0}a*x{0}a*c", id="a separator repeated zero times"),
    ],
)
def test_patterns_whose_alternations_or_optional_separators_multiply_backtracking_are_refused(pattern):
    assert pattern_problem(pattern) is not None
    # The default is checked against its own pattern at ingest: the pattern's refusal comes first.
    form = form_with(type="string", pattern=pattern, default="a" * (MAX_PATTERN_INPUT - 1) + "!")
    refused("bad_form", "form.properties.x.pattern", form=form)


# One such pattern takes about a second on a 256-character answer that does not match; each
# field's answer is checked, so 30 of them made one decision cost 35 s of a web process.
SLOWEST_PATTERN = r"[a-z](?:(?:a|b)*[ab]*?(?:a|b){1,2}\w{1,2}(a|\d){16})"


def test_a_form_whose_patterns_together_may_take_longer_than_one_pattern_may_is_refused():
    assert pattern_problem(SLOWEST_PATTERN) is None
    parse(form={"type": "object", "properties": {"a": {"type": "string", "pattern": SLOWEST_PATTERN}}})
    fields = {f"f{index}": {"type": "string", "pattern": SLOWEST_PATTERN} for index in range(MAX_FIELDS)}
    error = refused("bad_form", "form.properties.f1.pattern", form={"type": "object", "properties": fields})
    assert "together" in error.message


def test_a_form_of_ordinary_patterns_in_every_field_is_accepted():
    fields = {f"f{index}": {"type": "string", "pattern": r"^v\d+\.\d+\.\d+$"} for index in range(MAX_FIELDS)}
    assert len(parse(form={"type": "object", "properties": fields}).form["properties"]) == MAX_FIELDS


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[A-Z]{2}-\d{4,8}$",
        r"^v\d+\.\d+\.\d+$",
        r"(\d{1,3}\.){3}\d{1,3}",
        r"^-?\d+(\.\d{1,2})?$",
        r"(foo|bar){2}",
        r"^(?:DEV|PROD|TEST)-\d{1,6}$",
        r"^(?:Mr|Mrs|Ms)\.? [A-Z][a-z]+$",
        r"^\w+-?\d+$",
    ],
)
def test_ordinary_patterns_are_safe(pattern):
    assert pattern_problem(pattern) is None


# --------------------------------------------------------------------------
# Stored as they arrived
# --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_ingested_request_keeps_its_options_and_form_as_they_arrived():
    options = [
        {"id": "eu", "label": "Deploy to EU", "outcome": "success", "default": True},
        {"id": "us", "label": "Deploy to US", "outcome": "success"},
        {"id": "no", "label": "Do not deploy", "outcome": "failure"},
    ]
    body = {"taskToken": str(uuid.uuid4()), "title": "Release", "options": options, "multiple": True}
    request, created = services.approval_request_ingest(message=parse_message(json.dumps({**body, "form": FULL_FORM})))
    assert created
    request.refresh_from_db()
    assert request.options == [*options[:2], {**options[2], "error": "ApprovalDenied"}]
    assert request.multiple_options is True
    assert request.form_schema == FULL_FORM
    assert stored_options(request.options) == parse_message(json.dumps(body)).options


@pytest.mark.django_db
def test_a_request_without_options_or_form_stores_neither():
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps({"taskToken": str(uuid.uuid4())})))
    request.refresh_from_db()
    assert (request.options, request.multiple_options, request.form_schema) == (None, False, None)
    assert stored_options(request.options) == DEFAULT_OPTIONS


# --------------------------------------------------------------------------
# The documented examples
# --------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"


def json_blocks(text: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)


def test_the_contracts_full_example_with_options_and_a_form_is_accepted():
    section = (DOCS / "message-contract.md").read_text().split("## Options and a form", 1)[1]
    state_body = json.loads(json_blocks(section)[0])
    # What Step Functions sends for the state's MessageBody: ".$" keys arrive resolved.
    body = {key.removesuffix(".$"): value for key, value in state_body.items()}
    body.update(taskToken=TOKEN, details={"service": "billing"}, execution=EXECUTION, stateMachine=MACHINE, state="S")
    message = parse_message(json.dumps(body))
    assert [option.id for option in message.options] == ["eu", "us", "postpone", "reject"]
    assert message.multiple is True and message.form == state_body["form"]


def test_the_examples_in_the_options_and_forms_page_are_accepted():
    blocks = json_blocks((DOCS / "approver-input.md").read_text())
    assert len(blocks) == 4
    fields = json.loads("{" + ", ".join(blocks[:2]) + "}")
    message = parse(**fields)
    assert message.options[2].error == "Release.Postponed" and len(message.form["properties"]) == 8


def test_the_state_machine_example_in_the_docs_is_the_shipped_one():
    # docs/approver-input.md "What Step Functions receives": an abridged copy of deploy/state-machine-input.asl.json.
    blocks = json_blocks((DOCS / "approver-input.md").read_text())
    states = json.loads("{" + blocks[2] + "}")
    shipped = json.loads((DOCS.parent / "deploy" / "state-machine-input.asl.json").read_text())["States"]
    assert states["HowToRelease"] == shipped["HowToRelease"]
    body = states["WaitForApproval"]["Parameters"]["MessageBody"]
    shipped_body = shipped["WaitForApproval"]["Parameters"]["MessageBody"]
    assert (body["options"], body["form"]) == (shipped_body["options"], shipped_body["form"])
    output = json.loads(blocks[3])
    assert output["choice"] == "deploy_canary" and output["input"]["replicas"] == 5


PATTERN_PIECES = [
    "a",
    "b",
    "\\d",
    "\\w",
    "\\S",
    ".",
    "[a-z]",
    "[^@]",
    "(",
    ")",
    "(?:",
    "(?=",
    "(?P<n>",
    "|",
    "+",
    "*",
    "?",
]
PATTERN_PIECES += ["{2}", "{1,3}", "{2,}", "{0,300}", "+?", "*+", "^", "$", "\\1", "\\", "[", "]", "-", "é", "\u4e2d"]


@settings(max_examples=300, deadline=None)
@given(pattern=st.lists(st.sampled_from(PATTERN_PIECES), max_size=24).map("".join) | st.text(max_size=60))
def test_any_pattern_is_judged_without_crashing_and_an_accepted_one_compiles(pattern):
    problem = pattern_problem(pattern)
    assert problem is None or (isinstance(problem, str) and problem)
    if problem is None:
        re.compile(pattern)
