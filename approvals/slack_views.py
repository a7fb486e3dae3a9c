"""Slack's interactivity endpoint: an Approve / Reject click in a Slack message.

Slack signs every request (v0 HMAC-SHA256 with SLACK_SIGNING_SECRET); nothing is trusted
before the signature and the 5-minute window are checked, so this one view is CSRF-exempt.
The clicker is mapped to a portal user by the email Slack knows (users.info), and the decision
goes through services.approval_decide: the same rule, the same audit, as the web. Answers to
the clicker go through the interaction's response_url, from a Celery task.
"""

import json
import logging
import uuid

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from approvals import services
from approvals.models import ApprovalRequest
from approvals.notifications import DeliveryError, messages, slack
from approvals.services import notifications as notification_services

logger = logging.getLogger(__name__)


def _reply(response_url: str, payload: dict) -> None:
    """Queue the answer; Slack's 3-second budget is for acknowledging, not for talking back."""
    from worker.notify_tasks import slack_respond  # worker imports services; import late

    if not response_url:
        return
    try:
        slack_respond.delay(response_url, payload)
    except Exception:
        logger.warning("could not queue the answer to a Slack click", exc_info=True)


def _parse(body: dict) -> tuple[str, uuid.UUID | None, str, str]:
    """(action, request public id, Slack user id, response_url) of a block_actions payload."""
    actions = body.get("actions") or [{}]
    action = actions[0] if isinstance(actions, list) and isinstance(actions[0], dict) else {}
    try:
        public_id = uuid.UUID(str(action.get("value", "")))
    except ValueError:
        public_id = None
    user = body.get("user") if isinstance(body.get("user"), dict) else {}
    return str(action.get("action_id", "")), public_id, str(user.get("id", "")), str(body.get("response_url", ""))


@csrf_exempt  # Slack cannot send a CSRF token; its signature is checked instead
@require_POST
def interactivity(request: HttpRequest) -> HttpResponse:
    if not (settings.SLACK_SIGNING_SECRET and slack.enabled()):
        raise Http404("Slack is not configured")
    refusal = slack.signature_refusal(
        body=request.body,
        timestamp=request.headers.get("X-Slack-Request-Timestamp", ""),
        signature=request.headers.get("X-Slack-Signature", ""),
    )
    if refusal is not None:
        notification_services.slack_refusal_record(code=refusal)
        return HttpResponse("Request not signed by Slack.", status=401, content_type="text/plain")
    try:
        body = json.loads(request.POST.get("payload", ""))
    except ValueError:
        return HttpResponse("No payload.", status=400, content_type="text/plain")
    if not isinstance(body, dict) or body.get("type") != "block_actions":
        return HttpResponse(status=200)  # nothing else is wired to this app
    action, public_id, slack_user, response_url = _parse(body)
    if action not in {slack.ACTION_APPROVE, slack.ACTION_REJECT}:
        return HttpResponse(status=200)  # "Open in portal" is a plain link
    if public_id is None:
        return HttpResponse("No request.", status=400, content_type="text/plain")
    approval = ApprovalRequest.objects.filter(public_id=public_id).first()

    try:
        email = slack.user_email(slack_user) if slack_user else ""
    except DeliveryError as error:
        logger.warning("Slack users.info failed: %s", error.message)
        _reply(response_url, slack.note("Slack did not tell us who you are just now. Please try again."))
        return HttpResponse(status=200)
    user = messages.user_for_email(email)
    if user is None:
        notification_services.slack_refusal_record(
            code="unknown_slack_user", request=approval, slack_user=slack_user, slack_email=email
        )
        _reply(
            response_url,
            slack.note(
                "Your Slack account's email matches no portal user. Sign in to the portal once, then try again."
            ),
        )
        return HttpResponse(status=200)

    try:
        decided = services.approval_decide(
            public_id=public_id, user=user, approve=action == slack.ACTION_APPROVE, via="slack"
        )
    except services.ApprovalError as error:
        # approval_decide audited the refusal; tell only the clicker, leave the message as it is.
        _reply(response_url, slack.note(error.message))
        return HttpResponse(status=200)
    url = settings.PORTAL_BASE_URL + reverse("request-result", args=[decided.public_id])
    text, blocks = slack.outcome_message(decided, request_url=url)
    _reply(response_url, {"replace_original": True, "text": text, "blocks": blocks})
    return HttpResponse(status=200)
