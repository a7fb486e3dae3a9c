"""The command line end to end: device-flow sign-in at the dev IdP, then an approval through the API.

Step Functions (moto server) → SQS → worker → database; alice signs in to the portal once (SSO,
which creates her account), then `approvals login` (device grant, the test playing alice at the
IdP), `approvals inbox`, `approvals approve` → the worker's callback → the execution SUCCEEDED
with her identity. The access token is the IdP's real one, never minted by the test.
"""

import json
import uuid

import pytest

from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest
from tests.support import CliLogin, act_on_device_code, run_cli, sso_login, wait_for, wait_for_execution_end

pytestmark = pytest.mark.e2e

EXECUTION_INPUT = {
    "title": "Deploy release 42 – ✓",
    "approvers": {"users": ["alice@example.com"], "groups": []},
    "requester": "bob@example.com",
    "details": {"release": 42, "note": "\x1b[31mred\x1b[0m \u202eevil"},  # titles can't hold these; details can
}


def test_alice_signs_in_with_the_device_flow_and_approves_from_the_command_line(
    portal_stack, demo_state_machine, devidp, tmp_path
):
    portal = portal_stack["url"]
    sso_login(portal, "alice")  # her portal account: API tokens map to the people who signed in
    execution_arn = gateway.start_execution(
        state_machine_arn=demo_state_machine, name=f"cli-{uuid.uuid4().hex[:12]}", execution_input=EXECUTION_INPUT
    )
    request = wait_for(lambda: ApprovalRequest.objects.filter(execution_arn=execution_arn).first())

    login = CliLogin(devidp, tmp_path, portal=portal)
    act_on_device_code(devidp, "alice", login.user_code())
    returncode, stdout, stderr = login.finish()
    assert returncode == 0, stderr
    assert f"Signed in to {portal} as alice@example.com" in stdout

    inbox = run_cli(tmp_path, "inbox", portal=portal)
    assert inbox.returncode == 0, inbox.stderr
    assert str(request.public_id) in inbox.stdout
    assert "Deploy release 42 – ✓" in inbox.stdout

    approve = run_cli(tmp_path, "approve", str(request.public_id), "--comment", "Ship it ✓", portal=portal)
    assert approve.returncode == 0, approve.stderr
    assert approve.stdout.startswith(f"Approved {request.public_id} (")

    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    approval = json.loads(execution["output"])["approval"]
    assert approval["approved"] is True
    assert approval["decidedBy"]["email"] == "alice@example.com"
    assert approval["comment"] == "Ship it ✓"

    again = run_cli(tmp_path, "approve", str(request.public_id), "--json", portal=portal)
    assert again.returncode == 6, again.stderr  # 409: the problem's one line, exit code "conflict"
    assert again.stderr.startswith("approvals: ") and "already_decided" in again.stderr

    shown = run_cli(tmp_path, "show", str(request.public_id), portal=portal)
    assert shown.returncode == 0, shown.stderr
    assert "Status:" in shown.stdout and "alice@example.com" in shown.stdout
    assert '"note": "\\u001b[31mred\\u001b[0m \\u202eevil"' in shown.stdout  # shown, not obeyed
    assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout
    as_json = run_cli(tmp_path, "show", str(request.public_id), "--json", portal=portal)
    assert json.loads(as_json.stdout)["details"] == EXECUTION_INPUT["details"]

    token = json.loads((tmp_path / "approvals" / "credentials.json").read_text())["portals"][portal]["access_token"]
    for text in (stdout, stderr, inbox.stdout, approve.stdout, again.stderr, shown.stdout):
        assert token not in text
    for process in (portal_stack["web"], portal_stack["worker"]):
        assert token not in process.output(), f"the access token leaked into the {process.name} log"
