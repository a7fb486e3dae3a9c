"""Keeping Step Functions task tokens out of text: logs, stored errors, admin views.

A task token lets whoever holds it approve or reject a paused execution, so it
must never be written anywhere a person or a log pipeline can read it. Three
layers, from precise to broad:

1. explicit secrets passed by the caller (the token being processed), also in
   their JSON-escaped spelling;
2. values labelled as a task token (``"taskToken": "..."``, ``'task_token': '...'``,
   ``taskToken=...``), whatever they look like, even if the JSON around them
   is broken or cut off;
3. anything token-shaped: UUIDs (what emulators issue) and runs of 64 or more
   characters from ``[A-Za-z0-9+/=_-]`` (real AWS tokens are long base64-ish
   strings).

Layer 3 over-redacts a little on purpose (for example a 64-character hex
digest or a very long slug); losing such a string from a log line is cheap,
leaking a token is not. Ordinary text (sentences, e-mail addresses, ARNs with
short names, ISO timestamps) passes through unchanged.

All patterns are compiled once and run in linear time, so redacting a
256 KiB message body is fast and cannot backtrack catastrophically.

To protect every log line, attach :class:`TokenRedactingFilter` to the
*handlers* (a filter on a logger does not see records propagated from its
child loggers), e.g. in ``LOGGING``::

    "filters": {"redact_tokens": {"()": "approvals.redaction.TokenRedactingFilter"}},
    "handlers": {"console": {..., "filters": ["redact_tokens"]}},
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from approvals.contract import find_token

__all__ = [
    "MAX_STORED_BODY_BYTES",
    "REDACTED",
    "TokenRedactingFilter",
    "redact",
    "redact_body",
]

REDACTED = "[redacted]"

#: Upper bound (UTF-8 bytes, note included) of the text :func:`redact_body` returns.
MAX_STORED_BODY_BYTES = 64 * 1024

_OPAQUE_CHARS = r"A-Za-z0-9+/=_\-"
_HEX = "0-9A-Fa-f"

# The lookbehind makes a long run match only from its first character, so a
# run shorter than 64 is scanned once rather than once per starting position.
# The UUID's hex lookarounds stop it matching inside a longer hex string, but
# any other neighbour ("exec-<uuid>", "id=<uuid>") still counts.
_LONG_OPAQUE = rf"(?<![{_OPAQUE_CHARS}])[{_OPAQUE_CHARS}]{{64,}}"
_UUID = rf"(?<![{_HEX}])[{_HEX}]{{8}}-[{_HEX}]{{4}}-[{_HEX}]{{4}}-[{_HEX}]{{4}}-[{_HEX}]{{12}}(?![{_HEX}])"
_TOKEN_SHAPED = re.compile(rf"{_LONG_OPAQUE}|{_UUID}")
# Log lines keep UUIDs: request ids and SQS message ids are UUIDs and are what operators
# correlate on. Only emulators issue UUID tokens, and the code never logs a token.
_LONG_TOKEN_SHAPED = re.compile(_LONG_OPAQUE)

# A value labelled as a task token: JSON ("taskToken": "..."), Python reprs
# ('task_token': '...') and key=value text (taskToken=...&). Quoted values may
# be unterminated (a truncated body), in which case the rest of the text is
# the value. The quoted-string patterns are the "unrolled loop" form, which
# is linear. The lookbehind keeps "waitForTaskToken: ..." from counting; a
# key followed by null/None/true/false or an object/array is left alone.
_TOKEN_FIELD = re.compile(
    r"""
    (?P<key> (?P<q>["']?) (?<![A-Za-z0-9_]) task_?token (?P=q) \s* [:=] \s* )
    (?P<value>
        " [^"\\]* (?: \\. [^"\\]* )* "?
      | ' [^'\\]* (?: \\. [^'\\]* )* '?
      | (?! (?:null|None|true|false) \b | [\[{] ) [^\s"',;&}\]\)]+
    )
    """,
    re.IGNORECASE | re.VERBOSE,
)


def _redact_field(match: re.Match[str]) -> str:
    value = match["value"]
    if value[0] in "\"'":
        quote = value[0]
        closed = len(value) > 1 and value.endswith(quote)
        return f"{match['key']}{quote}{REDACTED}{quote if closed else ''}"
    return f"{match['key']}{REDACTED}"


def _secret_pattern(secrets: tuple[str | None, ...]) -> re.Pattern[str] | None:
    """One alternation of every spelling of every secret, longest first."""
    variants: set[str] = set()
    for secret in secrets:
        # A blank "secret" would shred ordinary whitespace; it protects nothing.
        if not secret or not secret.strip():
            continue
        variants.add(secret)
        # The same secret as it appears inside JSON text, where quotes,
        # backslashes, control characters and (by default) non-ASCII are escaped.
        variants.add(json.dumps(secret)[1:-1])
        variants.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    if not variants:
        return None
    ordered = sorted(variants, key=len, reverse=True)
    return re.compile("|".join(re.escape(v) for v in ordered))


def redact(text: str, *secrets: str | None, uuids: bool = True) -> str:
    """Return ``text`` with the given secrets and anything token-shaped replaced by ``[redacted]``.

    ``None`` and blank secrets are ignored, so ``redact(text, find_token(body))``
    is safe when no token was found. ``uuids=False`` keeps UUIDs (for log lines).
    """
    pattern = _secret_pattern(secrets)
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _TOKEN_FIELD.sub(_redact_field, text)
    return (_TOKEN_SHAPED if uuids else _LONG_TOKEN_SHAPED).sub(REDACTED, text)


def redact_body(body: str | bytes) -> str:
    """A message body made safe to store for admins: token removed, storable, at most 64 KiB.

    Works on anything, including bodies the contract refused (broken JSON,
    bad UTF-8): the token is found by parsing when possible and by its
    ``"taskToken"`` label otherwise, plus token-shaped strings everywhere.
    """
    if isinstance(body, bytes):
        size = len(body)
        text = body.decode("utf-8", errors="replace")
    else:
        size = len(body.encode("utf-8", errors="surrogatepass"))
        text = body
    # Redact before truncating, so a cut can never leave a token fragment
    # too short to be recognised.
    text = redact(text, find_token(text))
    # PostgreSQL text cannot hold NUL or lone surrogates; the admin only
    # needs to see that something odd was there.
    text = text.replace("\x00", "\ufffd").encode("utf-8", errors="replace").decode("utf-8")

    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_STORED_BODY_BYTES:
        return text
    note = f"\n[truncated, {size} bytes in all]"
    keep = MAX_STORED_BODY_BYTES - len(note.encode("utf-8"))
    # errors="ignore" drops a multi-byte character split by the cut.
    return encoded[:keep].decode("utf-8", errors="ignore") + note


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact(arg, uuids=False)
    try:
        shown = str(arg)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break logging
        return REDACTED
    cleaned = redact(shown, uuids=False)
    return arg if cleaned == shown else cleaned


class TokenRedactingFilter(logging.Filter):
    """Redact task-token-shaped text from log records; never drops a record.

    If the formatted message contains something to redact, the record's
    ``msg`` becomes the redacted message and ``args`` is cleared (so nothing
    downstream, such as an error tracker reading ``args``, sees the token).
    Exception and stack text are redacted too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - bad format args: logging reports them later
            # Handler.handleError prints msg and args, so clean both parts.
            record.msg = redact(str(record.msg), uuids=False)
            if isinstance(record.args, tuple):
                record.args = tuple(_redact_arg(arg) for arg in record.args)
            elif record.args is not None:
                record.args = _redact_arg(record.args)
        else:
            cleaned = redact(message, uuids=False)
            if cleaned != message:
                record.msg = cleaned
                record.args = ()

        if record.exc_info and not record.exc_text:
            # Render the traceback now (as Formatter.format would later, and
            # it reuses exc_text when set) so its text can be redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, uuids=False)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, uuids=False)
        return True
