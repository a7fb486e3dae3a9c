"""The other writers racing a decision, on two real PostgreSQL connections at once.

The decision path's own races (two approvers, the expiry sweep and a cancel at the deadline)
are in test_reliability.py. Here an admin's reassign, cancel and claim release, a colleague's
claim, an ingest error's replay and discard, the callback sweep, and a question or an answer
meet a decision (or each other) on the same row.

Each race is played in its worst order, every time, rather than hoped for: `in_turn` runs the
first side in a transaction it keeps open until the second side waits on a lock the first one
holds (PostgreSQL's pg_stat_activity says so), then commits; the second side goes on with
what it finds. Both orders are tested. PostgreSQL only: SQLite has one writer, so nothing
waits on a row there.
"""

import json
import threading
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection, transaction
from django.utils import timezone

from approvals import services
from approvals.contract import parse_message
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Callback,
    CallbackStatus,
    InfoMessage,
    IngestError,
    RequestStatus,
    Vote,
)
from tests.support import make_user, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CLOSING = ["approved", "rejected", "cancelled", "expired"]


@pytest.fixture(autouse=True)
def no_worker():
    # No worker in these tests: nothing to publish the delivery task to (the rows stay pending).
    with mock.patch("approvals.services.callbacks.enqueue_on_commit"):
        yield


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "erin": make_user("erin", "finance-approvers"),
        "frank": make_user("frank", "finance-approvers"),
        "bob": make_user("bob"),  # the requester
        "carol": make_user("carol", admin=True),
    }


def ingest(*, users=(), groups=("finance-approvers",), **extra) -> ApprovalRequest:
    body = {
        "taskToken": f"race-{uuid.uuid4()}",
        "title": "Approve order 42",
        "requester": "bob@example.com",
        "approvers": {"users": list(users), "groups": list(groups)},
        **extra,
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    return request


def waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def outcome_of(attempt):
    """What a side ended with: its result, the code of its refusal, or the exception it raised."""
    try:
        return attempt()
    except services.ApprovalError as error:
        return error.code
    except Exception as error:  # noqa: BLE001 - a crash is an outcome the test asserts against
        return error


def in_turn(first, second, *, second_waits: bool = True) -> tuple[object, object]:
    """Run `first` and `second` on two connections: `first` in a transaction held open until
    `second` waits on a lock it holds (or ended without waiting: only if not `second_waits`),
    then committed. Returns both outcomes (outcome_of)."""
    start = threading.Barrier(2)
    first_ran, second_ended, commit = threading.Event(), threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}
    waited = []

    def second_waits_or_ended() -> bool:
        if waiting_on_a_lock():
            waited.append(True)
            return True
        return second_ended.is_set()

    def hold():
        try:
            start.wait(timeout=10)
            with transaction.atomic():
                outcomes["first"] = outcome_of(first)
                first_ran.set()
                commit.wait(timeout=30)
        finally:
            first_ran.set()
            connection.close()

    def follow():
        try:
            start.wait(timeout=10)
            first_ran.wait(timeout=30)
            outcomes["second"] = outcome_of(second)
        finally:
            second_ended.set()
            connection.close()

    threads = [threading.Thread(target=hold), threading.Thread(target=follow)]
    for thread in threads:
        thread.start()
    try:
        first_ran.wait(timeout=30)
        wait_for(second_waits_or_ended, timeout=30, interval=0.01)
    finally:
        commit.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert bool(waited) == second_waits, "the second side did not wait on the first one's lock"
    return outcomes["first"], outcomes["second"]


def closing_events(request: ApprovalRequest) -> list[str]:
    return list(
        AuditEvent.objects.filter(request=request, action__in=CLOSING).order_by("pk").values_list("action", flat=True)
    )


def refusals(request: ApprovalRequest) -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.filter(request=request, action="decision_refused")
        .order_by("pk")
        .values_list("actor_label", "data__code")
    )


