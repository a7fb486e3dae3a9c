"""What every service shares: the domain error, the audit writer, enqueueing a task by name."""

import logging

from celery import current_app
from django.db import InterfaceError, OperationalError, transaction

from approvals import delivery
from approvals.models import (
    ApprovalRequest,
    AuditAction,
    AuditEvent,
    User,
)

logger = logging.getLogger(__name__)

SYSTEM = "system"
# SendTaskFailure's documented limits.
MAX_ERROR_LENGTH = 256
MAX_CAUSE_LENGTH = 32768


# The database connection broke (PostgreSQL restarted or ended the session): every item of a
# loop would fail alike, so a loop that goes on past one item's failure stops on this one.
DATABASE_GONE = (OperationalError, InterfaceError)


class ApprovalError(Exception):
    """A refused or impossible action, with a code the views map to a page and status.

    ``field_errors`` (code ``answers_invalid``): the form field → what is wrong with its answer
    (``approvals.answers.NON_FIELD_ERRORS`` for the form as a whole); never the values."""

    def __init__(
        self,
        message: str,
        code: str,
        *,
        request: ApprovalRequest | None = None,
        field_errors: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.request = request
        self.field_errors = field_errors or {}


def audit(*, action: AuditAction, request: ApprovalRequest | None, actor: User | None, **data) -> AuditEvent:
    action = AuditAction(action)  # one vocabulary: an action not in the list is a bug, not a new word
    label = actor.email or actor.get_username() if actor is not None else SYSTEM
    return AuditEvent.objects.create(request=request, actor=actor, actor_label=label, action=action, data=data)


def audit_system_many(*, action: AuditAction, events: list[tuple[ApprovalRequest, dict]]) -> None:
    """The same events as audit(actor=None) for each (request, data), in one INSERT: a batch
    (approvals/services/callbacks.py) records what happened to each of its rows."""
    action = AuditAction(action)
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(request=request, actor=None, actor_label=SYSTEM, action=action, data=data)
            for request, data in events
        ]
    )


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def locked_request(public_id, *, related: tuple[str, ...] = ()) -> ApprovalRequest:
    """The request with its row locked until the transaction ends, and what the decision rule
    reads prefetched. Every change to one request takes this lock, so they take turns: two
    approvers completing a 2-of-2 at the same moment, an answer racing the decision. Without the
    details (up to the message's size limit): no rule reads them, only pages and mail do.

    `related` (claimed_by, decided_by) is read after the lock, never joined into the locking
    query: PostgreSQL returns the row another transaction changed while this one waited with
    the joined rows as they were before (tests/test_races.py), so a claim taken meanwhile
    showed no holder, and a claimer joined through it dropped the row."""
    request = (
        ApprovalRequest.objects.select_for_update(of=("self",))
        .defer("details")
        .prefetch_related("assignments", "votes", *related)
        .filter(public_id=public_id)
        .first()
    )
    if request is None:
        raise ApprovalError("This approval request does not exist.", "not_found")
    return request


def enqueue(name: str, *, kwargsrepr: str | None = None, **kwargs) -> bool:
    """Publish the task called `name` (its Celery name, approvals/tasks/) with `kwargs`.

    By name, so services never import task modules (tasks import services). Never raises: the
    rows a task works from stay pending when the broker is down, and beat's sweeps queue them
    later. With `task_always_eager` (tests) the task runs here, like `.delay()` would run it.
    `kwargsrepr` is what the worker's log lines and monitoring show instead of the arguments
    (Celery's option; the message itself still carries them).
    """
    app = current_app._get_current_object()
    try:
        if app.conf.task_always_eager:
            if name not in app.tasks:
                app.loader.import_default_modules()  # what a worker does at start: autodiscovery
            app.tasks[name].apply(kwargs=kwargs)
        else:
            app.send_task(name, kwargs=kwargs, kwargsrepr=kwargsrepr)
    except Exception:
        logger.warning("could not queue %s now; a sweep will", name, exc_info=True)
        return False
    return True


def enqueue_on_commit(name: str, **kwargs) -> None:
    """`enqueue(name, **kwargs)` once the caller's transaction has committed (at once outside one)."""
    transaction.on_commit(lambda: enqueue(name, **kwargs), robust=True)


def require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ApprovalError("Give a reason: it goes into the audit trail.", "reason_required")
    return reason


def locked_pending_request(request_id: int) -> ApprovalRequest:
    request = ApprovalRequest.objects.select_for_update(of=("self",)).filter(pk=request_id).first()
    if request is None:
        raise ApprovalError("This approval request does not exist.", "not_found")
    if not request.is_pending:
        raise ApprovalError(
            f"This request is already {delivery.request_status_words(request)}.", "not_pending", request=request
        )
    return request
