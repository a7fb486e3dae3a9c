"""The approver form a message may carry (``form``): a small, documented subset of JSON Schema.

The subset is written down as a JSON Schema itself (:data:`META_SCHEMA`) and a message's form
is validated against it with the ``jsonschema`` library; what a meta-schema cannot say is
checked after it: ``required`` names existing fields, bounds in order, patterns that compile
and cannot run away, defaults that satisfy their own field. :func:`form_schema_check` raises
:class:`FormSchemaError` naming the path (``form.properties.amount.minimum``) and what was
expected, never a value from the message. The approver's answers are validated against the
same schema by :mod:`approvals.answers`, with the limits defined here.

The subset (docs/approver-input.md)::

    {"type": "object", "title"?, "description"?, "required"?: [names],
     "additionalProperties"?: false,
     "properties": {name: field, ...}}          1 to MAX_FIELDS fields
    field: {"type": "string" | "number" | "integer" | "boolean", "title"?, "description"?,
            "default"?, "enum"? (string/number/integer), "minimum"?/"maximum"? (number/integer),
            "minLength"?/"maxLength"?/"pattern"?/"format"? (string: "date", "date-time", "email")}

Anything else (nested objects, arrays, ``$ref``, ``oneOf``, ``exclusiveMinimum``, an unknown
keyword) is refused rather than ignored: a constraint the portal would not enforce must not
look as if it were enforced.

Patterns are Python ``re`` syntax, matched with ``re.search`` as JSON Schema says (anywhere,
unless anchored). Python's engine backtracks and has no time limit, so a pattern is refused
unless its worst case is small on the longest answer it will ever see (:data:`MAX_PATTERN_INPUT`
characters): no backreferences or lookarounds, no repetition of a repetition or of an
alternation unless both are short, and at most two side-by-side repetitions that can match
the same characters (:func:`pattern_problem`).
"""

from __future__ import annotations

import functools
import json
import re
import re._constants as sre_constants  # the parsed form of a pattern: the only way to see its shape
import re._parser as sre_parser
import unicodedata
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime, timezone
from decimal import Decimal
from typing import Any

import jsonschema
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from jsonschema.exceptions import best_match

__all__ = [
    "FIELD_TYPES",
    "MAX_ANSWER_LENGTH",
    "MAX_FIELDS",
    "MAX_PATTERN_INPUT",
    "MAX_PATTERN_LENGTH",
    "MAX_SAFE_INTEGER",
    "META_SCHEMA",
    "FormSchemaError",
    "form_schema_check",
    "field_value_problem",
    "format_checker",
    "max_length",
    "parse_date",
    "parse_datetime",
    "is_email",
]

MAX_FIELDS = 30
# Every string answer is at most this long (a schema's maxLength may not say more) ...
MAX_ANSWER_LENGTH = 2000
# ... and a string with a pattern at most this long, so a pattern's worst case stays small.
MAX_PATTERN_INPUT = 256
MAX_PATTERN_LENGTH = 200
MAX_ENUM_VALUES = 100
MAX_TITLE_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 1000
# The largest integer a double holds exactly (RFC 7493, I-JSON): integers beyond it would
# change on their way through JSON parsers that read numbers as doubles.
MAX_SAFE_INTEGER = 2**53 - 1
FIELD_TYPES = ("string", "number", "integer", "boolean")
FIELD_NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_]{0,63}$"
# The dialects a form may declare; the keywords of the subset mean the same in both.
_DIALECTS = [
    "https://json-schema.org/draft/2020-12/schema",
    "http://json-schema.org/draft-07/schema#",
    "http://json-schema.org/draft-07/schema",
]

_TITLE = {"type": "string", "maxLength": MAX_TITLE_LENGTH}
_DESCRIPTION = {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH}
_COMMON = {"type": True, "title": _TITLE, "description": _DESCRIPTION}


def _enum_of(item_type: str) -> dict:
    items: dict[str, Any] = {"type": item_type}
    if item_type == "string":
        items["maxLength"] = MAX_TITLE_LENGTH
    return {"type": "array", "minItems": 1, "maxItems": MAX_ENUM_VALUES, "uniqueItems": True, "items": items}


def _numeric(kind: str) -> dict:
    return {
        "type": "object",
        "properties": {
            **_COMMON,
            "default": {"type": kind},
            "enum": _enum_of(kind),
            "minimum": {"type": "number"},
            "maximum": {"type": "number"},
        },
        "additionalProperties": False,
    }


