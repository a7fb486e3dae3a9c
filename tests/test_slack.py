"""Slack: Block Kit messages with Approve / Reject, and the signed interactivity endpoint.

Slack itself is not reachable from tests, so `SlackStandIn` — a local HTTP server on
127.0.0.1 — stands in for Slack's Web API (SLACK_API_URL points at it) and for the
interactions' response_url. It records every call it receives (method, bearer token, body)
and answers the way Slack documents; on demand it answers HTTP 500, like Slack in an outage.
Everything else is real: PostgreSQL, Celery in eager mode, the moto server as Step Functions.
"""

import hashlib
import hmac
import json
import logging
import re
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from celery.exceptions import Retry
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from approvals import links, services, slack_payloads, tasks, tokens
from approvals.contract import parse_message
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Callback,
    Notification,
    RequestStatus,
    SlackIdentity,
    User,
)
from approvals.notifications import slack
from approvals.ops import metrics
from approvals.services import notifications as notification_services
from approvals.tasks import notifications as notify_tasks
from approvals.views.slack import SLACK_RESPOND
from portal.celery import app as celery_app
from tests.support import new_request_notifications_planned, signed_in
from tests.test_callback_settlement import task_timed_out  # a real execution whose task timed out
from tests.test_callbacks import start_and_ingest, wait_for_execution_end

pytestmark = pytest.mark.django_db

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-bot-token"
SLACK_IDS = {"alice@example.com": "U0ALICE", "erin@example.com": "U0ERIN", "bob@example.com": "U0BOB"}
TEAM = "T0TEAM"


# ---------------------------------------------------------------------------
# The stand-in for Slack's Web API
# ---------------------------------------------------------------------------
class SlackStandIn:
    """A local HTTP server that records the calls it receives and answers like Slack's Web API."""

    def __init__(self):
        self.calls: list[dict] = []
        self.fail_status: int | None = None  # e.g. 500: every call answers that
        self.failing_methods: set[str] = set()  # these Web API methods answer {"ok": false}
        self.deleted_in: set[str] = set()  # channels whose messages were deleted: chat.update finds none
        self.redirect_to: str | None = None  # a response URL's answer: a 307 to this URL
        self.users = dict(SLACK_IDS)  # email -> Slack user id
        self.profiles = {user_id: email for email, user_id in self.users.items()}
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive (every answer has a Content-Length): a client's reused connection shows
            # as one peer address across its calls.
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw or b"{}")
                else:
                    body = {key: values[0] for key, values in parse_qs(raw.decode()).items()}
                with stand_in._lock:
                    stand_in.calls.append(
                        {
                            "path": self.path,
                            "authorization": self.headers.get("Authorization", ""),
                            "body": body,
                            "peer": self.client_address,
                        }
                    )
                if stand_in.redirect_to and self.path.startswith("/respond/"):
                    self.send_response(307)
                    self.send_header("Location", stand_in.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, answer = stand_in.answer(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        if self.fail_status:
            return self.fail_status, {"ok": False, "error": "internal_error"}
        method = path.removeprefix("/api/")
        if path.startswith("/respond/"):
            return 200, {"ok": True}
        if method in self.failing_methods:
            return 200, {"ok": False, "error": "expired_trigger_id"}
        if method == "views.open":
            return 200, {"ok": True, "view": {"id": "V0MODAL", **body["view"]}}
        if method == "users.lookupByEmail":
            user_id = self.users.get(body.get("email", ""))
            return 200, {"ok": True, "user": {"id": user_id}} if user_id else {"ok": False, "error": "users_not_found"}
        if method == "conversations.open":
            return 200, {"ok": True, "channel": {"id": "D" + body["users"]}}
        if method == "chat.update" and body.get("channel") in self.deleted_in:
            return 200, {"ok": False, "error": "message_not_found"}
        if method in {"chat.postMessage", "chat.update"}:
            return 200, {"ok": True, "channel": body["channel"], "ts": f"{time.time():.6f}"}
        if method == "users.info":
            email = self.profiles.get(body.get("user", ""))
            if email is None:
                return 200, {"ok": False, "error": "user_not_found"}
            return 200, {"ok": True, "user": {"id": body["user"], "profile": {"email": email}, "is_bot": False}}
        return 200, {"ok": False, "error": "unknown_method"}

    def of(self, method: str) -> list[dict]:
        return [call for call in self.calls if call["path"] == f"/api/{method}"]

    def responses(self) -> list[dict]:
        return [call["body"] for call in self.calls if call["path"].startswith("/respond/")]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def slack_stand_in(settings, *, email: bool) -> SlackStandIn:
    """A Slack stand-in started, and the portal's Slack settings pointing at it; `email`: mail is
    sent beside Slack (the caller stops the stand-in)."""
    stand_in = SlackStandIn()
    settings.SLACK_API_URL = f"{stand_in.url}/api"
    settings.SLACK_BOT_TOKEN = BOT_TOKEN
    settings.SLACK_SIGNING_SECRET = SIGNING_SECRET
    settings.SLACK_GROUP_CHANNELS = {}
    settings.SLACK_TIMEOUT = 3
    settings.SLACK_TEAM_ID = TEAM
    settings.NOTIFICATION_EMAIL_ENABLED = email
    return stand_in


@pytest.fixture
def slack_api(settings):
    stand_in = slack_stand_in(settings, email=False)  # this file is about Slack
    yield stand_in
    stand_in.stop()


def slack_person(username: str, *groups: str) -> User:
    """A person signed in through SSO a moment ago, in `groups`, who linked their Slack account
    once (the binding flow is tested below)."""
    user = User.objects.create_user(
        username=username,
        email=f"{username}@example.com",
        oidc_issuer="https://idp.test",
        oidc_sub=username,
        sso_verified_at=timezone.now(),
    )
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    SlackIdentity.objects.create(team_id=TEAM, slack_user_id=SLACK_IDS[user.email], user=user)
    return user


@pytest.fixture
def people(db):
    return {
        "alice": slack_person("alice", "finance-approvers"),
        "bob": slack_person("bob"),
        "erin": slack_person("erin"),
    }


def ingest(**fields) -> ApprovalRequest:
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": "Approve order 1234 <!channel> & *bold*",
        "requester": "bob@example.com",
        "approvers": {"users": [], "groups": ["finance-approvers"]},
        "details": {"amount": "5300.00", "supplier": "Müller & Söhne <GmbH>"},
        **fields,
    }
    return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]


def send_all(request: ApprovalRequest) -> None:
    new_request_notifications_planned()  # what the ingest's after-commit planning task does
    for notification_id in Notification.objects.filter(request=request).values_list("pk", flat=True):
        notify_tasks.send_notification.delay(notification_id)


