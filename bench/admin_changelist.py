"""How fast the admin's changelists answer with 1k, 10k and 100k requests and 1M audit events.

    make bench-admin                # or: .venv/bin/python bench/admin_changelist.py
    DATABASE_URL=postgres://user@host:5432/bench make bench-admin
    (`make bench`, bench/run.py, runs it too, without the audit events)

Runs Django's test client in-process against PostgreSQL (DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/bench; the database is created if missing, and its
approvals tables are emptied first — a database whose name lacks "bench" only with --wipe).
Each page is requested a few times to warm up, then
`--repeat` times measured: p50/p95 of the whole request (middleware, admin, SQL, template),
and the number of SQL queries. Prints a table and writes var/bench/admin_changelist.json.
"""

import argparse
import json
import os
import platform
import sys
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ["DJANGO_DEBUG"] = "false"  # DEBUG records every query: not what production runs
os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"  # the test client's host

SIZES = [1_000, 10_000, 100_000]
NOW = datetime.now(UTC)
CHANGELIST = "/admin/approvals/approvalrequest/"
AUDIT_EVENTS = 1_000_000
MACHINES = [f"arn:aws:states:eu-west-1:123456789012:stateMachine:flow-{n}" for n in range(8)]
GROUPS = [f"team-{n}" for n in range(20)]
GOAL_P95_MS = 200
# The measuring approver's own rows are the same at every size, as a real user's are: all among
# the first (newest) OWN_ROWS requests, assigned to their own group; only other people's grow.
OWN_ROWS = 1_000
OWN_EMAIL, OWN_GROUP = "bench-approver@example.com", "bench-approvers"


def execution_arn(n: int) -> str:
    """Request n's execution: "run-<n>-<8 hex digits>", a fixed-length ending as AWS's generated
    names (UUIDs) have, so that one whole ARN is one execution at every size; "…:run-9" still
    finds every run whose number starts with 9, a share of the table."""
    name = f"run-{n}-{zlib.crc32(str(n).encode()):08x}"
    return f"{MACHINES[n % 8].replace('stateMachine', 'execution')}:{name}"


