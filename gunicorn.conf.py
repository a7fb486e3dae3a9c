"""gunicorn's settings file, read by itself from the working directory (the repository root).

Command-line flags (Procfile, Dockerfile) still win over what is set here. This file adds:

- the metrics' multiprocess directory for the web's workers, emptied when the master starts,
  and a dead worker's live files dropped (portal/observability.py);
- gunicorn's own log lines (errors, access log) through the portal's token redaction and in
  its format (LOG_FORMAT: json in production, plain in dev), with the X-Request-ID that the
  portal's middleware sets, and the path without its query string (OIDC codes stay out).
"""

import os
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from portal import observability  # noqa: E402 - after the path above
from portal.logging import gunicorn_logconfig  # noqa: E402

_production = os.environ.get("PORTAL_ENV", "dev") == "production"
logconfig_dict = gunicorn_logconfig(
    os.environ.get("LOG_FORMAT") or ("json" if _production else "plain"),
    level=os.environ.get("LOG_LEVEL", "INFO").upper(),
)
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'


def on_starting(server):
    observability.prepare_multiprocess_dir("web")


def child_exit(server, worker):
    observability.mark_process_dead(worker.pid)
