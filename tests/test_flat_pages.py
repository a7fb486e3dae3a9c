"""Flat pages (issue #23.5): a page's work does not grow with other people's rows.

The inbox, the request page and every admin changelist need the same number of queries with a
few rows as with many, when only other people's rows grew (a real user's own rows don't grow
with the table); the admin's date drill-down finds its years, months and days with one probe
per period instead of reading every row's date, and on PostgreSQL each probe reads at most one
index entry. No timings here: docs/benchmarks.md ("Flat pages") has the measurements.
"""

import json
import re
import uuid
from datetime import datetime, timedelta
from html import unescape

import pytest
from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.auth import PortalOIDCBackend
from approvals.models import (
    ApprovalRequest,
    Assignment,
    AuditEvent,
    Callback,
    CallbackStatus,
    Delegation,
    IngestError,
    Notification,
    RequestStatus,
    Vote,
)
from tests.support import executed_scans
from tests.support import signed_in as client_for

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/approvals/approvalrequest/"
MINE, OTHERS = "finance-approvers", [f"team-{n}" for n in range(7)]


def sso_user(name: str, *groups: str):
    """A user as the SSO backend makes one at sign-in: admin rights come from the SSO groups."""
    return PortalOIDCBackend().create_user(
        {
            "iss": "https://sso.example.com",
            "sub": f"sub-{name}",
            "email": f"{name}@example.com",
            "email_verified": True,
            "groups": list(groups),
        }
    )


@pytest.fixture
def people():
    return {"alice": sso_user("alice", MINE), "carol": sso_user("carol", "portal-admins")}


def add_requests(start: int, stop: int, *, alice=None, when=None) -> list[ApprovalRequest]:
    """Requests numbered start..stop-1, with an assignment, an audit event, a notification and,
    once closed, a callback each. With `alice`: her own rows (assigned to her group, some she
    decided, some she requested); without: other people's only."""
    now = when or timezone.now()
    statuses = [RequestStatus.PENDING, RequestStatus.APPROVED, RequestStatus.REJECTED, RequestStatus.EXPIRED]
    rows = []
    for n in range(start, stop):
        decided = alice is not None and n % 5 == 1
        rows.append(
            ApprovalRequest(
                title=f"Order {n}",
                requester_email="alice@example.com" if alice is not None and n % 7 == 3 else f"req{n % 50}@example.com",
                execution_arn=f"arn:aws:states:us-east-1:123456789012:execution:flow-{n % 3}:run-{n}",
                state_machine_arn=f"arn:aws:states:us-east-1:123456789012:stateMachine:flow-{n % 3}",
                state_name="Approve",
                status=RequestStatus.APPROVED if decided else statuses[n % 4],
                decided_by=alice if decided else None,
                decided_at=now if decided else None,
                received_at=now - timedelta(hours=n),
                deadline=now + timedelta(hours=n % 48 + 1),
                token_ciphertext="-",
                token_fingerprint=uuid.uuid4().hex,
            )
        )
    created = ApprovalRequest.objects.bulk_create(rows)
    Assignment.objects.bulk_create(
        Assignment(request=row, kind=Assignment.Kind.GROUP, value=MINE if alice else OTHERS[n % 7])
        for n, row in enumerate(created, start=start)
    )
    Vote.objects.bulk_create(Vote(request=row, user=row.decided_by, approve=True) for row in created if row.decided_by)
    AuditEvent.objects.bulk_create(
        AuditEvent(request=row, actor_label="system", action="ingested", created_at=row.received_at) for row in created
    )
    Notification.objects.bulk_create(
        Notification(request=row, channel="email", recipient="x@example.com", kind="new_request", status="sent")
        for row in created
    )
    Callback.objects.bulk_create(
        Callback(request=row, kind=Callback.Kind.SUCCESS, payload={}, status=CallbackStatus.DELIVERED)
        for row in created
        if row.status != RequestStatus.PENDING
    )
    IngestError.objects.bulk_create(
        IngestError(sqs_message_id=f"msg-{n}", code="invalid_json", reason="not JSON") for n in range(start, stop, 4)
    )
    return created


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(queries)


