"""Decisions on approval requests: approve, reject, an admin's cancel, expire, and every refusal."""

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals import permissions
from approvals.answers import NON_FIELD_ERRORS, InvalidAnswers, answers_clean
from approvals.contract import ApprovalOption
from approvals.models import (
    ApprovalRequest,
    AuditAction,
    AuditEvent,
    Callback,
    RequestStatus,
    User,
    Vote,
)
from approvals.ops import metrics
from approvals.services.callbacks import queue_callback
from approvals.services.common import (
    MAX_CAUSE_LENGTH,
    ApprovalError,
    audit,
    locked_pending_request,
    locked_request,
    require_reason,
    truncate,
)
from approvals.services.notifications import approval_decided_notify
from approvals.services.payloads import callback_payload, identity
from approvals.services.quorum import quorum_votes
from approvals.services.recheck import stale_votes_withdraw

logger = logging.getLogger(__name__)

# The one "a rejection says why" rule: every channel (page, admin, email link, Slack, API) gets it here.
REASON_REQUIRED = "reason_required"
REASON_REQUIRED_MESSAGE = "Say why you reject: the requester and the workflow see it."


# ---------------------------------------------------------------------------
# Decide
# ---------------------------------------------------------------------------
CHOICE_INVALID = "choice_invalid"
ANSWERS_INVALID = "answers_invalid"
ANSWERS_INVALID_MESSAGE = "Some answers need correcting: see the message beside each field."
# The default approve/reject's ids: a channel may name them as a choice on a request without options.
DEFAULT_CHOICE_IDS = {"approve": True, "reject": False}


def _choice_refused(message: str, request: ApprovalRequest) -> ApprovalError:
    # The message never repeats what was sent: ids come from whoever holds a link or an API token.
    return ApprovalError(message, CHOICE_INVALID, request=request)


def decision_choice(
    request: ApprovalRequest, *, approve: bool | None, choice: Sequence[str] | None
) -> tuple[bool, list[str] | None, tuple[ApprovalOption, ...]]:
    """What was chosen: (approve, the option ids to store, the options), or ApprovalError
    ``choice_invalid``. The ids are stored in the options' order, so that two approvers who chose
    the same set chose the same thing (docs/approver-input.md#quorum-and-options)."""
    if choice is not None and (isinstance(choice, (str, bytes)) or not isinstance(choice, Sequence)):
        raise _choice_refused("The choice must be a list of option ids.", request)
    ids = list(choice or ())
    if not request.options:
        if ids:
            # The default options' ids, so that a channel can speak of every request alike.
            if len(ids) != 1 or not isinstance(ids[0], str) or ids[0] not in DEFAULT_CHOICE_IDS:
                raise _choice_refused("This request offers approve or reject only.", request)
            if approve is not None and approve != DEFAULT_CHOICE_IDS[ids[0]]:
                raise _choice_refused("The choice and the decision disagree.", request)
            approve = DEFAULT_CHOICE_IDS[ids[0]]
        if approve is None:
            raise _choice_refused("Choose approve or reject.", request)
        return approve, None, ()
    options = request.choices()
    by_id = {option.id: option for option in options}
    if not ids:
        raise _choice_refused("Choose one of the request's options.", request)
    if len(ids) > len(options) or not all(isinstance(each, str) and each in by_id for each in ids):
        raise _choice_refused("The choice names an option this request does not offer.", request)
    if len(set(ids)) != len(ids):
        raise _choice_refused("The choice names an option twice.", request)
    chosen = [option for option in options if option.id in set(ids)]
    if len(chosen) > 1 and not request.multiple_options:
        raise _choice_refused("Choose one option: this request does not allow several.", request)
    if len(chosen) > 1 and any(option.outcome == "failure" for option in chosen):
        raise _choice_refused(f"“{_failure_label(chosen)}” is chosen alone, not with other options.", request)
    chosen_approve = chosen[0].outcome == "success"
    if approve is not None and approve != chosen_approve:
        raise _choice_refused("The choice and the decision disagree.", request)
    return chosen_approve, [option.id for option in chosen], tuple(chosen)


def _failure_label(chosen: list[ApprovalOption]) -> str:
    return next(option.label for option in chosen if option.outcome == "failure")


