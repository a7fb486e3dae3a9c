"""`make run`: the whole portal on one laptop, from the Procfile, stopped cleanly on Ctrl-C.

Order: the AWS emulator and the dev IdP, then `init` (migrate, queue + state machine), then
web, worker and beat, then `demo` (a few executions, so the inbox is not empty).

Ports: PORTAL_PORT, DEVIDP_PORT, MOTO_PORT and WORKER_METRICS_PORT; every URL that depends on
them is derived (portal/devports.py, docs/running-locally.md). Each output line starts with the
name of the program that wrote it, as foreman and honcho do.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portal import devports  # noqa: E402 - after the repository is on the path

SERVICES = ["aws", "idp", "web", "worker", "beat"]
NAME_WIDTH = max(len(name) for name in [*SERVICES, "init", "demo", "devstack"])
COLORS = ["36", "33", "32", "35", "34", "31", "96", "93"]
_print_lock = threading.Lock()


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        match = re.match(r"^([a-z]+):\s*(.+)$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def prefix(name: str, color: bool) -> str:
    label = f"{name:<{NAME_WIDTH}} |"
    if not color:
        return label
    code = COLORS[sum(map(ord, name)) % len(COLORS)]
    return f"\033[{code}m{label}\033[0m"


def emit(name: str, line: str, *, color: bool | None = None) -> None:
    """One line of output, after the name of the program that wrote it."""
    color = sys.stdout.isatty() if color is None else color
    with _print_lock:
        sys.stdout.write(f"{prefix(name, color)} {line.rstrip()}\n")
        sys.stdout.flush()


def say(line: str) -> None:
    emit("devstack", line)


def relay(name: str, stream) -> threading.Thread:
    """Copy a child's output to ours, line by line, each after the child's name."""

    def run() -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                emit(name, raw.decode(errors="replace"))

    thread = threading.Thread(target=run, name=f"relay-{name}", daemon=True)
    thread.start()
    return thread


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group still runs."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_port(host: str, port: int, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not start listening on {host}:{port} within {timeout:.0f}s")


def stack_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment of every process of the stack: the ports and what follows from them."""
    env = devports.stack_environment(environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def bind_address(bind: str) -> tuple[str, int]:
    """Where to reach a `host:port` bind address (a wildcard host is reached on 127.0.0.1)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    return (host if host not in {"", "0.0.0.0", "::"} else "127.0.0.1"), int(port)  # noqa: S104


def main() -> int:
    try:
        env = stack_environment(dict(os.environ))
    except ValueError as error:
        raise SystemExit(f"make run: {error}") from None
    commands = procfile()
    processes: dict[str, subprocess.Popen] = {}
    relays: list[threading.Thread] = []

    def spawn(name: str, command: str) -> subprocess.Popen:
        process = subprocess.Popen(  # noqa: S602 - the Procfile's own commands
            command,
            shell=True,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        relays.append(relay(name, process.stdout))
        return process

    def start(name: str) -> None:
        say(f"starting {name}: {commands[name]}")
        # `exec`: the shell becomes the program, so the stop signal reaches it, as in a container.
        processes[name] = spawn(name, f"exec {commands[name]}")

    def one_shot(name: str) -> None:
        say(f"running {name}: {commands[name]}")
        process = spawn(name, commands[name])
        try:
            returncode = process.wait()
        except KeyboardInterrupt:
            if group_alive(process.pid):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
        if returncode != 0:
            raise SystemExit(f"'{name}' failed; see the output above")

    def stop(*_args) -> None:
        # The last started first, each waited for: the worker and web stop before the AWS
        # emulator and the IdP they talk to (as compose stops dependents first). Every process
        # of a group counts, children included; what is left at the deadline is killed.
        deadline = time.monotonic() + 20
        for name, process in reversed(processes.items()):
            if process.poll() is None:
                say(f"stopping {name}")
                # The program only (it stops its own children): a Celery worker whose pool
                # children got the signal too can hang in its shutdown.
                process.send_signal(signal.SIGTERM)
            while group_alive(process.pid) and time.monotonic() < deadline:
                process.poll()  # reaps the shell, so its own pid stops counting
                time.sleep(0.1)
            if group_alive(process.pid):
                say(f"killing what is left of process group {process.pid}")
                os.killpg(process.pid, signal.SIGKILL)
            process.poll()
        for thread in relays:  # the last lines the programs wrote while stopping
            thread.join(timeout=max(0.5, deadline - time.monotonic()))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Ctrl-C stops everything, even when a non-interactive shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        aws = urlsplit(env["AWS_ENDPOINT_URL"])
        start("aws")
        wait_for_port(aws.hostname, aws.port, "the AWS emulator")
        start("idp")
        wait_for_port("127.0.0.1", int(env["DEVIDP_PORT"]), "the dev IdP")
        one_shot("init")
        forgotten = close_forgotten_requests(env)
        for name in ("web", "worker", "beat"):
            start(name)
        wait_for_port(*bind_address(env["WEB_BIND"]), "the web server")
        one_shot("demo")
        print_banner(env)
        if forgotten:
            print(f" Note: {forgotten}\n", flush=True)
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    say(f"{name} exited with {process.returncode}; stopping everything")
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


def close_forgotten_requests(env: dict) -> str:
    """Before serving: the waiting requests whose executions the restarted AWS emulator forgot
    (it keeps nothing across restarts) are closed by the system. Returns the line for the banner."""
    command = [sys.executable, "manage.py", "close_forgotten_requests", "-v0"]
    print("[devstack] running: python manage.py close_forgotten_requests", flush=True)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        return "Could not check the waiting requests against the restarted AWS emulator; see the output above."
    notice = result.stdout.strip()
    if notice:
        print(f"[devstack] {notice}", flush=True)
    return notice


def banner(env: dict) -> str:
    """What runs, where: every address from the environment the processes really got."""
    from devidp.seed import demo_passwords

    passwords = demo_passwords()
    endpoint = env["AWS_ENDPOINT_URL"]
    queue = env.get("APPROVAL_QUEUE_URL", f"{endpoint}/123456789012/approval-requests")
    metrics_port = int(env.get("WORKER_METRICS_PORT") or 0)
    metrics = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else "off (WORKER_METRICS_PORT=0)"
    var_dir = env.get("PORTAL_VAR_DIR") or str(ROOT / "var")
    machine = env.get("DEMO_STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:approval-demo")
    # The ports that differ from the defaults, which another shell needs to reach this stack.
    ports = "".join(
        f"{name}={env[name]} " for name, default in devports.DEFAULT_PORTS.items() if env[name] != str(default)
    )
    return f"""
==========================================================================
 Approval portal is running.           Stop everything with Ctrl-C.

 Portal:         {env["PORTAL_BASE_URL"]}/          (admin: /admin/, health: /readyz)
 Dev IdP:        {env["OIDC_OP_ISSUER"]}  (OIDC issuer)
 AWS emulator:   {endpoint}  (moto server; any credentials)
 Queue URL:      {queue}
 State machine:  {machine}
 Worker metrics: {metrics}
 Files:          {var_dir}  (database, broker, mail: {Path(var_dir) / "mail"})

 Sign in as (user / password):
   alice / {passwords["alice"]}   approver, group finance-approvers
   bob   / {passwords["bob"]}   requester of the demo approvals
   carol / {passwords["carol"]}   portal admin (group portal-admins)
   dave  / {passwords["dave"]}   no groups

 Start another approval:
   {ports}.venv/bin/python manage.py demo_start --count 1
==========================================================================
"""


def print_banner(env: dict) -> None:
    with _print_lock:
        print(banner(env), flush=True)


if __name__ == "__main__":
    sys.exit(main())
