"""Binding a Slack user to the signed-in portal account: the link a Slack click answers with.

The link (approvals/links.py) names a workspace and a Slack user, signed and expiring. Behind
SSO sign-in, GET shows who will be bound to whom; only the confirm POST (CSRF) binds, through
services.slack_identity_bind, which refuses another workspace, a Slack user bound elsewhere and
(by default) a Slack user whose email in Slack is not the signed-in account's.
"""

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from approvals import links, services
from approvals.notifications import DeliveryError, slack
from approvals.services import slack_identities
from approvals.views.requests import refusal_page

logger = logging.getLogger(__name__)

BINDING_STATUS = {"slack_other_team": 403, "slack_identity_taken": 409, "slack_email_mismatch": 403}


@login_required
@require_http_methods(["GET", "POST"])
def bind(request, token):
    if not slack.enabled():
        raise Http404("Slack is not configured")
    try:
        link = links.read_slack_bind_token(token)
    except links.LinkError as error:
        slack_identities.slack_binding_refusal_record(user=request.user, code=error.code)
        return refusal_page(request, error.message, error.code)
    try:
        slack_email = slack.user_email(link.slack_user_id)
    except DeliveryError as error:
        logger.warning("Slack users.info failed: %s", error.message)
        return render(
            request,
            "approvals/error.html",
            {"message": "Slack did not say who this Slack user is just now. Please try again.", "code": "slack"},
            status=503,
        )
    who = {"user": request.user, "team_id": link.team_id, "slack_user_id": link.slack_user_id}
    if request.method == "POST":
        try:
            slack_identities.slack_identity_bind(**who, slack_email=slack_email)
        except services.ApprovalError as error:  # audited by the service
            return _binding_refused(request, error)
        messages.success(request, "Your Slack account is linked. Click the button in Slack again.")
        return redirect("inbox")
    refusal = slack_identities.slack_binding_refusal(**who, slack_email=slack_email)
    if refusal is not None:
        slack_identities.slack_binding_refusal_record(
            user=request.user, code=refusal.code, team_id=link.team_id, slack_user_id=link.slack_user_id
        )
        return _binding_refused(request, refusal)
    return render(
        request,
        "approvals/slack_bind.html",
        {"link": link, "slack_email": slack_email},
    )


def _binding_refused(request, error: services.ApprovalError):
    response = refusal_page(request, error.message, error.code)
    response.status_code = BINDING_STATUS.get(error.code, 403)
    return response
