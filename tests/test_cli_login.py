"""`approvals login` against the real dev IdP: the device authorization grant (RFC 8628).

The test plays the person: while the command line polls, it signs in to the dev IdP's own login
page as a demo user, enters the code the command printed and allows (or denies) the sign-in.
"""

import json
import re
import stat
from pathlib import Path

import pytest
import requests

from devidp.seed import demo_passwords
from tests.support import CliLogin, act_on_device_code, post_form

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def stored_token(config_home: Path) -> str:
    document = json.loads((config_home / "approvals" / "credentials.json").read_text())
    return document["portals"]["http://127.0.0.1:8000"]["access_token"]


def test_the_dev_idp_advertises_its_device_authorization_endpoint(devidp):
    document = requests.get(f"{devidp}/.well-known/openid-configuration", timeout=15).json()
    assert document["device_authorization_endpoint"] == f"{devidp}/device-authorization/"
    assert DEVICE_GRANT in document["grant_types_supported"]


def test_the_cli_signs_in_with_the_device_flow_as_a_demo_user(devidp, tmp_path):
    login = CliLogin(devidp, tmp_path)
    code = login.user_code()
    assert f"{devidp}/device/" in "".join(login.lines)

    allowed = act_on_device_code(devidp, "alice", code)
    assert "Device authorized" in allowed.text

    returncode, stdout, stderr = login.finish()
    assert returncode == 0, stderr
    assert "Signed in to http://127.0.0.1:8000 as alice@example.com" in stdout

    token = stored_token(tmp_path)
    assert token not in stdout + stderr
    directory, file = tmp_path / "approvals", tmp_path / "approvals" / "credentials.json"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    # The token is alice's: the IdP itself says so.
    claims = requests.get(f"{devidp}/userinfo/", headers={"Authorization": f"Bearer {token}"}, timeout=15).json()
    assert claims["email"] == "alice@example.com"


def test_a_denied_sign_in_ends_the_cli_with_exit_code_3_and_stores_nothing(devidp, tmp_path):
    login = CliLogin(devidp, tmp_path)
    act_on_device_code(devidp, "dave", login.user_code(), action="deny")
    returncode, _, stderr = login.finish()
    assert returncode == 3
    assert stderr.strip() == "approvals: the sign-in was denied at the identity provider"
    assert not (tmp_path / "approvals" / "credentials.json").exists()


def test_a_device_code_buys_one_token(devidp):
    start = requests.post(
        f"{devidp}/device-authorization/", data={"client_id": "approvals-cli", "scope": "openid email"}, timeout=15
    ).json()
    act_on_device_code(devidp, "alice", start["user_code"])
    poll = {"grant_type": DEVICE_GRANT, "device_code": start["device_code"], "client_id": "approvals-cli"}
    first = requests.post(f"{devidp}/token/", data=poll, timeout=15)
    assert first.status_code == 200 and first.json()["access_token"]
    replay = requests.post(f"{devidp}/token/", data=poll, timeout=15)
    assert replay.status_code == 400
    assert "access_token" not in replay.text


@pytest.mark.parametrize("client_id", ["approval-portal", "no-such-client"])
def test_only_the_cli_client_may_start_a_device_sign_in(devidp, tmp_path, client_id):
    """The portal's confidential client (its secret not given) and unknown clients are refused."""
    login = CliLogin(devidp, tmp_path, "--client-id", client_id)
    returncode, _, stderr = login.finish()
    assert returncode == 3
    assert re.fullmatch(r"approvals: the identity provider refused to start the sign-in \(invalid_\w+\); .*\n", stderr)


def test_a_used_or_made_up_code_is_refused_on_the_device_page(devidp):
    start = requests.post(
        f"{devidp}/device-authorization/", data={"client_id": "approvals-cli", "scope": "openid"}, timeout=15
    ).json()
    act_on_device_code(devidp, "alice", start["user_code"])

    session = requests.Session()
    login = session.get(f"{devidp}/device/", timeout=15)
    code_page = post_form(session, login, username="dave", password=demo_passwords()["dave"])
    for code, refusal in ((start["user_code"], "User code has already been used"), ("ZZZZ0000", "Incorrect user code")):
        answer = post_form(session, code_page, user_code=code)
        assert answer.url.startswith(f"{devidp}/device/") and "/device-confirm/" not in answer.url
        assert refusal in answer.text
    # Nor can dave reach the confirmation of the code alice entered.
    confirm = session.get(f"{devidp}/device-confirm/approvals-cli/{start['user_code']}", timeout=15)
    assert confirm.status_code == 404
