"""The approver's path in a real browser (Chromium), against real processes.

Step Functions (moto server) → SQS → Celery worker → alice signs in through the dev IdP's login
page → finds the request by search → opens it → approves with a comment → confirms → sees the
callback status turn to "sent" → the execution SUCCEEDED. Also: a rejection without a comment is
stopped (by the browser with JavaScript, by the server without), the same at 375 px, axe-core
on every page, screenshots into var/screenshots/.
"""

import json
import re
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import services
from approvals.contract import parse_message
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, AuditEvent, Callback, CallbackStatus, RequestStatus
from tests.browser.conftest import DESKTOP, PHONE, assert_accessible, assert_fits, screenshot, sign_in
from tests.support import wait_for, wait_for_execution_end

pytestmark = pytest.mark.browser

REJECT_MESSAGE = "Say why you reject: the requester and the workflow see it."


def start_execution(state_machine_arn: str, title: str) -> tuple[str, ApprovalRequest]:
    """A real execution of the demo state machine; returns it with the request it became."""
    execution_arn = gateway.start_execution(
        state_machine_arn=state_machine_arn,
        name=f"browser-{uuid.uuid4().hex[:12]}",
        execution_input={
            "title": title,
            "approvers": {"users": ["alice@example.com"], "groups": ["finance-approvers"]},
            "requester": "bob@example.com",
            "details": {
                "order": {"id": 1234, "total": {"amount": "5300.00", "currency": "EUR"}},
                "supplier": "Müller & Söhne <GmbH>",
                "quote": "https://supplier.example/quotes/1234",
                "lines": [
                    {"item": 'Laptop 14"', "qty": 2, "price": {"amount": "2400.00", "currency": "EUR"}},
                    {"item": "Docking station", "qty": 2, "price": {"amount": "250.00", "currency": "EUR"}},
                ],
                "costCentre": "4711 Engineering",
            },
        },
    )
    request = wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())
    return execution_arn, request


def seed_other_requests() -> None:
    """A few more rows for alice's inbox, so the list shows overdue, soon-due and later deadlines."""
    rows = [
        ("Travel: Lisbon customer visit (EUR 1,240)", timedelta(hours=-3), "carol@example.com"),
        ("Software licence renewal: 40 seats", timedelta(days=5), "dave@example.com"),
        ("Conference budget Q3", None, "bob@example.com"),
    ]
    for title, deadline, requester in rows:
        body = {
            "taskToken": f"tok-{uuid.uuid4()}",
            "title": title,
            "requester": requester,
            "approvers": {"users": [], "groups": ["finance-approvers"]},
            "stateMachine": "arn:aws:states:us-east-1:123456789012:stateMachine:travel-and-purchases",
            "state": "ManagerApproval",
            "details": {"note": title},
        }
        request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
        ApprovalRequest.objects.filter(pk=request.pk).update(
            deadline=None if deadline is None else timezone.now() + deadline
        )


def open_from_inbox_by_search(page, search: str, title: str, prefix: str, width: int) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("link", name=re.compile("Waiting for me"))).to_have_attribute("aria-current", "page")
    expect(page.locator(".due-overdue").first).to_contain_text("overdue by")
    expect(page.locator(".due-soon").first).to_contain_text("due in")
    screenshot(page, f"{prefix}-inbox")
    assert_accessible(page, "inbox")
    assert_fits(page, width, "inbox")

    if width <= PHONE["width"]:  # on a phone the filters are folded away: open them first
        page.get_by_text("Search and filter").click()
    page.get_by_role("searchbox", name="Search").fill(search)
    page.get_by_role("button", name="Search").click()

    expect(page.locator("ol.requests > li")).to_have_count(1)
    expect(page.locator(".summary")).to_contain_text("1 matching request")
    screenshot(page, f"{prefix}-inbox-search")
    page.get_by_role("link", name=title).click()