def add_requests(start: int, stop: int, *, decider, batch: int = 5_000) -> None:
    """Requests like a busy portal's: spread over two years, a quarter of them pending.

    Every group and approver email gets every status. The measuring approver (`decider`, in
    OWN_GROUP) has the same rows at every size: among the first OWN_ROWS, every tenth is also
    assigned to their group (50 pending of them), and they decided a dozen; the admin's filters
    and searches (team-7, approver7@…) are other people's and grow with the table.
    """
    from django.utils import timezone

    from approvals.models import ApprovalRequest, Assignment, Callback, CallbackStatus, Notification, RequestStatus
    from bench import common as bench_common

    now = timezone.now()
    statuses = [RequestStatus.PENDING, RequestStatus.APPROVED, RequestStatus.REJECTED, RequestStatus.EXPIRED]
    for low in range(start, stop, batch):
        rows = [
            ApprovalRequest(
                title=f"Approve order {n} for supplier {n % 997}",
                details={"order": n, "amount": f"{n % 10_000}.00"},
                requester_email=f"requester{n % 500}@example.com",
                execution_arn=execution_arn(n),
                state_machine_arn=MACHINES[n % 8],
                state_name=f"Step{n % 3}",
                status=statuses[n % 4],
                decided_by=decider if n < OWN_ROWS and n % 4 == 1 and (n // 4) % 20 == 7 else None,
                received_at=now - timedelta(minutes=10 * n),
                # Decided within ten hours of arriving (the dashboard's last 30 days of decisions).
                decided_at=now - timedelta(minutes=10 * n - n % 600) if n % 4 in (1, 2) else None,
                deadline=now + timedelta(hours=(n % 96) - 24),
                token_ciphertext="-",  # noqa: S106 - no token: the changelist never reads it
                token_fingerprint=f"{n:064x}",
            )
            for n in range(low, min(stop, low + batch))
        ]
        created = ApprovalRequest.objects.bulk_create(rows)
        bench_common.votes_for_decided(created)
        Assignment.objects.bulk_create(
            [
                Assignment(request=row, kind=Assignment.Kind.GROUP, value=GROUPS[(n // 4) % 20])
                for n, row in enumerate(created, start=low)
            ]
            + [
                Assignment(request=row, kind=Assignment.Kind.USER, value=f"approver{(n // 4) % 50}@example.com")
                for n, row in enumerate(created, start=low)
            ]
            + [
                Assignment(request=row, kind=Assignment.Kind.GROUP, value=OWN_GROUP)
                for n, row in enumerate(created, start=low)
                if n < OWN_ROWS and n % 10 == 0
            ]
        )
        # One notification per request, as ingest plans one for each approver.
        Notification.objects.bulk_create(
            Notification(
                request=row,
                channel=Notification.Channel.EMAIL,
                recipient=f"approver{(n // 4) % 50}@example.com",
                kind=Notification.Kind.NEW_REQUEST,
                status=Notification.Status.SENT,
                created_at=row.received_at,
            )
            for n, row in enumerate(created, start=low)
        )
        Callback.objects.bulk_create(
            Callback(
                request=row,
                kind=Callback.Kind.SUCCESS,
                payload={},
                status=CallbackStatus.FAILED if i % 40 == 1 else CallbackStatus.DELIVERED,
            )
            for i, row in enumerate(created)
            if row.status != RequestStatus.PENDING
        )


def add_audit_events(count: int) -> None:
    """A million events in one statement (bulk_create of a million objects takes minutes)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id) FROM approvals_approvalrequest")
        low, high = cursor.fetchone()
        cursor.execute(
            """
            INSERT INTO approvals_auditevent (request_id, actor_id, actor_label, action, data, created_at)
            SELECT %s + (n %% (%s - %s + 1)),
                   NULL,
                   CASE WHEN n %% 3 = 0 THEN 'system' ELSE 'approver' || (n %% 50) || '@example.com' END,
                   (ARRAY['ingested', 'approved', 'rejected', 'callback_delivered', 'decision_refused',
                          'reassigned', 'expired'])[1 + n %% 7],
                   '{}'::jsonb,
                   now() - (n || ' seconds')::interval * 60
            FROM generate_series(1, %s) AS n
            """,
            [low, high, low, count],
        )


REQUEST_PAGES = [
    ("changelist", "/admin/approvals/approvalrequest/"),
    ("filter: status", "/admin/approvals/approvalrequest/?status__exact=pending"),
    ("filter: state machine", f"/admin/approvals/approvalrequest/?machine={MACHINES[3]}"),
    ("filter: assigned group", "/admin/approvals/approvalrequest/?group=team-7"),
    ("filter: overdue", "/admin/approvals/approvalrequest/?overdue=yes"),
    ("filter: callback failed", "/admin/approvals/approvalrequest/?callback=failed"),
    # Column 7 (the action checkbox is column 0); ?o=2 was the status, which sorted every row.
    ("order: deadline", "/admin/approvals/approvalrequest/?o=7"),
    # The current month: it has rows at every size (the 1,000 newest reach back a week).
    ("date: one month", f"{CHANGELIST}?received_at__year={NOW.year}&received_at__month={NOW.month}"),
    ("search: title words", "/admin/approvals/approvalrequest/?q=supplier+42"),
    ("search: approver email", "/admin/approvals/approvalrequest/?q=approver7@example.com"),
    (
        "search: execution ARN",
        f"/admin/approvals/approvalrequest/?q={MACHINES[1].replace('stateMachine', 'execution')}:run-9",
    ),
    # A whole ARN, pasted from the Step Functions console: one request at every size.
    ("search: one whole ARN", f"/admin/approvals/approvalrequest/?q={execution_arn(993)}"),
    ("page 16", "/admin/approvals/approvalrequest/?p=15"),
    ("callbacks: changelist", "/admin/approvals/callback/"),
    ("callbacks: filter failed", "/admin/approvals/callback/?status__exact=failed"),
    ("notifications: changelist", "/admin/approvals/notification/"),
    # Requests by status, the last 30 days' decisions per day and per state machine, the outbox.
    ("operations dashboard", "/admin/dashboard/"),
]
AUDIT_PAGES = [
    ("audit: changelist", "/admin/approvals/auditevent/"),
    ("audit: filter action", "/admin/approvals/auditevent/?action=reassigned"),
    ("audit: search actor", "/admin/approvals/auditevent/?q=approver7@example.com"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40, help="measured requests per page")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=SIZES)
    parser.add_argument("--audit-events", type=int, default=AUDIT_EVENTS)
    parser.add_argument("--output", default=str(REPO_DIR / "var" / "bench" / "admin_changelist.json"))
    parser.add_argument("--wipe", action="store_true", help="empty the approvals tables of a non-bench database")
    args = parser.parse_args()

    from bench import common as bench_common

    bench_common.setup_page_bench(os.environ["DATABASE_URL"])
    from django.db import connection

    from approvals.auth import PortalOIDCBackend
    from approvals.models import ApprovalRequest

    name = connection.settings_dict["NAME"]
    if "bench" not in name and ApprovalRequest.objects.exists() and not args.wipe:
        print(f"refusing to empty the approvals tables of database {name!r}: use a bench database, or --wipe")
        return 2
    bench_common.reset_request_tables()
    backend = PortalOIDCBackend()
    user_claims = {"iss": "https://bench.example.com", "email_verified": True}
    admin = backend.filter_users_by_claims({**user_claims, "sub": "bench-admin"}).first() or backend.create_user(
        {**user_claims, "sub": "bench-admin", "email": "bench-admin@example.com", "groups": ["portal-admins"]}
    )
    # Its own subject: a database kept from an earlier version of this bench has a "bench-approver"
    # in team-7, whose rows grow with the table.
    approver = backend.filter_users_by_claims({**user_claims, "sub": "bench-own-approver"}).first() or (
        backend.create_user({**user_claims, "sub": "bench-own-approver", "email": OWN_EMAIL, "groups": [OWN_GROUP]})
    )
    admin_client, approver_client = bench_common.signed_in_client(admin), bench_common.signed_in_client(approver)

    results = []
    done = 0
    for size in args.sizes:
        started = time.perf_counter()
        add_requests(done, size, decider=approver)
        done = size
        bench_common.vacuum_analyze(
            "approvals_approvalrequest",
            "approvals_assignment",
            "approvals_callback",
            "approvals_auditevent",
            "approvals_notification",
            "approvals_vote",
        )
        print(f"\n{size:,} requests (inserted in {time.perf_counter() - started:.1f}s)", flush=True)
        pages = [(name, admin_client, url) for name, url in REQUEST_PAGES]
        pages.append(("approver's changelist", approver_client, REQUEST_PAGES[0][1]))
        for name, client, url in pages:
            result = {
                "rows": size,
                "page": name,
                "url": url,
                **bench_common.page_timings(client, url, args.repeat),
                "shown": rows_shown(client, url),
            }
            results.append(result)
            print(
                f"  {name:28} p50 {result['p50_ms']:7.1f} ms   p95 {result['p95_ms']:7.1f} ms   "
                f"{result['queries']} queries   {result['shown']} rows shown",
                flush=True,
            )

    if args.audit_events:
        started = time.perf_counter()
        add_audit_events(args.audit_events)
        bench_common.vacuum_analyze(
            "approvals_approvalrequest", "approvals_assignment", "approvals_callback", "approvals_auditevent"
        )
        print(f"\n{args.audit_events:,} audit events (inserted in {time.perf_counter() - started:.1f}s)", flush=True)
        for name, url in AUDIT_PAGES:
            result = {
                "rows": args.audit_events,
                "page": name,
                "url": url,
                **bench_common.page_timings(admin_client, url, args.repeat),
            }
            results.append(result)
            print(
                f"  {name:28} p50 {result['p50_ms']:7.1f} ms   p95 {result['p95_ms']:7.1f} ms   "
                f"{result['queries']} queries",
                flush=True,
            )

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    print_table(results)
    worst = max(r["p95_ms"] for r in results)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(
        json.dumps(
            {
                "goal_p95_ms": GOAL_P95_MS,
                "worst_p95_ms": worst,
                "postgres": server,
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "repeat": args.repeat,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nworst p95 {worst} ms (goal < {GOAL_P95_MS} ms); written to {args.output}")
    return 0


def rows_shown(client, url: str) -> int:
    """How many rows the changelist shows: a search that matches 14 rows at 1k and a full page
    (50) at 100k renders 3.5 times the rows, whatever its queries cost."""
    page = client.get(url).content.decode()
    table = page.partition('id="result_list"')[2].partition("</table>")[0]
    return table.partition("<tbody>")[2].count("<tr")


def print_table(results: list[dict]) -> None:
    print(f"\n{'rows':>9} | {'page':28} | {'p50 ms':>7} | {'p95 ms':>7} | queries | shown")
    print(f"{'-' * 9}-+-{'-' * 28}-+-{'-' * 7}-+-{'-' * 7}-+---------+------")
    for r in results:
        print(
            f"{r['rows']:>9,} | {r['page']:28} | {r['p50_ms']:>7} | {r['p95_ms']:>7} | {r['queries']:>7} | "
            f"{r.get('shown', ''):>5}"
        )


if __name__ == "__main__":
    sys.exit(main())
