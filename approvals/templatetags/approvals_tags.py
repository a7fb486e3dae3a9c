"""Rendering helpers for request pages: details table, times and deadlines, callback wording."""

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from django import template
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil

from approvals import delivery, stepfunctions
from approvals.details_view import (
    MAIL_LIMITS,
    PAGE_LIMITS,
    DetailLimits,
    Entries,
    Folded,
    Items,
    Text,
    bound,
    count_words,
    cut_summary,
    folded_text,
    more_text,
)
from approvals.models import AuditAction, AuditEvent, Vote
from approvals.selectors import DUE_SOON

register = template.Library()

# ---------------------------------------------------------------------------
# Details: arbitrary JSON from the workflow as an escaped, nested table
# ---------------------------------------------------------------------------
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


def _is_scalar(node) -> bool:
    return not isinstance(node, Entries | Items | Folded)


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


def _amount(node):
    """{"amount": "5300.00", "currency": "EUR"} → 5,300.00 EUR."""
    if not isinstance(node, Entries) or len(node.items) != 2 or node.more:
        return None
    lowered = {key.value.lower(): item for key, item in node.items}
    amount_key = next((key for key in lowered if key in AMOUNT_KEYS), None)
    currency_key = next((key for key in lowered if key in CURRENCY_KEYS), None)
    if amount_key is None or currency_key is None:
        return None
    amount, currency = lowered[amount_key], lowered[currency_key]
    if isinstance(amount, Text):
        amount = None if amount.cut else amount.value
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        return None
    if not isinstance(currency, Text) or currency.cut:
        return None
    try:
        number = Decimal(str(amount))
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return format_html('<span class="amount">{}\u00a0{}</span>', f"{number:,}", currency.value)


def _cut(text: str):
    return format_html('<span class="cut">{}</span>', text)


def _chars_cut(text: Text):
    return _cut(f"… {count_words(text.cut, 'more character', 'more characters')}") if text.cut else ""


def _text(node) -> SafeString | str:
    if node is None:
        return format_html('<span class="muted">{}</span>', "—")
    if isinstance(node, bool):
        return "yes" if node else "no"
    if isinstance(node, int | float):
        return format_html('<span class="num">{}</span>', node)
    text = node.value
    if not node.cut:
        link = _link(text)
        if link is not None:
            return link
    if len(text) > FOLD_AT:
        return format_html(
            '<details class="fold"><summary>{}…</summary><div class="text">{}{}</div></details>',
            text[:FOLD_PREVIEW],
            text,
            _chars_cut(node),
        )
    if "\n" in text or node.cut:
        return format_html('<span class="text">{}{}</span>', text, _chars_cut(node))
    return text


def _key(key: Text):
    return format_html("{}{}", _label(key.value), "…" if key.cut else "")


def _fold_rest(shown, rest_count: int, rest):
    if not rest_count:
        return shown
    return format_html('{}<details class="fold"><summary>{} more</summary>{}</details>', shown, rest_count, rest)


def _records_table(node: Items, depth: int):
    """A list of flat objects (order lines, say) as one table with a header row."""
    columns: list[str] = []
    labels: dict[str, Text] = {}
    for row in node.items:
        for key, _item in row.items:
            if key.value not in labels:
                columns.append(key.value)
                labels[key.value] = key

    def table(rows, more: int):
        head = format_html_join("", '<th scope="col">{}</th>', ((_key(labels[key]),) for key in columns))
        body = format_html_join(
            "",
            "<tr>{}</tr>",
            (
                (format_html_join("", "<td>{}</td>", ((_value(cells.get(key), depth + 1),) for key in columns)),)
                for cells in ({key.value: item for key, item in row.items} for row in rows)
            ),
        )
        cut = format_html('<tr><td colspan="{}">{}</td></tr>', len(columns), _cut(more_text(node))) if more else ""
        return format_html(
            '<table class="records"><thead><tr>{}</tr></thead><tbody>{}{}</tbody></table>', head, body, cut
        )

    shown, rest = node.items[:LIST_SHOWN], node.items[LIST_SHOWN:]
    if not rest:
        return table(shown, node.more)
    return _fold_rest(table(shown, 0), len(rest), table(rest, node.more))


