"""Large details stay cheap: the request page, the confirm page, the admin and mails show a bounded
view of a request's details, say what they cut, and link to all of it ("show all", its own URL);
the result page polls a small JSON status instead of itself."""

import json
import re
import uuid
from html.parser import HTMLParser

import pytest
from django.conf import settings as django_settings
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals import links, services
from approvals.contract import DEFAULT_MAX_BYTES, parse_message
from approvals.details_view import MAIL_LIMITS, PAGE_LIMITS, bound, text_lines
from approvals.models import ApprovalRequest, Callback, CallbackStatus, Notification
from approvals.notifications import email, messages
from approvals.templatetags.approvals_tags import bounded_details_html
from tests.support import make_user, signed_in

pytestmark = pytest.mark.django_db

# What a page may weigh with details at the size limit: the page without details is ~15 KB; the
# bounded view adds at most ~20,000 characters (×5 if every one needs escaping) and markup for
# 600 values. Whole, the same details made pages of megabytes.
PAGE_BYTES_BOUND = 250_000
MAIL_BYTES_BOUND = 30_000
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "bob": make_user("bob"),
        "carol": make_user("carol", admin=True),
        "olga": make_user("olga", "other-team"),
    }


def body_with(details, *, title: str = "Order 1234") -> str:
    return json.dumps(
        {
            "taskToken": f"tok-{uuid.uuid4()}",
            "title": title,
            "requester": "bob@example.com",
            "approvers": {"users": [], "groups": ["finance-approvers"]},
            "details": details,
        }
    )


def ingest(details) -> ApprovalRequest:
    request, _ = services.approval_request_ingest(message=parse_message(body_with(details)))
    return ApprovalRequest.objects.get(pk=request.pk)


def at_size_limit(make_item, key: str = "lines") -> dict:
    """{key: [make_item(0), make_item(1), …]} grown until the message is just under the limit."""
    items = []
    size = len(body_with({key: []}).encode())
    while True:
        item = make_item(len(items))
        grown = size + len(json.dumps(item).encode()) + 2
        if grown > DEFAULT_MAX_BYTES - 64:
            return {key: items}
        items.append(item)
        size = grown