# ---------------------------------------------------------------------------
# An admin's cancel, reassign and claim release against an approver's decision
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["cancel", "decide"])
def test_an_admins_cancel_and_an_approvers_decision_make_one_outcome_one_callback_and_the_refusal_is_audited(
    people, first
):
    request = ingest()
    sides = {
        "cancel": lambda: services.approval_cancel(request_id=request.pk, actor=people["carol"], reason="wrong order"),
        "decide": lambda: services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True),
    }
    second = "decide" if first == "cancel" else "cancel"

    won, lost = in_turn(sides[first], sides[second])

    assert isinstance(won, ApprovalRequest) and lost == "not_pending", (won, lost)
    request.refresh_from_db()
    status = RequestStatus.CANCELLED if first == "cancel" else RequestStatus.APPROVED
    assert request.status == status
    callback = Callback.objects.get(request=request)
    if status == RequestStatus.CANCELLED:
        assert callback.kind == Callback.Kind.FAILURE and callback.payload["error"] == "ApprovalCancelled"
        assert refusals(request) == [("alice@example.com", "not_pending")]
        assert not Vote.objects.filter(request=request).exists()
    else:
        assert callback.kind == Callback.Kind.SUCCESS and callback.payload["output"]["approved"] is True
    assert closing_events(request) == [status]


@pytest.mark.parametrize("first", ["reassign", "decide"])
def test_a_reassign_away_from_an_approver_deciding_at_the_same_moment_never_lets_them_decide_after_it(people, first):
    request = ingest(users=["alice@example.com"], groups=())
    sides = {
        "reassign": lambda: services.approval_reassign(
            request_id=request.pk, actor=people["carol"], users=["erin@example.com"], reason="alice is away"
        ),
        "decide": lambda: services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True),
    }
    second = "decide" if first == "reassign" else "reassign"

    won, lost = in_turn(sides[first], sides[second])

    assert isinstance(won, ApprovalRequest), won
    request.refresh_from_db()
    assignees = list(request.assignments.values_list("value", flat=True))
    if first == "reassign":
        assert lost == "not_assignee"
        assert request.status == RequestStatus.PENDING and assignees == ["erin@example.com"]
        assert not Vote.objects.filter(request=request).exists() and not Callback.objects.exists()
        assert refusals(request) == [("alice@example.com", "not_assignee")]
    else:
        assert lost == "not_pending"
        assert request.status == RequestStatus.APPROVED and request.decided_by == people["alice"]
        assert assignees == ["alice@example.com"] and Callback.objects.filter(request=request).count() == 1
        assert not AuditEvent.objects.filter(request=request, action="reassigned").exists()


@pytest.mark.parametrize("first", ["reassign", "vote"])
def test_a_reassign_removing_the_first_voter_of_a_two_of_two_never_lets_the_second_vote_close_with_it(people, first):
    request = ingest(policy={"required": 2})
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    sides = {
        "reassign": lambda: services.approval_reassign(
            request_id=request.pk,
            actor=people["carol"],
            users=["erin@example.com", "frank@example.com"],
            reason="finance is reorganised",
        ),
        "vote": lambda: services.approval_decide(public_id=request.public_id, user=people["erin"], approve=True),
    }
    second = "vote" if first == "reassign" else "reassign"

    won, lost = in_turn(sides[first], sides[second])

    assert isinstance(won, ApprovalRequest), won
    request.refresh_from_db()
    if first == "reassign":
        # erin is still an approver (named now): her vote counts, alice's no longer does.
        assert isinstance(lost, ApprovalRequest), lost
        assert request.status == RequestStatus.PENDING and not Callback.objects.exists()
        assert Vote.with_withdrawn.get(request=request, user=people["alice"]).withdrawn_at is not None
        assert list(Vote.objects.filter(request=request).values_list("user__username", flat=True)) == ["erin"]
    else:
        assert lost == "not_pending"
        assert request.status == RequestStatus.APPROVED and Callback.objects.filter(request=request).count() == 1
        assert not Vote.with_withdrawn.filter(request=request, withdrawn_at__isnull=False).exists()


@pytest.mark.parametrize("first", ["release", "decide"])
def test_an_admins_claim_release_and_the_claimers_decision_both_hold_and_both_are_audited(people, first):
    request = ingest()
    services.approval_claim(public_id=request.public_id, user=people["alice"])
    sides = {
        "release": lambda: services.claims_release(request_ids=[request.pk], actor=people["carol"]),
        "decide": lambda: services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True),
    }
    second = "decide" if first == "release" else "release"

    outcomes = dict(zip([first, second], in_turn(sides[first], sides[second]), strict=True))

    request.refresh_from_db()
    assert isinstance(outcomes["decide"], ApprovalRequest), outcomes
    assert request.status == RequestStatus.APPROVED and Callback.objects.filter(request=request).count() == 1
    released = AuditEvent.objects.filter(request=request, action="claim_released")
    if first == "release":
        assert [claim.claimed_by for claim in outcomes["release"]] == [people["alice"]]
        assert released.get().actor == people["carol"]
    else:
        assert outcomes["release"] == [] and not released.exists()  # closed: its claim shows nowhere


