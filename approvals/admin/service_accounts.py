"""The admin's service accounts (approvals/api/, docs/api.md): created and changed through
services.service_account_save (audited); never deleted, deactivated instead (their votes stay)."""

from django import forms
from django.conf import settings
from django.contrib import admin

from approvals import services
from approvals.admin.base import ServiceWrittenAdmin
from approvals.forms.admin import split_list, typed_list_field
from approvals.models import ServiceAccount


class ServiceAccountForm(forms.ModelForm):
    email = forms.EmailField(
        required=False, help_text="What assignments name (an approver's email), like a person's. Optional."
    )
    groups_text = typed_list_field("Groups", rows=2, prefix="Group names it is a member of, for group assignments.")
    state_machines_text = typed_list_field(
        "State machines", rows=3, prefix="State machine ARNs whose requests it sees (* for all)."
    )
    active = forms.BooleanField(required=False, initial=True, help_text="Off: its tokens are refused.")

    class Meta:
        model = ServiceAccount
        fields = ["name", "issuer", "subject", "may_decide"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            user = self.instance.user
            self.fields["email"].initial = user.email
            self.fields["groups_text"].initial = "\n".join(sorted(user.groups.values_list("name", flat=True)))
            self.fields["state_machines_text"].initial = "\n".join(self.instance.state_machines)
            self.fields["active"].initial = user.is_active
        else:
            self.fields["issuer"].initial = settings.OIDC_OP_ISSUER


@admin.register(ServiceAccount)
class ServiceAccountAdmin(ServiceWrittenAdmin):
    form = ServiceAccountForm
    list_display = ["name", "subject", "may_decide", "is_active", "created_at"]
    list_select_related = ["user"]
    search_fields = ["name", "subject", "user__email"]
    list_filter = ["may_decide", "user__is_active"]
    fields = [
        "name",
        "issuer",
        "subject",
        "email",
        "groups_text",
        "state_machines_text",
        "may_decide",
        "active",
    ]

    @admin.display(boolean=True, description="Active")
    def is_active(self, obj: ServiceAccount) -> bool:
        return obj.user.is_active

    def has_delete_permission(self, request, obj=None):
        return False

    def service_save(self, request, pk, data):
        return services.service_account_save(
            actor=request.user,
            account_id=pk,
            name=data["name"],
            issuer=data["issuer"],
            subject=data["subject"],
            email=data["email"],
            groups=split_list(data["groups_text"]),
            state_machines=split_list(data["state_machines_text"]),
            may_decide=data["may_decide"],
            active=data["active"],
        )

    def save_related(self, request, form, formsets, change):
        pass  # the service set everything
