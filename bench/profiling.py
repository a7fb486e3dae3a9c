"""py-spy around a scenario: where a process's time goes, summarized as text.

`record()` samples a process (and its children) with `py-spy record --format raw --threads
--idle` while a block runs (wall clock: waiting on AWS or PostgreSQL is where a request's time
goes too). It writes the collapsed stacks to `<out>/profile-<name>-wall.raw` and
`<out>/profile-<name>.txt`: the share of samples in each function (inclusive: anywhere on the
stack; own: the innermost frame), for the stacks that contain `thread_filter` (e.g. the queue
consumer's `consume_once`) if one is given.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from bench.stack import REPO_DIR, VENV_BIN

OUR_PACKAGES = {"approvals", "worker", "portal", "bench"}
FRAME = re.compile(r"^(?P<function>[^ ]+) \((?P<file>[^:]+)(?::\d+)?\)$")


def _py_spy() -> str | None:
    candidate = VENV_BIN / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


@contextmanager
def record(name: str, pid: int, out_dir: Path, *, thread_filter: str = "", rate: int = 200):
    """py-spy's wall-clock sampling (--idle: waiting counts) while the block runs."""
    binary = _py_spy()
    if binary is None:
        print("profile: py-spy is not installed (pip install -r requirements-dev.txt); skipped", flush=True)
        yield
        return
    spies = []
    # Wall clock only: py-spy can't tell a thread waiting in psycopg's C wait loop from one running,
    # so a "CPU only" view would be wrong; bench/run.py reports CPU seconds from /proc instead.
    for kind, extra in (("wall", ["--idle"]),):
        raw = out_dir / f"profile-{name}-{kind}.raw"
        args = [binary, "record", "--pid", str(pid), "--subprocesses", "--threads", "--nonblocking", *extra]
        args += ["--rate", str(rate), "--format", "raw", "--output", str(raw)]
        log = (out_dir / f"profile-{name}-{kind}.log").open("w")
        spies.append((kind, raw, log, subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)))  # noqa: S603
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        report = [f"py-spy on pid {pid} (and children) during '{name}'"]
        for kind, raw, log, spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
            log.close()
            title = "WALL CLOCK (waiting included)" if kind == "wall" else "CPU (running only)"
            body = summarize(raw, thread_filter=thread_filter) if raw.exists() else f"no output: see {log.name}\n"
            report += ["", f"== {title}", body]
        text = "\n".join(report)
        (out_dir / f"profile-{name}.txt").write_text(text)
        print(f"profile {name}: {out_dir / f'profile-{name}.txt'}", flush=True)


def _frames(stack: str) -> list[tuple[str, bool]]:
    """(function (last three path parts of its file), is it the portal's own code), outermost first."""
    frames = []
    for frame in stack.split(";"):
        match = FRAME.match(frame.strip())
        if not match:
            continue  # process and thread entries
        path = Path(match["file"])
        # py-spy shortens paths to the module's (approvals/…, celery/worker/…); absolute ones
        # are files outside any package.
        if path.is_absolute():
            ours = REPO_DIR in path.parents and ".venv" not in path.parts
        else:
            ours = path.parts[0] in OUR_PACKAGES
        frames.append((f"{match['function']} ({'/'.join(path.parts[-3:])})", ours))
    return frames


def summarize(raw: Path, *, thread_filter: str = "", top: int = 30) -> str:
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    portal: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or (thread_filter and thread_filter not in stack):
            continue
        samples = int(count)
        frames = _frames(stack)
        if not frames:
            continue
        names = [name for name, _ in frames]
        total += samples
        own[names[-1]] += samples
        for name in set(names):
            inclusive[name] += samples
        # The innermost frame of the portal's own code, and what it was doing (the leaf).
        ours = [name for name, is_ours in frames if is_ours]
        portal[f"{ours[-1] if ours else '(outside the portal)'}  →  {names[-1]}"] += samples
    if not total:
        return f"no samples{f' in stacks with {thread_filter}' if thread_filter else ''}\n"
    lines = [f"{total} samples{f' in stacks containing {thread_filter}' if thread_filter else ''}"]
    lines += ["", "by the innermost portal function → the innermost frame:"]
    lines += [f"  {100 * n / total:5.1f}%  {key}" for key, n in portal.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "own (innermost frame):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines) + "\n"
