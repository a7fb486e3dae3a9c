"""Scenario 1, ingest throughput, and scenario 7, memory while ingesting.

1. N contract-shaped messages with ~1,000-character real-format task tokens are sent with
   SendMessageBatch (10 per call) to the portal's queue, while a warm Celery worker's queue
   consumer runs; the sender keeps the queue at most MAX_DEPTH deep (see there why).
   Measured: from the first send to the moment all N are approval requests in the database
   (the bench counts rows every 20 ms). Baseline: the same N, sent the same way to
   a second queue on the same moto server, received (long poll, batches of 10) and deleted by a
   bare boto3 loop in its own process; from the first send to its last delete.
   Goal: portal rate ÷ baseline rate ≥ 0.8.

7. Peak RSS (VmHWM) of the worker and the web after the warm-up ingestion and after the N more,
   each time after the approver's inbox, a request page and the admin changelist were served
   20 times (5 in a QUICK run) (so the web has worked on that much data). Goal: growth ≤ 10 %.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import boto3

from bench import common, stack
from bench.common import Row
from bench.stack import REPO_DIR


def sqs_client(endpoint: str):
    return boto3.session.Session().client(
        "sqs",
        region_name=common.REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - the emulator takes any
    )


def make_queue(endpoint: str, name: str) -> str:
    return sqs_client(endpoint).create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]


# The moto server's ReceiveMessage costs O(queue depth) per message returned (its retention check
# recomputes every queue attribute), so a deep queue measures the emulator, not the consumer; real
# SQS does not slow down with depth. The feeder keeps at most this many messages sent but not yet
# consumed, for the portal and the baseline alike. It learns what was consumed from the consumer's
# side (rows in the database; the baseline loop's progress), not by asking the emulator, which
# would cost the emulator CPU that both consumers need.
MAX_DEPTH = 40


def send_batches(
    endpoint: str, queue_url: str, bodies: list[str], consumed: Callable[[], int], *, max_depth: int = MAX_DEPTH
) -> float:
    """SendMessageBatch, 10 at a time, never more than `max_depth` ahead of the consumer.

    Returns when the first call started.
    """
    sqs = sqs_client(endpoint)
    started = time.time()
    sent = 0
    while sent < len(bodies):
        if sent - consumed() + 10 > max_depth:
            time.sleep(0.005)
            continue
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[sent : sent + 10])]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"SendMessageBatch refused {len(response['Failed'])} messages")
        sent += len(entries)
    return started


def bodies(count: int, run: str) -> list[str]:
    return [common.message_body(common.real_format_token(), n, run=run) for n in range(count)]


def request_count() -> int:
    from approvals.models import ApprovalRequest

    return ApprovalRequest.objects.count()


class RowCounter:
    """Requests committed since it was made: max(id) on its own autocommit connection (cheap, exact:
    only ingestion inserts requests during the scenario, and ids come from one sequence)."""

    def __init__(self, database_url: str):
        import psycopg

        self.connection = psycopg.connect(database_url, autocommit=True)
        self.base = self._max_id()

    def _max_id(self) -> int:
        return self.connection.execute("SELECT coalesce(max(id), 0) FROM approvals_approvalrequest").fetchone()[0]

    def __call__(self) -> int:
        return self._max_id() - self.base

    def close(self) -> None:
        self.connection.close()


def portal_ingest(bench, count: int, run: str) -> dict:
    """Send `count` messages to the portal's queue and time until they are all requests."""
    payload = bodies(count, run)
    feeder_counter, counter = RowCounter(bench.database_url), RowCounter(bench.database_url)
    started: list[float] = []
    sender = threading.Thread(
        target=lambda: started.append(send_batches(bench.moto_url, bench.queue_url, payload, feeder_counter)),
        daemon=True,
    )
    sender.start()
    deadline = time.monotonic() + max(120, count * 0.2)
    while counter() < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {counter()} of {count} requests after the deadline")
        time.sleep(0.02)
    done = time.time()
    sender.join()
    feeder_counter.close()
    counter.close()
    seconds = done - started[0]
    return {"n": count, "seconds": round(seconds, 3), "rate": count / seconds}


