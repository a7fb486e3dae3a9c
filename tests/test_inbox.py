"""The inbox and the request page as an approver uses them: tabs, search, filters, deadlines,
details, the confirm step, refusal pages — and a bounded number of queries at 10,000 requests."""

import json
import re
import uuid
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import services
from approvals.contract import parse_message
from approvals.forms.requests import REJECT_NEEDS_COMMENT
from approvals.models import ApprovalRequest, Assignment, AuditEvent, Callback, CallbackStatus, RequestStatus, Vote
from tests.support import make_user
from tests.support import signed_in as client_for

pytestmark = pytest.mark.django_db

MACHINE = "arn:aws:states:eu-central-1:123456789012:stateMachine:purchase-orders"
OTHER_MACHINE = "arn:aws:states:eu-central-1:123456789012:stateMachine:travel"


def csrf(client: Client) -> str:
    client.get("/")
    return client.cookies["portal_csrftoken"].value


def ingest(title: str, *, users=(), groups=("finance-approvers",), requester="bob@example.com", **extra):
    body = {
        "taskToken": f"tok-{uuid.uuid4()}",
        "title": title,
        "requester": requester,
        "approvers": {"users": list(users), "groups": list(groups)},
        **extra,
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    return request


def set_deadline(request: ApprovalRequest, delta: timedelta | None) -> None:
    ApprovalRequest.objects.filter(pk=request.pk).update(deadline=None if delta is None else timezone.now() + delta)


def titles(html: str) -> list[str]:
    return re.findall(r'class="request-title"[^>]*>([^<]+)</a>', html)


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "bob": make_user("bob"),
        "erin": make_user("erin", "finance-approvers"),
        "dave": make_user("dave", "travel-approvers"),
    }


@pytest.fixture
def inbox(people):
    """alice: two to decide, one she asked for, one she decided, one for another group."""
    waiting_group = ingest("Order 1 laptops", stateMachine=MACHINE, state="ManagerApproval")
    waiting_user = ingest(
        "Trip to Lisbon",
        users=["alice@example.com"],
        groups=[],
        stateMachine=OTHER_MACHINE,
        execution="arn:aws:states:eu-central-1:123456789012:execution:travel:lisbon-1",
    )
    own = ingest("Alice's own order", requester="alice@example.com", stateMachine=MACHINE)
    decided = ingest("Order 2 monitors", stateMachine=MACHINE)
    services.approval_decide(public_id=decided.public_id, user=people["alice"], approve=True, comment="ok")
    elsewhere = ingest("Trip to Oslo", groups=["travel-approvers"], stateMachine=OTHER_MACHINE)
    return {"waiting_group": waiting_group, "waiting_user": waiting_user, "own": own, "decided": decided,
            "elsewhere": elsewhere}  # fmt: skip


# ---------------------------------------------------------------------------
# Tabs, counts, search, filters, sorting, pages
# ---------------------------------------------------------------------------
def test_the_four_tabs_list_the_right_requests_with_their_counts(people, inbox):
    client = client_for(people["alice"])

    waiting = client.get("/").content.decode()
    groups = client.get("/?tab=groups").content.decode()
    decided = client.get("/?tab=decided").content.decode()
    requested = client.get("/?tab=requested").content.decode()

    assert sorted(titles(waiting)) == ["Order 1 laptops", "Trip to Lisbon"]
    # Every request assigned to her group, whatever its status, her own included.
    assert sorted(titles(groups)) == ["Alice&#x27;s own order", "Order 1 laptops", "Order 2 monitors"]
    assert titles(decided) == ["Order 2 monitors"]
    assert titles(requested) == ["Alice&#x27;s own order"]
    counts = re.findall(r'<span class="badge">(\d+)<span class="visually-hidden"> requests', waiting)
    assert counts == ["2", "3", "1", "1"]
    assert 'aria-current="page">Waiting for me' in waiting
    assert 'aria-current="page">Decided by me' in decided
    assert "Trip to Oslo" not in waiting + groups + decided + requested


