"""The AWS emulator of `make run` and docker-compose: the moto server, quiet by default.

`moto_server` logs every HTTP request it answers, and the worker's consumer polls SQS all the
time: a line a second that buries everything else. This runs the same server (same arguments)
without that per-request access log; AWS_EMULATOR_ACCESS_LOG=1 turns it back on. Errors are
still logged.
"""

import os
import sys

from moto.server import MotoRequestHandler, main


def quiet_requests() -> None:
    MotoRequestHandler.log_request = lambda *args, **kwargs: None


if __name__ == "__main__":
    if os.environ.get("AWS_EMULATOR_ACCESS_LOG", "").lower() not in {"1", "true", "yes", "on"}:
        quiet_requests()
    sys.exit(main())
