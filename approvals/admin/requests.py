"""Approval requests: the changelist approvers and admins work from, its filters, and its actions."""

import json

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince
from django.views.decorators.http import require_POST

from approvals import delivery, one_click, permissions, selectors, services
from approvals.admin.base import (
    MAX_BULK_ROWS,
    NOT_YOURS,
    ActionsOnlyMixin,
    BigTableAdmin,
    BigTableChangeList,
    BulkAction,
    run_bulk,
)
from approvals.contract import stored_options
from approvals.forms.admin import (
    AdminDecisionForm,
    AdminOptionForm,
    BulkApproveForm,
    BulkRejectForm,
    ReasonForm,
    ReassignForm,
)
from approvals.models import (
    ApprovalRequest,
    Assignment,
    AuditEvent,
    Callback,
    CallbackStatus,
    InfoMessage,
    RequestStatus,
    Vote,
)
from approvals.selectors import sources as source_selectors
from approvals.stepfunctions import execution_console_url, state_machine_name
from approvals.templatetags.approvals_tags import details_table


# ---------------------------------------------------------------------------
# Approval requests: filters
# ---------------------------------------------------------------------------
class StateMachineFilter(admin.SimpleListFilter):
    title = "state machine"
    parameter_name = "machine"

    def lookups(self, request, model_admin):
        return [(arn, state_machine_name(arn)) for arn in selectors.state_machine_arns()]

    def queryset(self, request, queryset):
        return queryset.filter(state_machine_arn=self.value()) if self.value() else queryset


class AssignedGroupFilter(admin.SimpleListFilter):
    title = "assigned group"
    parameter_name = "group"

    def lookups(self, request, model_admin):
        return [(name, name) for name in selectors.assigned_group_names()]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        assigned = Assignment.objects.filter(kind=Assignment.Kind.GROUP, value=self.value())
        return queryset.filter(pk__in=assigned.values("request_id"))


class SourceFilter(admin.SimpleListFilter):
    """The approval source (docs/sources.md): one AWS account and region each; hidden without sources."""

    title = "source (account, region)"
    parameter_name = "source"

    def lookups(self, request, model_admin):
        choices = source_selectors.source_choices()
        return [("default", "Default queue"), *choices] if choices else []

    def queryset(self, request, queryset):
        return source_selectors.requests_of_source(queryset, self.value() or "")


class OverdueFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", "Pending past its deadline")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status=RequestStatus.PENDING, deadline__lte=timezone.now())
        return queryset


class CallbackFailedFilter(admin.SimpleListFilter):
    title = "callback"
    parameter_name = "callback"

    def lookups(self, request, model_admin):
        return [("failed", "Failed permanently")]

    def queryset(self, request, queryset):
        if self.value() == "failed":
            failed = Callback.objects.filter(status=CallbackStatus.FAILED)
            return queryset.filter(pk__in=failed.values("request_id"))
        return queryset


class ClaimedFilter(admin.SimpleListFilter):
    """Pending requests someone is on ("I'm on it"), or that nobody took yet; a closed request's
    claim no longer counts."""

    title = "claimed"
    parameter_name = "claimed"

    def lookups(self, request, model_admin):
        return [("yes", "Claimed (pending)"), ("no", "Not claimed (pending)")]

    def queryset(self, request, queryset):
        if self.value() in {"yes", "no"}:
            return queryset.filter(status=RequestStatus.PENDING, claimed_by__isnull=self.value() == "no")
        return queryset


# ---------------------------------------------------------------------------
# Approval requests: bulk actions (one service call per row, approvals/admin/base.py)
# ---------------------------------------------------------------------------
def _one_click_decide(request: HttpRequest, approval: ApprovalRequest, *, approve: bool, comment: str) -> None:
    """Approve/reject as a one-click channel (approvals/one_click.py): a request with options only
    when the action maps to exactly one option, never one whose form needs input. A request that
    cannot be decided so is refused (and audited), nothing decided."""
    try:
        decision = one_click.bulk_choice(approval, approve=approve)
    except one_click.OneClickRefused as refused:
        services.refusal_record(
            user=request.user,
            request=approval,
            code=refused.code,
            attempted="approve" if approve else "reject",
            via="admin",
        )
        raise services.ApprovalError(refused.message, refused.code, request=approval) from None
    services.approval_decide(
        public_id=approval.public_id,
        user=request.user,
        comment=comment,
        via="admin",
        **({"choice": list(decision.choice)} if decision.choice else {"approve": decision.approve}),
    )


