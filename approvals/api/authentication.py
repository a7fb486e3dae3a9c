"""Who calls the API: a bearer access token of the IdP (a person or a service account), or the
portal's own session cookie with CSRF (the pages' JavaScript)."""

import logging
from dataclasses import dataclass

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from approvals.api import access_tokens
from approvals.api.problems import Problem
from approvals.auth import sso_refresh_with_access_token
from approvals.models import SERVICE_USERNAME_PREFIX, ServiceAccount, User
from approvals.permissions import Refusal
from approvals.slack_access import sso_is_fresh

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiCaller:
    """`request.auth` of a bearer-token call (never the token itself)."""

    service_account: ServiceAccount | None
    client_id: str


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header is malformed.")
        try:
            token = header[1].decode("ascii")
            claims = access_tokens.verify_access_token(token)
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("The access token is malformed.") from exc
        except access_tokens.TokenRejected as exc:
            logger.warning("API token refused: %s", exc)
            raise exceptions.AuthenticationFailed(f"The access token was refused: {exc}.") from exc
        except access_tokens.IdentityProviderUnavailable as exc:
            logger.warning("API token not checked: %s", exc)
            raise Problem("idp_unavailable", "The identity provider did not answer; try again.", 503) from exc
        return self._caller(claims)

    @staticmethod
    def _caller(claims: dict) -> tuple[User, ApiCaller]:
        issuer, subject = claims["iss"], claims["sub"]
        client_id = str(claims.get("client_id") or claims.get("azp") or claims.get("appid") or "")
        account = ServiceAccount.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
        if account is not None:
            user = account.user
        else:
            user = User.objects.filter(oidc_issuer=issuer, oidc_sub=subject).first()
            if user is None:
                logger.warning("API token refused: no portal account for its subject")
                raise exceptions.AuthenticationFailed(
                    "The token's subject has no portal account: sign in to the portal once, "
                    "or ask an admin for a service account."
                )
        if not user.is_active:
            logger.warning("API token refused: account %s is deactivated", user.pk)
            raise exceptions.AuthenticationFailed("This account is deactivated.")
        return user, ApiCaller(service_account=account, client_id=client_id)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="approvals-api"'


class CsrfSessionAuthentication(authentication.SessionAuthentication):
    """The portal's session cookie, CSRF enforced on every unsafe method (DRF's own check)."""


SSO_STALE = "sso_stale"


def stale_sso_refusal(request) -> Refusal | None:
    """Why a person's bearer token may not decide now, or None.

    The token proves who they are now, not which groups they are in (nor their email): the rule
    reads what the portal mirrored at their last SSO sign-in or session refresh. The web refreshes
    that every OIDC_SESSION_REFRESH_SECONDS, a Slack click needs it recent; through the API (the
    CLI) nothing ever would, so someone removed from a group at the IdP (without SCIM) kept
    deciding for it. A decision with a person's token needs the same: at most
    API_SSO_MAX_AGE_SECONDS old, else the portal asks the IdP with the caller's own token first
    (approvals/auth.py, sso_refresh_with_access_token), as the web's refresh asks it. A service
    account's groups are the admins' (no IdP to ask); a session cookie is refreshed by the web."""
    caller = getattr(request, "auth", None)
    if not isinstance(caller, ApiCaller) or caller.service_account is not None:
        return None
    if sso_is_fresh(request.user, max_age_seconds=settings.API_SSO_MAX_AGE_SECONDS):
        return None
    # authenticate() accepted this header: "Bearer <ascii token>".
    access_token = authentication.get_authorization_header(request).split()[1].decode("ascii")
    if sso_refresh_with_access_token(request.user, access_token):
        return None
    return Refusal(
        SSO_STALE,
        "Your portal sign-in is too old to decide with an access token, and the identity provider "
        "did not say who you are now: sign in to the portal in a browser (or open any of its "
        "pages), then try again.",
    )


def service_account_of(request) -> ServiceAccount | None:
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiCaller):
        return auth.service_account
    user = request.user
    if user.is_authenticated and user.username.startswith(SERVICE_USERNAME_PREFIX):
        return ServiceAccount.objects.filter(user=user).first()
    return None


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = BearerTokenAuthentication
    name = "bearer"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = CsrfSessionAuthentication
    name = "session"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}
