"""Prometheus metrics: what the portal counts, and how /metrics is served.

Counters and histograms are recorded where things happen (services, tasks, the consumer), each
by one call to a function here; events inside a transaction count only once it commits. The
state of the system (pending requests, oldest pending, callbacks by status, consumers, queue
depth) is not counted but read at scrape time by :class:`PortalStateCollector`, on the web's
/metrics only, so one scrape target owns those series.

Web and worker processes each write to their own prometheus-client multiprocess directory
(portal/observability.py): the web's /metrics adds up its gunicorn workers, the worker's
endpoint (WORKER_METRICS_PORT) adds up its main process (the queue consumer) and its pool.

Label values are bounded: state machines by name (the first MAX_STATE_MACHINE_LABELS per
process, then "other"), errors by code from known sets, HTTP requests by URL pattern. No label
ever holds an id, an email or a token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from wsgiref.simple_server import make_server

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from approvals.integrations import aws
from approvals.selectors import ops as ops_selectors
from approvals.selectors import sources as source_selectors
from approvals.stepfunctions import CLOSED_TASK_CODES, state_machine_name
from portal import observability

logger = logging.getLogger(__name__)

# Seconds, from a minute to a week: people decide in minutes to days.
DECISION_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 345600, 604800)
# Seconds from the decision to Step Functions' answer: normally well under a second.
CALLBACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
HTTP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# ---------------------------------------------------------------------------
# The metrics
# ---------------------------------------------------------------------------
REQUESTS_INGESTED = Counter(
    "approvals_requests_ingested_total", "Approval requests created from queue messages.", ["state_machine"]
)
INGEST_ERRORS = Counter(
    "approvals_ingest_errors_total",
    "Queue messages refused by the message contract, each time one is received.",
    ["reason"],
)
# Every metric has labels: a labelled metric creates its samples (in multiprocess mode, its
# files) only when first recorded, after the process chose its directory (portal/observability.py).
MESSAGES_RECEIVED = Counter(
    "approvals_queue_messages_received_total", "Messages received from the approval queue.", ["queue"]
)
CONSUMER_POLL_ERRORS = Counter(
    "approvals_consumer_poll_errors_total",
    "Queue consumer rounds that failed (AWS or the database unavailable), by exception type.",
    ["error"],
)
DECISIONS = Counter("approvals_decisions_total", "Approval requests closed in the portal, by outcome.", ["outcome"])
DECISION_REFUSALS = Counter(
    "approvals_decision_refusals_total", "Attempts to decide that were refused, by reason.", ["reason"]
)
TIME_TO_DECISION = Histogram(
    "approvals_time_to_decision_seconds",
    "From receipt of the request to the decision.",
    ["outcome"],
    buckets=DECISION_BUCKETS,
)
CALLBACKS = Counter(
    "approvals_callbacks_total",
    "Callback attempts to Step Functions: delivered, retried (transient) or failed (permanent).",
    ["outcome", "error"],
)
CALLBACK_LATENCY = Histogram(
    "approvals_callback_latency_seconds",
    "From the decision (callback queued) to Step Functions accepting it.",
    ["kind"],
    buckets=CALLBACK_BUCKETS,
)
HEARTBEATS = Counter(
    "approvals_heartbeats_total", "SendTaskHeartbeat calls, by result (sent, closed, refused, transient).", ["result"]
)
NOTIFICATIONS = Counter(
    "approvals_notifications_total", "Notifications to approvers, by channel and status.", ["channel", "status"]
)
HTTP_REQUESTS = Histogram(
    "approvals_http_request_duration_seconds",
    "Web requests, by URL pattern, method and status class.",
    ["route", "method", "status"],
    buckets=HTTP_BUCKETS,
)

# Error codes that are reported as themselves; anything else is "connection" or "other".
KNOWN_ERROR_CODES = frozenset(
    {
        *CLOSED_TASK_CODES,  # Step Functions: the task is gone
        # Step Functions / AWS: refused or overloaded
        "InvalidOutput",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ThrottlingException",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "KMSThrottlingException",
        # the portal's own refusals (approvals/services/callbacks.py)
        "identity_recheck_failed",
        "token_key_missing",
        "over_limit",
        "cancelled_by_admin",
    }
)
CONNECTION_ERRORS = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ProxyConnectionError",
        "SSLError",
    }
)


def error_label(code: str) -> str:
    if not code:
        return "none"
    if code in KNOWN_ERROR_CODES:
        return code
    return "connection" if code in CONNECTION_ERRORS else "other"


def state_machine_label(arn: str) -> str:
    """A state machine's name (arn:aws:states:<region>:<account>:stateMachine:<name>)."""
    return state_machine_name(arn)[:80] or "unknown"


