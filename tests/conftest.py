"""Real parts for the tests: the moto server as AWS, the dev IdP, portal processes.

Tests that need a part that is absent skip with a reason locally; with CI=true a skip fails.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO_DIR = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        # In CI every part is installed: a skip means something is missing, which is a failure.
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {report.longrepr}"


def pytest_report_header(config):
    """Which leg this is (docs/development.md, "Test legs"): database and broker kind, no credentials."""
    from django.conf import settings
    from django.db import connection

    broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
    return f"database: {connection.vendor}, broker: {broker}, var directory: {settings.VAR_DIR}"


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres"):
        from django.db import connection

        if connection.vendor != "postgresql":
            # CI's SQLite leg deselects these (-m "not postgres") rather than skipping them.
            pytest.skip(f"needs PostgreSQL, the database is {connection.vendor} (set DATABASE_URL)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            requests.get(url, timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


class Process:
    """A child process with its output in a file (read by the tests: no secrets in logs)."""

    def __init__(self, name: str, args: list[str], env: dict, log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._file = self.log.open("w")
        self.popen = subprocess.Popen(
            args, cwd=REPO_DIR, env=env, stdout=self._file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        # And whatever it left behind in its process group (a gunicorn worker whose master was
        # killed, say), which would keep its database session and block dropping the test DB.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._file.close()

    def output(self) -> str:
        self._file.flush()
        return self.log.read_text(errors="replace")


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


# ---------------------------------------------------------------------------
# AWS: the moto server
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def moto_server(log_dir):
    """A moto server on a free port with Step Functions execution on; yields its URL."""
    port = free_port()
    env = {**os.environ, "MOTO_PORT": str(port)}  # its SQS integration calls itself on this port
    process = Process("moto", [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], env, log_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/moto-api/", process.popen, process.log)
        from approvals.integrations.aws import configure_emulator

        configure_emulator(url)
        yield url
    finally:
        process.stop()


@pytest.fixture
def aws(moto_server, settings):
    """Point the portal at the moto server, with a fresh queue (and DLQ) for this test."""
    from approvals.integrations import aws as gateway

    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_EMULATOR = True
    settings.AWS_ACCESS_KEY_ID = "testing"
    settings.AWS_SECRET_ACCESS_KEY = "testing"
    gateway._client.cache_clear()
    name = f"approvals-{uuid.uuid4().hex[:10]}"
    settings.APPROVAL_QUEUE_NAME = name
    settings.APPROVAL_QUEUE_URL = gateway.ensure_queue(name=name, visibility_timeout=30, max_receive_count=3)
    yield settings
    gateway._client.cache_clear()


@pytest.fixture
def demo_state_machine(aws):
    """The example state machine from deploy/, wired to this test's queue, in its variant that
    takes approvers and requester from the execution's input (as behind a trusted front door;
    the tests' approver trust setting is "free", see `approver_trust_free`)."""
    from approvals.integrations import aws as gateway
    from approvals.management.commands.aws_bootstrap import demo_definition

    return gateway.ensure_state_machine(
        name=f"approval-demo-{uuid.uuid4().hex[:8]}",
        definition=demo_definition(aws.APPROVAL_QUEUE_URL, from_input=True),
        role_arn="arn:aws:iam::123456789012:role/approval-demo-states",
    )


@pytest.fixture
def shipped_state_machine(aws):
    """The example state machine exactly as deploy/ ships it (approvers and requester from its
    definition), with the approver trust setting `manage.py aws_bootstrap` gives it."""
    from approvals.integrations import aws as gateway
    from approvals.management.commands.aws_bootstrap import demo_definition, demo_trust_configure

    arn = gateway.ensure_state_machine(
        name=f"approval-shipped-{uuid.uuid4().hex[:8]}",
        definition=demo_definition(aws.APPROVAL_QUEUE_URL),
        role_arn="arn:aws:iam::123456789012:role/approval-demo-states",
    )
    demo_trust_configure(arn)
    return arn


@pytest.fixture
def input_state_machine(aws):
    """The example with options, a form and a Choice state (deploy/state-machine-input.asl.json)
    exactly as deploy/ ships it, with the approver trust setting `manage.py aws_bootstrap` gives it."""
    from approvals.integrations import aws as gateway
    from approvals.management.commands.aws_bootstrap import demo_definition, demo_trust_configure

    arn = gateway.ensure_state_machine(
        name=f"approval-input-{uuid.uuid4().hex[:8]}",
        definition=demo_definition(aws.APPROVAL_QUEUE_URL, with_options=True),
        role_arn="arn:aws:iam::123456789012:role/approval-demo-states",
    )
    demo_trust_configure(arn)
    return arn


# ---------------------------------------------------------------------------
# Celery's eager mode
# ---------------------------------------------------------------------------
@pytest.fixture
def celery_eager():
    """Run tasks in-process when queued (Celery's eager mode) instead of publishing to the broker.

    Not propagating: a task's autoretry then runs the retry right away (eager ignores the
    countdown), as a worker would after the backoff. (test_callbacks.py and test_sources.py
    have their own, propagating.)
    """
    from portal.celery import app

    old = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, False
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = old


