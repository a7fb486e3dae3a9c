"""What the scenarios share: percentiles, contract-shaped messages, users, sessions, bulk rows.

Imported after Django is set up (bench/run.py does that first).
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta

ACCOUNT = "123456789012"
REGION = "us-east-1"
MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:bench-flow"
APPROVER_EMAIL = "bench-approver@example.com"
REQUESTER_EMAIL = "bench-requester@example.com"
APPROVER_GROUP = "bench-approvers"
ISSUER = "https://sso.bench.example.com"
# A 32-character CSRF secret used as both cookie and form field (Django accepts the unmasked form).
CSRF_SECRET = "benchbenchbenchbenchbenchbench12"  # noqa: S105 - not a secret: a test double


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------
def percentile(sorted_values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize_ms(values_ms: list[float]) -> dict:
    values = sorted(values_ms)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.50), 2),
        "p95_ms": round(percentile(values, 0.95), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
        "max_ms": round(values[-1], 2),
        "mean_ms": round(sum(values) / len(values), 2),
    }


@dataclass
class Row:
    """One line of the results table (and of results.json)."""

    scenario: str
    variant: str
    n: int = 0
    latency: dict = field(default_factory=dict)  # summarize_ms(...)
    throughput: float | None = None  # per second
    throughput_unit: str = "/s"
    rss_worker: dict | None = None
    rss_web: dict | None = None
    ratio: float | None = None
    goal: str = ""
    passed: bool | None = None  # None: no goal, or a baseline row
    notes: str = ""
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Messages: what Step Functions sends, with real-format task tokens
# ---------------------------------------------------------------------------
def real_format_token(length: int = 1000) -> str:
    """An opaque token shaped like AWS's (base64-ish, ~1,000 chars), unlike moto's 36-char UUIDs."""
    raw = base64.b64encode(os.urandom(length)).decode()
    return ("AQCEAAAAKgAAAAMAAAAAAAAAA" + raw)[:length]


def message_body(token: str, number: int, *, run: str) -> str:
    """A rich contract message, as deploy/state-machine.asl.json's WaitForApproval state sends it."""
    execution = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:bench-flow:{run}-{number}"
    return json.dumps(
        {
            "taskToken": token,
            "title": f"Approve order {number} (EUR {number % 9000 + 100},00)",
            "approvers": {"users": [APPROVER_EMAIL], "groups": [APPROVER_GROUP]},
            "requester": REQUESTER_EMAIL,
            "details": {
                "order": {"id": number, "total": {"amount": f"{number % 9000 + 100}.00", "currency": "EUR"}},
                "supplier": f"Supplier {number % 97} GmbH",
                "lines": [{"item": "Laptop", "qty": 2}, {"item": "Dock", "qty": 2}],
            },
            "timeoutSeconds": 86400,
            "heartbeatSeconds": 3600,
            "execution": execution,
            "stateMachine": MACHINE_ARN,
            "state": "WaitForApproval",
        }
    )


# ---------------------------------------------------------------------------
# People and their sessions
# ---------------------------------------------------------------------------
def ensure_user(email: str, *, groups: list[str] | None = None, sub: str | None = None):
    """An SSO user as the OIDC backend creates them (approver access to the admin included)."""
    from approvals.auth import PortalOIDCBackend

    backend = PortalOIDCBackend()
    claims = {
        "iss": ISSUER,
        "sub": sub or email,
        "email": email,
        "email_verified": True,
        "groups": groups or [],
        "name": email.split("@")[0],
    }
    existing = backend.filter_users_by_claims(claims).first()
    return backend.update_user(existing, claims) if existing else backend.create_user(claims)


def session_cookies(user) -> dict:
    """Cookies of a signed-in browser: a database session, as after the OIDC callback."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    session = client.session
    session["oidc_id_token_expiration"] = time.time() + 24 * 3600  # no IdP round trip while benching
    session.save()
    return {settings.SESSION_COOKIE_NAME: session.session_key, settings.CSRF_COOKIE_NAME: CSRF_SECRET}


def signed_in_session(user, base_url: str):
    import requests

    session = requests.Session()
    for name, value in session_cookies(user).items():
        session.cookies.set(name, value, domain="127.0.0.1", path="/")
    session.headers["Referer"] = f"{base_url}/"
    return session


def signed_in_client(user):
    """Django's test client with the session of a signed-in browser (the page benches' client)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    session = client.session
    session["oidc_id_token_expiration"] = time.time() + 24 * 3600  # no IdP round trip while benching
    session.save()
    return client


