"""Observability under hostile input: what a queue sender or a stranger can do to metrics and logs.

Anyone who may send to the approval queue writes the whole message body (its state machine ARN
too), and anyone who reaches the web's port may call /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import json
import logging

import pytest

from approvals import services
from approvals.auth import PortalOIDCBackend
from approvals.integrations import aws as gateway
from approvals.models import ApprovalSource
from approvals.ops import metrics
from portal.logging import JsonFormatter, PlainFormatter
from tests.conftest import free_port
from tests.test_observability import moto_recording, own_moto, ready_settings, sqs_actions  # noqa: F401 - fixtures


def label_values(metric, label: str) -> set[str]:
    return {sample.labels[label] for family in metric.collect() for sample in family.samples if label in sample.labels}


@pytest.fixture
def state_machine_labels():
    """The process's set of labelled names, restored afterwards (later tests label their own)."""
    labels = metrics._state_machine_labels
    kept = set(labels._seen)
    yield
    with labels._lock:
        labels._seen.clear()
        labels._seen.update(kept)


@pytest.mark.django_db
@pytest.mark.usefixtures("state_machine_labels")
def test_a_sender_varying_the_state_machine_name_cannot_grow_the_ingested_series_without_bound(
    django_capture_on_commit_callbacks,
):
    limit = metrics.MAX_STATE_MACHINE_LABELS
    with django_capture_on_commit_callbacks(execute=True):
        for index in range(limit + 50):
            metrics.request_ingested(
                state_machine_arn=f"arn:aws:states:eu-west-1:123456789012:stateMachine:hostile-{index}"
            )

    values = label_values(metrics.REQUESTS_INGESTED, "state_machine")
    assert len(values) <= limit + 1
    assert "other" in values
    # A name seen before the limit was reached keeps its own series.
    with django_capture_on_commit_callbacks(execute=True):
        metrics.request_ingested(state_machine_arn="arn:aws:states:eu-west-1:123456789012:stateMachine:hostile-0")
    assert metrics.REQUESTS_INGESTED.labels("hostile-0")._value.get() >= 2


# ---------------------------------------------------------------------------
# Logs: a value from outside cannot forge a line
# ---------------------------------------------------------------------------
FORGED = '{"level": "ERROR", "logger": "approvals.forged", "message": "forged"}'
# Each of these ends a line for some reader: \n and \r for every log shipper, the rest for
# Python's str.splitlines() and other Unicode-aware ones.
LINE_BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.django_db
@pytest.mark.parametrize("formatter", [PlainFormatter(), JsonFormatter()], ids=["plain", "json"])
@pytest.mark.parametrize("line_break", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_an_email_from_the_idp_cannot_forge_a_log_line(formatter, line_break, caplog):
    claims = {"iss": "https://idp.example", "sub": "s-1", "email": f"x{line_break}{FORGED}@example.com"}
    backend = PortalOIDCBackend()
    assert backend.verify_claims({**claims, "email_verified": True})  # the sign-in takes it as it is
    user = backend.create_user(claims)

    with caplog.at_level(logging.INFO, logger="approvals"):
        services.refusal_record(user=user, request=None, code="not_assignee", attempted="approve")

    [record] = [r for r in caplog.records if r.getMessage().startswith("refused approve for")]
    lines = formatter.format(record).splitlines()
    assert len(lines) == 1, lines
    if isinstance(formatter, JsonFormatter):
        assert json.loads(lines[0])["message"] == record.getMessage()
    else:
        assert FORGED.lower() in lines[0]  # shown, escaped, not dropped


# ---------------------------------------------------------------------------
# /healthz, /readyz, /metrics: what a caller who may not scrape learns
# ---------------------------------------------------------------------------
def test_a_stranger_learns_verdicts_but_no_url_account_or_error_text(client, ready_settings):  # noqa: F811
    """Passed before any change here: /readyz shows a caller who may not scrape only each check's
    verdict (and the details of those that pass), /metrics refuses it (docs/operations.md)."""
    ready_settings.METRICS_ALLOWED_IPS = []
    ready_settings.METRICS_TOKEN = "the-scrapers-token"
    ApprovalSource.objects.create(
        name="payments-prod",
        queue_url="https://sqs.eu-west-1.amazonaws.com/210987654321/payments-approvals",
        region="eu-west-1",
        state="failing",
        last_error="AccessDenied: arn:aws:iam::210987654321:role/portal is not authorized",
    )
    dead_port = free_port()
    ready_settings.CELERY_BROKER_URL = f"redis://:broker-password@127.0.0.1:{dead_port}/0"
    ready_settings.APPROVAL_QUEUE_URL = f"http://127.0.0.1:{dead_port}/123456789012/approvals"
    ready_settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{dead_port}"
    gateway._client.cache_clear()

    texts = {}
    for path in ("/healthz", "/readyz", "/metrics"):
        response = client.get(path)
        texts[path] = (response.status_code, response.content.decode())
    scraper = client.get("/readyz", headers={"Authorization": "Bearer the-scrapers-token"}).content.decode()

    assert texts["/healthz"] == (200, '{"status": "ok"}')
    assert texts["/metrics"][0] == 403
    status, body = texts["/readyz"]
    assert status == 503
    for secret in ("123456789012", "210987654321", "payments", "broker-password", str(dead_port), "AccessDenied"):
        assert secret not in body, secret
        assert secret not in texts["/metrics"][1]
    assert "210987654321" in scraper  # the scraper sees why (else this test proves nothing)


def test_a_reused_readiness_result_still_shows_details_to_the_scraper_only(client, ready_settings, moto_recording):  # noqa: F811
    """The stranger's call runs the checks; the scraper's call reuses that run and still sees why."""
    ready_settings.READYZ_CACHE_SECONDS = 60
    ready_settings.METRICS_ALLOWED_IPS = []
    ready_settings.METRICS_TOKEN = "the-scrapers-token"
    ready_settings.CELERY_BROKER_URL = f"redis://:broker-password@127.0.0.1:{free_port()}/0"

    stranger = client.get("/readyz")
    scraper = client.get("/readyz", headers={"Authorization": "Bearer the-scrapers-token"})

    assert stranger.status_code == scraper.status_code == 503
    assert stranger.json()["failed"] == scraper.json()["failed"] == ["broker"]
    assert "detail" not in stranger.json()["checks"]["broker"]
    assert "refused" in scraper.json()["checks"]["broker"]["detail"].lower()
    assert "broker-password" not in scraper.content.decode()
    assert sqs_actions(moto_recording).count("GetQueueAttributes") == 1  # one run for both


def test_http_methods_are_labelled_as_themselves_and_a_made_up_one_as_other(client, db):
    """SCIM provisions with PUT, PATCH and DELETE: an operator reading the `method` label sees them
    as such; whatever else a stranger sends counts as "other", so the series stay bounded."""
    route = "scim/v2/Users/<str:scim_id>"

    def counted(method: str, *, path: str = route) -> float:
        labels = {"route": path, "method": method, "status": "4xx"}
        return metrics.REGISTRY.get_sample_value("approvals_http_request_duration_seconds_count", labels) or 0.0

    methods = ("PUT", "PATCH", "DELETE")
    before = {method: counted(method) for method in (*methods, "other")}
    for method in (*methods, "BREW", "X-" + "A" * 40):
        response = client.generic(method, "/scim/v2/Users/2819c223", "{}", content_type="application/scim+json")
        assert 400 <= response.status_code < 500  # no SCIM token

    moved = {method: counted(method) - before[method] for method in before}
    assert moved == {"PUT": 1, "PATCH": 1, "DELETE": 1, "other": 2}