FIELD_BYTES = len('"field00000": "value 00000 & more", ')
SHAPES = {
    "order lines": lambda: at_size_limit(
        lambda n: {"item": f"<b>Dock {n}</b>", "qty": n, "price": {"amount": f"{n}.00", "currency": "EUR"}}
    ),
    "hostile texts": lambda: at_size_limit(lambda n: {f"{HOSTILE}{n}": "<&>" * 100}),
    "small objects": lambda: at_size_limit(lambda n: dict.fromkeys("abcdefgh", n % 10)),
    "one long text": lambda: {"notes": "<" * (DEFAULT_MAX_BYTES - 1024)},
    "nested lists": lambda: at_size_limit(lambda n: [[[[[[[[[[[[n, "<i>"]]]]]]]]]]]]),
    "many fields": lambda: {
        f"field{n:05d}": f"value {n:05d} & more" for n in range((DEFAULT_MAX_BYTES - 2048) // FIELD_BYTES)
    },
}


class Markup(HTMLParser):
    """Every tag and attribute of an HTML fragment (to check that nothing came from the data)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            self.attributes.add(name)
            if name == "href":
                self.hrefs.append(value or "")


DETAIL_TAGS = {"table", "thead", "tbody", "tr", "th", "td", "ul", "li", "span", "details", "summary", "div", "a", "p"}
DETAIL_ATTRIBUTES = {"class", "scope", "colspan", "href", "rel"}


def assert_only_our_markup(fragment: str) -> None:
    markup = Markup()
    markup.feed(fragment)
    assert markup.tags <= DETAIL_TAGS, markup.tags - DETAIL_TAGS
    assert markup.attributes <= DETAIL_ATTRIBUTES, markup.attributes - DETAIL_ATTRIBUTES
    assert all(re.match(r"^(https?://|/requests/)", href, re.IGNORECASE) for href in markup.hrefs), markup.hrefs


# ---------------------------------------------------------------------------
# The request page, the confirm page, the admin
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_request_with_details_at_the_size_limit_renders_a_bounded_page_that_links_to_all_of_them(people, shape):
    details = SHAPES[shape]()
    request = ingest(details)
    assert len(body_with(details).encode()) > DEFAULT_MAX_BYTES * 0.95  # at the limit, and accepted

    response = signed_in(people["alice"]).get(f"/requests/{request.public_id}/")

    assert response.status_code == 200
    assert len(response.content) < PAGE_BYTES_BOUND, len(response.content)
    page = response.content.decode()
    assert "<script>alert" not in page and "<b>Dock" not in page and "<i>" not in page
    assert '<p class="cut-note">The details are long: this shows part of them (' in page
    assert f'<a href="/requests/{request.public_id}/details/" class="show-all">Show all details</a>' in page


def test_the_cut_markers_say_how_many_items_fields_and_characters_were_left_out(people):
    details = {
        "a_list": list(range(PAGE_LIMITS.max_items + 1234)),
        "b_text": "y" * (PAGE_LIMITS.max_chars + 1000),
        "c_deep": {"l1": {"l2": {"l3": {"l4": {"l5": {"l6": {"l7": {"l8": {"l9": 1, "also": 2}}}}}}}}},
        "d_fields": {f"k{n:04d}": n for n in range(PAGE_LIMITS.max_items + 1)},
        "e_records": [{"item": "Laptop", "qty": n} for n in range(PAGE_LIMITS.max_items + 7)],
    }
    request = ingest(details)

    page = signed_in(people["alice"]).get(f"/requests/{request.public_id}/").content.decode()

    assert '<li><span class="cut">… 1,234 more items</span></li></ul>' in page
    assert '<span class="cut">… 1,000 more characters</span>' in page
    assert '<span class="cut">{…} 1 field</span>' in page  # at the depth limit (8): only its size
    assert '<tr><td colspan="2"><span class="cut">… 1 more field</span></td></tr>' in page
    assert '<tr><td colspan="2"><span class="cut">… 7 more items</span></td></tr></tbody></table>' in page
    # 1,234 + 1 + 1 + 7 items, 1,000 characters.
    assert "(1,243 items and 1,000 characters left out)" in page
    # Short details are shown whole: no note, no link.
    small = ingest({"order": {"id": 1}})
    small_page = signed_in(people["alice"]).get(f"/requests/{small.public_id}/").content.decode()
    assert "cut-note" not in small_page and "Show all details" not in small_page


def test_the_budget_is_spent_breadth_first_so_a_huge_first_field_hides_no_other_top_level_field():
    details = {"a": [["x" * 1000] * 50] * 50, "b": "last field", "c": {"amount": "5.00", "currency": "EUR"}}

    view = bound(details, PAGE_LIMITS)
    html = bounded_details_html(details, show_all_url="/requests/x/details/")

    assert [key.value for key, _ in view.root.items] == ["a", "b", "c"]
    assert "last field" in html and '<span class="amount">5.00\xa0EUR</span>' in html
    assert view.items_cut > 0 and view.cut


def test_the_email_link_confirm_page_and_the_admin_page_show_the_same_bounded_view(people):
    details = SHAPES["order lines"]()
    request = ingest(details)

    link = links.decision_link_url(public_id=request.public_id, approver_email="alice@example.com", action="approve")
    confirm = signed_in(people["alice"]).get(link.removeprefix(django_settings.PORTAL_BASE_URL))
    admin = signed_in(people["carol"])
    admin_page = admin.get(f"/admin/approvals/approvalrequest/{request.pk}/change/")

    for response in (confirm, admin_page):
        assert response.status_code == 200
        assert len(response.content) < PAGE_BYTES_BOUND, len(response.content)
        html = response.content.decode()
        assert "<b>Dock" not in html
        assert f'<a href="/requests/{request.public_id}/details/" class="show-all">Show all details</a>' in html


def test_hostile_keys_and_values_are_escaped_on_the_page_the_admin_the_mail_and_the_show_all_page(people):
    details = {HOSTILE: {"<img src=x onerror=alert(1)>": HOSTILE, "url": "javascript:alert(1)"}, "x" * 3000: HOSTILE}
    request = ingest(details)
    admin = signed_in(people["carol"])
    notification = Notification.objects.create(
        request=request, channel=Notification.Channel.EMAIL, recipient="alice@example.com", kind="new_request"
    )
    mail = email.render(messages.build(notification), to="alice@example.com")
    pages = {
        "page": signed_in(people["alice"]).get(f"/requests/{request.public_id}/").content.decode(),
        "admin": admin.get(f"/admin/approvals/approvalrequest/{request.pk}/change/").content.decode(),
        "show all": signed_in(people["alice"]).get(f"/requests/{request.public_id}/details/").content.decode(),
        "mail": mail.alternatives[0][0],
    }
    for name, html in pages.items():
        assert "<script>alert" not in html, name
        assert "<img src=x" not in html, name
        assert 'href="javascript' not in html, name
        assert "&lt;script&gt;" in html, name
    # The plain-text mail is no markup: the text as sent, cut to a summary.
    assert "<script>alert" in mail.body


# ---------------------------------------------------------------------------
# Property: whatever JSON, the view never raises, stays bounded and escaped
# ---------------------------------------------------------------------------
HOSTILE_TEXT = st.text(alphabet=st.sampled_from("<>&\"'/ ax\n\u202e") | st.characters(), max_size=60)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | HOSTILE_TEXT,
    lambda children: st.lists(children, max_size=70) | st.dictionaries(HOSTILE_TEXT, children, max_size=70),
    max_leaves=400,
)


def html_bound(limits) -> int:
    """The most a bounded view can weigh: each character escaped (≤ 6 bytes, "&quot;") and at most
    twice (a link's href and text, a fold's preview), and some markup per value."""
    return 12 * (limits.max_total_chars + limits.max_chars) + 400 * limits.max_values + 2_000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(details=JSON_VALUES)
def test_any_json_renders_without_error_bounded_and_escaped(details):
    for limits in (PAGE_LIMITS, MAIL_LIMITS):
        html = str(bounded_details_html(details, show_all_url="/requests/x/details/", limits=limits))
        assert len(html) <= html_bound(limits)
        assert_only_our_markup(html)
        lines = text_lines(bound(details, limits))
        assert sum(len(line) for line in lines) <= 2 * limits.max_total_chars + 80 * (limits.max_values + 10)
    assert len(messages.details_summary(details)) <= MAIL_LIMITS.max_values + MAIL_LIMITS.max_items + 2


@settings(max_examples=30, deadline=None)
@given(width=st.integers(min_value=0, max_value=5_000), depth=st.integers(min_value=0, max_value=40))
def test_wide_and_deep_json_stays_within_the_budget(width, depth):
    details = {"wide": list(range(width)), "deep": "leaf"}
    for _ in range(depth):
        details = {"d": details, "w": [{"k": "v" * 50}] * width}

    view = bound(details, PAGE_LIMITS)
    html = str(bounded_details_html(details, limits=PAGE_LIMITS))

    assert len(html) <= html_bound(PAGE_LIMITS)
    assert_only_our_markup(html)
    if width > PAGE_LIMITS.max_items or depth >= PAGE_LIMITS.max_depth:
        assert view.cut and ("… " in html or "{…}" in html)


# ---------------------------------------------------------------------------
# Mails: a summary and a link, never all the details
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_mail_about_a_request_at_the_size_limit_carries_a_summary_and_the_link(people, shape):
    request = ingest(SHAPES[shape]())
    notification = Notification.objects.create(
        request=request, channel=Notification.Channel.EMAIL, recipient="alice@example.com", kind="new_request"
    )

    mail = email.render(messages.build(notification), to="alice@example.com")
    html = mail.alternatives[0][0]

    assert len(html.encode()) < MAIL_BYTES_BOUND, len(html)
    assert len(mail.body.encode()) < MAIL_BYTES_BOUND, len(mail.body)
    url = f"/requests/{request.public_id}/"
    assert url in mail.body and url in html
    assert "Details (a summary; all of them are on the request page):" in mail.body
    assert "See them all on the request page" in html
    assert "<script>alert" not in html and "<b>Dock" not in html


def test_a_small_request_mails_its_few_fields_whole(people):
    request = ingest({"supplier": "ACME", "total": {"amount": "5300.00", "currency": "EUR"}})
    notification = Notification.objects.create(
        request=request, channel=Notification.Channel.EMAIL, recipient="alice@example.com", kind="new_request"
    )

    mail = email.render(messages.build(notification), to="alice@example.com")

    assert "  supplier: ACME" in mail.body
    assert "    amount: 5300.00" in mail.body
    assert '<span class="amount">5,300.00\xa0EUR</span>' in mail.alternatives[0][0]
    assert "See them all" not in mail.alternatives[0][0]


# ---------------------------------------------------------------------------
# "Show all": its own URL, the request page's permission
# ---------------------------------------------------------------------------
def test_show_all_serves_every_detail_escaped_to_approvers_the_requester_and_admins(people):
    details = SHAPES["hostile texts"]()
    request = ingest(details)
    last_key = next(iter(details["lines"][-1]))

    for person in ("alice", "bob", "carol"):
        response = signed_in(people[person]).get(f"/requests/{request.public_id}/details/")
        assert response.status_code == 200, person
        page = response.content.decode()
        assert "<script>alert" not in page
        assert json.dumps(last_key)[1:-1].replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") in page

    download = signed_in(people["alice"]).get(f"/requests/{request.public_id}/details/?format=json")
    assert download.status_code == 200
    assert download["Content-Type"] == "application/json"
    assert download["X-Content-Type-Options"] == "nosniff"
    assert download["Content-Disposition"].startswith("attachment;")
    assert json.loads(download.content) == details
    assert b"<script>" not in download.content  # JSON's \u003c escapes: no markup even if sniffed


def without_csrf_token(content: bytes) -> bytes:
    """The page's sign-out form carries a fresh (masked) CSRF token on every response."""
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", content)


@pytest.mark.parametrize("suffix", ["details/", "details/?format=json", "status/"])
def test_show_all_and_status_answer_an_outsider_as_if_the_request_did_not_exist(people, suffix):
    request = ingest({"secret": "budget 2027"})
    outsider = signed_in(people["olga"])

    unseen = outsider.get(f"/requests/{request.public_id}/{suffix}")
    missing = outsider.get(f"/requests/{uuid.uuid4()}/{suffix}")

    assert unseen.status_code == missing.status_code == 404
    assert without_csrf_token(unseen.content) == without_csrf_token(missing.content)
    assert b"budget" not in unseen.content
    anonymous = Client().get(f"/requests/{request.public_id}/{suffix}")
    assert anonymous.status_code == 302 and "budget" not in anonymous.content.decode()


# ---------------------------------------------------------------------------
# The result page: a small JSON status, polled by portal.js; a Refresh link without it
# ---------------------------------------------------------------------------
def test_the_status_endpoint_returns_only_status_fields(people):
    request = ingest(SHAPES["order lines"]())
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True, comment="fine")
    Callback.objects.filter(request=request).update(status=CallbackStatus.RETRYING, error_code="ThrottlingException")

    response = signed_in(people["bob"]).get(f"/requests/{request.public_id}/status/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store" and response["X-Content-Type-Options"] == "nosniff"
    assert len(response.content) < 300
    assert response.json() == {
        "status": "approved",
        "statusText": "Approved",
        "callback": {"status": "retrying", "text": "waiting to retry", "final": False},
    }
    pending = ingest({"a": 1})
    assert signed_in(people["alice"]).get(f"/requests/{pending.public_id}/status/").json() == {
        "status": "pending",
        "statusText": "Pending",
        "callback": None,
    }


def test_the_result_page_names_the_status_url_for_its_script_and_keeps_a_refresh_link(people):
    request = ingest({"a": 1})
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True, comment="")

    page = signed_in(people["alice"]).get(f"/requests/{request.public_id}/result/").content.decode()

    status = re.search(r'<span id="callback-status"[^>]*>', page).group(0)
    assert f'data-status-url="/requests/{request.public_id}/status/"' in status
    assert f'<a href="/requests/{request.public_id}/result/" class="refresh">Refresh</a>' in page  # no JavaScript
    assert "<script>" not in page

    Callback.objects.filter(request=request).update(status=CallbackStatus.DELIVERED)
    done = signed_in(people["alice"]).get(f"/requests/{request.public_id}/result/").content.decode()
    assert "data-status-url" not in done and 'class="refresh"' not in done


def test_portal_js_polls_the_json_status_not_the_page():
    from pathlib import Path

    from django.contrib.staticfiles import finders

    script = Path(finders.find("approvals/portal.js")).read_text(encoding="utf-8")

    assert 'getAttribute("data-status-url")' in script
    assert "fetch(window.location.href" not in script and "DOMParser" not in script
