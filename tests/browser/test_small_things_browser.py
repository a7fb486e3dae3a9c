"""Small things people notice, in a real browser (Chromium) against the real portal processes:
on a 375 px phone the inbox's filters fold away (a <details>, closed, that opens without
JavaScript) and a request shows "What is asked" before its ARNs; on the preferences page each
checkbox sits beside its label, and Slack, not set up here, is shown off.
"""

import json
import uuid

import pytest

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest
from tests.browser.conftest import DESKTOP, PHONE, assert_accessible, assert_fits, screenshot, sign_in

pytestmark = pytest.mark.browser

MACHINE = "arn:aws:states:eu-central-1:123456789012:stateMachine:purchase-orders"


def request_for_alice() -> ApprovalRequest:
    name = f"order-4711-{uuid.uuid4().hex[:8]}"
    body = {
        "taskToken": f"tok-{uuid.uuid4()}",
        "title": "Approve order 4711 (EUR 5,300)",
        "requester": "bob@example.com",
        "approvers": {"users": ["alice@example.com"], "groups": []},
        "stateMachine": MACHINE,
        "execution": MACHINE.replace(":stateMachine:", ":execution:") + f":{name}",
        "state": "ManagerApproval",
        "details": {"supplier": "Müller & Söhne", "total": {"amount": "5300.00", "currency": "EUR"}},
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    return request


def box(locator) -> dict:
    found = locator.bounding_box()
    assert found is not None, f"{locator} is not rendered"
    return found


def test_on_a_phone_the_filters_fold_away_and_a_request_shows_what_is_asked_before_the_arns(portal_stack, new_page):
    from playwright.sync_api import expect

    request = request_for_alice()
    url = portal_stack["url"]

    phone = new_page(viewport=PHONE)
    sign_in(phone, url, "alice")
    fold = phone.locator("details.filters-fold")
    expect(fold).to_have_count(1)
    expect(phone.locator("#q")).to_be_hidden()  # folded: the list comes first
    assert fold.get_attribute("open") is None
    expect(phone.get_by_role("link", name=request.title)).to_be_visible()
    assert_accessible(phone, "inbox with folded filters")
    phone.locator("details.filters-fold > summary").click()
    expect(phone.locator("#q")).to_be_visible()
    expect(phone.locator("#machine")).to_be_visible()
    screenshot(phone, "mobile-inbox-filters-open")
    assert_fits(phone, PHONE["width"], "inbox with open filters")

    phone.get_by_role("link", name=request.title).click()
    what = box(phone.get_by_role("heading", name="What is asked"))
    arns = phone.locator(".arn")
    expect(arns).to_have_count(2)  # state machine and execution
    for index in range(2):
        assert what["y"] + what["height"] <= box(arns.nth(index))["y"], "an ARN comes before what is asked"
    screenshot(phone, "mobile-detail-what-is-asked-first")
    assert_accessible(phone, "request")
    assert_fits(phone, PHONE["width"], "request")

    # Without JavaScript the fold is the same, and opens.
    plain = new_page(viewport=PHONE, javascript=False)
    sign_in(plain, url, "alice")
    expect(plain.locator("#q")).to_be_hidden()
    plain.locator("details.filters-fold > summary").click()
    expect(plain.locator("#q")).to_be_visible()
    plain.locator("#q").fill("4711")
    plain.get_by_role("button", name="Search").click()
    expect(plain.get_by_role("link", name=request.title)).to_be_visible()

    # On a wide screen nothing is folded: the filters show, with no toggle to click.
    desktop = new_page(viewport=DESKTOP)
    sign_in(desktop, url, "alice")
    expect(desktop.locator("#q")).to_be_visible()
    expect(desktop.locator("#machine")).to_be_visible()
    expect(desktop.locator("details.filters-fold > summary")).to_be_hidden()
    assert_accessible(desktop, "inbox")


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_preference_checkboxes_sit_beside_their_labels_and_slack_not_set_up_is_shown_off(
    portal_stack, new_page, viewport
):
    from playwright.sync_api import expect

    page = new_page(viewport=viewport)
    sign_in(page, portal_stack["url"], "alice")
    page.goto(f"{portal_stack['url']}/preferences/")

    checkboxes = page.locator("form.preferences input[type=checkbox]")
    expect(checkboxes).to_have_count(3)
    for index in range(3):
        checkbox = checkboxes.nth(index)
        label = page.locator(f'label[for="{checkbox.get_attribute("id")}"]')
        square, text = box(checkbox), box(label)
        assert text["x"] >= square["x"] + square["width"], "the label is not to the right of its checkbox"
        assert text["x"] - (square["x"] + square["width"]) < 24, "the label is far from its checkbox"
        # On the same line: the label's first line and the checkbox overlap vertically.
        assert text["y"] < square["y"] + square["height"] and square["y"] < text["y"] + 1.5 * square["height"]

    slack = page.get_by_label("Send me Slack messages with Approve / Reject buttons")
    expect(slack).to_be_disabled()
    expect(slack).not_to_be_checked()
    expect(page.get_by_text("Slack is not set up for this portal.")).to_be_visible()
    expect(page.get_by_label("Email me about requests that wait for me", exact=False)).to_be_checked()
    screenshot(page, f"preferences-{'mobile' if viewport is PHONE else 'desktop'}")
    assert_accessible(page, "preferences")
    assert_fits(page, viewport["width"], "preferences")
