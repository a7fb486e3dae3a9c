"""OIDC claims for the portal: identity, email and group membership."""

from typing import ClassVar

from oauth2_provider.models import get_device_grant_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2.rfc8628.grant_types.device_code import DeviceCodeGrant


class ClaimsValidator(OAuth2Validator):
    # Which scope releases which claim; `sub` always comes with `openid`. The same
    # mapping filters both the ID token and the userinfo response.
    oidc_claim_scope: ClassVar[dict[str, str]] = {
        **OAuth2Validator.oidc_claim_scope,
        "groups": "groups",
    }

    # The request-agnostic signature (no `request` argument) makes DOT call each
    # value with the request and also list these claims in discovery's claims_supported.
    def get_additional_claims(self):
        return {
            "email": lambda r: r.user.email,
            "email_verified": lambda r: True,
            "name": lambda r: r.user.get_full_name() or r.user.get_username(),
            "given_name": lambda r: r.user.first_name,
            "family_name": lambda r: r.user.last_name,
            "preferred_username": lambda r: r.user.get_username(),
            "groups": lambda r: sorted(r.user.groups.values_list("name", flat=True)),
        }

    # prompt=none (the portal's silent session refresh). oauthlib leaves both checks to the
    # provider and DOT doesn't implement them, so without these every prompt=none request
    # ended in a 500 at the IdP.
    def validate_silent_login(self, request):
        # DOT's AuthorizationView is login-required: a visitor who is not signed in here (or
        # whose account was disabled since) never reaches this check with a session; its
        # handle_no_permission answers prompt=none with error=login_required itself.
        return True

    def validate_silent_authorization(self, request):
        # Silent only where consent is never asked; otherwise oauthlib answers consent_required
        # instead of DOT showing its consent form to a prompt=none request.
        return bool(getattr(request.client, "skip_authorization", False))

    # --- Device authorization grant (RFC 8628) for the `approvals` command line ---
    # oauthlib 4 asks the validator for the device code's status; DOT 3.4.1 predates that hook
    # (without it every poll after "Allow" ended in a 500).
    def validate_device_code(self, client_id, code, request, *args, **kwargs):
        model = get_device_grant_model()
        grant = model.objects.filter(device_code=code, client_id=client_id).select_related("user").first()
        if grant is None:
            return None
        if grant.is_expired():
            return DeviceCodeGrant.DEVICE_CODE_EXPIRED
        if grant.status == model.DENIED:
            return DeviceCodeGrant.DEVICE_CODE_DENIED
        if grant.status != model.AUTHORIZED:
            return DeviceCodeGrant.DEVICE_CODE_PENDING
        # A device code buys one token: the first poll after "Allow" takes it, a replay or a
        # concurrent poll finds it spent (invalid_grant).
        if not model.objects.filter(pk=grant.pk, status=model.AUTHORIZED).update(status=model.EXPIRED):
            return None
        request.user = grant.user
        request.scopes = grant.scope.split() if grant.scope else []
        return DeviceCodeGrant.DEVICE_CODE_AUTHORIZED
