"""Where the access token lives between commands: a user-only file under the XDG config dir.

`$XDG_CONFIG_HOME/approvals/credentials.json` (default `~/.config/approvals/`), mode 0600 in a
0700 directory, one token per portal URL so a token obtained for one portal is never sent to
another. A file that others could read, or that isn't ours, is refused rather than used: the
token in it may already have leaked, and silently fixing the mode would hide that.
`APPROVALS_TOKEN` in the environment wins over the file (for scripts and CI).
"""

import contextlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from approvals_cli.errors import CLIError, ExitCode

TOKEN_ENV = "APPROVALS_TOKEN"  # noqa: S105 - the variable's name, not a token


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "approvals" / "credentials.json"


@dataclass(frozen=True)
class StoredToken:
    access_token: str
    expires_at: float | None
    issuer: str | None

    def __repr__(self) -> str:  # never show the token in a traceback or a debug print
        return f"StoredToken(issuer={self.issuer!r}, expires_at={self.expires_at!r})"


def _check_private(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        message = f"{path} is not a regular file; remove it and run `approvals login`"
        raise CLIError(message, ExitCode.UNSAFE_CREDENTIALS)
    if info.st_uid != os.getuid():
        raise CLIError(
            f"{path} belongs to another user; refusing to use it (remove it and run `approvals login`)",
            ExitCode.UNSAFE_CREDENTIALS,
        )
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CLIError(
            f"{path} can be read or changed by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            "refusing to use the token in it. If nobody else could have read it, `chmod 600` it; "
            "otherwise run `approvals logout` and `approvals login`",
            ExitCode.UNSAFE_CREDENTIALS,
        )


def _read_all(path: Path, *, check: bool = True) -> dict:
    try:
        # O_NOFOLLOW: a symlink planted in our place is refused, not followed.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise CLIError(f"cannot read {path}: {error.strerror}", ExitCode.UNSAFE_CREDENTIALS) from None
    with os.fdopen(fd, "rb") as file:
        if check:
            _check_private(file.fileno(), path)
        raw = file.read(1_000_000)
    try:
        document = json.loads(raw)
    except ValueError:
        message = f"{path} is not valid JSON; remove it and run `approvals login`"
        raise CLIError(message, ExitCode.NOT_SIGNED_IN) from None
    return document if isinstance(document, dict) else {}


def _write_all(path: Path, document: dict) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(path.parent, 0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    # Created 0600 whatever the umask, then moved into place: never a moment where it is readable.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def save_token(portal: str, *, access_token: str, expires_in: object, issuer: str) -> Path:
    path = credentials_path()
    document = _read_all(path) if path.exists() else {}
    portals = document.get("portals") if isinstance(document.get("portals"), dict) else {}
    expires_at = time.time() + float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else None
    portals[portal] = {"access_token": access_token, "expires_at": expires_at, "issuer": issuer}
    _write_all(path, {"version": 1, "portals": portals})
    return path


def check_usable() -> None:
    """Refuse an unsafe token file before a sign-in, not after the person went through it."""
    path = credentials_path()
    if path.exists() or path.is_symlink():
        _read_all(path)


def forget_token(portal: str) -> bool:
    """Remove the portal's token from the file; True if there was one.

    Also the way out of a file `load_token` refuses: a symlink in its place is removed (not
    followed), and a file others could read is rewritten as a new private one without the entry.
    """
    path = credentials_path()
    if path.is_symlink():
        path.unlink()
        return True
    unsafe = False
    try:
        document = _read_all(path)
    except CLIError as error:
        if error.exit_code != ExitCode.UNSAFE_CREDENTIALS:
            raise
        unsafe, document = True, _read_all(path, check=False)
    portals = document.get("portals") if isinstance(document.get("portals"), dict) else {}
    found = portals.pop(portal, None) is not None
    if found or unsafe:
        path.unlink()  # a new file, not the old inode whose mode or owner was wrong
        _write_all(path, {"version": 1, "portals": portals})
    return found


def load_token(portal: str) -> StoredToken:
    """The token to send to `portal`: $APPROVALS_TOKEN, else the file's; CLIError if there is none."""
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return StoredToken(access_token=from_env, expires_at=None, issuer=None)
    path = credentials_path()
    entry = _read_all(path).get("portals", {}).get(portal)
    if not isinstance(entry, dict) or not isinstance(entry.get("access_token"), str):
        raise CLIError(f"not signed in to {portal}: run `approvals login` (or set {TOKEN_ENV})", ExitCode.NOT_SIGNED_IN)
    expires_at = entry.get("expires_at")
    if isinstance(expires_at, int | float) and expires_at <= time.time():
        raise CLIError(f"your sign-in to {portal} has expired: run `approvals login`", ExitCode.NOT_SIGNED_IN)
    return StoredToken(
        access_token=entry["access_token"],
        expires_at=expires_at if isinstance(expires_at, int | float) else None,
        issuer=entry.get("issuer"),
    )
