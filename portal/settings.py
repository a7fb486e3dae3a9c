"""The portal's one settings module, read from the environment (12-factor).

Unset variables fall back to the embedded defaults that `make run` needs on a laptop
(SQLite, an SQLite-backed Celery broker, the moto server as AWS, the dev OIDC provider).
With ``PORTAL_ENV=production`` the secrets have no defaults and the AWS endpoint defaults to
real AWS; ``portal.checks`` refuses an incomplete configuration.
"""

from pathlib import Path
from urllib.parse import urlsplit

import environ
from celery.schedules import crontab

from portal import dev_keys, devports

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("PORTAL_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
# SQLite files, the dev broker and beat's schedule live here; make sure it exists.
VAR_DIR.mkdir(parents=True, exist_ok=True)

# ---------------------------------------------------------------------------
# Mode
# ---------------------------------------------------------------------------
# Unset means development (`make run`, the tests); the container image sets production.
PORTAL_ENV = env.str("PORTAL_ENV", default="dev")
if PORTAL_ENV == "development":
    PORTAL_ENV = "dev"
if PORTAL_ENV not in {"dev", "production"}:
    raise environ.ImproperlyConfigured("PORTAL_ENV must be 'dev' (or 'development') or 'production'")
DEV = PORTAL_ENV == "dev"


def dev_default(value):
    """A default that only exists in dev: production must set the variable."""
    return value if DEV else environ.Env.NOTSET


DEBUG = env.bool("DJANGO_DEBUG", default=DEV)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=dev_default(dev_keys.DJANGO_SECRET_KEY))
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# The public base URL of the portal, for links in notifications and logs. In dev it, the IdP's
# issuer and the AWS endpoint follow PORTAL_PORT, DEVIDP_PORT and MOTO_PORT (portal/devports.py).
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default=devports.portal_url(env.ENVIRON)).rstrip("/")

# ---------------------------------------------------------------------------
# Django
# ---------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "mozilla_django_oidc",
    # The REST API (/api/v1/, the "REST API" block below)
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "approvals",
]

MIDDLEWARE = [
    # X-Request-ID and the log context, first so that every later middleware logs with them.
    "portal.logging.RequestIdMiddleware",
    # A NUL character in the URL: 400 before anything reads it (PostgreSQL refuses it in a query).
    "portal.middleware.RefuseNulCharactersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.middleware.ContentSecurityPolicyMiddleware",
    # Cache-Control: no-store, private on every answer that does not say otherwise (not static files).
    "portal.middleware.NeverStoreMiddleware",
    # Re-checks the sign-in with the IdP (prompt=none) once the ID token's window passed.
    "approvals.auth.PortalSessionRefresh",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that test worker processes can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-portal.sqlite3")}
    # Web, worker, consumer and beat write to one file: each transaction takes the write lock
    # when it begins (IMMEDIATE), so a read-then-write waits for `timeout` seconds instead of
    # failing at once with "database is locked" (SQLite cannot upgrade a read lock that waits).
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    # The inbox's covering index (INCLUDE, migration 0007) is a PostgreSQL speed-up; SQLite
    # builds it without the included column, which changes no result.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "approvals.User"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("PORTAL_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Serve straight from the app folders when static files were not collected (make run).
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEV)

# The dev IdP, the moto server and the portal share 127.0.0.1: browsers don't separate
# cookies by port, so each project needs its own cookie names.
SESSION_COOKIE_NAME = "portal_sessionid"
CSRF_COOKIE_NAME = "portal_csrftoken"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEV)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Behind a TLS-terminating proxy, set SECURE_PROXY_SSL_HEADER_NAME=HTTP_X_FORWARDED_PROTO.
if env.str("SECURE_PROXY_SSL_HEADER_NAME", default=""):
    SECURE_PROXY_SSL_HEADER = (env.str("SECURE_PROXY_SSL_HEADER_NAME"), "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEV)
# Probes and Prometheus: no HTTPS redirect (a plain-HTTP probe inside the cluster). They still
# need a Host in DJANGO_ALLOWED_HOSTS.
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEV else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEV)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEV)
# Everything is served by the portal itself: no CDN, no inline scripts. `form-action` gets the
# IdP's origin added (portal/middleware.py): signing out redirects a POST to the IdP.
CONTENT_SECURITY_POLICY = env.str(
    "CONTENT_SECURITY_POLICY",
    default="default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
)

