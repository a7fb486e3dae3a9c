"""Scenario 3: decision-to-callback latency, on real executions of the demo state machine.

K executions of deploy/state-machine.asl.json (demo_definition) run on the moto server and wait
on `sqs:sendMessage.waitForTaskToken`; the portal's consumer ingests their messages. Then the
approver POSTs "approve" for each, at a steady rate from a pool of HTTP clients.

"Accepted" is when SendTaskSuccess returned successfully:
- portal: the callback row's `delivered_at`, which deliver_callback sets right after
  SendTaskSuccess returned (the POST → outbox row → broker → worker → claim → AWS path);
- baseline: the response to the same POST sent to a bench-only view (bench/baseline_urls.py)
  that calls SendTaskSuccess inline before answering.
Latency = that moment − just before the POST. The portal runs with 1 and with 4 worker
processes (`--concurrency`). Every execution must end SUCCEEDED. No goal is set for the ratio.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench import common
from bench.common import Row

ROLE_ARN = "arn:aws:iam::123456789012:role/approval-demo-states"


def state_machine(bench) -> str:
    from approvals.integrations import aws as gateway
    from approvals.management.commands.aws_bootstrap import demo_definition

    return gateway.ensure_state_machine(
        name="bench-approval-demo", definition=demo_definition(bench.queue_url, from_input=True), role_arn=ROLE_ARN
    )


def start_waiting_executions(machine_arn: str, count: int, run: str) -> list:
    """Start `count` executions and return their requests once the portal ingested them all."""
    from approvals.integrations import aws as gateway
    from approvals.models import ApprovalRequest

    arns = []
    for n in range(count):
        arns.append(
            gateway.start_execution(
                state_machine_arn=machine_arn,
                name=f"{run}-{n}-{uuid.uuid4().hex[:6]}",
                execution_input={
                    "title": f"Approve purchase {n} ({run})",
                    "approvers": {"users": [common.APPROVER_EMAIL], "groups": []},
                    "requester": common.REQUESTER_EMAIL,
                    "details": {"order": {"id": n, "total": {"amount": "120.00", "currency": "EUR"}}},
                },
            )
        )
    deadline = time.monotonic() + 60 + count
    while time.monotonic() < deadline:
        requests = list(ApprovalRequest.objects.filter(execution_arn__in=arns, status="pending"))
        if len(requests) == count:
            return requests
        time.sleep(0.2)
    raise RuntimeError(f"only {len(requests)} of {count} executions reached the portal")


def decide_all(bench, requests: list, *, path: str, rate: float) -> list[tuple]:
    """POST approve for each request at `rate` per second; (request, started, answered, status)."""
    approver = common.ensure_user(common.APPROVER_EMAIL, groups=[common.APPROVER_GROUP])
    sessions = [common.signed_in_session(approver, bench.web_url) for _ in range(8)]
    start = time.time() + 0.2

    def one(index: int, request) -> tuple:
        delay = start + index / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        session = sessions[index % len(sessions)]
        before = time.time()
        response = session.post(
            f"{bench.web_url}{path.format(id=request.public_id)}",
            data={"csrfmiddlewaretoken": common.CSRF_SECRET, "decision": "approve", "comment": "bench"},
            allow_redirects=False,
            timeout=60,
        )
        return request, before, time.time(), response.status_code

    with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
        return list(pool.map(one, range(len(requests)), requests))


def wait_delivered(requests: list, timeout: float = 120) -> dict:
    from approvals.models import Callback

    ids = [r.pk for r in requests]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = dict(
            Callback.objects.filter(request_id__in=ids, status="delivered").values_list("request_id", "delivered_at")
        )
        if len(rows) == len(ids):
            return rows
        time.sleep(0.1)
    raise RuntimeError(f"{len(ids) - len(rows)} of {len(ids)} callbacks not delivered in {timeout:.0f}s")


def executions_succeeded(requests: list, timeout: float = 60) -> int:
    from approvals.integrations import aws as gateway

    deadline = time.monotonic() + timeout
    pending = {r.execution_arn for r in requests}
    while pending and time.monotonic() < deadline:
        pending = {arn for arn in pending if gateway.describe_execution(execution_arn=arn)["status"] == "RUNNING"}
        if pending:
            time.sleep(0.5)
    return sum(gateway.describe_execution(execution_arn=r.execution_arn)["status"] == "SUCCEEDED" for r in requests)


def measure(bench, machine_arn: str, *, inline: bool, run: str, processes: int = 1) -> tuple[dict, dict]:
    sizes = bench.sizes
    n, rate = sizes["callback_n"], sizes["callback_rate"]
    # Enough warm-up decisions that every pool process has run deliver_callback once (its own
    # database connection and boto3 client are made on its first task).
    warm = max(sizes["callback_warmup"], 3 * processes)
    path = "/bench-baseline/{id}/decide/" if inline else "/requests/{id}/decide/"
    began = time.time()
    requests = start_waiting_executions(machine_arn, warm + n, run)
    waiting = time.time()
    with bench.profiling("callback_latency" if not inline else "callback_latency_inline", bench.worker):
        results = decide_all(bench, requests, path=path, rate=rate)
    bad = [status for _, _, _, status in results if status not in {302, 303}]
    if bad:
        raise RuntimeError(f"{len(bad)} decisions answered {sorted(set(bad))}")
    if inline:
        latencies = [1000 * (answered - before) for _, before, answered, _ in results[warm:]]
    else:
        delivered = wait_delivered(requests)
        latencies = [1000 * (delivered[r.pk].timestamp() - before) for r, before, _, _ in results[warm:]]
    decided = time.time()
    succeeded = executions_succeeded(requests)
    print(
        f"callback latency {run}: {len(requests)} executions waiting after {waiting - began:.1f}s, decided and "
        f"accepted after {decided - waiting:.1f}s more, ended after {time.time() - decided:.1f}s more",
        flush=True,
    )
    return common.summarize_ms(latencies), {"executions": len(requests), "succeeded": succeeded}


def run(bench) -> None:
    machine_arn = state_machine(bench)
    rate = bench.sizes["callback_rate"]
    if bench.worker is None:
        bench.start_worker(concurrency=1)

    base, base_check = measure(bench, machine_arn, inline=True, run="inline")
    bench.rows.append(
        Row(
            "3 decision→callback",
            "baseline: SendTaskSuccess inline",
            n=base["n"],
            latency=base,
            throughput=rate,
            throughput_unit=" dec/s",
            notes=f"executions SUCCEEDED: {base_check['succeeded']}/{base_check['executions']}",
            extra=base_check,
        )
    )
    for concurrency in (1, 4):
        if bench.worker is None or concurrency != 1:
            bench.start_worker(concurrency=concurrency)
        portal, check = measure(bench, machine_arn, inline=False, run=f"outbox-c{concurrency}", processes=concurrency)
        rss = bench.rss()
        bench.rows.append(
            Row(
                "3 decision→callback",
                f"portal: outbox, {concurrency} worker process{'es' if concurrency > 1 else ''}",
                n=portal["n"],
                latency=portal,
                throughput=rate,
                throughput_unit=" dec/s",
                rss_worker=rss["worker"],
                rss_web=rss["web"],
                ratio=portal["p95_ms"] / base["p95_ms"],
                goal="(p95 ratio, no goal)",
                notes=f"accepted = callback delivered_at; "
                f"executions SUCCEEDED: {check['succeeded']}/{check['executions']}",
                extra=check,
            )
        )
        print(f"callback latency c={concurrency}: p95 {portal['p95_ms']} ms vs inline {base['p95_ms']} ms", flush=True)
