"""Environment-derived configuration and the signing key file.

Deliberately free of Django imports: ``__main__`` must be able to create the key
before ``devidp.settings`` (which reads it) is imported.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

DEFAULT_ISSUER = "http://127.0.0.1:9000/o"


def env(name: str, default: str) -> str:
    # An empty variable counts as unset, so `FOO= make run` falls back to the default.
    return os.environ.get(name) or default


def env_list(name: str, default: str) -> list[str]:
    """A space- and/or comma-separated environment variable as a list."""
    return [item for item in re.split(r"[\s,]+", env(name, default)) if item]


def issuer() -> str:
    return env("DEVIDP_ISSUER", DEFAULT_ISSUER).rstrip("/")


def api_audience() -> str:
    """The `aud` of access tokens: the portal's API_AUDIENCE (devidp/access_tokens.py)."""
    return env("DEVIDP_API_AUDIENCE", "approvals-api")


def service_client_id() -> str:
    """The demo service account's client (client-credentials grant, docs/api.md)."""
    return env("DEVIDP_SERVICE_CLIENT_ID", "approvals-demo-bot")


def service_client_secret() -> str:
    return env("DEVIDP_SERVICE_CLIENT_SECRET", "approvals-demo-bot-dev-secret")


def opaque_client_id() -> str:
    """A second demo bot whose access tokens are opaque (random), checked by introspection (RFC 7662)."""
    return env("DEVIDP_OPAQUE_CLIENT_ID", "approvals-opaque-bot")


def opaque_client_secret() -> str:
    return env("DEVIDP_OPAQUE_CLIENT_SECRET", "approvals-opaque-bot-dev-secret")


def issuer_path_prefix() -> str:
    """URL prefix DOT is mounted under, so every endpoint lives at ``{issuer}/...``."""
    path = urlsplit(issuer()).path.strip("/")
    return f"{path}/" if path else ""


def data_dir() -> Path:
    # Beside the portal's own files: PORTAL_VAR_DIR (default var/) moves both.
    return Path(env("DEVIDP_DATA_DIR", str(Path(env("PORTAL_VAR_DIR", str(REPO_DIR / "var"))) / "devidp")))


def db_path() -> Path:
    return data_dir() / "db.sqlite3"


def key_path() -> Path:
    return data_dir() / "oidc-key.pem"


def ensure_private_key() -> Path:
    """Create the RS256 signing key once; later runs reuse it so issued tokens stay valid."""
    path = key_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    # O_EXCL: if two processes race, exactly one key wins and nobody truncates it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path


def read_private_key() -> str:
    path = key_path()
    return path.read_text() if path.exists() else ""