# ---------------------------------------------------------------------------
# Block Kit, checked against Slack's documented limits
# ---------------------------------------------------------------------------
def text_object(obj: dict, *, limit: int, plain_only: bool = False) -> None:
    assert obj["type"] in ({"plain_text"} if plain_only else {"plain_text", "mrkdwn"}), obj
    assert isinstance(obj["text"], str) and 0 < len(obj["text"]) <= limit, obj


def assert_valid_block_kit(blocks: list[dict]) -> None:
    """https://api.slack.com/reference/block-kit/blocks: types, required fields, length limits."""
    assert 0 < len(blocks) <= 50
    block_ids = [block["block_id"] for block in blocks if "block_id" in block]
    assert len(block_ids) == len(set(block_ids))
    for block in blocks:
        kind = block["type"]
        assert kind in {"header", "section", "actions", "context", "divider"}, kind
        if kind == "header":
            text_object(block["text"], limit=150, plain_only=True)
        elif kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                text_object(block["text"], limit=3000)
            for field in block.get("fields", []):
                text_object(field, limit=2000)
            assert len(block.get("fields", [])) <= 10
        elif kind == "actions":
            elements = block["elements"]
            assert 0 < len(elements) <= 25
            action_ids = [element["action_id"] for element in elements]
            assert len(action_ids) == len(set(action_ids))
            for element in elements:
                assert element["type"] == "button"
                text_object(element["text"], limit=75, plain_only=True)
                assert len(element["action_id"]) <= 255
                assert len(element.get("value", "")) <= 2000 and len(element.get("url", "")) <= 3000
                assert element.get("style", "primary") in {"primary", "danger"}
                if "confirm" in element:
                    confirm = element["confirm"]
                    text_object(confirm["title"], limit=100, plain_only=True)
                    text_object(confirm["text"], limit=300)
                    text_object(confirm["confirm"], limit=30, plain_only=True)
                    text_object(confirm["deny"], limit=30, plain_only=True)
        elif kind == "context":
            assert 0 < len(block["elements"]) <= 10


# ---------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------
def test_a_new_request_is_a_block_kit_direct_message_with_approve_and_reject(people, slack_api, celery_eager):
    request = ingest()
    send_all(request)

    # Alice (the group's only known member besides the requester) gets a DM, found by her email.
    assert [call["body"]["email"] for call in slack_api.of("users.lookupByEmail")] == ["alice@example.com"]
    assert [call["body"]["users"] for call in slack_api.of("conversations.open")] == ["U0ALICE"]
    (post,) = slack_api.of("chat.postMessage")
    assert post["authorization"] == f"Bearer {BOT_TOKEN}"
    message = post["body"]
    assert message["channel"] == "DU0ALICE"
    assert message["text"] == "Approval needed: Approve order 1234 &lt;!channel&gt; &amp; *bold*"
    assert_valid_block_kit(message["blocks"])

    actions = next(block for block in message["blocks"] if block["type"] == "actions")
    buttons = {element["action_id"]: element for element in actions["elements"]}
    assert buttons["approve"]["value"] == buttons["reject"]["value"] == str(request.public_id)
    assert (buttons["approve"]["style"], buttons["reject"]["style"]) == ("primary", "danger")
    assert buttons["open"]["url"].endswith(f"/requests/{request.public_id}/")
    # mrkdwn is escaped: no @channel ping, no injected link or markup from the workflow's text.
    mrkdwn = json.dumps([block for block in message["blocks"] if block["type"] != "header"], ensure_ascii=False)
    assert "<!channel>" not in mrkdwn and "<GmbH>" not in mrkdwn
    assert "Müller &amp; Söhne &lt;GmbH&gt;" in mrkdwn

    row = Notification.objects.get(request=request, channel="slack")
    assert (row.recipient, row.status, row.attempts) == ("alice@example.com", "sent", 1)
    assert row.external_ref.startswith("DU0ALICE:")


def test_a_group_with_a_configured_channel_gets_one_channel_message(people, slack_api, celery_eager, settings):
    settings.SLACK_GROUP_CHANNELS = {"finance-approvers": "C0FINANCE"}
    request = ingest()
    send_all(request)

    assert [call["body"]["channel"] for call in slack_api.of("chat.postMessage")] == ["C0FINANCE"]
    assert slack_api.of("users.lookupByEmail") == []
    blocks = slack_api.of("chat.postMessage")[0]["body"]["blocks"]
    assert_valid_block_kit(blocks)
    assert {"approve", "reject"} <= {e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]}
    assert Notification.objects.get(request=request, channel="slack").recipient == "C0FINANCE"


def test_people_who_turned_slack_off_get_no_message(people, slack_api, celery_eager):
    alice = people["alice"]
    notification_services.notification_preference_update(
        user=alice, actor=alice, email_enabled=True, slack_enabled=False, digest_enabled=False
    )
    send_all(ingest())

    assert slack_api.of("chat.postMessage") == []


def test_without_a_bot_token_slack_is_off(people, slack_api, settings):
    settings.SLACK_BOT_TOKEN = ""

    request = ingest()

    assert not Notification.objects.filter(request=request, channel="slack").exists()
    assert Client().post("/slack/interactivity/", {"payload": "{}"}).status_code == 404