def decision_answers(
    request: ApprovalRequest, *, answers: Mapping[str, Any] | None, from_form: bool, approve: bool
) -> dict[str, Any] | None:
    """The answers, typed and checked against the request's stored form (never the client's
    word), or ApprovalError ``answers_invalid`` with ``field_errors``; None without a form."""
    if not request.form_schema:
        if answers:
            raise ApprovalError(
                "This request has no form to answer.",
                ANSWERS_INVALID,
                request=request,
                field_errors={NON_FIELD_ERRORS: "This request has no form to answer."},
            )
        return None
    try:
        return answers_clean(
            request.form,
            {} if answers is None else answers,
            from_form=from_form,
            outcome="success" if approve else "failure",
        )
    except InvalidAnswers as invalid:
        raise ApprovalError(
            ANSWERS_INVALID_MESSAGE, ANSWERS_INVALID, request=request, field_errors=invalid.errors
        ) from None


def _vote_summary(vote: Vote) -> dict[str, Any]:
    """What the audit trail says about a vote's choice and answers: the ids and the names of
    the fields answered, never the values (they go to the workflow, not the log or the trail)."""
    summary: dict[str, Any] = {}
    if vote.choice is not None:
        summary["choice"] = vote.choice
    if vote.answers is not None:
        summary["answered"] = sorted(vote.answers)
    return summary


@transaction.atomic
def _decide(
    *,
    public_id,
    user: User,
    approve: bool | None,
    comment: str,
    choice: Sequence[str] | None,
    answers: Mapping[str, Any] | None,
    answers_from_form: bool,
) -> ApprovalRequest:
    # Only the second of two simultaneous votes completing a 2-of-2 closes it (one Callback).
    request = locked_request(public_id, related=("decided_by",))
    # One moment for the whole decision: the deadline and a delegation's window are checked at
    # the time the vote records, which is what the callback's re-check judges it by.
    now = timezone.now()
    if request.is_pending:
        # Votes whose ground went since (deactivated, left the group, reassigned away) neither count
        # toward this decision nor keep their group taken; kept only if this vote is recorded.
        stale_votes_withdraw(request)
    try:
        approve, chosen_ids, _chosen = decision_choice(request, approve=approve, choice=choice)
        choice_error = None
    except ApprovalError as error:
        choice_error = error
    authority, refusal = permissions.decision_authority(user, request, approve=approve, at=now)
    if refusal is not None:
        raise ApprovalError(refusal.message, refusal.code, request=request)
    if choice_error is not None:
        # After the authority: whoever may not decide at all hears that, not this.
        raise choice_error
    if not approve and not comment:
        raise ApprovalError(REASON_REQUIRED_MESSAGE, REASON_REQUIRED, request=request)
    typed_answers = decision_answers(request, answers=answers, from_form=answers_from_form, approve=approve)

    vote = Vote.objects.create(
        request=request,
        user=user,
        on_behalf_of=authority.on_behalf_of,
        approve=approve,
        comment=comment,
        choice=chosen_ids,
        answers=typed_answers,
        group=authority.group,
        created_at=now,
    )
    on_behalf = {"on_behalf_of": authority.principal.email} if authority.on_behalf_of else {}
    votes = list(request.votes.all()) + [vote]
    approvals = sum(1 for each in votes if each.approve)
    rejections = len(votes) - approvals
    counted = quorum_votes(votes, vote)
    closes = counted >= (request.required_approvals if approve else request.rejections_to_deny)
    chosen = _vote_summary(vote)
    if not closes:
        if request.claimed_by_id == user.pk:
            # The claimer did their part; what the quorum still needs is free for colleagues to take.
            request.claimed_by, request.claimed_at = None, None
            request.save(update_fields=["claimed_by", "claimed_at", "updated_at"])
            audit(action=AuditAction.UNCLAIMED, request=request, actor=user, ended_by="vote")
        same_choice = {"choice_votes": counted} if approve and vote.choice is not None else {}
        audit(
            action=AuditAction.APPROVAL_RECORDED if approve else AuditAction.REJECTION_RECORDED,
            request=request,
            actor=user,
            comment=comment,
            approvals=approvals,
            required=request.required_approvals,
            rejections=rejections,
            rejections_to_deny=request.rejections_to_deny,
            **same_choice,
            **chosen,
            **on_behalf,
        )
        logger.info(
            "approval request %s: %s by user %s (%s of %s approvals)",
            request.public_id,
            "approval" if approve else "rejection",
            user.pk,
            approvals,
            request.required_approvals,
        )
        return request

    request.status = RequestStatus.APPROVED if approve else RequestStatus.REJECTED
    request.decided_by = user
    request.decided_at = now
    request.decision_comment = comment
    request.awaiting_info = False
    request.save(
        update_fields=["status", "decided_by", "decided_at", "decision_comment", "awaiting_info", "updated_at"]
    )
    kind, payload = callback_payload(request, vote)
    callback = Callback.objects.create(request=request, kind=kind, payload=payload)
    quorum = {"approvals": approvals, "rejections": rejections} if request.has_quorum or len(votes) > 1 else {}
    audit(
        action=AuditAction(request.status),
        request=request,
        actor=user,
        comment=comment,
        **quorum,
        **chosen,
        **on_behalf,
    )
    metrics.request_closed(request)
    logger.info("approval request %s %s by user %s", request.public_id, request.status, user.pk)
    queue_callback(callback)
    approval_decided_notify(request=request)  # the requester hears once the callback is settled
    return request


