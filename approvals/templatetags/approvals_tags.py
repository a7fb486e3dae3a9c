"""Rendering helpers for request pages: the details table and callback wording."""

from django import template
from django.utils.html import format_html, format_html_join

register = template.Library()

MAX_DEPTH = 8
FOLD_AT = 500


def _value(value, depth: int):
    if depth > MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        if not value:
            return "—"
        rows = format_html_join(
            "",
            '<tr><th scope="row">{}</th><td>{}</td></tr>',
            ((key, _value(item, depth + 1)) for key, item in value.items()),
        )
        return format_html('<table class="details">{}</table>', rows)
    if isinstance(value, list):
        if not value:
            return "—"
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((_value(item, depth + 1),) for item in value))
        )
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if len(text) > FOLD_AT:
        return format_html("<details><summary>{}…</summary>{}</details>", text[:120], text)
    return text


@register.simple_tag
def details_table(details):
    """Arbitrary JSON from the workflow as a nested, escaped table."""
    if details is None or details == {}:
        return format_html('<p class="muted">{}</p>', "The workflow sent no details.")
    if not isinstance(details, dict):
        details = {"value": details}
    return _value(details, 0)


CALLBACK_WORDING = {
    "pending": "queued to be sent",
    "sending": "being sent",
    "retrying": "waiting to retry",
    "delivered": "sent to Step Functions",
}
CLOSED_ELSEWHERE = {
    "TaskTimedOut": "the workflow had already timed out",
    "TaskDoesNotExist": "the workflow no longer waits for it",
    "InvalidToken": "the workflow no longer waits for it",
}


@register.simple_tag
def callback_status(callback):
    if callback.status == "failed":
        return f"not sent: {CLOSED_ELSEWHERE.get(callback.error_code, 'failed, an admin has been told')}"
    return CALLBACK_WORDING.get(callback.status, callback.status)


@register.filter
def humanize_action(action: str) -> str:
    return action.replace("_", " ")