def approve_on_detail_and_confirm(page, request: ApprovalRequest, comment: str, prefix: str, width: int, *, tap_twice):
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", level=1)).to_have_text(request.title)
    expect(page.locator("table.details").first).to_contain_text("Müller & Söhne <GmbH>")  # escaped, shown as text
    expect(page.get_by_role("link", name="https://supplier.example/quotes/1234")).to_be_visible()
    expect(page.locator(".amount", has_text="5,300.00")).to_have_text("5,300.00\u00a0EUR")
    console = page.locator("a.console")
    expect(console).to_have_attribute("href", re.compile(r"^https://console\.aws\.amazon\.com/states/home\?region="))
    # portal.js shows the exact deadline in the browser's zone (Europe/Berlin here), on hover.
    berlin = re.compile(r"(CET|CEST|GMT\+1|GMT\+2)")
    expect(page.locator("dd time.due")).to_have_attribute("title", berlin)
    expect(page.locator('dd time[data-local="text"]').first).to_have_text(berlin)
    screenshot(page, f"{prefix}-detail")
    assert_accessible(page, "detail")
    assert_fits(page, width, "detail")

    page.get_by_label("Comment").fill(comment)
    page.get_by_role("button", name="Approve…").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Approve “")
    expect(page.locator(".confirm")).to_contain_text(comment)
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING  # the confirm step decides nothing
    screenshot(page, f"{prefix}-confirm")
    assert_accessible(page, "confirm")
    assert_fits(page, width, "confirm")

    yes = page.get_by_role("button", name="Yes, approve")
    if tap_twice:
        yes.dblclick()  # an accidental double tap sends one decision
    else:
        yes.focus()  # keyboard: the button is reachable and Enter presses it
        page.keyboard.press("Enter")


def see_the_callback_sent(page, request: ApprovalRequest, prefix: str, width: int) -> None:
    from playwright.sync_api import expect

    expect(page).to_have_url(re.compile(rf"/requests/{request.public_id}/result/$"))
    expect(page.locator(".outcome")).to_contain_text("You approved this request.")
    # portal.js re-reads the page until the worker has called SendTaskSuccess: no reload here.
    expect(page.locator("#callback-status")).to_have_text("sent to Step Functions", timeout=60_000)
    screenshot(page, f"{prefix}-result")
    assert_accessible(page, "result")
    assert_fits(page, width, "result")


def assert_approved_once(execution_arn: str, request: ApprovalRequest, comment: str) -> None:
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    approval = json.loads(execution["output"])["approval"]
    assert approval["decision"] == "approved"
    assert approval["decidedBy"]["email"] == "alice@example.com"
    assert approval["comment"] == comment
    assert Callback.objects.filter(request=request).count() == 1
    assert not AuditEvent.objects.filter(request=request, action="decision_refused").exists()


def test_alice_finds_a_request_by_search_approves_it_and_the_execution_succeeds(
    portal_stack, demo_state_machine, new_page
):
    from playwright.sync_api import expect

    tag = uuid.uuid4().hex[:6]
    start_execution(demo_state_machine, f"Approve order {tag}-9 (EUR 80)")
    title = f"Approve order {tag}-1234 (EUR 5,300)"
    execution_arn, request = start_execution(demo_state_machine, title)
    seed_other_requests()
    page = new_page(viewport=DESKTOP)

    sign_in(page, portal_stack["url"], "alice")
    open_from_inbox_by_search(page, f"{tag}-1234", title, "desktop", DESKTOP["width"])
    comment = "Looks right — approved ✓"
    approve_on_detail_and_confirm(page, request, comment, "desktop", DESKTOP["width"], tap_twice=False)
    see_the_callback_sent(page, request, "desktop", DESKTOP["width"])

    assert_approved_once(execution_arn, request, comment)
    page.keyboard.press("Tab")  # the first stop is the skip link
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.get_by_role("link", name="← Inbox").click()
    page.get_by_role("link", name=re.compile("Decided by me")).click()
    expect(page.locator("ol.requests")).to_contain_text(title)
    screenshot(page, "desktop-inbox-decided")


