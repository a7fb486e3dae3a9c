"""The admin's forms: decisions and bulk actions, reassign, routing rules, approver trust."""

from django import forms

from approvals.models import ApproverTrust, RoutingRule
from approvals.services import ApprovalError
from approvals.services.assignments import clean_assignees


# ---------------------------------------------------------------------------
# The admin's forms (approvals/admin/)
# ---------------------------------------------------------------------------
def split_list(value: str) -> list[str]:
    """Emails or group names, one per line or separated by commas."""
    return [item.strip() for line in value.splitlines() for item in line.split(",") if item.strip()]


def typed_list_field(label: str, *, rows: int, prefix: str = "") -> forms.CharField:
    """An optional textarea of emails or group names, one per line or comma-separated (see split_list)."""
    return forms.CharField(
        required=False,
        label=label,
        help_text=f"{prefix} One per line, or separated by commas.".strip(),
        widget=forms.Textarea(attrs={"rows": rows, "cols": 60}),
    )


class AdminDecisionForm(forms.Form):
    """Approve or reject from the admin; a rejection needs a comment (the requester reads it)."""

    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))

    def clean(self):
        data = super().clean()
        if data.get("decision") == "reject" and not data.get("comment", "").strip():
            self.add_error("comment", "Say why you reject: the requester and the workflow see it.")
        return data

    @property
    def approve(self) -> bool:
        return self.cleaned_data["decision"] == "approve"


class AdminOptionForm(forms.Form):
    """One of a request's options from the admin (a button per option that needs no form input);
    the service checks the option against the request and asks a failure option for its reason."""

    option = forms.CharField(max_length=64)
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


class ReassignForm(forms.Form):
    users = typed_list_field("Approvers (emails)", rows=3)
    groups = typed_list_field("Approver groups (SSO group names)", rows=2)
    mode = forms.ChoiceField(
        choices=[("replace", "Replace the current approvers"), ("add", "Add to the current approvers")],
        initial="replace",
        widget=forms.RadioSelect,
    )
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def clean(self):
        data = super().clean()
        data["users"] = split_list(data.get("users", ""))
        data["groups"] = split_list(data.get("groups", ""))
        if not data["users"] and not data["groups"]:
            raise forms.ValidationError("Name at least one approver: an email or a group.")
        return data


class ReasonForm(forms.Form):
    """Cancel: the reason goes to the audit trail and, as the cause, to the workflow."""

    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


class ConfirmForm(forms.Form):
    """Nothing to fill in: the confirmation page's button is the point."""


class BulkApproveForm(forms.Form):
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


class BulkRejectForm(forms.Form):
    comment = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required: the requester and the workflow see why.",
    )


class RoutingRuleAdminForm(forms.ModelForm):
    """A routing rule with its approvers typed as lists; saved by services.routing_rule_save."""

    users_text = typed_list_field("Approvers (emails)", rows=3)
    groups_text = typed_list_field("Approver groups (SSO group names)", rows=2)

    class Meta:
        model = RoutingRule
        fields = ["name", "state_machine_arn", "state_name", "priority", "enabled"]
        help_texts = {
            "state_machine_arn": "Blank: any state machine.",
            "state_name": "Blank: any state.",
            "priority": "Among equally specific rules, the higher priority wins.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["users_text"].initial = "\n".join(self.instance.users)
            self.fields["groups_text"].initial = "\n".join(self.instance.groups)

    def clean(self):
        data = super().clean()
        try:
            users, groups = clean_assignees(
                users=split_list(data.get("users_text", "")), groups=split_list(data.get("groups_text", ""))
            )
        except ApprovalError as error:
            raise forms.ValidationError(error.message) from None
        if not users and not groups:
            raise forms.ValidationError("Name at least one approver: an email or a group.")
        return data


# What an admin must read before choosing "free" (also the warning on its change page).
FREE_TRUST_WARNING = (
    "Free trusts every principal allowed to start executions of this state machine: whoever can "
    "start one can name any approver, themselves included, and any requester. Choose it only for a "
    "definition that takes approvers and requester from its own text or from context the starter "
    "cannot forge, never from the execution's input."
)


class ApproverTrustAdminForm(forms.ModelForm):
    """An approver trust setting with its allow-list typed as lists; saved by services.approver_trust_save."""

    users_text = typed_list_field("Allowed approvers (emails)", rows=3, prefix="Allow-list only.")
    groups_text = typed_list_field("Allowed approver groups (SSO group names)", rows=2, prefix="Allow-list only.")

    class Meta:
        model = ApproverTrust
        fields = ["name", "state_machine_arn", "state_name", "mode", "require_requester", "priority", "enabled"]
        help_texts = {
            "state_machine_arn": "Blank: any state machine.",
            "state_name": "Blank: any state.",
            "mode": "Routing only: approvers the message names are ignored; routing rules and the default group "
            "decide. Allow-list: a message naming anyone outside the lists is refused (an ingest error). "
            + FREE_TRUST_WARNING,
            "priority": "Among equally specific settings, the higher priority wins.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["users_text"].initial = "\n".join(self.instance.allowed_users)
            self.fields["groups_text"].initial = "\n".join(self.instance.allowed_groups)

    def clean(self):
        data = super().clean()
        users, groups = split_list(data.get("users_text", "")), split_list(data.get("groups_text", ""))
        if users or groups:
            try:
                users, groups = clean_assignees(users=users, groups=groups)
            except ApprovalError as error:
                raise forms.ValidationError(error.message) from None
        data["allowed_users"], data["allowed_groups"] = users, groups
        return data
