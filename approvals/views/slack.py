"""Slack's interactivity endpoint: an Approve / Reject click in a Slack message, and the
reject modal's submission.

Slack signs every request (v0 HMAC-SHA256 with SLACK_SIGNING_SECRET); nothing is trusted
before the signature and the 5-minute window are checked, so this one view is CSRF-exempt.
The clicker must be the configured workspace's Slack user bound to an active portal account
whose SSO is recent (approvals/slack_access.py); else the click is refused, audited, and the
clicker gets a link to bind or to sign in. Approve decides at once; Reject opens a modal asking
for the reason (a rejection needs one, services.approval_decide says so on every channel).
A request with options has one button per option (approvals/one_click.py): a success option
decides at once, a failure option opens the same reason modal; the option's id travels in the
button's value and the modal's metadata, and the service checks it against the request again.
Decisions go through services.approval_decide: the same rule, the same audit, as the web.
Answers to the clicker go through the interaction's response_url, from a Celery task (the URL
encrypted on its way through the broker).
"""

import json
import logging
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from approvals import links, one_click, permissions, services, slack_access, slack_payloads
from approvals.models import ApprovalRequest
from approvals.notifications import DeliveryError, slack
from approvals.services import notifications as notification_services
from approvals.services.common import enqueue
from approvals.slack_payloads import Interaction, SlackPayloadError, parse_interaction

logger = logging.getLogger(__name__)

# The task that answers a click through its response_url (approvals/tasks/notifications.py).
SLACK_RESPOND = "worker.notify_tasks.slack_respond"


def _reply(response_url: str, payload: dict) -> None:
    """Queue the answer; Slack's 3-second budget is for acknowledging, not for talking back.
    The response URL lets whoever holds it post into the clicker's conversation: it travels
    encrypted, and the worker's log lines and monitoring show neither it nor its ciphertext."""
    if response_url:
        enqueue(
            SLACK_RESPOND,
            kwargsrepr=slack.RESPOND_KWARGSREPR,
            response_url_ciphertext=slack.seal_response_url(response_url),
            payload=payload,
        )


def _json(payload: dict) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=200, content_type="application/json")


def _sign_in_url(public_id) -> str:
    next_url = reverse("request-detail", args=[public_id]) if public_id else "/"
    return settings.PORTAL_BASE_URL + reverse("signin") + "?" + urlencode({"next": next_url})


def _request_url(public_id) -> str:
    return settings.PORTAL_BASE_URL + reverse("request-detail", args=[public_id])


def _clicker_refusal_text(clicker: slack_access.SlackClicker, public_id) -> str:
    """The refusal, and what to do about it: a link to bind, or to sign in."""
    refusal = clicker.refusal
    text = slack.escape(refusal.message)
    if refusal.code == slack_access.UNBOUND:
        url = links.slack_bind_url(team_id=clicker.team_id, slack_user_id=clicker.slack_user_id)
        text += f" <{url}|Link your Slack account>"
    elif refusal.code == slack_access.SSO_STALE:
        text += f" <{_sign_in_url(public_id)}|Sign in to the portal>"
    return text


def _refuse_clicker(clicker: slack_access.SlackClicker, interaction: Interaction, approval) -> str:
    """Audit a click from someone Slack decisions are not taken from; the text to answer with."""
    notification_services.slack_refusal_record(
        code=clicker.refusal.code,
        request=approval,
        user=clicker.user,
        team_id=interaction.team_id,
        slack_user=interaction.slack_user_id,
    )
    return _clicker_refusal_text(clicker, interaction.public_id)


def _outcome_reply(response_url: str, decided) -> None:
    url = settings.PORTAL_BASE_URL + reverse("request-result", args=[decided.public_id])
    text, blocks = slack.outcome_message(decided, request_url=url)
    _reply(response_url, {"replace_original": True, "text": text, "blocks": blocks})


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
        interaction = parse_interaction(request.POST.get("payload", ""))
    except SlackPayloadError as error:
        notification_services.slack_refusal_record(code=error.code)
        return HttpResponse(error.message, status=400, content_type="text/plain")
    if interaction.kind == slack_payloads.BLOCK_ACTIONS:
        return _button_click(interaction)
    if interaction.kind == slack_payloads.VIEW_SUBMISSION and interaction.callback_id == slack_payloads.REJECT_MODAL:
        return _reject_submitted(interaction)
    return HttpResponse(status=200)  # nothing else is wired to this app


