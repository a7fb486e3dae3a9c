"""What reaches the terminal: text from the portal or the IdP is data, never terminal control.

Titles, comments, names and details come from other people (and ultimately from state machine
input). Printed raw, an escape sequence could rewrite the screen, hide a line, set the window
title or fake a prompt; a bidi override could make "approve" read as something else. Every
string printed goes through `safe()`; `--json` output is ASCII-only JSON, so it can't carry
them either.
"""

import json
import unicodedata

# Control (C0, C1, DEL), format (bidi overrides, zero-width), surrogates, private use and
# unassigned code points, and the Unicode line/paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe(value: object, *, multiline: bool = False) -> str:
    """`value` as printable text: every control/format character shown as a visible escape.

    With `multiline`, line breaks (\\n) are kept; everything else is escaped, \\r and \\t too.
    """
    text = "" if value is None else str(value)
    out = []
    for char in text:
        if multiline and char == "\n":
            out.append(char)
        elif unicodedata.category(char) in _ESCAPED_CATEGORIES:
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def width(text: str) -> int:
    """Columns `text` takes in a terminal: wide East Asian characters take two, combining marks none."""
    total = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me"):
            continue
        total += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return total


def truncate(text: str, columns: int) -> str:
    if width(text) <= columns:
        return text
    out, used = [], 0
    for char in text:
        char_width = width(char)
        if used + char_width > columns - 1:
            break
        out.append(char)
        used += char_width
    return "".join(out) + "…"


def pad(text: str, columns: int) -> str:
    return text + " " * max(0, columns - width(text))


def table(headers: list[str], rows: list[list[object]], max_widths: dict[int, int] | None = None) -> str:
    """A plain aligned table; cells pass through `safe()` and are cut at `max_widths[column]`."""
    max_widths = max_widths or {}
    cells = [[safe(cell) for cell in row] for row in rows]
    cells = [
        [truncate(cell, max_widths[index]) if index in max_widths else cell for index, cell in enumerate(row)]
        for row in cells
    ]
    widths = [max([width(header)] + [width(row[index]) for row in cells]) for index, header in enumerate(headers)]
    lines = ["  ".join(pad(header, widths[index]) for index, header in enumerate(headers)).rstrip()]
    lines += ["  ".join(pad(cell, widths[index]) for index, cell in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def as_json(document: object) -> str:
    """Machine output: indented, key order kept, ASCII-only (every non-ASCII character escaped)."""
    return json.dumps(document, indent=2, ensure_ascii=True)
