"""RFC 9457 problem details: every error of the API, with a stable `type` per refusal."""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, serializers
from rest_framework.response import Response

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "urn:approvals:problem:"
PROBLEM_CONTENT_TYPE = "application/problem+json"

# The services' refusal codes (approvals/permissions.py, approvals/services/) → the API's stable
# problem code and HTTP status.
REFUSALS = {
    "not_found": ("not_found", 404),
    "requester": ("requester_cannot_decide", 403),
    "not_assignee": ("not_an_approver", 403),
    "self_assigned": ("self_assigned", 403),
    "inactive_user": ("inactive_user", 403),
    "not_allowed": ("permission_denied", 403),
    "sod_previous_level": ("separation_of_duties", 403),
    "sod_requester_group": ("separation_of_duties", 403),
    "distinct_groups": ("distinct_groups", 403),
    "service_account_read_only": ("service_account_read_only", 403),
    "service_account_out_of_scope": ("service_account_out_of_scope", 403),
    "sso_stale": ("sso_stale", 403),
    "not_pending": ("already_decided", 409),
    "already_voted": ("already_voted", 409),
    "expired": ("expired", 409),
    "claimed": ("claimed", 409),
    "not_claimer": ("not_claimer", 403),
    "not_requester": ("not_requester", 403),
    "no_requester": ("no_requester", 409),
    "no_question": ("no_question", 409),
    "too_many_messages": ("too_many_messages", 409),
    "reason_required": ("reason_required", 422),
    "choice_invalid": ("choice_invalid", 422),
    "answers_invalid": ("answers_invalid", 422),
    "unchanged": ("unchanged", 409),
    "bad_input": ("validation_error", 400),
    "validation_error": ("validation_error", 400),
    "bad_period": ("validation_error", 400),
    "unknown_delegate": ("validation_error", 400),
    "aws_error": ("aws_unavailable", 503),
    "token_erased": ("token_erased", 409),
    "not_failed": ("not_failed", 409),
    "resolved": ("already_resolved", 409),
    "message_erased": ("message_erased", 409),
    "no_dlq": ("no_dead_letter_queue", 409),
    "not_in_dlq": ("not_in_dead_letter_queue", 409),
    "key_error": ("token_key_missing", 409),
    "not_open": ("not_open", 409),
}

TITLES = {
    "not_authenticated": "Authentication required",
    "invalid_token": "The access token was refused",
    "permission_denied": "Not allowed",
    "not_found": "Not found",
    "validation_error": "The request is not valid",
    "throttled": "Too many requests",
    "idempotency_conflict": "The Idempotency-Key was used for another request",
    "method_not_allowed": "Method not allowed",
    "unsupported_media_type": "Unsupported media type",
    "not_acceptable": "Not acceptable",
    "bad_request": "Bad request",
    "idp_unavailable": "The identity provider did not answer",
    "choice_invalid": "Not one of the request's options",
    "answers_invalid": "The answers do not fit the request's form",
}


class ProblemSerializer(serializers.Serializer):
    """application/problem+json (RFC 9457)."""

    type = serializers.CharField(help_text="urn:approvals:problem:<code>, stable per kind of error.")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Field errors: of a validation_error, or of answers_invalid (`answers.<field>`, or `answers` "
        "for the answers as a whole).",
    )


class Problem(exceptions.APIException):
    """An error the API answers with a problem document."""

    def __init__(self, code: str, detail: str, status: int, **extra):
        super().__init__(detail=detail, code=code)
        self.status_code = status
        self.problem_code = code
        self.extra = extra


def refusal_problem(code: str, message: str) -> Problem:
    problem_code, status = REFUSALS.get(code, (code, 400))
    return Problem(problem_code, message, status)


def problem_body(code: str, detail: str, status: int, **extra) -> dict:
    return {
        "type": f"{PROBLEM_TYPE}{code}",
        "title": TITLES.get(code, code.replace("_", " ").capitalize()),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def problem_response(code: str, detail: str, status: int, headers=None, **extra) -> Response:
    return Response(
        problem_body(code, detail, status, **extra), status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE
    )


def _flat(detail) -> str:
    if isinstance(detail, list):
        return " ".join(_flat(item) for item in detail)
    if isinstance(detail, dict):
        return " ".join(f"{key}: {_flat(value)}" for key, value in detail.items())
    return str(detail)


def exception_handler(exc, context):
    """DRF's exception handler, answering every error as problem details."""
    headers = {}
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):  # raised where DRF reads the body: Django's page was HTML
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = Problem("body_too_large", f"The request body may be at most {limit:,} bytes.", 413)
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: Django's 500, logged
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    extra = {}
    if isinstance(exc, Problem):
        code, extra = exc.problem_code, exc.extra
        detail = str(exc.detail)
    elif isinstance(exc, exceptions.ValidationError):
        code = "validation_error"
        detail = "Some fields are not valid." if isinstance(exc.detail, dict) else _flat(exc.detail)
        if isinstance(exc.detail, dict):
            extra = {"errors": {key: [str(item) for item in value] if isinstance(value, list) else [_flat(value)]
                                for key, value in exc.detail.items()}}  # fmt: skip
    else:
        code = {
            exceptions.NotAuthenticated: "not_authenticated",
            exceptions.AuthenticationFailed: "invalid_token",
            exceptions.PermissionDenied: "permission_denied",
            exceptions.NotFound: "not_found",
            exceptions.Throttled: "throttled",
            exceptions.MethodNotAllowed: "method_not_allowed",
            exceptions.UnsupportedMediaType: "unsupported_media_type",
            exceptions.NotAcceptable: "not_acceptable",
            exceptions.ParseError: "bad_request",
        }.get(type(exc), "bad_request")
        if isinstance(exc, exceptions.AuthenticationFailed) and exc.get_codes() == "not_authenticated":
            code = "not_authenticated"
        detail = _flat(exc.detail)
    return problem_response(code, detail, exc.status_code, headers=headers or None, **extra)
