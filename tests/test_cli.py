"""The command line's own behaviour: output, errors, token file, retries — attacked first.

These run `approvals_cli.cli.main` in-process against a real HTTP server on 127.0.0.1: a small
stand-in in this file that answers like the /api/v1 contract (docs/api.md), so the formatting and
refusals can be driven by hostile titles and bodies the real portal would not produce on demand.
Sign-in against the real dev IdP is in test_cli_login.py; the approval against the real API and
worker in test_cli_e2e.py.
"""

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import threading
import unicodedata
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals_cli import api, credentials, device_flow
from approvals_cli.cli import main
from approvals_cli.errors import ExitCode
from approvals_cli.terminal import safe

REPO_DIR = Path(__file__).resolve().parent.parent
TOKEN = "test-access-token-Zx81"  # noqa: S105
REQUEST_ID = "7b0c7f7e-1d0a-4c53-9b62-5d8a3c4b2a10"


class StandIn:
    """A real HTTP server answering from `routes`: (method, path without query) -> list of answers.

    An answer is (status, headers, body bytes); the last answer of a route repeats. Every request
    is recorded as (method, path with query, headers, body).
    """

    def __init__(self):
        self.routes: dict[tuple[str, str], list[tuple[int, dict, bytes]]] = {}
        self.received: list[tuple[str, str, dict, bytes]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stand_in.received.append((self.command, self.path, dict(self.headers), body))
                answers = stand_in.routes.get((self.command, self.path.split("?")[0]))
                if not answers:
                    status, headers, payload = 404, {"Content-Type": "text/plain"}, b"no route"
                else:
                    status, headers, payload = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def json(self, method: str, path: str, document: object, status: int = 200, content_type="application/json"):
        self.routes[(method, path)] = [(status, {"Content-Type": content_type}, json.dumps(document).encode())]

    def reset(self):
        self.routes.clear()
        self.received.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stand_in():
    server = StandIn()
    yield server
    server.close()


@pytest.fixture
def portal(stand_in, monkeypatch, tmp_path):
    """The stand-in as the portal, a token in the environment, a private config dir."""
    stand_in.reset()
    monkeypatch.setenv("APPROVALS_PORTAL_URL", stand_in.url)
    monkeypatch.setenv("APPROVALS_TOKEN", TOKEN)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr(api, "BACKOFF", (0.0, 0.0))  # retries without waiting
    return stand_in


def run(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(list(argv))
        except SystemExit as exit:  # argparse's usage errors
            code = exit.code
    return code, stdout.getvalue(), stderr.getvalue()


def inbox_row(**fields) -> dict:
    return {
        "id": REQUEST_ID,
        "title": "Refund order 1234",
        "status": "pending",
        "requester": "bob@example.com",
        "state_machine": "refunds",
        "created_at": "2026-12-06T09:00:00Z",
        "expires_at": "2026-12-07T09:00:00Z",
        "url": f"/requests/{REQUEST_ID}/",
        **fields,
    }


def terminal_unsafe(text: str) -> list[str]:
    """Characters that would act on a terminal instead of being shown (newline allowed)."""
    return [
        char
        for char in text
        if char != "\n" and unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
    ]


# ---------------------------------------------------------------------------
# People's output and scripts' output
# ---------------------------------------------------------------------------
def test_inbox_is_a_table_for_people_and_the_api_document_for_scripts(portal):
    page = {"results": [inbox_row()], "next": None, "previous": None}
    portal.json("GET", "/api/v1/inbox/", page)

    code, out, err = run("inbox")
    assert (code, err) == (0, "")
    header, row = out.splitlines()
    assert header.split() == ["ID", "STATUS", "TITLE", "REQUESTER", "EXPIRES"]
    assert row.startswith(REQUEST_ID) and "Refund order 1234" in row and "2026-12-07 09:00" in row

    code, out, _ = run("inbox", "--json", "--tab", "decided", "--search", "ref und&x")
    assert code == 0 and json.loads(out) == {"results": [inbox_row()], "next": None}
    method, path, headers, _ = portal.received[-1]
    assert (method, path) == ("GET", "/api/v1/inbox/?tab=decided&q=ref+und%26x")
    assert headers["Authorization"] == f"Bearer {TOKEN}"


def test_inbox_follows_next_links_only_with_all_and_only_on_the_portal(portal):
    first = {"results": [inbox_row(title="one")], "next": f"{portal.url}/api/v1/inbox/?cursor=abc"}
    portal.routes[("GET", "/api/v1/inbox/")] = [
        (200, {"Content-Type": "application/json"}, json.dumps(first).encode()),
        (200, {"Content-Type": "application/json"}, json.dumps({"results": [inbox_row(title="two")]}).encode()),
    ]
    code, out, _ = run("inbox", "--all", "--json")
    assert code == 0 and [row["title"] for row in json.loads(out)["results"]] == ["one", "two"]

    portal.json("GET", "/api/v1/inbox/", {"results": [], "next": "https://elsewhere.example/api/v1/inbox/?c=1"})
    code, _, err = run("inbox", "--all")
    assert code == ExitCode.ERROR and "another site" in err
    assert not any("elsewhere" in path for _, path, _, _ in portal.received)


def test_show_prints_the_request_with_votes_conversation_and_details(portal):
    request = {
        **inbox_row(),
        "details": {"amount": 12, "note": "line one\nline two"},
        "policy": {"kind": "quorum", "required": 2},
        "votes": [{"user": "alice@example.com", "decision": "approve", "comment": "ok"}],
        "conversation": [{"author": "alice@example.com", "text": "Why?"}],
        "callback": {"status": "pending"},
        "may_decide": True,
    }
    portal.json("GET", f"/api/v1/requests/{REQUEST_ID}/", request)
    code, out, _ = run("show", REQUEST_ID)
    assert code == 0
    assert "Title:          Refund order 1234" in out
    assert "You may decide: yes" in out
    assert "  - user: alice@example.com, decision: approve, comment: ok" in out
    assert '"note": "line one\\nline two"' in out
    code, out, _ = run("show", REQUEST_ID, "--json")
    assert json.loads(out) == request


def test_approve_and_reject_send_the_decision_and_its_extras(portal):
    answer = {"request": {**inbox_row(status="approved")}, "vote": {"decision": "approve"}}
    portal.json("POST", f"/api/v1/requests/{REQUEST_ID}/decision/", answer, status=201)

    code, out, _ = run("approve", REQUEST_ID, "--comment", "fine", "--option", "ship", "--answers", '{"n": 1}')
    assert code == 0 and out == f"Approved {REQUEST_ID} (Refund order 1234); status: approved.\n"
    _, _, headers, body = portal.received[-1]
    # `choice`, the API's name (an unknown `option` member would be refused, never ignored).
    assert json.loads(body) == {"decision": "approve", "comment": "fine", "choice": ["ship"], "answers": {"n": 1}}
    uuid.UUID(headers["Idempotency-Key"])

    code, _, _ = run("reject", REQUEST_ID, "--comment", "no")
    assert code == 0 and json.loads(portal.received[-1][3]) == {"decision": "reject", "comment": "no"}


@pytest.mark.parametrize(
    "argv",
    [
        ["reject", REQUEST_ID],  # a rejection needs its reason
        ["approve", REQUEST_ID, "--answers", "[1, 2]"],
        ["approve", REQUEST_ID, "--answers", "not json"],
        ["cancel", REQUEST_ID],
        ["reassign", REQUEST_ID, "--reason", "holiday"],  # nobody to give it to
        ["inbox", "--tab", "everything"],
    ],
)
def test_bad_command_lines_exit_2_without_calling_the_portal(portal, argv):
    code, _, _ = run(*argv)
    assert code == ExitCode.USAGE
    assert portal.received == []


def test_admin_reassign_and_cancel_send_their_reasons(portal):
    portal.json("POST", f"/api/v1/requests/{REQUEST_ID}/reassign/", inbox_row())
    portal.json("POST", f"/api/v1/requests/{REQUEST_ID}/cancel/", inbox_row(status="cancelled"))
    code, out, _ = run("reassign", REQUEST_ID, "--user", "carol@example.com", "--group", "ops", "--reason", "leave")
    assert code == 0 and out.startswith(f"Reassigned {REQUEST_ID}")
    assert json.loads(portal.received[-1][3]) == {"users": ["carol@example.com"], "groups": ["ops"], "reason": "leave"}
    code, out, _ = run("cancel", REQUEST_ID, "--reason", "obsolete")
    assert code == 0 and out.endswith("status: cancelled.\n")
    assert json.loads(portal.received[-1][3]) == {"reason": "obsolete"}


# ---------------------------------------------------------------------------
# Errors: one line, an exit code per kind
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (401, "invalid_token", ExitCode.NOT_SIGNED_IN),
        (403, "not_an_approver", ExitCode.FORBIDDEN),
        (403, "requester_cannot_decide", ExitCode.FORBIDDEN),
        (404, "not_found", ExitCode.NOT_FOUND),
        (409, "already_decided", ExitCode.CONFLICT),
        (422, "validation_error", ExitCode.INVALID),
        (400, "validation_error", ExitCode.INVALID),
        (429, "throttled", ExitCode.THROTTLED),
        (500, "server_error", ExitCode.ERROR),
    ],
)
def test_a_problem_is_one_line_with_its_code_and_an_exit_code_per_kind(portal, status, code, exit_code):
    problem = {"type": f"urn:approvals:problem:{code}", "title": "Refused", "status": status, "detail": "Because."}
    portal.json("POST", f"/api/v1/requests/{REQUEST_ID}/decision/", problem, status, "application/problem+json")
    result, out, err = run("approve", REQUEST_ID)
    assert result == exit_code
    assert out == ""
    assert err == f"approvals: Refused: Because. [{code}, HTTP {status}]\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    status=st.sampled_from([400, 401, 403, 404, 409, 418, 422, 429, 500, 502, 503]),
    body=st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=500).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=300),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
        st.fixed_dictionaries(
            {"type": st.text(max_size=80), "title": st.text(max_size=300), "detail": st.text(max_size=3000)}
        ).map(lambda value: json.dumps(value).encode()),
    ),
    content_type=st.sampled_from(["application/problem+json", "application/json", "text/html", "text/plain"]),
)
def test_any_error_body_becomes_one_safe_line_and_a_nonzero_exit(portal, status, body, content_type):
    portal.reset()
    portal.routes[("GET", f"/api/v1/requests/{REQUEST_ID}/")] = [(status, {"Content-Type": content_type}, body)]
    code, out, err = run("show", REQUEST_ID)
    assert code != 0 and out == ""
    assert err.startswith("approvals: ") and err.endswith("\n") and err.count("\n") == 1
    assert terminal_unsafe(err) == []
    assert len(err) < 600


