"""Sign-in through the company's OIDC provider (mozilla-django-oidc, subclassed).

Users are keyed by the ID token's (iss, sub); email, name and groups are attributes copied
from the claims at every sign-in. mozilla-django-oidc checks the signature (JWKS, kid, alg)
and the nonce but not `iss` and `aud` (its issue #340), so this backend checks both.
"""

import hashlib
import logging

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from approvals.models import User

logger = logging.getLogger(__name__)


class PortalOIDCBackend(OIDCAuthenticationBackend):
    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)
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
        return {**claims, "iss": payload["iss"]}

    def verify_claims(self, claims) -> bool:
        if not claims.get("email"):
            logger.warning("sign-in refused: the IdP sent no email for subject")
            return False
        if claims.get("email_verified") is False:
            logger.warning("sign-in refused: email not verified at the IdP")
            return False
        return True

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(oidc_issuer=claims["iss"], oidc_sub=claims["sub"])

    @transaction.atomic
    def create_user(self, claims) -> User:
        user = self.UserModel.objects.create_user(
            username=self._username(claims), oidc_issuer=claims["iss"], oidc_sub=claims["sub"]
        )
        return self.update_user(user, claims)

    @transaction.atomic
    def update_user(self, user: User, claims) -> User:
        user.email = claims["email"].strip().lower()
        user.first_name = (claims.get("given_name") or claims.get("name") or "")[:150]
        user.last_name = (claims.get("family_name") or "")[:150]
        groups = self._groups(claims)
        is_admin = bool(groups & set(settings.OIDC_ADMIN_GROUPS))
        user.is_staff = is_admin
        user.is_superuser = is_admin
        user.save()
        current = set(user.groups.values_list("name", flat=True))
        if current != groups:
            user.groups.set([Group.objects.get_or_create(name=name)[0] for name in sorted(groups)])
        return user

    @staticmethod
    def _groups(claims) -> set[str]:
        value = claims
        for part in settings.OIDC_GROUPS_CLAIM.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return set()
        return {str(name)[:150] for name in value if str(name).strip()}

    @staticmethod
    def _username(claims) -> str:
        # Unique and stable; humans see the email, not this.
        digest = hashlib.sha256(f"{claims['iss']}|{claims['sub']}".encode()).hexdigest()[:32]
        return f"oidc-{digest}"