# ---------------------------------------------------------------------------
# Claims taken while another claim changes hands
# ---------------------------------------------------------------------------
def alice_leaves_finance(people) -> None:
    people["alice"].groups.clear()


@pytest.mark.parametrize("first", ["claim", "release"])
def test_an_admins_claim_release_racing_a_colleague_taking_a_stale_claim_neither_crashes_nor_loses_an_event(
    people, first
):
    request = ingest()
    services.approval_claim(public_id=request.public_id, user=people["alice"])
    alice_leaves_finance(people)
    sides = {
        "claim": lambda: services.approval_claim(public_id=request.public_id, user=people["erin"]),
        "release": lambda: services.claims_release(request_ids=[request.pk], actor=people["carol"]),
    }
    second = "release" if first == "claim" else "claim"

    outcomes = dict(zip([first, second], in_turn(sides[first], sides[second]), strict=True))

    assert isinstance(outcomes["claim"], ApprovalRequest), outcomes
    assert isinstance(outcomes["release"], list), outcomes
    request.refresh_from_db()
    released = [(claim.request.pk, claim.claimed_by.email) for claim in outcomes["release"]]
    events = list(
        AuditEvent.objects.filter(request=request, action__in=["claimed", "claim_released"])
        .order_by("pk")
        .values_list("action", "actor_label", "data__claimed_by")
    )
    if first == "claim":
        # erin took alice's stale claim; the admin then released erin's.
        assert released == [(request.pk, "erin@example.com")] and request.claimed_by is None
        assert events == [
            ("claimed", "alice@example.com", None),
            ("claim_released", "system", "alice@example.com"),
            ("claimed", "erin@example.com", None),
            ("claim_released", "carol@example.com", "erin@example.com"),
        ]
    else:
        assert released == [(request.pk, "alice@example.com")] and request.claimed_by == people["erin"]
        assert events == [
            ("claimed", "alice@example.com", None),
            ("claim_released", "carol@example.com", "alice@example.com"),
            ("claimed", "erin@example.com", None),
        ]


def test_two_colleagues_claiming_at_the_same_moment_one_gets_it_and_the_other_learns_who(people):
    request = ingest()

    won, lost = in_turn(
        lambda: services.approval_claim(public_id=request.public_id, user=people["erin"]),
        lambda: services.approval_claim(public_id=request.public_id, user=people["frank"]),
    )

    assert isinstance(won, ApprovalRequest) and lost == "claimed", (won, lost)
    assert ApprovalRequest.objects.get(pk=request.pk).claimed_by == people["erin"]
    assert refusals(request) == [("frank@example.com", "claimed")]


# ---------------------------------------------------------------------------
# Questions and answers against the decision
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["ask", "decide"])
def test_a_question_racing_the_decision_is_either_in_the_callbacks_conversation_or_refused(people, first):
    request = ingest()
    sides = {
        "ask": lambda: services.info_request(public_id=request.public_id, user=people["erin"], question="Which order?"),
        "decide": lambda: services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True),
    }
    second = "decide" if first == "ask" else "ask"

    outcomes = dict(zip([first, second], in_turn(sides[first], sides[second]), strict=True))

    assert isinstance(outcomes["decide"], ApprovalRequest), outcomes
    sent = Callback.objects.get(request=request).payload["output"]["conversation"]
    assert [entry["text"] for entry in sent] == list(
        InfoMessage.objects.filter(request=request).order_by("pk").values_list("text", flat=True)
    )
    if first == "ask":
        assert [entry["text"] for entry in sent] == ["Which order?"]
    else:
        assert outcomes["ask"] == "not_pending" and sent == []
        assert refusals(request) == [("erin@example.com", "not_pending")]


