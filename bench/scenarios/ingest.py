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
import statistics
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
# side (PostgreSQL's commit notifications, bench/progress.py; the baseline loop's output), never
# by asking the emulator (which would cost the emulator CPU that both consumers need) nor by
# querying the database in a loop (which would cost PostgreSQL CPU the portal needs).
MAX_DEPTH = 40
NOTIFICATION_POLL_SECONDS = 0.25  # the notifications' progress: at most 4 queries a second


def send_batches(
    endpoint: str, queue_url: str, bodies: list[str], consumed: Callable[[], int], *, max_depth: int = MAX_DEPTH
) -> tuple[float, list[str]]:
    """SendMessageBatch, 10 at a time, never more than `max_depth` ahead of the consumer.

    Returns when the first call started, and the message ids SQS gave the messages.
    """
    sqs = sqs_client(endpoint)
    started = time.time()
    sent: list[str] = []
    while len(sent) < len(bodies):
        if len(sent) - consumed() + 10 > max_depth:
            time.sleep(0.005)  # an in-memory count: no query
            continue
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[len(sent) : len(sent) + 10])]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"SendMessageBatch refused {len(response['Failed'])} messages")
        sent += [entry["MessageId"] for entry in response["Successful"]]
    return started, sent


def bodies(count: int, run: str) -> list[str]:
    return [common.message_body(common.real_format_token(), n, run=run) for n in range(count)]


def request_count() -> int:
    from approvals.models import ApprovalRequest

    return ApprovalRequest.objects.count()


def _one(database_url: str, sql: str, params: list | None = None) -> tuple:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        return connection.execute(sql, params or []).fetchone()


def _mail_files(bench) -> int:
    return sum(1 for _ in bench.mail_dir.glob("*.log")) if bench.mail_dir.is_dir() else 0


def wait_for_notifications(database_url: str, after_request_id: int, requests: int, deadline: float) -> dict:
    """Until every request above `after_request_id` has its notifications planned and none is
    pending any more; polled at most 4 times a second, on one connection."""
    import psycopg

    sql = """
        SELECT count(DISTINCT request_id), count(*) FILTER (WHERE status = 'pending'),
               count(*) FILTER (WHERE status = 'sent'), count(*), max(updated_at)
        FROM approvals_notification WHERE request_id > %s
    """
    with psycopg.connect(database_url, autocommit=True) as connection:
        while True:
            planned_for, pending, sent, total, last = connection.execute(sql, [after_request_id]).fetchone()
            if planned_for >= requests and pending == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"notifications: {pending} of {total} still pending, {requests - planned_for} requests without "
                    "any, after the deadline"
                )
            time.sleep(NOTIFICATION_POLL_SECONDS)
    return {"sent": sent, "total": total, "not_sent": total - sent, "last": last.timestamp() if last else 0.0}


