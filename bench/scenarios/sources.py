"""Scenario: ingest with 1 and with 4 approval sources, beside the bare loop (docs/sources.md).

The same warm worker (its APPROVAL_CONSUMER_THREADS consumer threads) ingests N messages three ways:
- 1 source: the default queue only (no source rows), as scenario 1 does;
- 4 sources: four more queues added as approval sources (rows the consumer reads each round, no
  restart), the N messages spread evenly over them, the default queue idle beside them;
- baseline: the same N drained by the bare boto3 receive/delete loop (bench/baselines.py).
Measured: from the first send to the moment all N are committed requests. Indicative: the round
robin's cost is the extra receives (one per source per round) and, when idle, the shared long poll.
"""

from __future__ import annotations

import threading
import time

from bench import common
from bench.common import Row
from bench.scenarios.ingest import MAX_DEPTH, baseline_ingest, bodies, make_queue, portal_ingest, send_batches

SOURCES = 4


def spread_ingest(bench, queue_urls: list[str], count: int, run: str) -> dict:
    """Send `count` messages spread over `queue_urls` (one sender thread each); time until every
    one is a committed request."""
    committed = bench.committed_requests
    mark = committed.count()
    payload = bodies(count, run)
    shares = [payload[i :: len(queue_urls)] for i in range(len(queue_urls))]
    sent: list = []

    def feed(queue_url: str, share: list[str]) -> None:
        try:
            depth = max(10, MAX_DEPTH // len(queue_urls) * 2)
            sent.append(
                send_batches(
                    bench.moto_url,
                    queue_url,
                    share,
                    lambda: (committed.count() - mark) // len(queue_urls),
                    max_depth=depth,
                )
            )
        except Exception as error:  # noqa: BLE001 - reported by the waiting loop below
            sent.append(error)

    threads = [threading.Thread(target=feed, args=pair, daemon=True) for pair in zip(queue_urls, shares, strict=True)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + max(120, count * 0.5)
    while True:
        for result in sent:
            if isinstance(result, Exception):
                raise result
        if len(sent) == len(threads):
            ids = [mid for _, message_ids in sent for mid in message_ids]
            if all(mid in committed.seen for mid in ids):
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count - (committed.count() - mark)} of {count} messages not committed in time")
        time.sleep(0.05)
    started = min(first for first, _ in sent)
    done = max(committed.seen[mid] for _, message_ids in sent for mid in message_ids)
    return {"n": count, "seconds": round(done - started, 3), "rate": count / (done - started)}


def run(bench) -> None:
    from approvals import services

    n = bench.sizes["ingest_n"]
    if bench.worker is None:
        bench.start_worker(concurrency=1)
    portal_ingest(bench, bench.sizes["ingest_warmup"], "sources-warm")

    one = portal_ingest(bench, n, "sources-1")
    baseline = baseline_ingest(bench, n, "sources-base")

    queue_urls = [make_queue(bench.moto_url, f"bench-source-{i}-{int(time.time())}") for i in range(SOURCES)]
    rows = [
        services.source_save(
            actor=None,
            source_id=None,
            name=f"bench source {i}",
            queue_url=url,
            region=common.REGION,
        )
        for i, url in enumerate(queue_urls)
    ]
    try:
        time.sleep(3)  # the consumer reads the sources at its next round
        spread_ingest(bench, queue_urls, max(40, n // 3), "sources-4-warm")
        four = spread_ingest(bench, queue_urls, n, "sources-4")
    finally:
        for row in rows:
            services.source_set_enabled(actor=None, source_id=row.pk, enabled=False)

    bench.rows.append(
        Row(
            "sources",
            "baseline: boto3 receive+delete",
            n=n,
            throughput=baseline["rate"],
            throughput_unit=" msg/s",
            extra=baseline,
        )
    )
    for variant, result in (("portal: 1 source (default queue)", one), (f"portal: {SOURCES} sources", four)):
        bench.rows.append(
            Row(
                "sources",
                variant,
                n=n,
                throughput=result["rate"],
                throughput_unit=" rows/s",
                ratio=result["rate"] / baseline["rate"],
                notes="one worker, its consumer threads; 4 sources: N spread evenly, default queue idle beside them; "
                "indicative",
                extra={key: value for key, value in result.items() if key in {"n", "seconds", "rate"}},
            )
        )
    print(
        f"sources: 1 source {one['rate']:.0f}/s, {SOURCES} sources {four['rate']:.0f}/s, "
        f"baseline {baseline['rate']:.0f}/s",
        flush=True,
    )
