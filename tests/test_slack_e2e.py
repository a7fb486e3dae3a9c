"""Slack decisions end to end: the portal (gunicorn) and a Celery worker as real processes, a real
SSO sign-in through the dev IdP, and `SlackStandIn` (tests/test_slack.py) as Slack's Web API and
response URLs. A Slack user is linked to the account that signed in through SSO, and clicks count
only while that SSO sign-in is recent.
"""

import json
import re
import time
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import pytest
import requests
from django.utils import timezone

from approvals import services
from approvals.contract import parse_message
from approvals.models import AuditEvent, RequestStatus, SlackIdentity, User
from tests.support import sso_login, wait_for
from tests.test_slack import BOT_TOKEN, SIGNING_SECRET, TEAM, SlackStandIn, sign

pytestmark = pytest.mark.e2e


@pytest.fixture
def slack_stack(request, transactional_db, monkeypatch):
    """portal_stack with Slack on, pointed at a local stand-in (its URL is only known now)."""
    stand_in = SlackStandIn()
    for name, value in {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": f"{stand_in.url}/api",
        "SLACK_TEAM_ID": TEAM,
        "NOTIFICATION_EMAIL_ENABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)  # portal_stack passes its environment on to web and worker
    stack = request.getfixturevalue("portal_stack")
    yield stack, stand_in
    stand_in.stop()


def click(portal_url: str, stand_in: SlackStandIn, public_id, *, user="U0ALICE") -> requests.Response:
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM},
        "user": {"id": user, "team_id": TEAM},
        "actions": [{"action_id": "approve", "value": str(public_id)}],
        "trigger_id": "1.2.3",
        "response_url": f"{stand_in.url}/respond/{uuid.uuid4().hex}",
    }
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time()))
    return requests.post(
        f"{portal_url}/slack/interactivity/",
        data=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": sign(body, timestamp),
        },
        timeout=15,
    )


def answers(stand_in: SlackStandIn, count: int) -> list[dict]:
    """The worker answers through response_url (a Celery task): wait for the `count`-th answer."""
    return wait_for(lambda: stand_in.responses() if len(stand_in.responses()) >= count else None)


def test_a_slack_user_linked_through_a_real_sso_sign_in_decides_while_the_sign_in_is_recent(slack_stack):
    (stack, stand_in) = slack_stack
    url = stack["url"]
    body = {
        "taskToken": "AAAAKgAAAAIAAAAAAAAAAW" + uuid.uuid4().hex * 8,
        "title": "Order 4711",
        "requester": "bob@example.com",
        "approvers": {"groups": ["finance-approvers"]},
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)), sqs_message_id="m-e2e")

    # Not linked yet: refused, and told where to link.
    assert click(url, stand_in, request.public_id).status_code == 200
    (refused,) = answers(stand_in, 1)
    bind_path = re.search(r"(/slack/link/[^|>]+)\|", refused["text"]).group(1)

    alice = sso_login(url, "alice")  # the dev IdP's login form
    user = User.objects.get(email="alice@example.com")
    assert user.sso_verified_at is not None and timezone.now() - user.sso_verified_at < timedelta(minutes=5)
    page = alice.get(f"{url}{bind_path}", timeout=15)
    assert page.status_code == 200 and "U0ALICE" in page.text and TEAM in page.text
    linked = alice.post(
        f"{url}{bind_path}",
        data={"csrfmiddlewaretoken": alice.cookies["portal_csrftoken"]},
        headers={"Referer": f"{url}{bind_path}"},
        timeout=15,
    )
    assert linked.status_code == 200 and linked.url == f"{url}/"
    assert SlackIdentity.objects.get().user == user

    # Linked, but the sign-in is older than SLACK_SSO_MAX_AGE_SECONDS: refused, with a sign-in link.
    User.objects.filter(pk=user.pk).update(sso_verified_at=timezone.now() - timedelta(days=1))
    click(url, stand_in, request.public_id)
    assert "Sign in to the portal" in answers(stand_in, 2)[1]["text"]
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING

    # Signing in again (silently: the IdP session lives) makes Slack clicks count again.
    again = alice.get(f"{url}/oidc/authenticate/?next=/", timeout=15)
    assert again.url == f"{url}/"
    click(url, stand_in, request.public_id)
    assert answers(stand_in, 3)[2]["text"].startswith("Approved by alice@example.com")
    # (The made-up task token is unknown to Step Functions, so the worker then closes the request:
    # the decision itself is what this test is about.)
    assert AuditEvent.objects.filter(request=request, action="approved", actor=user).exists()
    codes = list(AuditEvent.objects.filter(action="decision_refused").values_list("data__code", flat=True))
    assert codes == ["slack_unbound", "slack_sso_stale"]
