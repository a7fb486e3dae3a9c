"""Approval sources (docs/sources.md): queues in other AWS accounts and regions, each read with its
own role. Saved through services.source_save (audited); never deleted (their requests still call
back through them): disabled instead. The external ID is never shown back, only masked."""

from django import forms
from django.contrib import admin, messages

from approvals import services
from approvals.admin.base import ServiceWrittenAdmin
from approvals.models import ApprovalSource
from approvals.services.sources import source_fields_check


def mask(value: str) -> str:
    """What the admin shows of an external ID: that one is set, and its length class, not its value."""
    return "••••••••" if value else "(none)"


class ApprovalSourceForm(forms.ModelForm):
    external_id = forms.CharField(
        label="External ID",
        required=False,
        strip=True,
        # Never rendered back into the page: blank keeps the one the source has.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="The external ID the member account's role requires (sts:ExternalId). Leave blank to keep "
        "the current one.",
    )
    clear_external_id = forms.BooleanField(required=False, label="Remove the external ID")

    class Meta:
        model = ApprovalSource
        fields = ["name", "queue_url", "region", "role_arn", "enabled"]
        help_texts = {
            "queue_url": "https://sqs.<region>.amazonaws.com/<account>/<queue>",
            "region": "The region of the queue and of the executions it serves, like eu-west-1.",
            "role_arn": "arn:aws:iam::<account>:role/<name>, assumed for everything this source does. "
            "Empty: the portal's own credentials.",
        }

    def clean(self):
        data = super().clean()
        external_id = "" if data.get("clear_external_id") else (data.get("external_id") or self.instance.external_id)
        try:
            source_fields_check(
                name=data.get("name") or "",
                queue_url=data.get("queue_url") or "",
                region=data.get("region") or "",
                role_arn=data.get("role_arn") or "",
                external_id=external_id,
                source_id=self.instance.pk,
            )
        except services.ApprovalError as error:
            raise forms.ValidationError(error.message) from None
        return data


@admin.register(ApprovalSource)
class ApprovalSourceAdmin(ServiceWrittenAdmin):
    form = ApprovalSourceForm
    list_display = ["name", "region", "account", "enabled", "state", "last_polled_at", "last_message_at", "error"]
    list_filter = ["enabled", "state", "region"]
    search_fields = ["name", "queue_url", "role_arn"]
    readonly_fields = [
        "external_id_masked",
        "state",
        "last_error",
        "last_error_at",
        "last_polled_at",
        "last_message_at",
    ]
    actions = ["enable_sources", "disable_sources"]

    def get_fields(self, request, obj=None):
        editable = ["name", "queue_url", "region", "role_arn", "external_id", "clear_external_id", "enabled"]
        return editable + (self.readonly_fields if obj is not None else [])

    @admin.display(description="account")
    def account(self, obj: ApprovalSource) -> str:
        return obj.account_id or "?"

    @admin.display(description="external ID")
    def external_id_masked(self, obj: ApprovalSource) -> str:
        return mask(obj.external_id)

    @admin.display(description="last error")
    def error(self, obj: ApprovalSource) -> str:
        return obj.last_error[:120] if obj.state == ApprovalSource.State.FAILING else ""

    def has_delete_permission(self, request, obj=None):
        return False

    def service_save(self, request, pk, data):
        external_id = "" if data.get("clear_external_id") else (data.get("external_id") or None)
        return services.source_save(
            actor=request.user,
            source_id=pk,
            name=data["name"],
            queue_url=data["queue_url"],
            region=data["region"],
            role_arn=data.get("role_arn") or "",
            external_id=external_id,
            enabled=data["enabled"],
        )

    def save_related(self, request, form, formsets, change):
        pass  # the service set everything

    def _set_enabled(self, request, queryset, enabled: bool) -> None:
        for pk in queryset.values_list("pk", flat=True):
            try:
                services.source_set_enabled(actor=request.user, source_id=pk, enabled=enabled)
            except services.ApprovalError as error:
                self.message_user(request, error.message, messages.ERROR)
        self.message_user(request, "Enabled." if enabled else "Disabled: no longer consumed.", messages.SUCCESS)

    @admin.action(description="Enable the selected sources")
    def enable_sources(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected sources (their requests still call back)")
    def disable_sources(self, request, queryset):
        self._set_enabled(request, queryset, False)
