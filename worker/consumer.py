"""The queue consumer: long-polls the approval queue and ingests each message.

It runs as a thread inside every Celery worker (a bootstep), so Celery supervises it and a
warm shutdown lets it finish the batch in hand. Several workers may consume at once: SQS
hides a received message from the others, and ingestion is idempotent on the token.
"""

import logging
import os
import socket
import threading
import time

from celery import bootsteps

logger = logging.getLogger(__name__)


def consume_once(
    *, queue_url: str, wait_seconds: int, visibility_timeout: int, max_bytes: int, source=None, route=None
) -> int:
    """Receive one batch, ingest it, delete what was committed. Returns messages handled.

    `source`: the ApprovalSource the queue belongs to (None: the default APPROVAL_QUEUE_URL); its
    region and role are used for every SQS call (`route`, as the round's SourceToPoll holds it;
    computed from `source` when not given), and ingest checks its messages against it.
    """
    from approvals import services
    from approvals.integrations import aws
    from approvals.ops import metrics
    from approvals.selectors.sources import source_route

    if route is None:
        route = source_route(source)
    batch = aws.receive_batch(
        queue_url=queue_url, wait_seconds=wait_seconds, visibility_timeout=visibility_timeout, route=route
    )
    received_at = time.monotonic()
    metrics.messages_received(len(batch), source=source)
    extended = False
    committed: list[aws.QueueMessage] = []

    def keep_hidden(remaining) -> None:
        nonlocal extended
        if remaining and not extended and time.monotonic() - received_at > visibility_timeout / 2:
            # A slow batch (a slow database): keep the rest hidden so no other consumer
            # receives them meanwhile.
            handles = [message.receipt_handle for message in remaining]
            aws.extend_visibility(queue_url=queue_url, receipt_handles=handles, timeout=visibility_timeout, route=route)
            extended = True

    try:
        # The batch in one transaction, each message on its own only if that fails; a message's
        # failure is an IngestError that keeps it, so once either is committed the message is
        # deleted. Only a database unavailable as a whole raises: the rest stay on the queue
        # (and go to the DLQ if that lasts).
        services.received_batch_ingest(
            messages=batch, max_bytes=max_bytes, committed=committed, keep_hidden=keep_hidden, source=source
        )
    finally:
        # Also when the database went away mid-batch: what was committed is not received again.
        if committed:
            handles = [message.receipt_handle for message in committed]
            failed = aws.delete_messages(
                queue_url=queue_url, receipt_handles=handles, route=route
            )  # DeleteMessageBatch
            if failed:
                # Harmless: the message comes back and ingestion finds the existing request.
                logger.warning("%d ingested messages could not be deleted; they will be re-received", len(failed))
    return len(batch)


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# A failing source waits this long at most before it is tried again (doubling from 2 s).
MAX_SOURCE_BACKOFF_SECONDS = 60


