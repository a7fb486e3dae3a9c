"""The SCIM endpoints (/scim/v2/…): parse, call one service, render. Bearer-token authentication
on every request (approvals/services/scim_tokens.py); every answer is SCIM JSON, errors too."""

import functools
import logging
import uuid

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from approvals.models import ScimGroup, ScimToken, ScimUser
from approvals.scim import discovery
from approvals.scim.resources import (
    GROUP_SCHEMA,
    LIST_SCHEMA,
    MAX_LIST_COUNT,
    SEARCH_SCHEMA,
    USER_SCHEMA,
    ScimError,
    apply_patch,
    invalid,
    parse_filter,
    parse_group,
    parse_json,
    parse_user,
    select,
)
from approvals.services import scim as services
from approvals.services.common import ApprovalError
from approvals.services.scim_tokens import scim_token_authenticate

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/scim+json"
MAX_BODY = 2 * 1024 * 1024
MAX_START_INDEX = 1_000_000_000  # past any real list, and inside the database's OFFSET range
_SERVICE_ERRORS = {
    "conflict": (409, "uniqueness"),
    "not_found": (404, ""),
    "mutability": (400, "mutability"),
    "bad_input": (400, "invalidValue"),
}


def scim_response(body: dict, status: int = 200, *, location: str = "") -> JsonResponse:
    response = JsonResponse(body, status=status, content_type=CONTENT_TYPE, json_dumps_params={"ensure_ascii": False})
    if location:
        response["Location"] = location
    return response


