""" "Needs more information": an approver asks the requester, the requester answers, the
conversation goes to Step Functions with the decision.

Real parts: PostgreSQL, the portal's pages through Django's test client (CSRF enforced), the
services, Django's locmem mail backend, Celery in eager mode (the notification tasks queued on
commit run in-process), and the moto server running the example state machine for the
execution's output.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import services
from approvals.contract import parse_message
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Callback,
    Delegation,
    InfoMessage,
    Notification,
    RequestStatus,
)
from approvals.notifications import messages, slack
from approvals.services.conversations import MAX_MESSAGES
from approvals.tasks import deliver_callback
from approvals.tasks import notifications as notify_tasks
from portal.celery import app as celery_app
from tests.support import make_user, signed_in, wait_for_execution_end
from tests.test_callbacks import start_and_ingest

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("q")</script> & <img src=x onerror=alert(1)>'


@pytest.fixture
def tasks_in_process():
    """Celery's eager mode: a task queued on commit runs right away, in this process."""
    old = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = True, False
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "erin": make_user("erin", "finance-approvers"),
        "bob": make_user("bob"),  # the requester
        "carol": make_user("carol", "portal-admins", admin=True),
        "dave": make_user("dave"),  # neither approver nor requester
    }


def ingest(**fields) -> ApprovalRequest:
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": "Approve order 1234",
        "requester": "bob@example.com",
        "approvers": {"users": [], "groups": ["finance-approvers"]},
        "details": {"amount": "5300.00", "currency": "EUR"},
        **fields,
    }
    return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]


@pytest.fixture
def approval(people) -> ApprovalRequest:
    return ingest()


def post(client: Client, url: str, data: dict):
    client.get("/")  # the CSRF cookie, as a browser has it from the page with the form
    return client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["portal_csrftoken"].value})


def ask(client: Client, approval: ApprovalRequest, question: str):
    return post(client, f"/requests/{approval.public_id}/ask/", {"question": question})


def answer(client: Client, approval: ApprovalRequest, text: str):
    return post(client, f"/requests/{approval.public_id}/answer/", {"answer": text})


def decide(client: Client, approval: ApprovalRequest, decision: str, comment: str = ""):
    return post(client, f"/requests/{approval.public_id}/decide/", {"decision": decision, "comment": comment})


def page(client: Client, approval: ApprovalRequest) -> str:
    response = client.get(f"/requests/{approval.public_id}/")
    assert response.status_code == 200
    return response.content.decode()


def html_of(message) -> str:
    (html, mimetype), *_ = message.alternatives
    assert mimetype == "text/html"
    return html