_LENGTH = {"type": "integer", "minimum": 0, "maximum": MAX_ANSWER_LENGTH}

#: The subset, as a JSON Schema (draft 2020-12) that a message's ``form`` must satisfy.
META_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:approval-portal:approver-form",
    "title": "Approver form: the JSON Schema subset a message's form may use",
    "type": "object",
    "required": ["type", "properties"],
    "properties": {
        "$schema": {"enum": _DIALECTS},
        "type": {"const": "object"},
        "title": _TITLE,
        "description": _DESCRIPTION,
        "properties": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_FIELDS,
            "propertyNames": {"pattern": FIELD_NAME_PATTERN},
            "additionalProperties": {"$ref": "#/$defs/field"},
        },
        "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "maxItems": MAX_FIELDS},
        "additionalProperties": {"const": False},
    },
    "additionalProperties": False,
    "$defs": {
        "field": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": list(FIELD_TYPES)}},
            "allOf": [
                {"if": {"properties": {"type": {"const": kind}}}, "then": {"$ref": f"#/$defs/{kind}"}}
                for kind in FIELD_TYPES
            ],
        },
        "string": {
            "type": "object",
            "properties": {
                **_COMMON,
                "default": {"type": "string", "maxLength": MAX_ANSWER_LENGTH},
                "enum": _enum_of("string"),
                "minLength": _LENGTH,
                "maxLength": _LENGTH,
                "pattern": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN_LENGTH},
                "format": {"enum": ["date", "date-time", "email"]},
            },
            "additionalProperties": False,
        },
        "number": _numeric("number"),
        "integer": _numeric("integer"),
        "boolean": {
            "type": "object",
            "properties": {**_COMMON, "default": {"type": "boolean"}},
            "additionalProperties": False,
        },
    },
}

jsonschema.Draft202012Validator.check_schema(META_SCHEMA)
_META_VALIDATOR = jsonschema.Draft202012Validator(META_SCHEMA)

# JSON Schema's keywords: an unsupported one is named in an error; any other key is the
# sender's text and is not echoed.
_KEYWORD_WORDS = (
    "$schema $id $ref $defs $anchor $dynamicRef $dynamicAnchor $comment $vocabulary "
    "definitions type enum const title description default examples deprecated readOnly "
    "writeOnly properties required additionalProperties patternProperties propertyNames "
    "minProperties maxProperties dependentRequired dependentSchemas dependencies "
    "unevaluatedProperties items prefixItems additionalItems contains minContains maxContains "
    "minItems maxItems uniqueItems unevaluatedItems allOf anyOf oneOf not if then else minimum "
    "maximum exclusiveMinimum exclusiveMaximum multipleOf minLength maxLength pattern format "
    "contentEncoding contentMediaType contentSchema"
)
_KEYWORDS = frozenset(_KEYWORD_WORDS.split())
_TYPE_WORDS = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
}
_NOT_ONE_LINE = frozenset({"Cc", "Cf", "Zl", "Zp"})


