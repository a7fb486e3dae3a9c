"""The bounded view of a request's `details`: the part of arbitrary JSON that a page, the admin or
a mail shows, and a clear count of what it left out.

A message may carry up to 256 KiB of details (contract.DEFAULT_MAX_BYTES). Rendered whole as a
nested table, a large but valid message made a request page of megabytes. Every rendering
therefore starts from `bound(details, limits)`, which walks at most what it will show:

- `max_depth`: objects and lists deeper than this are one line ("{…} 12 fields");
- `max_items`: the items of one object or list shown; the rest is counted ("… 1,234 more items");
- `max_chars`: the characters of one text (key or value) shown; the rest is counted;
- `max_total_chars` and `max_values`: the budget of the whole view. It is spent breadth-first
  (every top-level field before anything nested), so a huge first field cannot hide the others.

The full details are served on their own URL ("show all", approvals/views/ `request_details`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import islice


@dataclass(frozen=True)
class DetailLimits:
    max_depth: int
    max_items: int
    max_chars: int
    max_total_chars: int
    max_values: int


# The request page, the confirm page and the admin's request page.
PAGE_LIMITS = DetailLimits(max_depth=8, max_items=50, max_chars=2_000, max_total_chars=20_000, max_values=600)
# Mails (and Slack): a summary of the top-level fields; the request page has the rest.
MAIL_LIMITS = DetailLimits(max_depth=2, max_items=8, max_chars=200, max_total_chars=1_000, max_values=20)


@dataclass
class Text:
    """A string (or a key), cut to its first characters; `cut` characters were left out."""

    value: str
    cut: int = 0


@dataclass
class Entries:
    """An object: its first entries (key, value); `more` entries were left out."""

    items: list[tuple[Text, object]] = field(default_factory=list)
    more: int = 0
    size: int = 0


@dataclass
class Items:
    """A list: its first items; `more` items were left out."""

    items: list[object] = field(default_factory=list)
    more: int = 0
    size: int = 0


@dataclass(frozen=True)
class Folded:
    """An object or list not opened (too deep, or the budget was spent): only its size."""

    kind: str  # "object" | "list"
    size: int


# A node of the view: Entries, Items, Folded, Text, or a JSON scalar (None, bool, int, float).


@dataclass
class BoundedDetails:
    root: object
    items_cut: int = 0  # entries and items left out (a folded object or list: its own size)
    chars_cut: int = 0  # characters left out of texts that are shown in part

    @property
    def cut(self) -> bool:
        return bool(self.items_cut or self.chars_cut)


class _Budget:
    def __init__(self, limits: DetailLimits) -> None:
        self.limits = limits
        self.chars = limits.max_total_chars
        self.values = limits.max_values
        self.view = BoundedDetails(root=None)

    @property
    def spent(self) -> bool:
        return self.values <= 0 or self.chars <= 0

    def text(self, value: str) -> Text:
        shown = min(len(value), self.limits.max_chars, max(self.chars, 0))
        self.chars -= max(shown, 1)
        text = Text(value[:shown], len(value) - shown)
        self.view.chars_cut += text.cut
        return text

    def scalar(self, value):
        if value is None or isinstance(value, bool | int | float):
            self.chars -= len(str(value)) if isinstance(value, int | float) else 1
            return value
        return self.text(value if isinstance(value, str) else str(value))


def bound(details, limits: DetailLimits = PAGE_LIMITS) -> BoundedDetails:
    """The part of `details` to show under `limits`; never reads more of it than it shows."""
    budget = _Budget(limits)
    pending: deque = deque()

    def node(value, depth: int):
        budget.values -= 1
        if isinstance(value, dict | list):
            kind = "object" if isinstance(value, dict) else "list"
            if not value:
                return Entries() if kind == "object" else Items()
            if depth >= limits.max_depth:
                budget.view.items_cut += len(value)
                return Folded(kind, len(value))
            container = Entries(size=len(value)) if kind == "object" else Items(size=len(value))
            pending.append((value, container, depth))
            return container
        return budget.scalar(value)

    budget.view.root = node(details, 0)
    while pending:
        value, container, depth = pending.popleft()
        shown = 0
        if isinstance(container, Entries):
            for key, item in islice(value.items(), limits.max_items):
                if budget.spent:
                    break
                container.items.append((budget.text(str(key)), node(item, depth + 1)))
                shown += 1
        else:
            for item in islice(value, limits.max_items):
                if budget.spent:
                    break
                container.items.append(node(item, depth + 1))
                shown += 1
        container.more = len(value) - shown
        budget.view.items_cut += container.more
    return budget.view


def count_words(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def more_text(node) -> str:
    """ "… 1,234 more items" under a cut object or list."""
    if isinstance(node, Entries):
        return f"… {count_words(node.more, 'more field', 'more fields')}"
    return f"… {count_words(node.more, 'more item', 'more items')}"


def folded_text(node: Folded) -> str:
    if node.kind == "object":
        return "{…} " + count_words(node.size, "field", "fields")
    return "[…] " + count_words(node.size, "item", "items")


def cut_summary(view: BoundedDetails) -> str:
    """What the view left out, in words: "1,234 items and 5,678 characters"."""
    parts = []
    if view.items_cut:
        parts.append(count_words(view.items_cut, "item", "items"))
    if view.chars_cut:
        parts.append(count_words(view.chars_cut, "character", "characters"))
    return " and ".join(parts)


# ---------------------------------------------------------------------------
# Plain text: "key: value" lines (mails, Slack)
# ---------------------------------------------------------------------------
def scalar_text(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Text):
        return " ".join(value.value.split()) + ("…" if value.cut else "")
    return str(value)


def text_lines(view: BoundedDetails, *, indent: int = 0) -> list[str]:
    """The view as indented "key: value" lines, with a line for each cut."""
    lines: list[str] = []

    def walk(node, depth: int, label: str) -> None:
        pad = "  " * (indent + depth)
        prefix = "- " if label == "-" else f"{label}: " if label else ""
        if isinstance(node, Entries | Items) and (node.items or node.more):
            if label:
                lines.append(f"{pad}-" if label == "-" else f"{pad}{label}:")
            inner = depth + 1 if label or isinstance(node, Items) else depth
            if isinstance(node, Entries):
                for key, item in node.items:
                    walk(item, inner, scalar_text(key))
            else:
                for item in node.items:
                    walk(item, inner, "-")
            if node.more:
                lines.append("  " * (indent + inner) + more_text(node))
        elif isinstance(node, Entries | Items):
            lines.append(f"{pad}{prefix}—")
        elif isinstance(node, Folded):
            lines.append(f"{pad}{prefix}{folded_text(node)}")
        else:
            lines.append(f"{pad}{prefix}{scalar_text(node)}")

    walk(view.root, 0, "")
    return lines
