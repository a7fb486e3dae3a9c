"""What a one-click channel may offer: an email link, a Slack button, an admin bulk action.

Such a channel cannot fill in a form, so it offers a request's options only when choosing
them needs no input (docs/approver-input.md, "Channels"):

- a request without options and without a required form: today's Approve and Reject;
- a request with options and no required form: one button per option;
- a form with required fields: no decision buttons at all, only a link to the request page
  (which renders the form). A failure option would need no input, but one channel message
  showing only "Reject" would steer the approver; the page shows every option.

An admin bulk action (approve/reject the selected requests) maps to an option only when that is
unambiguous: "approve" to a request's only success option, "reject" to its only failure option.

Pure: no database. Whatever is offered, the decision service checks the chosen option again.
"""

from __future__ import annotations

from dataclasses import dataclass

from approvals.answers import needs_input
from approvals.contract import ApprovalOption, stored_options


@dataclass(frozen=True)
class BulkChoice:
    """What a bulk action decides on one request: ``approve`` without options, else ``choice``."""

    approve: bool | None = None
    choice: tuple[str, ...] = ()


class OneClickRefused(Exception):
    """This request cannot be decided by this one-click action; ``message`` says why."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


def has_options(request) -> bool:
    return bool(request.options)


def needs_page(request) -> bool:
    """True when the approver must decide on the request page: its form has required fields."""
    return needs_input(request.form_schema, "success")


def choices(request) -> tuple[ApprovalOption, ...]:
    """The buttons a one-click channel shows: the request's options (or approve/reject), or
    none when the request needs the page."""
    return () if needs_page(request) else stored_options(request.options)


def option(request, option_id: str) -> ApprovalOption | None:
    """The request's option with this id, or None (a link or a button naming another one)."""
    return next((each for each in stored_options(request.options) if each.id == option_id), None)


def bulk_choice(request, *, approve: bool) -> BulkChoice:
    """What "approve/reject the selected requests" means for this request, or OneClickRefused."""
    if approve and needs_page(request):
        raise OneClickRefused("Its form has required fields: approve it on its page, where the form is.", "needs_input")
    if not has_options(request):
        return BulkChoice(approve=approve)
    outcome = "success" if approve else "failure"
    matching = [each for each in stored_options(request.options) if each.outcome == outcome]
    if len(matching) != 1:
        labels = ", ".join(f"“{each.label}”" for each in matching) or "none"
        word = "success" if approve else "failure"
        raise OneClickRefused(
            f"It offers {len(matching)} {word} options ({labels}), not one: choose on its page.",
            "option_ambiguous",
        )
    return BulkChoice(choice=(matching[0].id,))