def approval_decide(
    *,
    public_id,
    user: User,
    approve: bool | None = None,
    comment: str = "",
    via: str = "web",
    choice: Sequence[str] | None = None,
    answers: Mapping[str, Any] | None = None,
    answers_from_form: bool = False,
) -> ApprovalRequest:
    """A vote, which closes the request when its policy is met.

    Without options: `approve` (or `choice=["approve"]` / `["reject"]`). With options: `choice`,
    the chosen option ids (one, or several success options when the request allows `multiple`);
    `approve` follows from the option's outcome and, if given too, must agree. `answers`: the
    form's answers, checked against the request's stored form (`answers_from_form`: the strings
    of an HTML form rather than JSON); a form's required fields apply to success outcomes only.
    A failure outcome needs a non-blank comment (its reason), whatever the channel.

    Raises ApprovalError (and audits the refusal) when not allowed: ``choice_invalid``,
    ``answers_invalid`` (with ``field_errors``), ``reason_required`` and the authority's codes."""
    comment = comment.strip()
    attempted = "decide" if approve is None else "approve" if approve else "reject"
    return refusals_recorded(
        lambda: _decide(
            public_id=public_id,
            user=user,
            approve=approve,
            comment=comment,
            choice=choice,
            answers=answers,
            answers_from_form=answers_from_form,
        ),
        user=user,
        attempted=attempted,
        public_id=public_id,
        via=via,
    )


def refusals_recorded(attempt, *, user: User, attempted: str, public_id, via: str = "web"):
    """Run `attempt()` (a service's own transaction); a refusal it raises is recorded on its own,
    after that transaction rolled back, and raised again."""
    try:
        return attempt()
    except ApprovalError as error:
        # The names of the fields refused (the schema's own), never what was typed into them.
        fields = {"fields": sorted(error.field_errors)} if error.field_errors else {}
        refusal_record(
            user=user,
            request=error.request,
            code=error.code,
            attempted=attempted,
            via=via,
            public_id=str(public_id),
            **fields,
        )
        raise


@transaction.atomic
def refusal_record(*, user: User, request: ApprovalRequest | None, code: str, attempted: str, **data) -> AuditEvent:
    """Every refused attempt is visible to admins: who, what, why."""
    logger.info("refused %s for %s: %s", attempted, user.email or user.pk, code)
    metrics.decision_refused(reason=code)
    return audit(
        action=AuditAction.DECISION_REFUSED, request=request, actor=user, code=code, attempted=attempted, **data
    )


# ---------------------------------------------------------------------------
# Expiry
# ---------------------------------------------------------------------------
@transaction.atomic
def approval_expire(*, request_id: int) -> bool:
    """Close a pending request whose deadline passed; tell Step Functions ApprovalExpired."""
    request = ApprovalRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None or not request.is_pending or not request.is_overdue:
        return False
    request.status = RequestStatus.EXPIRED
    request.decided_at = timezone.now()
    request.awaiting_info = False
    request.save(update_fields=["status", "decided_at", "awaiting_info", "updated_at"])
    cause = json.dumps({"requestId": str(request.public_id), "deadline": request.deadline.isoformat()})
    callback = Callback.objects.create(
        request=request, kind=Callback.Kind.FAILURE, payload={"error": "ApprovalExpired", "cause": cause}
    )
    audit(action=AuditAction.EXPIRED, request=request, actor=None, deadline=request.deadline.isoformat())
    metrics.request_closed(request)
    queue_callback(callback)
    approval_decided_notify(request=request)  # the requester hears once the callback is settled
    return True


# ---------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------
@transaction.atomic
def approval_cancel(*, request_id: int, actor: User, reason: str) -> ApprovalRequest:
    """Close a pending request; the execution gets SendTaskFailure with ApprovalCancelled."""
    reason = require_reason(reason)
    request = locked_pending_request(request_id)
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
            "cancelledBy": identity(actor),
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
    audit(action=AuditAction.CANCELLED, request=request, actor=actor, reason=reason)
    metrics.request_closed(request)
    queue_callback(callback)
    approval_decided_notify(request=request)  # the requester hears once the callback is settled
    return request
