"""What a notification says, whatever the channel: built from the row when it is sent.

Decision links (signed, approvals/links.py) go only to someone who may decide the request now
(permissions.decision_refusal for a known user, a named assignee otherwise): an escalation to
admins or a digest never carries buttons that would only lead to a refusal page.
"""

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.conf import settings
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from approvals import delivery, links, one_click, permissions
from approvals.details_view import MAIL_LIMITS, bound, text_lines
from approvals.models import (
    ApprovalRequest,
    Assignment,
    CallbackResolution,
    CallbackStatus,
    InfoMessage,
    Notification,
    RequestStatus,
    User,
)

MAX_SUBJECT_TITLE = 120
MAX_DETAIL_LINES = 40
MAX_DIGEST_ITEMS = 50

OUTCOME_WORDS = {
    RequestStatus.APPROVED: "Approved",
    RequestStatus.REJECTED: "Rejected",
    RequestStatus.CANCELLED: "Cancelled",
    RequestStatus.EXPIRED: "Expired",
    RequestStatus.CLOSED: delivery.CLOSED_BY_SYSTEM,
}


@dataclass(frozen=True)
class PendingItem:
    title: str
    url: str
    received_at: datetime
    requester: str


@dataclass(frozen=True)
class OptionLink:
    """One button of a request with options: its label, its signed link, success or failure."""

    label: str
    url: str
    outcome: str


@dataclass(frozen=True)
class MessageContent:
    kind: str
    subject: str
    headline: str
    intro: str
    request: ApprovalRequest | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)
    comment: str = ""
    comment_label: str = "Comment"
    approve_url: str = ""
    reject_url: str = ""
    request_url: str = ""
    admin_url: str = ""
    preferences_url: str = ""
    pending: list[PendingItem] = field(default_factory=list)
    option_links: list[OptionLink] = field(default_factory=list)
    # The request's form has required fields: the approver decides on its page, not by a link.
    needs_page: bool = False

    @property
    def has_decision_links(self) -> bool:
        return bool(self.approve_url and self.reject_url)


