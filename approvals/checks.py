"""System checks that refuse an incomplete or unsafe configuration at start-up."""

from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError
from rest_framework.throttling import SimpleRateThrottle

from approvals.selectors.sources import sources_by_queue
from approvals.stepfunctions import queue_identity
from portal import dev_keys

GENERATE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"  # noqa: S105 - a command
GENERATE_FERNET = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


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
    if not settings.TOKEN_FINGERPRINT_KEYS or any(len(key) < 16 for key in settings.TOKEN_FINGERPRINT_KEYS):
        errors.append(
            Error("TOKEN_FINGERPRINT_KEY(S) must be set, each key at least 16 characters", id="approvals.E003")
        )
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


@register()
def production_settings_check(app_configs, **kwargs):
    """Production fails closed: no public development key, no plain-HTTP IdP, no DEBUG.

    The keys below are in this repository, so a deployment that runs with one of them has no
    secret; each error names the variable to set and how to make a value.
    """
    if settings.PORTAL_ENV != "production":
        return []
    errors = []
    if settings.SECRET_KEY == dev_keys.DJANGO_SECRET_KEY:
        errors.append(
            Error(
                "DJANGO_SECRET_KEY is the public development key.",
                hint=f"Set DJANGO_SECRET_KEY to a long random secret of your own, e.g. {GENERATE_SECRET}.",
                id="approvals.E010",
            )
        )
    if dev_keys.TOKEN_ENCRYPTION_KEY in settings.TOKEN_ENCRYPTION_KEYS:
        errors.append(
            Error(
                "TOKEN_ENCRYPTION_KEYS holds the public development key: anyone could decrypt the stored task tokens.",
                hint=f"Set TOKEN_ENCRYPTION_KEYS to a Fernet key of your own, e.g. {GENERATE_FERNET}.",
                id="approvals.E011",
            )
        )
    if dev_keys.TOKEN_FINGERPRINT_KEY in settings.TOKEN_FINGERPRINT_KEYS:
        errors.append(
            Error(
                "TOKEN_FINGERPRINT_KEY(S) holds the public development key.",
                hint=f"Set TOKEN_FINGERPRINT_KEY to a random secret of your own, e.g. {GENERATE_SECRET}.",
                id="approvals.E012",
            )
        )
    if settings.OIDC_RP_CLIENT_SECRET == dev_keys.OIDC_RP_CLIENT_SECRET:
        errors.append(
            Error(
                "OIDC_RP_CLIENT_SECRET is the development IdP's client secret.",
                hint="Set OIDC_RP_CLIENT_SECRET to the secret your identity provider issued for the portal.",
                id="approvals.E013",
            )
        )
    for name in (
        "OIDC_OP_ISSUER",
        "OIDC_OP_AUTHORIZATION_ENDPOINT",
        "OIDC_OP_TOKEN_ENDPOINT",
        "OIDC_OP_USER_ENDPOINT",
        "OIDC_OP_JWKS_ENDPOINT",
        "OIDC_OP_LOGOUT_ENDPOINT",
    ):
        value = getattr(settings, name, "")
        if value and urlsplit(value).scheme != "https":
            errors.append(
                Error(
                    f"{name} is not an https:// URL: sign-ins and the ID token's keys would travel unprotected.",
                    hint=f"Set {name} to your identity provider's https:// URL.",
                    id="approvals.E014",
                )
            )
    if settings.DEBUG:
        errors.append(
            Error(
                "DEBUG is on in production: error pages would show settings and data to anyone.",
                hint="Unset DJANGO_DEBUG (or set DJANGO_DEBUG=false).",
                id="approvals.E015",
            )
        )
    return errors


