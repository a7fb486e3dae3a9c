"""SCIM tokens in the admin: create, rotate, revoke — each through services/scim_tokens.py.

The secret is shown once, on the page that answers the creation or the rotation (never cached,
never in a message cookie or a URL); only its digest is stored."""

from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from approvals.admin.base import CraftedRequestsMixin
from approvals.models import ScimToken
from approvals.services.common import ApprovalError
from approvals.services.scim_tokens import scim_token_create, scim_token_revoke, scim_token_rotate


def _secrets_page(request: HttpRequest, admin_site, issued: list[tuple[ScimToken, str]]) -> TemplateResponse:
    response = TemplateResponse(
        request,
        "admin/approvals/scimtoken/issued.html",
        {**admin_site.each_context(request), "title": "SCIM token issued", "issued": issued},
    )
    add_never_cache_headers(response)
    return response


@admin.register(ScimToken)
class ScimTokenAdmin(CraftedRequestsMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "issuer",
        "subject_attribute",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at"]
    fields = ["name", "issuer", "subject_attribute"]
    readonly_fields = []
    actions = ["rotate_tokens", "revoke_tokens"]

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return False  # a token's settings do not change: rotate or revoke it

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, never deleted: the audit trail names it

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["name", "issuer", "subject_attribute", "prefix", "created_by", "created_at", "last_used_at",
                "revoked_at", "revoked_by", "replaced_by"]  # fmt: skip

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj) if obj is not None else self.fields

    def save_model(self, request, obj, form, change):
        try:
            token, secret = scim_token_create(
                actor=request.user,
                name=form.cleaned_data["name"],
                issuer=form.cleaned_data["issuer"],
                subject_attribute=form.cleaned_data["subject_attribute"],
            )
        except ApprovalError as error:
            messages.error(request, error.message)
            return
        obj.pk = token.pk
        request.scim_token_issued = [(token, secret)]

    def response_add(self, request, obj, post_url_continue=None):
        issued = getattr(request, "scim_token_issued", None)
        if not issued:
            return super().response_post_save_add(request, obj)
        return _secrets_page(request, self.admin_site, issued)

    def get_changeform_initial_data(self, request):
        return {"issuer": settings.OIDC_OP_ISSUER, **super().get_changeform_initial_data(request)}

    def log_addition(self, request, obj, message):
        return None  # audited by the service (scim_token_created), with no secret

    @admin.action(description="Rotate the selected SCIM tokens (the old ones stop working now)")
    def rotate_tokens(self, request, queryset):
        issued = []
        for token in queryset.filter(revoked_at__isnull=True):
            try:
                issued.append(scim_token_rotate(actor=request.user, token_id=token.pk))
            except ApprovalError as error:
                messages.error(request, error.message)
        return _secrets_page(request, self.admin_site, issued) if issued else None

    @admin.action(description="Revoke the selected SCIM tokens")
    def revoke_tokens(self, request, queryset):
        revoked = sum(scim_token_revoke(actor=request.user, token_id=token.pk) for token in queryset)
        messages.info(request, f"{revoked} SCIM token(s) revoked.")
