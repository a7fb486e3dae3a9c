"""Routing: where requests go and how they are decided — the admins' routing rules (approvers for requests
that name none) and default approval policies, per state machine / state."""

from collections.abc import Sequence

from django.db import transaction
from django.forms.models import model_to_dict

from approvals.contract import MAX_POLICY_COUNT
from approvals.models import (
    ApprovalPolicy,
    AuditAction,
    RoutingRule,
    User,
)
from approvals.services.assignments import clean_assignees
from approvals.services.common import ApprovalError, audit

POLICY_FIELDS = (
    "name",
    "state_machine_arn",
    "state_name",
    "required_approvals",
    "distinct_groups",
    "rejections_to_deny",
    "sod_distinct_levels",
    "sod_exclude_requester_groups",
    "priority",
    "enabled",
)


def _policy_data(policy: ApprovalPolicy) -> dict:
    return model_to_dict(policy, fields=POLICY_FIELDS)


@transaction.atomic
def approval_policy_save(*, actor: User, policy_id: int | None = None, **fields) -> ApprovalPolicy:
    """Create (policy_id None) or change a default policy. Applies to requests that arrive later;
    a request keeps the policy it arrived with."""
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise ApprovalError(f"Unknown policy fields: {', '.join(sorted(unknown))}.", "bad_input")
    for name in ("required_approvals", "rejections_to_deny"):
        if name in fields and not 1 <= int(fields[name]) <= MAX_POLICY_COUNT:
            raise ApprovalError(f"{name.replace('_', ' ').capitalize()} must be 1 to {MAX_POLICY_COUNT}.", "bad_input")
    if policy_id is None:
        policy, before = ApprovalPolicy(), None
    else:
        policy = ApprovalPolicy.objects.select_for_update().filter(pk=policy_id).first()
        if policy is None:
            raise ApprovalError("This approval policy does not exist.", "not_found")
        before = _policy_data(policy)
    for name, value in fields.items():
        setattr(policy, name, value.strip() if isinstance(value, str) else value)
    if not policy.name:
        raise ApprovalError("An approval policy needs a name.", "bad_input")
    policy.save()
    audit(
        action=AuditAction.APPROVAL_POLICY_SAVED, request=None, actor=actor, before=before, after=_policy_data(policy)
    )
    return policy


@transaction.atomic
def approval_policy_delete(*, policy_id: int, actor: User) -> None:
    policy = ApprovalPolicy.objects.select_for_update().filter(pk=policy_id).first()
    if policy is None:
        return
    before = _policy_data(policy)
    policy.delete()
    audit(action=AuditAction.APPROVAL_POLICY_DELETED, request=None, actor=actor, before=before)


# ---------------------------------------------------------------------------
# Routing rules
# ---------------------------------------------------------------------------
def _rule_data(rule: RoutingRule) -> dict:
    return {
        "id": rule.pk,
        "name": rule.name,
        "state_machine_arn": rule.state_machine_arn,
        "state_name": rule.state_name,
        "users": rule.users,
        "groups": rule.groups,
        "priority": rule.priority,
        "enabled": rule.enabled,
    }


@transaction.atomic
def routing_rule_save(
    *,
    actor: User,
    rule_id: int | None = None,
    name: str,
    state_machine_arn: str = "",
    state_name: str = "",
    users: Sequence[str] = (),
    groups: Sequence[str] = (),
    priority: int = 0,
    enabled: bool = True,
) -> RoutingRule:
    """Create (rule_id None) or change a routing rule."""
    users, groups = clean_assignees(users=users, groups=groups)
    if not users and not groups:
        raise ApprovalError("A routing rule needs at least one approver: an email or a group.", "bad_input")
    if rule_id is None:
        rule, before = RoutingRule(), None
    else:
        rule = RoutingRule.objects.select_for_update().filter(pk=rule_id).first()
        if rule is None:
            raise ApprovalError("This routing rule does not exist.", "not_found")
        before = _rule_data(rule)
    rule.name = name.strip()
    rule.state_machine_arn = state_machine_arn.strip()
    rule.state_name = state_name.strip()
    rule.users = users
    rule.groups = groups
    rule.priority = priority
    rule.enabled = enabled
    rule.save()
    audit(action=AuditAction.ROUTING_RULE_SAVED, request=None, actor=actor, before=before, after=_rule_data(rule))
    return rule


@transaction.atomic
def routing_rule_delete(*, rule_id: int, actor: User) -> None:
    rule = RoutingRule.objects.select_for_update().filter(pk=rule_id).first()
    if rule is None:
        return
    before = _rule_data(rule)
    rule.delete()
    audit(action=AuditAction.ROUTING_RULE_DELETED, request=None, actor=actor, before=before)
