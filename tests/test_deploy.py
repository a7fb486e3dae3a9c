"""The deployment files agree with the code and with each other.

docker-compose.yml must run the Procfile's commands (what `make run` proves holds for compose),
wire the portal to the compose services under one OIDC issuer, and validate as a Compose file;
the Dockerfile must build a non-root image that serves the web app; deploy/cloudformation.yaml
must carry deploy/state-machine.asl.json verbatim, the queue's redrive policy and the same
permissions as the IAM policies in deploy/, and deploy on the moto server.

No database: these tests read files and run tools (docker-compose, check-jsonschema, cfn-lint,
hadolint) that skip locally when absent; `.ci/run` installs them.
"""

import base64
import functools
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import pytest
import requests
import yaml

from devidp.seed import demo_passwords
from tests.conftest import REPO_DIR, free_port, venv_bin

COMPOSE_FILE = REPO_DIR / "docker-compose.yml"
ENV_EXAMPLE = REPO_DIR / ".env.example"
DOCKERFILE = REPO_DIR / "Dockerfile"
DOCKERIGNORE = REPO_DIR / ".dockerignore"
TEMPLATE = REPO_DIR / "deploy" / "cloudformation.yaml"
ASL = REPO_DIR / "deploy" / "state-machine.asl.json"
PROCFILE_RUN = "scripts/procfile-run"

# Images of other projects; every other service runs the portal's own image.
INFRASTRUCTURE = {"postgres", "redis", "mailpit"}
# Compose variables the portal will read once it sends mail (notifications); until then the
# mail catcher only waits. Everything else the compose file sets must be read by someone.
NOT_READ_YET = {"EMAIL_HOST", "EMAIL_PORT"}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def procfile() -> dict[str, str]:
    """The Procfile's entries, by the grammar scripts/devstack.py (`make run`) reads it with."""
    return dict(re.findall(r"^([a-z]+):\s*(.+)$", (REPO_DIR / "Procfile").read_text(), flags=re.MULTILINE))


def expand(text: str, variables: dict[str, str]) -> str:
    """`${NAME:-default}` and `${NAME}` as sh and Compose expand them."""

    def value(match: re.Match) -> str:
        return variables.get(match.group(1)) or (match.group(3) or "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", value, text)


def compose_knobs() -> dict[str, str]:
    """The variables docker-compose.yml interpolates, with the defaults it gives them."""
    return dict(re.findall(r"\$\{(\w+):-([^}]*)\}", COMPOSE_FILE.read_text()))


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def interpolate(node, variables: dict[str, str]):
    """Compose's interpolation: in the parsed file's strings, `${...}` filled in, `$$` is `$`."""
    if isinstance(node, dict):
        return {key: interpolate(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, variables) for item in node]
    if isinstance(node, str):
        return expand(node, variables).replace("$$", "$")
    return node


@pytest.fixture(scope="module")
def compose() -> dict:
    """docker-compose.yml with the defaults filled in, as `docker compose up` sees it without a .env."""
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), {})


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def portal_env(services) -> dict[str, str]:
    return {key: str(value) for key, value in services["web"]["environment"].items()}


def published(service: dict, container_port: int) -> tuple[str, int]:
    """(host address, host port) that a service's container port is published on."""
    for mapping in service.get("ports", []):
        parts = str(mapping).split(":")
        address, host_port, port = parts if len(parts) == 3 else ["", *parts]
        if int(port) == container_port:
            return address, int(host_port)
    raise AssertionError(f"container port {container_port} is not published")


def healthcheck_url_port(service: dict) -> int:
    test = " ".join(service["healthcheck"]["test"])
    return int(re.search(r"http://127\.0\.0\.1:(\d+)/", test).group(1))


def settings_in(env: dict[str, str], module: str, expression: str, tmp_path: Path):
    """Evaluate `expression` over django.conf.settings loaded by `module` under exactly `env`."""
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({expression}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_DIR,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DJANGO_SETTINGS_MODULE": module, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def tool(name: str) -> str:
    # The pinned copy in the virtualenv first (cfn-lint, check-jsonschema, hadolint), then PATH.
    path = venv_bin(name) if Path(venv_bin(name)).exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it; locally: see `make validate`)")
    return path


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO_DIR, capture_output=True, text=True, check=False, timeout=timeout)


