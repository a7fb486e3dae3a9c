"""Command line: ``python -m devidp setup | serve [--host H] [--port P] | <django command>``.

Django commands include ``demo_user`` (change a demo user's email, groups or active flag while
the IdP runs; ``python -m devidp demo_user --help``).
"""

import argparse
import os
import sys

from devidp import config

# Gunicorn's access log without the query string, which carries id_token_hint on logout.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


def _django_setup() -> None:
    # Forced, not setdefault: the shell may export the portal's DJANGO_SETTINGS_MODULE.
    os.environ["DJANGO_SETTINGS_MODULE"] = "devidp.settings"
    import django

    django.setup()


def setup() -> None:
    """Migrate, create the signing key if absent, seed users and the client. Idempotent."""
    # The key must exist before the settings module is imported, since it reads it.
    config.ensure_private_key()
    _django_setup()
    from django.core.management import call_command

    from devidp.seed import seed

    call_command("migrate", interactive=False, verbosity=0)
    seed()
    print(
        f"devidp: ready, issuer {config.issuer()}, data in {config.data_dir()}",
        flush=True,
    )


def serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m devidp serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)

    if not config.db_path().exists():
        setup()
    config.ensure_private_key()
    # exec rather than a child process, so whoever started us can stop gunicorn by our pid.
    cmd = [
        sys.executable, "-m", "gunicorn", "devidp.wsgi:application",
        "--bind", f"{args.host}:{args.port}",
        "--worker-class", "gthread", "--workers", "1", "--threads", "8",
        "--chdir", str(config.REPO_DIR),
        # The default control socket lives at a fixed path in $HOME; two IdPs would fight over it.
        "--no-control-socket",
        "--graceful-timeout", "5",
        "--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT,
    ]  # fmt: skip
    os.execv(sys.executable, cmd)  # noqa: S606 - replace ourselves with gunicorn, args are ours


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    if command in ("", "help", "-h", "--help"):
        print(__doc__.strip() + "\n")
    if command == "setup":
        setup()
    elif command == "serve":
        serve(argv[1:])
    else:
        _django_setup()
        from django.core.management import execute_from_command_line

        execute_from_command_line(["python -m devidp", *argv])


if __name__ == "__main__":
    main()