# ---------------------------------------------------------------------------
# Sign-in: OIDC (mozilla-django-oidc)
# ---------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = ["approvals.auth.PortalOIDCBackend"]
LOGIN_URL = "signin"
LOGIN_REDIRECT_URL = "/"
LOGIN_REDIRECT_URL_FAILURE = "/signin/?failed=1"
LOGOUT_REDIRECT_URL = "/signin/?signed_out=1"

OIDC_OP_ISSUER = env.str("OIDC_OP_ISSUER", default=dev_default(devports.issuer(env.ENVIRON))).rstrip("/")
OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_OP_AUTHORIZATION_ENDPOINT", default=f"{OIDC_OP_ISSUER}/authorize/")
OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_OP_TOKEN_ENDPOINT", default=f"{OIDC_OP_ISSUER}/token/")
OIDC_OP_USER_ENDPOINT = env.str("OIDC_OP_USER_ENDPOINT", default=f"{OIDC_OP_ISSUER}/userinfo/")
OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_OP_JWKS_ENDPOINT", default=f"{OIDC_OP_ISSUER}/.well-known/jwks.json")
OIDC_RP_CLIENT_ID = env.str("OIDC_RP_CLIENT_ID", default=dev_default("approval-portal"))
OIDC_RP_CLIENT_SECRET = env.str("OIDC_RP_CLIENT_SECRET", default=dev_default(dev_keys.OIDC_RP_CLIENT_SECRET))
# Asymmetric only: the ID token is verified with the IdP's published keys (JWKS, by kid).
OIDC_RP_SIGN_ALGO = env.str("OIDC_RP_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES = env.str("OIDC_RP_SCOPES", default="openid email profile groups")
OIDC_USE_NONCE = True
OIDC_USE_PKCE = True
OIDC_PKCE_CODE_CHALLENGE_METHOD = "S256"
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT", default=10.0)
OIDC_CREATE_USER = True
# How long a sign-in is trusted before the IdP is asked again (prompt=none): a user disabled
# or removed from a group at the IdP loses access within this window.
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = env.int("OIDC_SESSION_REFRESH_SECONDS", default=15 * 60)
# RP-initiated logout: the IdP's end-session endpoint (empty: end only the portal session).
OIDC_OP_LOGOUT_ENDPOINT = env.str("OIDC_OP_LOGOUT_ENDPOINT", default=f"{OIDC_OP_ISSUER}/logout/" if DEV else "")
OIDC_OP_LOGOUT_URL_METHOD = "approvals.auth.provider_logout_url"
OIDC_STORE_ID_TOKEN = True  # the id_token_hint for RP-initiated logout
# Only an email the IdP verified is trusted (some IdPs, e.g. Entra ID, never send the claim).
OIDC_REQUIRE_VERIFIED_EMAIL = env.bool("OIDC_REQUIRE_VERIFIED_EMAIL", default=True)
# Optional allow-list of email domains (e.g. "example.com,example.org"); empty allows all.
OIDC_ALLOWED_EMAIL_DOMAINS = [d.lower().lstrip("@") for d in env.list("OIDC_ALLOWED_EMAIL_DOMAINS", default=[])]
# Which claim carries the user's groups, and which groups make a user a portal admin.
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
# The claim that keys accounts (with the issuer). Entra ID: "oid" — what SCIM can send as externalId.
OIDC_SUBJECT_CLAIM = env.str("OIDC_SUBJECT_CLAIM", default="sub")
OIDC_ADMIN_GROUPS = env.list("OIDC_ADMIN_GROUPS", default=["portal-admins"])
# Every other signed-in user may use the admin as an approver: staff with only the approver
# permissions, seeing only the requests they may decide or decided (approvals/roles.py).
ADMIN_APPROVER_ACCESS = env.bool("ADMIN_APPROVER_ACCESS", default=True)
# Probes and Prometheus have no session: no OIDC re-check (approvals.auth.PortalSessionRefresh).
OIDC_EXEMPT_URLS = ["healthz", "readyz", "metrics"]

# ---------------------------------------------------------------------------
# AWS: Step Functions and the approval queue
# ---------------------------------------------------------------------------
AWS_REGION = env.str("AWS_REGION", default="us-east-1")
# Unset in production means real AWS. In dev it points at the local moto server; set it to
# an empty string to use real AWS from a dev checkout.
AWS_ENDPOINT_URL = env.str("AWS_ENDPOINT_URL", default=devports.aws_endpoint(env.ENVIRON) if DEV else "") or None
AWS_EMULATOR = AWS_ENDPOINT_URL is not None and urlsplit(AWS_ENDPOINT_URL).hostname in {
    "127.0.0.1",
    "localhost",
    "moto",
    "aws",
}
# Credentials come from boto3's usual chain (role, profile, env). The emulator takes any.
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="testing" if AWS_EMULATOR else "") or None
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="testing" if AWS_EMULATOR else "") or None
AWS_CONNECT_TIMEOUT = env.float("AWS_CONNECT_TIMEOUT", default=5.0)
AWS_READ_TIMEOUT = env.float("AWS_READ_TIMEOUT", default=15.0)