def start_baseline_loop(bench, queue_url: str, count: int, wait: int, out, *, progress: bool = False):
    """The bare boto3 receive/delete loop (bench/baselines.py) on `queue_url`, in its own process.

    With `progress` it prints the count deleted so far after each batch (read from its stdout).
    """
    command = [sys.executable, "-m", "bench.baselines", "consume", "--endpoint", bench.moto_url]
    command += ["--queue-url", queue_url, "--count", str(count), "--wait", str(wait), "--out", str(out)]
    if progress:
        command.append("--progress")
    return subprocess.Popen(  # noqa: S603
        command, cwd=REPO_DIR, stdout=subprocess.PIPE if progress else None, text=True
    )


def baseline_ingest(bench, count: int, run: str, *, wait: int = 10) -> dict:
    """The same sends to another queue, drained by a bare boto3 receive/delete loop."""
    queue_url = make_queue(bench.moto_url, f"bench-baseline-{run}")
    out = bench.out_dir / f"baseline-consume-{run}.json"
    loop = start_baseline_loop(bench, queue_url, count, wait, out, progress=True)
    progress = [0]

    def read_progress() -> None:
        for line in loop.stdout:  # one line per deleted batch: the count so far
            progress[0] = int(line)

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    time.sleep(1.5)  # the loop is up and long-polling (boto3's import takes most of this)
    started = send_batches(bench.moto_url, queue_url, bodies(count, run), lambda: progress[0])
    loop.wait(timeout=max(120, count * 0.2))
    reader.join(timeout=5)
    result = json.loads(out.read_text())
    if result["count"] < count:
        raise RuntimeError(f"the baseline loop received {result['count']} of {count}")
    seconds = result["done"] - started
    return {"n": count, "seconds": round(seconds, 3), "rate": count / seconds}


def exercise_web(bench, times: int) -> None:
    """Serve the approver's pages a few times, so the web's peak RSS reflects the data size."""
    from approvals.models import ApprovalRequest

    approver = common.ensure_user(common.APPROVER_EMAIL, groups=[common.APPROVER_GROUP])
    session = common.signed_in_session(approver, bench.web_url)
    latest = ApprovalRequest.objects.order_by("-id").values_list("public_id", flat=True).first()
    pages = ["/", "/?tab=groups", f"/requests/{latest}/", "/admin/approvals/approvalrequest/"]
    for _ in range(times):
        for page in pages:
            response = session.get(bench.web_url + page, timeout=60)
            if response.status_code != 200:
                raise RuntimeError(f"GET {page}: {response.status_code}")


