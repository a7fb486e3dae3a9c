"""A minimal admin: portal admins (the SSO admin group) see requests, callbacks, errors, audit.

Everything here is read-only; state changes go through services (see the admin issue).
"""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from approvals.models import ApprovalRequest, Assignment, AuditEvent, Callback, IngestError, User


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AssignmentInline(admin.TabularInline):
    model = Assignment
    fields = ["kind", "value", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    list_display = ["title", "status", "requester_email", "state_name", "received_at", "deadline"]
    list_filter = ["status"]
    search_fields = ["title", "requester_email", "execution_arn"]
    date_hierarchy = "received_at"
    list_select_related = ["decided_by"]
    # Declared explicitly so the token's ciphertext and fingerprint are never shown.
    fields = [
        "public_id",
        "title",
        "status",
        "details",
        "requester_email",
        "execution_arn",
        "state_machine_arn",
        "state_name",
        "received_at",
        "deadline",
        "timeout_seconds",
        "heartbeat_seconds",
        "decided_by",
        "decided_at",
        "decision_comment",
        "sqs_message_id",
    ]
    readonly_fields = fields
    inlines = [AssignmentInline]


@admin.register(Callback)
class CallbackAdmin(ReadOnlyAdmin):
    list_display = ["request", "kind", "status", "attempts", "error_code", "updated_at"]
    list_filter = ["status", "kind", "error_code"]
    list_select_related = ["request"]
    fields = [
        "request",
        "kind",
        "status",
        "attempts",
        "error_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "payload",
    ]
    readonly_fields = fields


@admin.register(IngestError)
class IngestErrorAdmin(ReadOnlyAdmin):
    list_display = ["sqs_message_id", "code", "reason", "receive_count", "last_seen_at"]
    list_filter = ["code"]
    fields = ["sqs_message_id", "code", "reason", "receive_count", "first_seen_at", "last_seen_at", "body_redacted"]
    readonly_fields = fields


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "action", "actor_label", "request"]
    list_filter = ["action"]
    list_select_related = ["request"]
    fields = ["created_at", "action", "actor_label", "request", "data"]
    readonly_fields = fields


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ["email", "first_name", "last_name", "is_staff", "oidc_issuer", "last_login"]
    search_fields = ["email", "first_name", "last_name", "oidc_sub"]
    readonly_fields = ["oidc_issuer", "oidc_sub", "last_login", "date_joined"]
    fieldsets = [
        (None, {"fields": ["username", "email", "first_name", "last_name"]}),
        ("SSO", {"fields": ["oidc_issuer", "oidc_sub"]}),
        ("Access (from SSO groups)", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
