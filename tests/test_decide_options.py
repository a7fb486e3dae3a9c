"""Deciding a request with options and a form (docs/approver-input.md): the service
`approval_decide(choice=..., answers=...)`, the quorum with options, and what Step Functions gets.

The service is what every channel calls, so the hostile cases are attacked here once: unknown
and duplicate ids, a failure option mixed in, several without `multiple`, a decision that
contradicts the option, answers of the wrong type, answers on a request without a form.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditAction, AuditEvent, Callback, RequestStatus, Vote
from tests.support import make_user

pytestmark = pytest.mark.django_db

TOKEN = "AAAAKgAAAAIAAAAAAAAAAc" + "q/r+s=" * 120
OPTIONS = [
    {"id": "eu", "label": "Deploy to EU", "outcome": "success", "default": True},
    {"id": "us", "label": "Deploy to US", "outcome": "success"},
    {"id": "postpone", "label": "Not this week", "outcome": "failure", "error": "Release.Postponed"},
    {"id": "reject", "label": "Reject", "outcome": "failure"},
]
FORM = {
    "type": "object",
    "required": ["version", "window"],
    "properties": {
        "version": {"type": "string", "pattern": r"^v\d+\.\d+\.\d+$", "maxLength": 32},
        "window": {"type": "string", "format": "date"},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 50},
        "budget": {"type": "number", "minimum": 0},
        "rollback": {"type": "boolean"},
    },
}
SECRET_ANSWER = "v9.9.9"  # an answer's value: it may reach the workflow, never the audit trail or a log


@pytest.fixture
def people():
    return {name: make_user(name, "release-approvers") for name in ("alice", "erin", "frank")} | {
        "bob": make_user("bob"),
        "olga": make_user("olga"),  # an outsider
    }


def ingest(**fields: Any) -> ApprovalRequest:
    body = {
        "taskToken": TOKEN + str(ApprovalRequest.objects.count()),
        "title": "Release 2026.12",
        "requester": "bob@example.com",
        "approvers": {"groups": ["release-approvers"]},
        **fields,
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)), sqs_message_id="m")
    return request


@pytest.fixture
def release() -> ApprovalRequest:
    return ingest(options=OPTIONS, form=FORM)


def decide(request: ApprovalRequest, user, **kwargs) -> ApprovalRequest:
    return services.approval_decide(public_id=request.public_id, user=user, **kwargs)


def refusal(request: ApprovalRequest, user, code: str, **kwargs) -> services.ApprovalError:
    with pytest.raises(services.ApprovalError) as info:
        decide(request, user, **kwargs)
    assert info.value.code == code, info.value.message
    assert not Vote.objects.filter(request=request).exists()
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    return info.value


def payload(request: ApprovalRequest) -> tuple[str, dict]:
    callback = Callback.objects.get(request=request)
    return callback.kind, callback.payload


def test_a_success_option_with_typed_answers_resumes_the_execution_with_choice_and_input(people, release):
    decided = decide(
        release,
        people["alice"],
        choice=["us"],
        answers={"version": " v1.2.3 ", "window": "2026-12-24", "replicas": "3", "budget": "12.50", "rollback": "on"},
        answers_from_form=True,
    )

    assert decided.status == RequestStatus.APPROVED
    vote = Vote.objects.get(request=release)
    assert vote.choice == ["us"]
    answers = {"version": "v1.2.3", "window": "2026-12-24", "replicas": 3, "budget": 12.5, "rollback": True}
    assert vote.answers == answers
    kind, sent = payload(release)
    assert kind == Callback.Kind.SUCCESS
    assert sent["output"]["choice"] == "us"
    assert sent["output"]["input"] == answers
    assert isinstance(sent["output"]["input"]["replicas"], int)
    assert sent["output"]["approvals"][0]["choice"] == ["us"]
    assert sent["output"]["approved"] is True


def test_a_failure_option_sends_its_own_error_and_a_cause_with_the_answers(people, release):
    decide(release, people["alice"], choice=["postpone"], comment="Freeze week", answers={"replicas": 2})

    kind, sent = payload(release)
    assert kind == Callback.Kind.FAILURE
    assert sent["error"] == "Release.Postponed"
    cause = json.loads(sent["cause"])
    assert (cause["choice"], cause["input"], cause["comment"]) == ("postpone", {"replicas": 2}, "Freeze week")
    assert Vote.objects.get(request=release).approve is False


def test_a_failure_option_without_its_own_error_sends_approval_denied(people, release):
    decide(release, people["alice"], choice=["reject"], comment="No")
    assert payload(release)[1]["error"] == "ApprovalDenied"


def test_a_failure_option_needs_a_reason_and_not_the_forms_required_fields(people, release):
    refusal(release, people["alice"], services.REASON_REQUIRED, choice=["postpone"])
    decide(release, people["alice"], choice=["postpone"], comment="Not now")  # no version, no window: fine
    assert Vote.objects.get(request=release).answers == {}


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({}, "no choice on a request with options"),
        ({"choice": []}, "an empty choice"),
        ({"choice": ["asia"]}, "an unknown id"),
        ({"choice": "eu"}, "a string, not a list"),
        ({"choice": [{"id": "eu"}]}, "not a string id"),
        ({"choice": ["eu", "eu"]}, "a duplicate"),
        ({"choice": ["eu", "us"]}, "several without multiple"),
        ({"choice": ["eu"] * 1000}, "a huge list"),
        ({"choice": ["eu"], "approve": False}, "a decision that contradicts the option"),
        ({"choice": ["reject"], "approve": True}, "a decision that contradicts the option"),
        ({"approve": True}, "approve without a choice"),
    ],
)
def test_hostile_choices_are_refused_and_recorded(people, release, kwargs, why):
    answers = {"version": "v1.0.0", "window": "2026-12-24"}
    error = refusal(release, people["alice"], services.CHOICE_INVALID, comment="x", answers=answers, **kwargs)
    assert "asia" not in error.message
    event = AuditEvent.objects.get(request=release, action=AuditAction.DECISION_REFUSED)
    assert event.data["code"] == "choice_invalid", why


def test_a_failure_option_is_chosen_alone_even_with_multiple():
    request = ingest(options=OPTIONS, multiple=True)
    user = make_user("alice", "release-approvers")
    error = refusal(request, user, services.CHOICE_INVALID, choice=["eu", "reject"], comment="x")
    assert "Reject" in error.message


def test_several_success_options_with_multiple_are_one_choice_in_the_options_order():
    request = ingest(options=OPTIONS, multiple=True)
    decide(request, make_user("alice", "release-approvers"), choice=["us", "eu"])
    assert Vote.objects.get(request=request).choice == ["eu", "us"]
    assert payload(request)[1]["output"]["choice"] == ["eu", "us"]


def test_the_requester_and_an_outsider_hear_their_refusal_not_a_choice_error(people, release):
    people["bob"].groups.add(*people["alice"].groups.all())
    refusal(release, people["bob"], "requester", choice=["nonsense"])
    refusal(release, people["olga"], "not_assignee", choice=["nonsense"])


def test_wrong_answers_are_refused_per_field_and_the_trail_names_fields_never_values(people, release, caplog):
    error = refusal(
        release,
        people["alice"],
        services.ANSWERS_INVALID,
        choice=["eu"],
        answers={"version": SECRET_ANSWER + "-beta", "replicas": 99, "budget": "lots", "extra": SECRET_ANSWER},
    )

    assert set(error.field_errors) == {"version", "window", "replicas", "budget", "__all__"}
    assert all(SECRET_ANSWER not in message for message in error.field_errors.values())
    event = AuditEvent.objects.get(request=release, action=AuditAction.DECISION_REFUSED)
    assert event.data["code"] == "answers_invalid"
    assert event.data["fields"] == sorted(error.field_errors)
    assert SECRET_ANSWER not in json.dumps(event.data)
    assert SECRET_ANSWER not in caplog.text


def test_json_answers_are_typed_as_sent_and_form_strings_are_not_accepted_as_numbers(people, release):
    refusal(
        release,
        people["alice"],
        services.ANSWERS_INVALID,
        choice=["eu"],
        answers={"version": "v1.0.0", "window": "2026-12-24", "replicas": "3"},
    )
    decide(release, people["alice"], choice=["eu"], answers={"version": "v1.0.0", "window": "2026-12-24"})
    assert Vote.objects.get(request=release).answers == {"version": "v1.0.0", "window": "2026-12-24"}


def test_the_vote_is_audited_with_the_choice_and_the_fields_answered_not_their_values(people, release):
    decide(release, people["alice"], choice=["eu"], answers={"version": SECRET_ANSWER, "window": "2026-12-24"})
    event = AuditEvent.objects.get(request=release, action=AuditAction.APPROVED)
    assert event.data["choice"] == ["eu"]
    assert event.data["answered"] == ["version", "window"]
    assert SECRET_ANSWER not in json.dumps(event.data)


def test_a_request_without_options_takes_approve_or_the_default_ids(people):
    plain = ingest()
    refusal(plain, people["alice"], services.CHOICE_INVALID, choice=["eu"])
    refusal(plain, people["alice"], services.CHOICE_INVALID)  # neither approve nor a choice
    refusal(plain, people["alice"], services.CHOICE_INVALID, choice=["approve"], approve=False)
    refusal(plain, people["alice"], services.ANSWERS_INVALID, approve=True, answers={"x": 1})
    decide(plain, people["alice"], choice=["approve"])
    vote = Vote.objects.get(request=plain)
    assert (vote.approve, vote.choice, vote.answers) == (True, None, None)
    output = payload(plain)[1]["output"]
    assert "choice" not in output and "input" not in output  # today's output, unchanged


def test_a_form_without_options_adds_input_to_todays_approve(people):
    request = ingest(form=FORM)
    decide(request, people["alice"], approve=True, answers={"version": "v2.0.0", "window": "2026-01-31"})
    output = payload(request)[1]["output"]
    assert output["input"] == {"version": "v2.0.0", "window": "2026-01-31"}
    assert "choice" not in output


# ---------------------------------------------------------------------------
# Quorum with options (docs/approver-input.md#quorum-and-options)
# ---------------------------------------------------------------------------
def test_differing_success_choices_do_not_add_up_and_the_first_choice_to_reach_the_quorum_wins(people):
    request = ingest(options=OPTIONS, policy={"required": 2})
    decide(request, people["alice"], choice=["eu"])
    decide(request, people["erin"], choice=["us"])
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING  # one vote each: neither has two

    decide(request, people["frank"], choice=["us"])
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    output = payload(request)[1]["output"]
    assert output["choice"] == "us"
    assert [entry["choice"] for entry in output["approvals"]] == [["eu"], ["us"], ["us"]]


def test_failure_options_count_together_toward_reject_on_and_the_last_names_the_error(people):
    request = ingest(options=OPTIONS, policy={"required": 3, "rejectOn": 2})
    decide(request, people["alice"], choice=["reject"], comment="no")
    decide(request, people["erin"], choice=["postpone"], comment="later")
    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED
    assert payload(request)[1]["error"] == "Release.Postponed"


def test_with_multiple_only_the_same_set_adds_up(people):
    request = ingest(options=OPTIONS, multiple=True, policy={"required": 2})
    decide(request, people["alice"], choice=["eu", "us"])
    decide(request, people["erin"], choice=["eu"])
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    decide(request, people["frank"], choice=["us", "eu"])
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    assert payload(request)[1]["output"]["choice"] == ["eu", "us"]


def test_the_helpers_channels_use_say_which_options_need_input(release):
    from approvals.answers import needs_input

    choices = release.choices()
    assert [option.id for option in choices] == ["eu", "us", "postpone", "reject"]
    assert [needs_input(release.form_schema, option.outcome) for option in choices] == [True, True, False, False]
    assert [option.id for option in ingest().choices()] == ["approve", "reject"]


def test_the_recheck_counts_like_the_decision_a_withdrawn_vote_of_the_winning_choice_is_not_replaced_by_another():
    # services/recheck.py asks quorum_decider whether the votes left after a withdrawal still
    # meet the policy: an approval of another option must not stand in for a withdrawn one.
    from approvals.services.quorum import quorum_decider

    request = ApprovalRequest(required_approvals=2, rejections_to_deny=1)
    eu, us1, us2 = (
        Vote(approve=True, choice=["eu"]),
        Vote(approve=True, choice=["us"]),
        Vote(approve=True, choice=["us"]),
    )
    assert quorum_decider(request, [eu, us1, us2], approve=True) is us2
    assert quorum_decider(request, [eu, us1], approve=True) is None  # us2 withdrawn: reopened, not "2 approvals"
    plain = [Vote(approve=True), Vote(approve=False), Vote(approve=True)]
    assert quorum_decider(request, plain, approve=True) is plain[2]
    assert quorum_decider(request, plain, approve=False) is plain[1]


# ---------------------------------------------------------------------------
# The request page and the confirm page (works without JavaScript: plain POSTs)
# ---------------------------------------------------------------------------
def post(client, url: str, data: dict):
    client.get("/")  # the CSRF cookie, as a browser gets it
    return client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["portal_csrftoken"].value})


@pytest.fixture
def alice_browser(people):
    from tests.support import signed_in

    return signed_in(people["alice"])


def test_the_page_renders_the_options_as_buttons_and_the_form_as_native_inputs(alice_browser, release):
    page = alice_browser.get(f"/requests/{release.public_id}/").content.decode()

    for option in OPTIONS:
        assert f'name="decision" value="{option["id"]}" data-outcome="{option["outcome"]}"' in page
    assert 'type="date" name="answer-window" id="id_answer-window"' in page
    assert 'type="number" name="answer-replicas"' in page and 'step="1"' in page and 'inputmode="numeric"' in page
    assert 'type="number" name="answer-budget"' in page and 'step="any"' in page
    assert 'type="checkbox" name="answer-rollback"' in page
    assert '<label for="id_answer-version">Version <span class="required-mark" aria-hidden="true">*</span>' in page
    assert 'aria-required="true"' in page
    assert "<script>" not in page and " style=" not in page  # CSP: no inline script or style


def test_a_missing_required_answer_comes_back_beside_its_field_and_nothing_is_decided(alice_browser, release):
    response = post(
        alice_browser,
        f"/requests/{release.public_id}/confirm/",
        {"decision": "eu", "answer-version": "1.2", "answer-replicas": "abc"},
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert 'role="alert"' in page
    assert 'id="id_answer-window-error"' in page and "This field is required." in page
    assert 'aria-describedby=" id_answer-version-error" aria-invalid="true"' in page or (
        "id_answer-version-error" in page and 'aria-invalid="true"' in page
    )
    assert 'value="1.2"' in page  # what was typed stays, to be corrected
    assert not Vote.objects.exists()


def test_confirm_shows_the_option_and_the_typed_answers_and_the_decision_goes_through_the_service(
    alice_browser, release
):
    filled = {
        "answer-version": "v1.4.0",
        "answer-window": "2026-12-24",
        "answer-replicas": "4",
        "answer-rollback": "on",
    }
    confirm = post(alice_browser, f"/requests/{release.public_id}/confirm/", {"decision": "us", **filled})
    page = confirm.content.decode()
    assert confirm.status_code == 200, page
    assert '<dd class="chosen">Deploy to US</dd>' in page
    assert "<dt>Replicas</dt><dd>4</dd>" in page and "<dt>Rollback</dt><dd>Yes</dd>" in page
    assert not Vote.objects.exists()

    decided = post(alice_browser, f"/requests/{release.public_id}/decide/", {"decision": "us", **filled})
    assert decided.status_code == 302
    vote = Vote.objects.get(request=release)
    assert vote.choice == ["us"]
    assert vote.answers == {"version": "v1.4.0", "window": "2026-12-24", "replicas": 4, "rollback": True}


def test_a_failure_option_on_the_page_needs_a_comment_but_no_required_answers(alice_browser, release):
    missing = post(alice_browser, f"/requests/{release.public_id}/confirm/", {"decision": "postpone"})
    assert missing.status_code == 400 and "Say why you reject" in missing.content.decode()
    decided = post(
        alice_browser, f"/requests/{release.public_id}/decide/", {"decision": "postpone", "comment": "Freeze"}
    )
    assert decided.status_code == 302
    assert payload(release)[1]["error"] == "Release.Postponed"


@pytest.mark.parametrize(
    "data",
    [
        {"decision": "asia"},
        {"decision": "approve"},  # the default id on a request with its own options
        {"decision": ["eu", "us"]},
        {},
    ],
)
def test_hostile_page_posts_decide_nothing(alice_browser, release, data):
    for step in ("confirm", "decide"):
        response = post(alice_browser, f"/requests/{release.public_id}/{step}/", data)
        assert response.status_code == 400
    assert not Vote.objects.exists()


def test_answers_posted_straight_to_decide_are_checked_again_and_shown_beside_the_fields(alice_browser, release):
    response = post(
        alice_browser,
        f"/requests/{release.public_id}/decide/",
        {"decision": "eu", "answer-version": "v1.0.0", "answer-window": "2026-02-30", "answer-version-x": "1"},
    )
    assert response.status_code == 400
    assert 'id="id_answer-window-error"' in response.content.decode()
    assert not Vote.objects.exists()


def test_with_multiple_the_ticked_success_options_are_one_choice(people):
    from tests.support import signed_in

    request = ingest(options=OPTIONS, multiple=True)
    browser = signed_in(people["alice"])
    page = browser.get(f"/requests/{request.public_id}/").content.decode()
    assert 'type="checkbox" name="choice" value="eu"' in page and "checked" in page  # eu is the default
    none_ticked = post(browser, f"/requests/{request.public_id}/confirm/", {"decision": "__chosen__"})
    assert none_ticked.status_code == 400 and "Tick at least one option." in none_ticked.content.decode()
    decided = post(
        browser, f"/requests/{request.public_id}/decide/", {"decision": "__chosen__", "choice": ["us", "eu"]}
    )
    assert decided.status_code == 302
    assert Vote.objects.get(request=request).choice == ["eu", "us"]


def test_the_page_shows_the_fields_in_the_messages_order_though_jsonb_sorts_keys(alice_browser):
    # PostgreSQL's jsonb stores {"version", "window", ...} as {"window", "version", ...} (shorter keys first).
    form = {
        "type": "object",
        "properties": {"zeta_long_name": {"type": "string"}, "b": {"type": "integer"}, "a": {"type": "boolean"}},
    }
    request = ingest(options=OPTIONS, form=form)
    request.refresh_from_db()
    assert list(request.form["properties"]) == ["zeta_long_name", "b", "a"]
    page = alice_browser.get(f"/requests/{request.public_id}/").content.decode()
    assert page.index('name="answer-zeta_long_name"') < page.index('name="answer-b"') < page.index('name="answer-a"')
    decide(request, make_user("erin2", "release-approvers"), choice=["eu"], answers={"a": True, "zeta_long_name": "z"})
    assert Vote.objects.get(request=request).answers == {"zeta_long_name": "z", "a": True}
