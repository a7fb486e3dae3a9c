"""`approvals` — the command line: argument parsing, the commands, and what they print.

Exit codes are listed in `approvals_cli.errors.ExitCode` and docs/api.md#exit-codes.
"""

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import requests

from approvals_cli import credentials, device_flow
from approvals_cli.api import PortalClient, check_portal_url
from approvals_cli.errors import CLIError, ExitCode
from approvals_cli.terminal import as_json, safe, table, truncate

DEFAULT_PORTAL = "http://127.0.0.1:8000"  # `make run`'s portal
DEFAULT_CLIENT_ID = "approvals-cli"
DEFAULT_SCOPE = "openid email profile groups"
TABS = ("waiting", "decided", "requested")


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------
def _answers(text: str) -> dict:
    """--answers: a JSON object, or @file holding one."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as error:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {error.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"amount\": 12}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"amount\": 12}'")
    return value


def _answer_pair(text: str) -> tuple[str, object]:
    """--answer: `name=text` (a string) or `name:=json` (a number, true/false, …); the first `=` splits."""
    at = text.find("=")
    typed = at > 0 and text[at - 1] == ":"
    name, value = (text[: at - 1] if typed else text[:at]), text[at + 1 :]
    if at < 0:
        raise argparse.ArgumentTypeError("must be name=text or name:=json, e.g. version=v1.2 or replicas:=3")
    if not name:
        raise argparse.ArgumentTypeError("the field's name is missing (name=text or name:=json)")
    if not typed:
        return name, value
    try:
        return name, json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}:= must be followed by JSON, e.g. replicas:=3") from None


def _answers_json(text: str) -> dict:
    """--answers-json: a file holding a JSON object, or - for standard input."""
    if text == "-":
        return _answers(sys.stdin.read())
    return _answers("@" + text)


def _request_id(text: str) -> str:
    """A request's id: the UUID in its page's URL (/requests/<id>/)."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError("not a request id (the UUID in the request's URL)") from None


def build_parser() -> argparse.ArgumentParser:
    # The common options work before or after the command (`approvals --json inbox`, `approvals inbox --json`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--portal", default=argparse.SUPPRESS, metavar="URL",
        help=f"the portal's URL (default: $APPROVALS_PORTAL_URL, else {DEFAULT_PORTAL})",
    )  # fmt: skip
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")

    parser = argparse.ArgumentParser(
        prog="approvals",
        description="Approve and administer approval requests from the command line.",
        epilog="Exit codes: 0 ok, 1 portal error, 2 usage, 3 not signed in, 4 forbidden, 5 not found, "
        "6 conflict, 7 invalid input, 8 throttled, 9 unreachable, 10 unsafe token file (docs/api.md#cli).",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", parents=[common], help="sign in with your browser (device code)")
    login.add_argument("--issuer", help="the IdP's issuer URL (default: $APPROVALS_ISSUER, else the portal's metadata)")
    login.add_argument("--client-id", help=f"OAuth client (default: $APPROVALS_CLIENT_ID, else {DEFAULT_CLIENT_ID})")
    login.add_argument("--scope", default=DEFAULT_SCOPE, help=argparse.SUPPRESS)
    commands.add_parser("logout", parents=[common], help="forget the stored token for this portal")

    inbox = commands.add_parser("inbox", parents=[common], help="list requests")
    inbox.add_argument("--tab", choices=TABS, default="waiting")
    inbox.add_argument("--search", metavar="TEXT")
    inbox.add_argument("--all", action="store_true", help="follow every page")

    show = commands.add_parser("show", parents=[common], help="one request in full")
    show.add_argument("id", type=_request_id)

    for name, verb in (("approve", "approve"), ("reject", "reject")):
        decide = commands.add_parser(name, parents=[common], help=f"{verb} a request")
        decide.add_argument("id", type=_request_id)
        decide.add_argument("--comment", required=name == "reject", help="required to reject")
        _choice_arguments(decide)

    decide = commands.add_parser(
        "decide", parents=[common], help="choose a request's option(s) and answer its form (see `show`)"
    )
    decide.add_argument("id", type=_request_id)
    decide.add_argument("--comment", help="required for a failure option (its reason)")
    _choice_arguments(decide, required=True)

    reassign = commands.add_parser("reassign", parents=[common], help="(admin) give a request to other approvers")
    reassign.add_argument("id", type=_request_id)
    reassign.add_argument("--user", action="append", default=[], metavar="EMAIL", help="repeatable")
    reassign.add_argument("--group", action="append", default=[], metavar="NAME", help="repeatable")
    reassign.add_argument("--reason", required=True)

    cancel = commands.add_parser("cancel", parents=[common], help="(admin) cancel a request")
    cancel.add_argument("id", type=_request_id)
    cancel.add_argument("--reason", required=True)
    return parser


def _choice_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "--option", action="append", required=required, metavar="ID",
        help="the option chosen (its id, as `show` lists them); repeat it where the request allows several",
    )  # fmt: skip
    parser.add_argument(
        "--answer", action="append", type=_answer_pair, default=[], metavar="NAME=TEXT|NAME:=JSON",
        help="one answer to the request's form; repeatable (NAME:=JSON for numbers and true/false)",
    )  # fmt: skip
    answers = parser.add_mutually_exclusive_group()
    answers.add_argument("--answers", type=_answers, metavar="JSON|@FILE", help="all answers as one JSON object")
    answers.add_argument("--answers-json", metavar="FILE|-", help="the same, from a file or - for standard input")


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------
def _out(text: str = "") -> None:
    print(text, flush=True)