_EMULATOR_ACCOUNT = "123456789012"
APPROVAL_QUEUE_NAME = env.str("APPROVAL_QUEUE_NAME", default="approval-requests")
APPROVAL_QUEUE_URL = env.str(
    "APPROVAL_QUEUE_URL",
    default=dev_default(f"{AWS_ENDPOINT_URL}/{_EMULATOR_ACCOUNT}/{APPROVAL_QUEUE_NAME}"),
)
# The demo state machine that `manage.py aws_bootstrap` creates and `demo_start` runs.
DEMO_STATE_MACHINE_ARN = env.str(
    "DEMO_STATE_MACHINE_ARN",
    default=f"arn:aws:states:{AWS_REGION}:{_EMULATOR_ACCOUNT}:stateMachine:approval-demo",
)

# ---------------------------------------------------------------------------
# Approvals
# ---------------------------------------------------------------------------
# Fernet keys (comma-separated, newest first): the first encrypts, all decrypt (rotation).
TOKEN_ENCRYPTION_KEYS = env.list("TOKEN_ENCRYPTION_KEYS", default=dev_default([dev_keys.TOKEN_ENCRYPTION_KEY]))
# HMAC keys for the token fingerprint that finds a request by its token without decrypting
# (comma-separated, newest first): the first fingerprints new tokens, every one still finds a
# duplicate; `manage.py rotate_token_keys` moves stored fingerprints to the first (docs/configuration.md).
# TOKEN_FINGERPRINT_KEY is the one-key spelling of the same setting.
if env.str("TOKEN_FINGERPRINT_KEYS", default=""):
    TOKEN_FINGERPRINT_KEYS = env.list("TOKEN_FINGERPRINT_KEYS")
else:
    TOKEN_FINGERPRINT_KEYS = [env.str("TOKEN_FINGERPRINT_KEY", default=dev_default(dev_keys.TOKEN_FINGERPRINT_KEY))]
