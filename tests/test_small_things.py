"""Small things people notice: the admin's tools at the top of a request, the current approvers
on the reassign form, the operations dashboard linked from the admin's index, the admin search
by execution name, the requester's landing tab, and preferences for a channel not set up.

Through Django's test client with CSRF checks on, as signed-in SSO users. The phone layout and
the checkboxes beside their labels are browser matters: tests/browser/test_small_things_browser.py.
"""

import re

import pytest

from approvals import selectors
from approvals.models import ApprovalRequest, NotificationPreference
from tests.support import make_user
from tests.support import signed_in as client_for
from tests.test_admin import CHANGELIST, ingest, post, sso_user
from tests.test_inbox import query_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(db):
    """As SSO makes them: alice and erin approve (finance, legal), carol is a portal admin."""
    return {
        "alice": sso_user("alice", "finance-approvers"),
        "carol": sso_user("carol", "portal-admins"),
        "erin": sso_user("erin", "legal"),
    }


EXECUTION = "arn:aws:states:eu-central-1:123456789012:execution:purchase-orders:order-4711-Run"


def position(html: str, needle: str) -> int:
    assert needle in html, f"{needle!r} is not on the page"
    return html.index(needle)


def above_the_form(html: str, heading: str) -> str:
    """The part of an action page from `heading` to the action's form."""
    start = position(html, heading)
    return html[start : html.index('<form method="post">', start)]


# ---------------------------------------------------------------------------
# The admin's change page and reassign form
# ---------------------------------------------------------------------------
def test_an_admin_finds_reassign_and_cancel_at_the_top_of_a_requests_change_page(people):
    request = ingest("Finance: order 1", groups=["finance-approvers"])
    page = client_for(people["carol"]).get(f"{CHANGELIST}{request.pk}/change/").content.decode()

    first_field = position(page, "<fieldset")
    assert position(page, f'href="{CHANGELIST}{request.pk}/reassign/"') < first_field
    assert position(page, f'href="{CHANGELIST}{request.pk}/cancel/"') < first_field


def test_an_approver_is_not_offered_reassign_or_cancel_on_the_change_page(people):
    request = ingest("Finance: order 1", groups=["finance-approvers"])
    page = client_for(people["alice"]).get(f"{CHANGELIST}{request.pk}/change/").content.decode()

    assert "/reassign/" not in page and "/cancel/" not in page


def test_decided_requests_offer_no_reassign_or_cancel_at_the_top(people):
    from approvals import services

    request = ingest("Finance: order 1", groups=["finance-approvers"])
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    page = client_for(people["carol"]).get(f"{CHANGELIST}{request.pk}/change/").content.decode()

    assert "/reassign/" not in page and "/cancel/" not in page


def test_the_reassign_form_shows_the_current_approvers(people):
    request = ingest("Finance: order 1", users=["alice@example.com"], groups=["finance-approvers"])
    page = client_for(people["carol"]).get(f"{CHANGELIST}{request.pk}/reassign/").content.decode()

    current = above_the_form(page, "Current approvers")
    assert "alice@example.com" in current
    assert re.search(r"finance-approvers\s*\(group\)", current)


def test_the_reassign_form_still_shows_the_current_approvers_after_a_refused_post(people):
    request = ingest("Finance: order 1", users=["alice@example.com"])
    page = post(
        client_for(people["carol"]),
        f"{CHANGELIST}{request.pk}/reassign/",
        {"groups": "legal", "mode": "replace", "reason": ""},
    ).content.decode()

    assert "This field is required" in page
    assert "alice@example.com" in above_the_form(page, "Current approvers")


# ---------------------------------------------------------------------------
# The admin's index
# ---------------------------------------------------------------------------
def test_the_admin_index_links_the_operations_dashboard_for_admins(people):
    page = client_for(people["carol"]).get("/admin/").content.decode()

    assert 'href="/admin/dashboard/"' in page
    assert "Operations dashboard" in page


def test_approvers_see_no_dashboard_link_on_the_admin_index(people):
    approver = sso_user("frank", "finance-approvers", "portal-approvers")
    page = client_for(approver).get("/admin/")

    assert page.status_code == 200
    assert "/admin/dashboard/" not in page.content.decode()


