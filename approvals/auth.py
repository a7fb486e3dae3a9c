"""Sign-in through the company's OIDC provider (mozilla-django-oidc, subclassed).

Users are keyed by the ID token's (iss, sub); email, name and groups are attributes copied
from the claims at every sign-in. mozilla-django-oidc checks the signature (JWKS, kid, alg)
and the nonce but not `iss` and `aud` (its issue #340), so this backend checks both.
"""

import hashlib
import logging
import time
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.middleware import SessionRefresh
from mozilla_django_oidc.views import OIDCLogoutView

from approvals.models import User
from approvals.roles import APPROVER_ACCESS_GROUP
from approvals.services.email_changes import user_email_changed
from approvals.services.scim import scim_managed_group_names
from approvals.services.slack_identities import user_sso_verified

logger = logging.getLogger(__name__)


class PortalOIDCBackend(OIDCAuthenticationBackend):
    def authenticate(self, request, **kwargs):
        # The library lets a refused token (bad signature, nonce, aud...) escape as a 400 and an
        # IdP error (used code, PKCE mismatch) or an expired token as a 500. Either way nobody is
        # signed in; returning None sends the person to LOGIN_REDIRECT_URL_FAILURE instead.
        user = None
        try:
            user = super().authenticate(request, **kwargs)
        except SuspiciousOperation as exc:
            logger.warning("sign-in refused: %s", exc)
        except requests.RequestException as exc:
            status = exc.response.status_code if exc.response is not None else "-"
            logger.warning("sign-in refused: the IdP request failed (%s, status %s)", type(exc).__name__, status)
        if user is not None and user.is_active:
            # The sign-in or the refresh succeeded: the IdP vouches for this person now.
            user_sso_verified(user=user)
        current = getattr(request, "user", None)
        if user is None and current is not None and current.is_authenticated:
            # A session refresh (prompt=none) the portal refuses ends the session; the library
            # would keep it, and every page would bounce back to the IdP in a loop.
            auth.logout(request)
        return user

    def verify_token(self, token, **kwargs):
        try:
            payload = super().verify_token(token, **kwargs)
        except (jwt.PyJWTError, KeyError) as exc:  # expired, not yet valid, malformed, no kid
            raise SuspiciousOperation(f"ID token rejected: {type(exc).__name__}") from exc
        if not isinstance(payload.get("exp"), int | float):
            # PyJWT checks exp only when present; OIDC Core 2 requires it.
            raise SuspiciousOperation("ID token has no expiry")
        if payload.get("iss") != settings.OIDC_OP_ISSUER:
            raise SuspiciousOperation("ID token issuer does not match OIDC_OP_ISSUER")
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("ID token audience does not include this client")
        if len(audiences) > 1 and payload.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SuspiciousOperation("ID token azp does not name this client")
        if not payload.get("sub"):
            raise SuspiciousOperation("ID token has no subject")
        return payload

    def get_userinfo(self, access_token, id_token, payload):
        claims = super().get_userinfo(access_token, id_token, payload)
        # OIDC Core 5.3.2: userinfo's sub must equal the ID token's, else it's not this user.
        if claims.get("sub") != payload["sub"]:
            raise SuspiciousOperation("userinfo subject does not match the ID token")
        # Some IdPs put groups only in the ID token (Entra ID), others only in userinfo.
        id_token_claims = {
            k: v for k, v in payload.items() if k not in {"aud", "exp", "iat", "nonce", "azp", "at_hash"}
        }
        return {**id_token_claims, **claims, "iss": payload["iss"]}

    def verify_claims(self, claims) -> bool:
        if not self._subject(claims):
            logger.warning("sign-in refused: the IdP sent no %s claim", settings.OIDC_SUBJECT_CLAIM)
            return False
        email = str(claims.get("email") or "").strip().lower()
        if not email or "@" not in email:
            logger.warning("sign-in refused: the IdP sent no email")
            return False
        verified = claims.get("email_verified")
        if verified is False or (settings.OIDC_REQUIRE_VERIFIED_EMAIL and verified is not True):
            # An unverified email could name someone else, and emails grant assignments.
            logger.warning("sign-in refused: email not verified at the IdP")
            return False
        domains = settings.OIDC_ALLOWED_EMAIL_DOMAINS
        if domains and email.rsplit("@", 1)[1] not in domains:
            logger.warning("sign-in refused: email domain not allowed")
            return False
        return True

    def get_user(self, user_id):
        # The library returns deactivated accounts too: a session that outlived a
        # deprovisioning (any session engine) is anonymous from its next request on.
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(oidc_issuer=claims["iss"], oidc_sub=self._subject(claims))

    @transaction.atomic
    def create_user(self, claims) -> User:
        user = self.UserModel.objects.create_user(
            username=self._username(claims), oidc_issuer=claims["iss"], oidc_sub=self._subject(claims)
        )
        return self.update_user(user, claims)

    @transaction.atomic
    def update_user(self, user: User, claims) -> User:
        email = claims["email"].strip().lower()
        if self.UserModel.objects.filter(email__iexact=email, is_active=True).exclude(pk=user.pk).exists():
            # Assignments are by email: two people with one email would share them.
            raise SuspiciousOperation("the email belongs to another active account")
        user_email_changed(user=user, old_email=user.email, new_email=email, via="sign-in")
        user.email = email
        user.first_name = (claims.get("given_name") or claims.get("name") or "")[:150]
        user.last_name = (claims.get("family_name") or "")[:150]
        # The portal's own permission group is never taken from the IdP (see approvals/roles.py).
        groups = self._groups(claims) - {APPROVER_ACCESS_GROUP}
        is_admin = bool(groups & set(settings.OIDC_ADMIN_GROUPS))
        is_approver = not is_admin and settings.ADMIN_APPROVER_ACCESS
        user.is_staff = is_admin or is_approver
        user.is_superuser = is_admin
        user.save()
        wanted = (groups | {APPROVER_ACCESS_GROUP}) if is_approver else groups
        current = set(user.groups.values_list("name", flat=True))
        # Groups the IdP provisions by SCIM keep SCIM's membership: a token minted before a
        # removal must not add it back (docs/scim.md, "Which source wins").
        managed = scim_managed_group_names()
        wanted = (wanted - managed) | (current & managed)
        if current != wanted:
            user.groups.set([Group.objects.get_or_create(name=name)[0] for name in sorted(wanted)])
        return user

    @staticmethod
    def _groups(claims) -> set[str]:
        value = _groups_claim(claims)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return set()
        return {str(name)[:150] for name in value if str(name).strip()}

    @staticmethod
    def _subject(claims) -> str:
        """The claim that keys accounts: `sub`, or what OIDC_SUBJECT_CLAIM names (Entra ID's `oid`,
        which its SCIM provisioning can send as externalId; its `sub` is per application)."""
        value = claims.get(settings.OIDC_SUBJECT_CLAIM)
        return str(value)[:255] if isinstance(value, str | int) and str(value).strip() else ""

    @classmethod
    def _username(cls, claims) -> str:
        # Unique and stable; humans see the email, not this.
        digest = hashlib.sha256(f"{claims['iss']}|{cls._subject(claims)}".encode()).hexdigest()[:32]
        return f"oidc-{digest}"


