"""What admins do in the admin: reassign, cancel, retry a callback, resolve ingest errors, routing rules.

Each function is one audited state change for one row; the admin's bulk actions call them row
by row, so one refused row never blocks the others.
"""

import json
import logging
from collections.abc import Sequence

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from approvals import tokens
from approvals.models import (
    ApprovalRequest,
    Assignment,
    Callback,
    CallbackStatus,
    IngestError,
    RequestStatus,
    RoutingRule,
    User,
)
from approvals.roles import APPROVER_ACCESS_GROUP
from approvals.services.common import MAX_CAUSE_LENGTH, ApprovalError, audit, truncate
from approvals.services.decisions import _identity, _queue_callback
from approvals.services.ingest import received_message_ingest
from approvals.services.notifications import approval_decided_notify
from worker import gateway

logger = logging.getLogger(__name__)

MAX_GROUP_NAME_LENGTH = 150


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ApprovalError("Give a reason: it goes into the audit trail.", "reason_required")
    return reason


def _locked_pending_request(request_id: int) -> ApprovalRequest:
    request = ApprovalRequest.objects.select_for_update(of=("self",)).filter(pk=request_id).first()
    if request is None:
        raise ApprovalError("This approval request does not exist.", "not_found")
    if not request.is_pending:
        raise ApprovalError(
            f"This request is already {request.get_status_display().lower()}.", "not_pending", request=request
        )
    return request


def clean_assignees(*, users: Sequence[str], groups: Sequence[str]) -> tuple[list[str], list[str]]:
    """Emails lower-cased and checked, group names trimmed; duplicates dropped, order kept."""
    clean_users: dict[str, None] = {}
    for value in users:
        email = value.strip().lower()
        if not email:
            continue
        try:
            validate_email(email)
        except ValidationError:
            raise ApprovalError(f"“{truncate(email, 80)}” is not an email address.", "bad_input") from None
        clean_users[email] = None
    clean_groups: dict[str, None] = {}
    for value in groups:
        name = value.strip()
        if not name:
            continue
        if len(name) > MAX_GROUP_NAME_LENGTH or name == APPROVER_ACCESS_GROUP:
            raise ApprovalError(f"“{truncate(name, 80)}” cannot be an approver group.", "bad_input")
        clean_groups[name] = None
    return list(clean_users), list(clean_groups)


# ---------------------------------------------------------------------------
# Reassign
# ---------------------------------------------------------------------------
def _assignees(request: ApprovalRequest) -> dict[str, list[str]]:
    rows = list(request.assignments.order_by("kind", "value").values_list("kind", "value"))
    return {
        "users": [value for kind, value in rows if kind == Assignment.Kind.USER],
        "groups": [value for kind, value in rows if kind == Assignment.Kind.GROUP],
    }


def new_assignees_notify(*, request_id: int, users: list[str], groups: list[str]) -> None:
    """Tell newly assigned approvers about a request (after the reassignment committed).

    The `reassigned` audit event records who needs telling (`needs_notification`).
    """
    from approvals.services.notifications import reassigned_notify

    reassigned_notify(request_id=request_id, users=users, groups=groups)  # exception-safe