def test_a_success_without_json_or_a_redirect_is_an_error_and_the_token_stays_home(portal):
    other = StandIn()
    try:
        other.json("GET", "/api/v1/inbox/", {"results": []})
        portal.routes[("GET", "/api/v1/inbox/")] = [(302, {"Location": f"{other.url}/api/v1/inbox/"}, b"")]
        code, _, err = run("inbox")
        assert code == ExitCode.ERROR and "redirected" in err
        assert other.received == []  # never followed: the token would have gone with it

        portal.routes[("GET", "/api/v1/inbox/")] = [(200, {"Content-Type": "text/html"}, b"<html>sign in</html>")]
        code, _, err = run("inbox")
        assert code == ExitCode.ERROR and "without JSON" in err
    finally:
        other.close()


def test_an_unreachable_portal_exits_9(portal, monkeypatch):
    monkeypatch.setenv("APPROVALS_PORTAL_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    code, _, err = run("inbox")
    assert code == ExitCode.UNREACHABLE and "cannot reach the portal" in err


def test_a_token_is_never_sent_over_plain_http_to_another_host(portal):
    code, _, err = run("--portal", "http://portal.example.com", "inbox")
    assert code == ExitCode.USAGE and "use https" in err


def test_the_token_is_never_printed(portal):
    portal.json("GET", "/api/v1/inbox/", {"results": [inbox_row()]})
    portal.json("GET", f"/api/v1/requests/{REQUEST_ID}/", {"type": "x", "title": "t"}, 500)
    outputs = [run("inbox"), run("inbox", "--json"), run("show", REQUEST_ID), run("logout")]
    assert all(TOKEN not in out + err for _, out, err in outputs)
    assert TOKEN not in repr(api.PortalClient(portal.url, TOKEN))
    assert TOKEN not in repr(credentials.load_token(portal.url))


# ---------------------------------------------------------------------------
# Hostile titles: data, never terminal control
# ---------------------------------------------------------------------------
hostile_text = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            ["\x1b[2J", "\x1b]0;pwned\x07", "\x9b31m", "\r", "\x08", "\u202e", "\u2066", "\u200b", "\u2028", "\x00",
             "ok", "承認", "e\u0301", "👍🏽", "\t", "\n"]
        ),
        max_size=20,
    ).map("".join),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=hostile_text, requester=hostile_text, detail=hostile_text)