# Numbers whose 0 (or a negative) turns something essential off without a word:
# setting -> (lowest, highest or None, what goes wrong outside that range).
SWEEP_FLOOD = "beat would queue this sweep without pause, ahead of the callbacks in the workers' queue"
# A timeout of 0 or less is no timeout at all to urllib3, smtplib and boto3: they raise ValueError
# before connecting, so every call fails. The lowest is a millisecond (the values are floats).
NO_TIMEOUT = "every {} call would fail with ValueError before it is made"
RETRY_AT_ONCE = (
    "a failed send is retried at once (a short mail or Slack outage uses up every attempt), "
    "or the retry fails with ValueError (below 0)"
)
BOUNDED_SETTINGS = {
    "CALLBACK_STALE_SECONDS": (
        1,
        None,
        "a callback's claim (its lease) would end as it is taken: every send is skipped as lease lost "
        "and no execution resumes",
    ),
    "CALLBACK_SWEEP_SECONDS": (1, None, SWEEP_FLOOD),
    "HEARTBEAT_SWEEP_SECONDS": (1, None, SWEEP_FLOOD),
    "TOKEN_ERASE_SWEEP_SECONDS": (1, None, SWEEP_FLOOD),
    "FOLLOW_UP_SWEEP_SECONDS": (1, None, SWEEP_FLOOD),
    "APPROVAL_MAX_MESSAGE_BYTES": (1, None, "every message would be refused as too large"),
    "APPROVAL_CONSUMER_WAIT_SECONDS": (
        0,
        20,
        "SQS refuses the long poll: every receive would fail and nothing would be ingested",
    ),
    "APPROVAL_CONSUMER_VISIBILITY_TIMEOUT": (
        1,
        43200,
        "a message being stored would be handed to the next receive at once (and counted towards the "
        "dead-letter queue), or SQS refuses the receive (above 43200)",
    ),
    "DECISION_LINK_TTL_SECONDS": (1, None, "every one-click link in mail and Slack would have expired when clicked"),
    "SLACK_BIND_LINK_TTL_SECONDS": (1, None, "every link that binds a Slack user would have expired when clicked"),
    "SLACK_SSO_MAX_AGE_SECONDS": (1, None, "every Slack click would be refused as coming from an old sign-in"),
    "READYZ_CACHE_SECONDS": (
        1,
        60,
        "anyone calling /readyz in a loop makes each web process call SQS and the broker as often (below 1), "
        "or a failed dependency stays hidden behind the reused answer for over a minute (above 60)",
    ),
    "READYZ_CONSUMER_MAX_AGE_SECONDS": (
        1,
        None,
        "no consumer's last poll is ever recent enough: /readyz answers 503 and the load balancer sends no traffic",
    ),
    "AWS_CONNECT_TIMEOUT": (
        0.001,
        None,
        NO_TIMEOUT.format("AWS (SQS, Step Functions)") + ": nothing ingested, no callback sent",
    ),
    "AWS_READ_TIMEOUT": (
        0.001,
        None,
        NO_TIMEOUT.format("Step Functions and SQS (but the long poll)")
        + ": no callback sent, no stored message deleted from the queue",
    ),
    "AWS_PROBE_TIMEOUT": (0.001, None, NO_TIMEOUT.format("/readyz and /metrics SQS") + ": /readyz answers 503"),
    "READYZ_TIMEOUT_SECONDS": (
        0.001,
        None,
        "the broker check cannot connect in no time, or the wait fails with ValueError (below 0): "
        "/readyz answers 503 or 500",
    ),
    "OIDC_TIMEOUT": (0.001, None, NO_TIMEOUT.format("IdP") + ": nobody signs in, no API token is accepted"),
    "SLACK_TIMEOUT": (0.001, None, NO_TIMEOUT.format("Slack") + ": no Slack message is sent"),
    "EMAIL_TIMEOUT": (0.001, None, NO_TIMEOUT.format("SMTP") + ": no email is sent"),
    "SESSION_COOKIE_AGE": (
        1,
        None,
        "every sign-in fails: the session that holds its state has expired when the IdP sends the browser back",
    ),
    "OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS": (
        1,
        None,
        "every page would send the browser to the IdP to re-check the sign-in, and back, without end "
        "(OIDC_SESSION_REFRESH_SECONDS)",
    ),
    "API_TOKEN_LEEWAY_SECONDS": (
        0,
        300,
        "access tokens are refused that much before they expire (below 0: a token shorter-lived than that "
        "is never accepted), or accepted long after they expired (above 300)",
    ),
    "API_JWKS_CACHE_SECONDS": (1, None, "every API call with a token would fetch the IdP's keys again"),
    "API_JWKS_REFETCH_SECONDS": (
        1,
        None,
        "every token with a made-up key id would make the portal fetch the IdP's keys: anyone can flood the IdP",
    ),
    "API_AUDIT_EXPORT_LIMIT": (
        1,
        None,
        "every audit export would be empty (0), or fail (below 0: a query cannot take a negative slice)",
    ),
    "SECURE_HSTS_SECONDS": (
        0,
        None,
        "browsers ignore the header's negative max-age: no HSTS, and Django's own check (security.W004) "
        "warns only of 0",
    ),
    "API_IDEMPOTENCY_KEY_HOURS": (
        1,
        None,
        "the retention sweep forgets each Idempotency-Key as soon as it runs: a retried decision is "
        "answered 409 instead of its first answer",
    ),
    "NOTIFICATION_MAX_ATTEMPTS": (1, None, "no email or Slack message would ever be sent: each is given up unsent"),
    "NOTIFICATION_RETRY_BACKOFF_SECONDS": (1, None, RETRY_AT_ONCE),
    "NOTIFICATION_RETRY_BACKOFF_MAX_SECONDS": (1, None, RETRY_AT_ONCE),
}