def test_an_unknown_tab_falls_back_to_waiting_for_me(people, inbox):
    page = client_for(people["alice"]).get("/?tab=everything&sort=bogus").content.decode()

    assert sorted(titles(page)) == ["Order 1 laptops", "Trip to Lisbon"]


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("laptops", ["Order 1 laptops"]),
        ("LISBON", ["Trip to Lisbon"]),
        ("bob@example", ["Order 1 laptops", "Trip to Lisbon"]),
        ("purchase-orders", ["Order 1 laptops"]),
        ("ManagerApproval", ["Order 1 laptops"]),
        ("order laptops", ["Order 1 laptops"]),
        ("order lisbon", []),
        ("arn:aws:states:eu-central-1:123456789012:execution:travel:lisbon-1", ["Trip to Lisbon"]),
        ("arn:aws:states:eu-central-1:123456789012:execution:travel", []),
        ("sbon", ["Trip to Lisbon"]),  # three letters or digits or more: anywhere in a word
        # Words too short for a trigram must begin a word (a run of letters and digits).
        ("li", ["Trip to Lisbon"]),
        ("Li bob", ["Trip to Lisbon"]),
        ("1 laptops", ["Order 1 laptops"]),
        ("12", ["Order 1 laptops", "Trip to Lisbon"]),  # 123456789012, in both state machines' ARN
        ("2", []),  # begins no word of theirs ("Order 2 monitors" is decided, not waiting)
        ("ap", []),  # inside "laptops" and "ManagerApproval", at the start of neither
        ("eu-c", ["Order 1 laptops", "Trip to Lisbon"]),  # eu-central-1: "eu" and "c" begin words
        ("x9", []),
        # LIKE's wildcards are plain characters in a search; a word without letters or digits
        # is left out.
        ("der_1", []),
        ("r_1", []),
        ("100%", []),
        ("% lisbon", ["Trip to Lisbon"]),
    ],
)
def test_search_matches_title_requester_state_machine_and_state(people, inbox, search, expected):
    page = client_for(people["alice"]).get("/", {"q": search}).content.decode()

    assert sorted(titles(page)) == expected
    assert f'value="{search}"' in page
    if not expected:
        assert "No request matches." in page


def test_filters_narrow_by_state_machine_and_overdue(people, inbox):
    set_deadline(inbox["waiting_group"], -timedelta(hours=2))
    set_deadline(inbox["waiting_user"], timedelta(hours=3))
    client = client_for(people["alice"])

    by_machine = client.get("/", {"machine": OTHER_MACHINE}).content.decode()
    overdue = client.get("/", {"due": "overdue"}).content.decode()
    soon = client.get("/", {"due": "soon"}).content.decode()

    assert titles(by_machine) == ["Trip to Lisbon"]
    assert f'<option value="{OTHER_MACHINE}" selected>travel</option>' in by_machine
    assert f'<option value="{MACHINE}">purchase-orders</option>' in by_machine
    assert titles(overdue) == ["Order 1 laptops"]
    assert titles(soon) == ["Trip to Lisbon"]


def test_sorting_by_deadline_puts_the_closest_first_and_requests_without_one_last(people):
    for title, hours in [("later", 48), ("none", None), ("soonest", 1), ("middle", 5)]:
        set_deadline(ingest(title), None if hours is None else timedelta(hours=hours))

    page = client_for(people["alice"]).get("/", {"sort": "deadline"}).content.decode()

    assert titles(page) == ["soonest", "middle", "later", "none"]


def test_pages_of_25_keep_the_search_and_filters(people):
    for number in range(30):
        ingest(f"Invoice {number:02d}")
    client = client_for(people["alice"])

    first = client.get("/", {"q": "invoice", "sort": "deadline"}).content.decode()
    next_link = link(first, "next")
    second = client.get("/" + next_link).content.decode()

    assert len(titles(first)) == 25
    assert len(titles(second)) == 5
    assert "Page 1 of 2" in first and "Page 2 of 2" in second
    assert re.fullmatch(r"\?q=invoice&sort=deadline&page=2&after=[0-9a-f-]{36}", next_link)
    assert "30 matching requests" in first