# ---------------------------------------------------------------------------
# The interactivity endpoint
# ---------------------------------------------------------------------------
def sign(body: str, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def click(
    slack_api,
    request,
    *,
    action="approve",
    user="U0ALICE",
    team=TEAM,
    timestamp=None,
    secret=SIGNING_SECRET,
    signature=None,
    response_url=None,
):
    """POST what Slack posts when someone clicks a button: form-encoded `payload`, signed."""
    payload = {
        "type": "block_actions",
        "team": {"id": team},
        "user": {"id": user, "username": "someone", "team_id": team},
        "actions": [
            {"action_id": action, "block_id": f"approval:{request.public_id}", "value": str(request.public_id)}
        ],
        "trigger_id": "12345.98765.abcd2358fdea",
        "response_url": response_url or f"{slack_api.url}/respond/{uuid.uuid4().hex}",
    }
    return post_signed(payload, timestamp=timestamp, secret=secret, signature=signature)


def post_signed(payload, *, timestamp=None, secret=SIGNING_SECRET, signature=None, raw: str | None = None):
    body = urlencode({"payload": json.dumps(payload) if raw is None else raw})
    timestamp = str(int(time.time())) if timestamp is None else str(timestamp)
    client = Client(enforce_csrf_checks=True)  # Slack sends no CSRF token: the view is exempt
    return client.post(
        "/slack/interactivity/",
        data=body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp,
        HTTP_X_SLACK_SIGNATURE=signature or sign(body, timestamp, secret),
    )


def bind_token_in(text: str) -> str:
    """The token of the binding link in a Slack answer (mrkdwn: <url|label>)."""
    return re.search(r"/slack/link/([^/|>]+)/\|", text).group(1)


def refusals() -> list[tuple[str, str]]:
    events = AuditEvent.objects.filter(action="decision_refused").order_by("id")
    return [(event.data["code"], event.data.get("via", "")) for event in events]


def test_a_signed_approve_click_decides_resumes_the_execution_and_updates_the_message(
    people, slack_api, celery_eager, aws, demo_state_machine, django_capture_on_commit_callbacks
):
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    send_all(request)
    slack_api.calls.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = click(slack_api, request)

    assert response.status_code == 200
    request.refresh_from_db()
    assert (request.status, request.decided_by) == (RequestStatus.APPROVED, people["alice"])
    assert slack_api.of("users.info") == []  # the clicker is their bound account, not an email match
    assert Callback.objects.get(request=request).status == "delivered"
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["approval"]["decidedBy"]["email"] == "alice@example.com"
    # The clicked message is replaced with the outcome (response_url), every sent one updated (chat.update).
    (answer,) = slack_api.responses()
    assert answer["replace_original"] is True and answer["text"].startswith("Approved by alice@example.com")
    assert_valid_block_kit(answer["blocks"])
    assert "actions" not in {block["type"] for block in answer["blocks"]}
    (update,) = slack_api.of("chat.update")
    assert update["body"]["channel"] == "DU0ALICE"
    assert_valid_block_kit(update["body"]["blocks"])
    # And the requester, bob, hears the outcome in a DM.
    (outcome,) = slack_api.of("chat.postMessage")
    assert outcome["body"]["channel"] == "DU0BOB" and outcome["body"]["text"].startswith("Approved by alice")


def test_a_slack_message_deleted_meanwhile_never_keeps_the_others_buttons_after_the_decision(
    people, slack_api, celery_eager
):
    """Closing a decided request's Slack messages stopped at the first one Slack could not find
    (deleted by its reader): every message after it kept its Approve / Reject buttons. Now each
    is updated on its own; the one that is gone is logged and left."""
    request = ingest(approvers={"users": ["alice@example.com", "erin@example.com"], "groups": []})
    send_all(request)  # DMs to alice and erin
    first, second = Notification.objects.filter(request=request, channel="slack").order_by("pk")
    slack_api.deleted_in.add(first.external_ref.partition(":")[0])
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    slack_api.calls.clear()

    assert notify_tasks.close_slack_messages(request.pk) == 1

    updated = [call["body"]["channel"] for call in slack_api.of("chat.update")]
    assert updated == [first.external_ref.partition(":")[0], second.external_ref.partition(":")[0]]


def submit_reject_modal(slack_api, request, *, reason, user="U0ALICE", team=TEAM, response_url=None, metadata=None):
    """POST what Slack posts when the reject modal is submitted (view_submission), signed."""
    response_url = response_url or f"{slack_api.url}/respond/{uuid.uuid4().hex}"
    payload = {
        "type": "view_submission",
        "team": {"id": team},
        "user": {"id": user, "team_id": team},
        "view": {
            "id": "V0MODAL",
            "callback_id": "reject_reason",
            "private_metadata": metadata
            if metadata is not None
            else slack_payloads.modal_metadata(public_id=request.public_id, response_url=response_url),
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
    }
    return post_signed(payload)


def test_a_reject_click_opens_a_modal_asking_for_the_reason_and_decides_nothing(people, slack_api, celery_eager):
    request = ingest()

    response = click(slack_api, request, action="reject")

    assert response.status_code == 200
    assert_refused_without_step_functions(request)
    (opened,) = slack_api.of("views.open")
    assert opened["authorization"] == f"Bearer {BOT_TOKEN}"
    assert opened["body"]["trigger_id"] == "12345.98765.abcd2358fdea"
    view = opened["body"]["view"]
    assert (view["type"], view["callback_id"]) == ("modal", "reject_reason")
    for key in ("title", "submit", "close"):  # Slack's limits for a modal
        assert view[key]["type"] == "plain_text" and 0 < len(view[key]["text"]) <= 24
    assert len(view["private_metadata"]) <= 3000 and len(view["blocks"]) <= 100
    assert json.loads(view["private_metadata"])["r"] == str(request.public_id)
    (reason_input,) = [block for block in view["blocks"] if block["type"] == "input"]
    assert reason_input["block_id"] == "reason" and reason_input["element"]["type"] == "plain_text_input"
    assert reason_input["element"]["min_length"] == 1 and reason_input.get("optional", False) is False
    assert "&lt;!channel&gt;" in json.dumps(view)  # the title is escaped in the modal too
    assert slack_api.responses() == []  # the message stays as it is until the modal is submitted


def test_submitting_the_reject_modal_with_a_reason_rejects_and_the_reason_reaches_step_functions(
    people, slack_api, celery_eager
):
    request = ingest()
    click(slack_api, request, action="reject")
    metadata = slack_api.of("views.open")[0]["body"]["view"]["private_metadata"]

    response = submit_reject_modal(slack_api, request, reason="  Supplier not vetted ", metadata=metadata)

    assert response.status_code == 200 and response.json() == {"response_action": "clear"}
    request.refresh_from_db()
    assert (request.status, request.decided_by) == (RequestStatus.REJECTED, people["alice"])
    assert request.decision_comment == "Supplier not vetted"
    payload = Callback.objects.get(request=request).payload
    assert payload["error"] == "ApprovalDenied"
    assert json.loads(payload["cause"])["comment"] == "Supplier not vetted"
    # The clicked message (its response_url travelled in the modal's metadata) shows the outcome.
    (answer,) = slack_api.responses()
    assert answer["replace_original"] is True and answer["text"].startswith("Rejected by alice@example.com")


@pytest.mark.parametrize("reason", ["", "   ", "\n"])
def test_submitting_the_reject_modal_without_a_reason_is_refused_and_keeps_the_modal_open(
    people, slack_api, celery_eager, reason
):
    request = ingest()

    response = submit_reject_modal(slack_api, request, reason=reason)

    assert response.status_code == 200
    assert response.json() == {
        "response_action": "errors",
        "errors": {"reason": "Say why you reject: the requester and the workflow see it."},
    }
    assert_refused_without_step_functions(request)
    assert refusals() == [("reason_required", "slack")]


def test_a_reject_click_that_slack_cannot_open_a_modal_for_answers_with_a_link_to_the_request_page(
    people, slack_api, celery_eager
):
    request = ingest()
    slack_api.failing_methods = {"views.open"}  # e.g. the trigger expired (3 seconds)

    response = click(slack_api, request, action="reject")

    assert response.status_code == 200
    assert_refused_without_step_functions(request)
    (note,) = slack_api.responses()
    assert note["response_type"] == "ephemeral"
    assert f"/requests/{request.public_id}/|Open the request>" in note["text"]


def test_a_reject_click_from_someone_who_may_not_decide_opens_no_modal(people, slack_api, celery_eager):
    request = ingest()

    click(slack_api, request, action="reject", user="U0ERIN")

    assert slack_api.of("views.open") == []
    assert refusals() == [("not_assignee", "slack")]
    (note,) = slack_api.responses()
    assert note["text"] == "You are not an approver of this request."


def assert_refused_without_step_functions(request: ApprovalRequest) -> None:
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    # No Callback row: the outbox row is the only way anything reaches Step Functions.
    assert not Callback.objects.filter(request=request).exists()


def test_a_bad_signature_is_refused_and_audited(people, slack_api):
    request = ingest()

    response = click(slack_api, request, secret="not-the-signing-secret")

    assert response.status_code == 401
    assert refusals() == [("bad_signature", "slack")]
    assert_refused_without_step_functions(request)
    assert slack_api.of("users.info") == []  # nothing from an unverified request is acted on


def test_a_missing_or_malformed_signature_is_refused(people, slack_api):
    request = ingest()

    assert click(slack_api, request, signature="v1=abc").status_code == 401
    assert click(slack_api, request, timestamp="yesterday").status_code == 401

    assert refusals() == [("bad_signature", "slack"), ("bad_signature", "slack")]
    assert_refused_without_step_functions(request)


def test_an_old_timestamp_is_refused_even_with_a_valid_signature(people, slack_api):
    request = ingest()

    response = click(slack_api, request, timestamp=int(time.time()) - 5 * 60 - 30)

    assert response.status_code == 401
    assert refusals() == [("stale_timestamp", "slack")]
    assert_refused_without_step_functions(request)


def test_every_refused_slack_click_counts_in_the_decision_refusals_metric(
    people, slack_api, celery_eager, django_capture_on_commit_callbacks
):
    """approvals_decision_refusals_total counts what the audit trail calls decision_refused, on
    Slack too: forged signatures and clicks from strangers are what an operator alerts on."""
    people["bob"].groups.add(Group.objects.get(name="finance-approvers"))
    request = ingest()
    slack_api.profiles["U0STRANGER"] = "stranger@elsewhere.example"
    reasons = ("bad_signature", "stale_timestamp", "slack_unbound", "slack_other_team", "requester")

    def counted() -> dict[str, float]:
        return {
            reason: metrics.REGISTRY.get_sample_value("approvals_decision_refusals_total", {"reason": reason}) or 0.0
            for reason in reasons
        }

    before = counted()
    with django_capture_on_commit_callbacks(execute=True):
        click(slack_api, request, secret="not-the-signing-secret")
        click(slack_api, request, timestamp=int(time.time()) - 5 * 60 - 30)
        click(slack_api, request, user="U0STRANGER")
        click(slack_api, request, team="T0OTHER")
        click(slack_api, request, user="U0BOB")  # refused by the decision service itself

    after = counted()
    assert sorted(code for code, _ in refusals()) == sorted(reasons)
    assert {reason: after[reason] - before[reason] for reason in reasons} == dict.fromkeys(reasons, 1)
    assert_refused_without_step_functions(request)


def test_an_unbound_slack_user_is_refused_and_told_how_to_link_their_account(people, slack_api, celery_eager):
    request = ingest()
    slack_api.profiles["U0STRANGER"] = "stranger@elsewhere.example"

    response = click(slack_api, request, user="U0STRANGER")

    assert response.status_code == 200  # Slack wants a 200; the answer goes to the clicker
    assert refusals() == [("slack_unbound", "slack")]
    event = AuditEvent.objects.get(action="decision_refused")
    assert (event.request, event.actor, event.data["slack_user"], event.data["team_id"]) == (
        request,
        None,
        "U0STRANGER",
        TEAM,
    )
    assert_refused_without_step_functions(request)
    (note,) = slack_api.responses()
    assert note["response_type"] == "ephemeral" and "not linked to your portal account" in note["text"]
    link = links.read_slack_bind_token(bind_token_in(note["text"]))
    assert (link.team_id, link.slack_user_id) == (TEAM, "U0STRANGER")


def test_a_slack_user_with_the_email_of_a_portal_user_but_no_binding_is_refused(people, slack_api, celery_eager):
    # Today's email match is gone: an address in a Slack profile proves nothing to the IdP.
    SlackIdentity.objects.filter(user=people["alice"]).delete()
    request = ingest()

    click(slack_api, request)

    assert refusals() == [("slack_unbound", "slack")]
    assert_refused_without_step_functions(request)


def test_a_click_from_another_workspace_is_refused_and_audited(people, slack_api, celery_eager):
    request = ingest()

    click(slack_api, request, team="T0OTHER")  # the same user id, in a workspace that is not ours

    assert refusals() == [("slack_other_team", "slack")]
    assert AuditEvent.objects.get(action="decision_refused").data["team_id"] == "T0OTHER"
    assert_refused_without_step_functions(request)
    (note,) = slack_api.responses()
    assert "not the one the approval portal uses" in note["text"]


@pytest.mark.parametrize("signed_in_ago", [timedelta(hours=4, seconds=1), None], ids=["too-long-ago", "never"])
def test_a_click_from_someone_whose_last_sso_sign_in_is_too_old_is_refused_with_a_sign_in_link(
    people, slack_api, celery_eager, signed_in_ago
):
    alice = people["alice"]
    User.objects.filter(pk=alice.pk).update(sso_verified_at=timezone.now() - signed_in_ago if signed_in_ago else None)
    request = ingest()

    click(slack_api, request)
    click(slack_api, request, action="reject")

    assert refusals() == [("slack_sso_stale", "slack"), ("slack_sso_stale", "slack")]
    assert AuditEvent.objects.filter(action="decision_refused", actor=alice).count() == 2
    assert_refused_without_step_functions(request)
    assert slack_api.of("views.open") == []
    note = slack_api.responses()[0]
    assert f"/signin/?next=%2Frequests%2F{request.public_id}%2F|Sign in to the portal>" in note["text"]


def test_the_sso_age_limit_is_a_setting(people, slack_api, celery_eager, settings):
    User.objects.filter(pk=people["alice"].pk).update(sso_verified_at=timezone.now() - timedelta(minutes=20))
    settings.SLACK_SSO_MAX_AGE_SECONDS = 15 * 60
    request = ingest()

    click(slack_api, request)

    assert refusals() == [("slack_sso_stale", "slack")]
    settings.SLACK_SSO_MAX_AGE_SECONDS = 30 * 60
    click(slack_api, request)
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED


def test_a_user_deactivated_in_the_portal_is_refused_in_slack(people, slack_api, celery_eager):
    User.objects.filter(pk=people["alice"].pk).update(is_active=False)
    request = ingest()

    click(slack_api, request)
    submit_reject_modal(slack_api, request, reason="no")  # a modal opened before the deactivation

    assert refusals() == [("inactive_user", "slack"), ("inactive_user", "slack")]
    assert_refused_without_step_functions(request)


def test_a_modal_submitted_after_the_sso_age_ran_out_is_refused(people, slack_api, celery_eager):
    request = ingest()
    click(slack_api, request, action="reject")
    User.objects.filter(pk=people["alice"].pk).update(sso_verified_at=timezone.now() - timedelta(days=1))

    response = submit_reject_modal(slack_api, request, reason="Supplier not vetted")

    assert response.json()["response_action"] == "update"
    assert "Sign in to the portal" in json.dumps(response.json()["view"])
    assert refusals() == [("slack_sso_stale", "slack")]
    assert_refused_without_step_functions(request)


def test_a_slack_user_who_is_not_an_approver_is_refused_by_the_same_rule_as_the_web(people, slack_api, celery_eager):
    request = ingest()

    response = click(slack_api, request, user="U0ERIN")  # erin: a portal user, not in the group

    assert response.status_code == 200
    assert refusals() == [("not_assignee", "slack")]
    event = AuditEvent.objects.get(action="decision_refused")
    assert (event.actor, event.request) == (people["erin"], request)
    assert_refused_without_step_functions(request)
    (note,) = slack_api.responses()
    assert note["text"] == "You are not an approver of this request."


def test_the_requester_cannot_approve_their_own_request_from_slack(people, slack_api, celery_eager):
    people["bob"].groups.add(Group.objects.get(name="finance-approvers"))
    request = ingest()

    click(slack_api, request, user="U0BOB")

    assert refusals() == [("requester", "slack")]
    assert_refused_without_step_functions(request)


def test_a_second_click_after_the_decision_is_refused_as_already_decided(people, slack_api, celery_eager):
    request = ingest()
    click(slack_api, request)

    click(slack_api, request, action="reject")

    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    assert refusals() == [("not_pending", "slack")]
    assert Callback.objects.filter(request=request).count() == 1


def test_the_signature_check_matches_slacks_documented_example(settings):
    # The worked example from https://api.slack.com/authentication/verifying-requests-from-slack
    settings.SLACK_SIGNING_SECRET = SIGNING_SECRET
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    signature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

    assert slack.signature_refusal(body=body, timestamp="1531420618", signature=signature, now=1531420618) is None
    assert slack.signature_refusal(body=body + b"x", timestamp="1531420618", signature=signature, now=1531420618)
    assert (
        slack.signature_refusal(body=body, timestamp="1531420618", signature=signature, now=1531420618 + 301)
        == "stale_timestamp"
    )


# ---------------------------------------------------------------------------
# Slack down
# ---------------------------------------------------------------------------
def test_with_slack_answering_500_the_send_is_retried_then_failed_and_decisions_go_on(
    people, slack_api, celery_eager, settings
):
    settings.NOTIFICATION_MAX_ATTEMPTS = 3
    slack_api.fail_status = 500

    request = ingest()  # ingestion is not held up
    send_all(request)

    row = Notification.objects.get(request=request, channel="slack")
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "Slack users.lookupByEmail: HTTP 500")
    assert len(slack_api.of("users.lookupByEmail")) == 3
    assert BOT_TOKEN not in row.last_error

    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    assert Callback.objects.filter(request=request).exists()


def test_with_slack_down_a_reject_click_decides_nothing(people, slack_api, celery_eager):
    request = ingest()
    slack_api.fail_status = 500  # views.open fails, and so does the answer with the page link

    response = click(slack_api, request, action="reject")

    assert response.status_code == 200
    assert_refused_without_step_functions(request)


def test_an_unknown_slack_address_is_a_permanent_failure_not_retried(people, slack_api, celery_eager):
    del slack_api.users["alice@example.com"]

    request = ingest()
    send_all(request)

    row = Notification.objects.get(request=request, channel="slack")
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "Slack users.lookupByEmail: users_not_found")


