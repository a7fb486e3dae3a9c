""" "I'm on it" and "Release" on the request page: one POST each, then back to the page."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from approvals import services
from approvals.views import _refusal_page


@login_required
@require_POST
def claim(request, public_id):
    try:
        services.approval_claim(public_id=public_id, user=request.user)
    except services.ApprovalError as error:
        return _refusal_page(request, error.message, error.code, error.request)
    messages.success(request, "You're on it: your colleagues see that you are handling this request.")
    return redirect("request-detail", public_id=public_id)


@login_required
@require_POST
def unclaim(request, public_id):
    try:
        services.approval_unclaim(public_id=public_id, user=request.user)
    except services.ApprovalError as error:
        return _refusal_page(request, error.message, error.code, error.request)
    messages.success(request, "Released: the request is free for anyone of your group to take.")
    return redirect("request-detail", public_id=public_id)