def _scalar(value: object) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "" if value is None else str(value)


def _describe(item: object) -> str:
    """One line for a vote, a message or a policy: its scalar fields, in the portal's order."""
    if not isinstance(item, dict):
        return safe(_scalar(item))
    return safe(", ".join(f"{key}: {_scalar(value)}" for key, value in item.items() if value not in (None, "", [], {})))


def _short_time(value: object) -> str:
    text = _scalar(value)
    return text[:16].replace("T", " ") if len(text) >= 16 and text[10:11] == "T" else text


def print_inbox(page: dict, tab: str) -> None:
    results = [row for row in page.get("results") or [] if isinstance(row, dict)]
    if not results:
        _out(f"No requests in {tab}.")
        return
    rows = [
        [row.get("id"), row.get("status"), row.get("title"), row.get("requester"), _short_time(row.get("expires_at"))]
        for row in results
    ]
    _out(table(["ID", "STATUS", "TITLE", "REQUESTER", "EXPIRES"], rows, max_widths={1: 16, 2: 50, 3: 28}))
    if page.get("next"):
        _out("(more: add --all)")


def print_request(request: dict) -> None:
    fields = [
        ("Title", request.get("title")),
        ("ID", request.get("id")),
        # The portal's words (status_text: "Closed by Step Functions" is not "Expired in the
        # portal", both `expired`); the machine value from a portal that has none.
        ("Status", request.get("status_text") or request.get("status")),
        ("Requester", request.get("requester")),
        ("State machine", request.get("state_machine")),
        ("Created", _short_time(request.get("created_at"))),
        ("Expires", _short_time(request.get("expires_at"))),
    ]
    if "may_decide" in request:
        fields.append(("You may decide", "yes" if request.get("may_decide") else "no"))
    callback = request.get("callback")
    if isinstance(callback, dict) and callback.get("status"):
        # "delivery uncertain: an admin must check the execution" is not "failed".
        fields.append(("Step Functions", callback.get("text") or callback.get("status")))
    for label, value in fields:
        if value not in (None, ""):
            _out(f"{label + ':':<16}{safe(value)}")
    policy = request.get("policy")
    if policy:
        _out(f"{'Policy:':<16}{_describe(policy)}")
    if request.get("multiple"):
        _out(f"{'Several options:':<16}yes")
    form = request.get("form")
    fields = form.get("properties") if isinstance(form, dict) else None
    if isinstance(fields, dict) and fields:
        required = form.get("required") if isinstance(form.get("required"), list) else []
        _out("Form (answer with --answer NAME=TEXT or NAME:=JSON):")
        for name, field in fields.items():
            field = field if isinstance(field, dict) else {}
            kind = "/".join(str(part) for part in (field.get("type"), field.get("format")) if part)
            flags = f"{kind}, required" if name in required else kind
            title = f": {field['title']}" if field.get("title") else ""
            _out(f"  - {safe(name)} ({safe(flags)}){safe(title)}")
    for label, key in (("Votes", "votes"), ("Conversation", "conversation"), ("Options", "options")):
        items = request.get(key)
        if isinstance(items, list) and items:
            _out(f"{label}:")
            for item in items:
                _out(f"  - {_describe(item)}")
    details = request.get("details")
    if details not in (None, "", {}, []):
        _out("Details:")
        rendered = json.dumps(details, indent=2, ensure_ascii=False, sort_keys=False)
        for line in safe(rendered, multiline=True).splitlines():
            _out(f"  {line}")


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------
def _portal(args: argparse.Namespace) -> str:
    return check_portal_url(getattr(args, "portal", None) or os.environ.get("APPROVALS_PORTAL_URL") or DEFAULT_PORTAL)