def poll_wait_seconds(configured: int, sources: int) -> int:
    """The long poll per source when all are idle: the whole wait with one source; with several,
    a share of it, so an idle round over all of them still takes about `configured` seconds."""
    return configured if sources <= 1 else max(1, configured // sources)


class QueueConsumer(threading.Thread):
    """One thread, round robin over the sources (the default queue and every enabled row, read
    afresh each round): each gets one receive of up to 10 messages per turn, so a busy source
    cannot starve the others, and a failing one (access denied, queue deleted, throttled) is
    skipped until its own backoff ends while the rest keep flowing.

    Why not a thread per source: sources come and go at runtime (the admin), and one thread
    reading the list each round picks that up with no thread bookkeeping, one database
    connection, and one place that stops on shutdown. Shared long polls (`poll_wait_seconds`)
    keep it fair when idle, and no waiting at all while any source is busy (an idle source's
    wait would hold up the busy ones); the cost is a few more empty receives.
    """

    def __init__(self, number: int = 1) -> None:
        super().__init__(name=f"approval-queue-consumer-{number}", daemon=True)
        self.stopping = threading.Event()
        # Per source key: (consecutive failures, monotonic time before which it is skipped).
        self.backoff: dict[str, tuple[int, float]] = {}
        # Messages the last round handled: while any source is busy, nobody long-polls (an idle
        # source's wait would hold up the busy ones); an idle round shares the long poll again.
        self.last_round_handled = 0

    def run(self) -> None:
        from django.db import close_old_connections

        name = consumer_name()
        logger.info("approval queue consumer %s (%s) started", name, self.name)
        failures = 0
        while not self.stopping.is_set():
            # A long-lived thread: drop connections the database closed or that grew old.
            close_old_connections()
            try:
                polled = self.run_round(name)
                failures = 0
            except Exception:
                # The database having a bad minute (reading the sources), or a bug: never kill
                # the consumer for good; back off and say so where operators look.
                failures += 1
                delay = min(60, 2**failures)
                logger.exception("approval queue consumer error; retrying in %ss", delay)
                self.stopping.wait(delay)
                continue
            if not polled:
                # Every source is backing off (or none is configured): wait for the nearest.
                self.stopping.wait(self._nearest_retry())
        logger.info("approval queue consumer %s (%s) stopped", name, self.name)

    def run_round(self, name: str) -> int:
        """One turn over every source not backing off; returns how many were polled."""
        from django.conf import settings

        from approvals.selectors.sources import sources_to_poll

        sources = sources_to_poll()
        wait = poll_wait_seconds(settings.APPROVAL_CONSUMER_WAIT_SECONDS, len(sources))
        if len(sources) > 1 and self.last_round_handled:
            wait = 0
        keys = {polled.key for polled in sources}
        for key in list(self.backoff):
            if key not in keys:  # disabled or deleted meanwhile
                del self.backoff[key]
        polled_count = handled = 0
        for polled in sources:
            if self.stopping.is_set():
                break
            _, until = self.backoff.get(polled.key, (0, 0.0))
            if time.monotonic() < until:
                continue
            polled_count += 1
            handled += self.poll_source(name, polled, wait)
        self.last_round_handled = handled
        return polled_count

    def poll_source(self, name: str, polled, wait: int) -> int:
        """One receive from one source; its failure is its own (recorded, backed off). Returns
        the messages it handled."""
        from django.conf import settings

        from approvals import services
        from approvals.integrations import aws
        from approvals.ops import metrics

        try:
            handled = consume_once(
                queue_url=polled.queue_url,
                wait_seconds=wait,
                visibility_timeout=settings.APPROVAL_CONSUMER_VISIBILITY_TIMEOUT,
                max_bytes=settings.APPROVAL_MAX_MESSAGE_BYTES,
                source=polled.source,
                route=polled.route,
            )
            # Liveness of the consumer as a whole (/readyz), and of this source.
            services.consumer_poll_recorded(name=name, handled=handled)
            if polled.source is not None:
                services.source_poll_succeeded(source_id=polled.source.pk, handled=handled)
            self.backoff.pop(polled.key, None)
            return handled
        except Exception as error:
            # This source's bad minute (or the database's): it backs off alone.
            count = self.backoff.get(polled.key, (0, 0.0))[0] + 1
            delay = min(MAX_SOURCE_BACKOFF_SECONDS, 2**count)
            self.backoff[polled.key] = (count, time.monotonic() + delay)
            metrics.consumer_poll_failed(error)
            description = f"{type(error).__name__}: {error}"
            if isinstance(error, aws.AwsError):  # AWS said no (redacted): no traceback needed
                logger.warning("approval source %s failed (%s); retrying in %ss", polled.label, description, delay)
            else:  # the database, or a bug: with its traceback
                logger.exception("approval source %s: consumer error; retrying in %ss", polled.label, delay)
            try:
                if polled.source is None:
                    services.consumer_error_recorded(name=name, error=description)
                else:
                    services.source_poll_failed(source_id=polled.source.pk, error=description)
            except Exception:
                logger.exception("could not record the consumer error")
            return 0

    def _nearest_retry(self) -> float:
        if not self.backoff:
            return 1.0
        return max(0.1, min(until for _, until in self.backoff.values()) - time.monotonic())


class QueueConsumerStep(bootsteps.StartStopStep):
    """Runs the consumer threads for the worker's lifetime (if APPROVAL_CONSUMER_ENABLED).

    APPROVAL_CONSUMER_THREADS of them (default 2), each its own round robin over the sources:
    while one waits for SQS (a receive, a delete), the other stores its batch in the database,
    so the two halves of the work overlap instead of taking turns. SQS hides what one received
    from the other, as it does between workers, and ingestion is idempotent on the token.
    """

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.consumers: list[QueueConsumer] = []

    def start(self, worker) -> None:
        from django.conf import settings

        if settings.APPROVAL_CONSUMER_ENABLED:
            self.consumers = [QueueConsumer(number) for number in range(1, settings.APPROVAL_CONSUMER_THREADS + 1)]
            for consumer in self.consumers:
                consumer.start()

    def stop(self, worker) -> None:
        for consumer in self.consumers:
            consumer.stopping.set()
        deadline = time.monotonic() + 60
        for consumer in self.consumers:
            # Finish the batch in hand: at most a long poll plus its ingestion.
            consumer.join(timeout=max(0.1, deadline - time.monotonic()))