# ---------------------------------------------------------------------------
# Pages: Next and Previous seek from a row (keyset)
# ---------------------------------------------------------------------------
def numbered_requests(count: int, *, group: str = "finance-approvers", same_time: int = 7, **fields):
    """`count` requests "Row 000"…, `same_time` of them at a time sharing one received_at; every
    fifth without a deadline, the others on four deadlines (so deadlines tie too)."""
    now = timezone.now()
    rows = [
        ApprovalRequest(
            title=f"Row {number:03d}",
            requester_email="bob@example.com",
            deadline=None if number % 5 == 0 else now + timedelta(hours=1 + number % 4),
            token_ciphertext="x",
            token_fingerprint=uuid.uuid4().hex,
            received_at=now - timedelta(minutes=number // same_time),
            **fields,
        )
        for number in range(count)
    ]
    created = ApprovalRequest.objects.bulk_create(rows)
    Assignment.objects.bulk_create(Assignment(request=row, kind=Assignment.Kind.GROUP, value=group) for row in created)
    return created


def link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', html)
    return unescape(found.group(1)) if found else None


def walk(client: Client, url: str, rel: str = "next") -> tuple[list[list[str]], list[str]]:
    """Follow the rel="next" (or "prev") links from `url`: each page's titles and html."""
    pages, htmls = [], []
    while url:
        response = client.get("/" + url if url.startswith("?") else url)
        assert response.status_code == 200
        html = response.content.decode()
        pages.append(titles(html))
        htmls.append(html)
        url = link(html, rel)
        assert len(pages) < 50, "the links go round in circles"
    return pages, htmls


@pytest.mark.parametrize(
    ("url", "order"),
    [
        ("/", ("-received_at", "-id")),
        ("/?sort=deadline", (F("deadline").asc(nulls_last=True), "-received_at", "-id")),
        ("/?tab=decided", ("-received_at", "-id")),  # by the time of her vote: each row's received_at here
        ("/?q=row&sort=deadline", (F("deadline").asc(nulls_last=True), "-received_at", "-id")),
    ],
)
def test_next_and_previous_show_every_row_once_in_order_even_when_rows_share_their_times(people, url, order):
    decided = {"status": RequestStatus.APPROVED, "decided_by": people["alice"]} if "decided" in url else {}
    created = numbered_requests(80, **decided)
    if decided:  # voted in batches of 7 at the same moment; the requests' own decision times differ
        for row in created:
            row.decided_at = None if row.title == "Row 013" else timezone.now() - timedelta(minutes=row.pk % 13)
        ApprovalRequest.objects.bulk_update(created, ["decided_at"])
        Vote.objects.bulk_create(
            Vote(request=row, user=people["alice"], approve=True, created_at=row.received_at) for row in created
        )
    expected = [row.title for row in ApprovalRequest.objects.filter(pk__in=[r.pk for r in created]).order_by(*order)]
    client = client_for(people["alice"])

    forward, htmls = walk(client, url)

    assert [len(page) for page in forward] == [25, 25, 25, 5]
    assert sum(forward, []) == expected
    numbers = [re.search(r"<span>Page (\d+)( of \d+)?</span>", html).groups() for html in htmls]
    assert [number for number, _ in numbers] == ["1", "2", "3", "4"]
    assert {of for _, of in numbers} == ({None} if "q=" in url else {" of 4"})  # 80 found: more than 50
    assert link(htmls[0], "prev") is None and link(htmls[-1], "next") is None
    # And back again from the last page, by the Previous links, to the first page's own URL.
    backward, back_htmls = walk(client, link(htmls[2], "next"), rel="prev")
    assert backward == forward[::-1]
    assert "page=" not in link(back_htmls[-2], "prev")  # page 2 links to the first page itself


def test_pages_continue_where_they_were_when_the_last_row_shown_was_decided_meanwhile(people):
    numbered_requests(60, same_time=1)
    client = client_for(people["alice"])
    first = client.get("/").content.decode()
    last_shown = ApprovalRequest.objects.get(title=titles(first)[-1])

    services.approval_decide(public_id=last_shown.public_id, user=people["erin"], approve=True, comment="")
    second = client.get("/" + link(first, "next")).content.decode()

    assert titles(first)[-1] == "Row 024"
    assert titles(second) == [f"Row {number:03d}" for number in range(25, 50)]


def test_a_bare_page_number_is_only_a_label_and_shows_the_first_page(people):
    """The portal's page links always carry the row to seek from; a page number alone (typed,
    or from a link the portal never made) would need OFFSET, which reads every row before it."""
    numbered_requests(60, same_time=1)
    client = client_for(people["alice"])

    for url in ("/?page=2", "/?page=99", "/?page=two", "/?page=-1", "/?q=row&page=99999999999999999999999"):
        html = client.get(url).content.decode()
        assert titles(html)[0] == "Row 000", url
        assert link(html, "prev") is None, url
        assert re.search(r"<span>Page 1( of 3)?</span>", html), url
    second = client.get("/" + link(client.get("/?page=2").content.decode(), "next")).content.decode()
    assert titles(second) == [f"Row {number:03d}" for number in range(25, 50)]
    assert "Page 2 of 3" in second


@pytest.mark.parametrize("cursor", ["after=not-a-uuid", f"after={uuid.uuid4()}", f"before={uuid.uuid4()}"])
def test_a_broken_or_unknown_page_link_shows_the_first_page(people, cursor):
    numbered_requests(30, same_time=1)

    response = client_for(people["alice"]).get(f"/?page=7&{cursor}")

    assert response.status_code == 200
    assert titles(response.content.decode())[0] == "Row 000"
    assert "Page 1 of 2" in response.content.decode()


def test_a_page_link_with_a_nul_character_is_a_bad_request(people):
    # It showed the first page; a NUL character in any URL is now refused before a view reads it
    # (portal/middleware.py), because the admin's filters handed it to PostgreSQL.
    numbered_requests(30, same_time=1)

    response = client_for(people["alice"]).get("/?page=7&before=%00")

    assert response.status_code == 400
    assert "NUL character" in response.content.decode()


def test_tabs_filters_and_clear_start_again_at_the_first_page(people):
    numbered_requests(60)
    client = client_for(people["alice"])
    second = client.get("/" + link(client.get("/?sort=deadline").content.decode(), "next")).content.decode()

    links = re.findall(r'href="(\?[^"]*)"', second)

    tab_and_clear = [unescape(href) for href in links if "tab=" in href or "sort=" not in href]
    assert tab_and_clear and not [href for href in tab_and_clear if "after=" in href or "page=" in href]
    form = second[second.index('<form method="get"') : second.index("</form>")]
    assert 'name="after"' not in form and 'name="page"' not in form


def test_a_search_counts_up_to_50_and_its_pages_still_reach_every_match(people):
    numbered_requests(130)
    numbered_requests(3, group="travel-approvers")  # not hers
    client = client_for(people["alice"])

    pages, htmls = walk(client, "/?q=row")
    few = client.get("/", {"q": "row 12"}).content.decode()  # Row 120…129: "12" must begin a word

    assert "More than 50 matching requests for “row”" in htmls[0]
    assert "<span>Page 1</span>" in htmls[0] and "<span>Page 6</span>" in htmls[-1]
    assert sorted(sum(pages, [])) == [f"Row {number:03d}" for number in range(130)]
    assert "10 matching requests for “row 12”" in few
    assert 'rel="next"' not in few


def test_the_number_of_queries_does_not_grow_with_the_page_depth(people):
    numbered_requests(300)
    client = client_for(people["alice"])
    _, htmls = walk(client, "/")
    urls = [link(html, "next") for html in htmls[:-1]]  # page 2 … 12
    search = walk(client, "/?q=row")[1]
    search_urls = [link(html, "next") for html in search[:-1]]

    by_link = {count_queries(client, "/" + url) for url in urls}
    searching = {count_queries(client, "/" + url) for url in search_urls}

    assert len(urls) == 11
    assert len(by_link) == 1, by_link
    assert len(searching) == 1, searching


def query_plan(queryset, *, disable: tuple[str, ...] = ("seqscan",)) -> str:
    """PostgreSQL's plan for `queryset` as if the tables were big: the scans in `disable` off."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        for scan in disable:
            cursor.execute(f"SET LOCAL enable_{scan} = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.postgres  # the trigram and text-search indexes are PostgreSQL's
def test_search_words_use_the_trigram_or_text_search_index_on_postgresql():
    from approvals.selectors import inbox_filter

    def plan(search: str) -> str:  # a bitmap index scan or nothing
        searched = inbox_filter(ApprovalRequest.objects.order_by(), search=search).values("pk")
        return query_plan(searched, disable=("seqscan", "indexscan"))

    assert "request_search_trgm" in plan("lisbon")
    assert "request_search_trgm" not in plan("42")  # no trigram in it: the index would read every entry
    assert "request_search_words" in plan("42")  # a word beginning, in the text-search index
    assert "request_search_words" in plan("eu-c")


@pytest.mark.postgres  # reads PostgreSQL's query plan (EXPLAIN)
def test_decided_by_me_reads_the_users_votes_newest_first_from_their_index(people, inbox):
    from approvals.selectors import inbox_tab

    # Sorts off too: what the planner picks for a few rows depends on the statistics other tests'
    # ANALYZE (or autovacuum) left behind; with sorting penalised, only an index that gives this
    # order (the user's votes, newest first) avoids the sort, and a missing one still shows it.
    plan = query_plan(inbox_tab(people["alice"], "decided")[:26], disable=("seqscan", "sort"))

    assert "vote_user_created" in plan, plan  # no sort of every vote: a page reads about a page


# ---------------------------------------------------------------------------
# Deadlines: relative, absolute on hover, overdue and soon marked
# ---------------------------------------------------------------------------
def test_deadlines_are_relative_with_the_absolute_time_in_a_title(people, inbox):
    set_deadline(inbox["waiting_group"], -timedelta(hours=2, minutes=5))
    set_deadline(inbox["waiting_user"], timedelta(hours=3, minutes=5))

    page = client_for(people["alice"]).get("/").content.decode()

    deadline = ApprovalRequest.objects.get(pk=inbox["waiting_group"].pk).deadline
    overdue = re.search(
        r'<time datetime="([^"]+)" title="([^"]+)" data-local="title" class="due due-overdue">([^<]+)</time>', page
    )
    assert overdue, page
    assert overdue.group(1) == deadline.isoformat()
    assert overdue.group(2).endswith("UTC")  # the server's zone; portal.js shows the viewer's
    assert overdue.group(3) == "overdue by 2\xa0hours"
    assert re.search(r'class="due due-soon">due in 3\xa0hours</time>', page)
    assert "is-overdue" in page


# ---------------------------------------------------------------------------
# The request page
# ---------------------------------------------------------------------------
def test_details_are_a_readable_escaped_table_with_amounts_links_lists_and_folds(people):
    details = {
        "order": {"id": 1234, "total": {"amount": "5300.00", "currency": "EUR"}},
        "supplierUrl": "https://supplier.example/orders/1234?a=1&b=2",
        "notAUrl": "javascript:alert(1)",
        "lines": [{"item": "Laptop", "qty": 2}, {"item": "<b>Dock</b>", "qty": 2}],
        "tags": ["urgent", "capex"],
        "notes": "x" * 1000,
        "approved_before": False,
        "empty": None,
    }
    request = ingest("Order 1234", details=details)

    page = client_for(people["alice"]).get(f"/requests/{request.public_id}/").content.decode()

    assert '<span class="amount">5,300.00\xa0EUR</span>' in page
    assert (
        '<a href="https://supplier.example/orders/1234?a=1&amp;b=2" rel="noopener noreferrer nofollow">'
        "https://supplier.example/orders/1234?a=1&amp;b=2</a>"
    ) in page
    assert 'href="javascript' not in page
    assert "javascript:alert(1)" in page
    # A list of records is one table (columns in the stored order: jsonb sorts keys).
    assert re.search(r'<table class="records"><thead><tr>(<th scope="col">(Item|Qty)</th>){2}</tr></thead>', page)
    assert "<td>&lt;b&gt;Dock&lt;/b&gt;</td>" in page
    assert '<ul class="items"><li>urgent</li><li>capex</li></ul>' in page
    assert '<details class="fold"><summary>' + "x" * 120 + "…</summary>" in page
    assert '<th scope="row">Supplier url</th>' in page
    assert '<th scope="row">Approved before</th><td>no</td>' in page


def test_the_page_links_the_execution_and_state_machine_to_the_aws_console(people):
    execution = "arn:aws:states:eu-central-1:123456789012:execution:purchase-orders:run-77"
    request = ingest("Order 77", execution=execution, stateMachine=MACHINE, state="ManagerApproval")

    page = client_for(people["alice"]).get(f"/requests/{request.public_id}/").content.decode()

    assert (
        f'href="https://console.aws.amazon.com/states/home?region=eu-central-1#/v2/executions/details/{execution}"'
        in page
    )
    assert (
        f'href="https://console.aws.amazon.com/states/home?region=eu-central-1#/statemachines/view/{MACHINE}"' in page
    )
    assert "ManagerApproval" in page


@pytest.mark.parametrize(
    ("status", "error_code", "wording", "final"),
    [
        (CallbackStatus.PENDING, "", "queued to be sent", False),
        (CallbackStatus.RETRYING, "ThrottlingException", "waiting to retry", False),
        (CallbackStatus.DELIVERED, "", "sent to Step Functions", True),
        (CallbackStatus.FAILED, "TaskTimedOut", "not sent: the workflow had already timed out", True),
    ],
)
def test_after_the_decision_the_page_says_what_happened_to_the_callback(people, status, error_code, wording, final):
    request = ingest("Order 9")
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True, comment="fine")
    Callback.objects.filter(request=request).update(status=status, error_code=error_code)

    page = client_for(people["alice"]).get(f"/requests/{request.public_id}/result/").content.decode()

    assert "You approved this request." in page
    status_element = re.search(r'<span id="callback-status"[^>]*>([^<]+)</span>', page)
    assert status_element.group(1) == wording
    assert ("data-pending" in status_element.group(0)) is not final  # portal.js keeps checking until final
    assert "alice@example.com" in page


def test_history_shows_who_did_what_with_comments(people):
    request = ingest("Order 10")
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=False, comment="No budget")

    page = client_for(people["erin"]).get(f"/requests/{request.public_id}/").content.decode()

    history = page[page.index('id="history"') :]
    assert "Rejected</span> by alice@example.com" in history
    assert "<blockquote>No budget</blockquote>" in history
    assert "Your decision" not in page  # decided: no form


# ---------------------------------------------------------------------------
# Deciding: comment required on reject, a confirm step, then the decision
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("step", ["confirm", "decide"])
def test_rejecting_without_a_comment_is_refused_by_the_server_with_a_clear_message(people, step):
    request = ingest("Order 11")
    client = client_for(people["alice"])

    response = client.post(
        f"/requests/{request.public_id}/{step}/",
        {"decision": "reject", "comment": "   ", "csrfmiddlewaretoken": csrf(client)},
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert REJECT_NEEDS_COMMENT in page
    assert 'aria-invalid="true"' in page
    assert 'aria-describedby="comment-hint comment-error"' in page
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert not Callback.objects.exists()


def test_the_confirm_step_changes_nothing_and_its_yes_button_decides(people):
    request = ingest("Order 12")
    client = client_for(people["alice"])
    token = csrf(client)

    confirm = client.post(
        f"/requests/{request.public_id}/confirm/",
        {"decision": "approve", "comment": "Fine <by> me", "csrfmiddlewaretoken": token},
    )

    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "Yes, approve" in page
    assert f'action="/requests/{request.public_id}/decide/"' in page
    assert '<input type="hidden" name="decision" value="approve">' in page
    assert '<input type="hidden" name="comment" value="Fine &lt;by&gt; me">' in page
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING

    decided = client.post(
        f"/requests/{request.public_id}/decide/",
        {"decision": "approve", "comment": "Fine <by> me", "csrfmiddlewaretoken": token},
    )

    assert decided.status_code == 302
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    assert request.decision_comment == "Fine <by> me"


def test_change_the_comment_goes_back_to_the_form_with_the_comment_kept(people):
    request = ingest("Order 13")
    client = client_for(people["alice"])

    response = client.post(
        f"/requests/{request.public_id}/confirm/",
        {"decision": "reject", "comment": "Too expensive", "edit": "1", "csrfmiddlewaretoken": csrf(client)},
    )

    assert response.status_code == 200
    assert ">Too expensive</textarea>" in response.content.decode()
    assert f'action="/requests/{request.public_id}/confirm/"' in response.content.decode()


def test_the_confirm_step_refuses_who_may_not_decide_and_audits_it(people):
    request = ingest("Order 14")
    client = client_for(people["bob"])  # the requester

    response = client.post(
        f"/requests/{request.public_id}/confirm/",
        {"decision": "approve", "comment": "", "csrfmiddlewaretoken": csrf(client)},
    )

    assert response.status_code == 403
    assert "someone else has to decide" in response.content.decode()
    assert AuditEvent.objects.get(action="decision_refused").data["code"] == "requester"


def test_the_request_page_works_without_javascript_and_only_enhances_with_it(people):
    request = ingest("Order 15")

    page = client_for(people["alice"]).get(f"/requests/{request.public_id}/").content.decode()

    form = page[page.index('<form method="post" action="/requests/') :]
    form = form[: form.index("</form>")]
    assert f'action="/requests/{request.public_id}/confirm/"' in form
    assert 'name="decision" value="approve"' in form
    assert 'name="decision" value="reject"' in form
    textarea = re.search(r"<textarea[^>]*>", form).group(0)
    assert "required" not in textarea  # portal.js adds it only when Reject is pressed
    assert '<script src="/static/approvals/portal.js" defer></script>' in page
    assert "<script>" not in page  # the CSP allows no inline script
    assert '<a class="skip" href="#main">Skip to content</a>' in page
    assert '<main id="main"' in page


# ---------------------------------------------------------------------------
# Refusal pages
# ---------------------------------------------------------------------------
def test_already_decided_says_by_whom_and_when(people):
    request = ingest("Order 16")
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    client = client_for(people["erin"])

    response = client.post(
        f"/requests/{request.public_id}/confirm/",
        {"decision": "reject", "comment": "no", "csrfmiddlewaretoken": csrf(client)},
    )

    assert response.status_code == 409
    page = response.content.decode()
    assert "<h1>Already approved</h1>" in page
    assert "by alice@example.com" in page
    assert "<time datetime=" in page


def test_a_reject_without_comment_on_a_decided_request_explains_the_decision_not_the_comment(people):
    request = ingest("Order 17")
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    client = client_for(people["erin"])

    response = client.post(
        f"/requests/{request.public_id}/decide/", {"decision": "reject", "csrfmiddlewaretoken": csrf(client)}
    )

    assert response.status_code == 409
    assert "already approved" in response.content.decode()


def test_expired_and_not_found_have_their_own_pages(people):
    request = ingest("Order 18")
    set_deadline(request, -timedelta(minutes=1))
    client = client_for(people["alice"])
    token = csrf(client)

    expired = client.post(
        f"/requests/{request.public_id}/confirm/", {"decision": "approve", "csrfmiddlewaretoken": token}
    )
    missing = client.get(f"/requests/{uuid.uuid4()}/")
    not_yours = client_for(people["dave"]).get(f"/requests/{request.public_id}/")

    assert expired.status_code == 410
    assert "<h1>Too late: the deadline has passed</h1>" in expired.content.decode()
    for response in (missing, not_yours):
        assert response.status_code == 404
        assert "<h1>Not found</h1>" in response.content.decode()


# ---------------------------------------------------------------------------
# 10,000 requests: the number of queries does not grow with the rows
# ---------------------------------------------------------------------------
def bulk_requests(count: int, *, group: str, **fields) -> None:
    now = timezone.now()
    rows = [
        ApprovalRequest(
            title=f"Bulk request {number}",
            requester_email="bob@example.com",
            state_machine_arn=MACHINE if number % 2 else OTHER_MACHINE,
            state_name="ManagerApproval",
            deadline=now + timedelta(hours=number % 72 - 6),
            token_ciphertext="x",
            token_fingerprint=uuid.uuid4().hex,
            received_at=now - timedelta(minutes=number),
            details={"amount": number},
            **fields,
        )
        for number in range(count)
    ]
    created = ApprovalRequest.objects.bulk_create(rows, batch_size=2000)
    Assignment.objects.bulk_create(
        [Assignment(request=row, kind=Assignment.Kind.GROUP, value=group) for row in created], batch_size=2000
    )


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


URLS = [
    "/",
    "/?tab=groups",
    "/?tab=decided",
    "/?tab=requested",
    "/?q=bulk+request&sort=deadline&page=3",
    f"/?machine={MACHINE}&due=overdue",
]


def test_the_inbox_needs_the_same_few_queries_for_10_or_10000_requests(people, django_assert_max_num_queries):
    client = client_for(people["alice"])
    bulk_requests(10, group="finance-approvers")
    few = {url: count_queries(client, url) for url in URLS}

    bulk_requests(10_000, group="finance-approvers")
    for url in URLS:
        with django_assert_max_num_queries(12):  # 4 of them the tabs' capped counts
            response = client.get(url)
        assert response.status_code == 200
        assert count_queries(client, url) == few[url], url
    inbox = client.get("/").content.decode().replace('<span class="visually-hidden"> requests</span>', "")
    assert ">999+<" in inbox  # counted up to the cap, not to the end
    assert "More than 999 requests" in inbox


def test_the_request_page_needs_the_same_queries_however_long_its_history(people, django_assert_max_num_queries):
    request = ingest("Order 19")
    client = client_for(people["alice"])
    url = f"/requests/{request.public_id}/"
    few = count_queries(client, url)

    for _ in range(50):
        services.refusal_record(user=people["dave"], request=request, code="not_assignee", attempted="approve")

    with django_assert_max_num_queries(few):
        assert client.get(url).status_code == 200
