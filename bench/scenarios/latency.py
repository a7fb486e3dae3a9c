"""Scenario 2: queue-to-inbox latency.

Messages are sent one at a time (SendMessage) at a steady rate. Portal: from just before the
SendMessage call to the moment its request row was committed, as another database session learns
it: PostgreSQL's notification from the bench's trigger (bench/progress.py), delivered at commit.
Baseline: a bare boto3 long-poll loop (same wait time, batches of 10) in its own process, on a
second queue of the same moto server; from the same moment to when its ReceiveMessage returned.
Goal: portal p95 ÷ baseline p95 ≤ 1.5.
"""

from __future__ import annotations

import json
import time

from bench import common
from bench.common import Row
from bench.scenarios.ingest import make_queue, sqs_client, start_baseline_loop


def steady_sender(endpoint: str, queue_url: str, count: int, rate: float, run: str) -> dict[str, float]:
    """Send `count` messages at `rate` per second (open loop); message id → time before the send."""
    sqs = sqs_client(endpoint)
    sent: dict[str, float] = {}
    payload = [common.message_body(common.real_format_token(), n, run=run) for n in range(count)]
    start = time.time() + 0.2
    for n, body in enumerate(payload):
        delay = start + n / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        before = time.time()
        sent[sqs.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]] = before
    return sent


def portal_latencies(bench, count: int, rate: float, run: str) -> list[float]:
    committed = bench.committed_requests  # PostgreSQL's commit notifications (bench/progress.py)
    sent = steady_sender(bench.moto_url, bench.queue_url, count, rate, run)
    deadline = time.monotonic() + 60
    while not all(mid in committed.seen for mid in sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    missing = [mid for mid in sent if mid not in committed.seen]
    if missing:
        raise RuntimeError(f"{len(missing)} of {count} messages never became requests")
    return [1000 * (committed.seen[mid] - t) for mid, t in sent.items()]


def baseline_latencies(bench, count: int, rate: float, run: str, wait: int) -> list[float]:
    queue_url = make_queue(bench.moto_url, f"bench-latency-{run}")
    out = bench.out_dir / f"baseline-latency-{run}.json"
    loop = start_baseline_loop(bench, queue_url, count, wait, out)
    time.sleep(1.5)  # up and long-polling
    sent = steady_sender(bench.moto_url, queue_url, count, rate, run)
    loop.wait(timeout=120)
    received = json.loads(out.read_text())["received"]
    return [1000 * (received[mid] - t) for mid, t in sent.items() if mid in received]


def run(bench) -> None:
    from django.conf import settings

    n, rate = bench.sizes["latency_n"], bench.sizes["latency_rate"]
    warm = max(10, n // 10)
    wait = settings.APPROVAL_CONSUMER_WAIT_SECONDS  # the consumer's long poll; the baseline uses the same
    if bench.worker is None:
        bench.start_worker(concurrency=1)

    portal_latencies(bench, warm, rate, "lat-warm")
    baseline_latencies(bench, warm, rate, "lat-warm", wait)
    base = common.summarize_ms(baseline_latencies(bench, n, rate, "lat-measured", wait))
    portal = common.summarize_ms(portal_latencies(bench, n, rate, "lat-measured"))
    ratio = portal["p95_ms"] / base["p95_ms"]
    rss = bench.rss()
    bench.rows.append(
        Row(
            "2 queue→inbox",
            f"baseline: boto3 long poll ({wait}s)",
            n=n,
            latency=base,
            throughput=rate,
            throughput_unit=" msg/s",
        )
    )
    bench.rows.append(
        Row(
            "2 queue→inbox",
            "portal: consumer → row visible",
            n=n,
            latency=portal,
            throughput=rate,
            throughput_unit=" msg/s",
            rss_worker=rss["worker"],
            rss_web=rss["web"],
            ratio=ratio,
            goal="p95 ≤ 1.5 × base",
            passed=ratio <= 1.5,
            notes=f"sent one at a time at {rate:g}/s; commit seen by LISTEN (bench/progress.py)",
        )
    )
    print(
        f"latency: portal p95 {portal['p95_ms']} ms, baseline p95 {base['p95_ms']} ms (ratio {ratio:.2f})", flush=True
    )
