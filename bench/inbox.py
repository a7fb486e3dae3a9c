"""How fast the inbox and the request page answer for an approver with 10,000 waiting requests.

    .venv/bin/python bench/inbox.py
    DATABASE_URL=postgres://user@host:5432/bench_inbox .venv/bin/python bench/inbox.py --total 100000

Runs Django's test client in-process against PostgreSQL (DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/bench_inbox; created if missing, its approvals tables
emptied first). `--total` requests in all; every tenth is pending and assigned to the
approver's group (100,000 → 10,000 waiting for them), they decided a thousand and requested
five hundred. Each page is warmed up, then requested `--repeat` times: p50/p95 of the whole
request (middleware, SQL, template) and the number of SQL queries. Prints a table and writes
var/bench/inbox.json.
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


def add_requests(total: int, approver, batch: int = 5_000) -> None:
    from django.utils import timezone

    from approvals.models import ApprovalRequest, Assignment, Callback, CallbackStatus, RequestStatus
    from bench import common as bench_common

    now = timezone.now()
    closed = [RequestStatus.APPROVED, RequestStatus.REJECTED, RequestStatus.EXPIRED]
    for low in range(0, total, batch):
        rows = []
        for n in range(low, min(total, low + batch)):
            mine = n % 10 == 0  # waiting for the approver's group
            decided = n % 100 == 1  # decided by the approver
            rows.append(
                ApprovalRequest(
                    title=f"Approve order {n} for supplier {n % 997}",
                    details={"order": {"id": n, "total": {"amount": f"{n % 10_000}.00", "currency": "EUR"}}},
                    requester_email=APPROVER_EMAIL if n % 200 == 3 else f"requester{n % 500}@example.com",
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
                value=APPROVER_GROUP if (low + i) % 10 == 0 else GROUPS[1 + (low + i) % 9],
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
    ("search: one order", "/?q=order+42420"),
    ("search: short word, no match", "/?q=x9"),  # no trigram, no match: reads the whole list
    ("filter: state machine", f"/?machine={MACHINES[3]}"),
    ("filter: overdue", "/?due=overdue"),
    ("sort: deadline", "/?sort=deadline"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=100_000, help="requests in the database")
    parser.add_argument("--repeat", type=int, default=40, help="measured requests per page")
    parser.add_argument("--output", default=str(REPO_DIR / "var" / "bench" / "inbox.json"))
    args = parser.parse_args()

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
    started = time.perf_counter()
    add_requests(args.total, approver)
    bench_common.vacuum_analyze(
        "approvals_approvalrequest", "approvals_assignment", "approvals_callback", "approvals_vote"
    )
    counts = inbox_counts(approver)
    print(f"{args.total:,} requests (inserted in {time.perf_counter() - started:.1f}s); approver's tabs: {counts}")

    client = bench_common.signed_in_client(approver)
    pages = list(PAGES)
    pages.append(("page 200 of 400, by Next", follow_next(client, "/", 199)))
    pages.append(("decided: page 40, by Next", follow_next(client, "/?tab=decided", 39)))
    waiting = ApprovalRequest.objects.filter(status="pending", assignments__value=APPROVER_GROUP).first()
    pages.append(("request page", f"/requests/{waiting.public_id}/"))
    results = []
    for name, url in pages:
        result = {"page": name, "url": url, **bench_common.page_timings(client, url, args.repeat)}
        results.append(result)
        print(
            f"  {name:26} p50 {result['p50_ms']:6.1f} ms   p95 {result['p95_ms']:6.1f} ms   {result['queries']} queries"
        )

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    worst = max(r["p95_ms"] for r in results)
    print(f"\n{'page':26} | {'p50 ms':>7} | {'p95 ms':>7} | queries")
    print(f"{'-' * 26}-+-{'-' * 7}-+-{'-' * 7}-+--------")
    for r in results:
        print(f"{r['page']:26} | {r['p50_ms']:>7} | {r['p95_ms']:>7} | {r['queries']:>7}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "goal_p95_ms": GOAL_P95_MS,
                "worst_p95_ms": worst,
                "total_requests": args.total,
                "tabs": counts,
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