def grow(people, rows: int = 400) -> None:
    """Other people's rows, and other people's delegations: nothing of alice's."""
    add_requests(1_000, 1_000 + rows)
    dave, erin = sso_user("dave", "team-1"), sso_user("erin", "team-2")
    Delegation.objects.create(
        delegator=dave, delegate=erin, ends_at=timezone.now() + timedelta(days=3), created_by=people["carol"]
    )
    # No ANALYZE here: the count of queries does not depend on the plans, and ANALYZE writes the
    # planner's row counts outside the test's transaction, for the tests that follow to inherit.


def admin_changelists() -> list[str]:
    return [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist") for model in admin.site._registry
    ]


# ---------------------------------------------------------------------------
# The same queries for few rows and for many
# ---------------------------------------------------------------------------
INBOX_URLS = [
    "/",
    "/?tab=groups",
    "/?tab=decided",
    "/?tab=requested",
    "/?q=order+12",
    "/?sort=deadline",
    "/?due=overdue",
]


def test_the_inbox_and_the_request_page_need_the_same_queries_when_only_other_peoples_rows_grow(people):
    mine = add_requests(0, 60, alice=people["alice"])
    client = client_for(people["alice"])
    page = f"/requests/{mine[0].public_id}/"
    urls = [*INBOX_URLS, page]
    few = {url: count_queries(client, url) for url in urls}

    grow(people)

    many = {url: count_queries(client, url) for url in urls}
    assert many == few


def test_every_admin_changelist_needs_the_same_queries_for_few_rows_and_for_many(people):
    add_requests(0, 60, alice=people["alice"])
    carol, alice = client_for(people["carol"]), client_for(people["alice"])
    pages = [(carol, url) for url in admin_changelists()]
    pages += [
        (carol, f"{CHANGELIST}?status__exact=pending"),
        (carol, f"{CHANGELIST}?o=7"),  # by deadline
        (carol, f"{CHANGELIST}?received_at__year={timezone.localtime().year}"),
        (alice, CHANGELIST),  # an approver's own list
    ]
    assert len(pages) >= 14  # every registered model, not a chosen few
    few = {(id(client), url): count_queries(client, url) for client, url in pages}

    grow(people)

    many = {(id(client), url): count_queries(client, url) for client, url in pages}
    differing = {key[1]: (few[key], count) for key, count in many.items() if few[key] != count}
    assert not differing, differing


# ---------------------------------------------------------------------------
# The date drill-down
# ---------------------------------------------------------------------------
def drill_down(client: Client, query: str = "") -> tuple[list[str], int]:
    """The drill-down's choices (titles, linked or not; not the way back) and the page's queries."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<nav class="toplinks">' in html, "no date drill-down on the page"
    section = html.split('<nav class="toplinks">', 1)[1].split("</nav>", 1)[0]
    section = re.sub(r'<a [^>]*class="date-back">[^<]*</a>', "", section)
    titles = [unescape(re.sub(r"<[^>]+>", "", line)).strip() for line in section.splitlines()]
    return [title for title in titles if title], len(queries)


def spread() -> None:
    """Rows in three years, several months of one year, several days of one month (local times)."""
    moments = [
        "2023-05-17 10:00",
        "2024-02-01 00:30",
        "2024-02-29 23:59",
        "2024-07-04 12:00",
        "2024-12-31 23:59:59",
        "2025-01-01 00:00",
    ]
    for index, moment in enumerate(moments):
        local = timezone.make_aware(datetime.fromisoformat(moment))
        row = add_requests(10_000 + index, 10_001 + index, when=local)[0]
        ApprovalRequest.objects.filter(pk=row.pk).update(received_at=local)


def djangos_choices(level: str, **bounds) -> list:
    """What Django's own drill-down lists: SELECT DISTINCT over the rows."""
    return list(ApprovalRequest.objects.filter(**bounds).datetimes("received_at", level))


