"""The admins' approver trust settings: how far a state machine's messages may name who decides."""

from django.db import transaction
from django.forms.models import model_to_dict

from approvals.models import ApproverTrust, AuditAction, User
from approvals.services.common import ApprovalError, audit

TRUST_FIELDS = (
    "name",
    "state_machine_arn",
    "state_name",
    "mode",
    "allowed_users",
    "allowed_groups",
    "require_requester",
    "priority",
    "enabled",
)


def _trust_data(setting: ApproverTrust) -> dict:
    return model_to_dict(setting, fields=TRUST_FIELDS)


def _clean_list(values, *, lower: bool) -> list[str]:
    cleaned = []
    for value in values or ():
        value = str(value).strip()
        value = value.lower() if lower else value
        if value and value not in cleaned:
            cleaned.append(value)
    return cleaned


@transaction.atomic
def approver_trust_save(*, actor: User | None, setting_id: int | None = None, **fields) -> ApproverTrust:
    """Create (setting_id None) or change an approver trust setting. Applies to messages that
    arrive later (and to replayed ones); a request keeps the approvers it arrived with.
    `actor` None: the portal's own setup (manage.py aws_bootstrap)."""
    unknown = set(fields) - set(TRUST_FIELDS)
    if unknown:
        raise ApprovalError(f"Unknown approver trust fields: {', '.join(sorted(unknown))}.", "bad_input")
    if "mode" in fields and fields["mode"] not in ApproverTrust.Mode.values:
        raise ApprovalError(f"Unknown approver trust mode {fields['mode']!r}.", "bad_input")
    if setting_id is None:
        setting, before = ApproverTrust(), None
    else:
        setting = ApproverTrust.objects.select_for_update().filter(pk=setting_id).first()
        if setting is None:
            raise ApprovalError("This approver trust setting does not exist.", "not_found")
        before = _trust_data(setting)
    for name, value in fields.items():
        if name == "allowed_users":
            value = _clean_list(value, lower=True)
        elif name == "allowed_groups":
            value = _clean_list(value, lower=False)
        setattr(setting, name, value.strip() if isinstance(value, str) else value)
    if not setting.name:
        raise ApprovalError("An approver trust setting needs a name.", "bad_input")
    setting.save()
    audit(action=AuditAction.APPROVER_TRUST_SAVED, request=None, actor=actor, before=before, after=_trust_data(setting))
    return setting


@transaction.atomic
def approver_trust_delete(*, setting_id: int, actor: User) -> None:
    setting = ApproverTrust.objects.select_for_update().filter(pk=setting_id).first()
    if setting is None:
        return
    before = _trust_data(setting)
    setting.delete()
    audit(action=AuditAction.APPROVER_TRUST_DELETED, request=None, actor=actor, before=before)