def test_tasks_module_loads_the_notification_tasks():
    # Celery autodiscovery imports approvals.tasks only; the notification tasks must come with it.
    assert tasks.notifications.send_notification.name in celery_app.tasks


# ---------------------------------------------------------------------------
# The response URL: whoever holds it may post into the clicker's conversation (30 minutes)
# ---------------------------------------------------------------------------
def taken_from_the_queue(task_name: str) -> list:
    """The messages for `task_name` waiting in the session's queue on the real broker (Redis, or
    the SQLite broker without CELERY_BROKER_URL), taken off it as a worker takes them."""
    taken = []
    with celery_app.connection_for_read() as connection:
        waiting = connection.SimpleQueue(celery_app.conf.task_default_queue)
        try:
            while True:
                message = waiting.get(timeout=1)
                message.ack()
                if message.headers["task"] == task_name:
                    taken.append(message)
        except waiting.Empty:
            pass
        finally:
            waiting.close()
    return taken


def test_a_queued_slack_answer_carries_its_response_url_encrypted_and_shows_it_nowhere(people, slack_api):
    """The click's answer is queued for the worker (no eager mode here: the real broker). The
    response URL lets whoever holds it post into the clicker's conversation, so the message
    carries it encrypted with the task tokens' keys, and what logs and monitoring show of the
    arguments (Celery's kwargsrepr) holds neither the URL nor its ciphertext."""
    request = ingest()
    response_url = f"{slack_api.url}/respond/{uuid.uuid4().hex}"
    taken_from_the_queue(SLACK_RESPOND)  # nothing left over from an earlier test

    assert click(slack_api, request, response_url=response_url).status_code == 200

    (message,) = taken_from_the_queue(SLACK_RESPOND)
    args, kwargs, _ = message.payload
    assert response_url not in json.dumps(message.payload) and response_url not in json.dumps(message.headers)
    ciphertext = kwargs["response_url_ciphertext"]
    assert tokens.decrypt_token(ciphertext) == response_url  # the task tokens' keys, not a scheme of its own
    assert ciphertext not in json.dumps(message.headers)  # argsrepr / kwargsrepr: the worker's log lines, events
    # The worker decrypts it and answers there.
    slack_api.calls.clear()
    notify_tasks.slack_respond.apply(args=args, kwargs=kwargs)
    (answer,) = slack_api.calls
    assert answer["path"] == urlsplit(response_url).path
    assert answer["body"]["text"].startswith("Approved by alice@example.com")


