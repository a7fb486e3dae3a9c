"""The REST API for a request with options and a form: `choice` and `answers` on decide, the
options, the form and each vote's choice and answers on the request; RFC 9457 problems with
per-field `errors` for choice_invalid and answers_invalid. Signed in as tests/test_api.py does."""

import json
import uuid

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Callback, RequestStatus, Vote
from tests.support import make_user
from tests.test_api import Api, assert_problem, decision_url

pytestmark = pytest.mark.django_db

OPTIONS = [
    {"id": "eu", "label": "Deploy to EU", "outcome": "success", "default": True},
    {"id": "us", "label": "Deploy to US", "outcome": "success"},
    {"id": "postpone", "label": "Not this week", "outcome": "failure", "error": "Release.Postponed"},
]
FORM = {
    "type": "object",
    "required": ["version"],
    "properties": {
        "version": {"type": "string", "title": "Version", "pattern": "^v[0-9]+$", "maxLength": 16},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 50},
        "rollback": {"type": "boolean"},
    },
}


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "release-approvers"),
        "bob": make_user("bob", "release-approvers"),  # the requester, in the group too
        "erin": make_user("erin", "release-approvers"),
    }


def ingest(**fields) -> ApprovalRequest:
    body = {
        "taskToken": f"token-{uuid.uuid4()}",
        "title": "Release 2.4",
        "requester": "bob@example.com",
        "approvers": {"groups": ["release-approvers"]},
        "options": OPTIONS,
        "form": FORM,
        **fields,
    }
    return services.approval_request_ingest(message=parse_message(json.dumps(body)), sqs_message_id=str(uuid.uuid4()))[
        0
    ]


@pytest.fixture
def approval(people) -> ApprovalRequest:
    return ingest()


def assert_nothing_decided(approval) -> None:
    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING
    assert not Vote.objects.filter(request=approval).exists()
    assert not Callback.objects.filter(request=approval).exists()


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------
def test_the_request_shows_its_options_and_form_and_each_votes_choice_and_answers(people, approval):
    Api(people["alice"]).post(decision_url(approval), {"choice": "us", "answers": {"version": "v24", "replicas": 3}})

    body = Api(people["erin"]).get(f"/api/v1/requests/{approval.public_id}/").json()

    assert body["options"] == OPTIONS and body["multiple"] is False
    assert body["form"] == FORM
    assert list(body["form"]["properties"]) == ["version", "replicas", "rollback"]  # the message's order
    (vote,) = body["votes"]
    assert (vote["by"], vote["choice"], vote["answers"]) == (
        "alice@example.com",
        ["us"],
        {"version": "v24", "replicas": 3},
    )
    assert "token" not in json.dumps(body).lower().replace("taskto", "")


def test_a_request_without_options_shows_null_options_form_and_choice(people):
    plain = ingest(options=None, form=None)
    Api(people["alice"]).post(decision_url(plain), {"decision": "approve"})

    body = Api(people["erin"]).get(f"/api/v1/requests/{plain.public_id}/").json()

    assert (body["options"], body["form"]) == (None, None)
    assert (body["votes"][0]["choice"], body["votes"][0]["answers"]) == (None, None)


# ---------------------------------------------------------------------------
# Deciding
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("choice", ["eu", ["eu"]], ids=["one-id", "list"])
def test_a_choice_with_typed_answers_decides_and_the_vote_keeps_them(people, approval, choice):
    response = Api(people["alice"]).post(
        decision_url(approval), {"choice": choice, "answers": {"version": "v24", "replicas": 3, "rollback": True}}
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["request"]["status"] == "approved"
    assert body["vote"]["choice"] == ["eu"]
    assert body["vote"]["answers"] == {"version": "v24", "replicas": 3, "rollback": True}
    assert Callback.objects.get(request=approval).kind == "success"


def test_a_failure_option_needs_a_reason_and_sends_its_error(people, approval):
    api = Api(people["alice"])

    assert_problem(api.post(decision_url(approval), {"choice": "postpone"}), 422, "reason_required")
    response = api.post(decision_url(approval), {"choice": "postpone", "comment": "Freeze week"})

    assert response.status_code == 201
    assert Callback.objects.get(request=approval).payload["error"] == "Release.Postponed"


def test_decision_and_choice_must_agree(people, approval):
    problem = assert_problem(
        Api(people["alice"]).post(
            decision_url(approval), {"decision": "approve", "choice": "postpone", "comment": "x"}
        ),
        422,
        "choice_invalid",
    )

    assert problem["errors"] == {"choice": ["The option's outcome and `decision` disagree."]}
    assert_nothing_decided(approval)
    ok = Api(people["alice"]).post(
        decision_url(approval), {"decision": "approve", "choice": "eu", "answers": {"version": "v1"}}
    )
    assert ok.status_code == 201


# ---------------------------------------------------------------------------
# Hostile
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answers",
    [
        {"version": "v24", "owner": "mallory"},  # a field the form does not have
        {"version": 24},  # wrong type
        {"version": "v24", "replicas": "3"},  # a number as a string (JSON is typed)
        {"version": "v24", "replicas": 3.5},
        {"version": "v24", "replicas": 51},
        {"version": "v24", "rollback": "yes"},
        {"version": "24"},  # the pattern
        {},  # the required field is missing
    ],
)
def test_answers_that_do_not_fit_the_form_are_422_answers_invalid_with_field_errors(people, approval, answers):
    problem = assert_problem(
        Api(people["alice"]).post(decision_url(approval), {"choice": "eu", "answers": answers}), 422, "answers_invalid"
    )

    assert problem["errors"] and all(key == "answers" or key.startswith("answers.") for key in problem["errors"])
    assert all(isinstance(messages, list) and messages for messages in problem["errors"].values())
    for value in answers.values():  # no message repeats a value
        if isinstance(value, str):
            assert value not in json.dumps(problem["errors"])
    assert_nothing_decided(approval)
    event = AuditEvent.objects.get(action="decision_refused")
    assert (event.data["code"], event.data["via"]) == ("answers_invalid", "api")


