"""What the portal believes of a message's approvers and requester (docs/security.md, "Trust boundary").

Whoever may start an execution controls its input, so the approvers and the requester a message
names are claims. The admins' ApproverTrust setting for the state machine (and state) says how
far to believe them:

- free: the message names its approvers (only for definitions that take them from context the
  starter cannot forge — this trusts every principal allowed to start executions);
- allow-list: the message chooses only among the listed users and groups; a message outside
  the list is refused (an ingest error naming the setting), never silently widened;
- routing only: approvers the message names are ignored (recorded with the reason) and the
  admins' routing rules, else the default group, decide.

No setting matches: routing only. A setting may also require a requester. User approvers whose
email is outside OIDC_ALLOWED_EMAIL_DOMAINS are never assigned, wherever they were named.
"""

from dataclasses import dataclass, field

from django.conf import settings

from approvals import selectors
from approvals.contract import ApprovalMessage, ContractError
from approvals.models import ApproverTrust, RoutingRule, User

# How many refused approvers an ingest error's reason lists before "and N more".
MAX_NAMED_IN_REASON = 5


class TrustRefusal(ContractError):
    """The message asks for more than its state machine's approver trust setting allows."""


@dataclass
class TrustedApprovers:
    """Whom a request is assigned to, and what was left out and why."""

    users: list[str]
    groups: list[str]
    setting: ApproverTrust | None
    rule: RoutingRule | None = None
    routed_to_default: bool = False
    requester_user: User | None = None
    ignored: list[dict] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return self.setting.mode if self.setting is not None else ApproverTrust.Mode.ROUTING_ONLY


def setting_label(setting: ApproverTrust) -> str:
    return f"approver trust setting {setting.name!r} (#{setting.pk})"


def _listed(values, limit: int = MAX_NAMED_IN_REASON) -> str:
    values = list(values)
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def email_domain_allowed(email: str) -> bool:
    domains = settings.OIDC_ALLOWED_EMAIL_DOMAINS
    return not domains or email.rsplit("@", 1)[-1].lower() in domains


def _ignore(kind: str, values, reason: str) -> list[dict]:
    return [{"kind": kind, "value": value, "reason": reason} for value in values]


def _allowed_domain_users(users: list[str], source: str) -> tuple[list[str], list[dict]]:
    kept = [email for email in users if email_domain_allowed(email)]
    refused = [email for email in users if not email_domain_allowed(email)]
    reason = (
        f"Named by {source}, but the email's domain is not one of the allowed email domains "
        f"({', '.join(settings.OIDC_ALLOWED_EMAIL_DOMAINS)}): nobody with it can sign in, so it is not assigned."
    )
    return kept, _ignore("user", refused, reason)


def requester_account(email: str) -> User | None:
    """The account the requester's email names now (active first); four eyes holds on to it."""
    if not email:
        return None
    return User.objects.filter(email__iexact=email).order_by("-is_active", "pk").first()


def approvers_resolve(message: ApprovalMessage) -> TrustedApprovers:
    """Who the request for `message` goes to, under the admins' trust setting; or TrustRefusal."""
    setting = selectors.approver_trust_for(state_machine_arn=message.state_machine_arn, state_name=message.state_name)
    if setting is not None and setting.require_requester and not message.requester:
        raise TrustRefusal(
            "requester_required",
            f"The message names no requester, and the {setting_label(setting)} requires one. "
            "Make the state machine send one (docs/security.md, Trust boundary), then replay the message.",
            "requester",
        )
    users, groups = list(message.approver_users), list(message.approver_groups)
    mode = setting.mode if setting is not None else ApproverTrust.Mode.ROUTING_ONLY
    ignored: list[dict] = []
    if mode == ApproverTrust.Mode.ALLOW_LIST:
        allowed_users = {email.lower() for email in setting.allowed_users}
        allowed_groups = set(setting.allowed_groups)
        outside = [email for email in users if email not in allowed_users]
        outside += [f"{name} (group)" for name in groups if name not in allowed_groups]
        if outside:
            raise TrustRefusal(
                "approver_not_allowed",
                f"The message names approvers outside the allow-list of the {setting_label(setting)}: "
                f"{_listed(outside)}. Widen the allow-list (or fix the state machine), then replay the message.",
                "approvers",
            )
    elif mode == ApproverTrust.Mode.ROUTING_ONLY and (users or groups):
        reason = (
            f"Named by the message, ignored: the {setting_label(setting)} takes approvers from routing only."
            if setting is not None
            else "Named by the message, ignored: no approver trust setting covers this state machine, "
            "so its messages may not choose their approvers (routing only)."
        )
        ignored += _ignore("user", users, reason) + _ignore("group", groups, reason)
        users, groups = [], []
    users, refused = _allowed_domain_users(users, "the message")
    ignored += refused

    resolved = TrustedApprovers(
        users=users, groups=groups, setting=setting, requester_user=requester_account(message.requester)
    )
    if not users and not groups:
        # Never dropped: an admin's routing rule, else the default group.
        rule = selectors.routing_rule_for(state_machine_arn=message.state_machine_arn, state_name=message.state_name)
        if rule is not None:
            users, refused = _allowed_domain_users(list(rule.users), f"the routing rule {rule.name!r} (#{rule.pk})")
            ignored += refused
            groups = list(rule.groups)
            resolved.rule = rule
        if not users and not groups:
            resolved.routed_to_default = True
            groups = [settings.APPROVAL_DEFAULT_GROUP]
        resolved.users, resolved.groups = users, groups
    resolved.ignored = ignored
    return resolved