# The API's rates (REST_FRAMEWORK's DEFAULT_THROTTLE_RATES, by scope): what DRF cannot read makes
# every API call a 500, and fewer than 1 call per period answers every call 429.
THROTTLE_RATE_SETTINGS = {"user": "API_THROTTLE_USER", "service_account": "API_THROTTLE_SERVICE_ACCOUNT"}


def _throttle_rate_allows_calls(rate: str) -> bool:
    try:
        # DRF's own reading of "<number>/<s|m|h|d...>"; it uses nothing of the instance.
        calls, _period = SimpleRateThrottle.parse_rate(None, rate)
    except (ValueError, KeyError, IndexError, AttributeError):
        return False
    return calls is not None and calls >= 1


@register()
def bounded_settings_check(app_configs, **kwargs):
    errors = []
    for name, (lowest, highest, harm) in BOUNDED_SETTINGS.items():
        value = getattr(settings, name)
        if value < lowest or (highest is not None and value > highest):
            span = f"at least {lowest}" if highest is None else f"from {lowest} to {highest}"
            errors.append(Error(f"{name} is {value}: it must be {span}, else {harm}.", id="approvals.E043"))
    rates = settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {})
    for scope, name in THROTTLE_RATE_SETTINGS.items():
        rate = rates.get(scope)
        if not _throttle_rate_allows_calls(rate):
            errors.append(
                Error(
                    f"{name} is {rate!r}: it must be at least 1 call per second, minute, hour or day "
                    "(e.g. 600/minute), else every API call of these callers is answered 429 "
                    "(fewer than 1) or fails with a 500 (a rate DRF cannot read).",
                    id="approvals.E043",
                )
            )
    return errors


@register(Tags.database)
def approval_sources_check(app_configs, databases=None, **kwargs):
    """Saved sources whose queue another consumer reads too (APPROVAL_QUEUE_URL changed after they
    were saved, or rows from before the admin refused it). Warnings, not errors: `migrate` runs
    database checks and an error would stop the release, while the workers keep consuming either
    way; the fix is in the admin (disable the source or give it a queue of its own)."""
    if not databases or "default" not in databases:
        return []
    try:
        queues = sources_by_queue()
    except DatabaseError:
        return []  # not migrated yet: there are no sources
    warnings = []
    default_queue = queue_identity(settings.APPROVAL_QUEUE_URL) if settings.APPROVAL_QUEUE_URL else None
    for queue, sources in queues.items():
        enabled = [source.name for source in sources if source.enabled]
        if queue == default_queue:
            warnings += [
                Warning(
                    f"Source {name!r} reads the default queue (APPROVAL_QUEUE_URL): a message there gets the "
                    "source's trust rule or the default queue's, whichever consumer receives it.",
                    hint="Disable the source, or give it a queue of its own, in the admin.",
                    id="approvals.W051",
                )
                for name in enabled
            ]
        elif len(enabled) > 1:
            warnings.append(
                Warning(
                    f"Sources {', '.join(map(repr, enabled))} read the same queue: a message there gets the "
                    "trust rule of whichever of them receives it.",
                    hint="Disable all but one of them in the admin.",
                    id="approvals.W052",
                )
            )
    return warnings


