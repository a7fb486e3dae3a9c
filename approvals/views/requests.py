"""A request's pages: detail, decide (page and signed link), the result and its status; and the refusal
page the other views share."""

import json
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from approvals import delivery, links, one_click, permissions, selectors, services
from approvals.forms.requests import DecisionForm, LinkConfirmForm

# Refusal codes → HTTP status of the page that explains them.
ERROR_STATUS = {
    "not_found": 404,
    "requester": 403,
    "self_assigned": 403,
    "not_assignee": 403,
    "inactive_user": 403,
    "other_user": 403,
    "not_allowed": 403,
    "link_tampered": 403,
    "sod_previous_level": 403,
    "sod_requester_group": 403,
    "distinct_groups": 403,
    "reason_required": 400,
    "choice_invalid": 400,
    "answers_invalid": 400,
    "not_pending": 409,
    "already_voted": 409,
    "claimed": 409,
    "not_claimer": 403,
    "expired": 410,
    "link_expired": 410,
    "needs_input": 409,  # a one-click channel for a choice that needs the form (approvals/one_click.py)
    # "Needs more information" (approvals/views/conversations.py)
    "not_requester": 403,
    "no_requester": 409,
    "no_question": 409,
    "too_many_messages": 409,
}


def _not_found(request):
    # Not found and not yours look the same: request ids reveal nothing.
    return refusal_page(request, "There is no such approval request, or it is not yours to see.", "not_found")


def _visible_request(request, public_id, selector=None):
    """The request if the user may see it (else None); read by `selector` (default: the page's)."""
    approval = (selector or selectors.request_detail)(public_id)
    if approval is None or not permissions.can_view(request.user, approval):
        return None
    return approval


def visible_or_not_found(view):
    """A POST on a request page answers a request the user may not see exactly as a GET does
    (and as a request that does not exist): the same 404 page. What the service would refuse
    ("not an approver", "already decided") is said only to those who may see the request.
    Checked on the request's status row (what permissions.can_view reads), not the whole page;
    the view finds that row on `request.visible_approval` (read once, not again)."""

    @wraps(view)
    def checked(request, public_id, *args, **kwargs):
        approval = _visible_request(request, public_id, selectors.request_status)
        if approval is None:
            services.refusal_record(
                user=request.user,
                request=None,
                code="not_found",
                attempted=view.__name__.removesuffix("_decision"),
                public_id=str(public_id),
            )
            return _not_found(request)
        request.visible_approval = approval
        return view(request, public_id, *args, **kwargs)

    return checked


def _detail_page(request, approval, *, form=None, status: int = 200, just_decided: bool = False):
    authority, refusal = permissions.decision_authority(request.user, approval)
    if refusal is None and form is None:
        form = DecisionForm(approval=approval)
    siblings, more_siblings = selectors.execution_siblings(approval, request.user)
    return render(
        request,
        "approvals/detail.html",
        {
            "approval": approval,
            "refusal": refusal,
            "form": form if refusal is None else None,
            "on_behalf_of": authority.on_behalf_of if authority else None,
            "just_decided": just_decided,
            "siblings": siblings,
            "more_siblings": more_siblings,
        },
        status=status,
    )


@login_required
@require_GET
def request_detail(request, public_id):
    approval = _visible_request(request, public_id)
    if approval is None:
        return _not_found(request)
    return _detail_page(request, approval)