def _on_commit(record: Callable[[], None]) -> None:
    # Inside a transaction: count once it commits (a rollback counts nothing). Outside: now.
    transaction.on_commit(record)


# ---------------------------------------------------------------------------
# Recording: one call where the event happens
# ---------------------------------------------------------------------------
# The state machine's ARN is the sender's to write: the first MAX_STATE_MACHINE_LABELS names this
# process sees are labelled as themselves, later new ones count as "other", so a sender who
# varies the name per message cannot grow the series (and the multiprocess files) without bound.
MAX_STATE_MACHINE_LABELS = 100


class _BoundedLabels:
    """The first `limit` values a process labels with are themselves; later new ones are "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, label: str) -> str:
        with self._lock:
            if label in self._seen:
                return label
            if len(self._seen) >= self.limit:
                return "other"
            self._seen.add(label)
        return label


_state_machine_labels = _BoundedLabels(MAX_STATE_MACHINE_LABELS)


def bounded_state_machine_label(arn: str) -> str:
    """The `state_machine` label: its name, or "other" once this process has used
    MAX_STATE_MACHINE_LABELS names."""
    return _state_machine_labels(state_machine_label(arn))


def request_ingested(*, state_machine_arn: str) -> None:
    _on_commit(REQUESTS_INGESTED.labels(bounded_state_machine_label(state_machine_arn)).inc)


def ingest_error(*, reason: str) -> None:
    _on_commit(INGEST_ERRORS.labels(reason[:40] or "unknown").inc)


# Source labels this process has used: at most MAX_SOURCE_LABELS, the rest count as "other",
# so sources added (or renamed) over a long uptime cannot grow the series without bound.
MAX_SOURCE_LABELS = 50
_source_labels = _BoundedLabels(MAX_SOURCE_LABELS)


def source_label(source) -> str:
    """The `queue` label of an approval source: "approvals" for the default queue (as before
    sources existed), "<id>:<name>" for a source row (bounded, see MAX_SOURCE_LABELS)."""
    if source is None:
        return "approvals"
    return _source_labels(f"{source.pk}:{source.name}"[:60])


def messages_received(count: int, *, source=None) -> None:
    if count:
        MESSAGES_RECEIVED.labels(source_label(source)).inc(count)


def consumer_poll_failed(error: BaseException) -> None:
    CONSUMER_POLL_ERRORS.labels(type(error).__name__[:60]).inc()


def request_closed(request) -> None:
    """A decision (approved, rejected) or another close (expired, cancelled) of an approval request."""
    outcome = str(request.status)
    seconds = None
    if request.decided_at and request.received_at:
        seconds = max(0.0, (request.decided_at - request.received_at).total_seconds())

    def record() -> None:
        DECISIONS.labels(outcome).inc()
        if seconds is not None:
            TIME_TO_DECISION.labels(outcome).observe(seconds)

    _on_commit(record)


def decision_refused(*, reason: str) -> None:
    _on_commit(DECISION_REFUSALS.labels(reason[:40] or "unknown").inc)


def callback_delivered(callback) -> None:
    seconds = max(0.0, (timezone.now() - callback.created_at).total_seconds())

    def record() -> None:
        CALLBACKS.labels("delivered", "none").inc()
        CALLBACK_LATENCY.labels(str(callback.kind)).observe(seconds)

    _on_commit(record)


def callback_retried(*, code: str) -> None:
    _on_commit(CALLBACKS.labels("retried", error_label(code)).inc)


def callback_failed(*, code: str) -> None:
    _on_commit(CALLBACKS.labels("failed", error_label(code)).inc)


def heartbeat(result: str) -> None:
    HEARTBEATS.labels(result).inc()


# A notification's channel and the statuses it ends in (approvals.models.Notification): anything
# else would be a bug, counted as "other" rather than growing the series.
NOTIFICATION_CHANNELS = frozenset({"email", "slack"})
NOTIFICATION_FINAL_STATUSES = frozenset({"sent", "failed", "skipped", "refused"})


def notification(*, channel: str, status: str) -> None:
    """A notification reached a final status (services/notifications.py): counted once, when the
    change commits."""
    channel = str(channel) if channel in NOTIFICATION_CHANNELS else "other"
    status = str(status) if status in NOTIFICATION_FINAL_STATUSES else "other"
    _on_commit(NOTIFICATIONS.labels(channel, status).inc)


# The methods the portal serves (SCIM provisions with PUT, PATCH and DELETE); anything else a
# client sends is "other", so the series stay bounded.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_request_recorded(*, method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(route[:100], method, f"{status // 100}xx").observe(seconds)


# ---------------------------------------------------------------------------
# Scrape time: the state of the system, read from the database and SQS
# ---------------------------------------------------------------------------
class _QueueDepthCache:
    """SQS's counts, fetched at most once per METRICS_QUEUE_CACHE_SECONDS per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = 0.0
        self._value = None
        self._error = ""

    def get(self):
        with self._lock:
            if time.monotonic() - self._at < settings.METRICS_QUEUE_CACHE_SECONDS:
                return self._value, self._error
            try:
                self._value, self._error = aws.queue_depth(queue_url=settings.APPROVAL_QUEUE_URL), ""
            except aws.AwsError as error:
                self._value, self._error = None, error.code
            self._at = time.monotonic()
            return self._value, self._error

    def clear(self) -> None:
        with self._lock:
            self._at = 0.0


