"""Structured logs: JSON lines (or plain text) with the ids that tie one approval together.

Every log line carries the correlation fields bound in its context (contextvars, so threads
and Celery tasks each have their own):

- ``request_id``: one HTTP request (``X-Request-ID``: taken from a trusted proxy when it is
  well-formed, else made here, and sent back on the response);
- ``message_id``: the SQS message an approval request came from (the consumer binds it per
  message; ``deliver_callback`` binds the request's original one);
- ``approval_id``: the approval request's public id, the key that follows one approval from
  ingest through the decision (web) to the callback (worker);
- ``callback_id``, ``task_id``, ``task``: the Celery side.

Handlers keep ``approvals.redaction.TokenRedactingFilter``: it runs before the formatter, so
neither format ever sees an unredacted message or traceback. The formatters emit only the
fields named here, never a record's arbitrary ``extra`` attributes (they are not redacted).
A line break inside a logged value (an email from the IdP, say) is escaped, never a new line that
could pass for another record: JSON is one line per record, plain text one line per message (a
traceback follows it on lines of its own).

Importable without Django settings: gunicorn.conf.py uses it in the master process.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

CONTEXT_FIELDS = ("request_id", "message_id", "approval_id", "callback_id", "task_id", "task")

_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"log_{name}", default=None) for name in CONTEXT_FIELDS
}


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def bind_log_context(**fields: object) -> None:
    """Set correlation fields for the rest of this context (thread, task); None clears one."""
    for name, value in fields.items():
        _context[name].set(_text(value))


def clear_log_context() -> None:
    for var in _context.values():
        var.set(None)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Correlation fields for the duration of a block, restored afterwards."""
    tokens = [(_context[name], _context[name].set(_text(value))) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class LogContextFilter(logging.Filter):
    """Copies the bound correlation fields onto each record (as attributes); drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


def _context_of(record: logging.LogRecord) -> dict[str, str]:
    return {name: str(value) for name in CONTEXT_FIELDS if (value := getattr(record, name, None)) is not None}


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    # TokenRedactingFilter has already rendered and redacted exc_text; render only if it didn't run.
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or ""


# Control characters (C0 but the tab, DEL, C1) and the Unicode line and paragraph separators,
# written as Python escapes: what a plain log line shows instead of breaking.
_CONTROL_ESCAPES = {
    code: repr(chr(code))[1:-1] for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029) if code != 0x09
}
_JSON_LINE_BREAKS = {code: f"\\u{code:04x}" for code in (0x85, 0x2028, 0x2029)}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, the correlation fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            **_context_of(record),
        }
        exception = _exception_text(self, record)
        if exception:
            entry["exception"] = exception
        if record.stack_info:
            entry["stack"] = record.stack_info
        # json.dumps escapes \n, \r and the other C0 controls but not these, which end a line for
        # Unicode-aware readers (str.splitlines()): escaped too, the JSON means the same.
        return json.dumps(entry, ensure_ascii=False, default=str).translate(_JSON_LINE_BREAKS)


class PlainFormatter(logging.Formatter):
    """The readable dev format, with the correlation fields appended when there are any."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, style: str = "%", **kwargs) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(message)s", datefmt, style, **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's API
        # One record, one line: a value from outside (an email, an exception's text) that holds a
        # line break would otherwise start a line that looks like another record.
        message = record.message
        record.message = message.translate(_CONTROL_ESCAPES)
        try:
            text = super().formatMessage(record)
        finally:
            record.message = message
        context = _context_of(record)
        if context:
            text += " [" + " ".join(f"{name}={value}" for name, value in context.items()) + "]"
        return text


# A request id from outside is only trusted when it is short and plain: never a place to smuggle
# a long opaque value (a token) into every log line.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


class RequestIdMiddleware:
    """Binds request_id (and approval_id from the URL) for the request's log lines.

    First in MIDDLEWARE, so everything after it, including Django's own error logging for a
    crashing view, logs with the id. The response carries ``X-Request-ID``. It also records
    the request in the HTTP metrics, labelled by URL pattern (never the raw path: no ids).
    """

    header = "X-Request-ID"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(self.header, "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        started = time.perf_counter()
        # Bound, not scoped: Django logs a 4xx/5xx response ("Service Unavailable: /readyz")
        # after the middleware returned, and that line should carry the id too. The next
        # request on this thread starts from a clean context.
        clear_log_context()
        bind_log_context(request_id=request_id)
        response = self.get_response(request)
        _record_http(request, response, time.perf_counter() - started)
        response.headers.setdefault(self.header, request_id)
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        public_id = view_kwargs.get("public_id")
        if public_id is not None:
            bind_log_context(approval_id=public_id)
        return None


def _record_http(request, response, seconds: float) -> None:
    from approvals.ops import metrics  # imported late: prometheus_client after the multiprocess setup

    match = getattr(request, "resolver_match", None)
    route = match.route if match is not None and match.route else "unmatched"
    metrics.http_request_recorded(method=request.method, route=route, status=response.status_code, seconds=seconds)


def gunicorn_logconfig(log_format: str, level: str = "INFO") -> dict:
    """gunicorn's own loggers (its errors, the access log) through the same filters and format."""
    formatter = "portal.logging.JsonFormatter" if log_format == "json" else "portal.logging.PlainFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact_tokens": {"()": "approvals.redaction.TokenRedactingFilter"},
            "log_context": {"()": "portal.logging.LogContextFilter"},
        },
        "formatters": {"portal": {"()": formatter}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "portal",
                "filters": ["redact_tokens", "log_context"],
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }
