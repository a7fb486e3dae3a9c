"""Routing rules (where requests without approvers go), default approval policies and approver trust."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied

from approvals import services
from approvals.forms.admin import FREE_TRUST_WARNING, ApproverTrustAdminForm, RoutingRuleAdminForm, split_list
from approvals.models import (
    ApprovalPolicy,
    ApproverTrust,
    RoutingRule,
)
from approvals.services.routing import POLICY_FIELDS
from approvals.stepfunctions import state_machine_name


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
