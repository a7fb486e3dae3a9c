"""Delegations in the admin: who stands in for whom, set one for someone, revoke.

Like the rest of the admin, nothing here writes a model: "add" calls services.delegation_set
and the Revoke action services.delegation_revoke, row by row. A delegation is never changed
or deleted in a form (the audit trail keeps its history). Registered by approvals/admin/__init__.py.
"""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from approvals import services
from approvals.admin.base import BulkAction, CraftedRequestsMixin, run_bulk
from approvals.forms.delegations import DelegationAdminForm
from approvals.models import Delegation
from approvals.selectors import delegations as delegation_selectors
from approvals.services.delegations import ADMIN_PERMISSION

ADD_FIELDS = ["delegator_email", "delegate_email", "starts_at", "ends_at", "reason"]
VIEW_FIELDS = [
    "delegator_email",
    "delegate_email",
    "starts_at",
    "ends_at",
    "revoked_at",
    "state",
    "reason",
    "set_by",
    "created_at",
]


class DelegationStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return list(delegation_selectors.DELEGATION_STATES.items())

    def queryset(self, request, queryset):
        if self.value() in delegation_selectors.DELEGATION_STATES:
            return delegation_selectors.delegations_in_state(queryset, self.value())
        return queryset


REVOKE = BulkAction(
    name="revoke_selected",
    title="Revoke the selected delegations",
    verb="Revoked",
    run=lambda request, pk, data: services.delegation_revoke(delegation_id=pk, actor=request.user),
    intro="From now on, each delegate no longer sees or decides the approver's requests. "
    "Decisions they already made stay as they are.",
)


@admin.register(Delegation)
class DelegationAdmin(CraftedRequestsMixin, admin.ModelAdmin):
    list_display = ["delegator_email", "delegate_email", "starts_at", "until", "state", "reason", "set_by"]
    list_filter = [DelegationStateFilter]
    list_select_related = ["delegator", "delegate", "created_by"]
    search_fields = ["delegator__email", "delegate__email"]
    search_help_text = "An email (or part of one): who is away, or who stands in."
    ordering = ["-starts_at", "-id"]
    form = DelegationAdminForm
    actions = ["revoke_selected"]

    # Set by the service (add) or read-only (view): never edited, never deleted.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm(ADMIN_PERMISSION)

    def get_fields(self, request, obj=None):
        return ADD_FIELDS if obj is None else VIEW_FIELDS

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else VIEW_FIELDS

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        class WithActor(form):
            def __init__(self, *args, **form_kwargs):
                super().__init__(*args, actor=request.user, **form_kwargs)

        return WithActor

    @admin.display(description="who is away", ordering="delegator__email")
    def delegator_email(self, obj: Delegation) -> str:
        return obj.delegator.email

    @admin.display(description="who stands in", ordering="delegate__email")
    def delegate_email(self, obj: Delegation) -> str:
        return obj.delegate.email

    @admin.display(description="set by")
    def set_by(self, obj: Delegation) -> str:
        return obj.created_by.email

    @admin.display(description="until")
    def until(self, obj: Delegation):
        return obj.effective_end

    @admin.display(description="state")
    def state(self, obj: Delegation) -> str:
        return delegation_selectors.DELEGATION_STATES[obj.state_at(timezone.now())]

    def save_model(self, request, obj, form, change):
        if change:
            raise PermissionDenied("A delegation is not edited: revoke it and set a new one.")
        data = form.cleaned_data
        try:
            delegation = services.delegation_set(
                delegator=form.delegator,
                delegate_email=data["delegate_email"],
                starts_at=data["starts_at"],
                ends_at=data["ends_at"],
                reason=data["reason"],
                actor=request.user,
            )
        except services.ApprovalError as error:  # the form checked it; a race at most
            raise PermissionDenied(error.message) from None
        # The admin's success message and redirect need the saved row.
        obj.pk = delegation.pk
        obj.delegator, obj.delegate, obj.created_by = delegation.delegator, delegation.delegate, delegation.created_by
        obj.starts_at, obj.ends_at, obj.created_at = delegation.starts_at, delegation.ends_at, delegation.created_at

    def bulk_labels(self, request, ids: list[int]) -> dict[int, str]:
        rows = Delegation.objects.filter(pk__in=ids).select_related("delegator", "delegate")
        labels = {row.pk: f"{row.delegator.email} → {row.delegate.email}" for row in rows}
        return {pk: labels.get(pk, f"delegation #{pk}") for pk in ids}

    @admin.action(description="Revoke the selected delegations", permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        return run_bulk(self, request, queryset, REVOKE)
