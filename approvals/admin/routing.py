"""Routing rules (where requests without approvers go), default approval policies and approver trust."""

from django.contrib import admin, messages

from approvals import services
from approvals.admin.base import ServiceWrittenAdmin
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
class RoutingRuleAdmin(ServiceWrittenAdmin):
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

    def service_save(self, request, pk, data):
        return services.routing_rule_save(
            actor=request.user,
            rule_id=pk,
            name=data["name"],
            state_machine_arn=data["state_machine_arn"],
            state_name=data["state_name"],
            users=split_list(data["users_text"]),
            groups=split_list(data["groups_text"]),
            priority=data["priority"],
            enabled=data["enabled"],
        )

    def service_delete(self, request, pk):
        services.routing_rule_delete(rule_id=pk, actor=request.user)


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(ServiceWrittenAdmin):
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

    def service_save(self, request, pk, data):
        fields = {name: data[name] for name in POLICY_FIELDS}
        return services.approval_policy_save(actor=request.user, policy_id=pk, **fields)

    def service_delete(self, request, pk):
        services.approval_policy_delete(policy_id=pk, actor=request.user)


# ---------------------------------------------------------------------------
# Approver trust: how far a state machine's messages may name who decides
# ---------------------------------------------------------------------------
@admin.register(ApproverTrust)
class ApproverTrustAdmin(ServiceWrittenAdmin):
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
        is_key = str(object_id).isascii() and str(object_id).isdigit()  # "²".isdigit(), and int("²") raises
        setting = ApproverTrust.objects.filter(pk=object_id).first() if is_key else None
        if setting is not None and setting.mode == ApproverTrust.Mode.FREE and request.method == "GET":
            messages.warning(request, FREE_TRUST_WARNING)
        return super().change_view(request, object_id, form_url, extra_context)

    def service_save(self, request, pk, data):
        setting = services.approver_trust_save(
            actor=request.user,
            setting_id=pk,
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
        if setting.mode == ApproverTrust.Mode.FREE:
            messages.warning(request, FREE_TRUST_WARNING)
        return setting

    def service_delete(self, request, pk):
        services.approver_trust_delete(setting_id=pk, actor=request.user)