def test_an_unknown_field_is_named_in_errors_under_answers(people, approval):
    problem = assert_problem(
        Api(people["alice"]).post(decision_url(approval), {"choice": "eu", "answers": {"version": "v1", "zzz": 1}}),
        422,
        "answers_invalid",
    )
    assert list(problem["errors"]) == ["answers"]


@pytest.mark.parametrize("choice", ["nope", ["eu", "nope"], ["eu", "us"], ["eu", "postpone"], "approve", "EU"], ids=str)
def test_a_choice_the_request_does_not_offer_is_422_choice_invalid(people, approval, choice):
    response = Api(people["alice"]).post(
        decision_url(approval), {"choice": choice, "answers": {"version": "v1"}, "comment": "x"}
    )

    assert_problem(response, 422, "choice_invalid")
    assert_nothing_decided(approval)


def test_an_option_id_of_another_request_is_refused(people, approval):
    ingest(options=[{"id": "ship", "label": "Ship", "outcome": "success"}, *OPTIONS[2:]])

    response = Api(people["alice"]).post(decision_url(approval), {"choice": "ship", "answers": {"version": "v1"}})

    assert_problem(response, 422, "choice_invalid")
    assert_nothing_decided(approval)


@pytest.mark.parametrize(
    "body",
    [
        {"option": "eu"},  # the old name: refused, never a plain decision
        {"decision": "approve", "option": "eu"},
        {"choice": []},
        {"choice": [""]},
        {"choice": 1},
        {"choice": {"id": "eu"}},
        {"choice": ["eu"] * 11},
        {"choice": "x" * 65},
        {"choice": "eu", "answers": ["v1"]},
        {"choice": "eu", "answers": "v1"},
    ],
)
def test_a_malformed_choice_or_answers_is_400_validation_error(people, approval, body):
    problem = assert_problem(Api(people["alice"]).post(decision_url(approval), body), 400, "validation_error")

    assert isinstance(problem["errors"], dict) and problem["errors"]
    assert_nothing_decided(approval)


def test_the_requester_cannot_choose_an_option_through_the_api(people, approval):
    response = Api(people["bob"]).post(decision_url(approval), {"choice": "eu", "answers": {"version": "v1"}})

    assert_problem(response, 403, "requester_cannot_decide")
    assert_nothing_decided(approval)


def test_a_retried_choice_with_the_same_idempotency_key_gets_the_first_answer(people, approval):
    api = Api(people["alice"])
    body = {"choice": "eu", "answers": {"version": "v1"}}

    first = api.post(decision_url(approval), body, **{"Idempotency-Key": "opt-1"})
    again = api.post(decision_url(approval), body, **{"Idempotency-Key": "opt-1"})
    other = api.post(decision_url(approval), {**body, "choice": "us"}, **{"Idempotency-Key": "opt-1"})

    assert first.status_code == again.status_code == 201
    assert again["Idempotency-Replayed"] == "true" and again.json() == first.json()
    assert_problem(other, 422, "idempotency_conflict")
    assert Vote.objects.filter(request=approval).count() == 1


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    answers=st.dictionaries(
        st.sampled_from(["version", "replicas", "rollback", "other", ""]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | st.lists(st.integers()),
        max_size=4,
    ),
    choice=st.sampled_from(["eu", "us", ["eu", "us"], "postpone", "zzz"]),
)
def test_any_choice_and_answers_are_a_clear_answer_never_a_crash(people, approval, answers, choice):
    response = Api(people["alice"]).post(decision_url(approval), {"choice": choice, "answers": answers, "comment": "c"})

    assert response.status_code in {201, 400, 409, 422}, response.content[:300]
    if response.status_code != 201:
        assert response["Content-Type"] == "application/problem+json"
    Vote.objects.all().delete()  # the next example starts from a pending request again
    Callback.objects.all().delete()
    ApprovalRequest.objects.filter(pk=approval.pk).update(status=RequestStatus.PENDING, decided_by=None)