def refuse_unsafe_production() -> None:
    """For the processes that run no system checks (gunicorn, the Celery worker and beat):
    exit with the same errors `manage.py check` reports, before serving anything. The numbers of
    BOUNDED_SETTINGS count in every mode: the worker and beat are the processes they break."""
    errors = production_settings_check(None) + bounded_settings_check(None)
    if errors:
        lines = [f"{error.id}: {error.msg} {error.hint or ''}".rstrip() for error in errors]
        raise SystemExit("Refusing to start with an unsafe configuration:\n" + "\n".join(lines))


# Notification settings (Slack, retries)
@register()
def notification_settings_check(app_configs, **kwargs):
    messages = []
    if settings.SLACK_BOT_TOKEN and not settings.SLACK_SIGNING_SECRET:
        messages.append(
            Error(
                "SLACK_BOT_TOKEN is set but SLACK_SIGNING_SECRET is not: Slack's button clicks cannot be verified",
                id="approvals.E101",
            )
        )
    if settings.SLACK_BOT_TOKEN and not settings.SLACK_TEAM_ID:
        messages.append(
            Error(
                "SLACK_BOT_TOKEN is set but SLACK_TEAM_ID is not: clicks from any workspace would be refused",
                id="approvals.E103",
            )
        )
    if settings.SLACK_GROUP_CHANNELS and not settings.SLACK_BOT_TOKEN:
        messages.append(
            Warning("SLACK_GROUP_CHANNELS is set but Slack is off (no SLACK_BOT_TOKEN)", id="approvals.W101")
        )
    # NOTIFICATION_MAX_ATTEMPTS (E102 before) is in BOUNDED_SETTINGS: the worker checks it at start too.
    return messages


# ---------------------------------------------------------------------------
# The REST API (approvals/api/, docs/api.md)
# ---------------------------------------------------------------------------
# Asymmetric algorithms only: what API_JWT_ALGORITHMS may list (approvals/api/access_tokens.py
# verifies with their intersection).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


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
    if settings.API_AUDIENCE and settings.API_AUDIENCE == settings.OIDC_RP_CLIENT_ID:
        # The portal's ID tokens carry its client id as their audience: they would pass as the
        # API's access tokens (an ID token sits in the session and in the sign-out URL).
        errors.append(
            Error(
                "API_AUDIENCE must not be OIDC_RP_CLIENT_ID: the portal's own ID tokens would be accepted "
                "as API access tokens. Register the API as its own resource at the IdP (docs/api.md, Tokens).",
                id="approvals.E042",
            )
        )
    return errors


PROCESS_LOCAL_CACHES = frozenset(
    {"django.core.cache.backends.locmem.LocMemCache", "django.core.cache.backends.dummy.DummyCache"}
)


@register(deploy=True)
def shared_cache_check(app_configs, **kwargs):
    """The API's throttles and its JWKS and introspection caches live in the default cache: in
    production it must be shared by the processes (gunicorn runs several, and the workers)."""
    if settings.PORTAL_ENV != "production":
        return []
    if settings.CACHES["default"]["BACKEND"] not in PROCESS_LOCAL_CACHES:
        return []
    return [
        Warning(
            "The cache is local to each process (CACHE_URL unset or locmemcache://): the API's throttle "
            "rates and the IdP's JWKS and introspection lookups multiply by the number of processes.",
            hint="Set CACHE_URL to a cache the processes share, e.g. redis://<host>:6379/<db>.",
            id="approvals.W050",
        )
    ]