def run(bench) -> None:
    from approvals.models import IngestError

    sizes = bench.sizes
    n, warm = sizes["ingest_n"], sizes["ingest_warmup"]
    if bench.worker is None:
        bench.start_worker(concurrency=1)

    # Warm-up: the consumer's connections, moto's queue, PostgreSQL's caches; then memory point 1.
    portal_ingest(bench, warm, "warm")
    baseline_ingest(bench, min(warm, 500), "warm")
    exercise_web(bench, sizes["ingest_web_rounds"])
    memory_1 = bench.rss()
    total_1 = request_count()

    moto_cpu = stack.cpu_seconds(bench.moto)
    baseline = baseline_ingest(bench, n, "measured")
    baseline["moto_cpu_ms_per_msg"] = round(1000 * (stack.cpu_seconds(bench.moto) - moto_cpu) / n, 2)
    moto_cpu, worker_cpu = stack.cpu_seconds(bench.moto), stack.cpu_seconds(bench.worker)
    pool_cpu = stack.cpu_seconds(bench.worker, children_only=True)
    with bench.profiling("ingest", bench.worker, thread_filter="consume_once"):
        portal = portal_ingest(bench, n, "measured")
    portal["moto_cpu_ms_per_msg"] = round(1000 * (stack.cpu_seconds(bench.moto) - moto_cpu) / n, 2)
    portal["worker_cpu_ms_per_msg"] = round(1000 * (stack.cpu_seconds(bench.worker) - worker_cpu) / n, 2)
    # The pool's children run the tasks ingestion queues (the approvers' notifications).
    portal["pool_cpu_ms_per_msg"] = round(
        1000 * (stack.cpu_seconds(bench.worker, children_only=True) - pool_cpu) / n, 2
    )
    errors = IngestError.objects.count()
    exercise_web(bench, sizes["ingest_web_rounds"])
    memory_2 = bench.rss()
    total_2 = request_count()

    # Scale-out (full run only): a second worker node, i.e. a second consumer on the same queue.
    scaled = None
    if sizes["ingest_scaleout_n"]:
        second = stack.start_worker(bench.worker_env, bench.log_dir, concurrency=1, name="worker2")
        bench.own.append(second)
        try:
            portal_ingest(bench, 100, "scaleout-warm")
            scaled = portal_ingest(bench, sizes["ingest_scaleout_n"], "scaleout")
        finally:
            second.stop()

    ratio = portal["rate"] / baseline["rate"]
    bench.rows.append(
        Row(
            "1 ingest",
            "baseline: boto3 receive+delete",
            n=n,
            throughput=baseline["rate"],
            throughput_unit=" msg/s",
            notes="",
            extra=baseline,
        )
    )
    bench.rows.append(
        Row(
            "1 ingest",
            "portal: 1 worker (1 consumer)",
            n=n,
            throughput=portal["rate"],
            throughput_unit=" msg/s",
            rss_worker=memory_2["worker"],
            rss_web=memory_2["web"],
            ratio=ratio,
            goal="rate ≥ 0.8 × base",
            passed=ratio >= 0.8,
            notes=f"{portal['seconds']:.1f}s vs baseline {baseline['seconds']:.1f}s; ingest errors: {errors}; "
            f"CPU per message: worker {portal['worker_cpu_ms_per_msg']} ms (of which its pool's notification "
            f"tasks {portal['pool_cpu_ms_per_msg']} ms), moto {portal['moto_cpu_ms_per_msg']} ms "
            f"(baseline: moto {baseline['moto_cpu_ms_per_msg']} ms)",
            extra=portal,
        )
    )
    if scaled is not None:
        bench.rows.append(
            Row(
                "1 ingest",
                "portal: 2 workers (2 consumers)",
                n=scaled["n"],
                throughput=scaled["rate"],
                throughput_unit=" msg/s",
                ratio=scaled["rate"] / baseline["rate"],
                goal="rate ≥ 0.8 × base",
                passed=scaled["rate"] / baseline["rate"] >= 0.8,
                notes="a second Celery worker node on the same queue (scale-out, as in production)",
                extra=scaled,
            )
        )
    for role in ("worker", "web"):
        before, after = memory_1[role], memory_2[role]
        if not before or not after:
            continue
        growth = after["max_mib"] / before["max_mib"] - 1
        bench.rows.append(
            Row(
                "7 memory",
                f"{role}: after {total_1:,} → {total_2:,} ingested",
                n=total_2,
                rss_worker=after if role == "worker" else None,
                rss_web=after if role == "web" else None,
                ratio=after["max_mib"] / before["max_mib"],
                goal="growth ≤ 10 %",
                passed=growth <= 0.10,
                notes=f"{role} peak RSS {before['max_mib']:.0f} → {after['max_mib']:.0f} MiB ({growth:+.1%}); "
                f"sum over its {after['processes']} processes {before['sum_mib']:.0f} → {after['sum_mib']:.0f} MiB",
                extra={"before": before, "after": after, "requests_before": total_1, "requests_after": total_2},
            )
        )
    print(
        f"ingest: portal {portal['rate']:.0f} msg/s, baseline {baseline['rate']:.0f} msg/s (ratio {ratio:.2f}); "
        f"memory {memory_1} → {memory_2}",
        flush=True,
    )
