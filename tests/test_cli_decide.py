"""`approvals decide`: a request's option(s) and its form's answers, sent as the API's `choice` and
`answers`; `show` lists the options and the form. Against the local stand-in of tests/test_cli.py."""

import json

import pytest

from tests import test_cli as cli_tests
from tests.test_cli import REQUEST_ID, inbox_row, run

stand_in = cli_tests.stand_in
portal = cli_tests.portal

DECISION = f"/api/v1/requests/{REQUEST_ID}/decision/"


def test_decide_sends_the_options_and_typed_answers(portal, tmp_path):
    portal.json("POST", DECISION, {"request": inbox_row(status="approved"), "vote": {"choice": ["eu"]}}, status=201)
    answers = tmp_path / "answers.json"
    answers.write_text('{"version": "v1", "replicas": 2, "note": "from file"}', encoding="utf-8")

    code, out, _ = run(
        "decide", REQUEST_ID, "--option", "eu", "--answers-json", str(answers),
        "--answer", "version=v2", "--answer", "replicas:=3", "--answer", "rollback:=true", "--answer", "url=http:=x",
    )  # fmt: skip

    assert code == 0 and out == f"Decided {REQUEST_ID} (Refund order 1234); status: approved.\n"
    body = json.loads(portal.received[-1][3])
    assert body == {
        "choice": ["eu"],
        "answers": {"version": "v2", "replicas": 3, "note": "from file", "rollback": True, "url": "http:=x"},
    }


def test_decide_with_several_options_and_a_reason(portal):
    portal.json("POST", DECISION, {"request": inbox_row(status="rejected"), "vote": None}, status=201)

    code, _, _ = run("decide", REQUEST_ID, "--option", "eu", "--option", "us", "--comment", "both")

    assert code == 0
    assert json.loads(portal.received[-1][3]) == {"choice": ["eu", "us"], "comment": "both"}


def test_answers_invalid_exits_7_with_the_problem_on_one_line(portal):
    problem = {
        "type": "urn:approvals:problem:answers_invalid",
        "title": "The answers do not fit the request's form",
        "status": 422,
        "detail": "Some answers are not valid.",
        "code": "answers_invalid",
        "errors": {"answers.replicas": ["Must be a whole number."]},
    }
    portal.json("POST", DECISION, problem, status=422, content_type="application/problem+json")

    code, _, err = run("decide", REQUEST_ID, "--option", "eu", "--answer", "replicas=three")

    assert code == 7
    assert "answers_invalid" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["decide", REQUEST_ID],  # no --option
        ["decide", REQUEST_ID, "--option", "eu", "--answer", "novalue"],
        ["decide", REQUEST_ID, "--option", "eu", "--answer", "=x"],
        ["decide", REQUEST_ID, "--option", "eu", "--answer", "n:=not json"],
        ["decide", REQUEST_ID, "--option", "eu", "--answers", "{}", "--answers-json", "-"],
        ["decide", REQUEST_ID, "--option", "eu", "--answers-json", "/nonexistent/answers.json"],
    ],
)
def test_bad_decide_command_lines_exit_2_without_calling_the_portal(portal, argv):
    code, _, _ = run(*argv)

    assert code == 2
    assert portal.received == []


def test_show_lists_the_options_and_the_form(portal):
    request = inbox_row(
        options=[
            {"id": "eu", "label": "Deploy to EU", "outcome": "success"},
            {"id": "no", "label": "No", "outcome": "failure", "error": "ApprovalDenied"},
        ],
        multiple=False,
        form={
            "type": "object",
            "required": ["version"],
            "properties": {
                "version": {"type": "string", "title": "Version"},
                "at": {"type": "string", "format": "date"},
            },
        },
        votes=[{"by": "erin@example.com", "decision": "approve", "choice": ["eu"], "answers": {"version": "v1"}}],
    )
    portal.json("GET", f"/api/v1/requests/{REQUEST_ID}/", request)

    code, out, _ = run("show", REQUEST_ID)

    assert code == 0
    assert "  - id: eu, label: Deploy to EU, outcome: success" in out
    assert "  - version (string, required): Version" in out
    assert "  - at (string/date)" in out
    assert 'choice: ["eu"], answers: {"version": "v1"}' in out


def test_a_text_value_starting_with_a_dash_is_a_value_not_an_option(portal):
    portal.json("GET", "/api/v1/inbox/", {"results": []})
    portal.json("POST", DECISION, {"request": inbox_row(status="rejected"), "vote": None}, status=201)

    assert run("inbox", "--search", "-:")[0] == 0
    assert portal.received[-1][1].endswith("q=-%3A")
    code, _, _ = run("decide", REQUEST_ID, "--option", "no", "--comment", "-1 for this week", "--answer", "-x=1")

    assert code == 0
    assert json.loads(portal.received[-1][3]) == {
        "choice": ["no"],
        "comment": "-1 for this week",
        "answers": {"-x": "1"},
    }
    assert run("approve", REQUEST_ID, "--comment", "--json")[0] == 2  # an option of the command stays one
