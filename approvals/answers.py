"""The approver's answers to a request's form: checked against the schema the message carried.

:func:`answers_clean` takes the stored schema (``ApprovalRequest.form_schema``, in the subset
:mod:`approvals.form_schema` defines) and what a client submitted: the strings of an HTML form
(``from_form=True``) or a JSON object from an API. It trusts nothing the client sent and
returns the answers typed as the schema says, or raises :class:`InvalidAnswers` with one
message per field. Pure: no database, no request.

What comes out (docs/approver-input.md):

- ``integer`` → ``int``, within ±(2**53 − 1) (larger integers change on their way through
  JSON parsers that read doubles);
- ``number`` → a JSON number: ``int`` when the value is whole and within that range, else a
  finite ``float`` (a double, as Step Functions reads numbers; ``Decimal`` cannot travel as JSON);
- ``boolean`` → ``bool`` (from a form: a ticked box sends "on", an unticked one nothing: false);
- ``string`` → ``str``; ``format: date`` → ``"YYYY-MM-DD"``; ``format: date-time`` →
  RFC 3339 in UTC (``"2026-11-25T10:00:00Z"``; a browser's zone-less value is read in
  ``naive_zone``, UTC unless the caller knows the approver's); ``format: email`` → as typed;
- a field left empty is absent (a default only fills the page's input, not the answer).

From a form every value is stripped and an empty one is absent; from JSON, ``null`` is absent
and strings are kept as sent. Unknown fields are refused; the schema's ``required`` applies to
success outcomes only (a failure option takes whatever was filled in, checked the same way).
Every string is bounded before it is matched (:func:`approvals.form_schema.max_length`: at
most 2,000 characters, 256 for a field with a pattern), so a pattern never runs on more.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, timezone
from typing import Any

from approvals.form_schema import (
    BIDI_CONTROLS,
    MAX_SAFE_INTEGER,
    field_value_problem,
    max_length,
    parse_date,
    parse_datetime,
    storable_text,
)

__all__ = ["NON_FIELD_ERRORS", "InvalidAnswers", "answers_clean", "needs_input"]

#: The key of an error that belongs to no one field (Django forms' own name for it).
NON_FIELD_ERRORS = "__all__"
# A number as a person types it (ASCII digits only: int() and float() would read other scripts'
# digits too), bounded so that no conversion ever sees a long string.
_MAX_NUMBER_TEXT = 40
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,16}")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_TRUE, _FALSE = frozenset({"on", "true"}), frozenset({"", "off", "false"})
# Bidi embeddings, overrides and isolates: they reorder what other people are shown.
_ABSENT = object()


class InvalidAnswers(Exception):
    """The answers do not satisfy the form: ``errors`` maps a field name (or
    :data:`NON_FIELD_ERRORS`) to a message for the approver. No message repeats a value."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


def needs_input(schema: dict[str, Any] | None, outcome: str) -> bool:
    """True when choosing an option with this outcome requires answers (a one-click channel
    cannot give them): a success outcome and a form with required fields."""
    return outcome == "success" and bool(schema and schema.get("required"))


def answers_clean(
    schema: dict[str, Any] | None,
    submitted: Mapping[str, Any] | Any,
    *,
    from_form: bool,
    outcome: str = "success",
    naive_zone: timezone = UTC,
) -> dict[str, Any]:
    """The typed answers, in the schema's field order; :class:`InvalidAnswers` if any is wrong.

    ``submitted``: from a form, field name → a string or a list of strings (``QueryDict.lists()``),
    holding only the form's own inputs; from an API, the decoded JSON object.
    """
    fields: dict[str, dict[str, Any]] = (schema or {}).get("properties", {})
    if not isinstance(submitted, Mapping):
        raise InvalidAnswers({NON_FIELD_ERRORS: "The answers must be a JSON object."})
    errors: dict[str, str] = {}
    unknown = sum(1 for name in submitted if name not in fields)
    if unknown:
        errors[NON_FIELD_ERRORS] = (
            f"The answers include {unknown:,} field{'s' if unknown != 1 else ''} the form does not have."
        )
    required = set((schema or {}).get("required", ())) if outcome == "success" else set()
    values: dict[str, Any] = {}
    for name, field in fields.items():
        raw = submitted.get(name) if name in submitted else None
        value, problem = (_from_form if from_form else _from_json)(field, raw, naive_zone)
        if problem is None and value is not _ABSENT:
            problem = _problem(field, value)
        if problem is not None:
            errors[name] = f"{problem[0].upper()}{problem[1:]}."
        elif value is _ABSENT:
            if name in required:
                errors[name] = "This field is required."
        else:
            values[name] = value
    if errors:
        raise InvalidAnswers(errors)
    return values


