"""`approvals login` against the real dev IdP: the device authorization grant (RFC 8628).

The test plays the person: while the command line polls, it signs in to the dev IdP's own login
page as a demo user, enters the code the command printed and allows (or denies) the sign-in.
"""

import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from devidp.seed import demo_passwords

REPO_DIR = Path(__file__).resolve().parent.parent
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def _post_form(session: requests.Session, page: requests.Response, **fields) -> requests.Response:
    csrf = CSRF.search(page.text).group(1)
    return session.post(
        page.url, data={"csrfmiddlewaretoken": csrf, **fields}, headers={"Referer": page.url}, timeout=15
    )


def act_on_device_code(issuer: str, username: str, user_code: str, action: str = "accept") -> requests.Response:
    """The person: opens the IdP's device page, signs in with the login form, enters the code, allows/denies."""
    session = requests.Session()
    login = session.get(f"{issuer}/device/", timeout=15)
    assert "/accounts/login/" in login.url, login.url
    code_page = _post_form(session, login, username=username, password=demo_passwords()[username])
    assert code_page.url.startswith(f"{issuer}/device/"), code_page.url
    confirm = _post_form(session, code_page, user_code=user_code)
    assert "/device-confirm/" in confirm.url, confirm.text[-500:]
    return _post_form(session, confirm, action=action)


class LoginProcess:
    """`python -m approvals_cli login` as a child process, with its own config dir."""

    def __init__(self, issuer: str, config_home: Path, *extra: str):
        env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), "PYTHONUNBUFFERED": "1"}
        env.pop("APPROVALS_TOKEN", None)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "approvals_cli", "login", "--issuer", issuer, "--portal", "http://127.0.0.1:8000",
             *extra],
            cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []

    def user_code(self) -> str:
        """Read what the command prints until the code appears (as a person reads the screen)."""
        timer = threading.Timer(60, self.popen.kill)  # a hung command fails the test instead of hanging it
        timer.start()
        try:
            for line in self.popen.stdout:
                self.lines.append(line)
                match = re.search(r"enter the code: (\S+)", line)
                if match:
                    return match.group(1)
        finally:
            timer.cancel()
        raise AssertionError(f"no code printed: {self.lines} {self.popen.stderr.read()}")

    def finish(self) -> tuple[int, str, str]:
        stdout, stderr = self.popen.communicate(timeout=90)
        return self.popen.returncode, "".join(self.lines) + stdout, stderr


def stored_token(config_home: Path) -> str:
    document = json.loads((config_home / "approvals" / "credentials.json").read_text())
    return document["portals"]["http://127.0.0.1:8000"]["access_token"]


def test_the_dev_idp_advertises_its_device_authorization_endpoint(devidp):
    document = requests.get(f"{devidp}/.well-known/openid-configuration", timeout=15).json()
    assert document["device_authorization_endpoint"] == f"{devidp}/device-authorization/"
    assert DEVICE_GRANT in document["grant_types_supported"]


def test_the_cli_signs_in_with_the_device_flow_as_a_demo_user(devidp, tmp_path):
    login = LoginProcess(devidp, tmp_path)
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
    login = LoginProcess(devidp, tmp_path)
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
    login = LoginProcess(devidp, tmp_path, "--client-id", client_id)
    returncode, _, stderr = login.finish()
    assert returncode == 3
    assert re.fullmatch(r"approvals: the identity provider refused to start the sign-in \(invalid_\w+\); .*\n", stderr)
