"""Rendering helpers for request pages: details table, times and deadlines, callback wording."""

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from django import template
from django.conf import settings
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil

from approvals import delivery
from approvals.selectors import DUE_SOON

register = template.Library()

# ---------------------------------------------------------------------------
# Details: arbitrary JSON from the workflow as an escaped, nested table
# ---------------------------------------------------------------------------
MAX_DEPTH = 8
FOLD_AT = 300  # characters: longer strings are folded behind their beginning
FOLD_PREVIEW = 120
LIST_SHOWN = 20  # items: the rest of a longer list is folded
TABLE_MAX_COLUMNS = 6  # a list of flat objects with at most this many keys becomes one table
AMOUNT_KEYS = {"amount", "value"}
CURRENCY_KEYS = {"currency", "currencycode", "currency_code"}
_PLAIN_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _label(key) -> str:
    """`orderId` / `order_id` → "Order id"; anything else stays as sent (escaped)."""
    key = str(key)
    if not _PLAIN_KEY.match(key):
        return key
    words = _CAMEL.sub(" ", key).replace("_", " ").split()
    text = " ".join(words).lower()
    return text[:1].upper() + text[1:]


def _is_scalar(value) -> bool:
    return not isinstance(value, dict | list)


def _link(text: str):
    """Only http(s) URLs become links; everything else (javascript:, data:, …) stays text."""
    if len(text) > 2000 or any(ch.isspace() for ch in text):
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        return None
    return format_html('<a href="{}" rel="noopener noreferrer nofollow">{}</a>', text, text)


def _amount(value: dict):
    """{"amount": "5300.00", "currency": "EUR"} → 5,300.00 EUR."""
    if len(value) != 2:
        return None
    lowered = {str(key).lower(): item for key, item in value.items()}
    amount_key = next((key for key in lowered if key in AMOUNT_KEYS), None)
    currency_key = next((key for key in lowered if key in CURRENCY_KEYS), None)
    if amount_key is None or currency_key is None:
        return None
    amount, currency = lowered[amount_key], lowered[currency_key]
    if isinstance(amount, bool) or not isinstance(amount, int | float | str) or not isinstance(currency, str):
        return None
    try:
        number = Decimal(str(amount))
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return format_html('<span class="amount">{}\u00a0{}</span>', f"{number:,}", currency)


def _text(value) -> SafeString | str:
    if value is None:
        return format_html('<span class="muted">{}</span>', "—")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_html('<span class="num">{}</span>', value)
    text = str(value)
    link = _link(text)
    if link is not None:
        return link
    if len(text) > FOLD_AT:
        return format_html(
            '<details class="fold"><summary>{}…</summary><div class="text">{}</div></details>',
            text[:FOLD_PREVIEW],
            text,
        )
    if "\n" in text:
        return format_html('<span class="text">{}</span>', text)
    return text


def _fold_rest(shown, rest_count: int, rest):
    if not rest_count:
        return shown
    return format_html('{}<details class="fold"><summary>{} more</summary>{}</details>', shown, rest_count, rest)


