"""Slack for a request with options or a form: one button per option (the option id in the
button's value), a failure option opens the reason modal, a required form leads to the page.

The same parts as tests/test_slack.py: its local stand-in for Slack's Web API, requests signed
with the signing secret as Slack signs them, PostgreSQL, Celery in eager mode.
"""

import json
import uuid

import pytest
from django.contrib.auth.models import Group
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from approvals import slack_payloads
from approvals.models import Callback, RequestStatus, Vote
from approvals.notifications import slack
from tests import test_slack as slack_tests

pytestmark = pytest.mark.django_db

# The Slack fixtures of tests/test_slack.py (the stand-in, the bound people); eager Celery is
# tests/conftest.py's.
slack_api = slack_tests.slack_api
people = slack_tests.people

OPTIONS = [
    {"id": "eu", "label": "Deploy to EU", "outcome": "success"},
    {"id": "us", "label": "Deploy to US <!here>", "outcome": "success"},
    {"id": "postpone", "label": "Not this week", "outcome": "failure", "error": "Release.Postponed"},
]
REQUIRED_FORM = {
    "type": "object",
    "required": ["version"],
    "properties": {"version": {"type": "string", "maxLength": 32}},
}


def ingest(**fields):
    return slack_tests.ingest(options=OPTIONS, **fields)


def decision_buttons(blocks: list[dict]) -> dict[str, dict]:
    actions = [block for block in blocks if block["type"] == "actions"]
    return {element["action_id"]: element for block in actions for element in block["elements"]}


def click_option(slack_api, request, option_id: str, *, user="U0ALICE", value=None, action_id=None):
    """What Slack posts when an option button is clicked, signed with the signing secret."""
    payload = {
        "type": "block_actions",
        "team": {"id": slack_tests.TEAM},
        "user": {"id": user, "team_id": slack_tests.TEAM},
        "actions": [
            {
                "action_id": action_id or f"option:{option_id}",
                "block_id": f"approval:{request.public_id}",
                "value": value or f"{request.public_id}|{option_id}",
            }
        ],
        "trigger_id": "12345.98765.abcd2358fdea",
        "response_url": f"{slack_api.url}/respond/{uuid.uuid4().hex}",
    }
    return slack_tests.post_signed(payload)


def assert_nothing_decided(request) -> None:
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert not Vote.objects.filter(request=request).exists()
    assert not Callback.objects.filter(request=request).exists()


# ---------------------------------------------------------------------------
# The message
# ---------------------------------------------------------------------------
def test_a_request_with_options_is_a_message_with_one_button_per_option(people, slack_api, celery_eager):
    request = ingest()
    slack_tests.send_all(request)

    (post,) = slack_api.of("chat.postMessage")
    blocks = post["body"]["blocks"]
    slack_tests.assert_valid_block_kit(blocks)
    buttons = decision_buttons(blocks)
    assert list(buttons) == ["option:eu", "option:us", "option:postpone", "open"]
    assert [buttons[key]["value"] for key in ("option:eu", "option:us", "option:postpone")] == [
        f"{request.public_id}|eu",
        f"{request.public_id}|us",
        f"{request.public_id}|postpone",
    ]
    assert buttons["option:postpone"]["style"] == "danger" and "style" not in buttons["option:eu"]
    assert buttons["option:us"]["text"]["text"] == "Deploy to US <!here>"  # plain_text: shown, never a ping
    assert "<!here>" not in json.dumps(buttons["option:us"]["confirm"]["text"])  # mrkdwn: escaped


def test_a_required_form_sends_no_decision_buttons_only_the_way_to_the_page(people, slack_api, celery_eager):
    for fields in ({"form": REQUIRED_FORM}, {"form": REQUIRED_FORM, "options": None}):
        slack_api.calls.clear()
        request = slack_tests.ingest(**{"options": OPTIONS, **fields})
        slack_tests.send_all(request)

        (post,) = slack_api.of("chat.postMessage")
        blocks = post["body"]["blocks"]
        slack_tests.assert_valid_block_kit(blocks)
        buttons = decision_buttons(blocks)
        assert list(buttons) == ["open"]
        assert buttons["open"]["url"].endswith(f"/requests/{request.public_id}/")
        assert "fill in a form" in json.dumps(blocks)


# ---------------------------------------------------------------------------
# Clicks
# ---------------------------------------------------------------------------
def test_a_success_option_click_decides_with_that_option(people, slack_api, celery_eager):
    request = ingest()

    response = click_option(slack_api, request, "us")

    assert response.status_code == 200
    request.refresh_from_db()
    assert (request.status, request.decided_by) == (RequestStatus.APPROVED, people["alice"])
    assert Vote.objects.get(request=request).choice == ["us"]
    assert Callback.objects.get(request=request).kind == "success"
    (answer,) = slack_api.responses()
    assert answer["replace_original"] is True and answer["text"].startswith("Approved by alice@example.com")
    # What was chosen, not only yes; the label escaped as any text from a workflow (no @here ping).
    assert "Approved by alice@example.com — Deploy to US &lt;!here&gt;:" in answer["text"]
    assert "<!here>" not in json.dumps(answer)


def test_a_failure_option_click_opens_the_reason_modal_and_its_submission_sends_the_options_error(
    people, slack_api, celery_eager
):
    request = ingest()

    click_option(slack_api, request, "postpone")

    assert_nothing_decided(request)
    (opened,) = slack_api.of("views.open")
    view = opened["body"]["view"]
    assert view["callback_id"] == "reject_reason" and view["title"]["text"] == "Not this week"
    metadata = view["private_metadata"]
    assert json.loads(metadata)["o"] == "postpone"

    without = slack_tests.submit_reject_modal(slack_api, request, reason=" ", metadata=metadata)
    assert without.json()["response_action"] == "errors"
    assert_nothing_decided(request)

    done = slack_tests.submit_reject_modal(slack_api, request, reason="Freeze week", metadata=metadata)

    assert done.json() == {"response_action": "clear"}
    request.refresh_from_db()
    assert (request.status, request.decision_comment) == (RequestStatus.REJECTED, "Freeze week")
    assert Vote.objects.get(request=request).choice == ["postpone"]
    assert Callback.objects.get(request=request).payload["error"] == "Release.Postponed"


