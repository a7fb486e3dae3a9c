"""`make run`: the whole portal on one laptop, from the Procfile, stopped cleanly on Ctrl-C.

Order: the AWS emulator and the dev IdP, then `init` (migrate, queue + state machine), then
web, worker and beat, then `demo` (a few executions, so the inbox is not empty).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ["aws", "idp", "web", "worker", "beat"]


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        match = re.match(r"^([a-z]+):\s*(.+)$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


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


def main() -> int:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MOTO_PORT", "5005")
    env.setdefault("AWS_ENDPOINT_URL", f"http://127.0.0.1:{env['MOTO_PORT']}")
    env.setdefault("PYTHONUNBUFFERED", "1")
    commands = procfile()
    processes: dict[str, subprocess.Popen] = {}

    def start(name: str) -> None:
        print(f"[devstack] starting {name}: {commands[name]}", flush=True)
        # `exec`: the shell becomes the program, so the stop signal reaches it, as in a container.
        command = f"exec {commands[name]}"
        processes[name] = subprocess.Popen(command, shell=True, cwd=ROOT, env=env, start_new_session=True)  # noqa: S602

    def one_shot(name: str) -> None:
        print(f"[devstack] running {name}: {commands[name]}", flush=True)
        if subprocess.run(commands[name], shell=True, cwd=ROOT, env=env, check=False).returncode != 0:  # noqa: S602
            raise SystemExit(f"'{name}' failed; see the output above")

    def stop(*_args) -> None:
        # The last started first, each waited for: the worker and web stop before the AWS
        # emulator and the IdP they talk to (as compose stops dependents first). Every process
        # of a group counts, children included; what is left at the deadline is killed.
        deadline = time.monotonic() + 20
        for name, process in reversed(processes.items()):
            if process.poll() is None:
                print(f"[devstack] stopping {name}", flush=True)
                # The program only (it stops its own children): a Celery worker whose pool
                # children got the signal too can hang in its shutdown.
                process.send_signal(signal.SIGTERM)
            while group_alive(process.pid) and time.monotonic() < deadline:
                process.poll()  # reaps the shell, so its own pid stops counting
                time.sleep(0.1)
            if group_alive(process.pid):
                print(f"[devstack] killing what is left of process group {process.pid}", flush=True)
                os.killpg(process.pid, signal.SIGKILL)
            process.poll()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Ctrl-C stops everything, even when a non-interactive shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        aws = urlsplit(env["AWS_ENDPOINT_URL"])
        start("aws")
        wait_for_port(aws.hostname, aws.port, "the AWS emulator")
        start("idp")
        wait_for_port("127.0.0.1", int(env.get("DEVIDP_PORT", "9000")), "the dev IdP")
        one_shot("init")
        forgotten = close_forgotten_requests(env)
        for name in ("web", "worker", "beat"):
            start(name)
        wait_for_port("127.0.0.1", 8000, "the web server")
        one_shot("demo")
        print_banner(env)
        if forgotten:
            print(f" Note: {forgotten}\n", flush=True)
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"[devstack] {name} exited with {process.returncode}; stopping everything", flush=True)
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


def print_banner(env: dict) -> None:
    sys.path.insert(0, str(ROOT))
    from devidp.seed import demo_passwords

    passwords = demo_passwords()
    issuer = env.get("OIDC_OP_ISSUER", "http://127.0.0.1:9000/o")
    endpoint = env["AWS_ENDPOINT_URL"]
    queue = env.get("APPROVAL_QUEUE_URL", f"{endpoint}/123456789012/approval-requests")
    print(
        f"""
==========================================================================
 Approval portal is running.           Stop everything with Ctrl-C.

 Portal:        http://127.0.0.1:8000/          (admin: /admin/)
 Dev IdP:       {issuer}  (OIDC issuer)
 AWS emulator:  {endpoint}  (moto server; any credentials)
 Queue URL:     {queue}
 State machine: arn:aws:states:us-east-1:123456789012:stateMachine:approval-demo

 Sign in as (user / password):
   alice / {passwords["alice"]}   approver, group finance-approvers
   bob   / {passwords["bob"]}   requester of the demo approvals
   carol / {passwords["carol"]}   portal admin (group portal-admins)
   dave  / {passwords["dave"]}   no groups

 Start another approval:  .venv/bin/python manage.py demo_start --count 1
==========================================================================
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