def test_the_date_drill_down_lists_the_years_months_and_days_that_have_rows_as_djangos_does(people):
    spread()
    client = client_for(people["carol"])

    years, _ = drill_down(client)
    months, _ = drill_down(client, "received_at__year=2024")
    days, _ = drill_down(client, "received_at__year=2024&received_at__month=2")
    one_day, _ = drill_down(client, "received_at__year=2024&received_at__month=2&received_at__day=29")
    pending, _ = drill_down(client, "received_at__year=2024&status__exact=pending")

    assert years == [str(d.year) for d in djangos_choices("year")] == ["2023", "2024", "2025"]
    assert months == ["February 2024", "July 2024", "December 2024"]
    assert len(djangos_choices("month", received_at__year=2024)) == len(months)
    assert days == ["February 1", "February 29"]
    assert one_day == ["February 29"]  # the day itself, not a link
    expected = djangos_choices("month", received_at__year=2024, status=RequestStatus.PENDING)
    assert len(pending) == len(expected)  # the other filters narrow the choices too


def test_the_date_drill_down_respects_the_time_zone_at_period_edges(people, settings):
    settings.TIME_ZONE = "Europe/Lisbon"
    row = add_requests(20_000, 20_001)[0]
    # 23:30 UTC on 31 March 2024 is 00:30 on 1 April in Lisbon (summer time).
    ApprovalRequest.objects.filter(pk=row.pk).update(received_at=datetime.fromisoformat("2024-03-31T23:30:00+00:00"))
    spread()
    client = client_for(people["carol"])

    months, _ = drill_down(client, "received_at__year=2024")
    days, _ = drill_down(client, "received_at__year=2024&received_at__month=4")

    with timezone.override("Europe/Lisbon"):
        expected = [d.strftime("%B %Y") for d in djangos_choices("month", received_at__year=2024)]
    assert months == expected
    assert "April 2024" in months and "March 2024" not in months
    assert days == ["April 1"]


@pytest.mark.parametrize(
    "query",
    [
        "received_at__year=abc",
        "received_at__year=2024&received_at__month=13",
        "received_at__year=2024&received_at__month=2&received_at__day=30",
        "received_at__month=3",  # a month without a year: Django filters by it, the links start at the years
        "received_at__year=9999&received_at__month=11",
        "received_at__year=1",
        "received_at__year=2024&received_at__day=5",
    ],
)
def test_hand_made_drill_down_links_answer_with_a_page_or_djangos_error_redirect(people, query):
    spread()

    response = client_for(people["carol"]).get(f"{CHANGELIST}?{query}")

    assert response.status_code in {200, 302}, query
    if response.status_code == 302:
        assert "e=1" in response["Location"]  # Django's "invalid parameters" page


def test_the_date_drill_down_needs_the_same_queries_for_few_rows_and_for_many(people):
    add_requests(0, 40)
    client = client_for(people["carol"])
    year, month = timezone.localtime().year, timezone.localtime().month
    queries = ["", f"received_at__year={year}", f"received_at__year={year}&received_at__month={month}"]
    few = [drill_down(client, query)[1] for query in queries]

    add_requests(40, 600)

    assert [drill_down(client, query)[1] for query in queries] == few


@pytest.mark.postgres  # reads PostgreSQL's executed plan (EXPLAIN ANALYZE)
def test_the_month_drill_down_reads_one_index_entry_per_day_not_every_row(people):
    now = timezone.localtime()
    add_requests(0, 3_000, when=now)  # an hour apart: about four months, ~720 rows a month
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_approvalrequest")
    month = now - timedelta(days=40)
    client = client_for(people["carol"])
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST, {"received_at__year": month.year, "received_at__month": month.month})
    assert response.status_code == 200
    probes = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SELECT EXISTS")]
    assert len(probes) == 1, [query["sql"][:80] for query in queries.captured_queries]

    scans = executed_scans(probes[0])
    on_requests = [scan for scan in scans if scan.get("Relation Name") == "approvals_approvalrequest"]
    assert on_requests, scans
    assert all(scan["Node Type"] != "Seq Scan" for scan in on_requests), scans
    assert all(scan["Actual Rows"] <= 1 for scan in on_requests), scans  # stops at the first row
    assert 28 <= len(on_requests) <= 31  # one probe per day of the month


