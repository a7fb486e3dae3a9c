"""Scenario 8: large details stay cheap — the request page and the mail for a message at the size
limit, beside a small one.

Django's test client, in this process, against the bench database (DEBUG off, the full middleware
stack), signed in as the approver. Two requests are ingested through the contract and the ingest
service: one with the bench's usual small details, one whose details fill the message up to the
contract's size limit (256 KiB) with the shape that weighed most when rendered whole: many small
objects (each a nested table). Each page is warmed up, then requested `details_repeat` times:
p50/p95/p99/max of the whole request, its size and its number of SQL queries. The mail is the
new-request email to the approver (approvals/notifications: build the content, render the HTML and
plain-text parts, serialize the MIME message), timed the same way. "Show all" (the full details,
on their own page) and the result page's JSON status are measured beside them, for reference.
Goal: the request page at the size limit, p95 < 1 s (in practice it should be tens of ms).
"""

from __future__ import annotations

import json
import time

from bench import common
from bench.common import Row

PAGE_GOAL_MS = 1000.0


def _body(details: dict, *, run: str, label: str) -> str:
    return json.dumps(
        {
            "taskToken": common.real_format_token(),
            "title": f"Approve order ({label} details, {run})",
            "approvers": {"users": [common.APPROVER_EMAIL], "groups": [common.APPROVER_GROUP]},
            "requester": common.REQUESTER_EMAIL,
            "details": details,
            "execution": f"arn:aws:states:{common.REGION}:{common.ACCOUNT}:execution:bench-flow:{run}-{label}",
            "stateMachine": common.MACHINE_ARN,
            "state": "WaitForApproval",
        }
    )


def details_at_size_limit(run: str) -> dict:
    """Many small objects, grown until the whole message is just under the contract's limit."""
    from approvals.contract import DEFAULT_MAX_BYTES

    items: list[dict] = []
    size = len(_body({"lines": []}, run=run, label="large").encode())
    while True:
        item = {key: len(items) % 10 for key in "abcdefgh"}
        grown = size + len(json.dumps(item).encode()) + 2
        if grown > DEFAULT_MAX_BYTES - 64:
            return {"lines": items}
        items.append(item)
        size = grown


def _ingest(body: str):
    from approvals import services
    from approvals.contract import parse_message

    request, _ = services.approval_request_ingest(message=parse_message(body))
    return request


def _timed(call, repeat: int) -> tuple[dict, object]:
    for _ in range(3):
        result = call()
    timings = []
    for _ in range(repeat):
        before = time.perf_counter()
        result = call()
        timings.append(1000 * (time.perf_counter() - before))
    return common.summarize_ms(timings), result


def _page(client, url: str, repeat: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def get():
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code}")
        return response

    with CaptureQueriesContext(connection) as queries:
        get()
    query_count = len(queries.captured_queries)
    latency, response = _timed(get, repeat)
    return {**latency, "bytes": len(response.content), "queries": query_count}


def _mail(request, repeat: int) -> dict:
    from approvals.models import Notification
    from approvals.notifications import email, messages

    notification = Notification.objects.create(
        request=request,
        channel=Notification.Channel.EMAIL,
        recipient=common.APPROVER_EMAIL,
        kind=Notification.Kind.NEW_REQUEST,
        status=Notification.Status.SENT,  # not for sending: only rendered here
    )

    def render() -> bytes:
        fresh = Notification.objects.select_related("request").get(pk=notification.pk)
        return email.render(messages.build(fresh), to=common.APPROVER_EMAIL).message().as_bytes()

    latency, raw = _timed(render, repeat)
    return {**latency, "bytes": len(raw)}


def run(bench) -> None:
    from approvals.models import ApprovalRequest

    repeat = bench.sizes["details_repeat"]
    run_id = common.unique_run_id()
    approver = common.ensure_user(common.APPROVER_EMAIL, groups=[common.APPROVER_GROUP])
    client = _client(approver)

    large_details = details_at_size_limit(run_id)
    bodies = {
        "small": _body(json.loads(common.message_body("-", 1, run=run_id))["details"], run=run_id, label="small"),
        "256 KiB": _body(large_details, run=run_id, label="large"),
    }
    requests = {label: _ingest(body) for label, body in bodies.items()}
    for label, request in requests.items():
        request = ApprovalRequest.objects.get(pk=request.pk)
        message_bytes = len(bodies[label].encode())
        detail_bytes = len(json.dumps(request.details).encode())
        base = f"/requests/{request.public_id}"
        measurements = [
            ("request page", lambda base=base: _page(client, f"{base}/", repeat)),
            ("mail", lambda request=request: _mail(request, repeat)),
        ]
        if label != "small":
            measurements += [
                ("show all", lambda base=base: _page(client, f"{base}/details/", repeat)),
                ("JSON status", lambda base=base: _page(client, f"{base}/status/", repeat)),
            ]
        for what, measure in measurements:
            result = measure()
            with_goal = what == "request page" and label != "small"
            print(
                f"details: {what:14} {label:18} p95 {result['p95_ms']:7.1f} ms  {result['bytes']:>9,} bytes",
                flush=True,
            )
            bench.rows.append(
                Row(
                    "8 large details",
                    f"{what}: {label} details",
                    n=result["n"],
                    latency=result,
                    goal=f"p95 < {PAGE_GOAL_MS / 1000:.0f} s" if with_goal else "",
                    passed=result["p95_ms"] < PAGE_GOAL_MS if with_goal else None,
                    notes=(
                        f"{result['bytes']:,} bytes out"
                        + (f", {result['queries']} queries" if "queries" in result else "")
                        + f"; message {message_bytes:,} bytes, details {detail_bytes:,} bytes"
                    ),
                    extra={
                        "bytes": result["bytes"],
                        "queries": result.get("queries"),
                        "message_bytes": message_bytes,
                        "details_bytes": detail_bytes,
                    },
                )
            )


def _client(user):
    from django.test import Client

    client = Client()
    for name, value in common.session_cookies(user).items():
        client.cookies[name] = value
    return client
