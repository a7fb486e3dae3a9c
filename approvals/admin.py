"""The admin: the portal's workbench for approvers and admins.

Two roles (approvals/roles.py), both from SSO groups:
- approvers see only "Approval requests", narrowed to what they may decide or decided, and
  approve or reject there (one by one or in bulk);
- admins (superusers) see everything: reassign, cancel, retry callbacks, replay or discard
  ingest errors, the audit trail, routing rules.

Nothing here writes a model: every change is one call to approvals.services, row by row, so a
refused row is reported with its reason and never blocks the others. Step Functions' fields
are read-only, and the task token (ciphertext, fingerprint) is declared out of every page.

Built for big tables: the assignees are prefetched (no query per row), no full COUNT(*)
(LargeTablePaginator, show_full_result_count off, no facets), filters list their choices by
loose index scans, and every filter and ordering offered has an index (approvals/models.py).
"""

import uuid
from collections.abc import Callable
from urllib.parse import quote as urlquote

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.db.models import Q, QuerySet
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince
from django.views.decorators.http import require_POST

from approvals import delivery, permissions, selectors, services
from approvals.forms import (
    FREE_TRUST_WARNING,
    AdminDecisionForm,
    ApproverTrustAdminForm,
    BulkApproveForm,
    BulkRejectForm,
    ConfirmForm,
    ReasonForm,
    ReassignForm,
    RoutingRuleAdminForm,
    split_list,
)
from approvals.models import (
    ApprovalPolicy,
    ApprovalRequest,
    ApproverTrust,
    Assignment,
    AuditEvent,
    Callback,
    CallbackStatus,
    InfoMessage,
    IngestError,
    RequestStatus,
    RoutingRule,
    User,
    Vote,
)
from approvals.paginators import AuditTrailPaginator, LargeTablePaginator
from approvals.services.policies import POLICY_FIELDS
from approvals.templatetags.approvals_tags import details_table

# A bulk action over more rows than this is refused: narrow the list with a filter first.
MAX_BULK_ROWS = 500

admin.site.site_header = "Approval portal"
admin.site.site_title = "Approval portal admin"
admin.site.index_title = "Workbench"
# The index links the operations dashboard (approvals/ops_views.py) for those who may see it.
admin.site.index_template = "admin/approvals/index.html"


# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------
class ActionsOnlyMixin:
    """Rows are never added, edited or deleted in a form: changes are actions that call services."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class BigTableAdmin(admin.ModelAdmin):
    """Changelist settings that keep a list fast with hundreds of thousands of rows."""

    paginator = LargeTablePaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    def get_object(self, request, object_id, from_field=None):
        # A row outside what this user may see answers 404, like a row that does not exist
        # (Django's admin would redirect to the index instead).
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("Not found")
        return obj


def _posted_ids(request: HttpRequest) -> list[int]:
    ids = []
    for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
        try:
            ids.append(int(value))
        except ValueError:
            continue
    return list(dict.fromkeys(ids))


def _selected_ids(request: HttpRequest, queryset: QuerySet) -> list[int]:
    """The rows a bulk action was asked for, narrowed to the user's own list (`queryset`, the
    changelist's rows) before anything else: a posted id outside it is treated exactly like an
    id that does not exist (see _unseen_ids), never handed to a service."""
    if request.POST.get("select_across") == "1":
        return list(queryset.values_list("pk", flat=True)[: MAX_BULK_ROWS + 1])
    posted = _posted_ids(request)[: MAX_BULK_ROWS + 1]
    # An id no key can hold names no row; SQLite's driver would raise on it instead of matching none.
    low, high = connections[queryset.db].ops.integer_field_range(queryset.model._meta.pk.get_internal_type())
    seen = set(queryset.filter(pk__in=[pk for pk in posted if low <= pk <= high]).values_list("pk", flat=True))
    return [pk for pk in posted if pk in seen]


def _unseen_ids(request: HttpRequest, selected: list[int]) -> list[int]:
    """Posted ids not in the user's list: rows that do not exist and rows they may not see, alike."""
    if request.POST.get("select_across") == "1":
        return []
    chosen = set(selected)
    return [pk for pk in _posted_ids(request)[: MAX_BULK_ROWS + 1] if pk not in chosen]