# ---------------------------------------------------------------------------
# docker-compose.yml: the same processes as `make run`
# ---------------------------------------------------------------------------
def test_every_depends_on_names_a_defined_service(services):
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on undefined service {dependency}"
            assert dependency != name


def test_every_portal_service_runs_procfile_entries_through_procfile_run(services):
    entries = procfile()
    portal_services = {name: s for name, s in services.items() if name not in INFRASTRUCTURE}
    assert set(portal_services) == {"aws", "idp", "init", "web", "worker", "beat"}
    for name, service in portal_services.items():
        command = service["command"]
        assert command[0] == PROCFILE_RUN, f"{name} must run its Procfile entry: {command}"
        assert command[1:], name
        for entry in command[1:]:
            assert entry in entries, f"{name} runs {entry!r}, which is not in the Procfile"
    # One service per long-running Procfile process, under the same name.
    for name in ("aws", "idp", "web", "worker", "beat"):
        assert portal_services[name]["command"] == [PROCFILE_RUN, name]
    assert portal_services["init"]["command"] == [PROCFILE_RUN, "init", "demo"]
    assert set(entries) == {"aws", "idp", "init", "web", "worker", "beat", "demo"}, (
        "a new Procfile entry needs a service"
    )


def test_every_portal_service_runs_the_image_built_from_the_dockerfile(services):
    for name, service in services.items():
        if name in INFRASTRUCTURE:
            continue
        assert service["build"] == "."
        assert service["image"] == "approval-portal:dev"
        assert service["init"] is True, f"{name}: tini forwards the stop signal and reaps children"


def test_up_converges_in_order_without_restarts(services):
    """Dependencies wait for health (or for init to finish), and health checks exist for them."""
    image_health_checks = {"mailpit"}  # its image declares one
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health check"
            elif condition == "service_completed_successfully":
                assert dependency == "init"
            else:
                assert condition == "service_started" and dependency in image_health_checks
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    assert {"postgres", "aws"} <= set(services["init"]["depends_on"])
    assert "restart" not in services["init"], "a one-shot job must not be restarted"


def test_health_checks_ask_the_port_each_process_listens_on(services):
    web = portal_env(services)
    assert healthcheck_url_port(services["web"]) == int(web["WEB_BIND"].rsplit(":", 1)[1])
    assert healthcheck_url_port(services["aws"]) == int(services["aws"]["environment"]["MOTO_PORT"])
    assert healthcheck_url_port(services["idp"]) == int(services["idp"]["environment"]["DEVIDP_PORT"])
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_ports_are_published_on_loopback_only(services):
    for name, service in services.items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond this machine"


def test_the_portal_reaches_the_compose_services_by_name(services):
    env = portal_env(services)
    postgres = services["postgres"]["environment"]
    database = urlsplit(env["DATABASE_URL"])
    assert (database.hostname, database.username, database.password, database.path) == (
        "postgres",
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        f"/{postgres['POSTGRES_DB']}",
    )
    assert urlsplit(env["CELERY_BROKER_URL"]).hostname == "redis"
    endpoint = urlsplit(env["AWS_ENDPOINT_URL"])
    assert endpoint.hostname == "aws"
    assert endpoint.port == int(services["aws"]["environment"]["MOTO_PORT"])
    assert services["aws"]["environment"]["AWS_EMULATOR_BIND"] == "0.0.0.0"  # noqa: S104 - inside the container
    assert env["WEB_BIND"].startswith("0.0.0.0:")
    assert services["idp"]["environment"]["DEVIDP_BIND"] == "0.0.0.0"  # noqa: S104
    # The moto server names a queue after the host it was asked through: the portal must poll
    # the URL that `init` (via AWS_ENDPOINT_URL) writes into the demo state machine.
    assert env["APPROVAL_QUEUE_URL"] == f"{env['AWS_ENDPOINT_URL']}/123456789012/approval-requests"
    for name in ("web", "worker", "beat", "init"):
        assert services[name]["environment"] == services["web"]["environment"], f"{name} has its own configuration"