class FormSchemaError(Exception):
    """A form schema outside the subset. ``path`` is the dotted path (``form.properties.x``),
    ``message`` the whole sentence, naming the path and never a value from the message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------
# Formats: the same strict checks for defaults at ingest and for answers
# --------------------------------------------------------------------------
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# RFC 3339's date-time, and what a browser's datetime-local input sends (no seconds, no zone).
_DATETIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<time>[0-9]{2}:[0-9]{2}(?::[0-9]{2})?)"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?(?P<zone>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def parse_date(text: str) -> date | None:
    """``YYYY-MM-DD`` (what a date input sends), else None."""
    if len(text) != 10 or not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_datetime(text: str, *, naive_zone: timezone = UTC) -> datetime | None:
    """An RFC 3339 date-time, or a browser's ``YYYY-MM-DDTHH:MM[:SS]`` read in ``naive_zone``;
    aware and in UTC, else None."""
    match = _DATETIME.fullmatch(text) if len(text) <= 40 else None
    if match is None or (match["fraction"] and match["time"].count(":") < 2):
        return None
    fraction = f".{match['fraction'][:6].ljust(6, '0')}" if match["fraction"] else ""
    zone = match["zone"] or ""
    zone = "+00:00" if zone in ("Z", "z") else zone
    moment = None
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{match['time']}{fraction}{zone}")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=naive_zone)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # a day or hour that does not exist; beyond year 1 to 9999
        moment = None
    return moment


def is_email(text: str) -> bool:
    if len(text) > 254:
        return False
    try:
        validate_email(text)
    except ValidationError:
        return False
    return True


def format_checker() -> jsonschema.FormatChecker:
    """The portal's own format checks (stricter than jsonschema's defaults: ``date-time`` is
    not checked there without an extra package, ``email`` only needs an "@")."""
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("date")
    def _date(value: object) -> bool:
        return not isinstance(value, str) or parse_date(value) is not None

    @checker.checks("date-time")
    def _datetime(value: object) -> bool:
        return not isinstance(value, str) or parse_datetime(value) is not None

    @checker.checks("email")
    def _email(value: object) -> bool:
        return not isinstance(value, str) or is_email(value)

    return checker


_FORMAT_CHECKER = format_checker()


# --------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------
def form_schema_check(form: Any) -> None:
    """Raise :class:`FormSchemaError` unless ``form`` is a schema in the subset."""
    if not isinstance(form, dict):
        raise FormSchemaError("form", f"field 'form' must be a JSON Schema object, got {json_type(form)}")
    fields = form.get("properties")
    if isinstance(fields, dict):
        for name in fields:
            # Checked first: only names in this charset are ever part of an error's path.
            if not isinstance(name, str) or not re.fullmatch(FIELD_NAME_PATTERN, name):
                raise FormSchemaError(
                    "form.properties",
                    "field 'form.properties' may only name fields of 1 to 64 letters, digits and underscores, "
                    "starting with a letter",
                )
    error = best_match(_META_VALIDATOR.iter_errors(form))
    if error is not None:
        raise _meta_error(error)
    for index, name in enumerate(form.get("required", [])):
        if name not in fields:
            raise FormSchemaError(
                f"form.required[{index}]",
                f"field 'form.required[{index}]' names a field that 'form.properties' does not define",
            )
    _check_text(form, "form")
    patterns_cost = 0
    for name, field in fields.items():
        patterns_cost = _field_check(field, f"form.properties.{name}", patterns_cost)


def _field_check(field: dict, path: str, patterns_cost: int) -> int:
    """Raise :class:`FormSchemaError` unless the field is in the subset; the cost of the form's
    patterns so far, this field's included."""
    _check_text(field, path)
    for low, high in (("minimum", "maximum"), ("minLength", "maxLength")):
        if low in field and high in field and field[low] > field[high]:
            raise FormSchemaError(f"{path}.{low}", f"field '{path}.{low}' must not be greater than '{high}'")
    if "pattern" in field:
        if field.get("maxLength", 0) > MAX_PATTERN_INPUT:
            raise FormSchemaError(
                f"{path}.maxLength",
                f"field '{path}.maxLength' must be at most {MAX_PATTERN_INPUT} for a field with a pattern",
            )
        reason = pattern_problem(field["pattern"])
        if reason:
            raise FormSchemaError(f"{path}.pattern", f"field '{path}.pattern' {reason}")
        # Every answer is checked on a decision: the form's patterns together get what one may have.
        patterns_cost += _pattern_cost(sre_parser.parse(field["pattern"]))
        if patterns_cost > _MAX_PATTERN_COST:
            raise FormSchemaError(
                f"{path}.pattern",
                f"field '{path}.pattern' and the form's patterns before it could together take too long "
                "on the answers: use fewer repetitions that can match the same characters",
            )
    for key in ("default", "enum"):
        if key not in field:
            continue
        values = [field[key]] if key == "default" else field[key]
        for index, value in enumerate(values):
            where = f"{path}.{key}" if key == "default" else f"{path}.{key}[{index}]"
            # The value against its own field (the enum without itself, or a default outside the enum).
            own = {k: v for k, v in field.items() if k not in ("default", "title", "description")}
            if key == "enum":
                own.pop("enum")
            problem = field_value_problem(own, value)
            if problem:
                raise FormSchemaError(where, f"field '{where}' does not satisfy its own field: {problem}")
    return patterns_cost


def max_length(field: dict) -> int:
    """The longest string answer a field takes: its maxLength, within the portal's caps."""
    cap = MAX_PATTERN_INPUT if "pattern" in field else MAX_ANSWER_LENGTH
    return min(field.get("maxLength", cap), cap)