def portal_ingest(bench, count: int, run: str) -> dict:
    """Send `count` messages to the portal's queue; time until every one is a committed request
    and every notification those requests caused left `pending` (sent, or failed/skipped)."""
    payload = bodies(count, run)
    committed = bench.committed_requests
    base_id = _one(bench.database_url, "SELECT coalesce(max(id), 0) FROM approvals_approvalrequest")[0]
    mail_before = _mail_files(bench)
    mark = committed.count()
    sent: list = []

    def feed() -> None:
        try:
            sent.append(send_batches(bench.moto_url, bench.queue_url, payload, lambda: committed.count() - mark))
        except Exception as error:  # noqa: BLE001 - reported by the waiting loop below
            sent.append(error)

    sender = threading.Thread(target=feed, daemon=True)
    sender.start()
    deadline = time.monotonic() + max(120, count * 0.3)
    while True:  # in-memory checks only: the listener thread records the commits
        if sent and isinstance(sent[0], Exception):
            raise sent[0]
        missing = [mid for mid in sent[0][1] if mid not in committed.seen] if sent else None
        if missing == []:
            break
        if time.monotonic() > deadline:
            left = len(missing) if missing is not None else count - (committed.count() - mark)
            raise RuntimeError(f"{left} of {count} messages not committed as requests after the deadline")
        time.sleep(0.05)
    started, message_ids = sent[0]
    rows_done = max(committed.seen[mid] for mid in message_ids)
    notifications = wait_for_notifications(bench.database_url, base_id, count, deadline)
    done = max(rows_done, notifications["last"])
    # Counted by the run's own message ids: each exactly once, and nothing else was inserted.
    rows, distinct = _one(
        bench.database_url,
        "SELECT count(*), count(DISTINCT sqs_message_id) FROM approvals_approvalrequest WHERE sqs_message_id = ANY(%s)",
        [message_ids],
    )
    inserted = _one(bench.database_url, "SELECT count(*) FROM approvals_approvalrequest WHERE id > %s", [base_id])[0]
    if not (rows == distinct == inserted == count) or committed.duplicates:
        raise RuntimeError(
            f"{count} messages sent: {rows} requests with their message ids, {distinct} distinct, {inserted} inserted, "
            f"{committed.duplicates} message ids committed twice"
        )
    seconds = done - started
    return {
        "n": count,
        "seconds": round(seconds, 3),
        "rows_seconds": round(rows_done - started, 3),
        "rate": count / seconds,
        "notifications_sent": notifications["sent"],
        "notifications_not_sent": notifications["not_sent"],
        "notification_rate": notifications["sent"] / seconds,
        "mail_files": _mail_files(bench) - mail_before,
        "distinct_requests": distinct,
    }


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
    started, _ = send_batches(bench.moto_url, queue_url, bodies(count, run), lambda: progress[0])
    loop.wait(timeout=max(120, count * 0.2))
    reader.join(timeout=5)
    result = json.loads(out.read_text())
    if result["count"] < count:
        raise RuntimeError(f"the baseline loop received {result['count']} of {count}")
    seconds = result["done"] - started
    return {"n": count, "seconds": round(seconds, 3), "rate": count / seconds}


def comparable_count(portal_seconds: float, baseline_rate: float, n: int, *, most: int = 5) -> int:
    """How many messages give the baseline a window about as long as the portal's (a baseline of
    1 s beside a portal run of 40 s is not comparable: warm-up and noise weigh differently): at
    least the portal's count, at most `most` times it, in whole batches of 10."""
    wanted = int(portal_seconds * baseline_rate)
    return max(n, min(most * n, wanted)) // 10 * 10


