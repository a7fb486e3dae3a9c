"""Map and Parallel states: several requests from one execution, shown together, each decided on its own.

The request page lists the execution's other requests the viewer may see; the inbox puts
consecutive rows of one execution under a header that counts them and links to all of them.
Neither costs a query per row.
"""

import json
import re
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import services
from approvals.contract import parse_message
from approvals.execution_groups import mark_execution_groups
from approvals.models import ApprovalRequest, Assignment, RequestStatus
from tests.support import make_user, signed_in

pytestmark = pytest.mark.django_db

MACHINE = "arn:aws:states:eu-central-1:123456789012:stateMachine:purchase-orders"
RUN = "arn:aws:states:eu-central-1:123456789012:execution:purchase-orders:run-7"
OTHER_RUN = "arn:aws:states:eu-central-1:123456789012:execution:purchase-orders:run-8"


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "erin": make_user("erin", "finance-approvers"),
        "dave": make_user("dave", "legal"),
        "carol": make_user("carol", admin=True),
    }


def ingest(title: str, *, execution: str = RUN, state: str = "ApproveLine", groups=("finance-approvers",), **extra):
    body = {
        "taskToken": f"tok-{uuid.uuid4()}",
        "title": title,
        "requester": "bob@example.com",
        "approvers": {"users": [], "groups": list(groups)},
        "stateMachine": MACHINE,
        "state": state,
        **({"execution": execution} if execution else {}),
        **extra,
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    return request


def sibling_titles(html: str) -> list[str]:
    section = html.split('id="siblings"', 1)[1].split("</section>", 1)[0] if 'id="siblings"' in html else ""
    return re.findall(r'<a href="/requests/[^"]+/">([^<]+)</a>', section)


def inbox_structure(html: str) -> list:
    """The inbox list as [title, ...] with each execution group as (header text, [titles])."""
    listing = html.split('<ol class="requests" aria-labelledby="results-summary">', 1)[1]
    result, group = [], None
    for match in re.finditer(
        r'<p class="execution-head"[^>]*>\s*<span>(.*?)</span>|class="request-title"[^>]*>([^<]+)</a>|(</ol></li>)',
        listing,
        re.S,
    ):
        head, title, end = match.groups()
        if head:
            group = (re.sub(r"<[^>]+>", "", head), [])
            result.append(group)
        elif title:
            (group[1] if group else result).append(title)
        elif end:
            group = None
    return result


# ---------------------------------------------------------------------------
# The request page
# ---------------------------------------------------------------------------
def test_the_request_page_lists_the_other_requests_of_its_execution_each_with_state_status_and_link(people):
    first = ingest("Line 1: laptops")
    second = ingest("Line 2: monitors")
    third = ingest("Line 3: desks", state="ApproveFurniture")
    ingest("Elsewhere", execution=OTHER_RUN)
    services.approval_decide(public_id=second.public_id, user=people["erin"], approve=True)

    html = signed_in(people["alice"]).get(f"/requests/{first.public_id}/").content.decode()

    assert '<h2 id="siblings">Other requests from this execution</h2>' in html
    assert "each request is decided on its own" in html
    assert sibling_titles(html) == ["Line 2: monitors", "Line 3: desks"]
    section = html.split('id="siblings"', 1)[1]
    assert f'href="/requests/{second.public_id}/"' in section and f'href="/requests/{third.public_id}/"' in section
    assert '<span class="status status-approved">Approved</span>' in section
    assert "<span>ApproveFurniture</span>" in section
    assert "data-decision-form" in html  # the page's own request is still decided on its own


def test_a_sibling_the_viewer_may_not_see_is_not_listed(people):
    mine = ingest("Line 1: laptops")
    ingest("Line 2: legal review", groups=["legal"])
    theirs = ingest("Line 3: contract", groups=["legal"])

    alice = signed_in(people["alice"]).get(f"/requests/{mine.public_id}/").content.decode()
    dave = signed_in(people["dave"]).get(f"/requests/{theirs.public_id}/").content.decode()
    carol = signed_in(people["carol"]).get(f"/requests/{mine.public_id}/").content.decode()

    assert 'id="siblings"' not in alice  # the only sibling alice may see would be her own request
    assert sibling_titles(dave) == ["Line 2: legal review"]
    assert sibling_titles(carol) == ["Line 2: legal review", "Line 3: contract"]  # admins see all


def test_a_request_without_an_execution_lists_no_siblings(people):
    lone = ingest("No execution", execution="")
    ingest("Also none", execution="")

    assert 'id="siblings"' not in signed_in(people["alice"]).get(f"/requests/{lone.public_id}/").content.decode()


def test_the_requester_and_who_decided_see_siblings_they_are_part_of(people):
    bob = make_user("bob")
    first, second = ingest("Line 1"), ingest("Line 2")
    services.approval_decide(public_id=second.public_id, user=people["erin"], approve=True)
    people["erin"].groups.clear()  # no longer an approver; still the one who decided line 2
    ingest("Line 3")

    assert sibling_titles(signed_in(bob).get(f"/requests/{first.public_id}/").content.decode()) == ["Line 2", "Line 3"]
    erin = signed_in(people["erin"]).get(f"/requests/{second.public_id}/").content.decode()
    assert sibling_titles(erin) == []


def test_the_sibling_list_is_bounded_and_costs_the_same_queries_however_big_the_execution(
    people, django_assert_max_num_queries
):
    request = ingest("Line 0")
    client = signed_in(people["alice"])
    url = f"/requests/{request.public_id}/"
    bulk(3, execution=RUN)
    with CaptureQueriesContext(connection) as few:
        client.get(url)

    bulk(300, execution=RUN)
    with django_assert_max_num_queries(len(few)):
        html = client.get(url).content.decode()
    assert len(sibling_titles(html)) == 50
    assert "Showing the first 50." in html


def test_a_sibling_shows_how_it_ended_as_its_own_page_does_without_a_query_per_sibling(
    people, django_assert_num_queries
):
    """The sibling list showed the stored status: "Expired" for a request Step Functions closed
    as for one past the portal's deadline (its own page says "Closed by Step Functions")."""
    request = ingest("Line 0")
    ingest("Line 1")
    client = signed_in(people["alice"])
    url = f"/requests/{request.public_id}/"
    client.get(url)  # the session's first use, counted in neither
    with CaptureQueriesContext(connection) as one_sibling:
        assert len(sibling_titles(client.get(url).content.decode())) == 1
    expired = ingest("Line 2", timeoutSeconds=60)
    ApprovalRequest.objects.filter(pk=expired.pk).update(deadline=timezone.now() - timedelta(minutes=1))
    assert services.approval_expire(request_id=expired.pk)
    timed_out = ingest("Line 3")
    services.approval_close_by_step_functions(request_id=timed_out.pk, code="TaskTimedOut")  # what a heartbeat finds
    gone = ingest("Line 4")
    assert services.approval_close_workflow_gone(request_id=gone.pk, found_by="start")

    with django_assert_num_queries(len(one_sibling)):
        html = client.get(url).content.decode()

    section = html.split('id="siblings"', 1)[1].split("</section>", 1)[0]
    statuses = re.findall(r'<span class="status status-[a-z]+">([^<]+)</span>', section)
    assert statuses == ["Pending", "Expired in the portal", "Closed by Step Functions", "Closed by the system"]
    own_page = client.get(f"/requests/{timed_out.public_id}/").content.decode()
    assert '<span class="status status-expired">Closed by Step Functions</span>' in own_page


# ---------------------------------------------------------------------------
# The inbox
# ---------------------------------------------------------------------------
def test_the_inbox_groups_consecutive_requests_of_one_execution_under_a_header_with_a_link(people):
    ingest("Unrelated, older", execution="")
    ingest("Line 1")
    ingest("Line 2")
    ingest("Line 3")
    ingest("Another run", execution=OTHER_RUN)
    ingest("Newest, alone", execution="")
    client = signed_in(people["alice"])

    html = client.get("/").content.decode()

    assert inbox_structure(html) == [
        "Newest, alone",
        "Another run",
        ("Execution purchase-orders/run-7 · 3 requests", ["Line 3", "Line 2", "Line 1"]),
        "Unrelated, older",
    ]
    assert "more elsewhere" not in html  # all three are here
    filtered = client.get("/", {"q": RUN}).content.decode()
    assert inbox_structure(filtered) == [
        ("Execution purchase-orders/run-7 · 3 requests", ["Line 3", "Line 2", "Line 1"])
    ]


def test_a_group_split_by_a_page_or_a_search_links_to_the_rest(people):
    ingest("Line 1: laptops")
    ingest("Line 2: monitors")
    ingest("Line 3: laptop bags")
    client = signed_in(people["alice"])

    html = client.get("/", {"q": "laptop"}).content.decode()

    assert inbox_structure(html) == [
        ("Execution purchase-orders/run-7 · 3 requests", ["Line 3: laptop bags", "Line 1: laptops"])
    ]
    assert "+1 more elsewhere in the list" in html
    link = re.search(r'Execution <a href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert link == f"?q={RUN.replace(':', '%3A')}"
    assert len(inbox_structure(client.get("/" + link).content.decode())[0][1]) == 3


def test_the_group_counts_only_what_the_tab_holds(people):
    ingest("Line 1")
    ingest("Line 2, for legal", groups=["legal"])
    decided = ingest("Line 3")
    services.approval_decide(public_id=decided.public_id, user=people["erin"], approve=True)
    client = signed_in(people["alice"])

    waiting = inbox_structure(client.get("/").content.decode())
    groups = inbox_structure(client.get("/?tab=groups").content.decode())

    assert waiting == ["Line 1"]  # the other two are not hers to decide: no group of one
    assert groups == [("Execution purchase-orders/run-7 · 2 requests", ["Line 3", "Line 1"])]


def test_each_request_of_a_group_is_decided_on_its_own(people):
    first, second = ingest("Line 1"), ingest("Line 2")

    services.approval_decide(public_id=first.public_id, user=people["alice"], approve=True)

    assert ApprovalRequest.objects.get(pk=first.pk).status == RequestStatus.APPROVED
    assert ApprovalRequest.objects.get(pk=second.pk).status == RequestStatus.PENDING
    assert inbox_structure(signed_in(people["alice"]).get("/").content.decode()) == ["Line 2"]


def test_runs_are_consecutive_rows_and_a_lone_row_with_siblings_elsewhere_gets_its_header():
    def row(arn):
        return SimpleNamespace(execution_arn=arn)

    rows = mark_execution_groups([row("a"), row("a"), row(""), row("a"), row("b"), row("c")], {"a": 3, "b": 1})

    assert [(r.execution_group and (r.execution_group.shown, r.execution_group.more)) for r in rows] == [
        (2, 1),
        None,
        None,
        (1, 2),
        None,
        None,
    ]
    assert [r.ends_execution_group for r in rows] == [False, True, False, True, False, False]


# ---------------------------------------------------------------------------
# Queries: claims and groups add none per row
# ---------------------------------------------------------------------------
def bulk(count: int, *, execution: str | None = None, claimed_by=None, group: str = "finance-approvers") -> None:
    """Rows straight into the tables: every 3 rows share an execution (or all share `execution`)."""
    now, batch = timezone.now(), uuid.uuid4().hex[:8]
    rows = ApprovalRequest.objects.bulk_create(
        [
            ApprovalRequest(
                title=f"Bulk line {number}",
                requester_email="bob@example.com",
                state_machine_arn=MACHINE,
                state_name="ApproveLine",
                execution_arn=execution or f"{RUN}-{batch}-{number // 3}",
                token_ciphertext="x",
                token_fingerprint=uuid.uuid4().hex,
                received_at=now - timedelta(minutes=number),
                claimed_by=claimed_by if number % 2 else None,
                claimed_at=now if claimed_by and number % 2 else None,
            )
            for number in range(count)
        ],
        batch_size=2000,
    )
    Assignment.objects.bulk_create(
        [Assignment(request=row, kind=Assignment.Kind.GROUP, value=group) for row in rows], batch_size=2000
    )


INBOX_URLS = ["/", "/?tab=groups", f"/?q={RUN}&sort=deadline", "/?q=bulk+line", "/?due=soon"]


def test_claims_and_groups_keep_the_inbox_at_the_same_few_queries_for_30_or_6000_requests(
    people, django_assert_max_num_queries
):
    client = signed_in(people["alice"])
    bulk(30, claimed_by=people["erin"])
    bulk(3, execution=RUN, claimed_by=people["alice"])
    few = {}
    for url in INBOX_URLS:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200
        few[url] = len(queries)
    html = client.get("/").content.decode()
    assert "erin@example.com is on it" in html and "· 3 requests" in html

    bulk(6000, claimed_by=people["erin"])
    bulk(300, execution=RUN, claimed_by=people["alice"])
    for url in INBOX_URLS:
        # The inbox's 11 (tests/test_inbox.py), plus one for the page's execution counts.
        with django_assert_max_num_queries(min(few[url], 13)):
            assert client.get(url).status_code == 200


def test_a_page_without_executions_costs_no_extra_query(people):
    ingest("Line 1")
    ingest("Line 2", execution="")
    client = signed_in(people["alice"])
    with CaptureQueriesContext(connection) as with_execution:
        client.get("/")
    ApprovalRequest.objects.update(execution_arn="")

    with CaptureQueriesContext(connection) as without:
        client.get("/")

    assert len(without) == len(with_execution) - 1