def _problem(field: dict[str, Any], value: Any) -> str | None:
    """The value against its field: the portal's bounds and text rules, then jsonschema."""
    if isinstance(value, str):
        if len(value) > max_length(field):
            return f"must be at most {max_length(field):,} characters"
        if not storable_text(value):
            return "contains a character that cannot be stored"
        if not value.isprintable() and any(_hidden(char) for char in value):
            return "contains control or invisible formatting characters"
    constraints = {key: item for key, item in field.items() if key not in ("title", "description", "default")}
    return field_value_problem(constraints, value)


def _hidden(char: str) -> bool:
    return char in BIDI_CONTROLS or (unicodedata.category(char) == "Cc" and char not in "\t\n\r")


# --------------------------------------------------------------------------
# From a form: strings
# --------------------------------------------------------------------------
def _from_form(field: dict[str, Any], raw: Any, naive_zone: timezone) -> tuple[Any, str | None]:
    if isinstance(raw, (list, tuple)):
        if len(raw) > 1:
            return _ABSENT, "give one value only"
        raw = raw[0] if raw else None
    kind = field["type"]
    if raw is None:
        return (False, None) if kind == "boolean" else (_ABSENT, None)
    if not isinstance(raw, str):
        return _ABSENT, "must be text"
    text = raw.strip()
    if kind == "boolean":
        lowered = text.lower()
        if lowered in _TRUE:
            return True, None
        if lowered in _FALSE:
            return False, None
        return _ABSENT, "must be ticked or not"
    if not text:
        return _ABSENT, None
    if kind == "string":
        return _string(field, text, naive_zone)
    if len(text) > _MAX_NUMBER_TEXT:
        return _ABSENT, "is too long for a number"
    if kind == "integer":
        if not _INTEGER_TEXT.fullmatch(text):
            return _ABSENT, "must be a whole number"
        return _whole(int(text))
    if not _NUMBER_TEXT.fullmatch(text):
        return _ABSENT, "must be a number"
    return _number(float(text))


# --------------------------------------------------------------------------
# From JSON: typed values
# --------------------------------------------------------------------------
def _from_json(field: dict[str, Any], raw: Any, naive_zone: timezone) -> tuple[Any, str | None]:
    if raw is None:
        return _ABSENT, None
    kind = field["type"]
    if kind == "boolean":
        return (raw, None) if isinstance(raw, bool) else (_ABSENT, "must be true or false")
    if kind == "string":
        return _string(field, raw, naive_zone) if isinstance(raw, str) else (_ABSENT, "must be a string")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return _ABSENT, "must be a whole number" if kind == "integer" else "must be a number"
    if kind == "integer":
        if isinstance(raw, float) and not (math.isfinite(raw) and raw.is_integer()):
            return _ABSENT, "must be a whole number"
        return _whole(int(raw))
    if isinstance(raw, int):
        try:
            raw = float(raw) if abs(raw) > MAX_SAFE_INTEGER else raw
        except OverflowError:
            return _ABSENT, "must be a number a double can hold (within ±1.8e308)"
    return _number(raw)


# --------------------------------------------------------------------------
# Shared conversions
# --------------------------------------------------------------------------
def _whole(value: int) -> tuple[Any, str | None]:
    if abs(value) > MAX_SAFE_INTEGER:
        return _ABSENT, f"must be between -{MAX_SAFE_INTEGER:,} and {MAX_SAFE_INTEGER:,}"
    return value, None


def _number(value: float | int) -> tuple[Any, str | None]:
    if isinstance(value, int):
        return value, None
    if not math.isfinite(value):
        return _ABSENT, "must be a number a double can hold (within ±1.8e308)"
    if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value), None
    return value, None


def _string(field: dict[str, Any], text: str, naive_zone: timezone) -> tuple[Any, str | None]:
    if len(text) > max_length(field):  # before any parsing or matching
        return _ABSENT, f"must be at most {max_length(field):,} characters"
    shape = field.get("format")
    if shape == "date":
        day = parse_date(text)
        return (day.isoformat(), None) if day else (_ABSENT, "must be a date (YYYY-MM-DD)")
    if shape == "date-time":
        moment = parse_datetime(text, naive_zone=naive_zone)
        if moment is None:
            return _ABSENT, "must be a date and time (YYYY-MM-DDTHH:MM)"
        return moment.isoformat().replace("+00:00", "Z"), None
    return text, None
