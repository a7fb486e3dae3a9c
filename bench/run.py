"""`make bench`: throughput and latency of the portal's hot paths, beside a bare baseline each.

    make bench                 # the full run (about 20 minutes on 2 quiet cores)
    make bench QUICK=1         # scaled down: a smoke run in under three minutes
    .venv/bin/python bench/run.py --only ingest,latency --profile ingest
    QUICK=1 .venv/bin/python bench/run.py --only details     # one scenario
    BENCH_SIZES='{"ingest_n": 2000}' make bench    # override single sizes (experiments)

It starts what it needs — the moto server (AWS), a fake Step Functions endpoint (scenario 4),
gunicorn and Celery workers with the portal's settings — on PostgreSQL (DATABASE_URL's server,
in a database of its own that it creates and drops) and Redis (CELERY_BROKER_URL, default
redis://127.0.0.1:6379/15; a private redis-server if none answers). Each scenario warms up, then
measures. It prints one table and writes bench/results.json; process logs go to var/bench/logs.

All processes run with production settings (PORTAL_ENV=production, secrets generated for the run,
JSON logs, Django's file mail backend into var/bench/mail). Scenarios 1 and 4 run 3 alternating
portal/baseline pairs and report the median ratio.

Scenarios (bench/scenarios/): 1 ingest, 2 queue-to-inbox latency, 3 decision-to-callback latency,
4 callback ceiling, 5 flat scaling with data, 6 concurrency, 7 memory (measured during 1), 8 the
request page and the mail for details at the size limit (`--only details`); `--only sources`: ingest
with 1 and with 4 approval sources beside the bare loop (docs/sources.md).
docs/benchmarks.md explains each, and records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

REPO_DIR = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on the path: put the repository there instead, so
# that bench's modules are only ever `bench.<name>` and shadow nothing.
if sys.path and Path(sys.path[0]).resolve() == REPO_DIR / "bench":
    sys.path[0] = str(REPO_DIR)
elif str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

from bench import stack  # noqa: E402

SCENARIOS = [
    "ingest",
    "latency",
    "callback_latency",
    "callback_ceiling",
    "concurrency",
    "scaling",
    "details",
    "sources",
]
LOG_ROOT = REPO_DIR / "var" / "bench"


# ---------------------------------------------------------------------------
# Sizes: the full run and the QUICK smoke run
# ---------------------------------------------------------------------------
FULL = {
    "repeats": 3,  # alternating portal/baseline pairs in scenarios 1 and 4; each ratio is their median
    "ingest_n": 3_000,
    "ingest_warmup": 1_000,
    "ingest_web_rounds": 20,
    "ingest_scaleout_n": 3_000,
    "latency_n": 300,
    "latency_rate": 10.0,
    "callback_n": 150,  # executions per variant (each waits in the moto server: keep ≤ 200)
    "callback_warmup": 10,
    "callback_rate": 10.0,
    "ceiling_n": 1_500,
    "ceiling_processes": [1, 4],
    "scaling_sizes": [1_000, 10_000, 100_000],
    "scaling_repeat": 30,
    "concurrency_single": 200,
    "concurrency_clients": 20,
    "concurrency_per_client": 30,
    "concurrency_contested": 10,
    "admin_matrix": True,
    "details_repeat": 30,
}
QUICK = {
    "repeats": 3,
    "ingest_n": 150,
    "ingest_warmup": 50,
    "ingest_web_rounds": 5,
    "ingest_scaleout_n": 0,
    "latency_n": 20,
    "latency_rate": 10.0,
    "callback_n": 10,
    "callback_warmup": 2,
    "callback_rate": 10.0,
    "ceiling_n": 100,
    "ceiling_processes": [1, 4],
    "scaling_sizes": [1_000, 10_000],
    "scaling_repeat": 10,
    "concurrency_single": 20,
    "concurrency_clients": 20,
    "concurrency_per_client": 3,
    "concurrency_contested": 3,
    "admin_matrix": False,
    "details_repeat": 10,
}


def production_secrets() -> dict:
    """Fresh keys for this run: production settings have no defaults for them."""
    import secrets

    from cryptography.fernet import Fernet

    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "TOKEN_FINGERPRINT_KEY": secrets.token_urlsafe(32),
        "OIDC_RP_CLIENT_SECRET": secrets.token_urlsafe(32),
    }


def bench_database_url() -> str:
    """DATABASE_URL's server, in a database the bench owns (created and dropped by it).

    A name that already says "bench" is used as it is; any other gets "_bench" appended, so the
    bench never drops a database someone else works in.
    """
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench")
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit(f"the bench needs PostgreSQL; DATABASE_URL is {parts.scheme}://…")
    name = parts.path.lstrip("/") or "bench"
    if "bench" not in name:
        name = f"{name}_bench"
    return parts._replace(path=f"/{name}").geturl()


class Bench:
    """What every scenario gets: sizes, the environment, the running processes, results."""

    def __init__(self, args):
        self.quick = args.quick
        # BENCH_SIZES='{"ingest_n": 2000}' overrides single sizes (experiments, not the recorded run).
        self.sizes = {**(QUICK if args.quick else FULL), **json.loads(os.environ.get("BENCH_SIZES") or "{}")}
        self.profile = set(args.profile)
        self.started = time.time()
        self.log_dir = LOG_ROOT / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = LOG_ROOT
        (self.out_dir / "prometheus").mkdir(parents=True, exist_ok=True)  # this process's metrics files
        self.database_url = bench_database_url()
        self.broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
        self.own: list[stack.Process] = []  # every process this bench started, stopped at the end
        self.moto: stack.Process | None = None
        self.moto_url = ""
        self.fake_sfn_url = ""
        self.web: stack.Process | None = None
        self.web_url = ""
        self.worker: stack.Process | None = None
        self.worker_env: dict = {}
        self.queue_url = ""
        self.rows: list = []
        self.errors: list[str] = []
        self.mail_dir = LOG_ROOT / "mail"
        self.committed_requests = None  # bench/progress.py's listener, from setup() on
        self.secrets = production_secrets()

    # -- environment --------------------------------------------------------
    def base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PROMETHEUS_", "EMAIL_", "LOG_"))}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                # Production settings, as the container image runs them: its defaults (no DEBUG,
                # JSON logs, the manifest static storage, persistent database connections), with
                # secrets generated for this run (production has no defaults for them).
                "PORTAL_ENV": "production",
                **self.secrets,
                "DJANGO_DEBUG": "false",
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
                # Plain HTTP on 127.0.0.1, as behind a TLS-terminating proxy (which would set
                # SECURE_PROXY_SSL_HEADER_NAME instead); everything else stays production's.
                "SECURE_SSL_REDIRECT": "false",
                "SESSION_COOKIE_SECURE": "false",
                # Never contacted (the bench's sessions are made in the database), but production
                # refuses a plain-HTTP IdP.
                "OIDC_OP_ISSUER": "https://sso.bench.example.com",
                "OIDC_RP_CLIENT_ID": "approval-portal-bench",
                "PORTAL_BASE_URL": "https://approvals.bench.example.com",
                # Real logging: production's JSON lines, INFO, token redaction, into the process's
                # log file in var/bench/logs/.
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "INFO",
                # Django's own file backend (production has no dev mail backend): every mail is
                # rendered and written, one file per connection, in var/bench/mail/.
                "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                "EMAIL_FILE_PATH": str(self.mail_dir),
                "DATABASE_URL": self.database_url,
                "CELERY_BROKER_URL": self.broker_url,
                "AWS_ENDPOINT_URL": self.moto_url,
                "APPROVAL_QUEUE_URL": self.queue_url or f"{self.moto_url}/123456789012/approval-requests",
                "PROMETHEUS_MULTIPROC_DIR": str(self.out_dir / "prometheus"),
                "WORKER_METRICS_PORT": "0",
                # The consumer's long poll (the baselines use the same). It returns as soon as a
                # message arrives, so it doesn't change a latency; shorter than the default 10 s
                # only so that a worker's warm shutdown between scenarios is quick.
                "APPROVAL_CONSUMER_WAIT_SECONDS": "2",
                "PYTHONUNBUFFERED": "1",
                "PATH": f"{stack.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        return env

    # -- processes ----------------------------------------------------------
    def start_worker(self, concurrency: int, **extra_env: str) -> stack.Process:
        self.stop_worker()
        env = {**self.base_env(), **extra_env}
        self.worker_env = env
        self.worker = stack.start_worker(env, self.log_dir, concurrency=concurrency)
        self.own.append(self.worker)
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            # A warm shutdown (SIGTERM): the consumer finishes its long poll. Killed mid-poll, the
            # moto server would still hand the next messages to the dead request, hidden for the
            # visibility timeout (60 s) from the next worker.
            self.worker.stop()
            self.worker = None

    def rss(self) -> dict:
        return {"worker": stack.peak_rss_mib(self.worker), "web": stack.peak_rss_mib(self.web)}

    def elapsed(self) -> float:
        return time.time() - self.started

    @contextmanager
    def profiling(self, name: str, process: stack.Process | None, *, thread_filter: str = ""):
        """py-spy on `process` (and its children) while the block runs, if --profile names it."""
        if name not in self.profile or process is None:
            yield
            return
        from bench import profiling

        with profiling.record(name, process.pid, self.out_dir, thread_filter=thread_filter):
            yield


def setup(bench: Bench) -> None:
    stack.ensure_postgres(bench.database_url)
    broker_url, redis_process = stack.start_redis_if_needed(bench.broker_url, bench.log_dir)
    bench.broker_url = broker_url
    if redis_process is not None:
        bench.own.append(redis_process)
    stack.purge_broker(bench.broker_url)
    stack.recreate_database(bench.database_url)
    bench.moto, bench.moto_url = stack.start_moto(bench.base_env(), bench.log_dir)
    bench.own.append(bench.moto)

    # This process is a Django client too (fixtures, the DB poller, the test client): same settings.
    os.environ.update(bench.base_env())
    import django

    django.setup()
    from django.core.management import call_command

    import portal.celery  # noqa: F401 - the Celery app, so that tasks queued from here reach the broker
    from approvals.integrations import aws as gateway

    call_command("migrate", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    from bench import progress

    progress.install_commit_notifications(bench.database_url)
    bench.committed_requests = progress.CommittedRequests(bench.database_url)
    shutil.rmtree(bench.mail_dir, ignore_errors=True)
    bench.mail_dir.mkdir(parents=True)
    bench.queue_url = gateway.ensure_queue(name="approval-requests", visibility_timeout=60, max_receive_count=5)
    os.environ["APPROVAL_QUEUE_URL"] = bench.queue_url
    from django.conf import settings

    settings.APPROVAL_QUEUE_URL = bench.queue_url

    from bench.common import APPROVER_EMAIL, APPROVER_GROUP, ensure_user

    ensure_user(APPROVER_EMAIL, groups=[APPROVER_GROUP])
    from approvals import services

    # The bench's messages name their approvers (as a trusted front door's would): say so, or
    # the portal ignores them (routing only, the default for a state machine nobody configured).
    services.approver_trust_save(
        actor=None, name="bench: messages name their approvers", state_machine_arn="", state_name="", mode="free"
    )
    bench.web, bench.web_url = stack.start_web(bench.base_env(), bench.log_dir)
    bench.own.append(bench.web)


def environment_facts(bench: Bench) -> dict:
    from importlib.metadata import version

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    try:
        import redis

        redis_version = redis.Redis.from_url(bench.broker_url).info("server")["redis_version"]
    except Exception as error:  # noqa: BLE001 - a fact we can do without
        redis_version = f"unknown ({type(error).__name__})"
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    )
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": postgres,
        "redis": redis_version,
        "git_commit": commit + ("+dirty" if dirty else ""),
        "versions": {
            name: version(name)
            for name in ("Django", "celery", "kombu", "boto3", "botocore", "moto", "psycopg", "gunicorn", "redis")
        },
        "load_average_at_start": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK", "") not in {"", "0"})
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument(
        "--profile",
        default=os.environ.get("BENCH_PROFILE", ""),
        type=lambda v: [x for x in v.split(",") if x],
        help="scenarios to profile with py-spy (ingest, callback_latency, callback_ceiling)",
    )
    parser.add_argument("--keep-db", action="store_true", help="don't drop the bench database at the end")
    parser.add_argument("--output", default=str(REPO_DIR / "bench" / "results.json"))
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]

    bench = Bench(args)
    print(
        f"bench: {'QUICK' if bench.quick else 'full'} run of {', '.join(chosen)}; logs in {bench.log_dir}", flush=True
    )
    facts: dict = {}
    try:
        setup(bench)
        facts = environment_facts(bench)
        print(
            f"bench: {facts['cores']} cores, {facts['ram_gib']} GiB, Python {facts['python']}, "
            f"PostgreSQL {facts['postgres']}, Redis {facts['redis']}, moto {facts['versions']['moto']}",
            flush=True,
        )
        import importlib

        for name in chosen:
            started = time.time()
            print(f"\n== {name} ({bench.elapsed():.0f}s in)", flush=True)
            try:
                module = importlib.import_module(f"bench.scenarios.{name}")
                module.run(bench)
            except Exception:
                message = f"{name}: {traceback.format_exc()}"
                bench.errors.append(message)
                print(f"!! scenario {message}", flush=True)
            print(f"== {name} took {time.time() - started:.0f}s", flush=True)
    finally:
        if bench.committed_requests is not None:
            bench.committed_requests.stop()
        for process in reversed(bench.own):
            process.stop()
        if not args.keep_db:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # noqa: BLE001, S110 - Django may not be set up yet
                pass
            stack.drop_database(bench.database_url)

    from bench import report

    report.print_table(bench.rows)
    result = {
        "mode": "quick" if bench.quick else "full",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": round(bench.elapsed(), 1),
        "load_average_at_end": os.getloadavg(),
        "machine": facts,
        "sizes": bench.sizes,
        "rows": [report.as_dict(row) for row in bench.rows],
        "errors": bench.errors,
    }
    Path(args.output).write_text(json.dumps(result, indent=2, default=str))
    print(f"\nbench: {bench.elapsed():.0f}s; results in {args.output}", flush=True)
    if bench.errors:
        print(f"bench: {len(bench.errors)} scenario(s) failed to run: see above", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
