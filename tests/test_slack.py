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
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Callback, Notification, RequestStatus, User
from approvals.notifications import slack
from approvals.services import notifications as notification_services
from portal.celery import app as celery_app
from tests.test_callbacks import start_and_ingest, wait_for_execution_end
from worker import notify_tasks, tasks

pytestmark = pytest.mark.django_db

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-bot-token"
SLACK_IDS = {"alice@example.com": "U0ALICE", "erin@example.com": "U0ERIN", "bob@example.com": "U0BOB"}


# ---------------------------------------------------------------------------
# The stand-in for Slack's Web API
# ---------------------------------------------------------------------------
class SlackStandIn:
    """A local HTTP server that records the calls it receives and answers like Slack's Web API."""

    def __init__(self):
        self.calls: list[dict] = []
        self.fail_status: int | None = None  # e.g. 500: every call answers that
        self.users = dict(SLACK_IDS)  # email -> Slack user id
        self.profiles = {user_id: email for email, user_id in self.users.items()}
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw or b"{}")
                else:
                    body = {key: values[0] for key, values in parse_qs(raw.decode()).items()}
                with stand_in._lock:
                    stand_in.calls.append(
                        {"path": self.path, "authorization": self.headers.get("Authorization", ""), "body": body}
                    )
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
        if method == "users.lookupByEmail":
            user_id = self.users.get(body.get("email", ""))
            return 200, {"ok": True, "user": {"id": user_id}} if user_id else {"ok": False, "error": "users_not_found"}
        if method == "conversations.open":
            return 200, {"ok": True, "channel": {"id": "D" + body["users"]}}
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


@pytest.fixture
def slack_api(settings):
    stand_in = SlackStandIn()
    settings.SLACK_API_URL = f"{stand_in.url}/api"
    settings.SLACK_BOT_TOKEN = BOT_TOKEN
    settings.SLACK_SIGNING_SECRET = SIGNING_SECRET
    settings.SLACK_GROUP_CHANNELS = {}
    settings.SLACK_TIMEOUT = 3
    settings.NOTIFICATION_EMAIL_ENABLED = False  # this file is about Slack
    yield stand_in
    stand_in.stop()


@pytest.fixture
def celery_eager():
    old = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = False  # autoretry runs the retries right away
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


@pytest.fixture
def people(db):
    def make(username: str, *groups: str) -> User:
        user = User.objects.create_user(
            username=username, email=f"{username}@example.com", oidc_issuer="https://idp.test", oidc_sub=username
        )
        for name in groups:
            user.groups.add(Group.objects.get_or_create(name=name)[0])
        return user

    return {"alice": make("alice", "finance-approvers"), "bob": make("bob"), "erin": make("erin")}


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
    slack_api, request, *, action="approve", user="U0ALICE", timestamp=None, secret=SIGNING_SECRET, signature=None
):
    """POST what Slack posts when someone clicks a button: form-encoded `payload`, signed."""
    payload = {
        "type": "block_actions",
        "team": {"id": "T0TEAM"},
        "user": {"id": user, "username": "someone"},
        "actions": [
            {"action_id": action, "block_id": f"approval:{request.public_id}", "value": str(request.public_id)}
        ],
        "response_url": f"{slack_api.url}/respond/{uuid.uuid4().hex}",
    }
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time())) if timestamp is None else str(timestamp)
    client = Client(enforce_csrf_checks=True)  # Slack sends no CSRF token: the view is exempt
    return client.post(
        "/slack/interactivity/",
        data=body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp,
        HTTP_X_SLACK_SIGNATURE=signature or sign(body, timestamp, secret),
    )


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
    assert [call["body"]["user"] for call in slack_api.of("users.info")] == ["U0ALICE"]
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


def test_a_reject_click_rejects(people, slack_api, celery_eager):
    request = ingest()

    click(slack_api, request, action="reject")

    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED
    assert Callback.objects.get(request=request).payload["error"] == "ApprovalDenied"


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


def test_an_unknown_slack_user_is_refused_and_told(people, slack_api, celery_eager):
    request = ingest()
    slack_api.profiles["U0STRANGER"] = "stranger@elsewhere.example"

    response = click(slack_api, request, user="U0STRANGER")

    assert response.status_code == 200  # Slack wants a 200; the answer goes to the clicker
    assert refusals() == [("unknown_slack_user", "slack")]
    event = AuditEvent.objects.get(action="decision_refused")
    assert (event.request, event.data["slack_email"]) == (request, "stranger@elsewhere.example")
    assert_refused_without_step_functions(request)
    (note,) = slack_api.responses()
    assert note["response_type"] == "ephemeral" and "matches no portal user" in note["text"]


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


def test_a_slack_user_lookup_that_fails_tells_the_clicker_and_decides_nothing(people, slack_api, celery_eager):
    request = ingest()
    slack_api.fail_status = 500

    response = click(slack_api, request)

    assert response.status_code == 200
    assert_refused_without_step_functions(request)


def test_an_unknown_slack_address_is_a_permanent_failure_not_retried(people, slack_api, celery_eager):
    del slack_api.users["alice@example.com"]

    request = ingest()
    send_all(request)

    row = Notification.objects.get(request=request, channel="slack")
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "Slack users.lookupByEmail: users_not_found")


def test_tasks_module_loads_the_notification_tasks():
    # Celery autodiscovery imports worker.tasks only; the notification tasks must come with it.
    assert tasks.notify_tasks.send_notification.name in celery_app.tasks