def test_hostile_titles_never_reach_the_terminal_raw(portal, title, requester, detail):
    portal.reset()
    row = inbox_row(title=title, requester=requester, status=detail)
    portal.json("GET", "/api/v1/inbox/", {"results": [row]})
    request = {**row, "details": {detail: [title]}, "votes": [{"comment": detail}], "conversation": [detail]}
    portal.json("GET", f"/api/v1/requests/{REQUEST_ID}/", request)

    code, table_out, _ = run("inbox")
    assert code == 0 and terminal_unsafe(table_out) == []
    assert len(table_out.splitlines()) == 2  # one line per request, whatever the title holds
    code, show_out, _ = run("show", REQUEST_ID)
    assert code == 0 and terminal_unsafe(show_out) == []
    assert safe(title) in show_out  # shown, escaped, not dropped

    code, json_out, _ = run("show", REQUEST_ID, "--json")
    assert code == 0 and json_out.isascii() and json.loads(json_out) == request


@given(text=st.text())
def test_safe_escapes_every_control_and_format_character_and_keeps_the_rest(text):
    shown = safe(text)
    assert terminal_unsafe(shown.replace("\n", "")) == [] and "\n" not in shown
    printable = [char for char in text if not terminal_unsafe(char) and char != "\n"]
    assert all(char in shown for char in printable)


