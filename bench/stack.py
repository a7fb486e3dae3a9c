"""The benchmark's processes and services: start, wait for, measure, stop.

Everything here is started by the bench and stopped by it (each child in its own session, so
a stop reaches its whole process group and nothing is left running). PostgreSQL and Redis are
the local ones (or DATABASE_URL / CELERY_BROKER_URL): the bench creates and drops its own
database and uses its own Redis database number.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

REPO_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


class Process:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict, log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._file = self.log.open("a")
        self._file.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(args)}\n")
        self._file.flush()
        self.popen = subprocess.Popen(  # noqa: S603 - our own commands
            args, cwd=REPO_DIR, env=env, stdout=self._file, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        self._file.flush()
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30, sig: int = signal.SIGTERM) -> None:
        """`sig` (SIGTERM) to the whole group, SIGKILL if it lingers."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        # Children that outlived their parent (a prefork child, a gunicorn worker).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._file.close()


def wait_for_http(url: str, process: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check()
        try:
            requests.get(url, timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{process.tail()}")


def wait_for_log(process: Process, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check()
        if text in process.tail(200_000):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{process.name}: no '{text}' within {timeout}s:\n{process.tail()}")


# ---------------------------------------------------------------------------
# Memory: peak RSS from /proc (VmHWM), for a process and its descendants
# ---------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of one process (kernel's high-water mark), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mib(process: Process | None) -> dict | None:
    """The largest peak RSS among a role's processes (and the sum over them), in MiB."""
    if process is None or not process.alive():
        return None
    # The session leader itself when it is Python; `sh -c` wrappers are not used here.
    values = [vm_hwm_kib(pid) for pid in process_tree(process.pid)]
    values = [v for v in values if v]
    if not values:
        return None
    return {"max_mib": round(max(values) / 1024, 1), "sum_mib": round(sum(values) / 1024, 1), "processes": len(values)}


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_seconds(process: Process | None, *, children_only: bool = False) -> float:
    """User + system CPU time of a process and its (living) descendants, in seconds."""
    if process is None or not process.alive():
        return 0.0
    pids = process_tree(process.pid)
    return sum(_cpu(pid) for pid in (pids[1:] if children_only else pids))


# ---------------------------------------------------------------------------
# Services the bench uses but does not own: PostgreSQL and Redis
# ---------------------------------------------------------------------------
def ensure_postgres(url: str) -> None:
    """Make sure the server answers; start the local cluster as .ci/run does if it is down."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if port_open(host, port):
        return
    if host in {"127.0.0.1", "localhost"} and shutil.which("pg_ctlcluster") and Path("/etc/postgresql").is_dir():
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        subprocess.run(  # noqa: S603
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],  # noqa: S607
            check=False,
        )
        for _ in range(30):
            if port_open(host, port):
                return
            time.sleep(1)
    raise SystemExit(f"PostgreSQL does not answer at {host}:{port}: start it or set DATABASE_URL")


def recreate_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def start_redis_if_needed(url: str, log_dir: Path) -> tuple[str, Process | None]:
    """The broker URL to use, and the redis-server the bench started (None: it was running)."""
    parts = urlsplit(url)
    if port_open(parts.hostname or "127.0.0.1", parts.port or 6379):
        return url, None
    if not shutil.which("redis-server"):
        raise SystemExit(f"Redis does not answer at {parts.netloc} and redis-server is not installed")
    port = free_port()
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = Process("redis", args, dict(os.environ), log_dir)
    for _ in range(50):
        if port_open("127.0.0.1", port):
            return f"redis://127.0.0.1:{port}/0", process
        time.sleep(0.1)
    process.stop()
    raise SystemExit("could not start redis-server")


def purge_broker(url: str) -> None:
    """Drop tasks a previous (interrupted) bench left in its Redis database."""
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter("*"):
        name = key.decode(errors="replace")
        if name in {"celery", "unacked", "unacked_index", "unacked_mutex"} or name.startswith(("_kombu", "celery")):
            client.delete(key)
    client.close()


# ---------------------------------------------------------------------------
# The portal's processes and the AWS stand-ins
# ---------------------------------------------------------------------------
def start_moto(env: dict, log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    # MOTO_PORT must equal the port: its SQS integration (Step Functions → SQS) calls itself.
    process = Process(
        "moto",
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        {**env, "MOTO_PORT": str(port)},
        log_dir,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/moto-api/", process)
    # Without this, Step Functions executions never run on the moto server.
    requests.post(f"{url}/moto-api/config", json={"stepfunctions": {"execute_state_machine": True}}, timeout=10)
    return process, url


def start_fake_sfn(env: dict, log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    process = Process("fake-sfn", [sys.executable, "-m", "bench.fake_sfn", "--port", str(port)], env, log_dir)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/", process)
    return process, url


def start_web(env: dict, log_dir: Path, *, workers: int = 2, threads: int = 4) -> tuple[Process, str]:
    """gunicorn as the Procfile runs it (2 workers × 4 threads by default), gunicorn.conf.py included."""
    port = free_port()
    args = [
        str(VENV_BIN / "gunicorn"), "portal.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads), "--no-control-socket", "--access-logfile", "-",
    ]  # fmt: skip
    process = Process("web", args, env, log_dir)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/healthz", process)
    return process, url


def start_worker(env: dict, log_dir: Path, *, concurrency: int, name: str = "worker") -> Process:
    """A Celery worker as the Procfile runs it (prefork pool), with the queue consumer thread."""
    args = [
        str(VENV_BIN / "celery"), "-A", "portal", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--hostname", f"{name}@bench",
    ]  # fmt: skip
    process = Process(name, args, env, log_dir)
    wait_for_log(process, " ready.", timeout=90)
    return process
