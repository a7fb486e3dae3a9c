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

Anyone may call /readyz, in a loop too: ``last_readiness`` reuses a run's result for
READYZ_CACHE_SECONDS and lets one run at a time per process (callers arriving meanwhile wait
for it), and a threaded check still running from an earlier run is not started again, so the
callers set neither the pace of the calls to SQS and the broker nor the number of threads.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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


def run_checks(executor: ThreadPoolExecutor, running: dict[str, Future]) -> list[CheckResult]:
    """All checks; the broker and AWS in the executor's threads (bounded by READYZ_TIMEOUT_SECONDS).

    ``running`` holds each threaded check's latest future: one that has not finished (a hung
    dependency outlasting its socket timeouts) is reported as failing, not started once more."""
    timeout = settings.READYZ_TIMEOUT_SECONDS
    started = time.perf_counter()
    stuck = {}
    for name, check in _THREADED.items():
        previous = running.get(name)
        if previous is not None and not previous.done():
            stuck[name] = CheckResult(name, False, "the previous check has not finished yet", 0.0)
        else:
            running[name] = executor.submit(_timed, name, check)
    results = {name: _timed(name, check) for name, check in _INLINE.items()}
    names = list(CHECKS)
    try:
        with_sources = sources_exist()
    except Exception:  # noqa: BLE001 - the database check already says why
        with_sources = False
    if with_sources:
        results["sources"] = _timed("sources", check_sources)
        names.append("sources")
    results.update(stuck)
    for name in _THREADED.keys() - stuck.keys():
        try:
            results[name] = running[name].result(timeout=max(0.1, timeout - (time.perf_counter() - started)))
        except FutureTimeout:
            results[name] = CheckResult(name, False, f"no answer within {timeout:g} s", timeout)
    return [results[name] for name in names]


class _Readiness:
    """The checks' last result, reused for READYZ_CACHE_SECONDS; one run at a time per process.

    A caller arriving during a run waits for it (at most twice READYZ_TIMEOUT_SECONDS) and shares
    its result; the threaded checks run in one pool with a thread per check. A dependency that
    fails shows within READYZ_CACHE_SECONDS plus one run."""

    def __init__(self) -> None:
        self._forget()
        # A forked child (a gunicorn worker) starts afresh: no pool threads, no lock held.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._running: dict[str, Future] = {}
        self._results: list[CheckResult] | None = None
        self._at = 0.0

    def results(self) -> list[CheckResult]:
        arrived = time.monotonic()
        if not self._lock.acquire(timeout=2 * settings.READYZ_TIMEOUT_SECONDS):
            detail = "the readiness run in progress has not finished (is the database hanging?)"
            return [CheckResult(name, False, detail) for name in CHECKS]
        try:
            # Fresh enough, or finished while this caller waited for it.
            if self._results is not None and (
                self._at > arrived or time.monotonic() - self._at < settings.READYZ_CACHE_SECONDS
            ):
                return self._results
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=len(_THREADED), thread_name_prefix="readyz")
            self._results = run_checks(self._executor, self._running)
            self._at = time.monotonic()
            return self._results
        finally:
            self._lock.release()

    def clear(self) -> None:
        with self._lock:
            self._results, self._at = None, 0.0


last_readiness = _Readiness()
