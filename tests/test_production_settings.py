"""Production fails closed: `manage.py check --deploy` as a deployer runs it, in a subprocess
with only the environment they set.

With PORTAL_ENV=production a known development key (Django's, the token encryption or
fingerprint key, the dev IdP's client secret), a plain-HTTP identity provider or DEBUG is an
error that names what to set; with keys of one's own the check is clean.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from portal import dev_keys

REPO_DIR = Path(__file__).resolve().parent.parent
FRESH_FERNET_KEY = Fernet.generate_key().decode()


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A complete production configuration with real (freshly made) keys."""
    env = {
        "PATH": os.environ["PATH"],
        "PORTAL_ENV": "production",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SECRET_KEY": "k7Vq2" + Fernet.generate_key().decode() + "zP9",
        "DJANGO_ALLOWED_HOSTS": "approvals.example.com",
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "TOKEN_FINGERPRINT_KEY": Fernet.generate_key().decode(),
        "OIDC_OP_ISSUER": "https://sso.example.com/o",
        "OIDC_RP_CLIENT_ID": "approval-portal",
        "OIDC_RP_CLIENT_SECRET": "issued-by-the-company-idp",
        "APPROVAL_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/approval-requests",
        "CACHE_URL": "redis://127.0.0.1:6379/11",
    }
    env.update(overrides)
    return env


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`python <args>` in the repository with exactly `env`, its output captured."""
    return subprocess.run([sys.executable, *args], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120)


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_python(env, "manage.py", "check", "--deploy")


def test_production_with_keys_of_its_own_passes_check_deploy_cleanly(tmp_path):
    result = check_deploy(production_env(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize("cache_url", [None, "locmemcache://", "dummycache://"])
def test_production_with_a_cache_of_each_process_warns_that_throttles_and_caches_multiply(tmp_path, cache_url):
    env = production_env(tmp_path)
    del env["CACHE_URL"]
    if cache_url is not None:
        env["CACHE_URL"] = cache_url

    result = check_deploy(env)

    assert result.returncode == 0, result.stdout + result.stderr  # a warning: it still starts
    assert "approvals.W050" in result.stderr + result.stdout
    assert "multiply by the number of processes" in result.stderr + result.stdout
    assert "CACHE_URL" in result.stderr + result.stdout


def test_production_with_a_shared_redis_cache_has_no_cache_warning(tmp_path):
    result = check_deploy(production_env(tmp_path, CACHE_URL="redis://127.0.0.1:6379/11"))

    assert "approvals.W050" not in result.stderr + result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cache_url_sets_the_cache_backend():
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.CACHES['default'])"],
        cwd=REPO_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "CACHE_URL": "redis://127.0.0.1:6379/11"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert "django.core.cache.backends.redis.RedisCache" in result.stdout, result.stderr
    assert "redis://127.0.0.1:6379/11" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "error_id"),
    [
        ("DJANGO_SECRET_KEY", dev_keys.DJANGO_SECRET_KEY, "approvals.E010"),
        ("TOKEN_ENCRYPTION_KEYS", dev_keys.TOKEN_ENCRYPTION_KEY, "approvals.E011"),
        # Still refused as an old key kept for rotation: the tokens it encrypted were never secret.
        ("TOKEN_ENCRYPTION_KEYS", f"{FRESH_FERNET_KEY},{dev_keys.TOKEN_ENCRYPTION_KEY}", "approvals.E011"),
        ("TOKEN_FINGERPRINT_KEY", dev_keys.TOKEN_FINGERPRINT_KEY, "approvals.E012"),
        ("TOKEN_FINGERPRINT_KEYS", f"a-fresh-fingerprint-key-0123,{dev_keys.TOKEN_FINGERPRINT_KEY}", "approvals.E012"),
        ("OIDC_RP_CLIENT_SECRET", dev_keys.OIDC_RP_CLIENT_SECRET, "approvals.E013"),
        ("OIDC_OP_ISSUER", "http://sso.example.com/o", "approvals.E014"),
        ("OIDC_OP_JWKS_ENDPOINT", "http://sso.example.com/o/jwks", "approvals.E014"),
        ("DJANGO_DEBUG", "true", "approvals.E015"),
    ],
)
def test_production_refuses_a_development_key_plain_http_sign_in_or_debug_and_says_what_to_set(
    tmp_path, variable, value, error_id
):
    result = check_deploy(production_env(tmp_path, **{variable: value}))

    assert result.returncode != 0
    assert error_id in result.stderr
    assert "SystemCheckError" in result.stderr
    named = variable.removesuffix("S") if variable.startswith("TOKEN_FINGERPRINT") else variable
    assert f"Set {named}" in result.stderr or f"Unset {named}" in result.stderr, result.stderr
    assert value not in result.stderr or value.startswith("http"), "a key is never echoed back"


def test_rotating_fingerprint_keys_in_production_needs_only_token_fingerprint_keys(tmp_path):
    env = production_env(tmp_path, TOKEN_FINGERPRINT_KEYS="new-fingerprint-key-0123456,old-fingerprint-key-6543210")
    del env["TOKEN_FINGERPRINT_KEY"]

    result = check_deploy(env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_every_development_key_at_once_is_reported_in_one_run(tmp_path):
    env = production_env(
        tmp_path,
        DJANGO_SECRET_KEY=dev_keys.DJANGO_SECRET_KEY,
        TOKEN_ENCRYPTION_KEYS=dev_keys.TOKEN_ENCRYPTION_KEY,
        TOKEN_FINGERPRINT_KEY=dev_keys.TOKEN_FINGERPRINT_KEY,
        OIDC_OP_ISSUER="http://127.0.0.1:9000/o",
    )

    result = check_deploy(env)

    assert result.returncode != 0
    for error_id in ("approvals.E010", "approvals.E011", "approvals.E012", "approvals.E014"):
        assert error_id in result.stderr


def test_migrate_refuses_to_run_with_a_development_key_in_production(tmp_path):
    # The one-shot `init` (migrate) is what a deployment runs first: it must stop there.
    env = production_env(tmp_path, TOKEN_ENCRYPTION_KEYS=dev_keys.TOKEN_ENCRYPTION_KEY)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"

    result = run_python(env, "manage.py", "migrate", "--noinput")

    assert result.returncode != 0
    assert "approvals.E011" in result.stderr
    assert not (tmp_path / "db.sqlite3").exists() or "Applying" not in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        # gunicorn imports this module in each worker; it runs no system checks itself.
        ["-c", "import portal.wsgi"],
        ["-m", "celery", "-A", "portal", "worker", "--concurrency", "1", "--loglevel", "WARNING"],
        ["-m", "celery", "-A", "portal", "beat", "--loglevel", "WARNING"],
    ],
    ids=["web", "worker", "beat"],
)
def test_web_worker_and_beat_refuse_to_start_with_a_development_key_in_production(tmp_path, command):
    env = production_env(tmp_path, TOKEN_ENCRYPTION_KEYS=dev_keys.TOKEN_ENCRYPTION_KEY, CELERY_BROKER_URL="memory://")
    if "beat" in command:
        command = [*command, "--schedule", str(tmp_path / "beat-schedule")]

    result = run_python(env, *command)

    assert result.returncode != 0
    assert "Refusing to start" in result.stderr
    assert "approvals.E011" in result.stderr and "Set TOKEN_ENCRYPTION_KEYS" in result.stderr


def test_development_keeps_its_embedded_defaults_without_errors(tmp_path):
    env = {"PATH": os.environ["PATH"], "PORTAL_VAR_DIR": str(tmp_path / "var")}  # PORTAL_ENV unset

    result = run_python(env, "manage.py", "check")

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_production_unless_told_otherwise():
    dockerfile = (REPO_DIR / "Dockerfile").read_text()
    compose = (REPO_DIR / "docker-compose.yml").read_text()

    assert "PORTAL_ENV=production" in dockerfile.replace(" ", "")
    assert "PORTAL_ENV: dev" in compose  # the local stack says so explicitly


# ---------------------------------------------------------------------------
# Numbers whose 0 (or a negative) silently turns delivery or ingest off (approvals.E043)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seconds", ["0", "-30"])
def test_a_callback_lease_of_no_seconds_fails_the_check_because_no_callback_would_ever_be_sent(tmp_path, seconds):
    """The claim's lease ends CALLBACK_STALE_SECONDS after it is taken: at 0 it has ended before the
    send, which is then skipped as lease lost, every time."""
    result = check_deploy(production_env(tmp_path, CALLBACK_STALE_SECONDS=seconds))

    assert result.returncode != 0
    assert "approvals.E043" in result.stderr
    assert f"CALLBACK_STALE_SECONDS is {seconds}: it must be at least 1" in result.stderr


def test_the_worker_refuses_to_start_with_a_callback_lease_of_no_seconds(tmp_path):
    # The worker is the process it breaks, and it runs no system checks (as for a development key).
    env = production_env(tmp_path, CALLBACK_STALE_SECONDS="0", CELERY_BROKER_URL="memory://")

    result = run_python(env, "-m", "celery", "-A", "portal", "worker", "--concurrency", "1", "--loglevel", "WARNING")

    assert result.returncode != 0
    assert "Refusing to start" in result.stderr and "CALLBACK_STALE_SECONDS is 0" in result.stderr


def test_a_callback_lease_of_one_second_passes_the_check(tmp_path):
    result = check_deploy(production_env(tmp_path, CALLBACK_STALE_SECONDS="1"))  # the e2e tests use 2

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLBACK_STALE_SECONDS", -1),
        ("CALLBACK_SWEEP_SECONDS", 0.0),
        ("HEARTBEAT_SWEEP_SECONDS", -30.0),
        ("TOKEN_ERASE_SWEEP_SECONDS", 0.0),
        ("FOLLOW_UP_SWEEP_SECONDS", 0.0),
        ("APPROVAL_MAX_MESSAGE_BYTES", 0),
        ("APPROVAL_CONSUMER_WAIT_SECONDS", -1),
        ("APPROVAL_CONSUMER_WAIT_SECONDS", 21),
        ("APPROVAL_CONSUMER_VISIBILITY_TIMEOUT", 0),
        ("APPROVAL_CONSUMER_VISIBILITY_TIMEOUT", 43201),
        ("DECISION_LINK_TTL_SECONDS", 0),
        ("SLACK_BIND_LINK_TTL_SECONDS", -1),
        ("SLACK_SSO_MAX_AGE_SECONDS", 0),
        ("READYZ_CACHE_SECONDS", 0.0),
        ("READYZ_CACHE_SECONDS", 61.0),
        ("API_AUDIT_EXPORT_LIMIT", 0),
        ("API_AUDIT_EXPORT_LIMIT", -100),
        ("AWS_CONNECT_TIMEOUT", 0.0),
        ("AWS_READ_TIMEOUT", -1.0),
        ("AWS_PROBE_TIMEOUT", 0.0),
        ("READYZ_TIMEOUT_SECONDS", 0.0),
        ("OIDC_TIMEOUT", 0.0),
        ("SLACK_TIMEOUT", -5.0),
        ("EMAIL_TIMEOUT", 0.0),
        ("READYZ_CONSUMER_MAX_AGE_SECONDS", 0),
        ("OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS", 0),
        ("SESSION_COOKIE_AGE", -1),
        ("API_TOKEN_LEEWAY_SECONDS", -60),
        ("API_TOKEN_LEEWAY_SECONDS", 301),
        ("API_JWKS_CACHE_SECONDS", 0),
        ("API_JWKS_REFETCH_SECONDS", 0),
        ("NOTIFICATION_MAX_ATTEMPTS", 0),
        ("NOTIFICATION_RETRY_BACKOFF_SECONDS", -1),
        ("NOTIFICATION_RETRY_BACKOFF_MAX_SECONDS", 0),
        ("API_IDEMPOTENCY_KEY_HOURS", 0),
        ("API_IDEMPOTENCY_KEY_HOURS", -24),
        ("SECURE_HSTS_SECONDS", -1),
    ],
)
def test_a_number_that_would_silently_stop_delivery_or_ingest_fails_the_check(settings, name, value):
    from approvals.checks import bounded_settings_check

    setattr(settings, name, value)

    [error] = bounded_settings_check(None)

    assert error.id == "approvals.E043"
    assert error.msg.startswith(f"{name} is {value}: it must be ")


@pytest.mark.parametrize(
    ("scope", "rate"),
    [
        ("user", "0/minute"),
        ("service_account", "-5/minute"),
        ("user", "600/fortnight"),
        ("service_account", "600 per minute"),
        ("user", ""),
    ],
)
def test_an_api_rate_that_would_refuse_or_break_every_call_fails_the_check(settings, scope, rate):
    from approvals.checks import bounded_settings_check

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {**rates, scope: rate}}

    [error] = bounded_settings_check(None)

    assert error.id == "approvals.E043"
    assert error.msg.startswith(f"API_THROTTLE_{scope.upper()} is {rate!r}: it must be ")


def test_the_defaults_and_the_edges_of_each_range_pass_the_check(settings):
    from approvals.checks import bounded_settings_check

    assert bounded_settings_check(None) == []
    settings.CALLBACK_STALE_SECONDS = 1
    settings.APPROVAL_CONSUMER_WAIT_SECONDS = 0  # short polling: allowed by SQS
    settings.APPROVAL_CONSUMER_VISIBILITY_TIMEOUT = 43200
    settings.READYZ_CACHE_SECONDS = 1
    assert bounded_settings_check(None) == []
    settings.APPROVAL_CONSUMER_WAIT_SECONDS = 20
    settings.READYZ_CACHE_SECONDS = 60
    assert bounded_settings_check(None) == []
    settings.API_AUDIT_EXPORT_LIMIT = 1
    settings.API_TOKEN_LEEWAY_SECONDS = 0
    settings.AWS_CONNECT_TIMEOUT = settings.OIDC_TIMEOUT = settings.EMAIL_TIMEOUT = 0.5
    assert bounded_settings_check(None) == []
    settings.API_TOKEN_LEEWAY_SECONDS = 300
    assert bounded_settings_check(None) == []
    rates = {"user": "1/second", "service_account": "100000/day"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    assert bounded_settings_check(None) == []


def test_an_audit_export_limit_of_zero_fails_check_deploy_because_every_export_would_be_empty(tmp_path):
    result = check_deploy(production_env(tmp_path, API_AUDIT_EXPORT_LIMIT="0"))

    assert result.returncode != 0
    assert "approvals.E043" in result.stderr
    assert "API_AUDIT_EXPORT_LIMIT is 0: it must be at least 1" in result.stderr


def test_a_negative_hsts_age_is_sent_as_is_and_passes_djangos_own_check_which_is_why_e043_refuses_it(tmp_path):
    # Browsers ignore a Strict-Transport-Security whose max-age is no delta-seconds (RFC 6797):
    # HSTS is off, and Django's security.W004 looks only for 0.
    from django.test import Client, override_settings

    with override_settings(SECURE_HSTS_SECONDS=-1, SECURE_SSL_REDIRECT=False):
        response = Client().get("/healthz", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=-1")

    result = check_deploy(production_env(tmp_path, SECURE_HSTS_SECONDS="-1"))
    assert "?: (security.W004)" not in result.stderr  # Django says nothing of it
    assert "SECURE_HSTS_SECONDS is -1: it must be at least 0" in result.stderr


def test_the_worker_refuses_to_start_with_a_timeout_of_no_seconds_for_aws(tmp_path):
    # Every boto3 client would raise ValueError as it is made: nothing ingested, no callback sent.
    env = production_env(tmp_path, AWS_CONNECT_TIMEOUT="0", CELERY_BROKER_URL="memory://")

    result = run_python(env, "-m", "celery", "-A", "portal", "worker", "--concurrency", "1", "--loglevel", "WARNING")

    assert result.returncode != 0
    assert "Refusing to start" in result.stderr and "AWS_CONNECT_TIMEOUT is 0.0" in result.stderr