def _decide(approve: bool):
    def run(request: HttpRequest, pk: int, data: dict) -> None:
        # The row is in the user's list (run_bulk narrowed the ids to it); the service checks the rest.
        approval = ApprovalRequest.objects.filter(pk=pk).only("pk", "public_id", "options", "form_schema").first()
        if approval is None:
            raise services.ApprovalError(NOT_YOURS, "not_found")
        _one_click_decide(request, approval, approve=approve, comment=data["comment"])

    return run


DECIDE_INTRO = (
    "Each request is checked on its own: those you may not decide are listed with the reason. A request with "
    "options is decided only if this action means exactly one of them (its only success option to approve, its "
    "only failure option to reject); one whose form has required fields is approved only on its page."
)
APPROVE = BulkAction(
    name="approve_selected",
    title="Approve the selected requests",
    verb="Approved",
    form_class=BulkApproveForm,
    run=_decide(approve=True),
    intro=DECIDE_INTRO,
)
REJECT = BulkAction(
    name="reject_selected",
    title="Reject the selected requests",
    verb="Rejected",
    form_class=BulkRejectForm,
    run=_decide(approve=False),
    intro=DECIDE_INTRO,
)
REASSIGN = BulkAction(
    name="reassign_selected",
    title="Reassign the selected requests",
    verb="Reassigned",
    form_class=ReassignForm,
    run=lambda request, pk, data: services.approval_reassign(
        request_id=pk,
        actor=request.user,
        users=data["users"],
        groups=data["groups"],
        mode=data["mode"],
        reason=data["reason"],
    ),
    intro="Decided requests, and those past their deadline, are refused, each with its reason.",
)
CANCEL = BulkAction(
    name="cancel_selected",
    title="Cancel the selected requests",
    verb="Cancelled",
    form_class=ReasonForm,
    run=lambda request, pk, data: services.approval_cancel(request_id=pk, actor=request.user, reason=data["reason"]),
    intro="Each workflow gets SendTaskFailure with the error ApprovalCancelled and your reason.",
)


def _constraints(field: dict) -> str:
    """A form field's constraints, readable: "minimum 1, maximum 50, pattern ^v\\d+$"."""
    parts = [
        f"{key} {json.dumps(field[key], ensure_ascii=False)}"
        for key in ("minimum", "maximum", "minLength", "maxLength", "pattern", "enum", "default")
        if key in field
    ]
    return ", ".join(parts)


def _vote_choice(request: ApprovalRequest, vote: Vote) -> str:
    """What a vote chose and answered, as plain text (escaped by format_html_join)."""
    chosen = getattr(vote, "choice", None) or []
    answers = getattr(vote, "answers", None) or {}
    labels = {option.id: option.label for option in stored_options(request.options)}
    text = ""
    if chosen and request.options:
        text += " — chose " + ", ".join(f"“{labels.get(each, each)}” ({each})" for each in chosen)
    if answers:
        text += "; answers: " + ", ".join(
            f"{name} = {json.dumps(value, ensure_ascii=False)}" for name, value in answers.items()
        )
    return text


# ---------------------------------------------------------------------------
# Approval requests
# ---------------------------------------------------------------------------
class RequestChangeList(BigTableChangeList):
    """The list of requests reads only what its columns show: not the details (up to the
    message's size limit each: 50 rows of 256 KiB were 12.8 MB read and decoded for a page that
    shows none of it), not the token's ciphertext, not the forms and options. The change page and
    the bulk actions read the rows they need themselves."""

    UNSHOWN = ("details", "token_ciphertext", "form_schema", "options", "ignored_approvers", "requester_groups")

    def get_queryset(self, request, exclude_parameters=None):
        return super().get_queryset(request, exclude_parameters).defer(*self.UNSHOWN)


class ApproverChangeList(RequestChangeList):
    """An approver's list: their own few requests need no date drill-down (two queries saved)."""

    def __init__(self, request, model, list_display, list_display_links, list_filter, date_hierarchy, *args, **kw):
        super().__init__(request, model, list_display, list_display_links, list_filter, None, *args, **kw)