queue_depth_cache = _QueueDepthCache()


def _gauge(name: str, documentation: str, value: float, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric([], value)
    return family


class PortalStateCollector(Collector):
    """Gauges computed at scrape time: a few aggregate queries and one cached SQS call."""

    def collect(self):
        yield from self._database()
        yield from self._queue()
        yield from self._sources()

    def _sources(self):
        """Per approval source (docs/sources.md), labelled like the received counter; only the
        first MAX_LABELLED_SOURCES enabled ones, and nothing at all without sources."""
        try:
            sources = source_selectors.labelled_sources()
        except Exception as error:  # noqa: BLE001 - the database gauge already reports it
            logger.warning("metrics: sources unavailable: %s", type(error).__name__)
            return
        if not sources:
            return
        now = timezone.now()
        up = GaugeMetricFamily(
            "approvals_source_up", "1 when the source's last poll worked, 0 when failing.", labels=["queue"]
        )
        idle = GaugeMetricFamily(
            "approvals_source_last_message_age_seconds",
            "Seconds since the source last delivered a message (absent: never).",
            labels=["queue"],
        )
        for source in sources:
            label = source_label(source)
            up.add_metric([label], 0 if source.state == "failing" else 1)
            if source.last_message_at is not None:
                idle.add_metric([label], (now - source.last_message_at).total_seconds())
        yield up
        yield idle

    def _database(self):
        now = timezone.now()
        up = GaugeMetricFamily("approvals_state_database_up", "1 when the scrape could read the database.")
        try:
            pending = ops_selectors.pending_summary()
            callbacks = ops_selectors.callback_status_counts()
            open_errors = ops_selectors.open_ingest_error_count()
            consumers = ops_selectors.consumer_summary()
        except Exception as error:  # noqa: BLE001 - a scrape reports the database down, never a 500
            logger.warning("metrics: database unavailable: %s", type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _gauge("approvals_pending_requests", "Approval requests waiting for a decision.", pending.count)
        oldest = (now - pending.oldest_received_at).total_seconds() if pending.oldest_received_at else 0
        yield _gauge("approvals_oldest_pending_age_seconds", "Age of the oldest waiting request (0: none).", oldest)
        if pending.nearest_deadline is not None:
            yield _gauge(
                "approvals_pending_nearest_deadline_seconds",
                "Seconds until the earliest deadline of a waiting request (negative: overdue).",
                (pending.nearest_deadline - now).total_seconds(),
            )
        by_status = GaugeMetricFamily(
            "approvals_callbacks_by_status", "Callbacks not (yet) delivered, by status.", labels=["status"]
        )
        for status, count in sorted(callbacks.items()):
            by_status.add_metric([status], count)
        yield by_status
        yield _gauge("approvals_ingest_errors_open", "Ingest errors no admin has replayed or discarded.", open_errors)
        yield _gauge("approvals_consumers_registered", "Queue consumers that have ever polled.", consumers.registered)
        if consumers.latest_poll_at is not None:
            yield _gauge(
                "approvals_consumer_last_poll_age_seconds",
                "Seconds since the most recent successful poll by any queue consumer.",
                (now - consumers.latest_poll_at).total_seconds(),
            )

    def _queue(self):
        depth, error = queue_depth_cache.get()
        up = GaugeMetricFamily("approvals_queue_stats_up", "1 when SQS answered the last queue depth query.")
        up.add_metric([], 0 if depth is None else 1)
        yield up
        if depth is None:
            return
        messages = GaugeMetricFamily(
            "approvals_queue_messages",
            "SQS approximate message counts (cached for METRICS_QUEUE_CACHE_SECONDS).",
            labels=["queue", "state"],
        )
        messages.add_metric(["approvals", "visible"], depth.visible)
        messages.add_metric(["approvals", "in_flight"], depth.in_flight)
        messages.add_metric(["approvals", "delayed"], depth.delayed)
        if depth.dead_letter_visible is not None:
            messages.add_metric(["dead_letter", "visible"], depth.dead_letter_visible)
        yield messages


_state_registry = CollectorRegistry(auto_describe=False)
_state_registry.register(PortalStateCollector())


def _process_registry() -> CollectorRegistry:
    """This process family's counters: every process's files, or this process alone."""
    directory = observability.multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def web_exposition() -> bytes:
    """The web's /metrics: its processes' counters plus the state gauges."""
    return generate_latest(_process_registry()) + generate_latest(_state_registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST


# ---------------------------------------------------------------------------
# Who may scrape: a bearer token (METRICS_TOKEN) or an address on METRICS_ALLOWED_IPS
# ---------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def scrape_allowed(*, remote_addr: str, authorization: str) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, presented = authorization.partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(settings.METRICS_ALLOWED_IPS)))


# ---------------------------------------------------------------------------
# The worker's endpoint
# ---------------------------------------------------------------------------
def _guarded(app):
    def guarded_app(environ, start_response):
        allowed = scrape_allowed(
            remote_addr=environ.get("REMOTE_ADDR", ""), authorization=environ.get("HTTP_AUTHORIZATION", "")
        )
        if not allowed:
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"metrics: not allowed from this address without the token\n"]
        return app(environ, start_response)

    return guarded_app


def start_worker_metrics_server(*, port: int, bind: str) -> ThreadingWSGIServer:
    """prometheus-client's WSGI app behind the scrape check, on a daemon thread."""
    # prometheus-client's own quiet request handler and address-family choice (IPv4 or IPv6).
    from prometheus_client.exposition import _get_best_family, _SilentHandler

    class Server(ThreadingWSGIServer):
        pass

    Server.address_family, address = _get_best_family(bind, port)
    server = make_server(address, port, _guarded(make_wsgi_app(_process_registry())), Server, _SilentHandler)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server