TOKEN_FINGERPRINT_KEY = TOKEN_FINGERPRINT_KEYS[0] if TOKEN_FINGERPRINT_KEYS else ""
# The task token of a closed request is erased this many days after it closed (the request and
# its audit trail stay); 0 keeps tokens forever. Step Functions refuses a closed task's token anyway.
TOKEN_RETENTION_DAYS = env.int("TOKEN_RETENTION_DAYS", default=30)
# Requests that name no approvers go to this group, never nowhere.
APPROVAL_DEFAULT_GROUP = env.str("APPROVAL_DEFAULT_GROUP", default="portal-admins")
# How long a one-click link in an email or chat message stays valid.
DECISION_LINK_TTL_SECONDS = env.int("DECISION_LINK_TTL_SECONDS", default=3 * 24 * 3600)
# SQS accepts bodies up to 1 MiB.
APPROVAL_MAX_MESSAGE_BYTES = env.int("APPROVAL_MAX_MESSAGE_BYTES", default=1024 * 1024)
APPROVAL_CONSUMER_ENABLED = env.bool("APPROVAL_CONSUMER_ENABLED", default=True)
APPROVAL_CONSUMER_WAIT_SECONDS = env.int("APPROVAL_CONSUMER_WAIT_SECONDS", default=10)
APPROVAL_CONSUMER_VISIBILITY_TIMEOUT = env.int("APPROVAL_CONSUMER_VISIBILITY_TIMEOUT", default=60)
# Consumer threads per worker: with 2, one stores a batch while the other waits for SQS.
APPROVAL_CONSUMER_THREADS = max(1, env.int("APPROVAL_CONSUMER_THREADS", default=2))
CALLBACK_MAX_ATTEMPTS = env.int("CALLBACK_MAX_ATTEMPTS", default=8)
# A callback left "pending" or "sending" this long is queued again by the sweep.
CALLBACK_STALE_SECONDS = env.int("CALLBACK_STALE_SECONDS", default=120)

# ---------------------------------------------------------------------------
# Notifications: email, Slack, reminders, escalation, digest (approvals/notifications/)
# ---------------------------------------------------------------------------
# SMTP when EMAIL_HOST is set (docker-compose: mailpit), else in dev a file per mail in var/mail
# with one log line linking it (portal/mail.py), else the console.
EMAIL_HOST = env.str("EMAIL_HOST", default="")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "portal.mail.LocalFileEmailBackend"
    if DEV
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Approval portal <approvals@localhost>")
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
# Production without a mail server sends no email (rather than printing signed links to the log).
NOTIFICATION_EMAIL_ENABLED = env.bool(
    "NOTIFICATION_EMAIL_ENABLED", default=DEV or bool(EMAIL_HOST) or bool(env.str("EMAIL_BACKEND", default=""))
)
# Each send: this many attempts in all, exponential backoff with jitter between them.
NOTIFICATION_MAX_ATTEMPTS = env.int("NOTIFICATION_MAX_ATTEMPTS", default=5)
NOTIFICATION_RETRY_BACKOFF_SECONDS = env.int("NOTIFICATION_RETRY_BACKOFF_SECONDS", default=30)
NOTIFICATION_RETRY_BACKOFF_MAX_SECONDS = env.int("NOTIFICATION_RETRY_BACKOFF_MAX_SECONDS", default=600)
# A notification still pending this long (a lost enqueue: broker down) is queued again by the sweep.
NOTIFICATION_STALE_SECONDS = env.int("NOTIFICATION_STALE_SECONDS", default=1200)
# Slack: off unless the bot token is set (then the signing secret must be set too).
SLACK_BOT_TOKEN = env.str("SLACK_BOT_TOKEN", default="")
SLACK_SIGNING_SECRET = env.str("SLACK_SIGNING_SECRET", default="")
SLACK_API_URL = env.str("SLACK_API_URL", default="https://slack.com/api").rstrip("/")
SLACK_TIMEOUT = env.float("SLACK_TIMEOUT", default=5.0)
# SSO group → Slack channel id ("finance-approvers=C123,it-approvers=C456"); other groups' known
# members get direct messages.
SLACK_GROUP_CHANNELS = env.dict("SLACK_GROUP_CHANNELS", default={})
# The workspace (team id, "T…") whose clicks count; a click from any other workspace is refused.
SLACK_TEAM_ID = env.str("SLACK_TEAM_ID", default="")
# Slack has no sign-in of its own to the portal: a click counts only while the clicker's last SSO
# sign-in or session refresh is at most this old (docs/notifications.md, "Slack": why 4 hours).
SLACK_SSO_MAX_AGE_SECONDS = env.int("SLACK_SSO_MAX_AGE_SECONDS", default=4 * 3600)
# How long the link that binds a Slack user to a portal account stays valid.
SLACK_BIND_LINK_TTL_SECONDS = env.int("SLACK_BIND_LINK_TTL_SECONDS", default=30 * 60)
# Bind only when Slack's email for the Slack user is the signed-in account's email (a link
# forwarded to someone else then binds nothing).
SLACK_BIND_REQUIRE_EMAIL_MATCH = env.bool("SLACK_BIND_REQUIRE_EMAIL_MATCH", default=True)
# Reminders and escalation (0 turns either off); escalation goes to ESCALATION_GROUP's members,
# or to the portal admins (superusers) when it is empty.
REMINDER_AFTER_SECONDS = env.int("REMINDER_AFTER_SECONDS", default=4 * 3600)
ESCALATION_AFTER_SECONDS = env.int("ESCALATION_AFTER_SECONDS", default=24 * 3600)
ESCALATION_GROUP = env.str("ESCALATION_GROUP", default="")
FOLLOW_UP_SWEEP_SECONDS = env.float("FOLLOW_UP_SWEEP_SECONDS", default=300.0)
# The daily digest (for people who turned it on) lists pending requests when they have at least this many.
DIGEST_MIN_PENDING = env.int("DIGEST_MIN_PENDING", default=5)
DIGEST_HOUR_UTC = env.int("DIGEST_HOUR_UTC", default=7)