def _button_click(interaction: Interaction) -> HttpResponse:
    is_option = interaction.action.startswith(slack.ACTION_OPTION_PREFIX)
    if interaction.action not in {slack.ACTION_APPROVE, slack.ACTION_REJECT} and not is_option:
        return HttpResponse(status=200)  # "Open in portal" is a plain link
    if interaction.public_id is None or (is_option and not interaction.option):
        notification_services.slack_refusal_record(code="bad_payload", slack_user=interaction.slack_user_id)
        return HttpResponse("No request.", status=400, content_type="text/plain")
    approval = ApprovalRequest.objects.filter(public_id=interaction.public_id).first()
    response_url = interaction.response_url

    clicker = slack_access.slack_clicker(team_id=interaction.team_id, slack_user_id=interaction.slack_user_id)
    if clicker.refusal is not None:
        _reply(response_url, slack.note(_refuse_clicker(clicker, interaction, approval)))
        return HttpResponse(status=200)
    user = clicker.user

    if is_option:
        option = one_click.option(approval, interaction.option) if approval is not None else None
        if option is not None and option.outcome == "failure":
            return _ask_for_the_reason(interaction, user, approval, option=option)
        # A success option, or an id the request does not have: the service checks it (and refuses that).
        decision = {"choice": [interaction.option]}
    elif interaction.action == slack.ACTION_REJECT:
        return _ask_for_the_reason(interaction, user, approval)
    else:
        decision = {"approve": True}
    try:
        decided = services.approval_decide(public_id=interaction.public_id, user=user, via="slack", **decision)
    except services.ApprovalError as error:
        # approval_decide audited the refusal; tell only the clicker, leave the message as it is.
        text = slack.escape(error.message)
        if error.code == services.ANSWERS_INVALID:  # the choice needs the form: the page has it
            text += f" <{_request_url(interaction.public_id)}|Open the request>"
        _reply(response_url, slack.note(text))
        return HttpResponse(status=200)
    _outcome_reply(response_url, decided)
    return HttpResponse(status=200)


def _ask_for_the_reason(interaction: Interaction, user, approval, *, option=None) -> HttpResponse:
    """Reject (or a failure option): nothing is decided yet. A modal asks for the reason
    (views.open); when Slack cannot open it, the clicker gets a link to the request page, which
    asks for it too."""
    response_url = interaction.response_url
    refusal = (
        permissions.decision_refusal(user, approval, approve=False)
        if approval is not None
        else permissions.Refusal("not_found", "This approval request does not exist.")
    )
    if refusal is not None:
        services.refusal_record(
            user=user,
            request=approval,
            code=refusal.code,
            attempted=option.id if option is not None else "reject",
            via="slack",
            public_id=str(interaction.public_id),
        )
        _reply(response_url, slack.note(refusal.message))
        return HttpResponse(status=200)
    metadata = slack_payloads.modal_metadata(
        public_id=approval.public_id, response_url=response_url, option=option.id if option is not None else ""
    )
    label = option.label if option is not None else "Reject"
    try:
        if not interaction.trigger_id:
            raise DeliveryError("no trigger_id", permanent=True)
        view = slack.reject_modal(approval, private_metadata=metadata, label=label)
        slack.open_view(trigger_id=interaction.trigger_id, view=view)
    except DeliveryError as error:
        logger.warning("Slack views.open failed: %s", error.message)
        url = _request_url(approval.public_id)
        _reply(response_url, slack.note(f"Say why you reject on the request page: <{url}|Open the request>"))
    return HttpResponse(status=200)


def _reject_submitted(interaction: Interaction) -> HttpResponse:
    """The reject modal's Submit: decide with the reason, or keep the modal open saying why not."""
    if interaction.public_id is None:
        notification_services.slack_refusal_record(code="bad_payload", slack_user=interaction.slack_user_id)
        return _json({"response_action": "update", "view": slack.notice_modal("This request is unknown.")})
    approval = ApprovalRequest.objects.filter(public_id=interaction.public_id).first()
    clicker = slack_access.slack_clicker(team_id=interaction.team_id, slack_user_id=interaction.slack_user_id)
    if clicker.refusal is not None:
        text = _refuse_clicker(clicker, interaction, approval)
        return _json({"response_action": "update", "view": slack.notice_modal(text)})
    if len(interaction.reason) > slack_payloads.MAX_REASON:
        message = f"At most {slack_payloads.MAX_REASON} characters, please."
        return _json({"response_action": "errors", "errors": {slack_payloads.REASON_BLOCK: message}})
    decision = {"choice": [interaction.option]} if interaction.option else {"approve": False}
    try:
        decided = services.approval_decide(
            public_id=interaction.public_id, user=clicker.user, comment=interaction.reason, via="slack", **decision
        )
    except services.ApprovalError as error:  # audited by approval_decide
        if error.code == services.REASON_REQUIRED:
            return _json({"response_action": "errors", "errors": {slack_payloads.REASON_BLOCK: error.message}})
        return _json({"response_action": "update", "view": slack.notice_modal(slack.escape(error.message))})
    _outcome_reply(interaction.response_url, decided)
    return _json({"response_action": "clear"})