@pytest.mark.parametrize("first", ["answer", "decide"])
def test_an_answer_racing_the_decision_is_either_in_the_callbacks_conversation_or_refused(people, first):
    request = ingest()
    services.info_request(public_id=request.public_id, user=people["erin"], question="Which order?")
    sides = {
        "answer": lambda: services.info_answer(public_id=request.public_id, user=people["bob"], answer="Order 42."),
        "decide": lambda: services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True),
    }
    second = "decide" if first == "answer" else "answer"

    outcomes = dict(zip([first, second], in_turn(sides[first], sides[second]), strict=True))

    assert isinstance(outcomes["decide"], ApprovalRequest), outcomes
    request.refresh_from_db()
    sent = Callback.objects.get(request=request).payload["output"]["conversation"]
    if first == "answer":
        assert [entry["text"] for entry in sent] == ["Which order?", "Order 42."]
    else:
        assert outcomes["answer"] == "not_pending" and [entry["text"] for entry in sent] == ["Which order?"]
        assert refusals(request) == [("bob@example.com", "not_pending")]
    assert request.awaiting_info is False  # closed: nobody waits for an answer


# ---------------------------------------------------------------------------
# Ingest errors: two admins at once
# ---------------------------------------------------------------------------
@pytest.fixture
def kept_ingest_error() -> IngestError:
    """A message refused as oversized (our limit, since raised), kept for a replay."""
    body = json.dumps(
        {
            "taskToken": f"race-{uuid.uuid4()}",
            "title": "Refused at first",
            "approvers": {"groups": ["finance-approvers"]},
            "details": {"notes": "x" * 600},
        }
    )
    error = services.received_message_ingest(sqs_message_id=f"m-{uuid.uuid4()}", body=body, max_bytes=500)
    assert error is not None and error.code == "oversized" and error.message_ciphertext
    return error


@pytest.mark.parametrize("second", ["replay", "discard"])
def test_an_ingest_error_replayed_while_another_admin_replays_or_discards_it_makes_one_request_and_one_end(
    people, kept_ingest_error, second
):
    row = kept_ingest_error
    admins = {"first": people["carol"], "second": make_user("root", admin=True)}
    sides = {
        "replay": lambda who: lambda: services.ingest_error_replay(ingest_error_id=row.pk, actor=admins[who]),
        "discard": lambda who: lambda: services.ingest_error_discard(ingest_error_id=row.pk, actor=admins[who]),
    }

    won, lost = in_turn(sides["replay"]("first"), sides[second]("second"))

    assert isinstance(won, IngestError) and lost == "resolved", (won, lost)
    row.refresh_from_db()
    assert row.status == IngestError.Status.REPLAYED and row.resolved_by == people["carol"]
    assert row.message_ciphertext == ""
    assert ApprovalRequest.objects.filter(title="Refused at first").count() == 1
    ends = AuditEvent.objects.filter(action__in=["ingest_error_replayed", "ingest_error_discarded"])
    assert list(ends.values_list("action", "actor_label")) == [("ingest_error_replayed", "carol@example.com")]


# ---------------------------------------------------------------------------
# The callback sweep against a delivery task
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["deliver", "sweep"])
def test_the_callback_sweep_and_a_late_delivery_task_claim_a_lost_callback_once(people, settings, first):
    """The decision's task was lost (a broker outage): beat's sweep leases the row and queues a
    task of its own while the late task arrives. One of them sends it, once."""
    request = ingest()
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    callback = Callback.objects.get(request=request)
    stale = timezone.now() - timedelta(seconds=settings.CALLBACK_STALE_SECONDS + 5)
    Callback.objects.filter(pk=callback.pk).update(updated_at=stale)
    claims: list = []

    def deliver():
        sends = services.callbacks_claim_batch(callback_ids=[callback.pk], limit=10)
        claims.extend(sends)
        return sends

    sides = {"deliver": deliver, "sweep": services.callbacks_lease_stale}
    second = "sweep" if first == "deliver" else "deliver"
    # SKIP LOCKED: the sweep passes over the row a task holds, without waiting.
    played = in_turn(sides[first], sides[second], second_waits=first == "sweep")
    outcomes = dict(zip([first, second], played, strict=True))
    assert isinstance(outcomes["sweep"], list) and isinstance(outcomes["deliver"], list), outcomes
    # The task the sweep queued for what it leased.
    claims.extend(services.callbacks_claim_batch(callback_ids=outcomes["sweep"], limit=10))

    assert [send.callback_id for send in claims] == [callback.pk]
    callback.refresh_from_db()
    assert (callback.status, callback.attempts) == (CallbackStatus.SENDING, 1)