@transaction.atomic
def approval_reassign(
    *,
    request_id: int,
    actor: User,
    users: Sequence[str] = (),
    groups: Sequence[str] = (),
    mode: str = "replace",
    reason: str,
) -> ApprovalRequest:
    """Give a pending request new approvers: `replace` all of them, or `add` to them."""
    reason = _require_reason(reason)
    if mode not in {"replace", "add"}:
        raise ApprovalError("Choose replace or add.", "bad_input")
    users, groups = clean_assignees(users=users, groups=groups)
    if not users and not groups:
        raise ApprovalError("Name at least one approver: an email or a group.", "bad_input")
    request = _locked_pending_request(request_id)

    before = _assignees(request)
    if mode == "replace":
        after = {"users": sorted(users), "groups": sorted(groups)}
    else:
        after = {"users": sorted({*before["users"], *users}), "groups": sorted({*before["groups"], *groups})}
    if after == before:
        raise ApprovalError("The request already has exactly these approvers.", "unchanged", request=request)

    added_users = [email for email in after["users"] if email not in before["users"]]
    added_groups = [name for name in after["groups"] if name not in before["groups"]]
    removed_users = [email for email in before["users"] if email not in after["users"]]
    removed_groups = [name for name in before["groups"] if name not in after["groups"]]
    if removed_users:
        request.assignments.filter(kind=Assignment.Kind.USER, value__in=removed_users).delete()
    if removed_groups:
        request.assignments.filter(kind=Assignment.Kind.GROUP, value__in=removed_groups).delete()
    # Each new assignment records who made it: its maker may not decide with it (four eyes).
    Assignment.objects.bulk_create(
        [Assignment(request=request, kind=Assignment.Kind.USER, value=email, created_by=actor) for email in added_users]
        + [
            Assignment(request=request, kind=Assignment.Kind.GROUP, value=name, created_by=actor)
            for name in added_groups
        ]
    )
    request.save(update_fields=["updated_at"])
    audit(
        action="reassigned",
        request=request,
        actor=actor,
        mode=mode,
        reason=reason,
        before=before,
        after=after,
        needs_notification={"users": added_users, "groups": added_groups},
    )
    transaction.on_commit(lambda: new_assignees_notify(request_id=request.pk, users=added_users, groups=added_groups))
    return request


# ---------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------
@transaction.atomic
def approval_cancel(*, request_id: int, actor: User, reason: str) -> ApprovalRequest:
    """Close a pending request; the execution gets SendTaskFailure with ApprovalCancelled."""
    reason = _require_reason(reason)
    request = _locked_pending_request(request_id)
    request.status = RequestStatus.CANCELLED
    request.decided_by = actor
    request.decided_at = timezone.now()
    request.decision_comment = reason
    request.awaiting_info = False  # closed: nobody waits for an answer any more
    request.save(
        update_fields=["status", "decided_by", "decided_at", "decision_comment", "awaiting_info", "updated_at"]
    )
    cause = json.dumps(
        {
            "requestId": str(request.public_id),
            "cancelledBy": _identity(actor),
            "cancelledAt": request.decided_at.isoformat(),
            "reason": reason,
        },
        ensure_ascii=False,
    )
    callback = Callback.objects.create(
        request=request,
        kind=Callback.Kind.FAILURE,
        payload={"error": "ApprovalCancelled", "cause": truncate(cause, MAX_CAUSE_LENGTH)},
    )
    audit(action="cancelled", request=request, actor=actor, reason=reason)
    _queue_callback(callback)
    approval_decided_notify(request=request)  # the requester hears once the callback is settled
    return request


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------
@transaction.atomic
def callback_retry(*, callback_id: int, actor: User) -> Callback:
    """Send a failed callback again, with a fresh budget of CALLBACK_MAX_ATTEMPTS.

    The attempts start from zero again (what failed before is kept in the audit event): an
    admin retries after fixing the cause, e.g. restoring a dropped token key.
    """
    callback = Callback.objects.select_for_update(of=("self",)).select_related("request").filter(pk=callback_id).first()
    if callback is None:
        raise ApprovalError("This callback does not exist.", "not_found")
    if callback.status != CallbackStatus.FAILED:
        raise ApprovalError(
            f"Only a failed callback can be sent again; this one is {callback.get_status_display().lower()}.",
            "not_failed",
            request=callback.request,
        )
    if tokens.is_erased(callback.request.token_ciphertext):
        raise ApprovalError(
            "This request's task token was erased after the retention period (TOKEN_RETENTION_DAYS): "
            "nothing can be sent to Step Functions any more.",
            "token_erased",
            request=callback.request,
        )
    previous = {"attempts": callback.attempts, "error_code": callback.error_code, "error": callback.last_error}
    if callback.resolution:
        previous["resolution"] = callback.resolution
    callback.status = CallbackStatus.PENDING
    callback.attempts = 0
    callback.error_code = ""
    callback.last_error = ""
    callback.next_attempt_at = None
    callback.resolution = ""  # settled again by this attempt (maybe_delivered stays: the past is unchanged)
    callback.save(
        update_fields=["status", "attempts", "error_code", "last_error", "next_attempt_at", "resolution", "updated_at"]
    )
    audit(action="callback_retried", request=callback.request, actor=actor, callback_id=callback.pk, previous=previous)
    _queue_callback(callback)
    return callback


