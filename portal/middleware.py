"""HTTP hardening the portal adds beyond Django's SecurityMiddleware."""

import re
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.cache import add_never_cache_headers

from approvals.api.problems import PROBLEM_CONTENT_TYPE, problem_body
from approvals.scim.resources import invalid as scim_invalid
from approvals.scim.views import error_response as scim_error_response

NUL_REFUSAL = "The URL contains a NUL character, which no page of the portal takes."


class RefuseNulCharactersMiddleware:
    """Answers 400 to a URL whose path or query parameters hold a NUL character.

    No page or API call takes one, and PostgreSQL refuses to compare text with it: a filter's value
    that reached a query answered 500 (the admin's list filters, Django's own included). Forms and
    the API's serializers refuse it in what they validate; this is the URL, before any view reads it.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path_info or any(
            "\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()
        ):
            return _bad_request(request)
        return self.get_response(request)


def _bad_request(request) -> HttpResponse:
    """400 in the shape each caller reads: the API's problem, SCIM's error, else plain text."""
    if request.path_info.startswith("/api/"):
        return JsonResponse(
            problem_body("bad_request", NUL_REFUSAL, 400), status=400, content_type=PROBLEM_CONTENT_TYPE
        )
    if request.path_info.startswith("/scim/"):
        return scim_error_response(scim_invalid(NUL_REFUSAL))
    return HttpResponseBadRequest(NUL_REFUSAL, content_type="text/plain; charset=utf-8")


class NeverStoreMiddleware:
    """A response that does not say how to cache it is kept by no browser and no proxy.

    The portal's pages show requests (titles, details, who asked) or who may decide them. Without
    Cache-Control a browser keeps them in its disk cache, and after "Sign out" on a shared computer
    Back showed them to the next person. Static files (WhiteNoise answers them before this) keep
    their long caching; a view that says how to cache its answer (the API's reads and their ETags)
    keeps what it says.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response


class ContentSecurityPolicyMiddleware:
    """Sends the Content-Security-Policy header (Django 5.2 has no built-in CSP)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", content_security_policy())
        return response


def content_security_policy() -> str:
    """CONTENT_SECURITY_POLICY, with the IdP's origin added to its `form-action`."""
    return _with_form_action_origins(settings.CONTENT_SECURITY_POLICY, idp_origins())


def idp_origins() -> tuple[str, ...]:
    """The IdP's origins a form's answer may redirect to: sign-in re-checks and RP-initiated logout.

    `form-action` also governs the redirects after a form's POST. Signing out answers with a
    redirect to the IdP's end-session endpoint; a POST after the sign-in window is answered
    with its page again, whose GET re-checks the sign-in at the authorization endpoint.
    """
    endpoints = (settings.OIDC_OP_AUTHORIZATION_ENDPOINT, settings.OIDC_OP_LOGOUT_ENDPOINT)
    return tuple(dict.fromkeys(origin for origin in map(_origin, endpoints) if origin))


_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")


def _origin(url: str) -> str:
    """scheme://host[:port] of an http(s) URL; "" for anything else (never a stray CSP token)."""
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError:
        return ""
    host = parts.netloc.rpartition("@")[2].lower()
    host = host[: -len(f":{port}")] if port is not None else host.removesuffix(":")
    if parts.scheme not in {"https", "http"} or not _HOST.fullmatch(host):
        return ""
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


@lru_cache(maxsize=8)
def _with_form_action_origins(policy: str, origins: tuple[str, ...]) -> str:
    directives = [d.strip() for d in policy.split(";") if d.strip()]
    for index, directive in enumerate(directives):
        name, _, sources = directive.partition(" ")
        if name.lower() != "form-action" or "'none'" in sources.split():
            continue  # an operator's 'none' stays none (and no form-action allows every target)
        present = sources.split()
        directives[index] = " ".join([name, *present, *(o for o in origins if o not in present)])
    return "; ".join(directives)