NOT_YOURS = "There is no such row, or it is not yours to see."


def _run_bulk(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    action: str,
    title: str,
    verb: str,
    form_class: type[Form],
    run: Callable[[int, dict], object],
    describe: Callable[[list[int]], dict[int, str]],
    intro: str = "",
) -> HttpResponse | None:
    """An action through a confirmation page with one form, then one service call per row.

    The first POST (from the changelist) shows the page; its own POST (`confirm`) runs the rows
    and lists which were done and which were refused, with the reason.
    """
    ids = _selected_ids(request, queryset)
    unseen = _unseen_ids(request, ids)
    if len(ids) + len(unseen) > MAX_BULK_ROWS:
        modeladmin.message_user(
            request, f"Select at most {MAX_BULK_ROWS} rows for one action; filter the list first.", messages.ERROR
        )
        return None
    # Unseen rows are described like rows that do not exist: by their number only.
    labels = describe(ids + unseen)
    confirmed = "confirm" in request.POST
    form = form_class(request.POST if confirmed else None)
    if confirmed and form.is_valid():
        done, refused = [], [(pk, NOT_YOURS) for pk in unseen]
        for pk in ids:
            try:
                run(pk, form.cleaned_data)
            except services.ApprovalError as error:
                refused.append((pk, error.message))
            else:
                done.append(pk)
        if done:
            names = ", ".join(labels[pk] for pk in done)
            modeladmin.message_user(request, f"{verb} {len(done)}: {names}.", messages.SUCCESS)
        for pk, reason in refused:
            modeladmin.message_user(request, f"Not {verb.lower()}: {labels[pk]} — {reason}", messages.ERROR)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "title": title,
        "intro": intro,
        "rows": [labels[pk] for pk in ids + unseen],
        "ids": ids + unseen,  # posted back as they came: the confirm POST narrows them again
        "action": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "form": form,
        "submit_label": title,
    }
    return TemplateResponse(request, "admin/approvals/action_form.html", context)


