""" "Needs more information" on the request page: ask the requester, answer. POST, then redirect.

The services decide who may and check the text; a refusal is the portal's refusal page.
"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from approvals import services
from approvals.views import _refusal_page


def _back_to_the_conversation(public_id):
    return redirect(reverse("request-detail", args=[public_id]) + "#conversation")


@login_required
@require_POST
def ask(request, public_id):
    try:
        services.info_request(public_id=public_id, user=request.user, question=request.POST.get("question", ""))
    except services.ApprovalError as error:
        return _refusal_page(request, error.message, error.code, error.request)
    return _back_to_the_conversation(public_id)


@login_required
@require_POST
def answer(request, public_id):
    try:
        services.info_answer(public_id=public_id, user=request.user, answer=request.POST.get("answer", ""))
    except services.ApprovalError as error:
        return _refusal_page(request, error.message, error.code, error.request)
    return _back_to_the_conversation(public_id)