@login_required
@require_POST
@visible_or_not_found
def confirm_decision(request, public_id):
    """The step between the request page and the decision: "Yes, approve" or go back.

    Nothing changes here; the confirm page's button POSTs to `decide`. A rejection without a
    comment goes back to the request page with the reason (also without JavaScript).
    """
    approval = selectors.request_detail(public_id)
    if approval is None:
        services.refusal_record(
            user=request.user, request=None, code="not_found", attempted="confirm", public_id=str(public_id)
        )
        return refusal_page(request, "This approval request does not exist.", "not_found")
    authority, refusal = permissions.decision_authority(request.user, approval)
    if refusal is not None:
        services.refusal_record(user=request.user, request=approval, code=refusal.code, attempted="confirm")
        return refusal_page(request, refusal.message, refusal.code, approval)
    form = DecisionForm(request.POST, approval=approval)
    if request.POST.get("edit"):  # "Change" on the confirm page: the page again, as it was filled in
        return _detail_page(request, approval, form=form.unchecked())
    if not form.is_valid():
        if not form.fixable_on_the_page:
            return render(request, "approvals/error.html", {"message": "Choose one of the options."}, status=400)
        return _detail_page(request, approval, form=form, status=400)
    return render(
        request,
        "approvals/confirm_decision.html",
        {"approval": approval, "form": form, "action": form.action, "on_behalf_of": authority.on_behalf_of},
    )


@login_required
@require_POST
@visible_or_not_found
def decide(request, public_id):
    # What the form and the checks read (the status row visible_or_not_found read); the whole page
    # (details, history) only to show it again.
    approval = request.visible_approval
    form = DecisionForm(request.POST, approval=approval)
    if not form.is_valid():
        if not form.fixable_on_the_page:
            return render(request, "approvals/error.html", {"message": "Choose one of the options."}, status=400)
        # A rejection without a comment, an answer to correct: if the request can't be decided
        # anyway, say that (already decided by whom, not yours, …); else back to the page.
        refusal = permissions.decision_refusal(request.user, approval)
        if refusal is None:
            return _detail_page(request, selectors.request_detail(public_id), form=form, status=400)
    try:
        services.approval_decide(
            public_id=public_id,
            user=request.user,
            approve=form.approve,
            choice=form.choice,
            comment=form.cleaned_data.get("comment", ""),
            answers=form.raw_answers(),
            answers_from_form=True,
        )
    except services.ApprovalError as error:
        if error.code in (services.ANSWERS_INVALID, services.REASON_REQUIRED) and error.request is not None:
            # What the service found wrong, beside the field (the page's own check normally finds it first).
            form.answer_errors = error.field_errors
            if error.code == services.REASON_REQUIRED:
                form.add_error("comment", error.message)
            return _detail_page(request, selectors.request_detail(public_id), form=form, status=400)
        return refusal_page(request, error.message, error.code, error.request)
    return redirect("request-result", public_id=public_id)


def after_service(request, call, *, then: str, message: str = ""):
    """A POST handler's end: run one service call; a refusal is the refusal page, else a
    redirect to `then` (with `message` shown there)."""
    try:
        call()
    except services.ApprovalError as error:
        return refusal_page(request, error.message, error.code, error.request)
    if message:
        messages.success(request, message)
    return redirect(then)


def refusal_page(request, message: str, code: str, approval=None):
    return render(
        request,
        "approvals/error.html",
        {"message": message, "code": code, "approval": approval},
        status=ERROR_STATUS.get(code, 400),
    )


