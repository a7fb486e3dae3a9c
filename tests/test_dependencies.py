"""The lock files: every package pinned with hashes, in step with the hand-edited inputs, and
installed with --require-hashes by make (so CI) and the Dockerfile (docs/development.md)."""

import re
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def input_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[normalized(match[1])] = match[2]
    return pins


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes), from pip-compile's `name==version \\ --hash=sha256:...` blocks."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if match:
            entries[normalized(match[1])] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return entries


@pytest.mark.parametrize(
    ("source", "lock"), [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")]
)
def test_every_pin_of_an_input_is_in_its_lock_at_the_same_version(source, lock):
    locked = lock_entries(REPO_DIR / lock)
    stale = {
        name: (version, locked.get(name, ("missing", []))[0])
        for name, version in input_pins(REPO_DIR / source).items()
        if locked.get(name, ("", []))[0] != version
    }
    assert not stale, f"{source} and {lock} disagree (input, lock): {stale}; run `make lock`"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_locked_package_has_hashes(lock):
    entries = lock_entries(REPO_DIR / lock)
    assert len(entries) > 20
    assert [name for name, (_, hashes) in entries.items() if not hashes] == []


def test_make_run_needs_nothing_beyond_the_run_time_lock():
    # `make run` installs requirements.lock only: the AWS emulator (moto server) and the dev IdP
    # (django-oauth-toolkit) it starts are run-time dependencies (docker-compose runs them from
    # the image too).
    runtime = lock_entries(REPO_DIR / "requirements.lock")
    for name in ("moto", "django-oauth-toolkit", "gunicorn", "celery", "sqlalchemy", "flask", "werkzeug"):
        assert name in runtime, name


def test_transitive_dependencies_are_locked_too():
    runtime = lock_entries(REPO_DIR / "requirements.lock")
    # Not named in requirements.txt, but sign-in (mozilla-django-oidc verifies ID tokens with PyJWT)
    # and the AWS calls run on them.
    for name in ("pyjwt", "botocore", "urllib3", "cffi"):
        assert name in runtime, name


def test_development_runs_exactly_the_versions_production_runs():
    runtime = lock_entries(REPO_DIR / "requirements.lock")
    dev = lock_entries(REPO_DIR / "requirements-dev.lock")
    differ = {
        name: (version, dev.get(name, ("missing",))[0])
        for name, (version, _) in runtime.items()
        if dev.get(name, ("",))[0] != version
    }
    assert not differ, differ


def test_make_and_the_dockerfile_install_the_locks_with_require_hashes():
    makefile = (REPO_DIR / "Makefile").read_text()

    def recipe(stamp: str) -> str:
        return re.search(rf"^\$\(VENV\)/\.{stamp}:(.*?)\n\n", makefile, flags=re.MULTILINE | re.DOTALL)[0]

    # `make run`: the run-time lock only; `make test` and the other tools: the development lock.
    runtime, dev = recipe("installed-runtime"), recipe("installed-dev")
    assert runtime.splitlines()[0].split(":", 1)[1].split() == ["requirements.lock"]
    assert "pip install --quiet --require-hashes -r requirements.lock" in runtime
    assert "requirements.lock requirements-dev.lock" in dev.splitlines()[0]
    assert "pip install --quiet --require-hashes -r requirements-dev.lock" in dev
    assert re.search(r"^run: \$\(VENV\)/\.installed-runtime$", makefile, flags=re.MULTILINE)
    assert re.search(r"^test: \$\(VENV\)/\.installed-dev$", makefile, flags=re.MULTILINE)
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in (REPO_DIR / "Dockerfile").read_text()
    # CI goes through make: every make target that runs something depends on the locked install.
    assert "make lint" in (REPO_DIR / ".ci" / "run").read_text()
