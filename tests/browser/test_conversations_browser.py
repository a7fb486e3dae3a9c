""" "Needs more information" in a real browser, on 375 px phones, against real processes.

Step Functions (moto server) → SQS → Celery worker → alice signs in through the dev IdP, asks bob
a question → the worker mails bob → bob signs in, finds "needs your answer" in his inbox, answers →
alice reads the answer, approves → the execution SUCCEEDED with the conversation in its output.
axe-core on each page with the conversation.
"""

import json
import re
import uuid

import pytest

from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, InfoMessage, RequestStatus
from tests.browser.conftest import PHONE, assert_accessible, assert_fits, screenshot, sign_in
from tests.support import wait_for, wait_for_execution_end

pytestmark = pytest.mark.browser


def test_alice_asks_bob_answers_on_phones_and_the_execution_receives_the_conversation(
    portal_stack, demo_state_machine, new_page
):
    from playwright.sync_api import expect

    title = f"Approve order {uuid.uuid4().hex[:6]} (EUR 5,300)"
    execution_arn = gateway.start_execution(
        state_machine_arn=demo_state_machine,
        name=f"browser-{uuid.uuid4().hex[:12]}",
        execution_input={
            "title": title,
            "approvers": {"users": ["alice@example.com"], "groups": []},
            "requester": "bob@example.com",
            "details": {"supplier": "Müller & Söhne <GmbH>"},
        },
    )
    request = wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())
    detail_url = f"{portal_stack['url']}/requests/{request.public_id}/"
    question = "Is Müller & Söhne <GmbH> a new supplier?"
    reply = "No — we have bought from them since 2019 ✓"

    alice = new_page(viewport=PHONE)
    sign_in(alice, portal_stack["url"], "alice")
    alice.goto(detail_url)
    alice.get_by_label("Ask the requester").fill(question)
    alice.get_by_role("button", name="Send the question").click()

    expect(alice).to_have_url(f"{detail_url}#conversation")
    expect(alice.locator(".notice-awaiting")).to_have_text("Waiting for the requester's answer.")
    expect(alice.locator(".message-question blockquote")).to_have_text(question)  # escaped, shown as text
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING and request.awaiting_info
    screenshot(alice, "mobile-detail-question")
    assert_accessible(alice, "detail with a question")
    assert_fits(alice, PHONE["width"], "detail with a question")
    # The worker process sends bob the question (the development mail backend logs one line a mail).
    wait_for(lambda: "mail to bob@example.com: 'Question about your request" in portal_stack["worker"].output())

    bob = new_page(viewport=PHONE)
    sign_in(bob, portal_stack["url"], "bob")
    bob.get_by_role("link", name=re.compile("I requested")).click()
    expect(bob.locator("ol.requests > li", has_text=title)).to_contain_text("Needs your answer")
    assert_accessible(bob, "inbox with a question")
    bob.get_by_role("link", name=title).click()
    bob.get_by_label("Your answer").fill(reply)
    bob.get_by_role("button", name="Send the answer").click()

    expect(bob.locator(".message-answer blockquote")).to_have_text(reply)
    expect(bob.get_by_label("Your answer")).to_have_count(0)
    screenshot(bob, "mobile-detail-answered")
    assert_accessible(bob, "detail answered")
    assert_fits(bob, PHONE["width"], "detail answered")

    alice.goto(detail_url)
    expect(alice.locator(".message-answer blockquote")).to_have_text(reply)
    alice.get_by_label("Comment").fill("Thanks, approved")
    alice.get_by_role("button", name="Approve…").click()
    alice.get_by_role("button", name="Yes, approve").click()
    expect(alice.locator(".outcome")).to_contain_text("You approved this request.")

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    conversation = json.loads(execution["output"])["approval"]["conversation"]
    assert [(entry["kind"], entry["from"], entry["text"]) for entry in conversation] == [
        ("question", "alice@example.com", question),
        ("answer", "bob@example.com", reply),
    ]
    assert InfoMessage.objects.filter(request=request).count() == 2