class AuditEventInline(ActionsOnlyMixin, admin.TabularInline):
    """The request's history, read-only (and only for those who may read the audit trail)."""

    model = AuditEvent
    fields = ["created_at", "action", "actor_label", "data"]
    readonly_fields = fields
    ordering = ["created_at", "id"]
    extra = 0
    can_delete = False
    show_change_link = False


class InfoMessageInline(ActionsOnlyMixin, admin.TabularInline):
    """Questions and answers, read-only: whoever sees the request sees its conversation (the
    approvers' queryset is already narrowed to their requests), as on the request page."""

    model = InfoMessage
    verbose_name = "question or answer"
    verbose_name_plural = "questions and answers"
    fields = ["created_at", "kind", "author_label", "text"]
    readonly_fields = fields
    ordering = ["created_at", "id"]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("approvals.view_approvalrequest")


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ActionsOnlyMixin, BigTableAdmin):
    list_display = [
        "title",
        "status_label",
        "assignees",
        "claimed_by_email",
        "requester_email",
        "age",
        "deadline_display",
        "machine_and_state",
        "console_link",
    ]
    list_display_links = ["title"]
    list_filter = [
        "status",
        StateMachineFilter,
        SourceFilter,
        AssignedGroupFilter,
        OverdueFilter,
        CallbackFailedFilter,
        ClaimedFilter,
    ]
    list_select_related = ["claimed_by"]
    # The search itself is get_search_results; this turns the search box on and says what it finds.
    search_fields = ["title"]
    search_help_text = (
        "Title, requester or execution name (contains), approver email or group, execution ARN, or request id."
    )
    date_hierarchy = "received_at"
    # Only the orderings the indexes serve.
    sortable_by = ["age", "deadline_display"]
    ordering = ["-received_at", "-id"]
    # Declared one by one: the token's ciphertext and fingerprint are never shown.
    fields = [
        "public_id",
        "title",
        "status_label",
        "details_table",
        "options_display",
        "form_display",
        "requester_email",
        "assignees",
        "ignored_approvers_display",
        "claimed_by_email",
        "execution_link",
        "source",
        "state_machine_arn",
        "state_name",
        "received_at",
        "message_sent_at",
        "deadline",
        "timeout_seconds",
        "heartbeat_seconds",
        "last_heartbeat_at",
        "policy_and_votes",
        "decided_by_email",
        "decided_at",
        "decision_comment",
        "callback_status",
        "sqs_message_id",
    ]
    readonly_fields = fields
    inlines = [InfoMessageInline, AuditEventInline]
    actions = ["approve_selected", "reject_selected", "reassign_selected", "cancel_selected", "release_claims_selected"]
    change_form_template = "admin/approvals/approvalrequest/change_form.html"

    # -- what each user sees -------------------------------------------------------------
    def get_queryset(self, request):
        return selectors.admin_requests_for(request.user)

    def get_list_filter(self, request):
        if request.user.is_superuser:
            return self.list_filter
        # The other filters list every state machine and group in the portal, not only theirs.
        return ["status", OverdueFilter, ClaimedFilter]

    def get_changelist(self, request, **kwargs):
        return RequestChangeList if request.user.is_superuser else ApproverChangeList

    def has_decide_permission(self, request) -> bool:
        return request.user.has_perm("approvals.decide_approvalrequest")

    def has_reassign_permission(self, request) -> bool:
        return request.user.has_perm("approvals.reassign_approvalrequest")

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("approvals.cancel_approvalrequest")

    def has_release_claim_permission(self, request) -> bool:
        return request.user.has_perm("approvals.release_claim_approvalrequest")

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return selectors.admin_search(queryset, search_term), False

    # -- columns and fields --------------------------------------------------------------
    @admin.display(description="status", ordering="status")
    def status_label(self, obj: ApprovalRequest) -> str:
        # The request page's words: "Closed by Step Functions", not the stored "Expired". The
        # callback it reads is prefetched by get_queryset (selectors.admin_requests_for).
        return delivery.request_status_label(obj)

    @admin.display(description="assignees")
    def assignees(self, obj: ApprovalRequest) -> str:
        return ", ".join(
            a.value if a.kind == Assignment.Kind.USER else f"{a.value} (group)" for a in obj.assignments.all()
        )

    @admin.display(description="ignored approvers")
    def ignored_approvers_display(self, obj: ApprovalRequest) -> str:
        if not obj.ignored_approvers:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{}{}: {}</li>",
                (
                    (
                        entry.get("value", ""),
                        " (group)" if entry.get("kind") == "group" else "",
                        entry.get("reason", ""),
                    )
                    for entry in obj.ignored_approvers
                ),
            ),
        )

    @admin.display(description="claimed by")
    def claimed_by_email(self, obj: ApprovalRequest) -> str:
        # A claim says who is on a pending request; once it is closed it means nothing.
        return obj.claimed_by.email if obj.claimed_by and obj.is_pending else "—"

    @admin.display(description="age", ordering="received_at")
    def age(self, obj: ApprovalRequest) -> str:
        return timesince(obj.received_at)

    @admin.display(description="deadline", ordering="deadline")
    def deadline_display(self, obj: ApprovalRequest) -> str:
        if obj.deadline is None:
            return "—"
        text = timezone.localtime(obj.deadline).strftime("%Y-%m-%d %H:%M")
        return format_html("{} <strong>overdue</strong>", text) if obj.is_pending and obj.is_overdue else text

    @admin.display(description="state machine / state")
    def machine_and_state(self, obj: ApprovalRequest) -> str:
        return " / ".join(part for part in (state_machine_name(obj.state_machine_arn), obj.state_name) if part)

    @admin.display(description="execution")
    def console_link(self, obj: ApprovalRequest) -> str:
        if not obj.execution_arn:
            return "—"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">AWS console</a>', execution_console_url(obj.execution_arn)
        )

    @admin.display(description="execution")
    def execution_link(self, obj: ApprovalRequest) -> str:
        if not obj.execution_arn:
            return "—"
        url = execution_console_url(obj.execution_arn)
        return format_html('{} (<a href="{}" target="_blank" rel="noopener">AWS console</a>)', obj.execution_arn, url)

    @admin.display(description="details")
    def details_table(self, obj: ApprovalRequest) -> str:
        # Bounded like the request page; "Show all details" is the portal's page for the rest.
        return details_table(obj.details, reverse("request-details", args=[obj.public_id]))

    @admin.display(description="options")
    def options_display(self, obj: ApprovalRequest) -> str:
        if not obj.options:
            return "Approve or reject (the request offers no options)."
        rows = format_html_join(
            "",
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    option.id,
                    option.label,
                    option.outcome,
                    option.error if option.outcome == "failure" else "—",
                    "yes" if option.default else "",
                )
                for option in stored_options(obj.options)
            ),
        )
        return format_html(
            "<table><thead><tr><th>id</th><th>label</th><th>outcome</th><th>error</th><th>default</th></tr></thead>"
            "<tbody>{}</tbody></table>{}",
            rows,
            "Several success options may be chosen together." if obj.multiple_options else "",
        )

    @admin.display(description="form")
    def form_display(self, obj: ApprovalRequest) -> str:
        schema = obj.form or {}  # the fields in the message's order
        fields = schema.get("properties") or {}
        if not fields:
            return "—"
        required = set(schema.get("required") or ())
        rows = format_html_join(
            "",
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    name,
                    "/".join(str(part) for part in (field.get("type"), field.get("format")) if part),
                    "required" if name in required else "",
                    _constraints(field),
                    " — ".join(str(field[key]) for key in ("title", "description") if field.get(key)),
                )
                for name, field in fields.items()
            ),
        )
        return format_html(
            "{}<table><thead><tr><th>field</th><th>type</th><th>required</th><th>constraints</th><th>title</th>"
            "</tr></thead><tbody>{}</tbody></table>",
            format_html("<p>{}</p>", schema["title"]) if schema.get("title") else "",
            rows,
        )

    @admin.display(description="decided by")
    def decided_by_email(self, obj: ApprovalRequest) -> str:
        return obj.decided_by.email if obj.decided_by else "—"

    @admin.display(description="policy and votes")
    def policy_and_votes(self, obj: ApprovalRequest) -> str:
        votes = obj.votes.select_related("user", "on_behalf_of").order_by("created_at", "pk")
        rule = "any rejection denies" if obj.rejections_to_deny == 1 else f"{obj.rejections_to_deny} rejections deny"
        summary = format_html(
            "{} approval(s) required{}; {}{}{}",
            obj.required_approvals,
            ", from distinct groups" if obj.distinct_groups else "",
            rule,
            "; not the same person at two levels" if obj.sod_distinct_levels else "",
            "; not a member of the requester's groups" if obj.sod_exclude_requester_groups else "",
        )
        lines = format_html_join(
            "",
            "<li>{} by {}{}{}</li>",
            (
                (
                    "Approved" if vote.approve else "Rejected",
                    vote.user.email,
                    f" on behalf of {vote.on_behalf_of.email}" if vote.on_behalf_of else "",
                    _vote_choice(obj, vote),
                )
                for vote in votes
            ),
        )
        withdrawn = format_html_join(
            "",
            "<li>{} by {} — withdrawn, no longer counts: {}</li>",
            (
                ("Approval" if vote.approve else "Rejection", vote.user.email, vote.withdrawn_reason)
                for vote in Vote.with_withdrawn.filter(request=obj, withdrawn_at__isnull=False)
                .select_related("user")
                .order_by("withdrawn_at", "pk")
            ),
        )
        lines = format_html("{}{}", lines, withdrawn)
        return format_html("{}<ul>{}</ul>", summary, lines) if lines else summary

    @admin.display(description="callback")
    def callback_status(self, obj: ApprovalRequest) -> str:
        callback = Callback.objects.filter(request=obj).first()
        if callback is None:
            return "—"
        detail = f" ({callback.error_code})" if callback.error_code else ""
        label = delivery.callback_label(callback)
        return f"{callback.get_kind_display()}: {label}{detail}, {callback.attempts} attempt(s)"

    # -- the change page: decide, and the admins' tools ----------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/decide/", view(require_POST(self.decide_view)), name="approvals_request_decide"),
            path("<path:object_id>/reassign/", view(self.reassign_view), name="approvals_request_reassign"),
            path("<path:object_id>/cancel/", view(self.cancel_view), name="approvals_request_cancel"),
            path(
                "<path:object_id>/retry-callback/",
                view(require_POST(self.retry_callback_view)),
                name="approvals_request_retry_callback",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        refusal = permissions.decision_refusal(request.user, obj)
        callback = Callback.objects.filter(request=obj).first()
        may_decide = refusal is None and self.has_decide_permission(request)
        extra_context = {
            **(extra_context or {}),
            "decision_form": AdminDecisionForm() if may_decide else None,
            # A request with options: a button per option; a required form: its page decides.
            "decision_options": one_click.choices(obj) if may_decide and one_click.has_options(obj) else (),
            "decide_on_page": may_decide and one_click.needs_page(obj),
            "refusal": refusal,
            # Past its deadline nobody may decide it: reassigning is refused (services/assignments.py).
            "can_reassign": obj.is_pending and not obj.is_overdue and self.has_reassign_permission(request),
            "can_cancel": obj.is_pending and self.has_cancel_permission(request),
            "can_retry_callback": callback is not None
            and callback.status == CallbackStatus.FAILED
            and request.user.has_perm("approvals.retry_callback"),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _change_url(self, obj: ApprovalRequest) -> str:
        return reverse("admin:approvals_approvalrequest_change", args=[obj.pk])

    def decide_view(self, request, object_id):
        if not self.has_decide_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise PermissionDenied
        form = AdminOptionForm(request.POST) if "option" in request.POST else AdminDecisionForm(request.POST)
        if not form.is_valid():
            for errors in form.errors.values():
                for error in errors:
                    self.message_user(request, error, messages.ERROR)
            return HttpResponseRedirect(self._change_url(obj))
        comment = form.cleaned_data["comment"]
        try:
            if isinstance(form, AdminOptionForm):
                # The service checks the option against the request (and a failure option's reason).
                services.approval_decide(
                    public_id=obj.public_id,
                    user=request.user,
                    choice=[form.cleaned_data["option"]],
                    comment=comment,
                    via="admin",
                )
                verb = "Decided"
            else:
                _one_click_decide(request, obj, approve=form.approve, comment=comment)
                verb = "Approved" if form.approve else "Rejected"
        except services.ApprovalError as error:
            self.message_user(request, error.message, messages.ERROR)
        else:
            self.message_user(request, f"{verb}: the workflow is being told.", messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(obj))

    def _single_action_view(
        self, request, object_id, *, allowed: bool, title: str, form_class, run, show_approvers=False
    ):
        if not allowed:
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        form = form_class(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                run(obj, form.cleaned_data)
            except services.ApprovalError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                self.message_user(request, f"{title}: done.", messages.SUCCESS)
                return HttpResponseRedirect(self._change_url(obj))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "rows": [f"“{obj.title}” (#{obj.pk})"],
            "form": form,
            "submit_label": title,
            "original": obj,
            # Reassign: who the request is with now, so "add" and "replace" are chosen knowingly.
            "current_approvers": (self.assignees(obj) or "nobody") if show_approvers else None,
        }
        return TemplateResponse(request, "admin/approvals/action_form.html", context)

    def reassign_view(self, request, object_id):
        return self._single_action_view(
            request,
            object_id,
            allowed=self.has_reassign_permission(request),
            title="Reassign",
            form_class=ReassignForm,
            show_approvers=True,
            run=lambda obj, data: services.approval_reassign(
                request_id=obj.pk,
                actor=request.user,
                users=data["users"],
                groups=data["groups"],
                mode=data["mode"],
                reason=data["reason"],
            ),
        )

    def cancel_view(self, request, object_id):
        return self._single_action_view(
            request,
            object_id,
            allowed=self.has_cancel_permission(request),
            title="Cancel the request",
            form_class=ReasonForm,
            run=lambda obj, data: services.approval_cancel(
                request_id=obj.pk, actor=request.user, reason=data["reason"]
            ),
        )

    def retry_callback_view(self, request, object_id):
        if not request.user.has_perm("approvals.retry_callback"):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        callback = Callback.objects.filter(request=obj).first()
        try:
            if callback is None:
                raise services.ApprovalError("This request has no callback.", "not_found")
            services.callback_retry(callback_id=callback.pk, actor=request.user)
        except services.ApprovalError as error:
            self.message_user(request, error.message, messages.ERROR)
        else:
            self.message_user(request, "The callback is queued to be sent again.", messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(obj))

    # -- bulk actions --------------------------------------------------------------------
    def bulk_labels(self, request, ids: list[int]) -> dict[int, str]:
        """Titles for the rows this user may see; just the number for any other posted id."""
        visible = dict(self.get_queryset(request).filter(pk__in=ids).values_list("pk", "title"))
        return {pk: f"“{visible[pk]}” (#{pk})" if pk in visible else f"request #{pk}" for pk in ids}

    @admin.action(description="Approve the selected requests", permissions=["decide"])
    def approve_selected(self, request, queryset):
        return run_bulk(self, request, queryset, APPROVE)

    @admin.action(description="Reject the selected requests", permissions=["decide"])
    def reject_selected(self, request, queryset):
        return run_bulk(self, request, queryset, REJECT)

    @admin.action(description="Reassign the selected requests", permissions=["reassign"])
    def reassign_selected(self, request, queryset):
        return run_bulk(self, request, queryset, REASSIGN)

    @admin.action(description="Cancel the selected requests", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        return run_bulk(self, request, queryset, CANCEL)

    @admin.action(description="Release claims on the selected requests", permissions=["release_claim"])
    def release_claims_selected(self, request, queryset):
        """No confirmation step: a claim is only information, and the approver can claim again."""
        ids = list(queryset.values_list("pk", flat=True)[: MAX_BULK_ROWS + 1])
        if len(ids) > MAX_BULK_ROWS:
            self.message_user(
                request, f"Select at most {MAX_BULK_ROWS} rows for one action; filter the list first.", messages.ERROR
            )
            return
        try:
            released = services.claims_release(request_ids=ids, actor=request.user)
        except services.ApprovalError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        if released:
            names = ", ".join(
                f"“{claim.request.title}” (#{claim.request.pk}, {claim.claimed_by.email})" for claim in released
            )
            self.message_user(request, f"Released {len(released)} claim(s): {names}.", messages.SUCCESS)
        unclaimed = len(ids) - len(released)
        if unclaimed:
            self.message_user(request, f"{unclaimed} selected request(s) had no claim.", messages.INFO)
