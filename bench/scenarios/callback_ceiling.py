"""Scenario 4: the callback ceiling — delivered callbacks per second.

Step Functions is replaced by bench/fake_sfn.py, which answers SendTaskSuccess with `200 {}` at
once, so the emulator is not what is measured. Workers run with the queue consumer off and
AWS_ENDPOINT_URL pointing at the fake endpoint.

Portal: M approved requests with their pending outbox rows (real-format ~1,000-char tokens,
encrypted as the portal stores them) are created in bulk; then one deliver_callback task per row
is queued, as a burst of decisions queues them, and the rate is M ÷ (last delivered_at − the first
enqueue). Each task does what it does in production: it claims its own callback and whatever else
is due, up to CALLBACK_BATCH_SIZE (SKIP LOCKED), re-checks the deciders, decrypts, sends
SendTaskSuccess on one client (CALLBACK_SEND_THREADS), and marks the batch delivered with its
audit events; the tasks queued for callbacks an earlier batch sent find nothing to do.
Baseline: the same number of processes, each a bare boto3 send_task_success loop against the same
endpoint, with a count sized so that its window is comparable to the portal's. Three alternating
pairs; the ratio is their median. Goal: ratio ≥ 0.5.
AWS's own ceiling for the Send* calls is about 500 per second per account in the largest regions (token bucket, quotas).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench import common, stack
from bench.common import Row
from bench.stack import REPO_DIR

AWS_CEILING = 500  # Send* calls per second per account, largest regions


def decided_requests_with_callbacks(count: int, run: str) -> list[int]:
    """Approved requests and their pending callbacks, as approval_decide leaves them."""
    from django.utils import timezone

    from approvals.models import ApprovalRequest, Callback

    approver = common.ensure_user(common.APPROVER_EMAIL, groups=[common.APPROVER_GROUP])
    ids = common.bulk_requests(
        count, assignee_emails=[common.APPROVER_EMAIL], status="approved", decided_by=approver, run=run
    )
    now = timezone.now().isoformat()
    callbacks = []
    for request in ApprovalRequest.objects.filter(pk__in=ids).only("id", "public_id"):
        output = {
            "approved": True,
            "requestId": str(request.public_id),
            "decision": "approved",
            "decidedBy": {"email": approver.email, "sub": approver.oidc_sub, "issuer": approver.oidc_issuer},
            "decidedAt": now,
            "comment": "",
        }
        callbacks.append(Callback(request_id=request.pk, kind=Callback.Kind.SUCCESS, payload={"output": output}))
    return [c.pk for c in Callback.objects.bulk_create(callbacks, batch_size=2000)]


def deliver(callback_ids: list[int], timeout: float) -> dict:
    """Queue one deliver_callback per id; wait for all to be delivered; the rate from the first enqueue."""
    from django.db.models import Max

    from approvals.models import Callback
    from approvals.tasks import deliver_callback

    started = time.time()
    for callback_id in callback_ids:
        deliver_callback.delay(callback_id)
    enqueued = time.time()
    deadline = time.monotonic() + timeout
    rows = Callback.objects.filter(pk__in=callback_ids)
    while time.monotonic() < deadline:
        if rows.filter(status="delivered").count() == len(callback_ids):
            break
        time.sleep(0.1)
    delivered = rows.filter(status="delivered").count()
    failed = rows.exclude(status="delivered").count()
    if delivered < len(callback_ids):
        raise RuntimeError(f"{delivered} of {len(callback_ids)} callbacks delivered ({failed} not) in {timeout:.0f}s")
    last = rows.aggregate(last=Max("delivered_at"))["last"].timestamp()
    return {
        "n": len(callback_ids),
        "seconds": round(last - started, 3),
        "enqueue_seconds": round(enqueued - started, 3),
        "rate": len(callback_ids) / (last - started),
    }


def baseline(bench, processes: int, count: int) -> dict:
    per_process = count // processes
    start_at = time.time() + 2  # all processes have imported boto3 and warmed up by then
    outs = [bench.out_dir / f"baseline-callbacks-{processes}-{i}.json" for i in range(processes)]
    loops = [
        subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "bench.baselines",
                "callbacks",
                "--endpoint",
                bench.fake_sfn_url,
                "--count",
                str(per_process),
                "--start-at",
                str(start_at),
                "--out",
                str(out),
            ],  # fmt: skip
            cwd=REPO_DIR,
        )
        for out in outs
    ]
    for loop in loops:
        loop.wait(timeout=600)
    results = [json.loads(out.read_text()) for out in outs]
    seconds = max(r["done"] for r in results) - min(r["started"] for r in results)
    total = per_process * processes
    return {"n": total, "seconds": round(seconds, 3), "rate": total / seconds}


def fake_sfn_worker_env(bench) -> dict:
    """Start the fake Step Functions endpoint (once); the environment of workers that use it.

    The consumer stays off: these workers only deliver callbacks, to the fake endpoint.
    """
    if not bench.fake_sfn_url:
        fake, bench.fake_sfn_url = stack.start_fake_sfn(bench.base_env(), bench.log_dir)
        bench.own.append(fake)
    return {"AWS_ENDPOINT_URL": bench.fake_sfn_url, "APPROVAL_CONSUMER_ENABLED": "false"}


def run(bench) -> None:
    from bench.scenarios.ingest import comparable_count, median

    sizes = bench.sizes
    m, repeats = sizes["ceiling_n"], sizes["repeats"]
    worker_env = fake_sfn_worker_env(bench)
    for processes in sizes["ceiling_processes"]:
        bench.start_worker(concurrency=processes, **worker_env)
        warm = deliver(decided_requests_with_callbacks(20 * processes, f"ceil-warm-{processes}"), timeout=120)
        base_rate = baseline(bench, processes, m)["rate"]
        portal_seconds = m / warm["rate"]
        portals: list[dict] = []
        bases: list[dict] = []
        # `repeats` pairs, alternating which goes first; the baseline's count is sized so that its
        # window is comparable to the portal's (the bare loop is ~30 × faster: the same count
        # would last a fraction of a second).
        for repeat in range(repeats):
            order = ("portal", "baseline") if repeat % 2 == 0 else ("baseline", "portal")
            for side in order:
                if side == "baseline":
                    count = comparable_count(portal_seconds, base_rate, m, most=20) // processes * processes
                    bases.append(baseline(bench, processes, count))
                    base_rate = bases[-1]["rate"]
                    continue
                ids = decided_requests_with_callbacks(m, f"ceil-{processes}-{repeat}")
                with bench.profiling("callback_ceiling" if repeat == 0 else "", bench.worker):
                    portals.append(deliver(ids, timeout=max(120, m * 0.5)))
                portal_seconds = portals[-1]["seconds"]
        rss = bench.rss()
        ratios = [p["rate"] / b["rate"] for p, b in zip(portals, bases, strict=True)]
        ratio = median(ratios)
        portal = {"n": m, "rate": median([p["rate"] for p in portals]), "repeats": portals, "ratios": ratios}
        base = {"n": bases[0]["n"], "rate": median([b["rate"] for b in bases]), "repeats": bases}
        windows = ", ".join(f"{p['seconds']:.1f}s/{b['seconds']:.1f}s" for p, b in zip(portals, bases, strict=True))
        label = f"{processes} process{'es' if processes > 1 else ''}"
        bench.rows.append(
            Row(
                "4 callback ceiling",
                f"baseline: boto3 loop, {label}",
                n=base["n"],
                throughput=base["rate"],
                notes=f"median of {repeats}; counts {[b['n'] for b in bases]}, sized for windows comparable to the "
                "portal's",
                extra=base,
            )
        )
        bench.rows.append(
            Row(
                "4 callback ceiling",
                f"portal: deliver_callback, {label}",
                n=portal["n"],
                throughput=portal["rate"],
                rss_worker=rss["worker"],
                ratio=ratio,
                goal="rate ≥ 0.5 × base",
                passed=ratio >= 0.5,
                notes=f"median of {repeats} alternating pairs, ratios {[round(r, 3) for r in ratios]}; windows "
                f"portal/baseline: {windows}; {portal['rate']:.0f}/s is {portal['rate'] / AWS_CEILING:.0%} of AWS's "
                f"~{AWS_CEILING}/s Send* quota; enqueueing took {[p['enqueue_seconds'] for p in portals]}s",
                extra=portal,
            )
        )
        print(
            f"ceiling {label}: portal {portal['rate']:.0f}/s, baseline {base['rate']:.0f}/s (median ratio {ratio:.3f})",
            flush=True,
        )