# ---------------------------------------------------------------------------
# Approval requests: filters
# ---------------------------------------------------------------------------
def state_machine_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1] if arn else ""


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
# Approval requests
# ---------------------------------------------------------------------------
class ApproverChangeList(ChangeList):
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
        "status",
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
        "status",
        "details_table",
        "requester_email",
        "assignees",
        "ignored_approvers_display",
        "claimed_by_email",
        "execution_link",
        "state_machine_arn",
        "state_name",
        "received_at",
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
        return super().get_changelist(request, **kwargs) if request.user.is_superuser else ApproverChangeList

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
        return queryset.filter(pk__in=selectors.request_ids_matching(search_term)), False

    # -- columns and fields --------------------------------------------------------------
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
            '<a href="{}" target="_blank" rel="noopener">AWS console</a>', console_url(obj.execution_arn)
        )

    @admin.display(description="execution")
    def execution_link(self, obj: ApprovalRequest) -> str:
        if not obj.execution_arn:
            return "—"
        url = console_url(obj.execution_arn)
        return format_html('{} (<a href="{}" target="_blank" rel="noopener">AWS console</a>)', obj.execution_arn, url)

    @admin.display(description="details")
    def details_table(self, obj: ApprovalRequest) -> str:
        # Bounded like the request page; "Show all details" is the portal's page for the rest.
        return details_table(obj.details, reverse("request-details", args=[obj.public_id]))

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
            "<li>{} by {}{}</li>",
            (
                (
                    "Approved" if vote.approve else "Rejected",
                    vote.user.email,
                    f" on behalf of {vote.on_behalf_of.email}" if vote.on_behalf_of else "",
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
        extra_context = {
            **(extra_context or {}),
            "decision_form": AdminDecisionForm() if refusal is None and self.has_decide_permission(request) else None,
            "refusal": refusal,
            "can_reassign": obj.is_pending and self.has_reassign_permission(request),
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
        form = AdminDecisionForm(request.POST)
        if not form.is_valid():
            for errors in form.errors.values():
                for error in errors:
                    self.message_user(request, error, messages.ERROR)
            return HttpResponseRedirect(self._change_url(obj))
        try:
            services.approval_decide(
                public_id=obj.public_id,
                user=request.user,
                approve=form.approve,
                comment=form.cleaned_data["comment"],
                via="admin",
            )
        except services.ApprovalError as error:
            self.message_user(request, error.message, messages.ERROR)
        else:
            verb = "Approved" if form.approve else "Rejected"
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
    def _labels(self, request) -> Callable[[list[int]], dict[int, str]]:
        """Titles for the rows this user may see; just the number for any other posted id."""

        def describe(ids: list[int]) -> dict[int, str]:
            visible = dict(self.get_queryset(request).filter(pk__in=ids).values_list("pk", "title"))
            return {pk: f"“{visible[pk]}” (#{pk})" if pk in visible else f"request #{pk}" for pk in ids}

        return describe

    def _decide_in_bulk(self, request, queryset, *, approve: bool):
        public_ids = dict(queryset.filter(pk__in=_selected_ids(request, queryset)).values_list("pk", "public_id"))

        def run(pk: int, data: dict) -> None:
            if pk not in public_ids:
                raise services.ApprovalError(NOT_YOURS, "not_found")
            services.approval_decide(
                public_id=public_ids[pk], user=request.user, approve=approve, comment=data["comment"], via="admin"
            )

        verb = "Approve" if approve else "Reject"
        return _run_bulk(
            self,
            request,
            queryset,
            action="approve_selected" if approve else "reject_selected",
            title=f"{verb} the selected requests",
            verb="Approved" if approve else "Rejected",
            form_class=BulkApproveForm if approve else BulkRejectForm,
            run=run,
            describe=self._labels(request),
            intro="Each request is checked on its own: those you may not decide are listed with the reason.",
        )

    @admin.action(description="Approve the selected requests", permissions=["decide"])
    def approve_selected(self, request, queryset):
        return self._decide_in_bulk(request, queryset, approve=True)

    @admin.action(description="Reject the selected requests", permissions=["decide"])
    def reject_selected(self, request, queryset):
        return self._decide_in_bulk(request, queryset, approve=False)

    @admin.action(description="Reassign the selected requests", permissions=["reassign"])
    def reassign_selected(self, request, queryset):
        return _run_bulk(
            self,
            request,
            queryset,
            action="reassign_selected",
            title="Reassign the selected requests",
            verb="Reassigned",
            form_class=ReassignForm,
            run=lambda pk, data: services.approval_reassign(
                request_id=pk,
                actor=request.user,
                users=data["users"],
                groups=data["groups"],
                mode=data["mode"],
                reason=data["reason"],
            ),
            describe=self._labels(request),
            intro="Decided requests are refused, each with its reason.",
        )

    @admin.action(description="Cancel the selected requests", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        return _run_bulk(
            self,
            request,
            queryset,
            action="cancel_selected",
            title="Cancel the selected requests",
            verb="Cancelled",
            form_class=ReasonForm,
            run=lambda pk, data: services.approval_cancel(request_id=pk, actor=request.user, reason=data["reason"]),
            describe=self._labels(request),
            intro="Each workflow gets SendTaskFailure with the error ApprovalCancelled and your reason.",
        )

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


def console_url(execution_arn: str) -> str:
    """The execution in the AWS console, in the region its ARN names."""
    parts = execution_arn.split(":")
    region = parts[3] if len(parts) > 3 and parts[3] else settings.AWS_REGION
    return (
        f"https://console.aws.amazon.com/states/home?region={urlquote(region)}"
        f"#/v2/executions/details/{urlquote(execution_arn, safe=':')}"
    )


# ---------------------------------------------------------------------------
# Callbacks (the outbox)
# ---------------------------------------------------------------------------
@admin.register(Callback)
class CallbackAdmin(ActionsOnlyMixin, BigTableAdmin):
    list_display = ["request_link", "kind", "delivery_state", "attempts", "error_code", "next_attempt_at", "updated_at"]
    list_filter = ["status", "resolution", "kind"]
    list_select_related = ["request"]
    search_fields = ["=request__public_id"]
    ordering = ["-updated_at", "-id"]
    fields = [
        "request_link",
        "kind",
        "status",
        "delivery_state",
        "resolution",
        "maybe_delivered",
        "attempts",
        "error_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
        "payload",
    ]
    readonly_fields = fields
    actions = ["retry_selected"]

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("approvals.retry_callback")

    @admin.display(description="delivery", ordering="status")
    def delivery_state(self, obj: Callback) -> str:
        return delivery.callback_label(obj)

    @admin.display(description="request")
    def request_link(self, obj: Callback) -> str:
        url = reverse("admin:approvals_approvalrequest_change", args=[obj.request_id])
        return format_html('<a href="{}">{}</a>', url, obj.request.title)

    @admin.action(description="Send the selected failed callbacks again", permissions=["retry"])
    def retry_selected(self, request, queryset):
        def describe(ids: list[int]) -> dict[int, str]:
            titles = dict(Callback.objects.filter(pk__in=ids).values_list("pk", "request__title"))
            return {pk: f"callback #{pk} (“{titles.get(pk, '?')}”)" for pk in ids}

        return _run_bulk(
            self,
            request,
            queryset,
            action="retry_selected",
            title="Send the selected callbacks again",
            verb="Queued",
            form_class=ConfirmForm,
            run=lambda pk, data: services.callback_retry(callback_id=pk, actor=request.user),
            describe=describe,
            intro="Only failed callbacks are sent again, with a fresh set of attempts.",
        )


# ---------------------------------------------------------------------------
# Ingest errors
# ---------------------------------------------------------------------------
@admin.register(IngestError)
class IngestErrorAdmin(ActionsOnlyMixin, BigTableAdmin):
    list_display = ["sqs_message_id", "code", "short_reason", "status", "receive_count", "last_seen_at"]
    list_filter = ["status", "code"]
    search_fields = ["=sqs_message_id"]
    ordering = ["-last_seen_at", "-id"]
    fields = [
        "sqs_message_id",
        "code",
        "reason",
        "status",
        "receive_count",
        "first_seen_at",
        "last_seen_at",
        "resolved_by_email",
        "resolved_at",
        "replayed_as_message_id",
        "message_kept",
        "body",
    ]
    readonly_fields = fields
    list_select_related = ["resolved_by"]
    actions = ["replay_selected", "discard_selected"]

    def has_resolve_permission(self, request) -> bool:
        return request.user.has_perm("approvals.resolve_ingesterror")

    @admin.display(description="reason")
    def short_reason(self, obj: IngestError) -> str:
        return obj.reason if len(obj.reason) <= 120 else obj.reason[:119] + "…"

    @admin.display(description="resolved by")
    def resolved_by_email(self, obj: IngestError) -> str:
        return obj.resolved_by.email if obj.resolved_by else "—"

    @admin.display(description="message kept for replay", boolean=True)
    def message_kept(self, obj: IngestError) -> bool:
        return bool(obj.message_ciphertext)

    @admin.display(description="body (token redacted)")
    def body(self, obj: IngestError) -> str:
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', obj.body_redacted)

    def _describe(self, ids: list[int]) -> dict[int, str]:
        rows = dict(IngestError.objects.filter(pk__in=ids).values_list("pk", "sqs_message_id"))
        return {pk: f"message {rows.get(pk, '?')} (#{pk})" for pk in ids}

    @admin.action(description="Replay: ingest the message again", permissions=["resolve"])
    def replay_selected(self, request, queryset):
        def replay(pk: int, data: dict) -> IngestError:
            row = services.ingest_error_replay(ingest_error_id=pk, actor=request.user)
            if row.status == IngestError.Status.OPEN:  # recorded (new reason, count) and committed
                raise services.ApprovalError(f"refused again: {row.reason}", row.code)
            return row

        return _run_bulk(
            self,
            request,
            queryset,
            action="replay_selected",
            title="Replay the selected messages",
            verb="Replayed",
            form_class=ConfirmForm,
            run=replay,
            describe=self._describe,
            intro="Each message is ingested again from the copy kept with its error (older errors: from the "
            "dead-letter queue). Do it once the cause is fixed: a message refused again keeps its error, "
            "with the new reason.",
        )

    @admin.action(description="Discard: give up on the message", permissions=["resolve"])
    def discard_selected(self, request, queryset):
        return _run_bulk(
            self,
            request,
            queryset,
            action="discard_selected",
            title="Discard the selected messages",
            verb="Discarded",
            form_class=ConfirmForm,
            run=lambda pk, data: services.ingest_error_discard(ingest_error_id=pk, actor=request.user),
            describe=self._describe,
            intro="The copy of each message kept with its error is erased (older errors: the message is deleted "
            "from the dead-letter queue). Its execution keeps waiting until its own timeout: stop it in Step "
            "Functions if it should not.",
        )


# ---------------------------------------------------------------------------
# The audit trail: nobody adds, changes or deletes an event — superusers included.
# ---------------------------------------------------------------------------
class AuditActionFilter(admin.SimpleListFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        return [(action, action) for action in selectors.audit_actions()]

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(ActionsOnlyMixin, BigTableAdmin):
    paginator = AuditTrailPaginator
    list_display = ["created_at", "action", "actor_label", "request_link"]
    list_filter = [AuditActionFilter]
    list_select_related = ["request"]
    search_fields = ["actor_label"]
    search_help_text = "Who acted (email, exactly), an action, or a request id."
    ordering = ["-created_at", "-id"]
    sortable_by = ["created_at"]
    fields = ["created_at", "action", "actor_label", "request_link", "data"]
    readonly_fields = fields
    actions = None

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # Each branch has an index (Upper(actor_label), action, request): no scan of millions of rows.
        match = Q(actor_label__iexact=term) | Q(action=term)
        try:
            requests = ApprovalRequest.objects.filter(public_id=uuid.UUID(term))
            match |= Q(request__in=requests.values("pk"))
        except ValueError:
            pass
        return queryset.filter(match), False

    @admin.display(description="request")
    def request_link(self, obj: AuditEvent) -> str:
        if obj.request_id is None:
            return "—"
        url = reverse("admin:approvals_approvalrequest_change", args=[obj.request_id])
        return format_html('<a href="{}">{}</a>', url, obj.request.title)


# ---------------------------------------------------------------------------
# Routing rules: where requests without approvers go
# ---------------------------------------------------------------------------
@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "priority", "machine", "state_name", "approvers"]
    list_filter = ["enabled"]
    search_fields = ["name", "state_machine_arn", "state_name"]
    form = RoutingRuleAdminForm
    fields = ["name", "state_machine_arn", "state_name", "users_text", "groups_text", "priority", "enabled"]

    @admin.display(description="state machine")
    def machine(self, obj: RoutingRule) -> str:
        return state_machine_name(obj.state_machine_arn) or "any"

    @admin.display(description="approvers")
    def approvers(self, obj: RoutingRule) -> str:
        return ", ".join([*obj.users, *(f"{name} (group)" for name in obj.groups)])

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            rule = services.routing_rule_save(
                actor=request.user,
                rule_id=obj.pk if change else None,
                name=data["name"],
                state_machine_arn=data["state_machine_arn"],
                state_name=data["state_name"],
                users=split_list(data["users_text"]),
                groups=split_list(data["groups_text"]),
                priority=data["priority"],
                enabled=data["enabled"],
            )
        except services.ApprovalError as error:  # the form validated it; a race at most
            raise PermissionDenied(error.message) from None
        obj.pk = rule.pk

    def delete_model(self, request, obj):
        services.routing_rule_delete(rule_id=obj.pk, actor=request.user)

    def delete_queryset(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            services.routing_rule_delete(rule_id=pk, actor=request.user)


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(admin.ModelAdmin):
    """Default policies; a message's "policy" overrides the quorum fields, never separation of duties."""

    list_display = [
        "name",
        "enabled",
        "priority",
        "machine",
        "state_name",
        "required_approvals",
        "distinct_groups",
        "rejections_to_deny",
        "sod_distinct_levels",
        "sod_exclude_requester_groups",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "state_machine_arn", "state_name"]
    fields = list(POLICY_FIELDS)

    @admin.display(description="state machine")
    def machine(self, obj: ApprovalPolicy) -> str:
        return state_machine_name(obj.state_machine_arn) or "any"

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in POLICY_FIELDS}
        try:
            policy = services.approval_policy_save(actor=request.user, policy_id=obj.pk if change else None, **data)
        except services.ApprovalError as error:  # the form validated it; a race at most
            raise PermissionDenied(error.message) from None
        obj.pk = policy.pk

    def delete_model(self, request, obj):
        services.approval_policy_delete(policy_id=obj.pk, actor=request.user)

    def delete_queryset(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            services.approval_policy_delete(policy_id=pk, actor=request.user)


# ---------------------------------------------------------------------------
# Approver trust: how far a state machine's messages may name who decides
# ---------------------------------------------------------------------------
@admin.register(ApproverTrust)
class ApproverTrustAdmin(admin.ModelAdmin):
    """No setting for a state machine: routing only (approvals/trust.py, docs/security.md "Trust boundary")."""

    list_display = ["name", "enabled", "priority", "machine", "state_name", "mode", "allow_list", "require_requester"]
    list_filter = ["enabled", "mode"]
    search_fields = ["name", "state_machine_arn", "state_name"]
    form = ApproverTrustAdminForm
    fields = [
        "name",
        "state_machine_arn",
        "state_name",
        "mode",
        "users_text",
        "groups_text",
        "require_requester",
        "priority",
        "enabled",
    ]

    @admin.display(description="state machine")
    def machine(self, obj: ApproverTrust) -> str:
        return state_machine_name(obj.state_machine_arn) or "any"

    @admin.display(description="allow-list")
    def allow_list(self, obj: ApproverTrust) -> str:
        if obj.mode != ApproverTrust.Mode.ALLOW_LIST:
            return "—"
        return ", ".join([*obj.allowed_users, *(f"{name} (group)" for name in obj.allowed_groups)]) or "nobody"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        setting = ApproverTrust.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        if setting is not None and setting.mode == ApproverTrust.Mode.FREE and request.method == "GET":
            messages.warning(request, FREE_TRUST_WARNING)
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            setting = services.approver_trust_save(
                actor=request.user,
                setting_id=obj.pk if change else None,
                name=data["name"],
                state_machine_arn=data["state_machine_arn"],
                state_name=data["state_name"],
                mode=data["mode"],
                allowed_users=data["allowed_users"],
                allowed_groups=data["allowed_groups"],
                require_requester=data["require_requester"],
                priority=data["priority"],
                enabled=data["enabled"],
            )
        except services.ApprovalError as error:  # the form validated it; a race at most
            raise PermissionDenied(error.message) from None
        obj.pk = setting.pk
        if setting.mode == ApproverTrust.Mode.FREE:
            messages.warning(request, FREE_TRUST_WARNING)

    def delete_model(self, request, obj):
        services.approver_trust_delete(setting_id=obj.pk, actor=request.user)

    def delete_queryset(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            services.approver_trust_delete(setting_id=pk, actor=request.user)


# ---------------------------------------------------------------------------
# Users: kept in step with the IdP at every sign-in
# ---------------------------------------------------------------------------
@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ["email", "first_name", "last_name", "is_staff", "is_superuser", "oidc_issuer", "last_login"]
    search_fields = ["email", "first_name", "last_name", "oidc_sub"]
    readonly_fields = ["oidc_issuer", "oidc_sub", "last_login", "sso_verified_at", "date_joined"]
    fieldsets = [
        (None, {"fields": ["username", "email", "first_name", "last_name"]}),
        ("SSO", {"fields": ["oidc_issuer", "oidc_sub"]}),
        ("Access (from SSO groups)", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        ("Dates", {"fields": ["last_login", "sso_verified_at", "date_joined"]}),
    ]


from approvals import delegation_admin, slack_admin  # noqa: E402, F401 - register Delegation, SlackIdentity
from approvals.notifications import admin as notifications_admin  # noqa: E402, F401 - registers its models

# SCIM tokens' admin lives with the SCIM package until the admin becomes a package of its own.
from approvals.scim import admin as scim_admin  # noqa: E402, F401 - registers ScimToken