def field_value_problem(field: dict, value: Any) -> str | None:
    """What is wrong with a typed value for one field (jsonschema with the portal's formats), or None."""
    if field.get("type") == "integer" and isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        return f"must be between -{MAX_SAFE_INTEGER:,} and {MAX_SAFE_INTEGER:,}"
    if isinstance(value, str) and len(value) > max_length(field):
        # Before jsonschema, which would run the pattern on the whole string however long.
        return keyword_problem("maxLength", max_length(field), field)
    error = best_match(_field_validator(json.dumps(field, sort_keys=True)).iter_errors(value))
    return None if error is None else keyword_problem(error.validator, error.validator_value, field)


@functools.lru_cache(maxsize=512)
def _field_validator(field_json: str) -> jsonschema.Draft202012Validator:
    """One validator per distinct field (a form's enum values, and every decision on a request)."""
    return jsonschema.Draft202012Validator(json.loads(field_json), format_checker=_FORMAT_CHECKER)


def keyword_problem(keyword: str, expected: Any, field: dict) -> str:
    """A value's fault under one keyword, in words, without the value."""
    if keyword == "type":
        return f"must be {_TYPE_WORDS.get(expected, expected)}"
    if keyword == "enum":
        return "must be one of the listed choices"
    if keyword == "minimum":
        return f"must be at least {_number(expected)}"
    if keyword == "maximum":
        return f"must be at most {_number(expected)}"
    if keyword == "minLength":
        return f"must be at least {expected:,} characters"
    if keyword == "maxLength":
        return f"must be at most {expected:,} characters"
    if keyword == "pattern":
        return "does not have the expected form"
    if keyword == "format":
        return {
            "date": "must be a date (YYYY-MM-DD)",
            "date-time": "must be a date and time (YYYY-MM-DDTHH:MM, with seconds and a zone if given)",
            "email": "must be an email address",
        }.get(expected, "has the wrong format")
    return "is not valid"


