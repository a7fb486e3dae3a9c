"""The request page's "Questions and answers" (approvals/templates/approvals/_conversation.html)."""

from django import template

from approvals.models import ApprovalRequest
from approvals.permissions import Refusal
from approvals.services.conversations import may_answer

register = template.Library()


@register.simple_tag(takes_context=True)
def conversation_action(context, approval: ApprovalRequest, refusal: Refusal | None) -> str:
    """What the signed-in user may do now: "ask" (they may decide, `refusal` is None, and there is
    a requester to ask), "answer" (the requester, with a question open), or ""."""
    user = context["user"]
    if may_answer(user, approval):
        return "answer"
    if refusal is None and approval.is_pending and approval.requester_email:
        return "ask"
    return ""