def test_browser_and_portal_reach_the_dev_idp_under_one_issuer(services):
    env, idp = portal_env(services), services["idp"]["environment"]
    issuer = env["OIDC_OP_ISSUER"]
    # `iss` in the IdP's tokens is DEVIDP_ISSUER, checked against OIDC_OP_ISSUER exactly.
    assert idp["DEVIDP_ISSUER"] == issuer
    # The browser: the issuer (and the authorization and logout endpoints under it) is the
    # IdP's published port on 127.0.0.1.
    assert urlsplit(issuer).hostname == "127.0.0.1"
    assert published(services["idp"], int(idp["DEVIDP_PORT"])) == ("127.0.0.1", urlsplit(issuer).port)
    assert "OIDC_OP_AUTHORIZATION_ENDPOINT" not in env
    assert "OIDC_OP_LOGOUT_ENDPOINT" not in env
    # The portal's server side: the same paths on the compose network, which the IdP accepts.
    internal = f"http://idp:{idp['DEVIDP_PORT']}{urlsplit(issuer).path}"
    assert env["OIDC_OP_TOKEN_ENDPOINT"] == f"{internal}/token/"
    assert env["OIDC_OP_USER_ENDPOINT"] == f"{internal}/userinfo/"
    assert env["OIDC_OP_JWKS_ENDPOINT"] == f"{internal}/.well-known/jwks.json"
    assert "idp" in idp["DEVIDP_ALLOWED_HOSTS"].split(",")
    # The redirect URI registered at the IdP is where the browser reaches the portal.
    portal = env["PORTAL_BASE_URL"]
    assert published(services["web"], 8000) == ("127.0.0.1", urlsplit(portal).port)
    assert idp["DEVIDP_REDIRECT_URIS"] == f"{portal}/oidc/callback/"
    assert idp["DEVIDP_POST_LOGOUT_REDIRECT_URIS"] == f"{portal}/"
    assert "idp-data:/app/var/devidp" in services["idp"]["volumes"]
    assert idp["DEVIDP_DATA_DIR"] == "/app/var/devidp"


