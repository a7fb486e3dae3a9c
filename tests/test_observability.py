"""Operators can see it: Prometheus metrics, health checks, structured logs without secrets, alerts.

Real parts: PostgreSQL, the moto server (the session's, and for readiness a private one this
module stops), Redis as the broker (and a closed port as a broken one), gunicorn and a Celery
worker (portal_stack) scraped over HTTP after a real SSO approval, Prometheus' promtool.
"""

import base64
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import yaml
from django.contrib.auth.models import Group
from django.db import connections
from django.test import Client
from django.utils import timezone
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from approvals import services, tasks
from approvals.contract import parse_message
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, Callback, CallbackStatus, ConsumerStatus, RequestStatus, User, Vote
from approvals.ops import health, metrics
from approvals.redaction import TokenRedactingFilter
from portal.logging import JsonFormatter, LogContextFilter, PlainFormatter, clear_log_context, log_context
from tests.conftest import REPO_DIR, Process, free_port, venv_bin, wait_for_http
from tests.support import sso_login, wait_for, wait_for_execution_end
from tests.test_e2e import decide, start_and_wait_for_request
from worker.consumer import consume_once

ALERTS = REPO_DIR / "deploy" / "prometheus-alerts.yml"
DASHBOARD = REPO_DIR / "deploy" / "grafana-dashboard.json"
# What a real AWS task token looks like: opaque base64, here 1,368 characters.
REAL_TOKEN = "AQCYAAAAKgAAAAMAAAAAAAAAA" + base64.b64encode(os.urandom(1000)).decode()


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(url: str, **kwargs) -> dict:
    response = requests.get(url, timeout=10, **kwargs)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return samples(response.text)


def message_body(token: str, **fields) -> str:
    return json.dumps(
        {
            "taskToken": token,
            "title": "Approve order 77",
            "approvers": {"users": ["alice@example.com"]},
            "requester": "bob@example.com",
            "stateMachine": "arn:aws:states:us-east-1:123456789012:stateMachine:observability-test",
            **fields,
        }
    )


@pytest.fixture(autouse=True)
def fresh_log_context():
    clear_log_context()
    yield
    clear_log_context()


def signed_in(user: User, **kwargs) -> Client:
    """A session as after an SSO sign-in (the OIDC refresh would otherwise send it to the IdP)."""
    client = Client(**kwargs)
    client.force_login(user)
    session = client.session
    session["oidc_id_token_expiration"] = time.time() + 3600
    session.save()
    return client


@pytest.fixture
def alice(db) -> User:
    return User.objects.create(
        username="alice", email="alice@example.com", oidc_sub="sub-alice", oidc_issuer="https://sso.example.com/o"
    )


