"""The development stack's ports, and every URL that follows from them (`make run`).

Four settings: PORTAL_PORT (the portal, 8000), DEVIDP_PORT (the dev IdP, 9000), MOTO_PORT (the
AWS emulator, 5005) and WORKER_METRICS_PORT (the Celery worker's /metrics, 9808). From them come
the portal's base URL and bind address, the IdP's issuer and the redirect and logout URIs it
accepts, and the AWS endpoint. A variable that is set explicitly wins over its derived value.

Read by portal/settings.py (its dev defaults) and scripts/devstack.py (the environment of every
process it starts); free of Django imports, so the devstack can use it before Django exists.
"""

from collections.abc import Mapping

HOST = "127.0.0.1"
DEFAULT_PORTS = {"PORTAL_PORT": 8000, "DEVIDP_PORT": 9000, "MOTO_PORT": 5005, "WORKER_METRICS_PORT": 9808}


def port(environ: Mapping[str, str], name: str) -> int:
    """A port setting; an empty variable counts as unset."""
    value = environ.get(name) or str(DEFAULT_PORTS[name])
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a port number, not {value!r}") from None
    if not 0 <= number <= 65535 or (number == 0 and name != "WORKER_METRICS_PORT"):
        raise ValueError(f"{name} must be a port number (1-65535), not {value!r}")
    return number


def portal_url(environ: Mapping[str, str]) -> str:
    return f"http://{HOST}:{port(environ, 'PORTAL_PORT')}"


def issuer(environ: Mapping[str, str]) -> str:
    return f"http://{HOST}:{port(environ, 'DEVIDP_PORT')}/o"


def aws_endpoint(environ: Mapping[str, str]) -> str:
    return f"http://{HOST}:{port(environ, 'MOTO_PORT')}"


def stack_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with every port-dependent variable the stack's processes read filled in."""
    base_url = (environ.get("PORTAL_BASE_URL") or portal_url(environ)).rstrip("/")
    idp_issuer = (environ.get("DEVIDP_ISSUER") or issuer(environ)).rstrip("/")
    derived = {
        # The four ports themselves, so that every process (and the banner) sees the same.
        **{name: str(port(environ, name)) for name in DEFAULT_PORTS},
        "PORTAL_BASE_URL": base_url,
        "WEB_BIND": f"{HOST}:{port(environ, 'PORTAL_PORT')}",
        "DEVIDP_ISSUER": idp_issuer,
        "OIDC_OP_ISSUER": idp_issuer,
        "DEVIDP_REDIRECT_URIS": f"{base_url}/oidc/callback/",
        "DEVIDP_POST_LOGOUT_REDIRECT_URIS": f"{base_url}/",
        "AWS_ENDPOINT_URL": aws_endpoint(environ),
    }
    explicit = {name: value for name, value in environ.items() if value}
    explicit.pop("PORTAL_BASE_URL", None)  # used above, without its trailing slash
    return {**explicit, **{name: value for name, value in derived.items() if name not in explicit}}