# ---------------------------------------------------------------------------
# Admin search by execution name
# ---------------------------------------------------------------------------
def changelist_titles(client, query: str) -> set[str]:
    page = client.get(CHANGELIST, {"q": query}).content.decode()
    return set(re.findall(r'<th class="field-title"><a [^>]*>([^<]*)</a>', page))


def test_admin_search_finds_an_execution_by_its_name(people):
    ingest("Order 4711", groups=["finance-approvers"], execution=EXECUTION)
    ingest("Order 4712", groups=["finance-approvers"], execution=EXECUTION.replace("4711", "4712"))
    carol = client_for(people["carol"])

    assert changelist_titles(carol, "order-4711-Run") == {"Order 4711"}
    assert changelist_titles(carol, "ORDER-4711-run") == {"Order 4711"}  # as typed, any case
    assert changelist_titles(carol, "4711-run") == {"Order 4711"}  # part of the name
    assert changelist_titles(carol, EXECUTION) == {"Order 4711"}  # the whole ARN, as before


def test_an_approver_searching_by_execution_name_finds_only_their_own_requests(people):
    ingest("Legal contract", groups=["legal"], execution=EXECUTION)

    alice = client_for(people["alice"])

    assert changelist_titles(alice, "order-4711-Run") == set()
    assert changelist_titles(client_for(people["erin"]), "order-4711-Run") == {"Legal contract"}


@pytest.mark.postgres  # the trigram index and its query plan are PostgreSQL's
def test_the_search_by_execution_name_reads_an_index_not_the_whole_table():
    searched = ApprovalRequest.objects.filter(pk__in=selectors.request_ids_matching("order-4711-Run"))

    plan = query_plan(searched, disable=("seqscan",))

    assert "request_execution_trgm" in plan, plan
    assert "Seq Scan on approvals_approvalrequest" not in plan, plan


def test_admin_search_by_an_arn_finds_the_executions_that_start_with_it(people):
    """An execution ARN is searched from its start: a name may not contain ':', so "arn:" is
    only ever at the start and "contains" and "starts with" find the same rows, in any case."""
    ingest("Order 4711", groups=["finance-approvers"], execution=EXECUTION)
    ingest("Order 47110", groups=["finance-approvers"], execution=EXECUTION.replace("4711", "47110"))
    ingest("Order 14711", groups=["finance-approvers"], execution=EXECUTION.replace("4711", "14711"))
    carol = client_for(people["carol"])
    prefix = EXECUTION.removesuffix("-Run")

    assert changelist_titles(carol, EXECUTION) == {"Order 4711"}
    assert changelist_titles(carol, EXECUTION.upper()) == {"Order 4711"}
    assert changelist_titles(carol, f"  {EXECUTION.lower()} ") == {"Order 4711"}
    assert changelist_titles(carol, prefix) == {"Order 4711", "Order 47110"}  # not …:order-14711
    assert changelist_titles(carol, prefix.replace("eu-central-1", "eu-west-1")) == set()
    assert changelist_titles(carol, "arn:aws:states:eu-central-1:123456789012:execution:purchase_orders") == set()
    assert changelist_titles(carol, "arn:aws:states:%:order-4711-Run") == set()  # % is a character, not a wildcard


def test_an_approver_searching_by_a_whole_arn_finds_only_their_own_requests(people):
    ingest("Legal contract", groups=["legal"], execution=EXECUTION)
    alice = client_for(people["alice"])

    assert changelist_titles(alice, EXECUTION) == set()
    assert changelist_titles(alice, "arn:") == set()  # every ARN starts so: still only her own
    assert changelist_titles(client_for(people["erin"]), EXECUTION) == {"Legal contract"}


@pytest.mark.postgres  # the indexes and their query plans are PostgreSQL's
def test_the_search_by_a_whole_arn_reads_the_arns_prefix_index_not_the_trigram_index():
    """Every ARN shares "arn:aws:states:<region>:<account>:execution:": as trigrams, a whole ARN
    made PostgreSQL read every row's entries in the trigram index (19 ms at 100,000 requests for
    one match), however few rows matched. By its prefix, a btree reads only the matches."""
    searched = ApprovalRequest.objects.filter(pk__in=selectors.request_ids_matching(EXECUTION))

    plan = query_plan(searched, disable=("seqscan",))

    assert "request_execution_prefix" in plan, plan
    assert "request_execution_trgm" not in plan, plan
    assert "Seq Scan on approvals_approvalrequest" not in plan, plan


