"""The dev IdP's end-session endpoint (django-oauth-toolkit's, minus a dead end), its discovery document,
device authorization and introspection endpoints."""

import hashlib
import json

from django.http import JsonResponse
from django.urls import reverse
from oauth2_provider.exceptions import InvalidIDTokenError
from oauth2_provider.models import get_access_token_model
from oauth2_provider.views.device import DeviceAuthorizationView as DOTDeviceAuthorizationView
from oauth2_provider.views.introspect import IntrospectTokenView as DOTIntrospectTokenView
from oauth2_provider.views.oidc import ConnectDiscoveryInfoView, RPInitiatedLogoutView

from devidp import config


class LogoutView(RPInitiatedLogoutView):
    """RP-initiated logout that survives a stale `id_token_hint`.

    Signing out revokes all of the person's tokens, so the ID token another browser's portal
    session holds is gone when that browser signs out too; DOT then stops at an error page and
    that browser's IdP session lives on. Here such a hint counts as no hint: with the request's
    `client_id`, the post-logout URI is still checked against the client's registered ones,
    and a person still signed in here is asked to confirm (RP-Initiated Logout 1.0, section 2).
    """

    def validate_logout_request_user(self, id_token_hint, client_id):
        try:
            return super().validate_logout_request_user(id_token_hint, client_id)
        except InvalidIDTokenError:
            if not client_id:
                raise
            return None


# --- Device authorization grant (RFC 8628): advertised in discovery for the `approvals` command line ---
class DiscoveryView(ConnectDiscoveryInfoView):
    """DOT's OpenID discovery document plus `device_authorization_endpoint` (RFC 8628, section 4),
    which DOT serves but does not list, so a client finds the device flow where it finds the rest."""

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        document = json.loads(response.content)
        document["device_authorization_endpoint"] = request.build_absolute_uri(
            reverse("oauth2_provider:device-authorization")
        )
        grant_types = document.setdefault("grant_types_supported", ["authorization_code", "refresh_token"])
        grant_types.append("urn:ietf:params:oauth:grant-type:device_code")
        response.content = json.dumps(document)
        return response


class DeviceAuthorizationView(DOTDeviceAuthorizationView):
    """DOT 3.4.1's device authorization endpoint, working with oauthlib 4.

    oauthlib 4 adds the granted `scope` to the endpoint's response, and DOT builds its
    `DeviceCodeResponse` from that dict, which has no `scope` field: every request ended in a 500.
    The scope is kept from the request as DOT does; the response carries the RFC 8628 fields.
    """

    def create_device_authorization_response(self, request):
        headers, response, status = super().create_device_authorization_response(request)
        if status == 200 and isinstance(response, dict):
            response = {key: value for key, value in response.items() if key != "scope"}
        return headers, response, status


# --- Token introspection (RFC 7662) for the portal's API: the claims its JWTs carry ---
class IntrospectTokenView(DOTIntrospectTokenView):
    """DOT's introspection endpoint, answering for an active token what the portal checks:
    `sub` (the person's pk, or the client id for client credentials, as in the JWTs of
    devidp/access_tokens.py), `iss`, `aud` (the API's audience), `client_id`, `exp` and
    `token_type`. An unknown, expired or revoked token stays `{"active": false}`."""

    @staticmethod
    def get_token_response(token_value=None):
        response = DOTIntrospectTokenView.get_token_response(token_value)
        data = json.loads(response.content)
        if response.status_code != 200 or data.get("active") is not True:
            return response
        token = (
            get_access_token_model()
            .objects.select_related("user", "application")
            .get(token_checksum=hashlib.sha256(token_value.encode("utf-8")).hexdigest())
        )
        data.pop("username", None)  # the sub is the pk, as in the ID token; no other identifier
        data.update(
            sub=str(token.user.pk) if token.user is not None else token.application.client_id,
            iss=config.issuer(),
            aud=config.api_audience(),
            token_type="Bearer",  # noqa: S106 - the token type's name, not a secret
        )
        return JsonResponse(data)
