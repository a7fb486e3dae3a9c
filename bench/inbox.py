"""How the inbox and the request page answer as the table grows while the approver's own rows don't.

    .venv/bin/python bench/inbox.py                       # 1k, 10k and 100k requests
    .venv/bin/python bench/inbox.py --sizes 1000,10000 --repeat 20
    .venv/bin/python bench/inbox.py --sizes 100000 --own-waiting 10000   # a very busy approver

Runs Django's test client in-process against PostgreSQL (DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/bench_inbox; created if missing, its approvals tables
emptied first). Requests are added up to each of `--sizes`. The approver's own rows are the
same at every size, as a real user's are: `--own-waiting` requests waiting for their group
(every tenth of the first 10 × that many), a tenth as many decided by them, a twentieth
requested by them; every other row is other people's, so only those grow. Each page is warmed
up, then requested `--repeat` times: p50/p95 of the whole request (middleware, SQL, template)
and the number of SQL queries, per size; then each page's p95 ratio, largest size ÷ smallest
(goal ≤ 1.5, same queries). Prints a table and writes var/bench/inbox.json.
"""

import argparse
import html
import json
import os
import platform
import re
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_inbox")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ["DJANGO_DEBUG"] = "false"  # DEBUG records every query: not what production runs
os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"

MACHINES = [f"arn:aws:states:eu-west-1:123456789012:stateMachine:flow-{n}" for n in range(8)]
GROUPS = [f"team-{n}" for n in range(10)]
APPROVER_EMAIL = "approver@example.com"
APPROVER_GROUP = "team-0"
GOAL_P95_MS = 100


def add_requests(start: int, stop: int, approver, *, own_span: int, batch: int = 5_000) -> None:
    """Requests start..stop-1; the approver's own rows all lie among the first `own_span`."""
    from django.utils import timezone

    from approvals.models import ApprovalRequest, Assignment, Callback, CallbackStatus, RequestStatus
    from bench import common as bench_common

    now = timezone.now()
    closed = [RequestStatus.APPROVED, RequestStatus.REJECTED, RequestStatus.EXPIRED]
    for low in range(start, stop, batch):
        rows = []
        for n in range(low, min(stop, low + batch)):
            own = n < own_span  # the approver's own rows are the same at every size
            mine = own and n % 10 == 0  # waiting for the approver's group
            decided = own and n % 100 == 1  # decided by the approver
            rows.append(
                ApprovalRequest(
                    title=f"Approve order {n} for supplier {n % 997}",
                    details={"order": {"id": n, "total": {"amount": f"{n % 10_000}.00", "currency": "EUR"}}},
                    requester_email=APPROVER_EMAIL if own and n % 200 == 3 else f"requester{n % 500}@example.com",
                    execution_arn=f"{MACHINES[n % 8].replace('stateMachine', 'execution')}:run-{n}",
                    state_machine_arn=MACHINES[n % 8],
                    state_name=f"Step{n % 3}",
                    status=RequestStatus.PENDING if mine or n % 4 == 0 else closed[n % 3],
                    received_at=now - timedelta(minutes=10 * n),
                    deadline=now + timedelta(hours=(n % 96) - 12),
                    decided_by=approver if decided else None,
                    decided_at=now - timedelta(minutes=5 * n) if decided else None,
                    token_ciphertext="-",  # noqa: S106 - no token: the inbox never reads it
                    token_fingerprint=f"{n:064x}",
                )
            )
        created = ApprovalRequest.objects.bulk_create(rows)
        bench_common.votes_for_decided(created)
        Assignment.objects.bulk_create(
            Assignment(
                request=row,
                kind=Assignment.Kind.GROUP,
                value=APPROVER_GROUP if low + i < own_span and (low + i) % 10 == 0 else GROUPS[1 + (low + i) % 9],
            )
            for i, row in enumerate(created)
        )
        Callback.objects.bulk_create(
            Callback(request=row, kind=Callback.Kind.SUCCESS, payload={}, status=CallbackStatus.DELIVERED)
            for row in created
            if row.status != RequestStatus.PENDING
        )


def follow_next(client, url: str, times: int) -> str:
    """The URL of the page `times` clicks on "Next →" away from `url`, as a person gets there."""
    for _ in range(times):
        page = client.get(url).content.decode()
        url = "/" + html.unescape(re.search(r'<a href="([^"]+)" rel="next">', page).group(1))
    return url