# ---------------------------------------------------------------------------
# Sorting: only by the columns offered, each with an index
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "unindexed"),
    [
        (f"{CHANGELIST}?o=2", "status"),  # a hand-made link: the status column is not offered
        (f"{CHANGELIST}?o=-5.2", "requester_email"),
        ("/admin/approvals/callback/?o=4", "attempts"),
        ("/admin/approvals/notification/?o=4", "recipient"),
        ("/admin/approvals/ingesterror/?o=5", "receive_count"),
    ],
)
def test_a_hand_made_sort_by_a_column_the_admin_does_not_offer_is_ignored(people, url, unindexed):
    add_requests(0, 8)

    response = client_for(people["carol"]).get(url)

    assert response.status_code == 200
    ordering = [str(item) for item in response.context["cl"].queryset.query.order_by]
    assert not any(unindexed in item for item in ordering), ordering


def test_the_offered_sorts_still_sort(people):
    add_requests(0, 8)
    carol = client_for(people["carol"])

    by_deadline = carol.get(CHANGELIST, {"o": "7"}).context["cl"]
    by_age = carol.get(CHANGELIST, {"o": "-6"}).context["cl"]

    deadlines = [row.deadline for row in by_deadline.result_list]
    assert deadlines == sorted(deadlines) and "deadline" in by_deadline.queryset.query.order_by
    assert by_age.queryset.query.order_by[0] == "-received_at"  # -6: by age, the newest first


# ---------------------------------------------------------------------------
# Counting: a filtered list is counted up to 1,000, and says so
# ---------------------------------------------------------------------------
def test_a_filtered_admin_list_is_counted_up_to_a_thousand_and_says_more_than(people):
    add_requests(0, 1_010, alice=people["alice"])  # every one assigned to alice's group
    carol = client_for(people["carol"])

    many = carol.get(CHANGELIST, {"group": MINE})
    few = carol.get(CHANGELIST, {"group": MINE, "q": "Order 100"})  # Order 100, 1000…1009

    assert many.context["cl"].paginator.is_capped
    assert "more than 1000 approval requests" in " ".join(many.content.decode().split())
    assert not few.context["cl"].paginator.is_capped
    assert "11 approval requests" in " ".join(few.content.decode().split())
    assert carol.get(CHANGELIST, {"group": MINE, "p": "19"}).status_code == 200  # the 20th page, the last offered


# ---------------------------------------------------------------------------
# Deep pages: their rows' ids first (from the ordering's index), then the rows
# ---------------------------------------------------------------------------
def page_titles(response) -> list[str]:
    return re.findall(r'<th class="field-title"><a [^>]*>([^<]*)</a>', response.content.decode())


def test_a_deep_page_shows_the_rows_a_plain_offset_would(people):
    add_requests(0, 1_220)
    carol = client_for(people["carol"])

    # Before and after the two-step pages (500 rows deep), page 20 (the last SQLite offers: it
    # counts up to 1,000), and in the other orders offered.
    for params in ({"p": 2}, {"p": 10}, {"p": 11}, {"p": 20}, {"p": 16, "o": "6"}, {"p": 16, "o": "-7"}):
        response = carol.get(CHANGELIST, params)
        assert response.status_code == 200, (params, response.status_code, response.get("Location"))
        cl = response.context["cl"]
        plain = Paginator(cl.queryset, cl.list_per_page).page(params["p"]).object_list
        assert [row.pk for row in cl.result_list] == [row.pk for row in plain], params
        assert page_titles(response) == [row.title for row in plain], params


def test_a_deep_audit_trail_page_shows_the_events_a_plain_offset_would(people):
    add_requests(0, 1_300)  # an audit event each
    carol = client_for(people["carol"])

    for page in (5, 6, 13):
        cl = carol.get("/admin/approvals/auditevent/", {"p": page}).context["cl"]
        plain = Paginator(cl.queryset, cl.list_per_page).page(page).object_list
        assert [event.pk for event in cl.result_list] == [event.pk for event in plain], page