def test_a_sign_in_through_the_issuer_url_redeems_at_the_idps_internal_name(services, tmp_path):
    """The compose IdP setup, run natively: `localhost` stands in for the compose name `idp`.

    The browser signs in at the issuer's host; the code, the keys and userinfo are fetched at
    another host name, as the web container does; the ID token still names the issuer.
    """
    port = free_port()
    idp = {k: str(v) for k, v in services["idp"]["environment"].items()}
    issuer = f"http://127.0.0.1:{port}{urlsplit(idp['DEVIDP_ISSUER']).path}"
    internal = f"http://localhost:{port}{urlsplit(idp['DEVIDP_ISSUER']).path}"
    redirect_uri = idp["DEVIDP_REDIRECT_URIS"]
    env = {
        **os.environ,
        **idp,
        "PATH": f"{Path(venv_bin('python')).parent}{os.pathsep}{os.environ['PATH']}",
        "DEVIDP_BIND": "127.0.0.1",
        "DEVIDP_PORT": str(port),
        "DEVIDP_ISSUER": issuer,
        "DEVIDP_DATA_DIR": str(tmp_path),
    }
    server = subprocess.Popen(
        [str(REPO_DIR / PROCFILE_RUN), "idp"],
        cwd=REPO_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                assert server.poll() is None and time.monotonic() < deadline, "the dev IdP did not start"
                time.sleep(0.2)

        # The browser, at the issuer's host: authorize, sign in, come back with a code.
        browser = requests.Session()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = {
            "response_type": "code",
            "client_id": "approval-portal",  # the client the IdP seeds and the portal's dev default
            "redirect_uri": redirect_uri,
            "scope": "openid email profile groups",
            "state": "state-1",
            "nonce": "nonce-1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        login = browser.get(f"{issuer}/authorize/", params=query, timeout=10)
        assert urlsplit(login.url).netloc == f"127.0.0.1:{port}" and "/accounts/login/" in login.url
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        next_url = re.search(r'name="next" value="([^"]*)"', login.text).group(1).replace("&amp;", "&")
        response = browser.post(
            login.url,
            data={
                "csrfmiddlewaretoken": csrf,
                "username": "alice",
                "password": demo_passwords()["alice"],
                "next": next_url,
            },
            headers={"Referer": login.url},
            allow_redirects=False,
            timeout=10,
        )
        while not response.headers.get("Location", "").startswith(redirect_uri):
            assert response.status_code == 302, response.text[:500]
            response = browser.get(
                urljoin(response.url, response.headers["Location"]), allow_redirects=False, timeout=10
            )
        code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]

        # The portal's server side, at the internal name: token, keys, userinfo.
        tokens = requests.post(
            f"{internal}/token/",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": "approval-portal",
                "client_secret": "approval-portal-dev-secret",
                "code_verifier": verifier,
            },
            timeout=10,
        )
        assert tokens.status_code == 200, tokens.text
        id_token = tokens.json()["id_token"]
        jwks = requests.get(f"{internal}/.well-known/jwks.json", timeout=10).json()
        (key,) = [k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(id_token)["kid"]]
        claims = jwt.decode(
            id_token, jwt.PyJWK(key).key, algorithms=["RS256"], audience="approval-portal", issuer=issuer
        )
        userinfo = requests.get(
            f"{internal}/userinfo/", headers={"Authorization": f"Bearer {tokens.json()['access_token']}"}, timeout=10
        )
        assert userinfo.status_code == 200
        assert userinfo.json()["sub"] == claims["sub"]
        assert claims["email"] == "alice@example.com"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_portal_settings_read_the_compose_environment_as_intended(services, tmp_path):
    env = {**portal_env(services), "PORTAL_VAR_DIR": str(tmp_path / "var")}
    loaded = settings_in(
        env,
        "portal.settings",
        "{k: getattr(settings, k) for k in ('AWS_EMULATOR', 'AWS_ACCESS_KEY_ID', 'APPROVAL_QUEUE_URL', "
        "'OIDC_OP_ISSUER', 'OIDC_OP_AUTHORIZATION_ENDPOINT', 'OIDC_OP_TOKEN_ENDPOINT', 'OIDC_OP_LOGOUT_ENDPOINT', "
        "'ALLOWED_HOSTS', 'CELERY_BROKER_URL')} | {'db': settings.DATABASES['default']}",
        tmp_path,
    )
    assert loaded["AWS_EMULATOR"] is True, "the moto server takes the dummy credentials"
    assert loaded["AWS_ACCESS_KEY_ID"] == "testing"
    assert loaded["APPROVAL_QUEUE_URL"] == env["APPROVAL_QUEUE_URL"]
    assert loaded["OIDC_OP_ISSUER"] == env["OIDC_OP_ISSUER"]
    assert loaded["OIDC_OP_AUTHORIZATION_ENDPOINT"] == f"{env['OIDC_OP_ISSUER']}/authorize/"
    assert loaded["OIDC_OP_LOGOUT_ENDPOINT"] in ("", f"{env['OIDC_OP_ISSUER']}/logout/")
    assert loaded["OIDC_OP_TOKEN_ENDPOINT"] == env["OIDC_OP_TOKEN_ENDPOINT"]
    assert {"127.0.0.1", "web"} <= set(loaded["ALLOWED_HOSTS"])
    assert loaded["db"]["ENGINE"] == "django.db.backends.postgresql"
    assert (loaded["db"]["HOST"], loaded["db"]["NAME"]) == ("postgres", "portal")


def test_the_dev_idp_settings_read_the_compose_environment_as_intended(services, tmp_path):
    env = {**{k: str(v) for k, v in services["idp"]["environment"].items()}, "DEVIDP_DATA_DIR": str(tmp_path)}
    loaded = settings_in(
        env, "devidp.settings", "[settings.ALLOWED_HOSTS, settings.OAUTH2_PROVIDER['OIDC_ISS_ENDPOINT']]", tmp_path
    )
    allowed_hosts, iss = loaded
    assert {"127.0.0.1", "idp"} <= set(allowed_hosts)
    assert iss == portal_env(services)["OIDC_OP_ISSUER"]


