"""Scenario 6: concurrency — 1 and 20 clients deciding distinct requests over HTTP.

Each client is its own signed-in approver (a requests.Session with its own database session)
POSTing "approve" on requests assigned to it alone, as fast as answers come (closed loop),
against gunicorn as the Procfile runs it (2 workers × 4 threads). Celery workers (4 processes)
deliver the callbacks meanwhile, to the fake Step Functions endpoint of scenario 4 (moto would
refuse the made-up tokens, and a refused callback closes its request).
Measured: decisions per second, every POST's latency, errors (anything but the redirect to the
result page), double decisions (a request with more than one decision audit event, or decided by
someone it was not assigned to) and double callbacks (a request with other than exactly one
callback row). A contested round then has all 20 clients POST the same request at once: exactly
one may win, and the request has exactly one callback.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench import common
from bench.common import Row
from bench.scenarios.callback_ceiling import fake_sfn_worker_env


def deciders(count: int) -> list:
    group = "bench-deciders"
    return [common.ensure_user(f"bench-decider-{i}@example.com", groups=[group]) for i in range(count)]


def post_approve(session, base_url: str, public_id) -> tuple[float, int]:
    before = time.perf_counter()
    try:
        status = session.post(
            f"{base_url}/requests/{public_id}/decide/",
            data={"csrfmiddlewaretoken": common.CSRF_SECRET, "decision": "approve", "comment": ""},
            allow_redirects=False,
            timeout=60,
        ).status_code
    except Exception:  # noqa: BLE001 - a connection error counts as an error, not a crash
        status = 0
    return 1000 * (time.perf_counter() - before), status


def round_of(bench, users: list, per_client: int, run: str) -> dict:
    from approvals.models import ApprovalRequest

    work = {}
    for user in users:
        ids = common.bulk_requests(per_client, assignee_emails=[user.email], run=f"{run}-{user.pk}")
        work[user.pk] = list(ApprovalRequest.objects.filter(pk__in=ids).values_list("public_id", flat=True))
    sessions = {user.pk: common.signed_in_session(user, bench.web_url) for user in users}
    results: list[tuple[float, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(users))

    def client(user) -> None:
        barrier.wait()
        mine = [post_approve(sessions[user.pk], bench.web_url, public_id) for public_id in work[user.pk]]
        with lock:
            results.extend(mine)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        list(pool.map(client, users))
    seconds = time.perf_counter() - started
    all_ids = [pid for ids in work.values() for pid in ids]
    return {
        "n": len(results),
        "seconds": seconds,
        "rate": len(results) / seconds,
        "errors": sum(status != 302 for _, status in results),
        "latency": common.summarize_ms([ms for ms, _ in results]),
        "doubles": double_decisions(all_ids),
        "double_callbacks": double_callbacks(all_ids),
    }


def double_decisions(public_ids: list) -> int:
    """Requests decided more than once, by someone not assigned, or left undecided."""
    from django.db.models import Count, F, Q

    from approvals.models import ApprovalRequest

    rows = ApprovalRequest.objects.filter(public_id__in=public_ids).annotate(
        decisions=Count("audit_events", filter=Q(audit_events__action__in=["approved", "rejected"]), distinct=True),
    )
    wrong = rows.filter(Q(decisions__gt=1) | ~Q(status="approved")).count()
    wrong += rows.exclude(assignments__value=F("decided_by__email")).count()
    return wrong


def double_callbacks(public_ids: list) -> int:
    """Requests with other than exactly one callback (outbox row), or whose callback was sent more
    than once (the fake Step Functions endpoint accepts every call: one attempt is all it takes)."""
    from django.db.models import Count

    from approvals.models import ApprovalRequest, Callback

    rows = ApprovalRequest.objects.filter(public_id__in=public_ids).annotate(callbacks=Count("callback"))
    resent = Callback.objects.filter(request__public_id__in=public_ids, attempts__gt=1).count()
    return rows.exclude(callbacks=1).count() + resent


def contested(bench, users: list, rounds: int) -> dict:
    """All clients POST the same request at once; exactly one decision may come out of it."""
    from approvals.models import ApprovalRequest, Assignment, Callback

    outcomes = []
    sessions = [common.signed_in_session(user, bench.web_url) for user in users]
    for n in range(rounds):
        ids = common.bulk_requests(1, assignee_emails=[users[0].email], run=f"contested-{n}")
        request = ApprovalRequest.objects.get(pk=ids[0])
        Assignment.objects.create(request=request, kind=Assignment.Kind.GROUP, value="bench-deciders")
        barrier = threading.Barrier(len(sessions))

        def attempt(session, public_id=request.public_id, barrier=barrier):
            barrier.wait()
            return post_approve(session, bench.web_url, public_id)[1]

        with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
            statuses = list(pool.map(attempt, sessions))
        outcomes.append(
            {
                "won": statuses.count(302),
                "refused": sum(s in {403, 409} for s in statuses),
                "statuses": statuses,
                "callbacks": Callback.objects.filter(request=request).count(),
            }
        )
    doubles = sum(o["won"] != 1 or o["callbacks"] != 1 for o in outcomes)
    return {
        "rounds": rounds,
        "doubles_or_none": doubles,
        "outcomes": [{k: o[k] for k in ("won", "refused", "callbacks")} for o in outcomes],
    }


def run(bench) -> None:
    sizes = bench.sizes
    clients = sizes["concurrency_clients"]
    worker_env = fake_sfn_worker_env(bench)
    if bench.worker is None or bench.worker_env.get("AWS_ENDPOINT_URL") != worker_env["AWS_ENDPOINT_URL"]:
        bench.start_worker(concurrency=4, **worker_env)
    users = deciders(clients)
    round_of(bench, users[:1], 10, "conc-warm-1")  # warm-up
    round_of(bench, users, 2, "conc-warm-20")
    single = round_of(bench, users[:1], sizes["concurrency_single"], "conc-1")
    many = round_of(bench, users, sizes["concurrency_per_client"], "conc-20")
    fight = contested(bench, users, sizes["concurrency_contested"])
    rss = bench.rss()
    for label, result in (("1 client", single), (f"{clients} clients", many)):
        ok = result["errors"] == 0 and result["doubles"] == 0 and result["double_callbacks"] == 0
        bench.rows.append(
            Row(
                "6 concurrency",
                f"portal: {label}, distinct requests",
                n=result["n"],
                latency=result["latency"],
                throughput=result["rate"],
                throughput_unit=" dec/s",
                rss_worker=rss["worker"],
                rss_web=rss["web"],
                ratio=result["rate"] / single["rate"] if result is many else None,
                goal="0 errors, 0 doubles",
                passed=ok,
                notes=f"errors {result['errors']}, double decisions {result['doubles']}, requests without exactly "
                f"one callback {result['double_callbacks']}"
                + (f"; {clients} ÷ 1 throughput = {result['rate'] / single['rate']:.2f}" if result is many else ""),
                extra={k: v for k, v in result.items() if k != "latency"},
            )
        )
    bench.rows.append(
        Row(
            "6 concurrency",
            f"contested: {clients} clients, same request",
            n=fight["rounds"],
            goal="exactly 1 wins",
            passed=fight["doubles_or_none"] == 0,
            notes=f"{fight['rounds']} rounds; per round won/refused/callbacks: "
            + ", ".join(f"{o['won']}/{o['refused']}/{o['callbacks']}" for o in fight["outcomes"]),
            extra=fight,
        )
    )
    print(f"concurrency: 1 client {single['rate']:.1f}/s, {clients} clients {many['rate']:.1f}/s", flush=True)
