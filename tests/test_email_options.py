"""Email for a request with options or a form: one signed link per option, through the confirm
page; a required form leads to the request page instead (docs/approver-input.md, "Channels").

Real parts: PostgreSQL, the real mail rendering (locmem backend), the links' real signatures
(django.core.signing with SECRET_KEY), the confirm page and the decision service.
"""

import json
import re
import uuid

import pytest
from django.core import signing

from approvals import links, services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Callback, RequestStatus, Vote
from portal.celery import app as celery_app
from tests.support import make_user, signed_in
from tests.test_notifications import html_of, mails_to

pytestmark = pytest.mark.django_db

PORTAL = "http://127.0.0.1:8000"
OPTIONS = [
    {"id": "eu", "label": "Deploy to EU", "outcome": "success"},
    {"id": "us", "label": "Deploy to US", "outcome": "success"},
    {"id": "postpone", "label": "Not this week", "outcome": "failure", "error": "Release.Postponed"},
]
OPTIONAL_FORM = {"type": "object", "properties": {"version": {"type": "string", "maxLength": 32}}}
REQUIRED_FORM = {**OPTIONAL_FORM, "required": ["version"]}


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a service and its on-commit hooks (the mails are sent, in-process: Celery's eager mode)."""
    old = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = True, False

    def run(function, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return function(*args, **kwargs)

    yield run
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


@pytest.fixture
def people(db):
    return {
        "alice": make_user("alice", "release-approvers"),
        "bob": make_user("bob", "release-approvers"),  # the requester, in the group too
        "erin": make_user("erin", "release-approvers"),
    }


def ingest(**fields) -> ApprovalRequest:
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": "Release 2.4 <b>now</b>",
        "requester": "bob@example.com",
        "approvers": {"groups": ["release-approvers"]},
        "options": OPTIONS,
        **fields,
    }
    return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]


def option_links(text: str) -> dict[str, str]:
    """label → URL, from the plain-text mail ("Deploy to EU: http://…/links/…/")."""
    found = re.findall(r"^(.+?): (http://\S+/links/\S+/)$", text, re.MULTILINE)
    return dict(found)


def path_of(url: str) -> str:
    return url.removeprefix(PORTAL)


def token_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def confirm(client, path: str, comment: str = ""):
    page = client.get(path)
    return page, client.post(
        path, {"comment": comment, "csrfmiddlewaretoken": client.cookies["portal_csrftoken"].value}
    )


def refusal_codes() -> list[str]:
    return list(AuditEvent.objects.filter(action="decision_refused").values_list("data__code", flat=True))


# ---------------------------------------------------------------------------
# What the mail offers
# ---------------------------------------------------------------------------
def test_a_request_with_options_mails_one_signed_link_per_option_and_no_approve_or_reject(people, committed):
    request = committed(ingest)

    message = mails_to("alice@example.com")[0]
    found = option_links(message.body)
    assert list(found) == ["Deploy to EU", "Deploy to US", "Not this week"]
    assert "Approve: " not in message.body and "Reject:  " not in message.body
    html = html_of(message)
    for label, url in found.items():
        assert url in html and f">{label}</a>" in html
        link = links.read_link_token(token_of(url))
        assert (link.public_id, link.approver_email, link.action) == (
            str(request.public_id),
            "alice@example.com",
            "option",
        )
    assert [links.read_link_token(token_of(url)).option for url in found.values()] == ["eu", "us", "postpone"]
    # The link carries only the signed ids (request, recipient, action, option, expiry): no secret.
    payload = signing.loads(token_of(found["Deploy to EU"]), salt=links.SALT)
    assert set(payload) == {"r", "u", "a", "o", "e"}


def test_an_optional_form_still_gets_option_links(people, committed):
    committed(ingest, form=OPTIONAL_FORM)

    assert list(option_links(mails_to("alice@example.com")[0].body)) == [
        "Deploy to EU",
        "Deploy to US",
        "Not this week",
    ]


@pytest.mark.parametrize("with_options", [True, False], ids=["options", "approve-reject"])
def test_a_required_form_mails_a_link_to_the_request_page_and_no_decision_links(people, committed, with_options):
    request = committed(ingest, form=REQUIRED_FORM, **({} if with_options else {"options": None}))

    message = mails_to("alice@example.com")[0]
    assert "/links/" not in message.body and "/links/" not in html_of(message)
    assert f"decide on its page, {PORTAL}/requests/{request.public_id}/" in message.body
    assert "Open the request to decide" in html_of(message)


# ---------------------------------------------------------------------------
# Deciding through the confirm step
# ---------------------------------------------------------------------------
def test_an_option_link_shows_a_confirm_page_and_only_the_post_decides_with_that_option(people, committed):
    request = committed(ingest)
    url = option_links(mails_to("alice@example.com")[0].body)["Deploy to US"]
    client = signed_in(people["alice"])

    page = client.get(path_of(url))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Yes: Deploy to US" in text and "Comment (optional)" in text
    assert "<b>now</b>" not in text  # the title is escaped
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.PENDING  # GET decides nothing

    _, decided = confirm(client, path_of(url), comment="ship it")

    assert decided.status_code == 302
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    vote = Vote.objects.get(request=request)
    assert (vote.user, list(vote.choice), vote.comment) == (people["alice"], ["us"], "ship it")
    assert Callback.objects.get(request=request).kind == "success"