def sso_refresh_with_access_token(user: User, access_token: str) -> bool:
    """Ask the IdP who `user` is now, at its userinfo endpoint with the person's own access token,
    and mirror the answer as a sign-in does (email, name, groups, admin roles), recording that the
    IdP vouched for them now: what the web's session refresh does, for a caller of the API (the
    CLI) who never opens a page.

    False, with nothing changed, unless the IdP answers for the same subject with a usable email
    and the groups claim: without it, mirroring would take every group away, and keeping the old
    ones would decide with what the IdP no longer says (an IdP that puts groups only in ID tokens
    leaves a sign-in in a browser as the way)."""
    if not settings.OIDC_OP_USER_ENDPOINT:
        return False
    backend = PortalOIDCBackend()
    try:
        claims = backend.get_userinfo(access_token, None, {"sub": user.oidc_sub, "iss": user.oidc_issuer})
        if not backend.verify_claims(claims) or backend._subject(claims) != user.oidc_sub:
            return False
        if _groups_claim(claims) is None:
            logger.info("sign-in not refreshed from userinfo: the IdP's answer has no %s", settings.OIDC_GROUPS_CLAIM)
            return False
        backend.update_user(user, claims)
    except SuspiciousOperation as exc:
        logger.warning("sign-in not refreshed from userinfo: %s", exc)
        return False
    except (requests.RequestException, ValueError) as exc:  # refused, unreachable, or not JSON
        status = exc.response.status_code if getattr(exc, "response", None) is not None else "-"
        logger.warning("sign-in not refreshed from userinfo: %s (status %s)", type(exc).__name__, status)
        return False
    user_sso_verified(user=user)
    return True


def _groups_claim(claims: dict):
    """The claim OIDC_GROUPS_CLAIM names (a dotted path into nested claims), None when absent."""
    value = claims
    for part in settings.OIDC_GROUPS_CLAIM.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def provider_logout_url(request) -> str:
    """RP-initiated logout: end the IdP session too, then come back to the portal."""
    endpoint = settings.OIDC_OP_LOGOUT_ENDPOINT
    id_token = request.session.get("oidc_id_token")
    if not endpoint or not id_token:
        return settings.LOGOUT_REDIRECT_URL
    # client_id too (RP-Initiated Logout 1.0): the IdP can still check the post-logout URI
    # when the hint is no longer valid there (revoked by a sign-out in another browser).
    query = urlencode(
        {
            "id_token_hint": id_token,
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "post_logout_redirect_uri": f"{settings.PORTAL_BASE_URL}/",
        }
    )
    return f"{endpoint}?{query}"


class PortalLogoutView(OIDCLogoutView):
    """mozilla-django-oidc's sign-out, plus: the page the person comes back to says so.

    The IdP sends the browser back to the registered post-logout URI (the portal's root), which
    shows the sign-in page; the message travels in the new, anonymous session's messages.
    """

    def post(self, request):
        signed_in = request.user.is_authenticated
        response = super().post(request)
        if signed_in:
            messages.info(request, "You are signed out.")
        return response


class PortalSessionRefresh(SessionRefresh):
    """mozilla-django-oidc's refresh, plus: a state change with an expired sign-in is not trusted,
    and the page to come back to is on the portal.

    The library only refreshes on GET. A POST after the window sends the person back to the
    page (GET), which re-checks with the IdP; they then submit again.
    """

    def process_request(self, request):
        if (
            request.method not in {"GET", "HEAD", "OPTIONS"}
            and request.user.is_authenticated
            and request.path not in self.exempt_urls
            and request.session.get("oidc_id_token_expiration", 0) <= time.time()
        ):
            back = request.headers.get("referer", "")
            if not _on_this_site(request, back):
                back = "/"
            return HttpResponseRedirect(back, status=303)
        response = super().process_request(request)
        if response is not None and not _on_this_site(request, request.session.get("oidc_login_next", "")):
            # The library keeps the requested path, unchecked, as where the callback sends the
            # person back: a link to https://portal//evil.example/ is a path to Django and
            # another site to a browser.
            request.session["oidc_login_next"] = "/"
        return response


def _on_this_site(request, url: str) -> bool:
    return url_has_allowed_host_and_scheme(url, {request.get_host()}, request.is_secure())