def test_a_retried_slack_answer_shows_its_arguments_nowhere_either(people, slack_api):
    """Celery builds a retry's kwargsrepr anew from the arguments: the retry hides them too.
    The task runs as a worker runs it (a request that is not eager), so its retry goes to the
    real broker."""
    slack_api.fail_status = 500  # Slack in an outage: the answer is retried
    ciphertext = slack.seal_response_url(f"{slack_api.url}/respond/{uuid.uuid4().hex}")
    kwargs = {"response_url_ciphertext": ciphertext, "payload": slack.note("Approved")}
    taken_from_the_queue(SLACK_RESPOND)
    task = notify_tasks.slack_respond
    task.push_request(id=str(uuid.uuid4()), args=[], kwargs=kwargs, retries=0, called_directly=False, delivery_info={})
    try:
        with pytest.raises(Retry):
            task.run(**kwargs)
    finally:
        task.pop_request()

    (retry,) = taken_from_the_queue(SLACK_RESPOND)
    assert retry.payload[1] == kwargs
    assert ciphertext not in json.dumps(retry.headers)


def test_the_worker_posts_only_to_slack_and_says_so_without_the_url(people, slack_api, caplog):
    """A validly signed click comes from Slack, and Slack's response URLs are on hooks.slack.com
    (here: the local stand-in SLACK_API_URL names). Anything else is not posted to, and the log
    line names neither the URL nor its ciphertext."""
    caplog.set_level(logging.INFO, logger=notify_tasks.__name__)
    elsewhere = SlackStandIn()  # a server SLACK_API_URL does not name
    try:
        url = f"{elsewhere.url}/respond/{uuid.uuid4().hex}"
        ciphertext = slack.seal_response_url(url)

        notify_tasks.slack_respond.apply(kwargs={"response_url_ciphertext": ciphertext, "payload": slack.note("x")})

        assert elsewhere.calls == [] and slack_api.calls == []
    finally:
        elsewhere.stop()
    assert "refused the answer: not a Slack response URL" in caplog.text
    assert url not in caplog.text and ciphertext not in caplog.text