def test_env_example_lists_every_compose_knob_with_its_default():
    assert env_example() == compose_knobs(), ".env.example and the ${VAR:-default}s of docker-compose.yml differ"


def test_every_variable_the_compose_file_sets_is_read_by_the_portal_the_idp_or_the_procfile(services):
    readers = [REPO_DIR / "portal" / "settings.py", *sorted((REPO_DIR / "devidp").glob("*.py"))]
    read = set(re.findall(r"""["']([A-Z][A-Z0-9_]+)["']""", "\n".join(p.read_text() for p in readers)))
    read |= set(re.findall(r"\$\{(\w+)", (REPO_DIR / "Procfile").read_text()))
    for name, service in services.items():
        if name in INFRASTRUCTURE:
            continue
        unread = set(service.get("environment", {})) - read - NOT_READ_YET
        assert not unread, f"{name} sets variables nobody reads: {sorted(unread)}"


def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if not shutil.which("docker-compose") and docker and run([docker, "compose", "version"]).returncode == 0:
        compose = [docker, "compose"]  # Compose v2
    else:
        compose = [tool("docker-compose")]  # Debian's, which .ci/run installs
    result = run([*compose, "config", "-q"])
    assert result.returncode == 0, result.stderr


def test_the_compose_file_matches_the_compose_specification():
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------
# scripts/procfile-run: how the containers run the Procfile
# ---------------------------------------------------------------------------
def test_procfile_run_resolves_every_entry_as_make_run_reads_it():
    for name, command in procfile().items():
        result = run([PROCFILE_RUN, "--print", name])
        assert result.returncode == 0, result.stderr
        assert result.stdout == command + "\n"