def _number(value: Any) -> str:
    """A bound as people write it: 5 rather than 5.0, and 1.00000E+400 rather than 401 digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    text = str(value)
    return text if len(text) <= 24 else format(Decimal(text), ".6g")


def _meta_error(error: jsonschema.ValidationError) -> FormSchemaError:
    parts = ["form"]
    for part in error.absolute_path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    path = "".join(parts)
    keyword, expected, instance = error.validator, error.validator_value, error.instance
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = error.schema.get("properties", {})
        extra = next((key for key in instance if key not in allowed), None)
        if extra in ("$ref", "$defs", "definitions", "properties", "items", "oneOf", "anyOf", "allOf"):
            what = f"'{extra}': nesting and references are refused"
        elif extra in _KEYWORDS:
            what = f"'{extra}', which the form subset does not support"
        else:
            what = "a key the form subset does not support"
        return FormSchemaError(path, f"field '{path}' may not use {what} (docs/approver-input.md)")
    if keyword == "required" and isinstance(instance, dict):
        missing = next(key for key in expected if key not in instance)
        path = f"{path}.{missing}"
        return FormSchemaError(path, f"field '{path}' is required")
    if keyword == "const" and path == "form.additionalProperties":
        return FormSchemaError(path, f"field '{path}' may only be false (unknown answers are always refused)")
    if keyword == "const":
        return FormSchemaError(path, f"field '{path}' must be {json.dumps(expected)}")
    if keyword == "enum" and path.endswith(".type"):
        return FormSchemaError(
            path,
            f'field \'{path}\' must be one of "string", "number", "integer", "boolean" '
            f"(nested objects and arrays are refused)",
        )
    if keyword == "enum":
        choices = ", ".join(json.dumps(choice) for choice in expected)
        return FormSchemaError(path, f"field '{path}' must be one of {choices}")
    sizes = {
        "minProperties": f"must define at least {expected} field",
        "maxProperties": f"may define at most {expected} fields",
        "minItems": f"must list at least {expected} value",
        "maxItems": f"may list at most {expected} values",
        "uniqueItems": "must not list a value twice",
    }
    if keyword in sizes:
        return FormSchemaError(path, f"field '{path}' {sizes[keyword]}")
    return FormSchemaError(path, f"field '{path}' {keyword_problem(keyword, expected, {})}")


def _check_text(schema: dict, path: str) -> None:
    """Titles, descriptions and choices are shown to approvers: storable, and no hidden characters."""
    for key in ("title", "description"):
        if key in schema:
            _text_problem(schema[key], f"{path}.{key}", one_line=key == "title")
    for index, value in enumerate(schema.get("enum", [])):
        if isinstance(value, str):
            _text_problem(value, f"{path}.enum[{index}]", one_line=True)
    if isinstance(schema.get("default"), str):
        _text_problem(schema["default"], f"{path}.default", one_line=False)


def _text_problem(value: str, path: str, *, one_line: bool) -> None:
    if not storable_text(value):
        raise FormSchemaError(path, f"field '{path}' contains a NUL character or invalid Unicode")
    if value.isprintable():  # the common case, at C speed
        return
    for index, char in enumerate(value):
        if char in BIDI_CONTROLS or (one_line and unicodedata.category(char) in _NOT_ONE_LINE):
            raise FormSchemaError(
                path,
                f"field '{path}' contains U+{ord(char):04X} at character {index}: control or invisible "
                f"formatting characters (bidi overrides, zero-width characters) are refused",
            )


# Bidi embeddings, overrides and isolates: refused even in multi-line text (they reorder what is shown).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def encodes_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(value: str) -> bool:
    """False for text PostgreSQL can neither store nor compare: a NUL character, or a lone
    surrogate (JSON lets a sender write ``\\u0000`` or ``\\ud800``)."""
    return "\x00" not in value and encodes_utf8(value)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages (never the value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


# --------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------
# Repetitions nested in each other may multiply to at most this many rounds (``(\d{1,3}\.){3}``).
_MAX_NESTED_ROUNDS = 16
# The rounds that adjacent, overlapping repetitions may trade, multiplied: two unbounded ones
# (``\d+\d+``) at most. Repetitions that cannot match a common character (``\d+\.\d+``,
# ``[a-z]+[0-9]+``) do not trade: each run of overlapping ones is counted on its own.
_MAX_PATTERN_COST = 4 * (MAX_PATTERN_INPUT + 1) ** 2
_REFUSED_OPCODES = {
    sre_constants.GROUPREF: "may not use a backreference",
    sre_constants.GROUPREF_EXISTS: "may not use a conditional group",
    sre_constants.ASSERT: "may not use a lookahead or lookbehind",
    sre_constants.ASSERT_NOT: "may not use a lookahead or lookbehind",
}
_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT}
_ONE_CHARACTER = {sre_constants.LITERAL, sre_constants.NOT_LITERAL, sre_constants.ANY, sre_constants.IN}
_CATEGORIES = {
    sre_constants.CATEGORY_DIGIT: r"\d",
    sre_constants.CATEGORY_NOT_DIGIT: r"\D",
    sre_constants.CATEGORY_SPACE: r"\s",
    sre_constants.CATEGORY_NOT_SPACE: r"\S",
    sre_constants.CATEGORY_WORD: r"\w",
    sre_constants.CATEGORY_NOT_WORD: r"\W",
}
# Characters the overlap of two character sets is tried on, with every character the pattern
# names (two ranges overlap exactly when an end of one lies in the other).
_SAMPLE = frozenset(map(chr, range(0x250))) | frozenset("\u0660\u0966\u00a0\u2028\u3000\u4e2d\uff10\U0001f600")


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is refused (completing "field 'x.pattern' ..."), or None when it is safe.

    Safe means its worst case on MAX_PATTERN_INPUT characters stays small: Python's ``re``
    backtracks without a time limit, and a catastrophic pattern (``(a+)+$``, ``(a|ab)*``,
    ``(a?){30}a{30}``) holds a process for hours on one short answer. A static bound, not a
    proof: no backreferences or lookarounds; repetitions nested in repetitions at most
    :data:`_MAX_NESTED_ROUNDS` rounds in all and no alternation inside a longer one; and
    side-by-side repetitions that can match the same characters at most two unbounded ones' worth,
    where an alternation is one choice per branch that can begin alike (``(?:a|aa){16}``) and
    only what must match a character separates (``\\w*-?\\w*`` is two side by side).
    """
    if "\x00" in pattern or not encodes_utf8(pattern):
        return "contains a NUL character or invalid Unicode"
    parsed = None
    with warnings.catch_warnings():
        # "Possible nested set" and the like: a pattern whose meaning a later Python changes.
        warnings.simplefilter("error")
        try:
            parsed = sre_parser.parse(pattern)
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError, ValueError, Warning):
            parsed = None
    if parsed is None:
        return "is not a regular expression Python's re module accepts (without a warning)"
    for opcode, argument, enclosing in _walk(parsed, 1):
        if opcode in _REFUSED_OPCODES:
            return _REFUSED_OPCODES[opcode]
        if opcode in _REPEATS and enclosing > 1 and enclosing * argument[1] > _MAX_NESTED_ROUNDS:
            return "may not repeat a repetition (such as (a+)+ or (a?){30}): it can take exponential time"
        if opcode is sre_constants.BRANCH and enclosing > _MAX_NESTED_ROUNDS:
            return "may not repeat an alternation (such as (a|ab)*): it can take exponential time"
    if _pattern_cost(parsed) > _MAX_PATTERN_COST:
        return "has too many repetitions that can match the same text (at most two, as in \\w+\\d+)"
    return None


