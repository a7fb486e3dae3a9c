"""Access tokens as JWTs (RFC 9068) for the portal's REST API, signed with the IdP's OIDC key.

django-oauth-toolkit calls `signed_access_token` for every access token it issues
(ACCESS_TOKEN_GENERATOR): `iss` the issuer, `aud` the portal API's audience
(DEVIDP_API_AUDIENCE), `sub` the person (the same `sub` as their ID token) or, for the
client-credentials grant, the client id, and `kid` as the JWKS publishes it. Refresh tokens stay
random strings. Introspection keeps working: DOT stores every token's checksum.

One demo client, `approvals-opaque-bot` (config.opaque_client_id), gets DOT's random (opaque)
access tokens instead, so the portal's introspection path (RFC 7662) is exercised for real;
the introspection endpoint (devidp/views.py) answers the same `sub`, `iss` and `aud`.
"""

import time
import uuid

import jwt
from jwcrypto import jwk
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749.tokens import random_token_generator

from devidp import config


def signed_access_token(request, refresh_token: bool = False) -> str:
    if request.client.client_id == config.opaque_client_id():
        return random_token_generator(request, refresh_token)
    pem = oauth2_settings.OIDC_RSA_PRIVATE_KEY
    now = int(time.time())
    user = getattr(request, "user", None)
    client = request.client
    lifetime = getattr(request, "expires_in", None) or oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS
    claims = {
        "iss": config.issuer(),
        "sub": str(user.pk) if user is not None else client.client_id,
        "aud": config.api_audience(),
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime),
        "jti": uuid.uuid4().hex,
        "client_id": client.client_id,
        "scope": " ".join(getattr(request, "scopes", None) or []),
    }
    kid = jwk.JWK.from_pem(pem.encode()).thumbprint()
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})
