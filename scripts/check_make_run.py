"""CI's check of the embedded default: `make run` itself, from this checkout, on other ports.

It starts `make run` (SQLite, the SQLite broker, the moto server, the dev IdP: nothing from the
environment's DATABASE_URL or CELERY_BROKER_URL) with PORTAL_PORT, DEVIDP_PORT, MOTO_PORT and
WORKER_METRICS_PORT set and no other address, then, each step bounded in time:

1. the first page answers (the time from `make run` to it is printed: the first-start figure);
2. /readyz is all green, and the worker's metrics answer on their port;
3. alice signs in through the dev IdP (the real OIDC redirects and login form), opens a demo
   request from her inbox and approves it;
4. the execution SUCCEEDS on the emulator;
5. SIGINT to `make run`'s process group (what Ctrl-C in a terminal sends) stops everything: no
   process of the stack is left, found by a marker in the environment every one of them inherits.

On failure it says which step failed and prints the end of `make run`'s output.
Usage: .venv/bin/python scripts/check_make_run.py [--portal-port 18000 ...] [--venv DIR]
(--venv: `make run` installs its own virtualenv there, from requirements.lock alone.)
"""

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "CHECK_MAKE_RUN_ID"
# Addresses `make run` derives from the ports: none may come from the calling environment.
DERIVED = {
    "PORTAL_BASE_URL", "WEB_BIND", "OIDC_OP_ISSUER", "DEVIDP_ISSUER", "DEVIDP_REDIRECT_URIS",
    "DEVIDP_POST_LOGOUT_REDIRECT_URIS", "AWS_ENDPOINT_URL", "APPROVAL_QUEUE_URL", "OIDC_OP_LOGOUT_ENDPOINT",
}  # fmt: skip
EMBEDDED = {"DATABASE_URL", "CELERY_BROKER_URL", "PORTAL_VAR_DIR", "DEVIDP_DATA_DIR", "CELERY_TASK_DEFAULT_QUEUE"}


class Failed(Exception):
    pass


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait(what: str, check, timeout: float, interval: float = 0.5):
    """Poll `check()` until it returns something truthy; its last error explains a timeout."""
    deadline = time.monotonic() + timeout
    last = "nothing yet"
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as error:  # noqa: BLE001 - reported if the step times out
            result, last = None, f"{type(error).__name__}: {error}"
        if result:
            return result
        time.sleep(interval)
    raise Failed(f"{what}: not within {timeout:.0f}s (last: {last})")