def _pattern_cost(parsed: Any) -> int:
    """About how many ways a parsed pattern can try at one place of an answer."""
    ignore_case = bool(parsed.state.flags & re.IGNORECASE)
    return _run_cost(parsed, _SAMPLE | _named_characters(parsed), ignore_case)


def _walk(parsed: Any, enclosing: int) -> Iterator[tuple[Any, Any, int]]:
    """Every (opcode, argument, rounds of the repetitions around it multiplied) of a parsed pattern."""
    for opcode, argument in parsed:
        yield opcode, argument, enclosing
        if opcode in _REPEATS:
            yield from _walk(argument[2], enclosing * max(1, min(argument[1], MAX_PATTERN_INPUT + 1)))
        elif opcode is sre_constants.SUBPATTERN:
            yield from _walk(argument[3], enclosing)
        elif opcode is sre_constants.ATOMIC_GROUP:
            yield from _walk(argument, enclosing)
        elif opcode is sre_constants.BRANCH:
            for branch in argument[1]:
                yield from _walk(branch, enclosing)
        elif opcode in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            yield from _walk(argument[1], enclosing)


def _flatten(parsed: Any) -> Iterator[tuple[Any, Any]]:
    """The items of a sequence, with plain (unrepeated) groups opened."""
    for opcode, argument in parsed:
        if opcode is sre_constants.SUBPATTERN:
            yield from _flatten(argument[3])
        else:
            yield opcode, argument


def _named_characters(parsed: Any) -> frozenset[str]:
    """Every character the pattern names, as a literal or the end of a range."""
    named: set[str] = set()
    stack = [parsed]
    while stack:
        for opcode, argument in stack.pop():
            if opcode in (sre_constants.LITERAL, sre_constants.NOT_LITERAL):
                named.add(chr(argument))
            elif opcode is sre_constants.IN:
                for kind, value in argument:
                    if kind is sre_constants.LITERAL:
                        named.add(chr(value))
                    elif kind is sre_constants.RANGE:
                        named.update((chr(value[0]), chr(value[1])))
            elif opcode in _REPEATS:
                stack.append(argument[2])
            elif opcode is sre_constants.SUBPATTERN:
                stack.append(argument[3])
            elif opcode is sre_constants.ATOMIC_GROUP:
                stack.append(argument)
            elif opcode is sre_constants.BRANCH:
                stack.extend(argument[1])
    return frozenset(named)


