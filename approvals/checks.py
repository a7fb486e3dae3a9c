"""System checks that refuse an incomplete or unsafe configuration at start-up."""

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, register


@register()
def approval_settings_check(app_configs, **kwargs):
    errors = []
    keys = settings.TOKEN_ENCRYPTION_KEYS
    if not keys:
        errors.append(Error("TOKEN_ENCRYPTION_KEYS is empty", id="approvals.E001"))
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            errors.append(Error("TOKEN_ENCRYPTION_KEYS holds a value that is not a Fernet key", id="approvals.E002"))
    if len(settings.TOKEN_FINGERPRINT_KEY) < 16:
        errors.append(Error("TOKEN_FINGERPRINT_KEY must be at least 16 characters", id="approvals.E003"))
    if not settings.OIDC_RP_SIGN_ALGO.startswith(("RS", "ES", "PS")):
        errors.append(
            Error(
                "OIDC_RP_SIGN_ALGO must be asymmetric (RS256/ES256): ID tokens are verified with the IdP's JWKS",
                id="approvals.E004",
            )
        )
    if not settings.APPROVAL_QUEUE_URL:
        errors.append(Error("APPROVAL_QUEUE_URL is not set", id="approvals.E005"))
    return errors


from approvals.notifications import checks as notification_checks  # noqa: E402, F401 - registers them