def test_the_same_flow_works_on_a_375px_phone(portal_stack, demo_state_machine, new_page):
    tag = uuid.uuid4().hex[:6]
    title = f"Approve order {tag}-1234 (EUR 5,300)"
    execution_arn, request = start_execution(demo_state_machine, title)
    seed_other_requests()
    page = new_page(viewport=PHONE)

    sign_in(page, portal_stack["url"], "alice")
    open_from_inbox_by_search(page, tag, title, "mobile", PHONE["width"])
    comment = "OK from my phone"
    approve_on_detail_and_confirm(page, request, comment, "mobile", PHONE["width"], tap_twice=True)
    see_the_callback_sent(page, request, "mobile", PHONE["width"])

    assert_approved_once(execution_arn, request, comment)


def test_a_rejection_without_a_comment_is_stopped_by_the_form_and_without_javascript_by_the_server(
    portal_stack, demo_state_machine, new_page
):
    from playwright.sync_api import expect

    execution_arn, request = start_execution(demo_state_machine, f"Approve order {uuid.uuid4().hex[:6]}")
    detail_url = f"{portal_stack['url']}/requests/{request.public_id}/"

    # With JavaScript: Reject makes the comment required, the browser keeps the form from leaving.
    page = new_page(viewport=DESKTOP)
    sign_in(page, portal_stack["url"], "alice")
    page.goto(detail_url)
    page.get_by_role("button", name="Reject…").click()
    comment = page.get_by_label("Comment")
    expect(page).to_have_url(detail_url)
    assert comment.evaluate("element => element.validity.valid") is False
    assert comment.evaluate("element => element.validationMessage") == REJECT_MESSAGE
    expect(comment).to_be_focused()
    # axe-core needs JavaScript: check the server's error page here, past the browser's check.
    page.evaluate("document.querySelector('form[data-decision-form]').noValidate = true")
    page.get_by_role("button", name="Reject…").click()
    expect(page.locator("#comment-error")).to_have_text(REJECT_MESSAGE)
    assert_accessible(page, "request page with an error")

    # Without JavaScript: the server refuses, says why, and keeps the form.
    plain = new_page(viewport=DESKTOP, javascript=False)
    sign_in(plain, portal_stack["url"], "alice")
    plain.goto(detail_url)
    with plain.expect_navigation() as navigation:
        plain.get_by_role("button", name="Reject…").click()
    assert navigation.value.status == 400
    expect(plain.locator("#comment-error")).to_have_text(REJECT_MESSAGE)
    expect(plain.get_by_label("Comment")).to_have_attribute("aria-invalid", "true")
    screenshot(plain, "desktop-reject-without-comment")
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert not Callback.objects.filter(request=request).exists()

    # And with a reason the rejection goes through, still without JavaScript.
    plain.get_by_label("Comment").fill("Budget is frozen until Q3")
    plain.get_by_role("button", name="Reject…").click()
    plain.get_by_role("button", name="Yes, reject").click()
    expect(plain.locator(".outcome")).to_contain_text("You rejected this request.")
    wait_for(lambda: Callback.objects.get(request=request).status == CallbackStatus.DELIVERED)
    plain.reload()  # no script to refresh the status: the page has a Refresh link, a reload does the same
    expect(plain.locator("#callback-status")).to_have_text("sent to Step Functions")
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "ApprovalDenied"


def test_admin_pages_render_for_a_portal_admin(portal_stack, demo_state_machine, new_page):
    from playwright.sync_api import expect

    _, request = start_execution(demo_state_machine, f"Approve order {uuid.uuid4().hex[:6]} (EUR 5,300)")
    seed_other_requests()
    for prefix, viewport in (("desktop", DESKTOP), ("mobile", PHONE)):
        page = new_page(viewport=viewport)
        sign_in(page, portal_stack["url"], "carol")
        page.goto(f"{portal_stack['url']}/admin/approvals/approvalrequest/")
        expect(page.locator("#result_list")).to_contain_text(request.title)
        screenshot(page, f"{prefix}-admin-list")
        page.goto(f"{portal_stack['url']}/admin/approvals/approvalrequest/{request.pk}/change/")
        expect(page.locator("body")).to_contain_text(request.title)
        screenshot(page, f"{prefix}-admin-change")