# ---------------------------------------------------------------------------
# Ingest errors
# ---------------------------------------------------------------------------
def _locked_open_ingest_error(ingest_error_id: int) -> IngestError:
    row = IngestError.objects.select_for_update().filter(pk=ingest_error_id).first()
    if row is None:
        raise ApprovalError("This ingest error does not exist.", "not_found")
    if row.status != IngestError.Status.OPEN:
        raise ApprovalError(f"This ingest error was already {row.get_status_display().lower()}.", "resolved")
    return row


def _dead_letter_queue_url() -> str:
    try:
        url = gateway.dead_letter_queue_url(queue_url=settings.APPROVAL_QUEUE_URL)
    except gateway.AwsError as error:
        raise ApprovalError(f"AWS did not answer: {error.code}. Try again later.", "aws_error") from None
    if url is None:
        raise ApprovalError("The approval queue has no dead-letter queue (no redrive policy).", "no_dlq")
    return url


@transaction.atomic
def ingest_error_replay(*, ingest_error_id: int, actor: User) -> IngestError:
    """Ingest the message again, now that its cause is fixed (a raised size limit, a newer
    contract, a widened approver trust setting, an outage).

    The message kept with the error (encrypted) is ingested again in place: a request, and the
    error marked replayed (the kept message erased: the request holds the token now). Refused
    again, the error stays open with the new reason and count: check `status` on the result.
    An error recorded before messages were kept is replayed from the dead-letter queue.
    """
    row = _locked_open_ingest_error(ingest_error_id)
    if row.message_ciphertext:
        return _ingest_error_replay_kept(row, actor)
    if row.message_erased_at is not None:
        raise ApprovalError(
            "The message was erased after the retention period (TOKEN_RETENTION_DAYS); discard this error.",
            "message_erased",
        )
    return _ingest_error_replay_from_dlq(row, actor)


def _ingest_error_replay_kept(row: IngestError, actor: User) -> IngestError:
    try:
        body = tokens.decrypt_token(row.message_ciphertext)
    except tokens.TokenKeyError:
        raise ApprovalError(
            "The kept message cannot be decrypted with the configured TOKEN_ENCRYPTION_KEYS.", "key_error"
        ) from None
    refused = received_message_ingest(
        sqs_message_id=row.sqs_message_id, body=body, max_bytes=settings.APPROVAL_MAX_MESSAGE_BYTES
    )
    if refused is not None:
        audit(
            action="ingest_error_replay_refused",
            request=None,
            actor=actor,
            ingest_error_id=row.pk,
            sqs_message_id=row.sqs_message_id,
            code=refused.code,
        )
        return refused
    request = ApprovalRequest.objects.filter(sqs_message_id=row.sqs_message_id).order_by("pk").first()
    row.status = IngestError.Status.REPLAYED
    row.resolved_by = actor
    row.resolved_at = timezone.now()
    row.message_ciphertext = ""
    row.message_erased_at = row.resolved_at
    row.save(update_fields=["status", "resolved_by", "resolved_at", "message_ciphertext", "message_erased_at"])
    audit(
        action="ingest_error_replayed",
        request=request,
        actor=actor,
        ingest_error_id=row.pk,
        sqs_message_id=row.sqs_message_id,
        code=row.code,
        in_place=True,
    )
    logger.info("ingest error %s: message %s ingested again", row.pk, row.sqs_message_id)
    return row