def test_procfile_run_refuses_an_unknown_entry_before_running_anything():
    # Had it started `web` first, gunicorn would still be running when the timeout hits.
    result = run([PROCFILE_RUN, "web", "web-typo"], timeout=30)
    assert result.returncode == 64
    assert "no entry 'web-typo'" in result.stderr
    assert "gunicorn" not in result.stderr


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc (Linux)")
def test_procfile_run_becomes_the_service_process_so_it_gets_the_stop_signal():
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(venv_bin('python')).parent}{os.pathsep}{os.environ['PATH']}",
        "AWS_EMULATOR_BIND": "127.0.0.1",
        "MOTO_PORT": str(port),
    }
    process = subprocess.Popen(
        [str(REPO_DIR / PROCFILE_RUN), "aws"], cwd="/", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # procfile-run execs `bash -c '<Procfile line>'`, which execs the command with the
        # Procfile's ${VAR:-default}s expanded: wait for the expanded arguments.
        deadline = time.monotonic() + 20
        argv: list[str] = []
        while time.monotonic() < deadline and f"-H 127.0.0.1 -p {port}" not in " ".join(argv):
            time.sleep(0.1)
            argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().split("\0")
        # The pid compose started (and signals) is the AWS emulator itself (the moto server, run
        # by scripts/aws_emulator.py without its access log), no shell in between.
        assert f"-H 127.0.0.1 -p {port}" in " ".join(argv), argv
        assert argv[1] == "scripts/aws_emulator.py", argv
        assert not Path(argv[0]).name.startswith(("bash", "sh")), argv
    finally:
        process.terminate()
        process.wait(timeout=20)


# ---------------------------------------------------------------------------
# Dockerfile and .dockerignore
# ---------------------------------------------------------------------------
DOCKERFILE_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER",
}  # fmt: skip


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with comments dropped and continuation lines joined."""
    text = re.sub(r"^\s*#.*\n", "", DOCKERFILE.read_text(), flags=re.MULTILINE)
    text = re.sub(r"\\\n", " ", text)
    parsed = []
    for line in text.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            parsed.append((instruction.upper(), arguments.strip()))
    return parsed


def test_the_dockerfile_uses_only_known_instructions_on_python_3_11_slim():
    instructions = dockerfile_instructions()
    unknown = {name for name, _ in instructions} - DOCKERFILE_INSTRUCTIONS
    assert not unknown, unknown
    assert instructions[0] == ("FROM", "python:3.11-slim")


def test_the_image_installs_requirements_in_their_own_layer_before_the_code():
    instructions = dockerfile_instructions()
    copy_requirements = instructions.index(("COPY", "requirements.lock ./"))
    install = next(i for i, (name, args) in enumerate(instructions) if name == "RUN" and "-r requirements.lock" in args)
    assert "--require-hashes" in instructions[install][1]
    copy_code = instructions.index(("COPY", ". ."))
    assert copy_requirements < install < copy_code


def test_the_image_runs_as_a_user_who_is_not_root():
    users = [args for name, args in dockerfile_instructions() if name == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert re.search(rf"useradd .*--uid {user}\b", DOCKERFILE.read_text()), "USER must be the user the image creates"


def test_the_image_collects_static_files_at_build_time():
    runs = [args for name, args in dockerfile_instructions() if name == "RUN"]
    assert any("manage.py collectstatic" in args for args in runs)


def test_the_default_command_is_the_procfile_web_server_listening_on_all_interfaces():
    cmd = [args for name, args in dockerfile_instructions() if name == "CMD"][-1]
    argv = json.loads(cmd)  # exec form: gunicorn is PID 1 and gets the stop signal
    pinned = {
        re.split(r"[\[=<>~ ]", line)[0].lower()
        for line in (REPO_DIR / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert argv[0] in pinned, f"{argv[0]} is not pinned in requirements.txt"
    web = expand(procfile()["web"], {"WEB_BIND": "0.0.0.0:8000", "WEB_WORKERS": "2"})
    assert argv == shlex.split(web)
    assert ("EXPOSE", "8000") in dockerfile_instructions()


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_local_state_and_tests_out_of_the_image():
    patterns = dockerignore_patterns()
    for path in (".venv", "var", ".git", "staticfiles", "tests", ".env"):
        assert path in patterns, f"{path} would be copied into the image"
    assert "**/__pycache__" in patterns


def test_dockerignore_keeps_what_the_containers_run():
    from fnmatch import fnmatch

    needed = ["Procfile", "manage.py", "requirements.txt", "requirements.lock"]
    needed += ["scripts/procfile-run", "deploy/state-machine.asl.json"]
    needed += [str(p.relative_to(REPO_DIR)) for p in (REPO_DIR / "portal").glob("*.py")]
    for path in needed:
        for pattern in dockerignore_patterns():
            prefixes = [str(Path(*Path(path).parts[: i + 1])) for i in range(len(Path(path).parts))]
            assert not any(fnmatch(prefix, pattern.lstrip("/")) for prefix in prefixes), f"{pattern} excludes {path}"


def test_hadolint_finds_nothing_in_the_dockerfile():
    result = run([tool("hadolint"), str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------
# deploy/cloudformation.yaml
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import decode

    parsed, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return parsed


def statements(policy: dict) -> dict[str, set[str]]:
    return {s["Sid"]: {s["Action"]} if isinstance(s["Action"], str) else set(s["Action"]) for s in policy["Statement"]}


@pytest.mark.parametrize(
    ("resource", "asl_file"),
    [("ApprovalStateMachine", ASL), ("InputStateMachine", ASL.parent / "state-machine-input.asl.json")],
)
def test_the_templates_state_machine_is_deploy_state_machine_asl_json(template, resource, asl_file):
    machine = template["Resources"][resource]["Properties"]
    substitutions = machine["DefinitionSubstitutions"]
    asl = asl_file.read_text()
    # Every placeholder in the ASL file is filled in, and with the queue the template creates.
    assert set(re.findall(r"\$\{(\w+)\}", asl)) == set(substitutions)
    assert substitutions["ApprovalQueueUrl"] == {"Ref": "ApprovalQueue"}
    queue_url = "https://sqs.eu-west-1.amazonaws.com/111122223333/approval-requests"

    def substituted(text: str) -> dict:
        return json.loads(text.replace("${ApprovalQueueUrl}", queue_url))

    assert substituted(str(machine["DefinitionString"])) == substituted(asl), (
        f"deploy/cloudformation.yaml's {resource} differs from deploy/{asl_file.name}: copy the file in"
    )
    assert machine["RoleArn"] == {"Fn::GetAtt": ["StateMachineRole", "Arn"]}


def test_the_queue_redrives_to_a_dead_letter_queue_after_five_receives(template):
    resources, parameters = template["Resources"], template["Parameters"]
    queue = resources["ApprovalQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["ApprovalDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert parameters["MaxReceiveCount"]["Default"] == 5
    assert queue["VisibilityTimeout"] == {"Ref": "VisibilityTimeout"}
    assert parameters["VisibilityTimeout"]["Default"] >= 60
    assert parameters["VisibilityTimeout"]["MinValue"] >= 60
    assert resources["ApprovalDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"


def test_the_template_grants_what_the_iam_policies_in_deploy_grant(template):
    resources = template["Resources"]
    portal = resources["PortalPolicy"]["Properties"]["PolicyDocument"]
    assert statements(portal) == statements(json.loads((REPO_DIR / "deploy" / "iam-policy.json").read_text()))
    consume = next(s for s in portal["Statement"] if s["Sid"] == "ConsumeTheApprovalQueue")
    assert consume["Resource"] == {"Fn::GetAtt": ["ApprovalQueue", "Arn"]}
    send = resources["SendApprovalRequestsPolicy"]["Properties"]["PolicyDocument"]
    role_policy = json.loads((REPO_DIR / "deploy" / "state-machine-role-policy.json").read_text())
    assert statements(send) == statements(role_policy) == {"SendApprovalRequests": {"sqs:SendMessage"}}
    assert send["Statement"][0]["Resource"] == {"Fn::GetAtt": ["ApprovalQueue", "Arn"]}
    role = resources["StateMachineRole"]["Properties"]
    assert role["ManagedPolicyArns"] == [{"Ref": "SendApprovalRequestsPolicy"}]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "states.amazonaws.com"}


def test_the_template_outputs_what_the_portal_and_its_operators_need(template):
    assert {"ApprovalQueueUrl", "StateMachineArn", "PortalPolicyArn", "DeadLetterQueueUrl"} <= set(template["Outputs"])


def test_cfn_lint_finds_nothing_in_the_template():
    result = run([tool("cfn-lint"), str(TEMPLATE)])
    assert result.returncode == 0, result.stdout + result.stderr


def emulator_client(endpoint: str, service: str):
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def portal_role(client, suffix: str) -> dict:
    """An existing role the portal runs as (an ECS task's), for the template's PortalRoleName."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    return client("iam").create_role(RoleName=f"portal-{suffix}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]


