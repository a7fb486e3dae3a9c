"""Readiness: can this deployment do its job right now? One check per dependency.

- ``database``: a connection and ``SELECT 1``;
- ``broker``: a connection to Celery's broker (short timeout, no retry loop);
- ``aws``: one SQS GetQueueAttributes on the approval queue (short timeouts, no retries);
- ``consumer``: some queue consumer completed a poll within READYZ_CONSUMER_MAX_AGE_SECONDS
  (a worker that died or hangs shows here; so does a deployment where none ever started);
- ``sources`` (only when approval sources exist, docs/sources.md): names every enabled source
  whose last poll failed, with its (redacted) error. Not in the default READYZ_REQUIRED_CHECKS:
  one member account's broken role must not take the whole portal out of service.

The broker and AWS checks run in threads beside the database ones, so the whole answer takes
about the slowest check, at most READYZ_TIMEOUT_SECONDS. READYZ_REQUIRED_CHECKS names the
checks whose failure makes /readyz answer 503; the others are still reported.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from approvals.integrations import aws
from approvals.redaction import redact
from approvals.selectors import ops as ops_selectors
from approvals.selectors import sources as source_selectors

CHECKS = ("database", "broker", "aws", "consumer")

# Credentials in a URL (a broker or database URL inside an error message) never leave.
_URL_CREDENTIALS = re.compile(r"(//)[^/@\s:]*(:[^/@\s]*)?@")


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    data: dict = field(default_factory=dict)

    def as_json(self, *, with_detail: bool, required: bool) -> dict:
        entry = {"ok": self.ok, "required": required, "seconds": round(self.seconds, 3)}
        if with_detail or self.ok:
            entry["detail"] = self.detail
            entry.update(self.data)
        return entry


class CheckFailed(Exception):
    """A check's own verdict (as opposed to an exception from the dependency)."""


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return redact(_URL_CREDENTIALS.sub(r"\1***@", text), uuids=False)[:300]


def _timed(name: str, check: Callable[[], tuple[str, dict]]) -> CheckResult:
    started = time.perf_counter()
    try:
        detail, data = check()
    except CheckFailed as verdict:
        return CheckResult(name, False, str(verdict), time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001 - a failing dependency is the answer, not a crash
        return CheckResult(name, False, _describe(error), time.perf_counter() - started)
    return CheckResult(name, True, detail, time.perf_counter() - started, data)


def check_database() -> tuple[str, dict]:
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor} answered", {}


def check_broker() -> tuple[str, dict]:
    from kombu import Connection

    timeout = settings.READYZ_TIMEOUT_SECONDS
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "socket_connect_timeout": timeout, "socket_timeout": timeout}
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=timeout, transport_options=options) as conn:
        # One attempt: a retry loop would outlast the probe's own timeout.
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        conn.default_channel  # noqa: B018 - opening a channel is what talks to the broker
        return f"{conn.transport_cls} broker answered", {}


def check_aws() -> tuple[str, dict]:
    aws.probe_queue(queue_url=settings.APPROVAL_QUEUE_URL)
    return "SQS answered for the approval queue", {}


def check_consumer() -> tuple[str, dict]:
    max_age = settings.READYZ_CONSUMER_MAX_AGE_SECONDS
    summary = ops_selectors.consumer_summary()
    if summary.registered == 0 or summary.latest_poll_at is None:
        raise CheckFailed("no queue consumer has ever polled (is a Celery worker running?)")
    age = (timezone.now() - summary.latest_poll_at).total_seconds()
    data = {"last_poll_age_seconds": round(age, 1), "consumers_registered": summary.registered}
    if summary.latest_poll_at < timezone.now() - timedelta(seconds=max_age):
        raise CheckFailed(f"no queue consumer polled in the last {max_age} s (latest {age:.0f} s ago)")
    return f"a consumer polled {age:.0f} s ago", data


def check_sources() -> tuple[str, dict]:
    failing = source_selectors.failing_sources()
    if failing:
        names = ", ".join(f"{source.name} ({source.last_error[:120] or 'failing'})" for source in failing)
        raise CheckFailed(f"{len(failing)} approval source(s) failing: {names}"[:1000])
    return "every enabled approval source polled without error", {}


def sources_exist() -> bool:
    return source_selectors.any_source()


_THREADED = {"broker": check_broker, "aws": check_aws}
_INLINE = {"database": check_database, "consumer": check_consumer}


def run_checks() -> list[CheckResult]:
    """All checks; the broker and AWS in threads (bounded by READYZ_TIMEOUT_SECONDS)."""
    timeout = settings.READYZ_TIMEOUT_SECONDS
    executor = ThreadPoolExecutor(max_workers=len(_THREADED), thread_name_prefix="readyz")
    started = time.perf_counter()
    futures = {name: executor.submit(_timed, name, check) for name, check in _THREADED.items()}
    results = {name: _timed(name, check) for name, check in _INLINE.items()}
    names = list(CHECKS)
    try:
        with_sources = sources_exist()
    except Exception:  # noqa: BLE001 - the database check already says why
        with_sources = False
    if with_sources:
        results["sources"] = _timed("sources", check_sources)
        names.append("sources")
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=max(0.1, timeout - (time.perf_counter() - started)))
        except FutureTimeout:
            results[name] = CheckResult(name, False, f"no answer within {timeout:g} s", timeout)
    executor.shutdown(wait=False, cancel_futures=True)
    return [results[name] for name in names]