# ---------------------------------------------------------------------------
# The round trip
# ---------------------------------------------------------------------------
def test_an_approver_asks_the_requester_answers_and_the_approval_carries_the_conversation(
    people, approval, django_capture_on_commit_callbacks, tasks_in_process
):
    alice, bob = signed_in(people["alice"]), signed_in(people["bob"])
    assert f'action="/requests/{approval.public_id}/ask/"' in page(alice, approval)
    assert "/answer/" not in page(bob, approval)  # no question yet: nothing to answer

    with django_capture_on_commit_callbacks(execute=True):
        response = ask(alice, approval, "  Which cost centre pays for this?\n")

    assert response.status_code == 302
    assert response["Location"] == f"/requests/{approval.public_id}/#conversation"
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING
    assert approval.awaiting_info is True
    question = InfoMessage.objects.get(request=approval)
    assert (question.kind, question.author, question.text) == (
        "question",
        people["alice"],
        "Which cost centre pays for this?",
    )
    event = AuditEvent.objects.get(request=approval, action="info_requested")
    assert (event.actor, event.data["text"]) == (people["alice"], "Which cost centre pays for this?")
    [to_bob] = mail.outbox
    assert to_bob.to == ["bob@example.com"]
    assert to_bob.subject == "Question about your request: Approve order 1234"
    assert "alice@example.com asks:" in to_bob.body
    assert "Question: Which cost centre pays for this?" in to_bob.body
    assert f"/requests/{approval.public_id}/" in to_bob.body
    assert "Approve:" not in to_bob.body and "/links/" not in to_bob.body + html_of(to_bob)  # no decision links
    assert "Which cost centre pays for this?" in html_of(to_bob)
    assert Notification.objects.get(request=approval, kind="question").status == "sent"

    alice_page = page(alice, approval)
    assert "Waiting for the requester's answer." in alice_page  # in Questions and answers
    assert 'Pending</span> <span class="awaiting-info">waiting for the requester\'s answer' in alice_page  # status
    bob_page = page(bob, approval)
    assert "Which cost centre pays for this?" in bob_page
    assert f'action="/requests/{approval.public_id}/answer/"' in bob_page

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = answer(bob, approval, "CC-4711, marketing.")

    assert response.status_code == 302
    assert response["Location"] == f"/requests/{approval.public_id}/#conversation"
    approval.refresh_from_db()
    assert approval.awaiting_info is False and approval.status == RequestStatus.PENDING
    event = AuditEvent.objects.get(request=approval, action="info_answered")
    assert (event.actor, event.data["text"]) == (people["bob"], "CC-4711, marketing.")
    assert sorted(message.to[0] for message in mail.outbox) == ["alice@example.com", "erin@example.com"]
    to_alice = next(message for message in mail.outbox if message.to == ["alice@example.com"])
    assert to_alice.subject == "The requester answered: Approve order 1234"
    assert "The requester (bob@example.com) answered:" in to_alice.body
    assert "Answer: CC-4711, marketing." in to_alice.body
    assert "Question: Which cost centre pays for this?" in to_alice.body
    assert "Approve:" not in to_alice.body
    assert "Waiting for the requester" not in page(alice, approval)
    assert "/answer/" not in page(bob, approval)

    response = decide(alice, approval, "approve", "ok then")  # the callback is not sent: no execution behind it

    assert response.status_code == 302
    output = Callback.objects.get(request=approval).payload["output"]
    assert [(entry["kind"], entry["from"], entry["text"]) for entry in output["conversation"]] == [
        ("question", "alice@example.com", "Which cost centre pays for this?"),
        ("answer", "bob@example.com", "CC-4711, marketing."),
    ]
    assert all(entry["at"] for entry in output["conversation"])


def test_a_rejection_cause_carries_the_conversation(people, approval):
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Why now?")
    services.info_answer(public_id=approval.public_id, user=people["bob"], answer="Year end.")

    decide(signed_in(people["erin"]), approval, "reject", "Next year")

    callback = Callback.objects.get(request=approval)
    assert callback.payload["error"] == "ApprovalDenied"
    cause = json.loads(callback.payload["cause"])
    assert [(entry["kind"], entry["text"]) for entry in cause["conversation"]] == [
        ("question", "Why now?"),
        ("answer", "Year end."),
    ]


def test_the_answer_reaches_each_approver_once_and_a_delegate_who_asked(people):
    # dave stands in for alice (out of office): he may decide, so he may ask; he is no assignee.
    Delegation.objects.create(
        delegator=people["alice"],
        delegate=people["dave"],
        ends_at=timezone.now() + timedelta(days=1),
        created_by=people["alice"],
    )
    approval = ingest(approvers={"users": ["zoe@example.com"], "groups": ["finance-approvers"]})
    services.info_request(public_id=approval.public_id, user=people["dave"], question="First?")
    services.info_request(public_id=approval.public_id, user=people["erin"], question="Second?")
    services.info_answer(public_id=approval.public_id, user=people["bob"], answer="Both: yes.")

    rows = Notification.objects.filter(request=approval, kind="answer")
    assert sorted(rows.values_list("recipient", flat=True)) == [
        "alice@example.com",
        "dave@example.com",
        "erin@example.com",
        "zoe@example.com",
    ]
    content = messages.build(rows.first())
    assert [value for label, value in content.facts if label == "Question"] == ["First?", "Second?"]
    questions = Notification.objects.filter(request=approval, kind="question")
    assert list(questions.values_list("recipient", flat=True)) == ["bob@example.com"] * 2