@pytest.mark.postgres  # reads PostgreSQL's executed plan (EXPLAIN ANALYZE)
def test_a_deep_page_reads_only_its_own_rows_from_the_table(people):
    add_requests(0, 2_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_approvalrequest")
    carol = client_for(people["carol"])

    with CaptureQueriesContext(connection) as queries:
        response = carol.get(CHANGELIST, {"p": 36})  # rows 1,750-1,799 (?p= counts from 1)

    assert response.status_code == 200
    rows = [q["sql"] for q in queries.captured_queries if '"approvals_approvalrequest"."title"' in q["sql"]]
    assert len(rows) == 1, [q["sql"][:90] for q in queries.captured_queries]
    scans = [scan for scan in executed_scans(rows[0]) if scan.get("Relation Name") == "approvals_approvalrequest"]
    assert scans and all(scan["Actual Rows"] <= 50 for scan in scans), scans  # not the 1,750 skipped


@pytest.mark.postgres  # reads PostgreSQL's executed plan (EXPLAIN ANALYZE)
def test_a_search_with_many_matches_reads_the_callbacks_of_the_rows_shown_only(people):
    """The status column reads each row's callback ("Closed by Step Functions"). Joined into the
    list's query, a search's every match was joined before the sort picked the page's 50: at
    100,000 requests PostgreSQL hashed all 75,000 callbacks for a search of 1,100 matches (22 ms
    of the page's 75). They are read for the rows shown, after the page is chosen."""
    add_requests(0, 1_500)  # "Order 1…" matches 611 of them; 3 in 4 have a callback
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_approvalrequest")
        cursor.execute("ANALYZE approvals_callback")
    carol = client_for(people["carol"])

    with CaptureQueriesContext(connection) as queries:
        response = carol.get(CHANGELIST, {"q": "Order 1"})

    assert response.status_code == 200 and len(response.context["cl"].result_list) == 50
    listed = 'SELECT "approvals_approvalrequest"."id", '  # the rows' query (the search reads ids only)
    rows = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(listed) and "LIMIT 50" in q["sql"]]
    reading = [q["sql"] for q in queries.captured_queries if '"approvals_callback"' in q["sql"]]
    # Not joined: with this test's 1,500 rows PostgreSQL still joins by index, with 100,000 not.
    assert len(rows) == 1 and '"approvals_callback"' not in rows[0], rows
    assert reading, [q["sql"][:90] for q in queries.captured_queries]
    scans = [
        scan for sql in reading for scan in executed_scans(sql) if scan.get("Relation Name") == "approvals_callback"
    ]
    assert scans and sum(scan["Actual Rows"] for scan in scans) <= 50, scans
    assert all(scan["Node Type"] != "Seq Scan" for scan in scans), scans


@pytest.mark.postgres  # reads PostgreSQL's executed plans (EXPLAIN ANALYZE)
def test_finding_people_by_email_reads_their_accounts_not_every_account(people):
    """Accounts are found by their email, in any case: a new request's requester, the people its
    mails go to, the requester's groups when someone decides. A company's SSO provisions tens of
    thousands of accounts; without an index on the email as those lookups fold its case, each of
    them read every account."""
    from approvals import services
    from approvals.integrations.aws import QueueMessage
    from approvals.models import User
    from approvals.tasks import plan_new_request_notifications

    User.objects.bulk_create(
        User(
            username=f"person{n}",
            email=f"Person{n}@Example.com",
            oidc_issuer="https://sso.example.com",
            oidc_sub=f"p{n}",
        )
        for n in range(3_000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_user")
    body = {
        "taskToken": uuid.uuid4().hex,
        "title": "Order 1",
        "requester": "person7@example.com",
        "approvers": {"users": ["alice@example.com", "person8@example.com"]},
    }
    message = QueueMessage(message_id=str(uuid.uuid4()), receipt_handle="-", body=json.dumps(body), receive_count=1)

    with CaptureQueriesContext(connection) as queries:
        (outcome,) = services.received_batch_ingest(messages=[message], max_bytes=262_144)
        plan_new_request_notifications(request_ids=[outcome.request.pk])
        services.approval_decide(public_id=outcome.request.public_id, user=people["alice"], approve=True)

    assert Notification.objects.filter(request=outcome.request, status="sent").count() == 2
    reads = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and '"approvals_user"' in q["sql"]
    ]
    assert len(reads) >= 3, reads
    read_all = [
        (sql.partition(" FROM ")[2][:300], scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0))
        for sql in reads
        for scan in executed_scans(sql)
        if scan.get("Relation Name") == "approvals_user"
        and scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) > 50
    ]
    assert not read_all, read_all


