"""Verifying the IdP's OAuth 2.0 access tokens (docs/api.md, "Tokens").

JWTs are checked against the IdP's JWKS: the algorithm from an allow-list of asymmetric ones
(never `none`, never an HMAC one, whose "secret" could be the public key), the key by `kid`
(an unknown kid refetches the JWKS once, at most every API_JWKS_REFETCH_SECONDS), the
signature, `iss`, `aud`, `exp`, `nbf` and `iat`. Opaque tokens go to the IdP's introspection
endpoint (RFC 7662), its answer cached briefly under the token's hash. Nothing here logs or
returns a token.
"""

import hashlib
import logging
import time

import jwt
import requests
from django.conf import settings
from django.core.cache import cache

from approvals.checks import ASYMMETRIC_ALGORITHMS

logger = logging.getLogger(__name__)

JWKS_CACHE_KEY = "api:jwks"
JWKS_REFETCH_KEY = "api:jwks:refetched"
INTROSPECTION_CACHE_PREFIX = "api:introspection:"


class TokenRejected(Exception):
    """The token is not valid here; the reason is safe to log and show (it never holds the token)."""


class IdentityProviderUnavailable(Exception):
    """The IdP's JWKS or introspection endpoint did not answer."""


def verify_access_token(token: str) -> dict:
    """The token's claims (at least iss, sub), or TokenRejected."""
    if not token or len(token) > 16384:
        raise TokenRejected("the token is empty or too long")
    if token.count(".") == 2:
        return _verify_jwt(token)
    return _introspect(token)


def _fetch_jwks() -> dict:
    try:
        response = requests.get(settings.OIDC_OP_JWKS_ENDPOINT, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        data = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise IdentityProviderUnavailable(f"JWKS: {type(exc).__name__}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise IdentityProviderUnavailable("JWKS: not a key set")
    cache.set(JWKS_CACHE_KEY, data, settings.API_JWKS_CACHE_SECONDS)
    return data


def _key_for(kid: str, data: dict) -> tuple[jwt.PyJWK, str] | None:
    """The key and the algorithm the JWKS declares for it ("" when it declares none)."""
    for entry in data["keys"]:
        if isinstance(entry, dict) and entry.get("kid") == kid and entry.get("use", "sig") == "sig":
            try:
                return jwt.PyJWK(entry), str(entry.get("alg") or "")
            except jwt.PyJWTError:
                return None
    return None


def signing_key(kid: str) -> tuple[jwt.PyJWK, str]:
    data = cache.get(JWKS_CACHE_KEY) or _fetch_jwks()
    key = _key_for(kid, data)
    if key is None and cache.add(JWKS_REFETCH_KEY, True, settings.API_JWKS_REFETCH_SECONDS):
        # A rotated key: the IdP publishes the new one before using it. Once, rate-limited, so a
        # flood of made-up kids does not become a flood of requests to the IdP.
        key = _key_for(kid, _fetch_jwks())
    if key is None:
        raise TokenRejected("unknown signing key (kid)")
    return key


def _verify_jwt(token: str) -> dict:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRejected("malformed token") from exc
    algorithm, kid = header.get("alg"), header.get("kid")
    allowed = set(settings.API_JWT_ALGORITHMS) & ASYMMETRIC_ALGORITHMS
    if algorithm not in allowed:
        raise TokenRejected("signing algorithm not allowed")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("no key id (kid)")
    key, declared = signing_key(kid)
    if declared and declared != algorithm:
        raise TokenRejected("the key is not for this algorithm")
    if not settings.API_AUDIENCE:
        raise TokenRejected("bearer tokens are not configured (API_AUDIENCE)")
    try:
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=[algorithm],
            audience=settings.API_AUDIENCE,
            issuer=settings.OIDC_OP_ISSUER,
            leeway=settings.API_TOKEN_LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud", "sub"], "verify_signature": True},
        )
    except (jwt.PyJWTError, TypeError, ValueError) as exc:  # a key of another type: TypeError
        raise TokenRejected(f"token rejected: {type(exc).__name__}") from exc
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise TokenRejected("token has no subject")
    return claims


def _introspect(token: str) -> dict:
    endpoint = settings.API_INTROSPECTION_ENDPOINT
    if not endpoint:
        raise TokenRejected("opaque tokens are not accepted (no introspection endpoint configured)")
    cache_key = INTROSPECTION_CACHE_PREFIX + hashlib.sha256(token.encode()).hexdigest()
    data = cache.get(cache_key)
    if data is None:
        try:
            response = requests.post(
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=(settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET),
                timeout=settings.OIDC_TIMEOUT,
            )
            response.raise_for_status()
            data = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise IdentityProviderUnavailable(f"introspection: {type(exc).__name__}") from exc
        if not isinstance(data, dict):
            raise IdentityProviderUnavailable("introspection: not an object")
        ttl = settings.API_INTROSPECTION_CACHE_SECONDS
        if isinstance(data.get("exp"), int | float):
            ttl = max(1, min(ttl, int(data["exp"] - time.time())))
        cache.set(cache_key, data, ttl)
    if data.get("active") is not True:
        raise TokenRejected("the IdP says the token is not active")
    if isinstance(data.get("exp"), int | float) and data["exp"] <= time.time():
        raise TokenRejected("token expired")
    if data.get("iss", settings.OIDC_OP_ISSUER) != settings.OIDC_OP_ISSUER:
        raise TokenRejected("token issuer does not match")
    audience = data.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if settings.API_AUDIENCE not in audiences:
        raise TokenRejected("token audience does not include this API")
    if not isinstance(data.get("sub"), str) or not data["sub"]:
        raise TokenRejected("token has no subject")
    return {**data, "iss": settings.OIDC_OP_ISSUER}