def test_the_worker_follows_no_redirect_from_a_response_url(people, slack_api, caplog):
    """The host check is for every hop: a response URL that answers with a redirect elsewhere
    (307 keeps the POST and its body) is not followed, and the answer is refused for good."""
    caplog.set_level(logging.INFO, logger=notify_tasks.__name__)
    elsewhere = SlackStandIn()
    try:
        slack_api.redirect_to = f"{elsewhere.url}/respond/{uuid.uuid4().hex}"
        ciphertext = slack.seal_response_url(f"{slack_api.url}/respond/{uuid.uuid4().hex}")

        notify_tasks.slack_respond.apply(kwargs={"response_url_ciphertext": ciphertext, "payload": slack.note("x")})

        assert elsewhere.calls == []
    finally:
        elsewhere.stop()
    assert len(slack_api.calls) == 1
    assert "refused the answer: Slack response_url: HTTP 307 (a redirect, not followed)" in caplog.text


def test_a_response_url_no_configured_key_decrypts_is_dropped_with_a_clear_log_line(
    people, slack_api, settings, caplog
):
    caplog.set_level(logging.INFO, logger=notify_tasks.__name__)
    url = f"{slack_api.url}/respond/{uuid.uuid4().hex}"
    ciphertext = slack.seal_response_url(url)
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the key it was sealed with is gone

    notify_tasks.slack_respond.apply(kwargs={"response_url_ciphertext": ciphertext, "payload": slack.note("x")})

    assert slack_api.calls == []
    assert "no configured key decrypts its response URL" in caplog.text
    assert ciphertext not in caplog.text


def test_an_answer_queued_in_plain_by_the_release_before_is_still_sent_for_one_release(people, slack_api):
    """Messages queued before the deploy carry `response_url` in plain: answered (checked like the
    rest) rather than lost; the next release drops the plain argument (docs/security.md)."""
    url = f"{slack_api.url}/respond/{uuid.uuid4().hex}"

    notify_tasks.slack_respond.apply(kwargs={"response_url": url, "payload": slack.note("Approved")})

    (answer,) = slack_api.calls
    assert answer["path"] == urlsplit(url).path and answer["body"]["text"] == "Approved"


# ---------------------------------------------------------------------------
# Linking a Slack user to a portal account
# ---------------------------------------------------------------------------
def binding_events(action: str) -> list[dict]:
    return [event.data for event in AuditEvent.objects.filter(action=action).order_by("id")]


def test_an_unbound_user_follows_the_link_signs_in_confirms_and_then_decides_from_slack(slack_api, celery_eager):
    dana = User.objects.create_user(
        username="dana", email="dana@example.com", oidc_issuer="https://idp.test", oidc_sub="dana"
    )
    dana.groups.add(Group.objects.get_or_create(name="finance-approvers")[0])
    User.objects.filter(pk=dana.pk).update(sso_verified_at=timezone.now())
    slack_api.profiles["U0DANA"] = "dana@example.com"
    User.objects.create_user(username="bob", email="bob@example.com")
    request = ingest()
    click(slack_api, request, user="U0DANA")
    path = f"/slack/link/{bind_token_in(slack_api.responses()[0]['text'])}/"

    assert Client().get(path)["Location"].startswith("/signin/?next=/slack/link/")  # SSO sign-in first
    browser = signed_in(dana)
    page = browser.get(path)
    assert page.status_code == 200
    html = page.content.decode()
    assert "U0DANA" in html and TEAM in html and "dana@example.com" in html  # who is bound to whom, shown
    assert not SlackIdentity.objects.exists()  # GET binds nothing
    confirmed = browser.post(path, {"csrfmiddlewaretoken": browser.cookies["portal_csrftoken"].value})

    assert confirmed.status_code == 302
    identity = SlackIdentity.objects.get()
    assert (identity.team_id, identity.slack_user_id, identity.user) == (TEAM, "U0DANA", dana)
    assert binding_events("slack_identity_bound") == [{"team_id": TEAM, "slack_user_id": "U0DANA", "replaced": []}]
    click(slack_api, request, user="U0DANA")
    request.refresh_from_db()
    assert (request.status, request.decided_by) == (RequestStatus.APPROVED, dana)


def test_a_binding_link_opened_by_someone_else_binds_nothing(people, slack_api):
    # Mallory clicks in Slack, gets her link and sends it to Alice: signed in as Alice, the page
    # would bind Mallory's Slack user to Alice, and Mallory would decide as Alice.
    slack_api.profiles["U0MALLORY"] = "mallory@example.com"
    path = links.slack_bind_url(team_id=TEAM, slack_user_id="U0MALLORY").removeprefix("http://127.0.0.1:8000")
    SlackIdentity.objects.filter(user=people["alice"]).delete()
    browser = signed_in(people["alice"])

    page = browser.get(path)
    forced = browser.post(path, {"csrfmiddlewaretoken": browser.cookies["portal_csrftoken"].value})

    assert page.status_code == 403 and forced.status_code == 403
    assert "belongs to someone else" in forced.content.decode()
    assert not SlackIdentity.objects.filter(slack_user_id="U0MALLORY").exists()
    assert [event["code"] for event in binding_events("slack_binding_refused")] == ["slack_email_mismatch"] * 2