@login_required
def decision_link(request, token):
    """A signed one-click link: GET shows a confirm page, only the POST decides.

    An option link (a request with options) decides with the option its signature names; the
    service checks that option against the request again."""
    try:
        link = links.read_link_token(token)
    except links.LinkError as error:
        services.refusal_record(user=request.user, request=None, code=error.code, attempted="link")
        return refusal_page(request, error.message, error.code)
    approval = selectors.request_detail(link.public_id)
    attempted = link.option or link.action
    if link.approver_email != (request.user.email or "").lower():
        services.refusal_record(user=request.user, request=approval, code="other_user", attempted=attempted)
        return refusal_page(
            request, "This link was sent to someone else. Sign in as that person to use it.", "other_user"
        )
    if approval is None:
        services.refusal_record(user=request.user, request=None, code="not_found", attempted=attempted)
        return refusal_page(request, "This approval request does not exist.", "not_found")
    option = one_click.option(approval, link.option) if link.option else None
    if link.option and option is None:
        # Signed, but not one of this request's options (no such link is ever sent): refused.
        services.refusal_record(
            user=request.user, request=approval, code="choice_invalid", attempted=attempted, via="link"
        )
        return refusal_page(request, "This link's choice is not one of this request's options.", "choice_invalid")
    if option is not None and one_click.needs_page(approval) and option.outcome == "success":
        return redirect("request-detail", public_id=approval.public_id)  # the form is on the page

    if request.method == "POST":
        form = LinkConfirmForm(request.POST)
        if not form.is_valid():
            return refusal_page(request, "The comment is too long.", "bad_input")
        decision = {"choice": [option.id]} if option is not None else {"approve": link.action == "approve"}
        try:
            services.approval_decide(
                public_id=approval.public_id,
                user=request.user,
                comment=form.cleaned_data["comment"],
                via="link",
                **decision,
            )
        except services.ApprovalError as error:
            if error.code == services.REASON_REQUIRED:  # the same page again, saying what is missing
                form.add_error("comment", error.message)
                return _link_confirm_page(request, approval, link.action, form, option=option, status=400)
            return refusal_page(request, error.message, error.code, error.request)
        return redirect("request-result", public_id=approval.public_id)
    if request.method != "GET":
        return refusal_page(request, "Use the button on the page.", "bad_input")

    refusal = permissions.decision_refusal(request.user, approval)
    if refusal is not None:
        services.refusal_record(user=request.user, request=approval, code=refusal.code, attempted=attempted, via="link")
        return refusal_page(request, refusal.message, refusal.code, approval)
    return _link_confirm_page(request, approval, link.action, LinkConfirmForm(), option=option)


def _link_confirm_page(request, approval, action: str, form: LinkConfirmForm, *, option=None, status: int = 200):
    if option is not None:  # the option's outcome says whether a reason is needed
        action = "approve" if option.outcome == "success" else "reject"
    return render(
        request,
        "approvals/confirm.html",
        {"approval": approval, "action": action, "option": option, "form": form},
        status=status,
    )


@login_required
@require_GET
def decision_result(request, public_id):
    """After the decision: the request page with the outcome on top; portal.js refreshes the
    callback's status until it is final."""
    approval = _visible_request(request, public_id)
    if approval is None:
        return _not_found(request)
    return _detail_page(request, approval, just_decided=True)


# ---------------------------------------------------------------------------
# Served on their own: all of a request's details, and the result page's status
# ---------------------------------------------------------------------------
_JSON_MARKUP_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


@login_required
@require_GET
def request_details(request, public_id):
    """ "Show all details": the workflow's details in full, as indented JSON text (escaped in
    the page), or `?format=json` as a JSON download. The request page shows a bounded view."""
    approval = _visible_request(request, public_id)
    if approval is None:
        return _not_found(request)
    if request.GET.get("format") == "json":
        # <, > and & as \u escapes: no markup in it even for a client that sniffs.
        text = json.dumps(approval.details, indent=2).translate(_JSON_MARKUP_ESCAPES)
        response = HttpResponse(text, content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="details-{approval.public_id}.json"'
        response["X-Content-Type-Options"] = "nosniff"
        return response
    text = json.dumps(approval.details, indent=2, ensure_ascii=False, sort_keys=False)
    return render(request, "approvals/details_all.html", {"approval": approval, "details_json": text})


@login_required
@require_GET
def request_status(request, public_id):
    """The result page's poll: the request's and its callback's status, nothing else (no details,
    no token). Not yours and not there answer alike."""
    approval = selectors.request_status(public_id)
    if approval is None or not permissions.can_view(request.user, approval):
        response = JsonResponse({"error": "not_found"}, status=404)
    else:
        callback = getattr(approval, "callback", None)
        response = JsonResponse(
            {
                "status": approval.status,
                "statusText": delivery.request_status_label(approval),
                "callback": None
                if callback is None
                else {
                    "status": callback.status,
                    "text": delivery.callback_label(callback),
                    "final": delivery.is_final(callback),
                },
            }
        )
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