# ---------------------------------------------------------------------------
# The inbox's landing tab
# ---------------------------------------------------------------------------
@pytest.fixture
def inbox_people(db):
    return {"alice": make_user("alice", "finance-approvers"), "bob": make_user("bob"), "zoe": make_user("zoe")}


def current_tab(html: str) -> str:
    return re.search(r'aria-current="page">([^<]+)<span class="badge">', html).group(1).strip()


def test_a_requester_with_nothing_waiting_lands_on_i_requested(inbox_people):
    ingest("Bob's order", groups=["finance-approvers"], requester="bob@example.com")

    page = client_for(inbox_people["bob"]).get("/").content.decode()

    assert current_tab(page) == "I requested"
    assert "Bob&#x27;s order" in page
    assert '<input type="hidden" name="tab" value="requested">' in page


def test_an_approver_with_requests_waiting_still_lands_on_waiting_for_me(inbox_people):
    ingest("Alice's own order", groups=["finance-approvers"], requester="alice@example.com")
    ingest("Bob's order", groups=["finance-approvers"], requester="bob@example.com")

    page = client_for(inbox_people["alice"]).get("/").content.decode()

    assert current_tab(page) == "Waiting for me"


def test_someone_with_nothing_at_all_lands_on_waiting_for_me(inbox_people):
    page = client_for(inbox_people["zoe"]).get("/").content.decode()

    assert current_tab(page) == "Waiting for me"
    assert "Nothing is waiting for you." in page


def test_a_requester_who_asks_for_waiting_for_me_gets_it(inbox_people):
    ingest("Bob's order", groups=["finance-approvers"], requester="bob@example.com")

    page = client_for(inbox_people["bob"]).get("/?tab=waiting").content.decode()

    assert current_tab(page) == "Waiting for me"
    assert "Nothing is waiting for you." in page


# ---------------------------------------------------------------------------
# Preferences: a channel that is not set up is shown off
# ---------------------------------------------------------------------------
def slack_checkbox(html: str) -> str:
    return re.search(r'<input[^>]*name="slack_enabled"[^>]*>', html).group(0)


def test_slack_is_shown_off_and_disabled_when_it_is_not_set_up(inbox_people, settings):
    settings.SLACK_BOT_TOKEN = ""
    page = client_for(inbox_people["alice"]).get("/preferences/").content.decode()

    checkbox = slack_checkbox(page)
    assert "disabled" in checkbox
    assert "checked" not in checkbox
    assert "Slack is not set up for this portal." in page


def test_saving_preferences_while_slack_is_not_set_up_keeps_the_stored_slack_choice(inbox_people, settings):
    settings.SLACK_BOT_TOKEN = ""
    client = client_for(inbox_people["alice"])
    client.get("/preferences/")
    token = client.cookies["portal_csrftoken"].value

    # A forged "on" for the disabled box changes nothing, and saving keeps what was stored.
    client.post("/preferences/", {"email_enabled": "on", "slack_enabled": "on", "csrfmiddlewaretoken": token})
    saved = NotificationPreference.objects.get(user=inbox_people["alice"])
    assert saved.slack_enabled is True  # the default, kept for when Slack is set up

    NotificationPreference.objects.filter(pk=saved.pk).update(slack_enabled=False)
    client.post("/preferences/", {"email_enabled": "on", "slack_enabled": "on", "csrfmiddlewaretoken": token})
    assert NotificationPreference.objects.get(pk=saved.pk).slack_enabled is False


def test_slack_is_offered_and_checked_when_it_is_set_up(inbox_people, settings):
    settings.SLACK_BOT_TOKEN = "xoxb-test"  # noqa: S105 - not a secret, only "configured"
    page = client_for(inbox_people["alice"]).get("/preferences/").content.decode()

    checkbox = slack_checkbox(page)
    assert "disabled" not in checkbox
    assert "checked" in checkbox
    assert "Slack is not set up" not in page