def _records_table(items: list[dict], depth: int):
    """A list of flat objects (order lines, say) as one table with a header row."""
    columns: list = []
    for item in items:
        for key in item:
            if key not in columns:
                columns.append(key)

    def table(rows):
        head = format_html_join("", '<th scope="col">{}</th>', ((_label(key),) for key in columns))
        body = format_html_join(
            "",
            "<tr>{}</tr>",
            (
                (format_html_join("", "<td>{}</td>", ((_value(row.get(key), depth + 1),) for key in columns)),)
                for row in rows
            ),
        )
        return format_html('<table class="records"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body)

    rest = items[LIST_SHOWN:]
    return _fold_rest(table(items[:LIST_SHOWN]), len(rest), table(rest) if rest else "")


def _list(value: list, depth: int):
    if not value:
        return format_html('<span class="muted">{}</span>', "none")
    if all(isinstance(item, dict) and item for item in value):
        keys = {key for item in value for key in item}
        if len(keys) <= TABLE_MAX_COLUMNS and all(_is_scalar(v) or _amount_like(v) for i in value for v in i.values()):
            return _records_table(value, depth)

    def items(part):
        return format_html(
            '<ul class="items">{}</ul>', format_html_join("", "<li>{}</li>", ((_value(i, depth + 1),) for i in part))
        )

    rest = value[LIST_SHOWN:]
    return _fold_rest(items(value[:LIST_SHOWN]), len(rest), items(rest) if rest else "")


def _amount_like(value) -> bool:
    return isinstance(value, dict) and _amount(value) is not None


def _value(value, depth: int):
    if depth > MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        if not value:
            return format_html('<span class="muted">{}</span>', "none")
        amount = _amount(value)
        if amount is not None:
            return amount
        rows = format_html_join(
            "",
            '<tr><th scope="row">{}</th><td>{}</td></tr>',
            ((_label(key), _value(item, depth + 1)) for key, item in value.items()),
        )
        return format_html('<table class="details">{}</table>', rows)
    if isinstance(value, list):
        return _list(value, depth)
    return _text(value)


@register.simple_tag
def details_table(details):
    """Arbitrary JSON from the workflow as a nested, escaped table."""
    if details is None or details == {}:
        return format_html('<p class="muted">{}</p>', "The workflow sent no details.")
    if not isinstance(details, dict):
        details = {"value": details}
    return _value(details, 0)


# ---------------------------------------------------------------------------
# Times: relative text, the absolute time on hover (portal.js shows it in the viewer's zone)
# ---------------------------------------------------------------------------
def _absolute(value: datetime) -> str:
    return format_date(timezone.localtime(value), "D j M Y, H:i T")


def _time(value: datetime, text: str, css: str = "", *, absolute: bool = False):
    """`data-local`: portal.js puts the time in the viewer's zone into the title, and for
    absolute times ("text") into the text too."""
    return format_html(
        '<time datetime="{}" title="{}" data-local="{}"{}>{}</time>',
        value.isoformat(),
        _absolute(value),
        "text" if absolute else "title",
        format_html(' class="{}"', css) if css else "",
        text,
    )


@register.simple_tag
def relative_time(value: datetime | None):
    """`3 hours ago` / `in 2 days`, with the exact time as the title."""
    if value is None:
        return format_html('<span class="muted">{}</span>', "—")
    now = timezone.now()
    if abs((now - value).total_seconds()) < 60:
        return _time(value, "just now")
    if value <= now:
        return _time(value, f"{timesince(value, now, depth=1)} ago")
    return _time(value, f"in {timeuntil(value, now, depth=1)}")


@register.simple_tag
def absolute_time(value: datetime | None):
    if value is None:
        return format_html('<span class="muted">{}</span>', "—")
    return _time(value, _absolute(value), absolute=True)


@register.simple_tag
def deadline(approval):
    """A pending request's deadline: overdue, due soon (marked), or how long is left."""
    value = approval.deadline
    if value is None:
        return format_html('<span class="muted">{}</span>', "no deadline")
    if not approval.is_pending:
        return _time(value, _absolute(value), absolute=True)
    now = timezone.now()
    if value <= now:
        return _time(value, f"overdue by {timesince(value, now, depth=1)}", "due due-overdue")
    if value - now <= DUE_SOON:
        return _time(value, f"due in {timeuntil(value, now, depth=1)}", "due due-soon")
    return _time(value, f"in {timeuntil(value, now, depth=1)}", "due")


# ---------------------------------------------------------------------------
# Step Functions: names, console links, callback wording
# ---------------------------------------------------------------------------
def _region(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else settings.AWS_REGION


@register.filter
def execution_console_url(arn: str) -> str:
    return f"https://console.aws.amazon.com/states/home?region={_region(arn)}#/v2/executions/details/{arn}"


@register.filter
def state_machine_console_url(arn: str) -> str:
    return f"https://console.aws.amazon.com/states/home?region={_region(arn)}#/statemachines/view/{arn}"


@register.filter
def arn_name(arn: str) -> str:
    """`arn:aws:states:…:stateMachine:approval-demo` → approval-demo; executions: `machine/name`."""
    parts = (arn or "").split(":")
    if len(parts) >= 7 and parts[0] == "arn":
        return "/".join(parts[6:]) if parts[5] == "execution" else parts[-1]
    return arn


@register.simple_tag
def callback_status(callback):
    return delivery.callback_label(callback)


@register.filter
def callback_final(callback) -> bool:
    """Nothing more will happen to it on its own (the page stops checking)."""
    return delivery.is_final(callback)


@register.filter
def request_status_label(approval) -> str:
    """Expired in the portal, or closed by Step Functions: the status words tell them apart."""
    return delivery.request_status_label(approval)


@register.filter
def humanize_action(action: str) -> str:
    return action.replace("_", " ")


# ---------------------------------------------------------------------------
# The inbox's links: the current query string with some parameters changed
# ---------------------------------------------------------------------------
# Where the inbox's page links point (approvals/paginators.py seek_page): a link to another
# tab, filter or sort starts at its first page.
PAGE_PARAMETERS = ("page", "after", "before")


@register.simple_tag(takes_context=True)
def query(context, **changes) -> str:
    """`?tab=…&q=…` keeping the current filters, not the page; None or "" drops the parameter."""
    params = {key: value for key, value in context["request"].GET.items() if key not in PAGE_PARAMETERS}
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = value
    return "?" + urlencode(params) if params else "?"


@register.filter
def approvals_count(approval) -> int:
    """How many approvals a request has so far (from its prefetched votes)."""
    return sum(1 for vote in approval.votes.all() if vote.approve)
