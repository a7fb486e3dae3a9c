""" "Needs more information" on the request page: ask the requester, answer. POST, then redirect.

The services decide who may and check the text; a refusal is the portal's refusal page.
"""

from django.contrib.auth.decorators import login_required
from django.urls import reverse
from django.views.decorators.http import require_POST

from approvals import services
from approvals.views.requests import after_service, visible_or_not_found


def _conversation(public_id) -> str:
    return reverse("request-detail", args=[public_id]) + "#conversation"


@login_required
@require_POST
@visible_or_not_found
def ask(request, public_id):
    question = request.POST.get("question", "")
    return after_service(
        request,
        lambda: services.info_request(public_id=public_id, user=request.user, question=question),
        then=_conversation(public_id),
    )


@login_required
@require_POST
@visible_or_not_found
def answer(request, public_id):
    answer = request.POST.get("answer", "")
    return after_service(
        request,
        lambda: services.info_answer(public_id=public_id, user=request.user, answer=answer),
        then=_conversation(public_id),
    )
