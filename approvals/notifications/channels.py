"""One send: build the content for the recipient and hand it to the channel.

Called by approvals/tasks/notifications.py for a claimed row; raises DeliveryError when the channel
does not take it (the task retries or marks it failed).
"""

import contextlib
import logging
from collections.abc import Iterator

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from approvals import delivery
from approvals.models import ApprovalRequest, CallbackStatus, Notification
from approvals.notifications import DeliveryError, email, messages, slack
from approvals.selectors.notifications import pending_requests_for

logger = logging.getLogger(__name__)


class NothingToSend(Exception):
    """The notification is moot now (an empty digest, a disabled channel)."""


@contextlib.contextmanager
def batch_of(notifications: list[Notification]) -> Iterator[None]:
    """For a batch of sends: one mail backend connection (SMTP), one Slack HTTP session, and the
    recipients' accounts read once (messages.recipients_preloaded)."""
    with email.shared_connection(), slack.shared_session(), messages.recipients_preloaded(notifications):
        yield


def deliver(notification: Notification) -> str:
    """Send it; returns a reference to the sent message ("channel:ts" for Slack, else "")."""
    pending = None
    if notification.kind == Notification.Kind.DIGEST:
        user = messages.user_for_email(notification.recipient)
        pending = list(pending_requests_for(user, now=timezone.now())) if user is not None else []
        if not pending:
            raise NothingToSend
    content = messages.build(notification, pending=pending)
    if notification.channel == Notification.Channel.EMAIL:
        email.send(content, to=notification.recipient)
        return ""
    return _send_slack(notification, content)


def _send_slack(notification: Notification, content: messages.MessageContent) -> str:
    if not slack.enabled():
        raise NothingToSend
    request = notification.request
    is_person = "@" in notification.recipient
    if notification.kind == Notification.Kind.OUTCOME:
        text, blocks = _outcome_for_requester(request, content)
    elif notification.kind in (Notification.Kind.QUESTION, Notification.Kind.ANSWER):
        text, blocks = slack.conversation_message(content)
    elif notification.kind == Notification.Kind.DIGEST:
        raise DeliveryError("the digest is sent by email only", permanent=True)
    else:
        if is_person:
            with_buttons = messages.may_decide(notification.recipient, request)
        else:  # a group's channel: whoever clicks is checked then
            with_buttons = notification.kind not in (Notification.Kind.ESCALATION, Notification.Kind.APPROVER_LOST)
        text, blocks = slack.request_message(content, with_buttons=with_buttons)
    channel = slack.direct_message_channel(notification.recipient) if is_person else notification.recipient
    return slack.post_message(channel=channel, text=text, blocks=blocks)


def _outcome_for_requester(request: ApprovalRequest, content: messages.MessageContent) -> tuple[str, list[dict]]:
    """The outcome in Slack, saying what the mail says when the workflow was not (surely) told."""
    text, blocks = slack.outcome_message(request, request_url=content.request_url)
    callback = delivery.request_callback(request)
    if (
        (callback is not None and callback.status == CallbackStatus.FAILED)
        or delivery.closed_by_step_functions(request)
        or delivery.closed_by_system(request)
    ):
        text = slack.escape(messages.one_line(content.subject, 300))
        blocks.insert(1, {"type": "section", "text": {"type": "mrkdwn", "text": slack.escape(content.intro)}})
    return text, blocks


def close_slack_messages(request: ApprovalRequest, references: list[str]) -> int:
    """Replace the buttons of the request's Slack messages with its outcome (chat.update); how
    many were. Each message on its own: one Slack no longer has (deleted by its reader) is logged
    and left, and never keeps the others' buttons. If Slack was unreachable for any, that error
    is raised once the rest were tried (the task retries; an update made twice changes nothing)."""
    url = settings.PORTAL_BASE_URL + reverse("request-result", args=[request.public_id])
    text, blocks = slack.outcome_message(request, request_url=url)
    updated, unreachable = 0, None
    for reference in references:
        try:
            slack.update_message(reference=reference, text=text, blocks=blocks)
        except DeliveryError as error:
            if error.permanent:
                logger.info("could not update a Slack message of request %s: %s", request.pk, error.message)
            else:
                unreachable = error
            continue
        updated += 1
    if unreachable is not None:
        raise unreachable
    return updated