def test_a_failure_option_link_asks_for_a_reason_and_sends_the_options_error(people, committed):
    request = committed(ingest)
    path = path_of(option_links(mails_to("alice@example.com")[0].body)["Not this week"])
    client = signed_in(people["alice"])

    page, without_reason = confirm(client, path, comment="  ")
    assert "Reason (required)" in page.content.decode()
    assert without_reason.status_code == 400 and "Reason (required)" in without_reason.content.decode()
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.PENDING

    _, decided = confirm(client, path, comment="Freeze week")

    assert decided.status_code == 302
    request.refresh_from_db()
    assert (request.status, request.decision_comment) == (RequestStatus.REJECTED, "Freeze week")
    assert Callback.objects.get(request=request).payload["error"] == "Release.Postponed"


# ---------------------------------------------------------------------------
# Hostile
# ---------------------------------------------------------------------------
def _token_with(payload_change: dict, *, request, email="alice@example.com", option="eu") -> str:
    token = links.make_link_token(public_id=request.public_id, approver_email=email, action="option", option=option)
    payload = signing.loads(token, salt=links.SALT)
    return signing.dumps({**payload, **payload_change}, salt=links.SALT, compress=True)


def test_a_link_whose_option_id_was_swapped_is_refused_and_decides_nothing(people, committed):
    request = committed(ingest)
    token = token_of(option_links(mails_to("alice@example.com")[0].body)["Not this week"])
    swapped = {"r": str(request.public_id), "u": "alice@example.com", "a": "option", "o": "eu", "e": 2**40}
    # Without the portal's key: signed with another key, or the real signature grafted onto it.
    own_key = signing.dumps(swapped, key="not-the-portal-key", salt=links.SALT, compress=True)
    grafted = own_key.rsplit(":", 1)[0] + ":" + token.rsplit(":", 1)[1]
    client = signed_in(people["alice"])

    for bad in (own_key, grafted, token[:-2] + ("xx" if not token.endswith("xx") else "yy")):
        page, decided = confirm(client, f"/links/{bad}/")
        assert page.status_code == decided.status_code == 403
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.PENDING
    assert not Vote.objects.exists()
    assert set(refusal_codes()) == {"link_tampered"}


def test_an_approve_link_cannot_be_turned_into_an_option_link(people, committed):
    request = committed(ingest, options=None)
    token = links.make_link_token(public_id=request.public_id, approver_email="alice@example.com", action="approve")
    # A signed approve link whose payload also names an option (as if "o" were appended): refused.
    forged = _token_with({"a": "approve", "o": "reject"}, request=request)

    assert signed_in(people["alice"]).get(f"/links/{forged}/").status_code == 403
    assert signed_in(people["alice"]).get(f"/links/{token}/").status_code == 200
    assert "link_tampered" in refusal_codes()


def test_a_signed_link_naming_an_option_of_another_request_is_refused(people, committed):
    request = committed(ingest)
    other = committed(ingest, options=[{"id": "ship", "label": "Ship", "outcome": "success"}, *OPTIONS[2:]])
    # Signed by the portal itself (no such link is ever sent): its option is not this request's.
    token = links.make_link_token(
        public_id=request.public_id, approver_email="alice@example.com", action="option", option="ship"
    )
    client = signed_in(people["alice"])

    page = client.get(f"/links/{token}/")
    _, decided = confirm(client, f"/links/{token}/")

    assert page.status_code == decided.status_code == 400
    assert "not one of this request&#x27;s options" in page.content.decode()
    assert not Vote.objects.exists()
    assert {ApprovalRequest.objects.get(pk=pk).status for pk in (request.pk, other.pk)} == {RequestStatus.PENDING}
    assert refusal_codes() == ["choice_invalid"] * 3  # each GET and the POST, audited


def test_the_requester_cannot_decide_through_an_option_link_signed_for_them(people, committed):
    request = committed(ingest)
    assert mails_to("bob@example.com") == []  # the requester is never sent decision links
    token = links.make_link_token(
        public_id=request.public_id, approver_email="bob@example.com", action="option", option="eu"
    )
    client = signed_in(people["bob"])

    page, decided = confirm(client, f"/links/{token}/")

    assert page.status_code == 403 and decided.status_code == 403
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.PENDING
    assert "requester" in refusal_codes()


def test_an_option_link_opened_by_someone_else_is_refused(people, committed):
    request = committed(ingest)
    url = option_links(mails_to("alice@example.com")[0].body)["Deploy to EU"]

    page, decided = confirm(signed_in(people["erin"]), path_of(url))

    assert page.status_code == decided.status_code == 403
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.PENDING


def test_a_success_option_link_for_a_request_whose_form_is_required_leads_to_the_page(people, committed):
    request = committed(ingest, form=REQUIRED_FORM)
    # No such link is mailed; one signed anyway must not decide without the form's answers.
    token = links.make_link_token(
        public_id=request.public_id, approver_email="alice@example.com", action="option", option="eu"
    )
    client = signed_in(people["alice"])

    page = client.get(f"/links/{token}/")
    client.get(f"/requests/{request.public_id}/")  # for the CSRF cookie
    csrf = client.cookies["portal_csrftoken"].value
    posted = client.post(f"/links/{token}/", {"comment": "", "csrfmiddlewaretoken": csrf})

    assert page.status_code == posted.status_code == 302
    assert page["Location"] == posted["Location"] == f"/requests/{request.public_id}/"
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.PENDING
    assert not Vote.objects.exists()
