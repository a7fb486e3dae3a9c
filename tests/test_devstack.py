"""`make run` (scripts/devstack.py): one place for ports, and output that says who wrote it."""

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection

from portal import devports
from tests.conftest import free_port, wait_for_http

REPO_DIR = Path(__file__).resolve().parent.parent
PORT_VARIABLES = ("PORTAL_PORT", "DEVIDP_PORT", "MOTO_PORT", "WORKER_METRICS_PORT")
DERIVED = (
    "PORTAL_BASE_URL",
    "WEB_BIND",
    "DEVIDP_ISSUER",
    "OIDC_OP_ISSUER",
    "DEVIDP_REDIRECT_URIS",
    "DEVIDP_POST_LOGOUT_REDIRECT_URIS",
    "AWS_ENDPOINT_URL",
)


def load_devstack():
    spec = importlib.util.spec_from_file_location("devstack", REPO_DIR / "scripts" / "devstack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shell_without_ports() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in {*PORT_VARIABLES, *DERIVED}}


OTHER_PORTS = {"PORTAL_PORT": "18001", "DEVIDP_PORT": "19001", "MOTO_PORT": "15006", "WORKER_METRICS_PORT": "19809"}


# ---------------------------------------------------------------------------
# Ports: three (and the worker's metrics port) derive every URL
# ---------------------------------------------------------------------------
def test_three_ports_derive_every_url_the_stack_needs():
    env = devports.stack_environment({**shell_without_ports(), **OTHER_PORTS})

    assert env["PORTAL_BASE_URL"] == "http://127.0.0.1:18001"
    assert env["WEB_BIND"] == "127.0.0.1:18001"
    assert env["DEVIDP_ISSUER"] == env["OIDC_OP_ISSUER"] == "http://127.0.0.1:19001/o"
    assert env["DEVIDP_REDIRECT_URIS"] == "http://127.0.0.1:18001/oidc/callback/"
    assert env["DEVIDP_POST_LOGOUT_REDIRECT_URIS"] == "http://127.0.0.1:18001/"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:15006"
    assert env["WORKER_METRICS_PORT"] == "19809"
    # Nothing the stack reads still names a default port.
    for name in DERIVED:
        assert not {":8000", ":9000", ":5005", ":9808"} & {f":{urlsplit('//' + env[name]).port}"}, name


def test_the_defaults_are_the_documented_ports():
    env = devports.stack_environment(shell_without_ports())

    assert env["PORTAL_BASE_URL"] == "http://127.0.0.1:8000"
    assert env["OIDC_OP_ISSUER"] == "http://127.0.0.1:9000/o"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5005"
    assert env["WORKER_METRICS_PORT"] == "9808"


def test_a_variable_set_explicitly_wins_over_its_derived_value():
    env = devports.stack_environment(
        {**shell_without_ports(), **OTHER_PORTS, "PORTAL_BASE_URL": "http://portal.localhost:18001/", "WEB_BIND": ""}
    )

    assert env["PORTAL_BASE_URL"] == "http://portal.localhost:18001"
    assert env["DEVIDP_REDIRECT_URIS"] == "http://portal.localhost:18001/oidc/callback/"
    assert env["WEB_BIND"] == "127.0.0.1:18001"  # empty counts as unset


@pytest.mark.parametrize("value", ["eighty", "0", "70000", "-1"])
def test_a_port_that_is_not_a_port_is_refused_with_its_name(value):
    with pytest.raises(ValueError, match="PORTAL_PORT"):
        devports.stack_environment({"PORTAL_PORT": value})


def test_the_portals_settings_follow_the_same_ports():
    script = (
        "import json; from django.conf import settings as s; print(json.dumps([s.PORTAL_BASE_URL, s.OIDC_OP_ISSUER, "
        "s.OIDC_OP_LOGOUT_ENDPOINT, s.AWS_ENDPOINT_URL, s.APPROVAL_QUEUE_URL, s.WORKER_METRICS_PORT]))"
    )
    env = {**shell_without_ports(), **OTHER_PORTS}
    env.pop("APPROVAL_QUEUE_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        "http://127.0.0.1:18001",
        "http://127.0.0.1:19001/o",
        "http://127.0.0.1:19001/o/logout/",
        "http://127.0.0.1:15006",
        "http://127.0.0.1:15006/123456789012/approval-requests",
        19809,
    ]


def test_the_banner_prints_what_really_runs():
    devstack = load_devstack()
    env = devstack.stack_environment({**shell_without_ports(), **OTHER_PORTS, "PORTAL_VAR_DIR": "/srv/demo-var"})

    banner = devstack.banner(env)

    assert "http://127.0.0.1:18001/" in banner
    assert "http://127.0.0.1:19001/o" in banner
    assert "http://127.0.0.1:15006" in banner
    assert "http://127.0.0.1:19809/metrics" in banner
    assert "/srv/demo-var" in banner
    assert "PORTAL_PORT=18001 DEVIDP_PORT=19001 MOTO_PORT=15006 WORKER_METRICS_PORT=19809" in banner
    for default in (":8000", ":9000", ":5005", ":9808"):
        assert default not in banner


def test_the_web_server_is_waited_for_on_the_port_it_binds():
    devstack = load_devstack()

    assert devstack.bind_address("127.0.0.1:18001") == ("127.0.0.1", 18001)
    assert devstack.bind_address("0.0.0.0:18002") == ("127.0.0.1", 18002)
    assert devstack.bind_address("[::1]:18003") == ("::1", 18003)


def test_beats_schedule_follows_the_var_directory():
    procfile = load_devstack().procfile()

    assert "--schedule ${PORTAL_VAR_DIR:-var}/celerybeat-schedule" in procfile["beat"]


# ---------------------------------------------------------------------------
# Readable logs
# ---------------------------------------------------------------------------
def test_every_line_of_a_program_starts_with_its_name(capsys):
    devstack = load_devstack()
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('first'); print('second', file=sys.stderr)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    devstack.relay("worker", process.stdout).join(timeout=30)
    process.wait(timeout=30)

    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(["worker   | first", "worker   | second"])


def test_the_names_line_up_and_are_coloured_only_on_a_terminal(capsys):
    devstack = load_devstack()

    devstack.emit("aws", "hello", color=False)
    devstack.emit("devstack", "hello", color=False)
    devstack.emit("web", "hello", color=True)

    plain_aws, plain_devstack, coloured = capsys.readouterr().out.splitlines()
    assert plain_aws.index("|") == plain_devstack.index("|")
    assert "\033[" not in plain_aws
    assert coloured.startswith("\033[") and coloured.endswith(" hello") and "web" in coloured


def test_a_dev_mail_is_one_log_line_linking_a_file_that_shows_it(caplog):
    # A short directory, as var/mail in a checkout: pytest's own tmp_path is long enough to look
    # like a task token to the log's redaction (the next test).
    directory = Path(tempfile.mkdtemp(prefix="mail"))
    connection = get_connection("portal.mail.LocalFileEmailBackend", file_path=str(directory))
    message = EmailMultiAlternatives(
        "Approval needed: deploy",
        "Approve: http://127.0.0.1:8000/links/secret-signed-link",
        "portal@example.com",
        ["alice@example.com"],
        connection=connection,
    )
    message.attach_alternative(
        "<p><a href='http://127.0.0.1:8000/links/secret-signed-link'>Approve</a></p>", "text/html"
    )
    plain = EmailMessage("Reminder", "text only", "portal@example.com", ["bob@example.com"], connection=connection)

    with caplog.at_level(logging.INFO, logger="portal.mail"):
        assert connection.send_messages([message, plain]) == 2

    lines = [record.getMessage() for record in caplog.records if record.name == "portal.mail"]
    assert len(lines) == 2
    assert all("\n" not in line for line in lines)
    assert "secret-signed-link" not in "".join(lines)
    html_uri = lines[0].split()[-1]
    assert lines[0].startswith("mail to alice@example.com: 'Approval needed: deploy' file:///")
    assert html_uri.endswith(".html")
    assert "secret-signed-link" in Path(unquote(urlsplit(html_uri).path)).read_text()
    assert lines[1].startswith("mail to bob@example.com: 'Reminder' file:///") and lines[1].endswith(".eml")
    assert len(list(directory.glob("*.eml"))) == 2
    shutil.rmtree(directory)


def test_a_mail_in_a_directory_the_log_would_redact_is_linked_by_its_path(tmp_path, caplog):
    directory = tmp_path / ("d" * 70)
    connection = get_connection("portal.mail.LocalFileEmailBackend", file_path=str(directory))

    with caplog.at_level(logging.INFO, logger="portal.mail"):
        EmailMessage("Reminder", "text", "portal@example.com", ["bob@example.com"], connection=connection).send()

    [line] = [record.getMessage() for record in caplog.records if record.name == "portal.mail"]
    assert "[redacted]" not in line
    [written] = directory.glob("*.eml")
    assert line.endswith(f"'Reminder' {written.name} (in EMAIL_FILE_PATH)")


def test_make_run_sends_mail_to_files_not_to_the_console():
    script = "from django.conf import settings as s; print(s.EMAIL_BACKEND)"
    env = {name: value for name, value in os.environ.items() if not name.startswith("EMAIL_")}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=REPO_DIR, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "portal.mail.LocalFileEmailBackend"


def run_emulator(tmp_path, **env) -> str:
    port = free_port()
    log = tmp_path / "aws.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "scripts/aws_emulator.py", "-H", "127.0.0.1", "-p", str(port)],
            cwd=REPO_DIR,
            env={**os.environ, "MOTO_PORT": str(port), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/moto-api/", process, log)
            for _ in range(3):
                requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=10)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return log.read_text()


def test_the_aws_emulator_logs_no_line_per_request_by_default(tmp_path):
    output = run_emulator(tmp_path)

    assert "Running on" in output
    assert "GET /moto-api/" not in output


def test_the_aws_emulators_access_log_can_be_turned_on(tmp_path):
    output = run_emulator(tmp_path, AWS_EMULATOR_ACCESS_LOG="1")

    assert output.count("GET /moto-api/") >= 3


def test_the_dev_idp_started_on_other_ports_accepts_the_portals_derived_redirect_and_logout_uris(tmp_path):
    env = devports.stack_environment({**shell_without_ports(), **OTHER_PORTS, "PORTAL_VAR_DIR": str(tmp_path)})
    env.pop("DEVIDP_DATA_DIR", None)
    script = (
        "import json; from oauth2_provider.models import get_application_model as m; "
        "from devidp import config; app = m().objects.get(client_id='approval-portal'); "
        "print(json.dumps([config.issuer(), str(config.data_dir()), app.redirect_uris, app.post_logout_redirect_uris]))"
    )
    setup = subprocess.run(
        [sys.executable, "-m", "devidp", "setup"], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert setup.returncode == 0, setup.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "-m", "devidp", "shell", "-c", script],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        "http://127.0.0.1:19001/o",
        str(tmp_path / "devidp"),  # beside the portal's files
        "http://127.0.0.1:18001/oidc/callback/",
        "http://127.0.0.1:18001/",
    ]