# ---------------------------------------------------------------------------
# /healthz and /metrics in-process
# ---------------------------------------------------------------------------
def test_healthz_answers_without_a_session_and_sets_a_request_id(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_a_well_formed_request_id_from_the_proxy_is_kept_and_a_long_opaque_one_is_not(client):
    kept = client.get("/healthz", headers={"X-Request-ID": "edge-1234-abcd"})
    replaced = client.get("/healthz", headers={"X-Request-ID": REAL_TOKEN})

    assert kept.headers["X-Request-ID"] == "edge-1234-abcd"
    assert replaced.headers["X-Request-ID"] != REAL_TOKEN
    assert len(replaced.headers["X-Request-ID"]) == 32


@pytest.mark.django_db
def test_metrics_answer_only_the_allow_list_or_the_bearer_token(client, settings):
    settings.METRICS_TOKEN = "scrape-secret-42"
    settings.METRICS_ALLOWED_IPS = ["10.1.0.0/16"]

    outsider = client.get("/metrics", REMOTE_ADDR="192.0.2.7")
    wrong_token = client.get("/metrics", REMOTE_ADDR="192.0.2.7", headers={"Authorization": "Bearer nope"})
    with_token = client.get("/metrics", REMOTE_ADDR="192.0.2.7", headers={"Authorization": "Bearer scrape-secret-42"})
    listed = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    mapped = client.get("/metrics", REMOTE_ADDR="::ffff:10.1.9.9")

    assert outsider.status_code == 403 and wrong_token.status_code == 403
    assert b"approvals_pending_requests" not in outsider.content
    for allowed in (with_token, listed, mapped):
        assert allowed.status_code == 200
        assert b"approvals_pending_requests" in allowed.content


@pytest.mark.django_db
def test_metrics_are_closed_to_everyone_by_default_in_production_settings(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = []

    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_the_state_gauges_read_pending_requests_callbacks_and_consumers_at_scrape_time(
    client, alice, aws, django_capture_on_commit_callbacks
):
    metrics.queue_depth_cache.clear()
    for number in range(3):
        body = message_body(str(uuid.uuid4()), title=f"Order {number}", timeoutSeconds=3600)
        services.approval_request_ingest(message=parse_message(body), sqs_message_id=f"msg-{number}")
    oldest = ApprovalRequest.objects.order_by("received_at").first()
    ApprovalRequest.objects.filter(pk=oldest.pk).update(received_at=timezone.now() - timedelta(hours=2))
    decided = services.approval_decide(public_id=oldest.public_id, user=alice, approve=True)
    Callback.objects.filter(request=decided).update(status=CallbackStatus.FAILED, error_code="InvalidToken")
    services.consumer_poll_recorded(name="host:1", handled=0)
    gateway.send_message(queue_url=aws.APPROVAL_QUEUE_URL, body="{}")

    scraped = samples(client.get("/metrics").content.decode())

    assert value(scraped, "approvals_pending_requests") == 2
    assert 0 < value(scraped, "approvals_oldest_pending_age_seconds") < 120
    assert 3000 < value(scraped, "approvals_pending_nearest_deadline_seconds") <= 3600
    assert value(scraped, "approvals_callbacks_by_status", status="failed") == 1
    assert value(scraped, "approvals_consumers_registered") == 1
    assert 0 <= value(scraped, "approvals_consumer_last_poll_age_seconds") < 60
    assert value(scraped, "approvals_state_database_up") == 1
    assert value(scraped, "approvals_queue_stats_up") == 1
    assert value(scraped, "approvals_queue_messages", queue="approvals", state="visible") == 1
    assert value(scraped, "approvals_queue_messages", queue="dead_letter", state="visible") == 0


def test_counters_move_once_the_transaction_commits(alice, django_capture_on_commit_callbacks):
    def current(name, **labels):
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before_ingested = current("approvals_requests_ingested_total", state_machine="observability-test")
    before_approved = current("approvals_decisions_total", outcome="approved")
    before_hist = current("approvals_time_to_decision_seconds_count", outcome="approved")
    with django_capture_on_commit_callbacks(execute=True):
        request, _ = services.approval_request_ingest(message=parse_message(message_body(str(uuid.uuid4()))))
    with django_capture_on_commit_callbacks(execute=False):
        services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    # Not committed (the callbacks were not run): nothing counted yet.
    assert current("approvals_decisions_total", outcome="approved") == before_approved

    ApprovalRequest.objects.filter(pk=request.pk).update(status=RequestStatus.PENDING, decided_by=None)
    Callback.objects.filter(request=request).delete()
    Vote.objects.filter(request=request).delete()
    with django_capture_on_commit_callbacks(execute=True):
        services.approval_decide(public_id=request.public_id, user=alice, approve=True)

    assert current("approvals_requests_ingested_total", state_machine="observability-test") == before_ingested + 1
    assert current("approvals_decisions_total", outcome="approved") == before_approved + 1
    assert current("approvals_time_to_decision_seconds_count", outcome="approved") == before_hist + 1


def test_no_metric_has_a_sample_before_it_is_first_recorded():
    """So the worker can pick its multiprocess directory after Django imported the metrics."""
    defined = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(defined) >= 12
    for metric in defined:
        assert metric._labelnames, f"{metric._name} has no labels: it would write a sample at import"


def test_callback_error_labels_stay_bounded():
    assert metrics.error_label("InvalidToken") == "InvalidToken"
    assert metrics.error_label("EndpointConnectionError") == "connection"
    assert metrics.error_label("SomethingNobodyExpected") == "other"
    assert metrics.error_label("") == "none"
    assert metrics.state_machine_label("arn:aws:states:eu-west-1:1:stateMachine:orders") == "orders"
    assert metrics.state_machine_label("") == "unknown"


# ---------------------------------------------------------------------------
# /readyz: every dependency down in turn
# ---------------------------------------------------------------------------
@pytest.fixture
def own_moto(log_dir):
    """A moto server of this test's own, which the test may stop."""
    port = free_port()
    process = Process(
        f"moto-readyz-{port}",
        [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        # Its request log (moto's recorder, off until a test starts it) counts what the portal sent.
        {**os.environ, "MOTO_PORT": str(port), "MOTO_RECORDER_FILEPATH": str(log_dir / f"moto-readyz-{port}.jsonl")},
        log_dir,
    )
    wait_for_http(f"http://127.0.0.1:{port}/moto-api/", process.popen, process.log)
    yield process, f"http://127.0.0.1:{port}"
    process.stop()


@pytest.fixture
def ready_settings(settings, own_moto, db):
    _, url = own_moto
    settings.AWS_ENDPOINT_URL = url
    settings.AWS_ACCESS_KEY_ID = settings.AWS_SECRET_ACCESS_KEY = "testing"
    settings.READYZ_TIMEOUT_SECONDS = 3
    settings.AWS_PROBE_TIMEOUT = 1
    # Each call runs the checks (tests that reuse the result set their own window).
    settings.READYZ_CACHE_SECONDS = 0
    gateway._client.cache_clear()
    settings.APPROVAL_QUEUE_URL = gateway.ensure_queue(name="readyz", visibility_timeout=30, max_receive_count=3)
    services.consumer_poll_recorded(name="worker-host:42", handled=0)
    health.last_readiness.clear()
    yield settings
    health.last_readiness.clear()
    gateway._client.cache_clear()


def readyz(client) -> tuple[int, dict]:
    response = client.get("/readyz")
    return response.status_code, response.json()


def test_readyz_is_200_when_database_broker_aws_and_a_consumer_answer(client, ready_settings):
    status, body = readyz(client)

    assert status == 200, body
    assert body["status"] == "ok" and body["failed"] == []
    assert set(body["checks"]) == {"database", "broker", "aws", "consumer"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["consumer"]["last_poll_age_seconds"] < 60


def test_readyz_names_the_broker_when_it_is_unreachable(client, ready_settings):
    ready_settings.CELERY_BROKER_URL = f"redis://:hunter2@127.0.0.1:{free_port()}/0"

    status, body = readyz(client)

    assert status == 503
    assert body["failed"] == ["broker"]
    assert "refused" in body["checks"]["broker"]["detail"].lower()
    assert "hunter2" not in json.dumps(body)
    assert body["checks"]["database"]["ok"] and body["checks"]["aws"]["ok"]


def test_readyz_names_aws_once_the_moto_server_is_stopped(client, ready_settings, own_moto):
    process, _ = own_moto
    assert readyz(client)[0] == 200

    process.stop()
    started = time.monotonic()
    status, body = readyz(client)

    assert status == 503
    assert body["failed"] == ["aws"]
    assert body["checks"]["aws"]["ok"] is False and body["checks"]["aws"]["detail"]
    assert time.monotonic() - started < 10


def test_readyz_names_the_consumer_when_it_stopped_polling_or_never_did(client, ready_settings):
    ConsumerStatus.objects.update(last_poll_at=timezone.now() - timedelta(minutes=10))
    stale_status, stale = readyz(client)
    ConsumerStatus.objects.all().delete()
    none_status, none = readyz(client)

    assert stale_status == 503 and stale["failed"] == ["consumer"]
    assert "no queue consumer polled in the last 120 s" in stale["checks"]["consumer"]["detail"]
    assert none_status == 503 and none["failed"] == ["consumer"]
    assert "no queue consumer has ever polled" in none["checks"]["consumer"]["detail"]


def test_readyz_reports_a_check_that_is_not_required_without_failing(client, ready_settings):
    ready_settings.READYZ_REQUIRED_CHECKS = ["database"]
    ConsumerStatus.objects.all().delete()

    status, body = readyz(client)

    assert status == 200
    assert body["checks"]["consumer"] == {**body["checks"]["consumer"], "ok": False, "required": False}


def test_readyz_hides_error_details_from_callers_that_may_not_scrape(client, ready_settings):
    ready_settings.METRICS_ALLOWED_IPS = []
    ready_settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"

    status, body = readyz(client)

    assert status == 503 and body["failed"] == ["broker"]
    assert "detail" not in body["checks"]["broker"]


def test_a_web_process_with_every_dependency_down_is_alive_but_not_ready(log_dir, tmp_path):
    """The real thing: gunicorn with the database, broker and AWS on closed ports."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/nothing",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "APPROVAL_QUEUE_URL": f"http://127.0.0.1:{free_port()}/123456789012/gone",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "READYZ_TIMEOUT_SECONDS": "3",
        "AWS_PROBE_TIMEOUT": "1",
        "LOG_FORMAT": "json",
    }
    web = Process(
        f"web-down-{port}",
        [venv_bin("gunicorn"), "portal.wsgi:application", "--bind", f"127.0.0.1:{port}", "--no-control-socket"],
        env,
        log_dir,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", web.popen, web.log)
        alive = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=15)
    finally:
        web.stop()

    assert alive.status_code == 200
    assert ready.status_code == 503
    body = ready.json()
    assert body["failed"] == ["database", "broker", "aws", "consumer"]
    assert "connection" in body["checks"]["database"]["detail"].lower()
    # The web's log lines are JSON, gunicorn's own included.
    parsed = [json.loads(line) for line in web.log.read_text().splitlines() if line.startswith("{")]
    assert any(entry["logger"] == "gunicorn.access" and "/readyz" in entry["message"] for entry in parsed)


# ---------------------------------------------------------------------------
# Logs: a real-format token through ingest, decision, callback failure and a crashing view
# ---------------------------------------------------------------------------
@pytest.fixture
def every_log_line():
    """Every stream handler logging has (the ones LOGGING configured, and any other), writing here."""
    buffer = io.StringIO()
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict))]
    swapped = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                swapped.append((handler, handler.setStream(buffer), handler.formatter))
    assert swapped, "no stream handler configured"
    yield buffer, [handler for handler, _, _ in swapped]
    for handler, stream, formatter in swapped:
        handler.setStream(stream)
        handler.setFormatter(formatter)


@pytest.mark.parametrize("log_format", ["plain", "json"])
@pytest.mark.django_db(transaction=True)
def test_a_real_format_token_reaches_no_log_line(log_format, every_log_line, aws, alice, settings, monkeypatch):
    buffer, handlers = every_log_line
    for handler in handlers:
        handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.DEBUG)
    assert any(isinstance(f, TokenRedactingFilter) for handler in root.handlers for f in handler.filters)
    queue = aws.APPROVAL_QUEUE_URL

    # Ingest: one good message, one that breaks the contract (and names the token).
    gateway.send_message(queue_url=queue, body=message_body(REAL_TOKEN))
    gateway.send_message(queue_url=queue, body=message_body(REAL_TOKEN + "x", approvers="not an object"))
    handled = 0
    for _ in range(10):
        handled += consume_once(queue_url=queue, wait_seconds=1, visibility_timeout=30, max_bytes=1024 * 1024)
        if handled >= 2:
            break
    request = ApprovalRequest.objects.get()

    # The decision, then the callback: moto has never heard of this token, so it fails.
    services.approval_decide(public_id=request.public_id, user=alice, approve=True, comment="ok")
    callback = Callback.objects.get(request=request)
    tasks.deliver_callback.apply(args=(callback.pk,))
    callback.refresh_from_db()

    # A view that crashes with the token in its exception (DEBUG on: Django's dev handlers too).
    settings.DEBUG = True

    def crash(public_id):
        raise RuntimeError(f"could not load the request for {REAL_TOKEN}")

    monkeypatch.setattr("approvals.views.requests.selectors.request_detail", crash)
    browser = signed_in(alice, raise_request_exception=False)
    crashed = browser.get(f"/requests/{request.public_id}/")

    text = buffer.getvalue()
    assert callback.status == CallbackStatus.FAILED
    assert crashed.status_code == 500
    # The paths really logged (else the test would prove nothing)...
    for expected in (
        f"ingested approval request {request.public_id}",
        "refused: bad_approvers (field 'approvers' must be",
        f"approval request {request.public_id} approved",
        "refused by Step Functions",
        "Internal Server Error",
        "RuntimeError: could not load the request for [redacted]",
    ):
        assert expected in text, f"{expected!r} not logged:\n{text[-3000:]}"
    # ...and the token is in none of it, whole or in part, raw or JSON-escaped.
    for piece in (REAL_TOKEN, REAL_TOKEN[:64], REAL_TOKEN[-64:], REAL_TOKEN[600:700], json.dumps(REAL_TOKEN)[1:-1]):
        assert piece not in text
    if log_format == "json":
        entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert len(entries) >= 5
        ingested = next(e for e in entries if e["message"].startswith("ingested approval request"))
        assert ingested["message_id"] == request.sqs_message_id
        assert ingested["approval_id"] == str(request.public_id)
        delivery = [e for e in entries if e.get("task") == "worker.tasks.deliver_callback"]
        assert delivery and all(e["approval_id"] == str(request.public_id) for e in delivery)
        assert all(e["message_id"] == request.sqs_message_id and e["callback_id"] == str(callback.pk) for e in delivery)
        crash_entry = next(e for e in entries if e["message"].startswith("Internal Server Error"))
        assert crash_entry["approval_id"] == str(request.public_id) and crash_entry["request_id"]
        assert "[redacted]" in crash_entry["exception"]


def test_the_json_formatter_writes_the_bound_ids_and_nothing_from_extra():
    formatter = JsonFormatter()
    record = logging.LogRecord("approvals.x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.smuggled = REAL_TOKEN
    with log_context(approval_id="8d6c1a9e-0000-4000-8000-000000000001", message_id="m-1"):
        LogContextFilter().filter(record)
    entry = json.loads(formatter.format(record))

    assert entry["message"] == "hello world" and entry["level"] == "INFO" and entry["logger"] == "approvals.x"
    assert entry["approval_id"] == "8d6c1a9e-0000-4000-8000-000000000001" and entry["message_id"] == "m-1"
    assert REAL_TOKEN not in json.dumps(entry)


# ---------------------------------------------------------------------------
# End to end: scrape the web and the worker after a real approval
# ---------------------------------------------------------------------------
METRICS_TOKEN = "e2e-scrape-token"
WORKER_PORT = free_port()


@pytest.mark.e2e
@pytest.mark.portal_env(
    WORKER_METRICS_PORT=str(WORKER_PORT), LOG_FORMAT="json", METRICS_TOKEN=METRICS_TOKEN, METRICS_ALLOWED_IPS=""
)
def test_web_and_worker_metrics_move_after_an_approval_and_logs_follow_it(portal_stack, demo_state_machine):
    web_url = f"{portal_stack['url']}/metrics"
    worker_url = f"http://127.0.0.1:{WORKER_PORT}/metrics"
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert requests.get(web_url, timeout=10).status_code == 403  # no token, no allow-listed address
    wait_for(lambda: _answers(worker_url, auth))
    assert requests.get(worker_url, timeout=10).status_code == 403
    machine = metrics.state_machine_label(demo_state_machine)
    web_before, worker_before = scrape(web_url, headers=auth), scrape(worker_url, headers=auth)

    execution_arn, request = start_and_wait_for_request(demo_state_machine)
    session = sso_login(portal_stack["url"], "alice")
    decide(session, portal_stack["url"], request, "approve", "metrics, please")
    assert wait_for_execution_end(execution_arn)["status"] == "SUCCEEDED"
    wait_for(lambda: Callback.objects.get(request=request).status == CallbackStatus.DELIVERED)

    worker = wait_for(
        lambda: (
            (s := scrape(worker_url, headers=auth))
            and value(s, "approvals_callbacks_total", outcome="delivered", error="none") >= 1
            and s
        )
    )
    web = scrape(web_url, headers=auth)

    def moved(after, before, name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    # The worker: the consumer ingested it, the callback task delivered it.
    assert moved(worker, worker_before, "approvals_requests_ingested_total", state_machine=machine) == 1
    assert moved(worker, worker_before, "approvals_queue_messages_received_total", queue="approvals") >= 1
    assert moved(worker, worker_before, "approvals_callbacks_total", outcome="delivered", error="none") == 1
    assert moved(worker, worker_before, "approvals_callback_latency_seconds_count", kind="success") == 1
    assert value(worker, "approvals_callback_latency_seconds_bucket", kind="success", le="+Inf") >= 1
    # The web: the decision and its time, the HTTP histogram, the state gauges.
    assert moved(web, web_before, "approvals_decisions_total", outcome="approved") == 1
    assert moved(web, web_before, "approvals_time_to_decision_seconds_count", outcome="approved") == 1
    assert value(web, "approvals_time_to_decision_seconds_bucket", outcome="approved", le="300.0") >= 1
    decide_route = "requests/<uuid:public_id>/decide/"
    assert (
        moved(web, web_before, "approvals_http_request_duration_seconds_count", route=decide_route, method="POST",
              status="3xx") == 1
    )  # fmt: skip
    assert value(web, "approvals_state_database_up") == 1 and value(web, "approvals_queue_stats_up") == 1
    assert ("approvals_pending_requests", ()) in web
    # Each family counts only its own: the worker's endpoint has no decisions, the web's no callbacks.
    assert value(worker, "approvals_decisions_total", outcome="approved") == 0
    assert value(web, "approvals_callbacks_total", outcome="delivered", error="none") == 0

    # Multiprocess mode, one directory per family: nothing written outside them.
    environ = Path(f"/proc/{portal_stack['worker'].popen.pid}/environ").read_bytes().split(b"\0")
    base = Path(next(v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")).split(b"=", 1)[1].decode())
    assert sorted(path.name for path in base.iterdir()) == ["web", "worker-celery@" + socket.gethostname()]
    assert list((base / "web").glob("counter_*.db")) and list(base.glob("*/histogram_*.db"))

    ready = requests.get(f"{portal_stack['url']}/readyz", headers=auth, timeout=15)
    assert ready.status_code == 200, ready.text

    # JSON logs follow the approval: SQS message id -> public id (worker), public id (web).
    def entries(process):
        return [json.loads(line) for line in process.output().splitlines() if line.startswith('{"time"')]

    worker_log, web_log = entries(portal_stack["worker"]), entries(portal_stack["web"])
    ingested = [e for e in worker_log if e["message"].startswith(f"ingested approval request {request.public_id}")]
    assert ingested and ingested[0]["message_id"] == request.sqs_message_id
    # (Deliveries queued by earlier in-process tests may run here too: this callback's lines only.)
    callback_id = str(Callback.objects.get(request=request).pk)
    delivered = [e for e in worker_log if e.get("task") == "worker.tasks.deliver_callback"]
    delivered = [e for e in delivered if e.get("callback_id") == callback_id]
    assert delivered and {e["approval_id"] for e in delivered} == {str(request.public_id)}
    assert {e["message_id"] for e in delivered} == {request.sqs_message_id}
    decided = [e for e in web_log if e["message"].startswith(f"approval request {request.public_id} approved")]
    assert decided and decided[0]["approval_id"] == str(request.public_id) and decided[0]["request_id"]
    access = [e for e in web_log if e["logger"] == "gunicorn.access" and "/decide/" in e["message"]]
    assert access and f"request_id={decided[0]['request_id']}" in access[0]["message"]


def _answers(url: str, headers: dict) -> bool:
    try:
        return requests.get(url, headers=headers, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


# ---------------------------------------------------------------------------
# The admin dashboard
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_dashboard_shows_admins_counts_medians_and_failing_callbacks(client, alice):
    now = timezone.now()
    for minutes, approve in ((10, True), (30, True), (50, False)):
        request, _ = services.approval_request_ingest(message=parse_message(message_body(str(uuid.uuid4()))))
        ApprovalRequest.objects.filter(pk=request.pk).update(received_at=now - timedelta(minutes=minutes))
        services.approval_decide(
            public_id=request.public_id, user=alice, approve=approve, comment="" if approve else "no budget"
        )
    failing = Callback.objects.order_by("pk").first()
    Callback.objects.filter(pk=failing.pk).update(
        status=CallbackStatus.FAILED, error_code="TaskTimedOut", last_error="Task Timed Out: 'Provided task ...'"
    )
    admin = User.objects.create(username="carol", email="carol@example.com", is_staff=True, is_superuser=True)

    page = signed_in(admin).get("/admin/dashboard/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-status="approved"><span class="n">2</span>' in html
    assert 'data-status="rejected"><span class="n">1</span>' in html
    # Waits of about 10, 30 and 50 minutes: the median is 30 minutes.
    assert "<strong>observability-test</strong>" in html
    assert re.search(r"<td>(29|30) min</td>\s*<td>3</td>\s*<td>(29|30) min</td>\s*<td>3</td>", html), html
    assert 'class="ops-chart"' in html and "<rect" in html
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None  # no inline script (the CSP forbids it)
    assert "TaskTimedOut" in html and failing.request.title in html


@pytest.mark.django_db
def test_the_dashboard_is_not_for_approvers_or_anonymous_visitors(client):
    approver = User.objects.create(username="dave", email="dave@example.com", is_staff=True)
    approver.groups.add(Group.objects.get_or_create(name="portal approver access")[0])

    anonymous = client.get("/admin/dashboard/")
    refused = signed_in(approver).get("/admin/dashboard/")

    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert refused.status_code == 403


# ---------------------------------------------------------------------------
# Alerts and the Grafana dashboard
# ---------------------------------------------------------------------------
def exposed_metric_names() -> set[str]:
    names = set()
    for collector in list(metrics.REGISTRY._collector_to_names):
        names.update(metrics.REGISTRY._collector_to_names[collector])
    source = (REPO_DIR / "approvals" / "ops" / "metrics.py").read_text()
    names.update(re.findall(r'"(approvals_[a-z_]+)"', source))
    for name in list(names):
        names.update({f"{name}_bucket", f"{name}_count", f"{name}_sum"})
    return names


def test_every_metric_the_portal_exports_is_documented_and_every_documented_one_exported():
    """docs/operations.md is what an operator builds alerts from: a metric missing there is never
    watched, one named there that the portal does not export never comes."""
    source = (REPO_DIR / "approvals" / "ops" / "metrics.py").read_text()
    exported = set(re.findall(r'"(approvals_[a-z_]+)"', source))
    documented = set(re.findall(r"`(approvals_[a-z_]+)", (REPO_DIR / "docs" / "operations.md").read_text()))
    assert sorted(exported - documented) == []
    assert sorted(documented - exported) == []


def test_the_alert_rules_are_well_formed_and_use_only_metrics_the_portal_exports():
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in alerts}

    assert {"ApprovalCallbacksFailing", "ApprovalConsumerStale", "ApprovalPendingNearDeadline",
            "ApprovalIngestErrorsRising"} <= names  # fmt: skip
    known = exposed_metric_names()
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        for metric in re.findall(r"\b(approvals_[a-z_]+)", rule["expr"]):
            assert metric in known, f"{rule['alert']} uses {metric}, which the portal does not export"


def test_the_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install --no-install-recommends prometheus)")
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_the_grafana_dashboard_is_valid_json_and_queries_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert dashboard["title"] and len(panels) >= 6
    known = exposed_metric_names()
    for panel in panels:
        for target in panel.get("targets", []):
            for metric in re.findall(r"\b(approvals_[a-z_]+)", target["expr"]):
                assert metric in known, f"panel {panel['title']!r} uses {metric}"


def test_the_multiprocess_directory_is_per_family_and_emptied_at_start(tmp_path, monkeypatch):
    from portal import observability

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.delenv(observability.BASE_ENV_VAR, raising=False)
    stale = tmp_path / "web" / "counter_1234.db"
    stale.parent.mkdir()
    stale.write_bytes(b"old")

    web = observability.prepare_multiprocess_dir("web")
    worker = observability.prepare_multiprocess_dir("worker-celery@host")

    assert web == tmp_path / "web" and worker == tmp_path / "worker-celery@host"
    assert not stale.exists() and Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) == worker


def test_a_broker_that_accepts_but_never_answers_fails_within_the_timeout(client, ready_settings):
    assert readyz(client)[0] == 200  # the AWS client is created (slow the first time) and cached
    with socket.socket() as silent:  # a real listener that never speaks: a hung broker
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        ready_settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        ready_settings.READYZ_TIMEOUT_SECONDS = 2
        started = time.monotonic()
        status, body = readyz(client)
        elapsed = time.monotonic() - started

    assert status == 503 and body["failed"] == ["broker"]
    assert elapsed < 6


# ---------------------------------------------------------------------------
# /readyz called in a loop by anyone: the checks' result is reused, one run at a time
# ---------------------------------------------------------------------------
def sqs_actions(moto_url: str) -> list[str]:
    """The SQS actions the moto server received since its recorder started (its own request log)."""
    text = requests.get(f"{moto_url}/moto-api/recorder/download-recording", timeout=10).text
    actions = []
    for line in text.splitlines():
        entry = json.loads(line)
        target = {key.lower(): value for key, value in entry["headers"].items()}.get("x-amz-target", "")
        if target.startswith("AmazonSQS."):
            actions.append(target.removeprefix("AmazonSQS."))
    return actions


@pytest.fixture
def moto_recording(own_moto):
    _, url = own_moto
    requests.post(f"{url}/moto-api/recorder/reset-recording", timeout=10).raise_for_status()
    requests.post(f"{url}/moto-api/recorder/start-recording", timeout=10).raise_for_status()
    return url


def test_rapid_readyz_calls_from_many_threads_make_one_sqs_call_per_window(
    ready_settings, moto_recording, transactional_db
):
    ready_settings.READYZ_CACHE_SECONDS = 60  # far longer than these calls take
    start = threading.Barrier(20)

    def call_from_a_thread() -> int:
        try:
            start.wait(timeout=30)
            return Client().get("/readyz").status_code
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=20) as pool:
        threaded = list(pool.map(lambda _: call_from_a_thread(), range(20)))
    sequential = [Client().get("/readyz").status_code for _ in range(20)]

    assert threaded == sequential == [200] * 20
    assert sqs_actions(moto_recording).count("GetQueueAttributes") == 1


def test_readyz_reports_a_dependency_that_went_down_once_the_reuse_window_has_passed(
    client, ready_settings, own_moto, moto_recording
):
    process, _ = own_moto
    ready_settings.READYZ_CACHE_SECONDS = 60
    assert readyz(client)[0] == 200
    assert sqs_actions(moto_recording) == ["GetQueueAttributes"]

    process.stop()
    within_window = readyz(client)  # the reused answer: the price of not asking AWS on every call
    ready_settings.READYZ_CACHE_SECONDS = 1
    time.sleep(1)
    status, body = readyz(client)

    assert within_window[0] == 200
    assert status == 503 and body["failed"] == ["aws"]


def test_callers_in_a_loop_cannot_pile_up_threads_on_a_hung_broker(ready_settings, transactional_db):
    """Twenty callers at once while the broker hangs: the checks' threads stay at one per check."""
    assert Client().get("/readyz").status_code == 200  # the AWS client is created and cached
    with socket.socket() as silent:  # a real listener that never speaks: a hung broker
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        ready_settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        ready_settings.READYZ_TIMEOUT_SECONDS = 1
        start = threading.Barrier(20)
        done = threading.Event()
        counts = []

        def count_check_threads() -> None:
            while not done.is_set():
                counts.append(sum(thread.name.startswith("readyz") for thread in threading.enumerate()))
                done.wait(0.01)

        def call_from_a_thread() -> tuple[int, dict]:
            try:
                start.wait(timeout=30)
                return readyz(Client())
            finally:
                connections.close_all()

        sampler = threading.Thread(target=count_check_threads)
        sampler.start()
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: call_from_a_thread(), range(20)))
        done.set()
        sampler.join()

    assert all(status == 503 and "broker" in body["failed"] for status, body in answers)
    assert counts and max(counts) <= 2, max(counts)  # one broker and one AWS check, never more
