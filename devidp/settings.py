"""Django settings for the dev OpenID Connect provider. Everything comes from DEVIDP_* env vars."""

from urllib.parse import urlsplit

from devidp import config

BASE_DIR = config.PACKAGE_DIR
ISSUER = config.issuer()
DATA_DIR = config.data_dir()
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = config.env("DEVIDP_SECRET_KEY", "devidp-insecure-dev-only-secret-key-change-me-0123456789")
DEBUG = config.env("DEVIDP_DEBUG", "") == "1"

_issuer_url = urlsplit(ISSUER)
ALLOWED_HOSTS = [
    *config.env_list("DEVIDP_ALLOWED_HOSTS", "127.0.0.1,localhost"),
    _issuer_url.hostname,
]
CSRF_TRUSTED_ORIGINS = [f"{_issuer_url.scheme}://{_issuer_url.netloc}"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
    "devidp",  # its management commands (demo_user)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "devidp.urls"
WSGI_APPLICATION = "devidp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Our dir comes first so templates/oauth2_provider/base.html restyles DOT's pages.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": config.db_path(),
        # gunicorn runs 8 threads; WAL + IMMEDIATE transactions avoid "database is locked".
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The portal runs on another port of the same host, and browsers don't separate
# cookies by port: distinct names keep the two sessions from clobbering each other.
SESSION_COOKIE_NAME = "devidp_sessionid"
CSRF_COOKIE_NAME = "devidp_csrftoken"
SESSION_COOKIE_AGE = 8 * 3600

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    # Verbatim, so the `iss` claim is exactly DEVIDP_ISSUER (not derived from the Host header).
    "OIDC_ISS_ENDPOINT": ISSUER,
    # Empty until `python -m devidp setup`/`serve` has created the key file.
    "OIDC_RSA_PRIVATE_KEY": config.read_private_key(),
    "OAUTH2_VALIDATOR_CLASS": "devidp.validators.ClaimsValidator",
    "SCOPES": {
        "openid": "OpenID Connect sign-in",
        "email": "Email address",
        "profile": "Name and username",
        "groups": "Group memberships",
    },
    "DEFAULT_SCOPES": ["openid"],
    # The client may only use the authorization-code grant; don't advertise hybrid flows.
    "OIDC_RESPONSE_TYPES_SUPPORTED": ["code"],
    "PKCE_REQUIRED": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": 3600,
    "ID_TOKEN_EXPIRE_SECONDS": 3600,
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    # With a valid id_token_hint for the signed-in user, log out and redirect
    # without a confirmation page (DOT still prompts when the hint doesn't match).
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": False,
    "OIDC_RP_INITIATED_LOGOUT_STRICT_REDIRECT_URIS": True,
    # RFC 9700 behaviour gates: S256-only PKCE, no tokens in query strings, no
    # implicit/password grants, `iss` in the authorization response, hashed tokens at rest.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    # --- Device authorization grant (RFC 8628) for the `approvals` command line (approvals-cli) ---
    # The page where a person enters the code the command prints; `{user_code}` pre-fills it.
    "OAUTH_DEVICE_VERIFICATION_URI": f"{ISSUER}/device/",
    "OAUTH_DEVICE_VERIFICATION_URI_COMPLETE": f"{ISSUER}/device/?user_code={{user_code}}",
    "DEVICE_FLOW_INTERVAL": int(config.env("DEVIDP_DEVICE_INTERVAL", "5")),
}

# Access tokens for the portal's REST API: JWTs it verifies against the JWKS (devidp/access_tokens.py);
# refresh tokens stay random strings.
OAUTH2_PROVIDER["ACCESS_TOKEN_GENERATOR"] = "devidp.access_tokens.signed_access_token"  # noqa: S105 - a function
OAUTH2_PROVIDER["REFRESH_TOKEN_GENERATOR"] = "oauthlib.oauth2.rfc6749.tokens.random_token_generator"  # noqa: S105

# Never log request bodies or query strings: they carry codes, tokens and id_token_hints.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "oauth2_provider": {"level": "INFO"},
        "oauthlib": {"level": "WARNING"},
    },
}
