"""Options and a form in a real browser (Chromium), against real processes (docs/approver-input.md).

The example state machine with options and a form (moto server) → the worker ingests it → alice
signs in through the dev IdP → the request page shows the options as buttons and the form as
native inputs → a wrong answer comes back beside its field, announced (role=alert, the input's
accessible description) and visible → corrected → the confirm page shows the answers → the
execution takes the Choice state's branch for the option. At desktop width and 375 px with
axe-core on every page; the same flow with JavaScript off; a failure option without JavaScript.
"""

import json
import re
import uuid

import pytest

from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, RequestStatus
from tests.browser.conftest import DESKTOP, PHONE, assert_accessible, assert_fits, screenshot, sign_in
from tests.support import wait_for, wait_for_execution_end

pytestmark = pytest.mark.browser


def start(state_machine_arn: str) -> tuple[str, ApprovalRequest]:
    execution_arn = gateway.start_execution(
        state_machine_arn=state_machine_arn,
        name=f"browser-input-{uuid.uuid4().hex[:12]}",
        execution_input={"title": "Release 2026.12 of the billing service", "details": {"service": "billing"}},
    )
    return execution_arn, wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())


def checked(page, what: str, width: int, javascript: bool) -> None:
    if javascript:  # axe-core runs in the page
        assert_accessible(page, what)
    assert_fits(page, width, what)


@pytest.mark.parametrize(
    ("viewport", "javascript"), [(DESKTOP, True), (PHONE, True), (DESKTOP, False)], ids=["desktop", "phone", "no-js"]
)
def test_alice_fills_the_form_corrects_an_error_and_the_execution_takes_her_options_branch(
    portal_stack, input_state_machine, new_page, viewport, javascript
):
    from playwright.sync_api import expect

    width, prefix = viewport["width"], f"input-{viewport['width']}{'' if javascript else '-nojs'}"
    execution_arn, request = start(input_state_machine)
    page = new_page(viewport=viewport, javascript=javascript)
    sign_in(page, portal_stack["url"], "alice")
    page.goto(f"{portal_stack['url']}/requests/{request.public_id}/")

    # Native inputs with their labels; the defaults filled in.
    expect(page.get_by_role("group", name="Release details")).to_be_visible()
    expect(page.get_by_label("Release day")).to_have_attribute("type", "date")
    expect(page.get_by_label("Replicas")).to_have_attribute("type", "number")
    expect(page.get_by_label("Replicas")).to_have_value("3")
    expect(page.get_by_label("Roll back on failure")).to_be_checked()
    expect(page.get_by_label("Version")).to_have_accessible_description(re.compile("As tagged"))
    for label in ("Deploy to all regions…", "Canary region first…", "Not this week…", "Reject…"):
        expect(page.get_by_role("button", name=label)).to_be_visible()
    screenshot(page, f"{prefix}-form")
    checked(page, "request with a form", width, javascript)

    # A wrong answer and a missing one: back from the server, beside the fields.
    page.get_by_label("Version").fill("1.4")
    page.get_by_role("button", name="Canary region first…").click()
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Some answers need correcting")
    expect(alert.get_by_role("link", name=re.compile("Release day: This field is required"))).to_be_visible()
    version = page.get_by_label("Version")
    expect(version).to_have_attribute("aria-invalid", "true")
    expect(version).to_have_accessible_description(re.compile("Does not have the expected form"))
    expect(version).to_have_value("1.4")  # what was typed stays
    expect(page.locator("#id_answer-window-error")).to_be_visible()
    expect(page.get_by_label("Release day")).to_have_accessible_description(re.compile("This field is required"))
    screenshot(page, f"{prefix}-form-errors")
    checked(page, "request with form errors", width, javascript)
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING

    page.get_by_label("Version").fill("v1.4.0")
    page.get_by_label("Release day").fill("2026-12-24")
    page.get_by_label("Replicas").fill("5")
    page.get_by_label("Comment").fill("Canary first, please")
    page.get_by_role("button", name="Canary region first…").click()

    confirm = page.locator(".confirm")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Canary region first")
    expect(confirm).to_contain_text("v1.4.0")
    expect(confirm).to_contain_text("2026-12-24")
    expect(confirm.locator("dd.chosen")).to_have_text("Canary region first")
    screenshot(page, f"{prefix}-confirm")
    checked(page, "confirm with answers", width, javascript)
    page.get_by_role("button", name="Yes, confirm").click()

    expect(page).to_have_url(re.compile(rf"/requests/{request.public_id}/result/$"))
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    output = json.loads(execution["output"])
    assert output["deployment"] == {"strategy": "canary"}
    assert output["approval"]["input"] == {"version": "v1.4.0", "window": "2026-12-24", "replicas": 5, "rollback": True}


def test_without_javascript_a_failure_option_needs_a_reason_and_fails_the_execution_with_its_error(
    portal_stack, input_state_machine, new_page
):
    from playwright.sync_api import expect

    execution_arn, request = start(input_state_machine)
    page = new_page(viewport=PHONE, javascript=False)
    sign_in(page, portal_stack["url"], "alice")
    page.goto(f"{portal_stack['url']}/requests/{request.public_id}/")

    page.get_by_role("button", name="Not this week…").click()  # no comment, the form left empty
    comment = page.get_by_label("Comment")
    expect(comment).to_have_attribute("aria-invalid", "true")
    expect(comment).to_have_accessible_description(re.compile("Say why you reject"))
    expect(page.locator("#comment-error")).to_be_visible()
    assert_fits(page, PHONE["width"], "failure option without a reason")

    comment.fill("Change freeze this week")
    page.get_by_role("button", name="Not this week…").click()
    expect(page.locator(".confirm")).to_contain_text("Release.Postponed")
    page.get_by_role("button", name="Yes, confirm").click()
    expect(page).to_have_url(re.compile(rf"/requests/{request.public_id}/result/$"))

    execution = wait_for_execution_end(execution_arn)
    assert (execution["status"], execution["error"]) == ("FAILED", "Release.Postponed")