# ---------------------------------------------------------------------------
# The token file
# ---------------------------------------------------------------------------
@pytest.fixture
def token_file(portal, monkeypatch, tmp_path):
    monkeypatch.delenv("APPROVALS_TOKEN")
    path = credentials.save_token(portal.url, access_token=TOKEN, expires_in=3600, issuer="https://idp.test")
    return path


def test_the_token_file_is_user_only_whatever_the_umask(token_file, portal):
    old = os.umask(0)
    try:
        path = credentials.save_token(portal.url, access_token=TOKEN, expires_in=3600, issuer="https://idp.test")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    portal.json("GET", "/api/v1/inbox/", {"results": []})
    assert run("inbox")[0] == 0
    assert portal.received[-1][2]["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602], ids=lambda mode: f"{mode:04o}")
def test_a_token_file_others_can_read_or_write_is_refused(token_file, portal, mode):
    token_file.chmod(mode)
    code, out, err = run("inbox")
    assert code == ExitCode.UNSAFE_CREDENTIALS
    assert "refusing" in err and f"{mode:04o}" in err and TOKEN not in out + err
    assert portal.received == []  # the token was not used


def test_a_symlinked_token_file_is_refused(token_file, portal, tmp_path):
    target = tmp_path / "elsewhere.json"
    token_file.rename(target)
    token_file.symlink_to(target)
    code, _, err = run("inbox")
    assert code == ExitCode.UNSAFE_CREDENTIALS and portal.received == []


def test_a_token_is_only_sent_to_the_portal_it_was_obtained_for(token_file, portal, monkeypatch):
    monkeypatch.setenv("APPROVALS_PORTAL_URL", "http://localhost:1")
    code, _, err = run("inbox")
    assert code == ExitCode.NOT_SIGNED_IN and "not signed in to http://localhost:1" in err


def test_an_expired_token_asks_for_login_and_logout_removes_it(token_file, portal):
    credentials.save_token(portal.url, access_token=TOKEN, expires_in=-1, issuer="https://idp.test")
    # expires_in <= 0 means "unknown": stored without an expiry, so still used.
    portal.json("GET", "/api/v1/inbox/", {"results": []})
    assert run("inbox")[0] == 0
    document = json.loads(token_file.read_text())
    document["portals"][portal.url]["expires_at"] = 1.0
    token_file.write_text(json.dumps(document))
    code, _, err = run("inbox")
    assert code == ExitCode.NOT_SIGNED_IN and "expired" in err

    assert run("logout") == (0, f"Signed out of {portal.url}: the token is removed from {token_file}.\n", "")
    assert TOKEN not in token_file.read_text()
    assert run("inbox")[0] == ExitCode.NOT_SIGNED_IN


# ---------------------------------------------------------------------------
# Retries and idempotency
# ---------------------------------------------------------------------------
def test_a_decision_retried_after_a_bad_gateway_reuses_its_idempotency_key(portal):
    answer = {"request": inbox_row(status="approved"), "vote": {}}
    portal.routes[("POST", f"/api/v1/requests/{REQUEST_ID}/decision/")] = [
        (503, {"Content-Type": "text/html"}, b"<h1>unavailable</h1>"),
        (502, {"Content-Type": "text/html"}, b"<h1>bad gateway</h1>"),
        (201, {"Content-Type": "application/json"}, json.dumps(answer).encode()),
    ]
    code, _, _ = run("approve", REQUEST_ID)
    assert code == 0
    keys = [headers["Idempotency-Key"] for _, _, headers, _ in portal.received]
    assert len(keys) == 3 and len(set(keys)) == 1

    code, _, _ = run("approve", REQUEST_ID)  # a new invocation is a new decision attempt
    assert portal.received[-1][2]["Idempotency-Key"] not in keys


def test_a_decision_gives_up_after_three_attempts(portal):
    portal.routes[("POST", f"/api/v1/requests/{REQUEST_ID}/decision/")] = [(503, {}, b"")]
    code, _, err = run("approve", REQUEST_ID)
    assert code == ExitCode.ERROR and "HTTP 503" in err
    assert len(portal.received) == 3


def test_admin_actions_are_not_retried(portal):
    portal.routes[("POST", f"/api/v1/requests/{REQUEST_ID}/cancel/")] = [(503, {}, b"")]
    assert run("cancel", REQUEST_ID, "--reason", "x")[0] == ExitCode.ERROR
    assert len(portal.received) == 1


# ---------------------------------------------------------------------------
# Device flow polling: what the dev IdP can't be made to say on demand (slow_down, 5xx)
# ---------------------------------------------------------------------------
def test_polling_slows_down_when_asked_and_stops_at_expiry(stand_in):
    stand_in.reset()
    idp = device_flow.IdP(stand_in.url, f"{stand_in.url}/device", f"{stand_in.url}/token", None)
    grant = device_flow.DeviceAuthorization("dc", "UC", f"{stand_in.url}/device", None, interval=2, expires_in=100)

    def answer(status, document):
        return (status, {"Content-Type": "application/json"}, json.dumps(document).encode())

    stand_in.routes[("POST", "/token")] = [
        answer(400, {"error": "authorization_pending"}),
        answer(400, {"error": "slow_down"}),
        answer(503, {}),
        answer(400, {"error": "authorization_pending"}),
        answer(200, {"access_token": "t", "expires_in": 60}),
    ]
    waits: list[float] = []
    now = [0.0]

    def sleep(seconds):  # the clock the poller sees advances by what it waits: no real waiting
        waits.append(seconds)
        now[0] += seconds

    session = requests.Session()
    token = device_flow.poll(session, idp, grant, client_id="approvals-cli", sleep=sleep, clock=lambda: now[0])
    assert token["access_token"] == "t"
    assert waits == [2, 2, 7, 14, 14]  # +5 after slow_down (RFC 8628 3.5), doubled after a 5xx

    stand_in.routes[("POST", "/token")] = [answer(400, {"error": "authorization_pending"})]
    waits.clear()
    with pytest.raises(device_flow.CLIError) as error:
        device_flow.poll(session, idp, grant, client_id="approvals-cli", sleep=sleep, clock=lambda: now[0])
    assert error.value.exit_code == ExitCode.NOT_SIGNED_IN and "expired" in error.value.message
    assert sum(waits) <= 102


# ---------------------------------------------------------------------------
# Packaging: a standalone client
# ---------------------------------------------------------------------------
def test_the_command_line_needs_neither_django_nor_the_portals_code(tmp_path):
    code = (
        "import sys, approvals_cli.cli; "
        "ours = ('django', 'approvals', 'portal', 'worker', 'devidp'); "
        "loaded = [m for m in sys.modules if m.split('.')[0] in ours]; "
        "print(loaded)"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_DIR, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_scripts_wrapper_runs_it_from_anywhere(tmp_path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("APPROVALS_TOKEN", None)
    result = subprocess.run(
        [str(REPO_DIR / "scripts" / "approvals"), "inbox", "--portal", "http://127.0.0.1:1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == ExitCode.NOT_SIGNED_IN
    assert (
        result.stderr
        == "approvals: not signed in to http://127.0.0.1:1: run `approvals login` (or set APPROVALS_TOKEN)\n"
    )


@pytest.mark.parametrize("after", ["\nsecond-line-Qw93", "\r\nsecond-line-Qw93", "\u2019second-line-Qw93"])
def test_a_token_no_header_can_carry_is_refused_in_one_line_that_never_shows_it(tmp_path, after):
    # A real process, as in CI: an uncaught error prints a traceback, and requests' InvalidHeader
    # quotes the whole "Bearer <token>" header value in it.
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "APPROVALS_TOKEN": TOKEN + after}
    result = subprocess.run(
        [str(REPO_DIR / "scripts" / "approvals"), "inbox", "--portal", "http://127.0.0.1:1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert TOKEN not in output and "second-line" not in output and "Qw93" not in output
    assert "Traceback" not in output
    assert result.returncode == ExitCode.NOT_SIGNED_IN
    assert result.stderr.count("\n") == 1 and "APPROVALS_TOKEN" in result.stderr


def test_logout_is_the_way_out_of_an_unsafe_token_file(token_file, portal, tmp_path):
    token_file.chmod(0o644)
    assert run("inbox")[0] == ExitCode.UNSAFE_CREDENTIALS
    code, out, _ = run("logout")
    assert code == 0 and out.startswith(f"Signed out of {portal.url}")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and TOKEN not in token_file.read_text()

    token_file.unlink()
    token_file.symlink_to(tmp_path / "somewhere-else.json")
    assert run("logout")[0] == 0 and not token_file.exists() and not token_file.is_symlink()


def test_login_refuses_an_unsafe_token_file_before_the_person_signs_in(token_file, portal):
    token_file.chmod(0o604)
    code, out, err = run("login", "--issuer", portal.url)
    assert code == ExitCode.UNSAFE_CREDENTIALS and out == ""
    assert portal.received == []  # not even the IdP's discovery document was asked for


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(search=st.text(min_size=1, max_size=300).filter(str.strip), request_id=st.text(max_size=60))
def test_any_search_reaches_the_portal_intact_and_a_non_uuid_id_never_leaves(portal, search, request_id):
    from urllib.parse import parse_qs, urlsplit

    portal.reset()
    portal.json("GET", "/api/v1/inbox/", {"results": []})
    code, _, _ = run("inbox", "--search", search)
    assert code == 0
    _, path, _, _ = portal.received[-1]
    assert urlsplit(path).path == "/api/v1/inbox/"
    assert parse_qs(urlsplit(path).query, keep_blank_values=True)["q"] == [search]

    portal.reset()
    try:
        uuid.UUID(request_id.strip())
    except ValueError:
        code, out, err = run("show", request_id)
        assert code == ExitCode.USAGE and portal.received == []