def _client(args: argparse.Namespace) -> PortalClient:
    portal = _portal(args)
    return PortalClient(portal, credentials.load_token(portal).access_token)


def _issuer_of(portal: str, session: requests.Session) -> str:
    """The IdP that issues the portal's tokens, from its protected resource metadata (RFC 9728)."""
    try:
        response = session.get(
            f"{portal}/.well-known/oauth-protected-resource", timeout=device_flow.TIMEOUT, allow_redirects=False
        )
        servers = response.json().get("authorization_servers") if response.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        servers = None
    if isinstance(servers, list) and servers and isinstance(servers[0], str):
        return servers[0]
    raise CLIError(
        "which identity provider? pass --issuer URL or set APPROVALS_ISSUER (the portal's OIDC_OP_ISSUER)",
        ExitCode.USAGE,
    )


def cmd_login(args: argparse.Namespace) -> None:
    portal = _portal(args)
    credentials.check_usable()
    session = requests.Session()
    session.trust_env = False
    issuer = args.issuer or os.environ.get("APPROVALS_ISSUER") or _issuer_of(portal, session)
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CLIError(f"not an issuer URL: {truncate(safe(issuer), 120)}", ExitCode.USAGE)
    client_id = args.client_id or os.environ.get("APPROVALS_CLIENT_ID") or DEFAULT_CLIENT_ID
    idp = device_flow.discover(session, issuer)
    authorization = device_flow.start(session, idp, client_id=client_id, scope=args.scope)
    _out(f"To sign in, open {safe(authorization.verification_uri)}")
    _out(f"and enter the code: {safe(authorization.user_code)}")
    if authorization.verification_uri_complete:
        _out(f"(or open {safe(authorization.verification_uri_complete)})")
    _out("Waiting for you to allow it in the browser (Ctrl-C to stop)...")
    token = device_flow.poll(session, idp, authorization, client_id=client_id)
    path = credentials.save_token(
        portal, access_token=token["access_token"], expires_in=token.get("expires_in"), issuer=idp.issuer
    )
    name = device_flow.who(session, idp, token["access_token"])
    as_whom = f" as {safe(name)}" if name else ""
    _out(f"Signed in to {portal}{as_whom}. The token is in {path} (only you can read it).")


def cmd_logout(args: argparse.Namespace) -> None:
    portal = _portal(args)
    if credentials.forget_token(portal):
        _out(f"Signed out of {portal}: the token is removed from {credentials.credentials_path()}.")
    else:
        _out(f"Not signed in to {portal}.")
    if os.environ.get(credentials.TOKEN_ENV):
        _out(f"Note: {credentials.TOKEN_ENV} is set in your environment and is still used.")


def cmd_inbox(args: argparse.Namespace) -> None:
    page = _client(args).inbox(tab=args.tab, search=args.search, all_pages=args.all)
    if args.json:
        _out(as_json(page))
    else:
        print_inbox(page, args.tab)


