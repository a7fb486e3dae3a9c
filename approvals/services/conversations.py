""" "Needs more information": an approver asks the requester a question, the requester answers.

The request stays pending throughout; the conversation goes to Step Functions with the decision
(decisions.conversation_entries). Both actions lock the request row like a decision does, so a
question, an answer and a decision posted at the same moment take turns.
"""

import logging

from django.db import transaction
from django.utils import timezone

from approvals import delivery, permissions
from approvals.form_schema import storable_text
from approvals.models import ApprovalRequest, AuditAction, InfoMessage, User
from approvals.services.common import ApprovalError, audit, locked_request
from approvals.services.decisions import refusals_recorded
from approvals.services.notifications import conversation_notify

logger = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH = 2000
# Per request: a conversation, not a chat. A question needs room for its answer, so the
# last place is kept for it (an open question can always be answered).
MAX_MESSAGES = 50


def is_requester(user: User, request: ApprovalRequest) -> bool:
    email = (user.email or "").lower()
    return user.is_active and bool(email) and email == request.requester_email.lower()


def may_answer(user: User, request: ApprovalRequest) -> bool:
    """The requester, while the request is pending and a question waits (what the page offers)."""
    return is_requester(user, request) and request.is_pending and request.awaiting_info


def _clean_text(text: str, request: ApprovalRequest, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ApprovalError(f"Write your {what} first.", "bad_input", request=request)
    if len(text) > MAX_MESSAGE_LENGTH:
        raise ApprovalError(
            f"Your {what} is too long: at most {MAX_MESSAGE_LENGTH} characters, it has {len(text)}.",
            "bad_input",
            request=request,
        )
    if not storable_text(text):  # the page posts the text as it came: PostgreSQL would refuse it
        raise ApprovalError(
            f"Your {what} contains a character that cannot be stored (a NUL character or invalid Unicode).",
            "bad_input",
            request=request,
        )
    return text


def _add_message(*, request: ApprovalRequest, user: User, kind: str, text: str) -> InfoMessage:
    return InfoMessage.objects.create(
        request=request,
        author=user,
        author_label=user.email or user.get_username(),
        kind=kind,
        text=text,
        created_at=timezone.now(),
    )


@transaction.atomic
def _ask(*, public_id, user: User, question: str) -> InfoMessage:
    request = locked_request(public_id)
    refusal = permissions.decision_refusal(user, request)
    if refusal is not None:
        raise ApprovalError(refusal.message, refusal.code, request=request)
    if not request.requester_email:
        raise ApprovalError(
            "This request names no requester, so there is nobody to ask. Decide it, or ask the workflow's owner.",
            "no_requester",
            request=request,
        )
    text = _clean_text(question, request, "question")
    if request.info_messages.count() >= MAX_MESSAGES - 1:
        raise ApprovalError(
            f"This request already has {MAX_MESSAGES - 1} questions and answers; decide it with what is known.",
            "too_many_messages",
            request=request,
        )
    message = _add_message(request=request, user=user, kind=InfoMessage.Kind.QUESTION, text=text)
    if not request.awaiting_info:
        request.awaiting_info = True
        request.save(update_fields=["awaiting_info", "updated_at"])
    audit(action=AuditAction.INFO_REQUESTED, request=request, actor=user, text=text, message_id=message.pk)
    logger.info("approval request %s: user %s asked the requester a question", request.public_id, user.pk)
    conversation_notify(request=request, message=message)  # exception-safe; sent after commit
    return message


def info_request(*, public_id, user: User, question: str) -> InfoMessage:
    """An approver who may decide now asks the requester a question; the request stays pending.

    Raises ApprovalError (and audits the refusal) when not allowed."""
    return refusals_recorded(
        lambda: _ask(public_id=public_id, user=user, question=question), user=user, attempted="ask", public_id=public_id
    )


@transaction.atomic
def _answer(*, public_id, user: User, answer: str) -> InfoMessage:
    request = locked_request(public_id)
    if not is_requester(user, request):
        raise ApprovalError("Only the requester answers the approvers' questions.", "not_requester", request=request)
    if not request.is_pending:
        raise ApprovalError(
            f"This request is already {delivery.request_status_words(request)}.", "not_pending", request=request
        )
    if not request.awaiting_info:
        raise ApprovalError("No question waits for your answer.", "no_question", request=request)
    text = _clean_text(answer, request, "answer")
    if request.info_messages.count() >= MAX_MESSAGES:
        raise ApprovalError("This request has too many questions and answers.", "too_many_messages", request=request)
    message = _add_message(request=request, user=user, kind=InfoMessage.Kind.ANSWER, text=text)
    request.awaiting_info = False
    request.save(update_fields=["awaiting_info", "updated_at"])
    audit(action=AuditAction.INFO_ANSWERED, request=request, actor=user, text=text, message_id=message.pk)
    logger.info("approval request %s: the requester answered", request.public_id)
    conversation_notify(request=request, message=message)  # exception-safe; sent after commit
    return message


def info_answer(*, public_id, user: User, answer: str) -> InfoMessage:
    """The requester answers the open question(s); the approvers hear about it.

    Raises ApprovalError (and audits the refusal) when not allowed."""
    return refusals_recorded(
        lambda: _answer(public_id=public_id, user=user, answer=answer),
        user=user,
        attempted="answer",
        public_id=public_id,
    )
