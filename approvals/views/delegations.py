"""The out-of-office page: who stands in for me, for whom I stand in; set and revoke."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from approvals import services
from approvals.forms.delegations import DelegationForm, add_service_error
from approvals.selectors import delegations as delegation_selectors
from approvals.views.requests import refusal_page


def _page(request, form: DelegationForm, *, status: int = 200):
    return render(
        request,
        "approvals/delegation.html",
        {
            "form": form,
            "delegations": delegation_selectors.delegations_of(request.user),
            "now": timezone.now(),
            "time_zone": timezone.get_current_timezone_name(),
        },
        status=status,
    )


@login_required
def out_of_office(request):
    if request.method != "POST":
        return _page(request, DelegationForm(user=request.user))
    form = DelegationForm(request.POST, user=request.user)
    if form.is_valid():
        data = form.cleaned_data
        try:
            delegation = services.delegation_set(
                delegator=request.user,
                delegate_email=data["delegate_email"],
                starts_at=data["starts_at"],
                ends_at=data["ends_at"],
                reason=data["reason"],
                actor=request.user,
            )
        except services.ApprovalError as error:  # checked by the form; changed since, at most
            add_service_error(form, error)
        else:
            messages.success(request, f"{delegation.delegate.email} stands in for you until the time shown below.")
            return redirect("out-of-office")
    return _page(request, form, status=400)


@login_required
@require_POST
def revoke(request, delegation_id: int):
    try:
        delegation = services.delegation_revoke(delegation_id=delegation_id, actor=request.user)
    except services.ApprovalError as error:
        return refusal_page(request, error.message, error.code)
    messages.success(request, f"{delegation.delegate.email} no longer stands in for you.")
    return redirect("out-of-office")