# ---------------------------------------------------------------------------
# Refusals: each is a clear page with its status, changes nothing, and is audited
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "action", "text", "status", "code", "says"),
    [
        # Not theirs to see: the 404 a GET of the page gives, recorded without the request.
        ("dave", "ask", "Why?", 404, "not_found", "not yours to see"),
        ("bob", "ask", "Why?", 403, "requester", "someone else has to decide"),
        ("alice", "answer", "Because.", 403, "not_requester", "Only the requester"),
        ("bob", "answer", "Because.", 409, "no_question", "No question waits"),
        ("alice", "ask", "", 400, "bad_input", "Write your question first"),
        ("alice", "ask", "   \n ", 400, "bad_input", "Write your question first"),
        ("alice", "ask", "x" * 2001, 400, "bad_input", "at most 2000 characters"),
    ],
    ids=["non-approver-asks", "requester-asks", "approver-answers", "no-question", "empty", "blank", "too-long"],
)
def test_who_may_not_ask_or_answer_is_refused(people, approval, who, action, text, status, code, says):
    post_it = ask if action == "ask" else answer

    response = post_it(signed_in(people[who]), approval, text)

    assert response.status_code == status
    assert says in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING and approval.awaiting_info is False
    assert not InfoMessage.objects.exists() and not Notification.objects.filter(kind__in=["question", "answer"])
    refusal = AuditEvent.objects.get(action="decision_refused", actor=people[who])
    expected = None if code == "not_found" else approval
    assert (refusal.request, refusal.data["code"], refusal.data["attempted"]) == (expected, code, action)


def test_a_too_long_answer_is_refused_and_the_question_stays_open(people, approval):
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Why?")

    response = answer(signed_in(people["bob"]), approval, "y" * 2001)

    assert response.status_code == 400
    assert f'href="/requests/{approval.public_id}/">Open the request' in response.content.decode()
    approval.refresh_from_db()
    assert approval.awaiting_info is True
    assert list(InfoMessage.objects.values_list("kind", flat=True)) == ["question"]


def test_a_question_or_answer_the_database_cannot_store_is_refused_not_a_server_error(people, approval):
    """The page posts the text straight to the service: a NUL character reached PostgreSQL (500)."""
    asked = ask(signed_in(people["alice"]), approval, "Why\x00?")
    assert asked.status_code == 400 and "cannot be stored" in asked.content.decode()
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Why?")
    answered = answer(signed_in(people["bob"]), approval, "Because\x00.")
    assert answered.status_code == 400 and "cannot be stored" in answered.content.decode()
    # A lone surrogate (no browser sends one; another caller of the service might) alike.
    with pytest.raises(services.ApprovalError, match="cannot be stored"):
        services.info_answer(public_id=approval.public_id, user=people["bob"], answer="Because\ud800.")
    approval.refresh_from_db()
    assert approval.awaiting_info is True
    assert list(InfoMessage.objects.values_list("text", flat=True)) == ["Why?"]


def closed_by_step_functions(approval: ApprovalRequest) -> None:
    services.approval_close_by_step_functions(request_id=approval.pk, code="TaskTimedOut")  # what a heartbeat finds


def expired_in_the_portal(approval: ApprovalRequest) -> None:
    ApprovalRequest.objects.filter(pk=approval.pk).update(deadline=timezone.now() - timedelta(minutes=1))
    assert services.approval_expire(request_id=approval.pk)  # beat's expiry sweep


