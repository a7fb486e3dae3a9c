""" "I'm on it" and "Release" on the request page: one POST each, then back to the page."""

from django.contrib.auth.decorators import login_required
from django.urls import reverse
from django.views.decorators.http import require_POST

from approvals import services
from approvals.views.requests import after_service, visible_or_not_found


@login_required
@require_POST
@visible_or_not_found
def claim(request, public_id):
    return after_service(
        request,
        lambda: services.approval_claim(public_id=public_id, user=request.user),
        then=reverse("request-detail", args=[public_id]),
        message="You're on it: your colleagues see that you are handling this request.",
    )


@login_required
@require_POST
@visible_or_not_found
def unclaim(request, public_id):
    return after_service(
        request,
        lambda: services.approval_unclaim(public_id=public_id, user=request.user),
        then=reverse("request-detail", args=[public_id]),
        message="Released: the request is free for anyone of your group to take.",
    )