def _ingest_error_replay_from_dlq(row: IngestError, actor: User) -> IngestError:
    dlq_url = _dead_letter_queue_url()
    try:
        new_id = gateway.move_message(
            source_queue_url=dlq_url, target_queue_url=settings.APPROVAL_QUEUE_URL, message_id=row.sqs_message_id
        )
    except gateway.AwsError as error:
        raise ApprovalError(f"AWS did not answer: {error.code}. Try again later.", "aws_error") from None
    if new_id is None:
        raise ApprovalError(
            "The message is not on the dead-letter queue: it may still be on the approval queue (being "
            "retried until the redrive policy moves it), or it was deleted or outlived the retention period.",
            "not_in_dlq",
        )
    row.status = IngestError.Status.REPLAYED
    row.resolved_by = actor
    row.resolved_at = timezone.now()
    row.replayed_as_message_id = new_id
    row.save(update_fields=["status", "resolved_by", "resolved_at", "replayed_as_message_id"])
    audit(
        action="ingest_error_replayed",
        request=None,
        actor=actor,
        ingest_error_id=row.pk,
        sqs_message_id=row.sqs_message_id,
        new_sqs_message_id=new_id,
        code=row.code,
    )
    logger.info("ingest error %s: message %s sent to the queue again as %s", row.pk, row.sqs_message_id, new_id)
    return row


@transaction.atomic
def ingest_error_discard(*, ingest_error_id: int, actor: User) -> IngestError:
    """Give up on a message: mark the error discarded and erase the kept message (or, for an
    error recorded before messages were kept, delete it from the DLQ if it is there)."""
    row = _locked_open_ingest_error(ingest_error_id)
    deleted = None
    if not row.message_ciphertext and row.message_erased_at is None:
        dlq_url = _dead_letter_queue_url()
        try:
            deleted = gateway.delete_message_by_id(queue_url=dlq_url, message_id=row.sqs_message_id)
        except gateway.AwsError as error:
            raise ApprovalError(f"AWS did not answer: {error.code}. Try again later.", "aws_error") from None
    row.status = IngestError.Status.DISCARDED
    row.resolved_by = actor
    row.resolved_at = timezone.now()
    row.message_ciphertext = ""
    row.message_erased_at = row.message_erased_at or row.resolved_at
    row.save(update_fields=["status", "resolved_by", "resolved_at", "message_ciphertext", "message_erased_at"])
    audit(
        action="ingest_error_discarded",
        request=None,
        actor=actor,
        ingest_error_id=row.pk,
        sqs_message_id=row.sqs_message_id,
        code=row.code,
        deleted_from_dlq=deleted,
    )
    return row


# ---------------------------------------------------------------------------
# Routing rules
# ---------------------------------------------------------------------------
def _rule_data(rule: RoutingRule) -> dict:
    return {
        "id": rule.pk,
        "name": rule.name,
        "state_machine_arn": rule.state_machine_arn,
        "state_name": rule.state_name,
        "users": rule.users,
        "groups": rule.groups,
        "priority": rule.priority,
        "enabled": rule.enabled,
    }


@transaction.atomic
def routing_rule_save(
    *,
    actor: User,
    rule_id: int | None = None,
    name: str,
    state_machine_arn: str = "",
    state_name: str = "",
    users: Sequence[str] = (),
    groups: Sequence[str] = (),
    priority: int = 0,
    enabled: bool = True,
) -> RoutingRule:
    """Create (rule_id None) or change a routing rule."""
    users, groups = clean_assignees(users=users, groups=groups)
    if not users and not groups:
        raise ApprovalError("A routing rule needs at least one approver: an email or a group.", "bad_input")
    if rule_id is None:
        rule, before = RoutingRule(), None
    else:
        rule = RoutingRule.objects.select_for_update().filter(pk=rule_id).first()
        if rule is None:
            raise ApprovalError("This routing rule does not exist.", "not_found")
        before = _rule_data(rule)
    rule.name = name.strip()
    rule.state_machine_arn = state_machine_arn.strip()
    rule.state_name = state_name.strip()
    rule.users = users
    rule.groups = groups
    rule.priority = priority
    rule.enabled = enabled
    rule.save()
    audit(action="routing_rule_saved", request=None, actor=actor, before=before, after=_rule_data(rule))
    return rule


@transaction.atomic
def routing_rule_delete(*, rule_id: int, actor: User) -> None:
    rule = RoutingRule.objects.select_for_update().filter(pk=rule_id).first()
    if rule is None:
        return
    before = _rule_data(rule)
    rule.delete()
    audit(action="routing_rule_deleted", request=None, actor=actor, before=before)