def test_the_template_deploys_on_the_aws_emulator(moto_server):

    client = functools.partial(emulator_client, moto_server)
    suffix = uuid.uuid4().hex[:8]
    role = portal_role(client, suffix)
    stack = f"approval-portal-{suffix}"
    client("cloudformation").create_stack(
        StackName=stack,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[
            {"ParameterKey": "QueueName", "ParameterValue": f"approvals-cfn-{suffix}"},
            {"ParameterKey": "StateMachineName", "ParameterValue": f"approval-cfn-{suffix}"},
            {"ParameterKey": "PortalRoleName", "ParameterValue": role["RoleName"]},
        ],
    )
    described = client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}

    attributes = client("sqs").get_queue_attributes(QueueUrl=outputs["ApprovalQueueUrl"], AttributeNames=["All"])
    attributes = attributes["Attributes"]
    assert attributes["QueueArn"].endswith(f":approvals-cfn-{suffix}")
    assert attributes["VisibilityTimeout"] == "60"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(f":approvals-cfn-{suffix}-dlq")
    assert int(redrive["maxReceiveCount"]) == 5

    # The moto server keeps CloudFormation's state machines apart from the API's once state
    # machine execution is on (the tests turn it on), so ask CloudFormation about it.
    machine = client("cloudformation").describe_stack_resource(
        StackName=stack, LogicalResourceId="ApprovalStateMachine"
    )
    machine = machine["StackResourceDetail"]
    assert machine["ResourceStatus"] == "CREATE_COMPLETE"
    assert machine["PhysicalResourceId"] == outputs["StateMachineArn"]
    assert outputs["StateMachineArn"].endswith(f":stateMachine:approval-cfn-{suffix}")

    attached = client("iam").list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [outputs["PortalPolicyArn"]]