PAGES = [
    ("waiting for me", "/"),
    ("my groups", "/?tab=groups"),
    ("decided by me", "/?tab=decided"),
    ("I requested", "/?tab=requested"),
    ("search: two words", "/?q=supplier+42"),
    ("search: one order", "/?q=order+420"),  # one of the approver's own
    ("search: short word, no match", "/?q=x9"),  # no trigram, no match: reads the whole list
    ("filter: state machine", f"/?machine={MACHINES[3]}"),
    ("filter: overdue", "/?due=overdue"),
    ("sort: deadline", "/?sort=deadline"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1_000, 10_000, 100_000])
    parser.add_argument("--own-waiting", type=int, default=100, help="requests waiting for the approver, at every size")
    parser.add_argument("--repeat", type=int, default=40, help="measured requests per page")
    parser.add_argument("--output", default=str(REPO_DIR / "var" / "bench" / "inbox.json"))
    args = parser.parse_args()
    own_span = 10 * args.own_waiting
    if min(args.sizes) < own_span:
        parser.error(f"--own-waiting {args.own_waiting} needs sizes of at least {own_span:,} requests")

    from bench import common as bench_common

    bench_common.setup_page_bench(os.environ["DATABASE_URL"])
    from django.contrib.auth.models import Group
    from django.db import connection

    from approvals.models import ApprovalRequest, User
    from approvals.selectors import inbox_counts

    bench_common.reset_request_tables()
    approver, _ = User.objects.get_or_create(
        username="bench-approver", defaults={"email": APPROVER_EMAIL, "oidc_issuer": "https://bench", "oidc_sub": "a"}
    )
    approver.groups.add(Group.objects.get_or_create(name=APPROVER_GROUP)[0])
    client = bench_common.signed_in_client(approver)
    # The deepest pages the approver's own lists have (their rows don't grow, so neither do these).
    waiting_clicks = min(199, max(0, -(-args.own_waiting // 25) - 1))
    decided_clicks = min(39, max(0, -(-(args.own_waiting // 10) // 25) - 1))

    results, done, counts = [], 0, {}
    for size in sorted(args.sizes):
        started = time.perf_counter()
        add_requests(done, size, approver, own_span=own_span)
        done = size
        bench_common.vacuum_analyze(
            "approvals_approvalrequest", "approvals_assignment", "approvals_callback", "approvals_vote"
        )
        counts = inbox_counts(approver)
        print(f"\n{size:,} requests (added in {time.perf_counter() - started:.1f}s); approver's tabs: {counts}")
        pages = list(PAGES)
        pages.append((f"waiting: page {waiting_clicks + 1}, by Next", follow_next(client, "/", waiting_clicks)))
        pages.append(
            (f"decided: page {decided_clicks + 1}, by Next", follow_next(client, "/?tab=decided", decided_clicks))
        )
        waiting = ApprovalRequest.objects.filter(status="pending", assignments__value=APPROVER_GROUP).order_by("pk")
        pages.append(("request page", f"/requests/{waiting.first().public_id}/"))
        for name, url in pages:
            result = {"rows": size, "page": name, "url": url, **bench_common.page_timings(client, url, args.repeat)}
            results.append(result)
            print(
                f"  {name:28} p50 {result['p50_ms']:6.1f} ms   p95 {result['p95_ms']:6.1f} ms   "
                f"{result['queries']} queries",
                flush=True,
            )

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    worst = max(r["p95_ms"] for r in results)
    smallest, largest = min(args.sizes), max(args.sizes)
    ratios = {}
    print(f"\n{'page':28} | " + " | ".join(f"{size:>9,} p95" for size in sorted(args.sizes)) + " | ratio | queries")
    for name in dict.fromkeys(r["page"] for r in results):
        series = {r["rows"]: r for r in results if r["page"] == name}
        ratio = series[largest]["p95_ms"] / series[smallest]["p95_ms"] if series[smallest]["p95_ms"] else None
        ratios[name] = {"ratio": ratio, "queries": [series[size]["queries"] for size in sorted(series)]}
        cells = " | ".join(f"{series[size]['p95_ms']:>13}" for size in sorted(series))
        print(f"{name:28} | {cells} | {ratio or 0:5.2f} | {ratios[name]['queries']}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "goal_p95_ms": GOAL_P95_MS,
                "goal_ratio": 1.5,
                "worst_p95_ms": worst,
                "sizes": sorted(args.sizes),
                "own_waiting": args.own_waiting,
                "tabs": counts,
                "ratios": ratios,
                "postgres": server,
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "repeat": args.repeat,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nworst p95 {worst} ms (goal < {GOAL_P95_MS} ms); written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