# ---------------------------------------------------------------------------
# Hostile: signed by Slack, but not what the portal sent
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("forged", ["approve", "reject", "nope", "x" * 64, "EU"])
def test_a_signed_click_with_an_option_the_request_does_not_have_decides_nothing(
    people, slack_api, celery_eager, forged
):
    request = ingest()

    response = click_option(slack_api, request, forged)

    assert response.status_code == 200
    assert_nothing_decided(request)
    assert slack_tests.refusals() == [("choice_invalid", "slack")]
    (note,) = slack_api.responses()
    assert note["response_type"] == "ephemeral"


def test_an_option_id_from_another_request_is_refused(people, slack_api, celery_eager):
    request = ingest()
    other = slack_tests.ingest(options=[{"id": "ship", "label": "Ship", "outcome": "success"}, *OPTIONS[2:]])

    click_option(slack_api, request, "ship")

    assert_nothing_decided(request)
    assert_nothing_decided(other)
    assert slack_tests.refusals() == [("choice_invalid", "slack")]


@pytest.mark.parametrize(
    ("value", "action_id"),
    [
        ("{public_id}|eu", "option:us"),  # the action and the value name different options
        ("{public_id}", "option:eu"),  # no option in the value
        ("{public_id}|", "option:"),
        ("not-a-uuid|eu", "option:eu"),
    ],
)
def test_a_malformed_option_button_is_refused_as_a_bad_payload(people, slack_api, celery_eager, value, action_id):
    request = ingest()

    response = click_option(
        slack_api, request, "eu", value=value.format(public_id=request.public_id), action_id=action_id
    )

    assert response.status_code == 400
    assert_nothing_decided(request)
    assert slack_tests.refusals() == [("bad_payload", "slack")]


def test_a_success_option_of_a_request_whose_form_is_required_is_refused_with_a_link_to_the_page(
    people, slack_api, celery_eager
):
    request = ingest(form=REQUIRED_FORM)

    click_option(slack_api, request, "eu")  # no such button was sent; a signed click anyway

    assert_nothing_decided(request)
    assert slack_tests.refusals() == [("answers_invalid", "slack")]
    (note,) = slack_api.responses()
    assert f"/requests/{request.public_id}/|Open the request>" in note["text"]


def test_the_requester_cannot_choose_an_option_from_slack(people, slack_api, celery_eager):
    people["bob"].groups.add(Group.objects.get(name="finance-approvers"))
    request = ingest()

    click_option(slack_api, request, "eu", user="U0BOB")
    click_option(slack_api, request, "postpone", user="U0BOB")

    assert_nothing_decided(request)
    assert slack_api.of("views.open") == []
    assert slack_tests.refusals() == [("requester", "slack"), ("requester", "slack")]


def test_an_option_click_with_a_bad_signature_is_refused(people, slack_api, celery_eager):
    request = ingest()
    payload = {
        "type": "block_actions",
        "team": {"id": slack_tests.TEAM},
        "user": {"id": "U0ALICE", "team_id": slack_tests.TEAM},
        "actions": [{"action_id": "option:eu", "value": f"{request.public_id}|eu"}],
    }

    response = slack_tests.post_signed(payload, secret="not-the-signing-secret")

    assert response.status_code == 401
    assert_nothing_decided(request)


def test_the_payload_parser_reads_an_option_only_when_action_and_value_agree():
    public_id = uuid.uuid4()

    def parsed(action_id, value):
        body = {"type": "block_actions", "actions": [{"action_id": action_id, "value": value}]}
        return slack_payloads.parse_interaction(json.dumps(body))

    good = parsed("option:eu", f"{public_id}|eu")
    assert (good.action, good.public_id, good.option) == ("option:eu", public_id, "eu")
    assert parsed("option:us", f"{public_id}|eu").option == ""
    assert parsed("option:" + "x" * 65, f"{public_id}|" + "x" * 65).option == ""
    assert parsed(slack.ACTION_APPROVE, str(public_id)).option == ""


@hypothesis_settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.text(max_size=70) | st.sampled_from(["eu", "us", "postpone", "approve", "reject", ""]),
    action_suffix=st.none() | st.text(max_size=70),
    separator=st.sampled_from(["|", "||", " ", ""]),
)
def test_any_signed_option_click_is_a_clear_answer_and_only_a_real_success_option_decides(
    people, slack_api, celery_eager, option, action_suffix, separator
):
    request = slack_tests.ApprovalRequest.objects.filter(status=RequestStatus.PENDING).first() or ingest()
    action_id = "option:" + (option if action_suffix is None else action_suffix)

    response = click_option(
        slack_api, request, option, value=f"{request.public_id}{separator}{option}", action_id=action_id
    )

    assert response.status_code in {200, 400}
    request.refresh_from_db()
    decided = request.status != RequestStatus.PENDING
    real = option in {"eu", "us"} and separator == "|" and action_suffix in (None, option)
    assert decided == real
    if decided:
        assert Vote.objects.get(request=request).choice == [option]
        Vote.objects.all().delete()
        Callback.objects.all().delete()
        slack_tests.ApprovalRequest.objects.filter(pk=request.pk).update(status=RequestStatus.PENDING)