def test_with_member_roles_the_portal_may_assume_exactly_those_and_without_none(moto_server):

    client = functools.partial(emulator_client, moto_server)
    suffix = uuid.uuid4().hex[:8]
    role = portal_role(client, suffix)
    members = ["arn:aws:iam::111111111111:role/approval-portal", "arn:aws:iam::222222222222:role/approval-portal"]
    stack = f"approval-portal-{suffix}"
    client("cloudformation").create_stack(
        StackName=stack,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[
            {"ParameterKey": "QueueName", "ParameterValue": f"approvals-cfn-{suffix}"},
            {"ParameterKey": "StateMachineName", "ParameterValue": f"approval-cfn-{suffix}"},
            {"ParameterKey": "PortalRoleName", "ParameterValue": role["RoleName"]},
            {"ParameterKey": "MemberRoleArns", "ParameterValue": ",".join(members)},
        ],
    )
    described = client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    attached = {
        p["PolicyArn"] for p in client("iam").list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    }
    assert attached == {outputs["PortalPolicyArn"], outputs["MemberAccountsPolicyArn"]}
    iam = client("iam")
    version = iam.get_policy(PolicyArn=outputs["MemberAccountsPolicyArn"])["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=outputs["MemberAccountsPolicyArn"], VersionId=version)
    document = document["PolicyVersion"]["Document"]
    document = json.loads(document) if isinstance(document, str) else document
    [statement] = document["Statement"]
    assert statement["Action"] == "sts:AssumeRole" and statement["Resource"] == members


def test_the_default_broker_of_make_run_accepts_a_task(tmp_path):
    # `make run` uses the SQLite broker when CELERY_BROKER_URL is unset: publishing must work.
    env = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "DATABASE_URL"}}
    env["PORTAL_VAR_DIR"] = str(tmp_path)
    script = "from approvals.tasks import sweep_callbacks; print(sweep_callbacks.delay().id)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "celery-broker.sqlite3").exists()


def test_the_shipped_state_machine_takes_approvers_and_requester_from_its_definition_not_its_input(template):
    # Whoever may start an execution writes its input: it must not choose who decides or who asked.
    for text in (ASL.read_text(), str(template["Resources"]["ApprovalStateMachine"]["Properties"]["DefinitionString"])):
        body = json.loads(text)["States"]["WaitForApproval"]["Parameters"]["MessageBody"]
        assert not {"approvers.$", "requester.$"} & set(body)
        assert body["approvers"] == {"groups": ["${ApproverGroup}"]}
        assert body["requester"] == "${Requester}"
        assert not any(key.endswith(".$") and value.startswith("$.") and key != "title.$" and key != "details.$"
                       for key, value in body.items())  # fmt: skip
    substitutions = template["Resources"]["ApprovalStateMachine"]["Properties"]["DefinitionSubstitutions"]
    assert substitutions["ApproverGroup"] == {"Ref": "ApproverGroup"}
    assert substitutions["Requester"] == {"Ref": "Requester"}


def test_the_queue_policy_lets_only_the_state_machine_role_send(template):
    resources = template["Resources"]
    policy = resources["ApprovalQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "ApprovalQueue"}]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
    assert statement["Action"] == "sqs:SendMessage"
    allowed = statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]["Fn::If"]
    state_machine_role = {"Fn::GetAtt": ["StateMachineRole", "Arn"]}
    # The state machine's role, and the portal's own role when named (it replays dead letters).
    assert allowed[0] == "AttachToPortalRole"
    assert allowed[1][0] == state_machine_role and "${PortalRoleName}" in allowed[1][1]["Fn::Sub"]
    assert allowed[2] == [state_machine_role]