# ---------------------------------------------------------------------------
# Cache: the API's throttles, JWKS and introspection answers (docs/api.md)
# ---------------------------------------------------------------------------
# Shared by every process only when it is a real cache server: with the default (memory of each
# process, `locmemcache://`) gunicorn's workers and the Celery workers each keep their own, so
# throttle rates and IdP lookups multiply by the number of processes (approvals.W050 in
# production). Production: CACHE_URL=redis://<host>:6379/<db> (Django's RedisCache).
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# ---------------------------------------------------------------------------
# Celery
# ---------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}")
# The queue every task goes to and every worker without -Q takes from (a test session uses its own).
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# A broker outage must not hang a web request after its decision committed: fail fast,
# the outbox sweep publishes later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
# Resume executions before telling people. With Redis, a task's priority picks the list it waits
# in and a worker takes priority 0 (the default: callbacks, sweeps) before 6 (mail and Slack), so
# a burst of notifications never holds up a decision's callback (docs/callbacks.md). The SQLite
# and AMQP transports (without x-max-priority) ignore it, as before.
CELERY_TASK_ROUTES = {"worker.notify_tasks.*": {"priority": 6}}
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis's own socket timeouts (the SQLite and AMQP transports take other options).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 3, "socket_timeout": 5}
# Workers keep their database connections across tasks. Without this Celery's Django fixup closes
# every connection before and after each task, so each task opened a new PostgreSQL connection
# and CONN_MAX_AGE never applied in a worker. With it the fixup closes them only every N tasks,
# and worker/connections.py runs Django's close_old_connections() before and after each task as
# Django does around a web request: CONN_MAX_AGE and CONN_HEALTH_CHECKS (Database block) then
# apply in workers too, so a connection PostgreSQL dropped (restart, failover,
# pg_terminate_backend) is replaced before the task uses it. 0 turns reuse off.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000) or None
CALLBACK_SWEEP_SECONDS = env.float("CALLBACK_SWEEP_SECONDS", default=30.0)
# Callbacks one delivery task claims and sends at once: the id it was queued for, then whatever
# else is due (docs/callbacks.md, "Delivery in batches"). 1 = one callback per task, as before.
CALLBACK_BATCH_SIZE = max(1, env.int("CALLBACK_BATCH_SIZE", default=50))
# Threads per delivery task for the Send* HTTP calls of a batch (1 = one after the other). Keep
# worker processes x threads x calls per second per thread under the account's Send* quota.
CALLBACK_SEND_THREADS = max(1, env.int("CALLBACK_SEND_THREADS", default=4))
HEARTBEAT_SWEEP_SECONDS = env.float("HEARTBEAT_SWEEP_SECONDS", default=30.0)
# How often the retention sweep erases the tokens of requests closed TOKEN_RETENTION_DAYS ago.
TOKEN_ERASE_SWEEP_SECONDS = env.float("TOKEN_ERASE_SWEEP_SECONDS", default=3600.0)
CELERY_BEAT_SCHEDULE = {
    "sweep-callbacks": {"task": "worker.tasks.sweep_callbacks", "schedule": CALLBACK_SWEEP_SECONDS},
    "expire-overdue": {"task": "worker.tasks.expire_overdue_requests", "schedule": 60.0},
    "send-heartbeats": {"task": "worker.tasks.send_heartbeats", "schedule": HEARTBEAT_SWEEP_SECONDS},
    "erase-closed-tokens": {"task": "worker.tasks.erase_closed_tokens", "schedule": TOKEN_ERASE_SWEEP_SECONDS},
    # Notifications (approvals/tasks/notifications.py)
    "sweep-notifications": {"task": "worker.notify_tasks.sweep_notifications", "schedule": 60.0},
    "send-follow-ups": {"task": "worker.notify_tasks.send_follow_ups", "schedule": FOLLOW_UP_SWEEP_SECONDS},
    "send-digests": {
        "task": "worker.notify_tasks.send_digests",
        "schedule": crontab(minute=0, hour=DIGEST_HOUR_UTC),
    },
}