def stack_pids(marker: str) -> list[int]:
    """Every process whose environment carries this run's marker: `make run` and all it started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def sign_in(requests, portal: str, username: str, password: str):
    """Alice's browser: the portal's OIDC redirect to the dev IdP, its login form, back."""
    session = requests.Session()
    login = session.get(f"{portal}/oidc/authenticate/?next=/", timeout=30)
    if "/accounts/login/" not in login.url:
        raise Failed(f"sign-in: expected the dev IdP's login form, got {login.status_code} {login.url}")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
    inbox = session.post(
        login.url,
        data={"csrfmiddlewaretoken": csrf and csrf.group(1), "username": username, "password": password},
        headers={"Referer": login.url},
        timeout=30,
    )
    if inbox.status_code != 200 or inbox.url.rstrip("/") != portal:
        raise Failed(f"sign-in: expected the inbox at {portal}/, got {inbox.status_code} {inbox.url}")
    return session


def approve_a_demo_request(session, portal: str) -> str:
    """Open the first request in the inbox, approve it; return its execution ARN."""

    def a_request():
        return re.search(r'href="(/requests/[0-9a-f-]{36}/)"', session.get(f"{portal}/", timeout=30).text)

    path = wait("a demo request in alice's inbox", a_request, timeout=60).group(1)
    detail_url = f"{portal}{path}"
    detail = session.get(detail_url, timeout=30)
    arn = re.search(r"arn:aws:states:[^<\"\s]+:execution:[^<\"\s]+", detail.text)
    if detail.status_code != 200 or not arn:
        raise Failed(f"request page {detail_url}: {detail.status_code}, execution ARN shown: {bool(arn)}")
    result = session.post(
        f"{detail_url}decide/",
        data={"csrfmiddlewaretoken": session.cookies["portal_csrftoken"], "decision": "approve", "comment": "CI"},
        headers={"Referer": detail_url},
        timeout=30,
    )
    if result.status_code != 200 or not result.url.endswith(f"{path}result/"):
        raise Failed(f"approve: expected the result page, got {result.status_code} {result.url}")
    return arn.group(0)


def check(args, env: dict, output: Path, timings: dict) -> None:
    import boto3  # this script runs in the development virtualenv (.ci/run: after `make test`)
    import requests

    portal = f"http://127.0.0.1:{args.portal_port}"
    started = time.monotonic()
    wait("the first page", lambda: requests.get(f"{portal}/signin/", timeout=10).ok, args.install_timeout)
    timings["first page"] = time.monotonic() - started
    print(f"check_make_run: first page after {timings['first page']:.0f}s", flush=True)

    # The banner comes after the demo requests were started: the stack is complete.
    wait("the banner", lambda: "Approval portal is running" in output.read_text(errors="replace"), 120)

    def ready():
        response = requests.get(f"{portal}/readyz", timeout=15)
        body = response.json()
        if response.status_code == 200 and all(check["ok"] for check in body["checks"].values()):
            return body
        raise Failed(f"{response.status_code} {json.dumps(body)}")

    body = wait("/readyz all green", ready, 120, interval=2)
    print(f"check_make_run: /readyz ok: {', '.join(body['checks'])}", flush=True)
    metrics = f"http://127.0.0.1:{args.metrics_port}/metrics"
    wait(f"the worker's metrics at {metrics}", lambda: requests.get(metrics, timeout=10).ok, 60)

    session = sign_in(requests, portal, "alice", "alice-demo")
    arn = approve_a_demo_request(session, portal)
    print(f"check_make_run: alice approved {arn.rsplit(':', 1)[-1]} through SSO", flush=True)

    states = boto3.client(
        "stepfunctions",
        endpoint_url=f"http://127.0.0.1:{args.aws_port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - the emulator takes any
    )

    def ended():
        status = states.describe_execution(executionArn=arn)["status"]
        return status if status != "RUNNING" else None

    status = wait("the execution to end", ended, 120, interval=1)
    if status != "SUCCEEDED":
        raise Failed(f"the approved execution ended {status}, not SUCCEEDED")
    timings["approved to done"] = time.monotonic() - started - timings["first page"]
    print("check_make_run: the execution SUCCEEDED", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portal-port", type=int, default=18000)
    parser.add_argument("--idp-port", type=int, default=19000)
    parser.add_argument("--aws-port", type=int, default=15005)
    parser.add_argument("--metrics-port", type=int, default=19808)
    parser.add_argument("--install-timeout", type=float, default=900, help="seconds to the first page")
    parser.add_argument("--stop-timeout", type=float, default=60)
    parser.add_argument("--venv", help="the virtualenv `make run` installs (default: the checkout's .venv)")
    args = parser.parse_args()

    ports = {
        "PORTAL_PORT": args.portal_port,
        "DEVIDP_PORT": args.idp_port,
        "MOTO_PORT": args.aws_port,
        "WORKER_METRICS_PORT": args.metrics_port,
    }
    busy = [f"{name}={port}" for name, port in ports.items() if not port_free(port)]
    if busy:
        print(f"check_make_run: FAILED: ports already in use: {', '.join(busy)}", file=sys.stderr)
        return 1
    # A CI timeout (SIGTERM) still stops the stack: SystemExit runs the `finally` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("check_make_run: FAILED: stopped by SIGTERM"))
    marker = uuid.uuid4().hex
    env = {name: value for name, value in os.environ.items() if name not in DERIVED | EMBEDDED}
    env.update({name: str(port) for name, port in ports.items()})
    env[MARKER] = marker

    output = Path(tempfile.mkstemp(prefix="make-run-", suffix=".log")[1])
    timings: dict[str, float] = {}
    print(f"check_make_run: make run with {' '.join(f'{k}={v}' for k, v in ports.items())}", flush=True)
    with output.open("w") as out:
        make = subprocess.Popen(
            ["make", "run", *([f"VENV={args.venv}"] if args.venv else [])],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    failure = None
    try:
        check(args, env, output, timings)
    except Failed as error:
        failure = str(error)
    except Exception as error:  # noqa: BLE001 - any surprise is a failed check, with its output
        failure = f"{type(error).__name__}: {error}"
    finally:
        if make.poll() is not None and failure is None:
            failure = f"make run exited early with {make.returncode}"
        # Ctrl-C: the terminal sends SIGINT to the foreground process group (make and devstack).
        stopping = time.monotonic()
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(timeout=args.stop_timeout)
        except subprocess.TimeoutExpired:
            failure = failure or f"make run did not exit within {args.stop_timeout:.0f}s of SIGINT"
        try:
            wait("every process of the stack to stop", lambda: not stack_pids(marker), 15)
        except Failed:
            left = stack_pids(marker)
            names = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100] for pid in left]
            failure = failure or f"after SIGINT these processes were left: {names}"
            for pid in left:  # ours (the marker says so): do not leave them to the next CI step
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        timings["stop"] = time.monotonic() - stopping
        if failure is None:
            still_open = [f"{name}={port}" for name, port in ports.items() if not port_free(port)]
            if still_open:
                failure = f"ports still listening after the stop: {', '.join(still_open)}"

    text = output.read_text(errors="replace")
    if failure:
        print("\n".join(text.splitlines()[-150:]), file=sys.stderr)
        print(f"\ncheck_make_run: FAILED: {failure}\n(full output: {output})", file=sys.stderr)
        return 1
    if "Traceback (most recent call last)" in text:
        print(text[-6000:], file=sys.stderr)
        print("check_make_run: FAILED: a traceback in make run's output", file=sys.stderr)
        return 1
    output.unlink()
    summary = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items())
    print(f"check_make_run: ok ({summary}); nothing left running", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