@pytest.mark.parametrize(
    ("close", "words"),
    [(closed_by_step_functions, "closed by Step Functions"), (expired_in_the_portal, "expired in the portal")],
    ids=["step-functions", "portal-deadline"],
)
def test_an_answer_too_late_says_how_the_request_ended_as_its_page_does(people, close, words):
    """The requester's answer after the request closed was refused with "already expired" for
    a request Step Functions closed; a decision on it says "already closed by Step Functions"."""
    approval = ingest(timeoutSeconds=3600)
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Why?")
    close(approval)

    answered = answer(signed_in(people["bob"]), approval, "Too late.")
    decided = decide(signed_in(people["erin"]), approval, "approve")

    assert (answered.status_code, decided.status_code) == (409, 409)
    for response in (answered, decided):
        text = " ".join(response.content.decode().split())
        assert f"already {words}" in text, text
        assert "already expired." not in text, text


def test_after_the_decision_nobody_asks_or_answers_and_the_page_offers_neither(people, approval):
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Why?")
    decide(signed_in(people["erin"]), approval, "approve")
    approval.refresh_from_db()
    assert approval.status == RequestStatus.APPROVED and approval.awaiting_info is False

    asked = ask(signed_in(people["alice"]), approval, "And now?")
    answered = answer(signed_in(people["bob"]), approval, "Too late.")

    assert (asked.status_code, answered.status_code) == (409, 409)
    assert "already approved" in asked.content.decode() and "already approved" in answered.content.decode()
    assert InfoMessage.objects.count() == 1
    for who in ("alice", "bob"):
        html = page(signed_in(people[who]), approval)
        assert "Why?" in html  # the conversation stays readable
        assert "/ask/" not in html and "/answer/" not in html and "Waiting for the requester" not in html


def test_a_request_without_requester_cannot_be_asked_about(people):
    approval = ingest(requester=None)
    alice = signed_in(people["alice"])
    assert "/ask/" not in page(alice, approval)

    response = ask(alice, approval, "Who wants this?")

    assert response.status_code == 409
    assert "names no requester" in response.content.decode()
    assert not InfoMessage.objects.exists()


