"""The dev IdP's end-session endpoint: django-oauth-toolkit's, minus a dead end."""

from oauth2_provider.exceptions import InvalidIDTokenError
from oauth2_provider.views.oidc import RPInitiatedLogoutView


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