def _run_cost(parsed: Any, sample: frozenset[str], ignore_case: bool) -> int:
    """About how many ways the pattern's repetitions can split one stretch of text.

    Side-by-side repetitions that can match the same characters form a run, and backtracking
    tries every split of the text between them: their rounds multiply. A run ends where the
    next repetition, or a character that must be there, cannot match anything the run's last
    repetition matches (or at ``$``): the run's end is then pinned, only the splits that reach
    it go on to the next run, and those multiply the next run's cost.
    """
    total, entering = 0, 1
    run, last, last_rounds = 1, None, 1  # `last`: what the run's last repetition matches

    def close(pinned: bool) -> None:
        nonlocal total, entering, run, last, last_rounds
        total += entering * run
        entering *= run // last_rounds if pinned else run
        run, last, last_rounds = 1, None, 1

    for opcode, argument in _flatten(parsed):
        if opcode in _REPEATS:
            low, high, body = argument
            rounds = min(high, MAX_PATTERN_INPUT) - min(low, MAX_PATTERN_INPUT) + 1
            inside = _run_cost(body, sample, ignore_case)
            matched = _characters(body, sample, ignore_case)
            # Only what must match at least one character pins the run's end: an optional
            # separator (\w*-?\w*) or a zero count (a*x{0}a*) lets the repetitions around it trade.
            pins = low > 0 and body.getwidth()[0] > 0
            if pins and last is not None and not (last & matched):
                close(pinned=True)
            if rounds == 1 and inside == 1:  # a fixed count of a fixed text: a sequence, not a choice
                continue
            # The choices inside multiply with every round: a few hundred ways at most.
            nested = inside ** min(high, _MAX_NESTED_ROUNDS + 1) if inside > 1 else 1
            if nested > MAX_PATTERN_INPUT:
                return _MAX_PATTERN_COST + 1
            run *= rounds * nested
            if pins:
                last, last_rounds = matched, rounds
            else:
                last, last_rounds = matched if last is None else last | matched, 1
        elif opcode in _ONE_CHARACTER:
            if last is not None and not (last & _characters([(opcode, argument)], sample, ignore_case)):
                close(pinned=True)
        elif opcode is sre_constants.AT:
            if argument in (sre_constants.AT_END, sre_constants.AT_END_STRING) and last is not None:
                close(pinned=True)
        elif opcode is sre_constants.BRANCH:
            ways = _branch_cost(argument[1], sample, ignore_case)  # (?:a|aa) splits "aa" two ways
            if ways > _MAX_PATTERN_COST:
                return _MAX_PATTERN_COST + 1
            run *= ways
            last, last_rounds = sample, 1  # assume it overlaps everything
        elif opcode is sre_constants.ATOMIC_GROUP:
            # Searched again for every way to reach it, though it keeps one way out.
            total += entering * run * _run_cost(argument, sample, ignore_case)
            last, last_rounds = sample, 1
        else:
            last, last_rounds = sample, 1
    close(pinned=False)
    return total


def _branch_cost(branches: list[Any], sample: frozenset[str], ignore_case: bool) -> int:
    """The ways through an alternation: the sum of its branches' ways, or only the largest
    when no two branches can begin with the same character (``(?:DEV|PROD)``: at most one fits)."""
    costs = [_run_cost(branch, sample, ignore_case) for branch in branches]
    seen: frozenset[str] = frozenset()
    for branch in branches:
        first = _first_characters(branch, sample, ignore_case)
        if seen & first:
            return sum(costs)
        seen |= first
    return max(costs)


def _first_characters(sequence: Any, sample: frozenset[str], ignore_case: bool) -> frozenset[str]:
    """The sample characters a match of ``sequence`` can begin with; every sample when that is
    not plain from its first item (or it can match nothing)."""
    for opcode, argument in _flatten(sequence):
        if opcode in _ONE_CHARACTER:
            return _characters([(opcode, argument)], sample, ignore_case)
        if opcode in _REPEATS and argument[0] > 0 and argument[2].getwidth()[0] > 0:
            return _characters(argument[2], sample, ignore_case)
        if opcode is not sre_constants.AT:
            return sample
    return sample


def _characters(body: Any, sample: frozenset[str], ignore_case: bool) -> frozenset[str]:
    """The sample characters a one-character body can match; every sample for anything longer."""
    items = list(body)
    if ignore_case or len(items) != 1 or items[0][0] not in _ONE_CHARACTER:
        return sample
    opcode, argument = items[0]
    if opcode is sre_constants.LITERAL:
        return frozenset({chr(argument)}) & sample
    if opcode is sre_constants.NOT_LITERAL:
        return sample - {chr(argument)}
    if opcode is sre_constants.ANY:
        return sample - {"\n"}
    negate = False
    tests = []
    for kind, value in argument:
        if kind is sre_constants.NEGATE:
            negate = True
        elif kind is sre_constants.LITERAL:
            tests.append(lambda ch, value=value: ord(ch) == value)
        elif kind is sre_constants.RANGE:
            tests.append(lambda ch, low=value[0], high=value[1]: low <= ord(ch) <= high)
        elif kind is sre_constants.CATEGORY and value in _CATEGORIES:
            tests.append(lambda ch, category=re.compile(_CATEGORIES[value]): category.fullmatch(ch) is not None)
        else:
            return sample
    return frozenset(ch for ch in sample if any(test(ch) for test in tests) != negate)