# ---------------------------------------------------------------------------
# Operations: logging, metrics, health checks (docs/operations.md)
# ---------------------------------------------------------------------------
# Logs go to stdout, anything shaped like a task token redacted first on every handler, then the
# correlation ids (X-Request-ID, request/execution ids: portal/logging.py).
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# json: one JSON object per line (production default); plain: readable text (dev default).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEV else "json")
if LOG_FORMAT not in {"plain", "json"}:
    raise environ.ImproperlyConfigured("LOG_FORMAT must be 'plain' or 'json'")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_tokens": {"()": "approvals.redaction.TokenRedactingFilter"},
        "log_context": {"()": "portal.logging.LogContextFilter"},
    },
    "formatters": {
        "plain": {"()": "portal.logging.PlainFormatter"},
        "json": {"()": "portal.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["redact_tokens", "log_context"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        # Django's defaults attach their own handlers to "django" (an unfiltered console in DEBUG,
        # mail to ADMINS with the traceback): none, so its records reach only the filtered root handler.
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
    },
}

# prometheus-client's multiprocess files: <dir>/web and <dir>/worker-<node> (portal/observability.py).
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus"))
# Who may read /metrics (and /readyz's error details): a bearer token, or an address listed
# here (IPs or CIDRs). Neither set (the production default): nobody.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"] if DEV else [])
# The Celery worker's own metrics endpoint; 0 = none. Off by default in production: turn it on
# with a port and a bind address your Prometheus reaches (same token / allow-list).
WORKER_METRICS_PORT = env.int(
    "WORKER_METRICS_PORT", default=devports.DEFAULT_PORTS["WORKER_METRICS_PORT"] if DEV else 0
)
WORKER_METRICS_BIND = env.str("WORKER_METRICS_BIND", default="127.0.0.1")
# SQS's queue counts are fetched at most this often per web process (each scrape reads the cache).
METRICS_QUEUE_CACHE_SECONDS = env.float("METRICS_QUEUE_CACHE_SECONDS", default=15.0)
# Health checks' AWS calls: short timeouts, no retries.
AWS_PROBE_TIMEOUT = env.float("AWS_PROBE_TIMEOUT", default=3.0)
READYZ_TIMEOUT_SECONDS = env.float("READYZ_TIMEOUT_SECONDS", default=4.0)
# /readyz answers anyone: each web process reuses its checks' result this long (and runs them
# one at a time), so callers in a loop do not set the pace of the calls to SQS and the broker.
READYZ_CACHE_SECONDS = env.float("READYZ_CACHE_SECONDS", default=5.0)
READYZ_CONSUMER_MAX_AGE_SECONDS = env.int("READYZ_CONSUMER_MAX_AGE_SECONDS", default=120)
# The checks whose failure makes /readyz answer 503 (all are reported either way).
READYZ_REQUIRED_CHECKS = env.list("READYZ_REQUIRED_CHECKS", default=["database", "broker", "aws", "consumer"])