def test_a_conversation_has_at_most_fifty_messages_and_an_open_question_can_always_be_answered(people, approval):
    for number in range(MAX_MESSAGES // 2 - 1):
        services.info_request(public_id=approval.public_id, user=people["alice"], question=f"Q{number}")
        services.info_answer(public_id=approval.public_id, user=people["bob"], answer=f"A{number}")
    services.info_request(public_id=approval.public_id, user=people["alice"], question="The 49th message")

    response = ask(signed_in(people["erin"]), approval, "One more?")

    assert response.status_code == 409
    assert "decide it with what is known" in response.content.decode()
    services.info_answer(public_id=approval.public_id, user=people["bob"], answer="The 50th message")
    assert InfoMessage.objects.filter(request=approval).count() == MAX_MESSAGES
    with pytest.raises(services.ApprovalError) as refused:
        services.info_request(public_id=approval.public_id, user=people["alice"], question="More?")
    assert refused.value.code == "too_many_messages"


def test_asking_and_answering_take_post_with_csrf_only(people, approval):
    alice = signed_in(people["alice"])

    assert alice.get(f"/requests/{approval.public_id}/ask/?question=Why").status_code == 405
    no_csrf = alice.post(f"/requests/{approval.public_id}/ask/", {"question": "Why?"})
    assert no_csrf.status_code == 403
    assert Client().post(f"/requests/{approval.public_id}/ask/", {"question": "Why?"}).status_code == 302  # sign in
    assert not InfoMessage.objects.exists()


def test_an_unknown_request_is_not_found(people):
    response = ask(signed_in(people["alice"]), ApprovalRequest(public_id=uuid.uuid4()), "Why?")

    assert response.status_code == 404


# ---------------------------------------------------------------------------
# Pages, inbox, admin
# ---------------------------------------------------------------------------
def test_questions_and_answers_are_escaped_on_the_page_in_the_mail_and_in_slack(
    people, approval, django_capture_on_commit_callbacks, tasks_in_process
):
    with django_capture_on_commit_callbacks(execute=True):
        ask(signed_in(people["alice"]), approval, HOSTILE)

    for who in ("alice", "bob"):
        html = page(signed_in(people[who]), approval)
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(&quot;q&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in html
    [to_bob] = mail.outbox
    assert "<script>alert" not in html_of(to_bob) and "&lt;script&gt;" in html_of(to_bob)

    content = messages.build(Notification.objects.get(kind="question"))
    text, blocks = slack.conversation_message(content)
    section = blocks[1]["text"]["text"]
    assert "<script>" not in section and "&lt;script&gt;" in section and "&amp;" in section
    buttons = [element for block in blocks if block["type"] == "actions" for element in block["elements"]]
    assert [button["action_id"] for button in buttons] == ["open"]  # no approve / reject in Slack either
    assert buttons[0]["url"].endswith(f"/requests/{approval.public_id}/")


def test_the_inbox_marks_requests_waiting_for_an_answer(people, approval):
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Why?")
    other = ingest(title="Another order")

    waiting = signed_in(people["erin"]).get("/").content.decode()
    requested = signed_in(people["bob"]).get("/?tab=requested").content.decode()

    assert waiting.count("Waiting for the requester") == 1
    assert requested.count("Needs your answer") == 1
    assert str(other.public_id) in requested  # listed, not marked


def test_the_request_page_needs_the_same_queries_however_long_the_conversation(people, approval):
    alice = signed_in(people["alice"])
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Q")
    url = f"/requests/{approval.public_id}/"
    with CaptureQueriesContext(connection) as few:
        alice.get(url)

    for number in range(10):
        services.info_answer(public_id=approval.public_id, user=people["bob"], answer=f"A{number}")
        services.info_request(public_id=approval.public_id, user=people["erin"], question=f"Q{number}")
    with CaptureQueriesContext(connection) as many:
        assert alice.get(url).content.decode().count('class="message message-') == 21

    assert len(many) == len(few)


def test_the_admin_shows_the_conversation_read_only(people, approval):
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Which <b>budget</b>?")

    html = signed_in(people["carol"]).get(f"/admin/approvals/approvalrequest/{approval.pk}/change/").content.decode()

    assert "Questions and answers" in html
    assert "Which &lt;b&gt;budget&lt;/b&gt;?" in html
    assert 'name="info_messages-0-text"' not in html  # shown, not editable


def test_a_question_not_sent_before_the_decision_is_not_sent_after_it(people, approval):
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Why?")
    services.approval_decide(public_id=approval.public_id, user=people["erin"], approve=True)

    row = Notification.objects.get(request=approval, kind="question")
    notify_tasks.send_notification.apply((row.pk,))

    row.refresh_from_db()
    assert row.status == "skipped"
    assert mail.outbox == []


# ---------------------------------------------------------------------------
# The execution receives it (moto server)
# ---------------------------------------------------------------------------
def test_the_execution_output_contains_the_conversation(people, aws, demo_state_machine):
    execution_arn, approval = start_and_ingest(aws, demo_state_machine, requester="bob@example.com")
    alice, bob = signed_in(people["alice"]), signed_in(people["bob"])

    assert ask(alice, approval, "Is the supplier <new>?").status_code == 302
    assert answer(bob, approval, "No — since 2019 ✓").status_code == 302
    assert decide(alice, approval, "approve", "fine").status_code == 302
    assert deliver_callback(Callback.objects.get(request=approval).pk) == "delivered"

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    conversation = json.loads(execution["output"])["approval"]["conversation"]
    assert [(entry["kind"], entry["from"], entry["text"]) for entry in conversation] == [
        ("question", "alice@example.com", "Is the supplier <new>?"),
        ("answer", "bob@example.com", "No — since 2019 ✓"),
    ]


def test_cancelling_clears_the_open_question(people, approval):
    services.info_request(public_id=approval.public_id, user=people["alice"], question="Which cost centre?")
    services.approval_cancel(request_id=approval.pk, actor=people["carol"], reason="Duplicate order")
    approval.refresh_from_db()
    assert approval.status == RequestStatus.CANCELLED and not approval.awaiting_info
