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
from functools import reduce
from operator import or_

from django.conf import settings
from django.db.models import Q

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


class TrustLookups:
    """The admins' settings and the requesters' accounts as read for a batch of messages.

    A received batch of up to ten messages usually comes from one or two state machines: each
    setting and rule is read once per state machine and state, and the requesters' accounts in
    one query (`requesters_prefetch`), instead of once per message. Without a prefetch it reads
    exactly what a single message needs.
    """

    def __init__(self) -> None:
        self._settings: dict[tuple[str, str], ApproverTrust | None] = {}
        self._rules: dict[tuple[str, str], RoutingRule | None] = {}
        self._requesters: dict[str, User | None] = {}

    def setting(self, message: ApprovalMessage) -> ApproverTrust | None:
        key = (message.state_machine_arn, message.state_name)
        if key not in self._settings:
            self._settings[key] = selectors.approver_trust_for(state_machine_arn=key[0], state_name=key[1])
        return self._settings[key]

    def rule(self, message: ApprovalMessage) -> RoutingRule | None:
        key = (message.state_machine_arn, message.state_name)
        if key not in self._rules:
            self._rules[key] = selectors.routing_rule_for(state_machine_arn=key[0], state_name=key[1])
        return self._rules[key]

    def requester(self, email: str) -> User | None:
        if email not in self._requesters:
            self._requesters[email] = requester_account(email)
        return self._requesters[email]

    def requesters_prefetch(self, emails) -> None:
        """Read the accounts of all these requesters in one query (as `requester_account` picks them)."""
        emails = sorted({email for email in emails if email and email not in self._requesters})
        if not emails:
            return
        rows = list(
            User.objects.filter(reduce(or_, (Q(email__iexact=email) for email in emails))).order_by("-is_active", "pk")
        )
        attributed: set[int] = set()
        for email in emails:
            match = next((row for row in rows if row.email.lower() == email.lower()), None)
            if match is not None:
                attributed.add(match.pk)
                self._requesters[email] = match
        if len(attributed) == len(rows):
            # Every row found belongs to an email here: the others have no account.
            self._requesters.update({email: None for email in emails if email not in self._requesters})
        # Else the database matched a row case-insensitively where Python's lower() does not
        # (exotic Unicode): those emails are read one by one, exactly, when asked for.


def approvers_resolve(message: ApprovalMessage, *, lookups: TrustLookups | None = None) -> TrustedApprovers:
    """Who the request for `message` goes to, under the admins' trust setting; or TrustRefusal.

    `lookups`: the settings and accounts read for the batch the message came in (default: read
    for this message alone)."""
    lookups = lookups if lookups is not None else TrustLookups()
    setting = lookups.setting(message)
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
        users=users, groups=groups, setting=setting, requester_user=lookups.requester(message.requester)
    )
    if not users and not groups:
        # Never dropped: an admin's routing rule, else the default group.
        rule = lookups.rule(message)
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
