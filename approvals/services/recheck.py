"""The identity re-check before a decision is sent, and what happens when it refuses a vote.

A vote that no longer holds (its voter left the group, was deactivated, a delegation did not
cover it) is withdrawn — kept, with the reason, but no longer counted. If the votes that still
count meet the request's policy, the callback goes ahead with them; otherwise the request is
pending again for the remaining approvers (who are told), an admin can cancel it, and the
unsent callback row is removed so that nothing stale can be delivered later. Never an
APPROVED request with a failed callback, waiting for Step Functions to time out.

Called by callbacks.callbacks_claim_batch with the callback rows locked, in its transaction;
and, for the votes already cast, by every later vote (stale_votes_withdraw), so that a vote
which no longer holds never counts toward the next one.
"""

from dataclasses import dataclass

from django.db.models import prefetch_related_objects
from django.utils import timezone

from approvals import permissions
from approvals.models import ApprovalRequest, AuditAction, Callback, RequestStatus, Vote
from approvals.ops import metrics
from approvals.services.common import audit
from approvals.services.notifications import approval_decided_notify, approval_notify
from approvals.services.payloads import callback_payload
from approvals.services.quorum import quorum_decider

RECHECK_FAILED = "identity_recheck_failed"


@dataclass(frozen=True)
class RecheckOutcome:
    """`send`: go ahead with the (possibly rebuilt) callback. Else `reopened`: the request is
    pending again and the callback is gone; or `failure`: fail the callback with this reason."""

    send: bool = False
    reopened: bool = False
    failure: str = ""


def _votes_query():
    return Vote.objects.select_related("user", "on_behalf_of").order_by("created_at", "pk")


def recheck_load(callbacks: list[Callback]) -> dict[int, list[Vote]]:
    """What the re-check of a whole batch reads, loaded once: every request's votes (by request
    id, in order), its assignments, and each voter's groups (once per voter for the batch:
    permissions.preload_group_names). Three queries whatever the batch's size."""
    requests = [callback.request for callback in callbacks]
    if not requests:
        return {}
    votes: dict[int, list[Vote]] = {request.pk: [] for request in requests}
    for vote in _votes_query().filter(request_id__in=list(votes)):
        votes[vote.request_id].append(vote)
    permissions.preload_assignments(requests)
    people = [person for found in votes.values() for vote in found for person in (vote.user, vote.on_behalf_of)]
    permissions.preload_group_names(people)
    return votes


def decision_recheck(callback: Callback, *, maybe_delivered: bool, votes: list[Vote] | None = None) -> RecheckOutcome:
    """The same rule as the decision, once more: every vote that counted must still be allowed.

    `maybe_delivered`: an earlier attempt may have reached Step Functions; then nothing is
    reopened (the execution may have moved on) and the callback fails as before. `votes`: the
    request's votes in order, as recheck_load() loaded them for a batch (else read here).
    """
    request = callback.request
    approve = request.status == RequestStatus.APPROVED
    if votes is None:  # one request, not a batch (recheck_load loaded the batch's assignments)
        votes = list(_votes_query().filter(request=request))
        prefetch_related_objects([request], "assignments")  # each vote's check reads them
    counted = [vote for vote in votes if vote.approve == approve]
    if not counted:
        return RecheckOutcome(failure="The decision has no decider.")
    refused = [(vote, refusal) for vote in counted if (refusal := permissions.vote_refusal(vote, request))]
    if not refused:
        return RecheckOutcome(send=True)
    if maybe_delivered:
        return RecheckOutcome(failure=refused[0][1].message)

    request = ApprovalRequest.objects.select_for_update(of=("self",)).get(pk=request.pk)
    now = timezone.now()
    for vote, refusal in refused:
        _vote_withdraw(vote, request=request, code=refusal.code, reason=refusal.message, now=now)
    withdrawn = {vote.pk for vote, _ in refused}
    remaining = [vote for vote in votes if vote.pk not in withdrawn]
    approvals = sum(1 for vote in remaining if vote.approve)
    rejections = len(remaining) - approvals
    # With options, only votes for the same choice add up (services/quorum.py).
    decider = quorum_decider(request, remaining, approve=approve)
    if decider is not None:
        _decision_recount(request, callback, decider=decider)
        return RecheckOutcome(send=True)
    _request_reopen(request, callback, refused=refused, approvals=approvals, rejections=rejections)
    return RecheckOutcome(reopened=True)