# ---------------------------------------------------------------------------
# Pages rendered in-process (the inbox, admin and scaling benches)
# ---------------------------------------------------------------------------
def setup_page_bench(database_url: str) -> None:
    """For a page bench run as its own script: its PostgreSQL database (created when missing),
    Django set up and migrated, static file URLs without a collectstatic manifest."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')

    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import override_settings

    override_settings(
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ).enable()
    call_command("migrate", verbosity=0)


def reset_request_tables() -> None:
    """Every request and what hangs off it (assignments, votes, callbacks, audit events) gone."""
    from django.db import connection

    from approvals.models import ApprovalRequest, AuditEvent

    tables = ", ".join(m._meta.db_table for m in (AuditEvent, ApprovalRequest))
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")  # noqa: S608 - our own table names


def page_timings(client, url: str, repeat: int) -> dict:
    """One page's server time over `repeat` GETs after three warm-ups, and its number of SQL queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code}")
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    # Read now: every request's request_started signal empties the connection's query log.
    query_count = len(queries.captured_queries)
    timings = []
    for _ in range(repeat):
        before = time.perf_counter()
        response = client.get(url)
        timings.append(1000 * (time.perf_counter() - before))
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code}")
    return {**summarize_ms(timings), "queries": query_count}


def vacuum_analyze(*tables: str) -> None:
    """Fresh planner statistics after bulk rows, as autovacuum would give them in time."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {', '.join(tables)}")


# ---------------------------------------------------------------------------
# Rows in bulk (fixtures for the scenarios that don't measure ingestion)
# ---------------------------------------------------------------------------
def votes_for_decided(rows) -> None:
    """A Vote for each decided row, as approval_decide writes one: the decided tab, separation of
    duties and the callback's identity check read votes, not decided_by."""
    from approvals.models import RequestStatus, Vote

    Vote.objects.bulk_create(
        Vote(
            request=row,
            user=row.decided_by,
            approve=row.status != RequestStatus.REJECTED,
            created_at=row.decided_at or row.received_at,
        )
        for row in rows
        if row.decided_by is not None
    )


def bulk_requests(
    count: int,
    *,
    assignee_emails: list[str],
    status: str = "pending",
    decided_by=None,
    token_length: int = 1000,
    run: str = "bulk",
    batch: int = 2000,
) -> list[int]:
    """Pending (or decided) requests with real-format encrypted tokens, one user assignment each."""
    from django.utils import timezone

    from approvals import tokens
    from approvals.models import ApprovalRequest, Assignment

    ids: list[int] = []
    now = timezone.now()
    for low in range(0, count, batch):
        rows = []
        for n in range(low, min(count, low + batch)):
            token = real_format_token(token_length)
            rows.append(
                ApprovalRequest(
                    title=f"Approve order {n} ({run})",
                    details={"order": {"id": n, "total": {"amount": f"{n % 9000}.00", "currency": "EUR"}}},
                    requester_email=REQUESTER_EMAIL,
                    execution_arn=f"arn:aws:states:{REGION}:{ACCOUNT}:execution:bench-flow:{run}-{n}",
                    state_machine_arn=MACHINE_ARN,
                    state_name="WaitForApproval",
                    status=status,
                    deadline=now + timedelta(days=1),
                    timeout_seconds=86400,
                    token_ciphertext=tokens.encrypt_token(token),
                    token_fingerprint=tokens.fingerprint_token(token),
                    received_at=now,
                    decided_by=decided_by,
                    decided_at=now if decided_by else None,
                )
            )
        created = ApprovalRequest.objects.bulk_create(rows)
        Assignment.objects.bulk_create(
            Assignment(request=row, kind=Assignment.Kind.USER, value=assignee_emails[(low + i) % len(assignee_emails)])
            for i, row in enumerate(created)
        )
        votes_for_decided(created)
        ids += [row.pk for row in created]
    return ids


def unique_run_id() -> str:
    return f"{time.strftime('%H%M%S')}-{secrets.token_hex(3)}"