def _list(node: Items, depth: int):
    if not node.items and not node.more:
        return format_html('<span class="muted">{}</span>', "none")
    if node.items and all(isinstance(item, Entries) and item.items and not item.more for item in node.items):
        keys = {key.value for item in node.items for key, _ in item.items}
        if len(keys) <= TABLE_MAX_COLUMNS and all(
            _is_scalar(v) or _amount(v) is not None for item in node.items for _, v in item.items
        ):
            return _records_table(node, depth)

    def items(part, more):
        return format_html(
            '<ul class="items">{}{}</ul>',
            format_html_join("", "<li>{}</li>", ((_value(i, depth + 1),) for i in part)),
            format_html("<li>{}</li>", _cut(more_text(node))) if more else "",
        )

    shown, rest = node.items[:LIST_SHOWN], node.items[LIST_SHOWN:]
    if not rest:
        return items(shown, node.more)
    return _fold_rest(items(shown, 0), len(rest), items(rest, node.more))


def _value(node, depth: int):
    if isinstance(node, Folded):
        return _cut(folded_text(node))
    if isinstance(node, Entries):
        if not node.items and not node.more:
            return format_html('<span class="muted">{}</span>', "none")
        amount = _amount(node)
        if amount is not None:
            return amount
        rows = format_html_join(
            "",
            '<tr><th scope="row">{}</th><td>{}</td></tr>',
            ((_key(key), _value(item, depth + 1)) for key, item in node.items),
        )
        more = format_html('<tr><td colspan="2">{}</td></tr>', _cut(more_text(node))) if node.more else ""
        return format_html('<table class="details">{}{}</table>', rows, more)
    if isinstance(node, Items):
        return _list(node, depth)
    return _text(node)


def bounded_details_html(
    details, *, show_all_url: str = "", limits: DetailLimits = PAGE_LIMITS, show_all_text: str = "Show all details"
):
    """Arbitrary JSON from the workflow as a nested, escaped table, bounded by `limits`; when
    something was cut, a note says what and links to `show_all_url` (the full details)."""
    if details is None or details == {}:
        return format_html('<p class="muted">{}</p>', "The workflow sent no details.")
    view = bound(details if isinstance(details, dict) else {"value": details}, limits)
    table = _value(view.root, 0)
    if not view.cut:
        return table
    note = format_html(
        '<p class="cut-note">The details are long: this shows part of them ({} left out).{}</p>',
        cut_summary(view),
        format_html(' <a href="{}" class="show-all">{}</a>', show_all_url, show_all_text) if show_all_url else "",
    )
    return format_html("{}{}", note, table)


@register.simple_tag
def details_table(details, show_all_url: str = ""):
    """Arbitrary JSON from the workflow as a nested, escaped table (approvals/details_view.py
    bounds it; "Show all details" leads to the rest)."""
    return bounded_details_html(details, show_all_url=show_all_url)


@register.simple_tag
def details_summary_table(details, request_url: str = ""):
    """A mail's summary of the details: a few top-level fields (MAIL_LIMITS), the page has the rest."""
    return bounded_details_html(
        details, show_all_url=request_url, limits=MAIL_LIMITS, show_all_text="See them all on the request page"
    )


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
register.filter("execution_console_url", stepfunctions.execution_console_url)
register.filter("state_machine_console_url", stepfunctions.state_machine_console_url)
register.filter("arn_name", stepfunctions.arn_name)


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
def request_status_words(approval) -> str:
    """The status in a sentence ("already closed by Step Functions")."""
    return delivery.request_status_words(approval)


@register.filter
def closed_by_others(approval) -> bool:
    """Step Functions or the system closed it, not whoever decided it."""
    return delivery.closed_by_others(approval)


@register.simple_tag
def outcome_title(approval, user) -> str:
    """The result page's first line: you decided it, someone else did, or the system closed it."""
    return delivery.outcome_title(approval, getattr(user, "pk", None))


@register.simple_tag
def closed_by_system_notice(approval) -> str:
    return delivery.closed_by_system_notice(approval)


@register.simple_tag
def workflow_gone_next_step() -> str:
    """What to do about a request the system closed, the start-fresh command as code."""
    command = format_html("<code>{}</code>", delivery.START_FRESH_COMMAND)
    return format_html(conditional_escape(delivery.workflow_gone_next_step("{}")), command)


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


@register.simple_tag
def withdrawn_votes(approval) -> list:
    """Votes withdrawn by the identity re-check, before the callback or at a later vote (they no
    longer count), oldest first."""
    return list(
        Vote.with_withdrawn.filter(request=approval, withdrawn_at__isnull=False)
        .select_related("user", "on_behalf_of")
        .order_by("withdrawn_at", "pk")
    )


@register.simple_tag
def reopened(approval) -> bool:
    """Whether the callback's re-check reopened the request (it had closed), rather than a vote
    withdrawn when a later one was cast."""
    return AuditEvent.objects.filter(request=approval, action=AuditAction.REOPENED).exists()
