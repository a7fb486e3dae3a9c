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


def consume_once(*, queue_url: str, wait_seconds: int, visibility_timeout: int, max_bytes: int) -> int:
    """Receive one batch, ingest it, delete what was committed. Returns messages handled."""
    from approvals import services
    from approvals.integrations import aws
    from approvals.ops import metrics

    batch = aws.receive_batch(queue_url=queue_url, wait_seconds=wait_seconds, visibility_timeout=visibility_timeout)
    received_at = time.monotonic()
    metrics.messages_received(len(batch))
    extended = False
    committed: list[aws.QueueMessage] = []

    def keep_hidden(remaining) -> None:
        nonlocal extended
        if remaining and not extended and time.monotonic() - received_at > visibility_timeout / 2:
            # A slow batch (a slow database): keep the rest hidden so no other consumer
            # receives them meanwhile.
            handles = [message.receipt_handle for message in remaining]
            aws.extend_visibility(queue_url=queue_url, receipt_handles=handles, timeout=visibility_timeout)
            extended = True

    try:
        # The batch in one transaction, each message on its own only if that fails; a message's
        # failure is an IngestError that keeps it, so once either is committed the message is
        # deleted. Only a database unavailable as a whole raises: the rest stay on the queue
        # (and go to the DLQ if that lasts).
        services.received_batch_ingest(
            messages=batch, max_bytes=max_bytes, committed=committed, keep_hidden=keep_hidden
        )
    finally:
        # Also when the database went away mid-batch: what was committed is not received again.
        if committed:
            handles = [message.receipt_handle for message in committed]
            failed = aws.delete_messages(queue_url=queue_url, receipt_handles=handles)  # DeleteMessageBatch
            if failed:
                # Harmless: the message comes back and ingestion finds the existing request.
                logger.warning("%d ingested messages could not be deleted; they will be re-received", len(failed))
    return len(batch)


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class QueueConsumer(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="approval-queue-consumer", daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.conf import settings
        from django.db import close_old_connections

        from approvals import services
        from approvals.ops import metrics

        name = consumer_name()
        logger.info("approval queue consumer %s started", name)
        failures = 0
        while not self.stopping.is_set():
            # A long-lived thread: drop connections the database closed or that grew old.
            close_old_connections()
            try:
                handled = consume_once(
                    queue_url=settings.APPROVAL_QUEUE_URL,
                    wait_seconds=settings.APPROVAL_CONSUMER_WAIT_SECONDS,
                    visibility_timeout=settings.APPROVAL_CONSUMER_VISIBILITY_TIMEOUT,
                    max_bytes=settings.APPROVAL_MAX_MESSAGE_BYTES,
                )
                services.consumer_poll_recorded(name=name, handled=handled)
                failures = 0
            except Exception as error:
                # AWS or the database having a bad minute, or a bug: never kill the consumer
                # for good; back off and say so where operators look.
                failures += 1
                metrics.consumer_poll_failed(error)
                delay = min(60, 2**failures)
                logger.exception("approval queue consumer error; retrying in %ss", delay)
                try:
                    services.consumer_error_recorded(name=name, error=f"{type(error).__name__}: {error}")
                except Exception:
                    logger.exception("could not record the consumer error")
                self.stopping.wait(delay)
        logger.info("approval queue consumer %s stopped", name)


class QueueConsumerStep(bootsteps.StartStopStep):
    """Runs the consumer thread for the worker's lifetime (if APPROVAL_CONSUMER_ENABLED)."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.consumer: QueueConsumer | None = None

    def start(self, worker) -> None:
        from django.conf import settings

        if settings.APPROVAL_CONSUMER_ENABLED:
            self.consumer = QueueConsumer()
            self.consumer.start()

    def stop(self, worker) -> None:
        if self.consumer is not None:
            self.consumer.stopping.set()
            # Finish the batch in hand: at most a long poll plus its ingestion.
            self.consumer.join(timeout=60)