def error_response(error: ScimError) -> JsonResponse:
    response = scim_response(error.body(), error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="scim"'
    return response


def _remote(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "")


def scim_view(methods: set[str]):
    """Bearer authentication, allowed methods, and every error as a SCIM error body."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            token = scim_token_authenticate(
                authorization=request.headers.get("Authorization", ""), remote=_remote(request)
            )
            if token is None:
                return error_response(ScimError(401, "A valid SCIM bearer token is required."))
            if request.method not in methods:
                response = error_response(ScimError(405, f"{request.method} is not supported here."))
                response["Allow"] = ", ".join(sorted(methods))
                return response
            try:
                too_large = len(request.body) > MAX_BODY
            except RequestDataTooBig:  # past DATA_UPLOAD_MAX_MEMORY_SIZE Django refuses to read it
                too_large = True
            if too_large:
                return error_response(ScimError(413, "The body is too large.", "tooLarge"))
            try:
                return view(request, token, *args, **kwargs)
            except ScimError as error:
                return error_response(error)
            except ApprovalError as error:
                status, scim_type = _SERVICE_ERRORS.get(error.code, (400, "invalidValue"))
                return error_response(ScimError(status, error.message, scim_type))
            except DatabaseError:
                logger.exception("SCIM request failed in the database")
                return error_response(ScimError(500, "The portal could not store this change; try again."))

        return wrapper

    return decorate


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("scim-root")).rstrip("/")


# --- Rendering -----------------------------------------------------------------------------


def _meta(request: HttpRequest, kind: str, scim_id, created, modified) -> dict:
    return {
        "resourceType": kind,
        "created": created.isoformat(),
        "lastModified": modified.isoformat(),
        "location": f"{_base(request)}/{kind}s/{scim_id}",
    }


def render_user(request: HttpRequest, scim_user: ScimUser) -> dict:
    body = {"schemas": [USER_SCHEMA], "id": str(scim_user.scim_id), "userName": scim_user.user_name}
    if scim_user.external_id:
        body["externalId"] = scim_user.external_id
    body.update(scim_user.attributes or {})
    body["active"] = scim_user.user.is_active
    body["meta"] = _meta(request, "User", scim_user.scim_id, scim_user.created_at, scim_user.updated_at)
    return body


def render_group(request: HttpRequest, scim_group: ScimGroup, token: ScimToken, *, members: bool = True) -> dict:
    body = {"schemas": [GROUP_SCHEMA], "id": str(scim_group.scim_id), "displayName": scim_group.group.name}
    if scim_group.external_id:
        body["externalId"] = scim_group.external_id
    if members:  # one query per group: skipped when the client leaves members out (Entra ID does)
        found = services.scim_users(token).filter(user__groups=scim_group.group).order_by("pk")
        body["members"] = [
            {"value": str(member.scim_id), "$ref": f"{_base(request)}/Users/{member.scim_id}"} for member in found
        ]
    body["meta"] = _meta(request, "Group", scim_group.scim_id, scim_group.created_at, scim_group.updated_at)
    return body


def _selected(request: HttpRequest, resource: dict, params=None) -> dict:
    params = params if params is not None else request.GET
    return select(resource, attributes=params.get("attributes"), excluded=params.get("excludedAttributes"))


def _int(value, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"{name} must be an integer.") from None


def _list(request: HttpRequest, queryset, render, params, filters: dict[str, str]) -> JsonResponse:
    found = parse_filter(params.get("filter"), {name.lower(): name for name in filters})
    if found is not None:
        attribute, value = found
        if attribute == "id":
            try:
                value = _checked_id(value)
            except ScimError:
                value = None  # not an id of ours: nothing matches
        queryset = queryset.filter(**{filters[attribute]: value}) if value is not None else queryset.none()
    start = min(max(_int(params.get("startIndex"), "startIndex", 1), 1), MAX_START_INDEX)
    count = min(max(_int(params.get("count"), "count", 100), 0), MAX_LIST_COUNT)
    total = queryset.count()
    page = list(queryset.order_by("pk")[start - 1 : start - 1 + count]) if count else []
    return scim_response(
        {
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": len(page),
            "Resources": [_selected(request, render(item), params) for item in page],
        }
    )


USER_FILTERS = {
    "userName": "user_name__iexact",
    "externalId": "external_id",
    "displayName": "display_name",
    "id": "scim_id",
    "emails.value": "user__email__iexact",
    "emails": "user__email__iexact",
}
GROUP_FILTERS = {"displayName": "group__name", "externalId": "external_id", "id": "scim_id"}


def _checked_id(value) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ScimError(404, "No such resource.") from None


def _search_params(request: HttpRequest) -> dict:
    body = parse_json(request.body)
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or SEARCH_SCHEMA not in schemas:
        raise invalid(f"schemas must be [{SEARCH_SCHEMA}].", "invalidSyntax")
    params = {}
    for key in ("filter", "startIndex", "count", "attributes", "excludedAttributes"):
        value = body.get(key)
        if value is not None:
            params[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    if params.get("filter") is not None and not isinstance(params["filter"], str):
        raise invalid("filter must be a string.", "invalidFilter")
    return params


# --- Users -----------------------------------------------------------------------------------


def _users(token: ScimToken):
    return services.scim_users(token)


def _user_list(request, token, params):
    def render(item):
        return render_user(request, item)

    return _list(request, _users(token), render, params, USER_FILTERS)


@scim_view({"GET", "POST"})
def users(request: HttpRequest, token: ScimToken) -> HttpResponse:
    if request.method == "GET":
        return _user_list(request, token, request.GET)
    data = parse_user(parse_json(request.body))
    scim_user = services.scim_user_create(token=token, data=data)
    scim_user.refresh_from_db()
    body = render_user(request, scim_user)
    return scim_response(body, 201, location=body["meta"]["location"])


@scim_view({"POST"})
def users_search(request: HttpRequest, token: ScimToken) -> HttpResponse:
    return _user_list(request, token, _search_params(request))


@scim_view({"GET", "PUT", "PATCH", "DELETE"})
def user(request: HttpRequest, token: ScimToken, scim_id: str) -> HttpResponse:
    scim_id = _checked_id(scim_id)
    if request.method == "DELETE":
        services.scim_user_delete(token=token, scim_id=scim_id)
        return HttpResponse(status=204)
    current = _users(token).filter(scim_id=scim_id).first()
    if current is None:
        raise ScimError(404, "No such user.")
    if request.method == "GET":
        return scim_response(_selected(request, render_user(request, current)))
    body = parse_json(request.body)
    if request.method == "PATCH":
        body = apply_patch(render_user(request, current), body, schema=USER_SCHEMA, required={"username", "active"})
    data = parse_user(body)
    scim_user = services.scim_user_replace(token=token, scim_id=scim_id, data=data)
    scim_user.refresh_from_db()
    return scim_response(_selected(request, render_user(request, scim_user)))


# --- Groups ----------------------------------------------------------------------------------


def _group_list(request, token, params):
    excluded = str(params.get("excludedAttributes") or "").lower()
    attributes = str(params.get("attributes") or "").lower()
    members = "members" not in excluded and (not attributes or "members" in attributes)

    def render(item):
        return render_group(request, item, token, members=members)

    return _list(request, services.scim_groups(token), render, params, GROUP_FILTERS)


@scim_view({"GET", "POST"})
def groups(request: HttpRequest, token: ScimToken) -> HttpResponse:
    if request.method == "GET":
        return _group_list(request, token, request.GET)
    data = parse_group(parse_json(request.body))
    scim_group = services.scim_group_create(token=token, data=data)
    scim_group.refresh_from_db()
    body = render_group(request, scim_group, token)
    return scim_response(body, 201, location=body["meta"]["location"])


@scim_view({"POST"})
def groups_search(request: HttpRequest, token: ScimToken) -> HttpResponse:
    return _group_list(request, token, _search_params(request))


@scim_view({"GET", "PUT", "PATCH", "DELETE"})
def group(request: HttpRequest, token: ScimToken, scim_id: str) -> HttpResponse:
    scim_id = _checked_id(scim_id)
    if request.method == "DELETE":
        services.scim_group_delete(token=token, scim_id=scim_id)
        return HttpResponse(status=204)
    current = services.scim_groups(token).filter(scim_id=scim_id).first()
    if current is None:
        raise ScimError(404, "No such group.")
    if request.method == "GET":
        return scim_response(_selected(request, render_group(request, current, token)))
    body = parse_json(request.body)
    if request.method == "PATCH":
        body = apply_patch(render_group(request, current, token), body, schema=GROUP_SCHEMA, required={"displayname"})
    data = parse_group(body)
    scim_group = services.scim_group_replace(token=token, scim_id=scim_id, data=data)
    scim_group.refresh_from_db()
    return scim_response(_selected(request, render_group(request, scim_group, token)))


# --- Discovery ---------------------------------------------------------------------------


@scim_view({"GET"})
def service_provider_config(request: HttpRequest, token: ScimToken) -> HttpResponse:
    return scim_response(discovery.service_provider_config(_base(request)))


def _listed(items: list[dict]) -> JsonResponse:
    return scim_response(
        {
            "schemas": [LIST_SCHEMA],
            "totalResults": len(items),
            "startIndex": 1,
            "itemsPerPage": len(items),
            "Resources": items,
        }
    )


@scim_view({"GET"})
def resource_types(request: HttpRequest, token: ScimToken, name: str = "") -> HttpResponse:
    items = discovery.resource_types(_base(request))
    if not name:
        return _listed(items)
    found = next((item for item in items if item["id"] == name), None)
    if found is None:
        raise ScimError(404, "No such resource type.")
    return scim_response(found)


@scim_view({"GET"})
def schemas(request: HttpRequest, token: ScimToken, urn: str = "") -> HttpResponse:
    items = discovery.schemas(_base(request))
    if not urn:
        return _listed(items)
    found = next((item for item in items if item["id"] == urn), None)
    if found is None:
        raise ScimError(404, "No such schema.")
    return scim_response(found)


@scim_view({"POST"})
def search_everything(request: HttpRequest, token: ScimToken) -> HttpResponse:
    # RFC 7644 §3.4.3 lets a provider not search all resource types at once: 501.
    raise ScimError(
        501, "Search /Users/.search or /Groups/.search; searching every resource type at once is not supported."
    )


@scim_view({"GET", "POST", "PUT", "PATCH", "DELETE"})
def not_found(request: HttpRequest, token: ScimToken, rest: str = "") -> HttpResponse:
    raise ScimError(404, "No such SCIM endpoint.")