def one_line(text: str, limit: int = MAX_SUBJECT_TITLE) -> str:
    """Whitespace (newlines too: a subject is a header) folded to single spaces, and cut."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def portal_url(path: str) -> str:
    return settings.PORTAL_BASE_URL + path


# A batch of sends (recipients_preloaded): each recipient's active account, read once.
_batch_recipients: ContextVar[dict[str, User | None] | None] = ContextVar("batch_recipients", default=None)


@contextlib.contextmanager
def recipients_preloaded(notifications: Iterable[Notification]) -> Iterator[None]:
    """For a batch of sends: each recipient's active account, its SSO groups and the delegations
    it holds, read in four queries for the whole batch instead of several per message (what
    may_decide asks for every approver's mail). Read at the start of the batch: a change made
    while it sends shows in the next one (a decision link is checked again when it is used)."""
    emails = {notification.recipient.lower() for notification in notifications if "@" in notification.recipient}
    found: dict[str, User | None] = dict.fromkeys(emails)
    if emails:
        users = (
            User.objects.annotate(email_lower=Lower("email"))
            .filter(email_lower__in=emails, is_active=True)
            .order_by("pk")
        )
        for user in users:
            found[user.email_lower] = found[user.email_lower] or user
        people = [user for user in found.values() if user is not None]
        permissions.preload_group_names(people)
        permissions.preload_delegations(people)
    token = _batch_recipients.set(found)
    try:
        yield
    finally:
        _batch_recipients.reset(token)


def user_for_email(email: str) -> User | None:
    """The active account with this email (one email belongs to one active account)."""
    if not email:
        return None
    batch = _batch_recipients.get()
    if batch is not None and email.lower() in batch:
        return batch[email.lower()]
    return (
        User.objects.annotate(email_lower=Lower("email"))
        .filter(email_lower=email.lower(), is_active=True)
        .order_by("pk")
        .first()
    )


def may_decide(email: str, request: ApprovalRequest) -> bool:
    """Would this recipient be allowed to decide now? (Only then do they get decision links.)"""
    user = user_for_email(email)
    if user is not None:
        return permissions.decision_refusal(user, request) is None
    # Not signed in yet: a named assignee may decide after their first sign-in.
    email = email.lower()
    if not request.is_pending or email == request.requester_email.lower():
        return False
    return request.assignments.filter(kind=Assignment.Kind.USER, value=email).exists()


def approvers_text(request: ApprovalRequest) -> str:
    names = [
        f"group {assignment.value}" if assignment.kind == Assignment.Kind.GROUP else assignment.value
        for assignment in request.assignments.all()
    ]
    return ", ".join(names) or "—"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "none"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


def _request_facts(request: ApprovalRequest) -> list[tuple[str, str]]:
    facts = [
        ("Requester", request.requester_email or "—"),
        ("Approvers", approvers_text(request)),
        ("Received", _when(request.received_at)),
        ("Deadline", _when(request.deadline)),
    ]
    if request.state_name:
        facts.append(("Step", request.state_name))
    return facts


def _approver_content(notification: Notification, request: ApprovalRequest) -> dict:
    kind = notification.kind
    title = one_line(request.title)
    waiting = timesince(request.received_at, timezone.now())
    requester = request.requester_email or "A workflow"
    if kind == Notification.Kind.NEW_REQUEST:
        subject, headline, intro = (
            f"Approval needed: {title}",
            "Approval needed",
            f"{requester} asks for your approval.",
        )
    elif kind == Notification.Kind.REASSIGNED:
        subject, headline, intro = (
            f"Approval needed (reassigned to you): {title}",
            "Reassigned to you",
            "An admin made you an approver of this request.",
        )
    elif kind == Notification.Kind.REOPENED:
        subject, headline, intro = (
            f"Approval needed again: {title}",
            "Waiting for a decision again",
            "A vote on this request no longer counts (its approver may no longer decide it), "
            "so it waits for a decision again.",
        )
    elif kind == Notification.Kind.REMINDER:
        subject, headline, intro = (
            f"Reminder: approval needed: {title}",
            "Still waiting for a decision",
            f"This request has been waiting for a decision for {waiting}.",
        )
    elif kind == Notification.Kind.APPROVER_LOST:
        subject, headline, intro = (
            f"An approver was deprovisioned: {title}",
            "An approver left",
            "An approver of this request was deactivated by the company's identity provider (SCIM): "
            "their vote, if any, no longer counts. Check that someone can still decide it, or reassign it.",
        )
    else:  # escalation
        subject, headline, intro = (
            f"Escalated: no decision on {title}",
            "No decision yet",
            f"Nobody has decided this request in {waiting}. Its approvers: {approvers_text(request)}. "
            "Decide it, or reassign it in the admin.",
        )
    content = {"subject": subject, "headline": headline, "intro": intro}
    if notification.channel == Notification.Channel.EMAIL and may_decide(notification.recipient, request):
        content.update(_decision_links(request, notification.recipient))
    if kind in (Notification.Kind.ESCALATION, Notification.Kind.APPROVER_LOST):
        content["admin_url"] = portal_url(reverse("admin:approvals_approvalrequest_change", args=[request.pk]))
    return content


def _decision_links(request: ApprovalRequest, recipient: str) -> dict:
    """Approve/Reject links, one link per option, or none when the form must be filled in
    on the page (approvals/one_click.py)."""
    if one_click.needs_page(request):
        return {"needs_page": True}
    if not one_click.has_options(request):
        return {
            f"{action}_url": links.decision_link_url(
                public_id=request.public_id, approver_email=recipient, action=action
            )
            for action in ("approve", "reject")
        }
    return {
        "option_links": [
            OptionLink(
                label=option.label,
                url=links.decision_link_url(
                    public_id=request.public_id, approver_email=recipient, action=links.OPTION, option=option.id
                ),
                outcome=option.outcome,
            )
            for option in one_click.choices(request)
        ]
    }


# The decision a failed callback carried, when Step Functions closing the task has since made
# the request "expired" in the portal (services/callbacks.py: _close_request).
_DECISION_OF_ERROR = {
    "ApprovalDenied": RequestStatus.REJECTED,
    "ApprovalCancelled": RequestStatus.CANCELLED,
    "ApprovalExpired": RequestStatus.EXPIRED,
}


def _decision_sent(request: ApprovalRequest, callback) -> str:
    """What the portal decided: the request's status, or the decision its callback carried."""
    if callback is None:
        return request.status
    if callback.kind == "success":
        return RequestStatus.APPROVED
    return _DECISION_OF_ERROR.get(callback.payload.get("error", ""), request.status)


def undelivered_decision(request: ApprovalRequest) -> str:
    """For a request Step Functions or the system closed after someone decided it: who decided
    what, and that the workflow did not get it ("" when the closing was the decision itself)."""
    if request.decided_by_id is None:
        return ""
    if not delivery.closed_by_others(request):
        return ""
    callback = delivery.request_callback(request)
    decided = _decision_sent(request, callback)
    word = OUTCOME_WORDS.get(decided, request.get_status_display())
    if delivery.closed_by_system(request) and callback is not None and callback.maybe_delivered:
        why = "the portal cannot tell whether the decision reached the workflow before it was gone"
    else:
        why = "the decision did not reach the workflow"
    return f"{word} by {request.decided_by.email}, but {why}."


def _outcome_content(request: ApprovalRequest) -> dict:
    """The requester's outcome, planned only once the callback's fate is known: delivered, or
    why the decision could not reach the workflow (approvals/delivery.py words it)."""
    title = one_line(request.title)
    callback = delivery.request_callback(request)
    decided = _decision_sent(request, callback)
    word = OUTCOME_WORDS.get(decided, request.get_status_display())
    decider = request.decided_by.email if request.decided_by_id else ""
    if delivery.closed_by_system(request):
        # The workflow no longer exists: the headline is the system's closing, not the decision.
        intro = delivery.closed_by_system_mail_intro(request, decider=decider, decision_word=word)
        word = delivery.CLOSED_BY_SYSTEM
        return {
            "subject": f"{word}: {title}",
            "headline": word,
            "intro": intro,
            "comment": request.decision_comment,
            "request_url": portal_url(reverse("request-result", args=[request.public_id])),
        }
    if decided == RequestStatus.EXPIRED and delivery.closed_by_step_functions(request) and callback is None:
        word = delivery.CLOSED_BY_STEP_FUNCTIONS
        intro = (
            "Step Functions stopped waiting for your request (the task timed out or the execution ended) "
            "before anyone decided it."
        )
    elif decided == RequestStatus.EXPIRED:
        intro = "Nobody decided your request before its deadline."
    elif decided == RequestStatus.CANCELLED:
        intro = f"{decider or 'An admin'} cancelled your request."
    else:
        intro = f"{decider or 'An approver'} {word.lower()} your request."
    subject = f"{word}: {title}"
    headline = word
    if callback is not None and callback.status == CallbackStatus.FAILED:
        if callback.resolution == CallbackResolution.UNCERTAIN:
            headline = f"{word}, not confirmed by the workflow"
            intro += " The portal could not confirm that the decision reached the workflow; an admin will check."
        else:
            headline = f"{word}, but the workflow was not told"
            intro += f" The decision could not reach the workflow: {delivery.failure_reason(callback)}."
        subject = f"{headline}: {title}"
    elif callback is not None and callback.status == CallbackStatus.DELIVERED:
        intro += " The workflow was told it expired." if decided == RequestStatus.EXPIRED else " The workflow was told."
    return {
        "subject": subject,
        "headline": headline,
        "intro": intro,
        "comment": request.decision_comment,
        "request_url": portal_url(reverse("request-result", args=[request.public_id])),
    }


def _conversation_content(notification: Notification, request: ApprovalRequest) -> dict:
    """A question (to the requester) or an answer (to the approvers): the text and a link to the
    request page, never decision links (the answer is read on the page, and decided there)."""
    title = one_line(request.title)
    url = portal_url(reverse("request-detail", args=[request.public_id]))
    # The message the row was planned for is the last of its kind by then: the rows share its
    # created_at (services.notifications.conversation_notify).
    kind = InfoMessage.Kind.QUESTION if notification.kind == Notification.Kind.QUESTION else InfoMessage.Kind.ANSWER
    earlier = list(request.info_messages.filter(created_at__lte=notification.created_at).order_by("created_at", "id"))
    index = max((i for i, each in enumerate(earlier) if each.kind == kind), default=None)
    text = earlier[index].text if index is not None else ""
    if kind == InfoMessage.Kind.QUESTION:
        asker = earlier[index].author_label if index is not None else "An approver"
        return {
            "subject": f"Question about your request: {title}",
            "headline": "A question for you",
            "intro": f"{asker} asks:",
            "comment": text,
            "comment_label": "Question",
            "request_url": url,
        }
    questions = [question.text for question in InfoMessage.unanswered(earlier[:index])]  # what it answers
    return {
        "subject": f"The requester answered: {title}",
        "headline": "The requester answered",
        "intro": f"The requester ({request.requester_email}) answered:",
        "comment": text,
        "comment_label": "Answer",
        "request_url": url,
        "facts": [("Question", one_line(question, 300)) for question in questions],
    }


def build(notification: Notification, *, pending: list[ApprovalRequest] | None = None) -> MessageContent:
    """The content of one notification, for its recipient."""
    preferences = portal_url(reverse("notification-preferences"))
    if notification.kind == Notification.Kind.DIGEST:
        items = [
            PendingItem(
                title=one_line(item.title),
                url=portal_url(reverse("request-detail", args=[item.public_id])),
                received_at=item.received_at,
                requester=item.requester_email,
            )
            for item in (pending or [])[:MAX_DIGEST_ITEMS]
        ]
        count = len(pending or [])
        return MessageContent(
            kind=notification.kind,
            subject=f"{count} approval requests wait for you",
            headline="Waiting for you",
            intro=f"{count} approval requests wait for your decision.",
            pending=items,
            request_url=portal_url(reverse("inbox")),
            preferences_url=preferences,
        )
    request = notification.request
    if notification.kind == Notification.Kind.OUTCOME:
        parts = _outcome_content(request)
    elif notification.kind in (Notification.Kind.QUESTION, Notification.Kind.ANSWER):
        parts = _conversation_content(notification, request)
    else:
        parts = _approver_content(notification, request)
        parts.setdefault("request_url", portal_url(reverse("request-detail", args=[request.public_id])))
    facts = parts.pop("facts", []) + _request_facts(request)
    return MessageContent(kind=notification.kind, request=request, facts=facts, preferences_url=preferences, **parts)


def detail_lines(details, *, indent: int = 0, limit: int = MAX_DETAIL_LINES) -> list[str]:
    """The workflow's details as indented "key: value" lines (Slack): the bounded view of
    approvals/details_view.py, at most `limit` lines."""
    if details in (None, {}):
        return []
    limits = replace(MAIL_LIMITS, max_depth=3, max_items=10, max_chars=300, max_total_chars=3_000, max_values=limit)
    view = bound(details if isinstance(details, dict | list) else {"value": details}, limits)
    lines = text_lines(view, indent=indent)
    if len(lines) >= limit:
        lines = lines[:limit] + ["…"]
    return lines


def details_summary(details, *, indent: int = 0) -> list[str]:
    """A mail's summary of the details: a few top-level fields as "key: value" lines
    (details_view.MAIL_LIMITS), with what was left out counted; the request page has the rest."""
    if details in (None, {}):
        return []
    return text_lines(bound(details if isinstance(details, dict) else {"value": details}, MAIL_LIMITS), indent=indent)