@pytest.mark.postgres  # reads PostgreSQL's executed plan (EXPLAIN ANALYZE)
def test_the_metrics_scrape_counts_the_callbacks_not_delivered_without_reading_the_delivered_ones():
    """Prometheus scrapes every 15 seconds; the callbacks gauge counts the few not delivered, and
    read every delivered callback ever sent to leave them out (a sequential scan: 75,000 rows
    at 100,000 requests, growing for as long as the portal runs)."""
    from approvals.selectors import ops as ops_selectors

    add_requests(0, 1_500)  # 1,125 delivered callbacks
    Callback.objects.filter(pk__in=Callback.objects.order_by("pk").values("pk")[:3]).update(
        status=CallbackStatus.FAILED
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_callback")

    with CaptureQueriesContext(connection) as queries:
        counts = ops_selectors.callback_status_counts()

    assert counts[CallbackStatus.FAILED] == 3 and CallbackStatus.DELIVERED not in counts
    (sql,) = [q["sql"] for q in queries.captured_queries]
    scans = [scan for scan in executed_scans(sql) if scan.get("Relation Name") == "approvals_callback"]
    assert scans and all(scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) <= 3 for scan in scans), scans


@pytest.mark.postgres  # reads PostgreSQL's executed plans (EXPLAIN ANALYZE)
def test_the_dashboards_last_30_days_read_the_decisions_of_those_days_only(people):
    """The operations dashboard's decisions per day and median decision times cover the last 30
    days, and read every decision ever made to find them (the day filter compared each row's
    date, no index had the decision's time): 50,000 rows, 150 ms at 100,000 requests."""
    from approvals.selectors import ops as ops_selectors

    add_requests(0, 2_000)
    with connection.cursor() as cursor:  # decided over two years, a few each day
        cursor.execute(
            "UPDATE approvals_approvalrequest SET decided_at = now() - (id % 730) * interval '1 day' "
            "WHERE status IN ('approved', 'rejected')"
        )
        cursor.execute("ANALYZE approvals_approvalrequest")
    since = timezone.now() - timedelta(days=30)
    in_window = ApprovalRequest.objects.filter(status__in=["approved", "rejected"], decided_at__gte=since).count()
    assert 0 < in_window < 150

    with CaptureQueriesContext(connection) as queries:
        per_day = ops_selectors.decisions_per_day()
        medians = ops_selectors.decision_time_medians()

    assert sum(approved + rejected for _, approved, rejected in per_day) >= in_window - 2  # the 30th day's start
    assert sum(row.decided_30d for row in medians) == in_window
    for query in queries.captured_queries:
        scans = [s for s in executed_scans(query["sql"]) if s.get("Relation Name") == "approvals_approvalrequest"]
        read = sum(scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) for scan in scans)
        assert read <= 2 * in_window, (query["sql"][:200], scans)


def test_the_admin_search_finds_the_same_rows_by_ids_as_by_sub_select(people):
    add_requests(0, 120, alice=people["alice"])
    from approvals import selectors

    for term in ["Order 11", "alice@example.com", MINE, "req7@example.com", "nothing-like-this"]:
        by_ids = set(selectors.admin_search(ApprovalRequest.objects.all(), term).values_list("pk", flat=True))
        by_sub_select = set(
            ApprovalRequest.objects.filter(pk__in=selectors.request_ids_matching(term)).values_list("pk", flat=True)
        )
        assert by_ids == by_sub_select, term


