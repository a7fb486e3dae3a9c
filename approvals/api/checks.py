"""System checks of the API's configuration (registered by approvals/apps.py)."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register

from approvals.api.access_tokens import ASYMMETRIC_ALGORITHMS


@register()
def api_settings_check(app_configs, **kwargs):
    errors = []
    weak = sorted(set(settings.API_JWT_ALGORITHMS) - ASYMMETRIC_ALGORITHMS)
    if weak or not settings.API_JWT_ALGORITHMS:
        # `none` needs no key, and an HMAC "secret" could be the IdP's public key.
        errors.append(
            Error(
                f"API_JWT_ALGORITHMS may list only asymmetric algorithms, not {', '.join(weak) or 'nothing'}",
                id="approvals.E040",
            )
        )
    endpoint = settings.API_INTROSPECTION_ENDPOINT
    if endpoint and not settings.DEV and urlsplit(endpoint).scheme != "https":
        errors.append(Error("API_INTROSPECTION_ENDPOINT must be https:// in production", id="approvals.E041"))
    return errors
