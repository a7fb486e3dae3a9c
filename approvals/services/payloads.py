"""What Step Functions gets back when a request closes: the output or the error's cause, identities
of the deciders and the conversation, within the API's limits (the conversation is left out first)."""

import json

from approvals.contract import DEFAULT_FAILURE_ERROR
from approvals.models import (
    ApprovalRequest,
    Callback,
    RequestStatus,
    User,
    Vote,
)
from approvals.services.common import MAX_CAUSE_LENGTH, truncate

# SendTaskSuccess accepts at most this many bytes of output.
MAX_OUTPUT_BYTES = 262_144


VOTE_LISTS = ("approvals", "rejections")


def output_size(output: dict) -> int:
    """The UTF-8 size of the output exactly as the AWS integration sends it."""
    return len(json.dumps(output, ensure_ascii=False).encode())


def identity(user: User) -> dict:
    return {"email": user.email, "sub": user.oidc_sub, "issuer": user.oidc_issuer}


def vote_entry(vote: Vote) -> dict:
    entry = {**identity(vote.user), "decidedAt": vote.created_at.isoformat(), "comment": vote.comment}
    if vote.choice is not None:
        entry["choice"] = vote.choice
    if vote.answers is not None:
        entry["input"] = vote.answers
    if vote.on_behalf_of is not None:
        entry["onBehalfOf"] = identity(vote.on_behalf_of)
    if vote.group_name:
        entry["group"] = vote.group_name
    return entry


def conversation_entries(request: ApprovalRequest) -> list[dict]:
    return [
        {"kind": message.kind, "from": message.author_label, "at": message.created_at.isoformat(), "text": message.text}
        for message in request.info_messages.all()
    ]


def decision_outcome(request: ApprovalRequest, last: Vote) -> dict:
    votes = list(request.votes.select_related("user", "on_behalf_of").order_by("created_at", "pk"))
    decided_by = identity(last.user)
    if last.on_behalf_of is not None:
        decided_by["onBehalfOf"] = identity(last.on_behalf_of)
    outcome = {
        "requestId": str(request.public_id),
        "decision": request.status,
        "decidedBy": decided_by,
        "decidedAt": request.decided_at.isoformat(),
        "comment": request.decision_comment,
        "policy": request.policy,
        "approvals": [vote_entry(vote) for vote in votes if vote.approve],
        "rejections": [vote_entry(vote) for vote in votes if not vote.approve],
        "conversation": conversation_entries(request),
    }
    return {**outcome, **chosen_outcome(request, last)}


def chosen_outcome(request: ApprovalRequest, last: Vote) -> dict:
    """What the deciding vote chose, for the state machine to branch on
    (docs/approver-input.md#what-step-functions-receives): `choice`, the option id (a list of
    ids when the request allows `multiple`), on a request with options; `input`, the typed
    answers, on a request with a form. Every vote's own choice and input are in its entry."""
    chosen: dict = {}
    if request.options:
        ids = list(last.choice or ())
        chosen["choice"] = ids if request.multiple_options else (ids[0] if ids else None)
    if request.form_schema:
        chosen["input"] = last.answers or {}
    return chosen


def failure_error(request: ApprovalRequest, last: Vote) -> str:
    """The error a rejection sends: the chosen failure option's, else ApprovalDenied."""
    chosen = set(last.choice or ())
    return next(
        (option.error for option in request.choices() if option.id in chosen and option.outcome == "failure"),
        DEFAULT_FAILURE_ERROR,
    )


def without_conversation(outcome: dict) -> dict:
    return {**outcome, "conversation": [], "conversationOmitted": len(outcome["conversation"])}


def callback_payload(request: ApprovalRequest, last: Vote) -> tuple[str, dict]:
    """What Step Functions gets. The conversation is context: it is left out when the output
    would not fit (a decision is never held back for it). Comments are not cut from an output
    (callbacks refuses an oversized one before the call, clearly); a failure's cause is short
    (32,768 characters), so there they are shortened, and the cause cut as a last resort."""
    outcome = decision_outcome(request, last)
    if request.status == RequestStatus.APPROVED:
        output = {"approved": True, **outcome}
        if output_size(output) > MAX_OUTPUT_BYTES and output["conversation"]:
            output = without_conversation(output)
        if output_size(output) > MAX_OUTPUT_BYTES and "input" in output:
            # Each approver's own answers repeat in their vote's entry: the deciding one's stay as `input`.
            output = {**output, **{key: [_without_input(entry) for entry in output[key]] for key in VOTE_LISTS}}
        return Callback.Kind.SUCCESS, {"output": output}

    body = {"approved": False, **outcome}
    cause = json.dumps(body, ensure_ascii=False)
    if len(cause) > MAX_CAUSE_LENGTH:
        body = without_conversation(body)
        for key in VOTE_LISTS:
            # Each vote's own answers go first: the deciding vote's stay at the top as `input`.
            body[key] = [{**_without_input(entry), "comment": truncate(entry["comment"], 200)} for entry in body[key]]
        body["comment"] = truncate(body["comment"], 2000)
        cause = json.dumps(body, ensure_ascii=False)
    return Callback.Kind.FAILURE, {"error": failure_error(request, last), "cause": truncate(cause, MAX_CAUSE_LENGTH)}


def _without_input(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key != "input"}