@pytest.mark.parametrize("term", ["nothing-like-this", "arn:aws:states:nowhere"])
def test_a_search_that_finds_nothing_shows_an_empty_list(people, term):
    """On SQLite no matching ids made the drill-down's probe an empty IN (), which Django
    refuses to compile: the page was a 500 for any search that found nothing."""
    add_requests(0, 5)

    now = timezone.localtime()
    carol = client_for(people["carol"])

    response = carol.get(CHANGELIST, {"q": term})
    in_month = carol.get(CHANGELIST, {"q": term, "received_at__year": now.year, "received_at__month": now.month})

    assert response.status_code == 200
    assert response.context["cl"].result_count == 0
    assert "0 approval requests" in " ".join(response.content.decode().split())
    assert in_month.status_code == 200  # the month's days: no probe either
    assert in_month.context["cl"].result_count == 0


def test_a_search_with_many_matches_drills_down_to_its_days(people):
    """The ids of a search's matches are one array parameter on PostgreSQL (not one parameter
    each, in each of the month's 31 probes); past SQLite's limit, a sub-select."""
    add_requests(0, 1_200, when=timezone.localtime())  # "Order 0" … "Order 1199", one an hour
    carol = client_for(people["carol"])
    month = timezone.localtime() - timedelta(days=20)

    listing = carol.get(CHANGELIST, {"q": "Order"})
    days = carol.get(CHANGELIST, {"q": "Order", "received_at__year": month.year, "received_at__month": month.month})

    in_month = ApprovalRequest.objects.filter(received_at__year=month.year, received_at__month=month.month)
    assert listing.status_code == 200
    assert "more than 1000 approval requests" in " ".join(listing.content.decode().split())
    assert days.status_code == 200
    assert '<nav class="toplinks">' in days.content.decode()
    assert days.context["cl"].result_count == in_month.count() > 0


# ---------------------------------------------------------------------------
# The inbox's state machine choices: from indexed lookups, still only the user's own
# ---------------------------------------------------------------------------
def test_the_inbox_lists_only_the_state_machines_of_requests_the_user_may_see(people):
    from approvals import selectors

    def machine(name: str) -> str:
        return f"arn:aws:states:us-east-1:123456789012:stateMachine:{name}"

    rows = add_requests(0, 6)
    assigned, requested, decided, voted, delegated, hidden = rows
    ApprovalRequest.objects.filter(pk=assigned.pk).update(state_machine_arn=machine("assigned"))
    Assignment.objects.create(request=assigned, kind=Assignment.Kind.USER, value="alice@example.com")
    ApprovalRequest.objects.filter(pk=requested.pk).update(
        state_machine_arn=machine("requested"), requester_email="ALICE@example.com"
    )
    ApprovalRequest.objects.filter(pk=decided.pk).update(
        state_machine_arn=machine("decided"), decided_by=people["alice"]
    )
    ApprovalRequest.objects.filter(pk=voted.pk).update(state_machine_arn=machine("voted"))
    Vote.objects.create(request=voted, user=people["alice"], approve=True)
    ApprovalRequest.objects.filter(pk=delegated.pk).update(state_machine_arn=machine("delegated"))
    dave = sso_user("dave", "team-away")
    Assignment.objects.create(request=delegated, kind=Assignment.Kind.GROUP, value="team-away")
    Delegation.objects.create(
        delegator=dave, delegate=people["alice"], ends_at=timezone.now() + timedelta(days=1), created_by=dave
    )
    ApprovalRequest.objects.filter(pk=hidden.pk).update(state_machine_arn=machine("someone-elses"))
    outsider = sso_user("olga", "team-nobody")

    seen = selectors.inbox_state_machine_arns(people["alice"])
    page = client_for(people["alice"]).get("/").content.decode()

    assert seen == sorted(machine(name) for name in ("assigned", "decided", "delegated", "requested", "voted"))
    assert "someone-elses" not in page and machine("assigned") in page
    assert selectors.inbox_state_machine_arns(outsider) == []