def stale_votes_withdraw(request: ApprovalRequest) -> int:
    """Before a new vote on a pending request is checked and counted: the votes already cast
    that no longer hold are withdrawn, as the callback's re-check would withdraw them. Otherwise
    they count toward the policy (closing the request only for the re-check to reopen it) and,
    with distinctGroups, keep their group's approval taken. `request` is locked by the caller,
    with its votes prefetched; they are read again when any is withdrawn. Returns how many."""
    votes = list(request.votes.all())
    if not votes:
        return 0
    refused = [(vote, refusal) for vote in votes if (refusal := permissions.vote_refusal(vote, request))]
    now = timezone.now()
    for vote, refusal in refused:
        _vote_withdraw(vote, request=request, code=refusal.code, reason=refusal.message, now=now)
    if refused:
        request._prefetched_objects_cache.pop("votes", None)
        prefetch_related_objects([request], "votes")
    return len(refused)


def _vote_withdraw(vote: Vote, *, request: ApprovalRequest, code: str, reason: str, now) -> None:
    vote.withdrawn_at = now
    vote.withdrawn_reason = reason
    vote.save(update_fields=["withdrawn_at", "withdrawn_reason"])
    audit(
        action=AuditAction.VOTE_WITHDRAWN,
        request=request,
        actor=None,
        voter=vote.user.email,
        approve=vote.approve,
        code=code,
        reason=reason,
        **({"on_behalf_of": vote.on_behalf_of.email} if vote.on_behalf_of else {}),
    )


def _decision_recount(request: ApprovalRequest, callback: Callback, *, decider: Vote) -> None:
    """The votes that still count meet the policy: the decision stands, sent with those votes."""

    last = decider
    request.decided_by = last.user
    request.decision_comment = last.comment
    request.save(update_fields=["decided_by", "decision_comment", "updated_at"])
    callback.kind, callback.payload = callback_payload(request, last)
    callback.save(update_fields=["kind", "payload", "updated_at"])
    audit(action=AuditAction.DECISION_RECOUNTED, request=request, actor=None, decided_by=last.user.email)


def _request_reopen(
    request: ApprovalRequest, callback: Callback, *, refused: list, approvals: int, rejections: int
) -> None:

    previous = request.status
    request.status = RequestStatus.PENDING
    request.decided_by = None
    request.decided_at = None
    request.decision_comment = ""
    request.claimed_by, request.claimed_at = None, None
    fields = ["status", "decided_by", "decided_at", "decision_comment", "claimed_by", "claimed_at", "updated_at"]
    request.save(update_fields=fields)
    # Never sent (checked by the caller): remove it, so no relay or retry can deliver it later.
    # The next decision (or an admin's cancel) creates the request's callback afresh.
    withdrawn_callback = {"id": callback.pk, "kind": callback.kind, "attempts": callback.attempts}
    callback.delete()
    audit(
        action=AuditAction.REOPENED,
        request=request,
        actor=None,
        code=RECHECK_FAILED,
        previous_status=previous,
        reason=" ".join(refusal.message for _, refusal in refused),
        withdrawn_votes=[vote.user.email for vote, _ in refused],
        approvals=approvals,
        required=request.required_approvals,
        rejections=rejections,
        rejections_to_deny=request.rejections_to_deny,
        callback=withdrawn_callback,
    )
    metrics.callback_failed(code=RECHECK_FAILED)
    approval_notify(request=request, kind="reopened")  # the remaining approvers; sent after commit
    approval_decided_notify(request=request)  # the Slack messages closed at the decision said "Approved by …"