@pytest.fixture
def committed(django_capture_on_commit_callbacks, celery_eager):
    """Run a service and then its on-commit hooks, as a real commit would: the sends happen."""

    def run(function, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return function(*args, **kwargs)

    return run


@pytest.fixture
def smtp_down(settings):
    """The SMTP backend pointed at a local port nobody listens on: every connection is refused."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = free_port()
    settings.EMAIL_TIMEOUT = 2
    settings.NOTIFICATION_MAX_ATTEMPTS = 3
    return settings


# ---------------------------------------------------------------------------
# Approver trust: the tests' messages name their approvers
# ---------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def empty_cache():
    """Each test starts with an empty Django cache (throttle counters, token lookups, audit
    windows), as with the database: what one test counted is not another's."""
    from django.core.cache import caches

    for cache in caches.all(initialized_only=True):
        cache.clear()


@pytest.fixture(autouse=True)
def approver_trust_free(request):
    """For tests with a database: one catch-all "free" approver trust setting, so the many test
    messages that name their approvers keep doing so. A state machine nobody configured is routing
    only (approvals/trust.py); `@pytest.mark.trust_unconfigured` tests that default."""
    if request.node.get_closest_marker("trust_unconfigured"):
        return
    if not request.node.get_closest_marker("django_db") and not {"db", "transactional_db"} & set(request.fixturenames):
        return
    request.getfixturevalue("_django_db_helper")  # pytest-django's own way in: db or transactional_db
    from approvals.models import ApproverTrust

    ApproverTrust.objects.create(name="tests: messages name their approvers", mode=ApproverTrust.Mode.FREE)


# ---------------------------------------------------------------------------
# The dev IdP and the portal's processes
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def web_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def devidp_data_dir(tmp_path_factory) -> Path:
    """The dev IdP's files: its database and its signing key (oidc-key.pem)."""
    return tmp_path_factory.mktemp("devidp")


@pytest.fixture(scope="session")
def devidp(web_port, log_dir, devidp_data_dir):
    """The dev OIDC provider (django-oauth-toolkit), with the portal's callback registered."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}/o"
    env = {
        **os.environ,
        "DEVIDP_ISSUER": issuer,
        "DEVIDP_DATA_DIR": str(devidp_data_dir),
        "DEVIDP_REDIRECT_URIS": f"http://127.0.0.1:{web_port}/oidc/callback/",
        "DEVIDP_POST_LOGOUT_REDIRECT_URIS": f"http://127.0.0.1:{web_port}/",
    }
    env.pop("DEVIDP_DEMO_PASSWORD", None)
    setup = subprocess.run(
        [sys.executable, "-m", "devidp", "setup"], cwd=REPO_DIR, env=env, capture_output=True, text=True
    )
    assert setup.returncode == 0, setup.stderr
    process = Process(
        "devidp", [sys.executable, "-m", "devidp", "serve", "--host", "127.0.0.1", "--port", str(port)], env, log_dir
    )
    try:
        wait_for_http(f"{issuer}/.well-known/openid-configuration", process.popen, process.log)
        yield issuer
    finally:
        process.stop()


def database_url() -> str:
    from django.db import connection

    config = connection.settings_dict
    if config["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{config['NAME']}"
    auth = config["USER"] + (f":{config['PASSWORD']}" if config["PASSWORD"] else "")
    return f"postgres://{auth}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}/{config['NAME']}"


@pytest.fixture
def portal_stack(request, transactional_db, aws, devidp, web_port, log_dir, settings):
    """The portal's web server (gunicorn) and a Celery worker, as real processes on the test DB.

    `@pytest.mark.portal_env(NAME="value")` adds environment variables for both processes;
    `@pytest.mark.portal_worker_args("-B", ...)` adds arguments to the worker's command line.
    """
    marker = request.node.get_closest_marker("portal_env")
    worker_args = request.node.get_closest_marker("portal_worker_args")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "AWS_ENDPOINT_URL": settings.AWS_ENDPOINT_URL,
        "APPROVAL_QUEUE_URL": settings.APPROVAL_QUEUE_URL,
        "APPROVAL_CONSUMER_WAIT_SECONDS": "1",
        "OIDC_OP_ISSUER": devidp,
        "PORTAL_BASE_URL": f"http://127.0.0.1:{web_port}",
        "PYTHONUNBUFFERED": "1",
        # Metrics files per stack (tests run side by side); no worker endpoint unless a test asks.
        "PROMETHEUS_MULTIPROC_DIR": str(log_dir / f"metrics-{uuid.uuid4().hex[:8]}"),
        "WORKER_METRICS_PORT": "0",
        **(marker.kwargs if marker else {}),
    }
    web = Process(
        "web",
        [
            venv_bin("gunicorn"),
            "portal.wsgi:application",
            "--bind",
            f"127.0.0.1:{web_port}",
            "--threads",
            "4",
            "--no-control-socket",
        ],
        env,
        log_dir,
    )
    workers = []

    def start_worker(name: str = "worker") -> Process:
        """A Celery worker on this stack (a test that stopped one starts another: a restart)."""
        workers.append(Process(
            name,
            [
                venv_bin("celery"), "-A", "portal", "worker", "--pool", "solo", "--loglevel", "INFO",
                "--schedule", str(log_dir / f"beat-{uuid.uuid4().hex[:8]}"),
                *(worker_args.args if worker_args else ()),
            ],
            env,
            log_dir,
        ))  # fmt: skip
        return workers[-1]

    worker = start_worker()
    try:
        wait_for_http(f"http://127.0.0.1:{web_port}/signin/", web.popen, web.log)
        yield {"url": f"http://127.0.0.1:{web_port}", "web": web, "worker": worker, "start_worker": start_worker}
    finally:
        for each in workers:
            each.stop()
        web.stop()