def cmd_show(args: argparse.Namespace) -> None:
    request = _client(args).request(args.id)
    if args.json:
        _out(as_json(request))
    else:
        print_request(request)


def _summary(verb: str, request: object, request_id: str) -> str:
    request = request if isinstance(request, dict) else {}
    title = truncate(safe(request.get("title") or ""), 80)
    status = safe(request.get("status") or "")
    return f"{verb} {safe(request.get('id') or request_id)}{f' ({title})' if title else ''}" + (
        f"; status: {status}." if status else "."
    )


def _collected_answers(args: argparse.Namespace) -> dict | None:
    """--answers / --answers-json, then each --answer on top; None when none was given."""
    answers = args.answers
    if args.answers_json is not None:  # read only now: argparse has refused a bad command line already
        try:
            answers = _answers_json(args.answers_json)
        except argparse.ArgumentTypeError as error:
            raise CLIError(f"--answers-json: {error}", ExitCode.USAGE) from None
    if answers is None and not args.answer:
        return None
    answers = dict(answers or {})
    for name, value in args.answer:
        answers[name] = value
    return answers


def cmd_decide(args: argparse.Namespace) -> None:
    """approve, reject (`decision`, with the option(s) if given: they must agree) and decide (`choice`)."""
    body: dict = {} if args.command == "decide" else {"decision": args.command}
    if args.comment is not None:
        body["comment"] = args.comment
    if args.option:
        body["choice"] = args.option
    answers = _collected_answers(args)
    if answers is not None:
        body["answers"] = answers
    result = _client(args).decide(args.id, body)
    if args.json:
        _out(as_json(result))
    else:
        verb = {"approve": "Approved", "reject": "Rejected"}.get(args.command, "Decided")
        _out(_summary(verb, result.get("request"), args.id))


def cmd_reassign(args: argparse.Namespace) -> None:
    if not args.user and not args.group:
        raise CLIError("reassign needs at least one --user or --group", ExitCode.USAGE)
    result = _client(args).reassign(args.id, {"users": args.user, "groups": args.group, "reason": args.reason})
    _out(as_json(result) if args.json else _summary("Reassigned", result, args.id))


def cmd_cancel(args: argparse.Namespace) -> None:
    result = _client(args).cancel(args.id, {"reason": args.reason})
    _out(as_json(result) if args.json else _summary("Cancelled", result, args.id))


COMMANDS = {
    "login": cmd_login,
    "logout": cmd_logout,
    "inbox": cmd_inbox,
    "show": cmd_show,
    "approve": cmd_decide,
    "reject": cmd_decide,
    "decide": cmd_decide,
    "reassign": cmd_reassign,
    "cancel": cmd_cancel,
}


# Options whose value is free text: a value that starts with "-" ("--search -:", "--comment -1")
# would otherwise be read by argparse as another option and refused.
_TEXT_OPTIONS = frozenset({"--search", "--comment", "--reason", "--answer", "--option"})


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        for sub in getattr(action, "choices", None) or {}:
            if isinstance(action, argparse._SubParsersAction):
                found |= _option_strings(action.choices[sub])
    return found


def _attach_dash_values(argv: list[str], known: set[str]) -> list[str]:
    """`--search -x` → `--search=-x` (argparse's own way to pass such a value), unless the next
    argument is one of the command line's own options."""
    out: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else None
        if arg in _TEXT_OPTIONS and following is not None and following.startswith("-") and following not in known:
            out.append(f"{arg}={following}")
            index += 2
        else:
            out.append(arg)
            index += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_attach_dash_values(argv, _option_strings(parser)))
    args.json = getattr(args, "json", False)
    try:
        COMMANDS[args.command](args)
    except CLIError as error:
        print(f"approvals: {error.message}", file=sys.stderr, flush=True)
        return int(error.exit_code)
    except KeyboardInterrupt:
        print("approvals: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `approvals inbox | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return int(ExitCode.OK)
    return int(ExitCode.OK)