def median(values: list[float]) -> float:
    return statistics.median(values)


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
    n, warm, repeats = sizes["ingest_n"], sizes["ingest_warmup"], sizes["repeats"]
    if bench.worker is None:
        bench.start_worker(concurrency=1)

    # Warm-up: the consumer's connections, moto's queue, PostgreSQL's caches; then memory point 1.
    warm_portal = portal_ingest(bench, warm, "warm")
    baseline_rate = baseline_ingest(bench, min(warm, 500), "warm")["rate"]
    exercise_web(bench, sizes["ingest_web_rounds"])
    memory_1 = bench.rss()
    total_1 = request_count()

    # `repeats` pairs, alternating which goes first (P B, B P, P B), so that a drift of the machine's
    # load during the scenario weighs on both sides alike. The baseline's count is sized so that its
    # window is comparable to the portal's (comparable_count).
    portals: list[dict] = []
    baselines: list[dict] = []
    moto_cpu = worker_cpu = pool_cpu = baseline_moto_cpu = 0.0
    portal_seconds = n / warm_portal["rate"]
    for repeat in range(repeats):
        order = ("portal", "baseline") if repeat % 2 == 0 else ("baseline", "portal")
        for side in order:
            if side == "baseline":
                count = comparable_count(portal_seconds, baseline_rate, n)
                before = stack.cpu_seconds(bench.moto)
                result = baseline_ingest(bench, count, f"measured-{repeat}")
                baseline_moto_cpu += stack.cpu_seconds(bench.moto) - before
                baseline_rate = result["rate"]
                baselines.append(result)
                continue
            before = (
                stack.cpu_seconds(bench.moto),
                stack.cpu_seconds(bench.worker),
                stack.cpu_seconds(bench.worker, children_only=True),
            )
            with bench.profiling("ingest" if repeat == 0 else "", bench.worker, thread_filter="consume_once"):
                result = portal_ingest(bench, n, f"measured-{repeat}")
            moto_cpu += stack.cpu_seconds(bench.moto) - before[0]
            worker_cpu += stack.cpu_seconds(bench.worker) - before[1]
            # The pool's children run the tasks ingestion queues (the approvers' notifications).
            pool_cpu += stack.cpu_seconds(bench.worker, children_only=True) - before[2]
            portal_seconds = result["seconds"]
            portals.append(result)
        print(
            f"ingest repeat {repeat + 1}: portal {portals[-1]['rate']:.0f} rows/s in {portals[-1]['seconds']:.1f}s, "
            f"baseline {baselines[-1]['rate']:.0f} msg/s in {baselines[-1]['seconds']:.1f}s",
            flush=True,
        )
    ratios = [p["rate"] / b["rate"] for p, b in zip(portals, baselines, strict=True)]
    ratio = median(ratios)
    measured = n * repeats
    portal = {
        "n": n,
        "repeats": portals,
        "rate": median([p["rate"] for p in portals]),
        "notification_rate": median([p["notification_rate"] for p in portals]),
        "ratios": [round(r, 3) for r in ratios],
        "moto_cpu_ms_per_msg": round(1000 * moto_cpu / measured, 2),
        "worker_cpu_ms_per_msg": round(1000 * worker_cpu / measured, 2),
        "pool_cpu_ms_per_msg": round(1000 * pool_cpu / measured, 2),
    }
    baseline = {
        "n": baselines[0]["n"],
        "repeats": baselines,
        "rate": median([b["rate"] for b in baselines]),
        "moto_cpu_ms_per_msg": round(1000 * baseline_moto_cpu / sum(b["n"] for b in baselines), 2),
    }
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

    windows = ", ".join(f"{p['seconds']:.1f}s/{b['seconds']:.1f}s" for p, b in zip(portals, baselines, strict=True))
    bench.rows.append(
        Row(
            "1 ingest",
            "baseline: boto3 receive+delete",
            n=baseline["n"],
            throughput=baseline["rate"],
            throughput_unit=" msg/s",
            notes=f"median of {repeats}; counts {[b['n'] for b in baselines]}, sized for windows comparable to the "
            "portal's",
            extra=baseline,
        )
    )
    bench.rows.append(
        Row(
            "1 ingest",
            "portal: 1 worker (its consumer threads)",
            n=n,
            throughput=portal["rate"],
            throughput_unit=" rows/s",
            rss_worker=memory_2["worker"],
            rss_web=memory_2["web"],
            ratio=ratio,
            goal="rate ≥ 0.8 × base",
            passed=ratio >= 0.8,
            notes=f"median of {repeats} alternating pairs, ratios {portal['ratios']}; each run ends when its last "
            f"notification left 'pending'; notifications sent {portal['notification_rate']:.1f}/s "
            f"({sum(p['notifications_sent'] for p in portals)} sent, "
            f"{sum(p['notifications_not_sent'] for p in portals)} failed/skipped, "
            f"{sum(p['mail_files'] for p in portals)} mail files); windows portal/baseline: {windows}; "
            f"rows alone took {[p['rows_seconds'] for p in portals]}s; every run's message ids distinct and counted "
            f"once; ingest errors: {errors}; CPU per message: worker {portal['worker_cpu_ms_per_msg']} ms (of which "
            f"its pool's notification tasks {portal['pool_cpu_ms_per_msg']} ms), moto {portal['moto_cpu_ms_per_msg']} "
            f"ms (baseline: moto {baseline['moto_cpu_ms_per_msg']} ms)",
            extra=portal,
        )
    )
    bench.rows.append(
        Row(
            "1 ingest",
            "portal: notifications sent",
            n=sum(p["notifications_sent"] for p in portals) // repeats,
            throughput=portal["notification_rate"],
            throughput_unit=" sent/s",
            notes="same runs as the line above: notifications sent ÷ the same window",
        )
    )
    if scaled is not None:
        bench.rows.append(
            Row(
                "1 ingest",
                "portal: 2 workers (2 × their consumer threads)",
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
        f"ingest: portal {portal['rate']:.0f} rows/s, {portal['notification_rate']:.0f} notifications/s; baseline "
        f"{baseline['rate']:.0f} msg/s (median ratio {ratio:.2f}); "
        f"memory {memory_1} → {memory_2}",
        flush=True,
    )