def test_a_binding_needs_the_confirm_post_with_csrf(people, slack_api):
    SlackIdentity.objects.filter(user=people["alice"]).delete()
    path = links.slack_bind_url(team_id=TEAM, slack_user_id="U0ALICE").removeprefix("http://127.0.0.1:8000")
    browser = signed_in(people["alice"])

    assert browser.post(path).status_code == 403  # no CSRF token

    assert not SlackIdentity.objects.filter(user=people["alice"]).exists()


def test_a_slack_identity_bound_to_one_account_cannot_be_bound_to_another(people, slack_api, settings):
    settings.SLACK_BIND_REQUIRE_EMAIL_MATCH = False  # even then
    path = links.slack_bind_url(team_id=TEAM, slack_user_id="U0ALICE").removeprefix("http://127.0.0.1:8000")
    browser = signed_in(people["erin"])

    response = browser.post(path, {"csrfmiddlewaretoken": csrf_of(browser, path)})

    assert response.status_code == 409
    assert SlackIdentity.objects.get(slack_user_id="U0ALICE").user == people["alice"]
    assert binding_events("slack_binding_refused")[-1]["code"] == "slack_identity_taken"


def test_a_binding_link_signed_for_another_workspace_is_refused(people, slack_api):
    SlackIdentity.objects.filter(user=people["alice"]).delete()
    path = links.slack_bind_url(team_id="T0OTHER", slack_user_id="U0ALICE").removeprefix("http://127.0.0.1:8000")
    browser = signed_in(people["alice"])

    page = browser.get(path)

    assert page.status_code == 403
    assert not SlackIdentity.objects.filter(user=people["alice"]).exists()
    assert binding_events("slack_binding_refused")[0]["code"] == "slack_other_team"


@pytest.mark.parametrize(
    ("make_path", "code", "status"),
    [
        (lambda: links.slack_bind_url(team_id=TEAM, slack_user_id="U0ALICE", ttl_seconds=-1), "link_expired", 410),
        (lambda: links.slack_bind_url(team_id=TEAM, slack_user_id="U0ALICE")[:-4] + "AAA/", "link_tampered", 403),
        (  # a decision link's token is not a binding link (another salt)
            lambda: (
                "/slack/link/"
                + links.make_link_token(public_id=uuid.uuid4(), approver_email="alice@example.com", action="approve")
                + "/"
            ),
            "link_tampered",
            403,
        ),
    ],
    ids=["expired", "tampered", "decision-link"],
)
def test_an_expired_or_tampered_binding_link_is_refused(people, slack_api, make_path, code, status):
    SlackIdentity.objects.filter(user=people["alice"]).delete()
    browser = signed_in(people["alice"])

    response = browser.get(make_path().removeprefix("http://127.0.0.1:8000"))

    assert response.status_code == status
    assert binding_events("slack_binding_refused")[0]["code"] == code
    assert not SlackIdentity.objects.filter(user=people["alice"]).exists()


def test_binding_a_new_slack_user_replaces_the_old_one_of_the_same_account(people, slack_api):
    slack_api.profiles["U0ALICE2"] = "alice@example.com"  # her Slack account was recreated
    path = links.slack_bind_url(team_id=TEAM, slack_user_id="U0ALICE2").removeprefix("http://127.0.0.1:8000")
    browser = signed_in(people["alice"])

    browser.post(path, {"csrfmiddlewaretoken": csrf_of(browser, path)})

    assert list(SlackIdentity.objects.filter(user=people["alice"]).values_list("slack_user_id", flat=True)) == [
        "U0ALICE2"
    ]
    assert binding_events("slack_identity_bound")[-1]["replaced"] == ["U0ALICE"]


def csrf_of(browser: Client, path: str) -> str:
    browser.get("/")  # sets the CSRF cookie, like a browser opening a page
    return browser.cookies["portal_csrftoken"].value


# ---------------------------------------------------------------------------
# Hostile payloads: never a 500, always a clear answer
# ---------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
slack_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["block_actions", "view_submission", "view_closed", "shortcut"]) | json_values,
        "team": st.fixed_dictionaries({}, optional={"id": st.sampled_from([TEAM, "T0OTHER", ""]) | json_values})
        | json_values,
        "user": st.fixed_dictionaries(
            {}, optional={"id": st.sampled_from(["U0ALICE", "U0ERIN", "U0NOBODY"]) | json_values}
        )
        | json_values,
        "actions": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "action_id": st.sampled_from(["approve", "reject", "open"]) | json_values,
                    "value": st.uuids().map(str) | json_values,
                },
            )
            | json_values,
            max_size=3,
        )
        | json_values,
        "view": st.fixed_dictionaries(
            {},
            optional={
                "callback_id": st.just("reject_reason") | json_values,
                "private_metadata": st.text(max_size=80) | json_values,
                "state": json_values,
            },
        )
        | json_values,
        "trigger_id": json_values,
        "response_url": st.text(max_size=40) | json_values,
    },
)
raw_payloads = st.one_of(
    slack_like.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.just("[" * 5000),  # nesting deeper than the parser allows
)


@given(raw=raw_payloads)
def test_the_payload_parser_reads_anything_or_refuses_it_clearly(raw):
    try:
        interaction = slack_payloads.parse_interaction(raw)
    except slack_payloads.SlackPayloadError as error:
        assert error.code == "bad_payload" and error.message
        return
    assert isinstance(interaction.kind, str) and isinstance(interaction.team_id, str)
    assert isinstance(interaction.slack_user_id, str) and isinstance(interaction.reason, str)
    assert interaction.public_id is None or isinstance(interaction.public_id, uuid.UUID)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=raw_payloads)
def test_signed_hostile_payloads_never_crash_the_endpoint_and_decide_nothing(people, slack_api, celery_eager, raw):
    request = ingest() if not ApprovalRequest.objects.exists() else ApprovalRequest.objects.get()

    response = post_signed(None, raw=raw)

    assert response.status_code in {200, 400}
    if response.status_code == 400:
        assert response.content  # a short reason, not an empty error
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING  # random button values never name this request


# ---------------------------------------------------------------------------
# Admin and configuration
# ---------------------------------------------------------------------------
def test_an_admin_unlinks_a_slack_identity_and_its_clicks_count_no_more(people, slack_api, celery_eager):
    carol = User.objects.create_user(
        username="carol", email="carol@example.com", is_staff=True, is_superuser=True, oidc_sub="carol"
    )
    identity = SlackIdentity.objects.get(user=people["alice"])
    admin = signed_in(carol)
    path = f"/admin/approvals/slackidentity/{identity.pk}/delete/"
    admin.get(path)

    response = admin.post(path, {"post": "yes", "csrfmiddlewaretoken": admin.cookies["portal_csrftoken"].value})

    assert response.status_code == 302
    assert not SlackIdentity.objects.filter(pk=identity.pk).exists()
    (event,) = AuditEvent.objects.filter(action="slack_identity_unbound")
    assert (event.actor, event.data["user"], event.data["slack_user_id"]) == (carol, "alice@example.com", "U0ALICE")
    request = ingest()
    click(slack_api, request)
    assert refusals() == [("slack_unbound", "slack")]