# ---------------------------------------------------------------------------
# REST API (/api/v1/, docs/api.md): Django REST framework, the OpenAPI schema, bearer tokens
# Everything the API reads from the environment is in this block (its apps are in INSTALLED_APPS).
# ---------------------------------------------------------------------------
# The `aud` the IdP puts in access tokens for this API (its "resource"/"API identifier"; Entra:
# the application ID URI). Empty: bearer tokens are refused, only the session cookie works.
API_AUDIENCE = env.str("API_AUDIENCE", default="approvals-api" if DEV else "")
# Asymmetric algorithms only (approvals/api/access_tokens.py refuses `none` and HS*).
API_JWT_ALGORITHMS = env.list("API_JWT_ALGORITHMS", default=["RS256", "PS256", "ES256"])
API_TOKEN_LEEWAY_SECONDS = env.int("API_TOKEN_LEEWAY_SECONDS", default=30)
API_JWKS_CACHE_SECONDS = env.int("API_JWKS_CACHE_SECONDS", default=300)
# An unknown `kid` refetches the JWKS at most this often (a rotated key, not a flood of made-up kids).
API_JWKS_REFETCH_SECONDS = env.int("API_JWKS_REFETCH_SECONDS", default=60)
# Opaque (non-JWT) tokens: RFC 7662 introspection, authenticated as the portal's OIDC client.
API_INTROSPECTION_ENDPOINT = env.str(
    "API_INTROSPECTION_ENDPOINT", default=f"{OIDC_OP_ISSUER}/introspect/" if DEV else ""
)
API_INTROSPECTION_CACHE_SECONDS = env.int("API_INTROSPECTION_CACHE_SECONDS", default=60)
# A person's token decides only while their last SSO sign-in or session refresh (when the portal
# last read their groups and email) is at most this old, as a Slack click; older, the API asks the
# IdP's userinfo endpoint with the caller's token first (docs/api.md, "Tokens").
API_SSO_MAX_AGE_SECONDS = env.int("API_SSO_MAX_AGE_SECONDS", default=4 * 3600)
API_AUDIT_EXPORT_LIMIT = env.int("API_AUDIT_EXPORT_LIMIT", default=100_000)
# How long a decide's Idempotency-Key keeps its first answer; the retention sweep forgets older ones.
API_IDEMPOTENCY_KEY_HOURS = env.int("API_IDEMPOTENCY_KEY_HOURS", default=24)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First: its WWW-Authenticate makes a missing or refused token a 401.
        "approvals.api.authentication.BearerTokenAuthentication",
        "approvals.api.authentication.CsrfSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "approvals.api.problems.exception_handler",
    # ?format= is the audit export's parameter, not DRF's renderer switch.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("API_THROTTLE_USER", default="600/minute"),
        "service_account": env.str("API_THROTTLE_SERVICE_ACCOUNT", default="1200/minute"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Approval portal API",
    "DESCRIPTION": "Decide and administer approval requests (docs/api.md). Errors are RFC 9457 problem details.",
    "VERSION": "1.0.0",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    # The UIs' files from drf-spectacular-sidecar, served by the portal: nothing from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