def test_slack_without_a_workspace_id_is_a_configuration_error(settings):
    from approvals.checks import notification_settings_check

    settings.SLACK_BOT_TOKEN, settings.SLACK_SIGNING_SECRET, settings.SLACK_TEAM_ID = "xoxb-1", "secret", ""

    assert "approvals.E103" in [message.id for message in notification_settings_check(None)]
    settings.SLACK_TEAM_ID = TEAM
    assert "approvals.E103" not in [message.id for message in notification_settings_check(None)]


# ---------------------------------------------------------------------------
# After the decision: the Slack messages follow what became of it
# ---------------------------------------------------------------------------
def execution_gone(aws) -> ApprovalRequest:
    """A request whose execution Step Functions (here: the emulator) does not know."""
    machine = f"arn:aws:states:{aws.AWS_REGION}:123456789012:stateMachine:forgotten"
    return ingest(
        approvers={"users": ["alice@example.com"], "groups": []},
        stateMachine=machine,
        execution=machine.replace(":stateMachine:", ":execution:") + f":run-{uuid.uuid4().hex[:8]}",
    )


@pytest.mark.parametrize(
    ("arrange", "word"),
    [(task_timed_out, "Closed by Step Functions"), (execution_gone, "Closed by the system")],
    ids=["task-timed-out", "workflow-gone"],
)
def test_an_approval_that_never_reached_the_workflow_no_longer_reads_approved_in_slack(
    people, slack_api, celery_eager, aws, django_capture_on_commit_callbacks, arrange, word
):
    """The Slack messages are closed at the decision ("Approved by alice"); when Step Functions
    then refuses the callback (its task timed out; its execution no longer exists), the request
    page says "Closed by Step Functions" / "Closed by the system" — and so must Slack."""
    request = arrange(aws)
    send_all(request)
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    # What the decision queued, in the order it may run: the Slack messages closed first...
    notify_tasks.close_slack_messages(request.pk)
    (at_decision,) = slack_api.of("chat.update")
    assert at_decision["body"]["text"].startswith("Approved by alice@example.com")
    slack_api.calls.clear()

    # ...then the callback, refused by Step Functions.
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.deliver_callback(Callback.objects.get(request=request).pk) == "failed"

    request.refresh_from_db()
    assert request.status in {RequestStatus.EXPIRED, RequestStatus.CLOSED}
    page = signed_in(people["alice"]).get(f"/requests/{request.public_id}/").content.decode()
    assert word in page
    (update,) = slack_api.of("chat.update")
    assert update["body"]["channel"] == "DU0ALICE"
    assert_valid_block_kit(update["body"]["blocks"])
    # With Redis the callback runs first (priority 0, the Slack update 6): the same words then.
    slack_api.calls.clear()
    notify_tasks.close_slack_messages(request.pk)
    (again,) = slack_api.of("chat.update")
    for said in (update, again):
        text = said["body"]["text"]
        assert text.startswith(word), text
        # alice approved; she neither closed it nor let it expire, and the workflow never heard it.
        assert "Approved by" not in text and " by alice" not in text.split(":")[0]
        assert "did not reach the workflow" in json.dumps(said["body"]["blocks"])


def expired_in_the_portal(request: ApprovalRequest) -> None:
    ApprovalRequest.objects.filter(pk=request.pk).update(deadline=timezone.now() - timedelta(minutes=1))
    assert services.approval_expire(request_id=request.pk)  # beat's expiry sweep


def closed_by_step_functions(request: ApprovalRequest) -> None:
    services.approval_close_by_step_functions(request_id=request.pk, code="TaskTimedOut")  # what a heartbeat finds


@pytest.mark.parametrize(
    ("close", "word"),
    [(expired_in_the_portal, "Expired in the portal"), (closed_by_step_functions, "Closed by Step Functions")],
    ids=["portal-deadline", "step-functions"],
)
def test_a_request_nobody_decided_reads_in_slack_as_it_does_on_its_page(people, slack_api, celery_eager, close, word):
    """Closed without a decision, by the portal's deadline or by Step Functions: the Slack
    messages lose their buttons and say what the request page says, not a bare "Expired"."""
    request = ingest(approvers={"users": ["alice@example.com"], "groups": []}, timeoutSeconds=3600)
    send_all(request)
    slack_api.calls.clear()

    close(request)
    notify_tasks.close_slack_messages(request.pk)  # queued by the closing, on commit

    request.refresh_from_db()
    assert word in signed_in(people["alice"]).get(f"/requests/{request.public_id}/").content.decode()
    (update,) = slack_api.of("chat.update")
    assert update["body"]["channel"] == "DU0ALICE"
    assert update["body"]["text"].startswith(f"{word}: "), update["body"]["text"]
    assert f"*{word}*" in json.dumps(update["body"]["blocks"])
    assert "actions" not in {block["type"] for block in update["body"]["blocks"]}
    assert_valid_block_kit(update["body"]["blocks"])


def test_after_the_recheck_reopens_a_request_its_slack_messages_no_longer_say_approved(
    people, slack_api, celery_eager, django_capture_on_commit_callbacks
):
    """A 2-of-2: erin's approval, then alice's closes it and the Slack messages say "Approved by
    alice". erin is deactivated before the callback: her vote is withdrawn and the request waits
    again — and the messages must stop saying it was approved."""
    request = ingest(
        approvers={"users": ["alice@example.com", "erin@example.com"], "groups": []}, policy={"required": 2}
    )
    send_all(request)
    services.approval_decide(public_id=request.public_id, user=people["erin"], approve=True)
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    notify_tasks.close_slack_messages(request.pk)
    assert {call["body"]["text"].split(":")[0] for call in slack_api.of("chat.update")} == {
        "Approved by alice@example.com"
    }
    slack_api.calls.clear()
    people["erin"].is_active = False
    people["erin"].save(update_fields=["is_active"])

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.deliver_callback(Callback.objects.get(request=request).pk) == "nothing-to-send"

    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    updates = slack_api.of("chat.update")
    assert sorted(call["body"]["channel"] for call in updates) == ["DU0ALICE", "DU0ERIN"]
    for call in updates:
        assert call["body"]["text"].startswith("Waiting for a decision again"), call["body"]["text"]
        assert "Approved" not in call["body"]["text"]
        assert_valid_block_kit(call["body"]["blocks"])
