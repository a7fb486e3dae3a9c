"""A vote the callback's identity re-check refuses no longer counts, and the request reopens.

Real parts: the moto server runs the example state machine from deploy/, PostgreSQL holds the
requests and the outbox, and the callback task (`deliver_callback`) runs in-process as the worker
would run it. In these `db` tests on-commit hooks never fire, so each test calls the task itself.
"""

import json
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals import selectors, services
from approvals.contract import parse_message
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, AuditEvent, Callback, CallbackStatus, Notification, RequestStatus, Vote
from approvals.tasks import deliver_callback
from tests.support import (
    finance_execution_input,
    finance_team,
    make_user,
    signed_in,
    wait_for,
    wait_for_execution_end,
)
from tests.test_callbacks import take_from_queue

pytestmark = pytest.mark.django_db

EXECUTION_INPUT = finance_execution_input("Approve order 77 (EUR 9,100)", 77)


@pytest.fixture
def people(db):
    return finance_team()


def start_and_ingest(aws, state_machine_arn: str, **overrides) -> tuple[str, ApprovalRequest]:
    execution_arn = gateway.start_execution(
        state_machine_arn=state_machine_arn,
        name=f"recheck-{uuid.uuid4().hex[:12]}",
        execution_input={**EXECUTION_INPUT, **overrides},
    )

    def ingested():
        take_from_queue(aws.APPROVAL_QUEUE_URL)
        return ApprovalRequest.objects.filter(execution_arn=execution_arn).first()

    return execution_arn, wait_for(ingested)


def leaves_the_group(user) -> None:
    user.groups.remove(Group.objects.get(name="finance-approvers"))


def is_deactivated(user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


def deliver(request: ApprovalRequest) -> str:
    return deliver_callback(Callback.objects.get(request=request).pk)


@pytest.mark.parametrize("change", [leaves_the_group, is_deactivated], ids=["left-group", "deactivated"])
def test_a_refused_recheck_reopens_the_request_and_the_remaining_approver_approves_and_the_execution_succeeds(
    aws, demo_state_machine, people, change
):
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True, comment="fine")
    first_callback = Callback.objects.get(request=request)

    change(people["alice"])
    assert deliver_callback(first_callback.pk) == "nothing-to-send"

    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert request.decided_by is None and request.decided_at is None
    # The refused vote is kept, marked, and no longer counts.
    assert not Vote.objects.filter(request=request).exists()
    withdrawn = Vote.with_withdrawn.get(request=request)
    assert withdrawn.user == people["alice"] and withdrawn.withdrawn_at is not None and withdrawn.withdrawn_reason
    # No stale callback is left to be delivered later, by the sweep or a retry.
    assert not Callback.objects.filter(pk=first_callback.pk).exists()
    assert deliver_callback(first_callback.pk) == "nothing-to-send"
    reopened = AuditEvent.objects.get(request=request, action="reopened")
    assert reopened.data["code"] == "identity_recheck_failed"
    assert reopened.data["withdrawn_votes"] == ["alice@example.com"]
    assert AuditEvent.objects.filter(request=request, action="vote_withdrawn", data__voter="alice@example.com")
    # The remaining approvers are told; the one whose vote was withdrawn is not.
    told = set(
        Notification.objects.filter(request=request, kind=Notification.Kind.REOPENED).values_list(
            "recipient", flat=True
        )
    )
    assert told == {"carol@example.com", "dave@example.com"}
    assert gateway.describe_execution(execution_arn=execution_arn)["status"] == "RUNNING"

    # The request page says what happened; carol may decide it.
    page = signed_in(people["carol"]).get(f"/requests/{request.public_id}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Reopened" in text and "no longer counts" in text and 'value="approve"' in text

    services.approval_decide(public_id=request.public_id, user=people["carol"], approve=True, comment="ok by me")
    assert deliver(request) == "delivered"
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    approval = json.loads(execution["output"])["approval"]
    assert approval["decidedBy"]["email"] == "carol@example.com"
    assert [entry["email"] for entry in approval["approvals"]] == ["carol@example.com"]


def test_an_admin_can_cancel_a_reopened_request_and_the_execution_fails_with_approval_cancelled(
    aws, demo_state_machine, people
):
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    leaves_the_group(people["alice"])
    assert deliver(request) == "nothing-to-send"

    services.approval_cancel(request_id=request.pk, actor=people["root"], reason="Nobody left to decide")

    assert deliver(request) == "delivered"
    execution = wait_for_execution_end(execution_arn)
    # The demo state machine catches ApprovalCancelled into its Fail state "Withdrawn".
    assert execution["status"] == "FAILED" and execution["error"] == "ApprovalWithdrawn"
    failures = [
        event["taskFailedEventDetails"]["error"]
        for event in gateway.get_execution_history(execution_arn=execution_arn)
        if event["type"] == "TaskFailed"
    ]
    assert failures == ["ApprovalCancelled"]
    request.refresh_from_db()
    assert request.status == RequestStatus.CANCELLED


def test_a_two_of_two_that_loses_an_approval_reopens_and_the_next_approval_closes_it_again(
    aws, demo_state_machine, people
):
    services.approval_policy_save(actor=people["root"], name="two approvals", required_approvals=2)
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    services.approval_decide(public_id=request.public_id, user=people["carol"], approve=True)
    leaves_the_group(people["alice"])
    assert deliver(request) == "nothing-to-send"
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert list(Vote.objects.filter(request=request).values_list("user__username", flat=True)) == ["carol"]

    # ...then dave's approval meets 2 of 2 again with carol's, and the execution succeeds.
    services.approval_decide(public_id=request.public_id, user=people["dave"], approve=True)
    assert deliver(request) == "delivered"
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    approval = json.loads(execution["output"])["approval"]
    assert sorted(entry["email"] for entry in approval["approvals"]) == ["carol@example.com", "dave@example.com"]


def test_a_rejection_whose_rejector_left_is_withdrawn_and_the_earlier_approvals_wait_for_more(
    aws, demo_state_machine, people
):
    """Recount: when the votes left still decide it (here: two rejections needed, three given)."""
    services.approval_policy_save(
        actor=people["root"], name="three approvals, two rejections", required_approvals=3, rejections_to_deny=2
    )
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=False, comment="no")
    services.approval_decide(public_id=request.public_id, user=people["carol"], approve=False, comment="no 2")
    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED
    leaves_the_group(people["carol"])
    assert deliver(request) == "nothing-to-send"
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING  # one rejection left of two needed

    # Carol comes back to the group: her earlier vote stays withdrawn and she may vote again.
    people["carol"].groups.add(Group.objects.get(name="finance-approvers"))
    services.approval_decide(public_id=request.public_id, user=people["carol"], approve=False, comment="still no")
    assert deliver(request) == "delivered"
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "FAILED" and execution.get("error") == "ApprovalDenied"
    assert Vote.with_withdrawn.filter(request=request, user=people["carol"]).count() == 2
    # Her "Decided by me" tab lists it once, by the vote that counts.
    decided = list(selectors.inbox_tab(people["carol"], "decided"))
    assert [row.pk for row in decided] == [request.pk]
    assert decided[0].voted_at == Vote.objects.get(request=request, user=people["carol"]).created_at


def test_the_decision_stands_when_the_votes_left_meet_the_policy(aws, demo_state_machine, people):
    """The services never record more votes than a policy needs, so the extra approval is written
    here directly: it stands for a vote the policy of the time counted."""
    execution_arn, request = start_and_ingest(aws, demo_state_machine)
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    request.refresh_from_db()
    callback = Callback.objects.get(request=request)
    Vote.objects.create(request=request, user=people["carol"], approve=True, group="finance-approvers")
    leaves_the_group(people["alice"])

    assert deliver_callback(callback.pk) == "delivered"
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    assert request.decided_by == people["carol"]
    assert AuditEvent.objects.filter(request=request, action="decision_recounted").exists()
    execution = wait_for_execution_end(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["approval"]["decidedBy"]["email"] == "carol@example.com"


def test_a_callback_that_may_already_have_reached_step_functions_is_not_reopened(people, settings):
    body = {"taskToken": str(uuid.uuid4()), "title": "Order 5", "approvers": {"groups": ["finance-approvers"]}}
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    callback = Callback.objects.get(request=request)
    # An earlier attempt whose answer was lost (a read timeout): AWS may have acted on it.
    Callback.objects.filter(pk=callback.pk).update(
        status=CallbackStatus.RETRYING, attempts=1, error_code="ReadTimeoutError"
    )
    leaves_the_group(people["alice"])

    assert services.callback_claim(callback_id=callback.pk) is None
    callback.refresh_from_db()
    request.refresh_from_db()
    assert callback.status == CallbackStatus.FAILED and callback.error_code == "identity_recheck_failed"
    assert request.status == RequestStatus.APPROVED


def test_a_vote_through_an_assignment_the_voter_made_themselves_is_withdrawn_by_the_recheck(people):
    """The four-eyes rule for admins holds at send time too (a vote recorded before the rule)."""
    body = {"taskToken": str(uuid.uuid4()), "title": "Order 6", "approvers": {"groups": ["finance-approvers"]}}
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    services.approval_reassign(
        request_id=request.pk, actor=people["root"], users=["root@example.com"], reason="mine", mode="add"
    )
    # Written directly: the decision service refuses it today (tests/test_four_eyes_admins.py).
    Vote.objects.create(request=request, user=people["root"], approve=True, group="user:root@example.com")
    ApprovalRequest.objects.filter(pk=request.pk).update(status=RequestStatus.APPROVED)
    callback = Callback.objects.create(request=request, kind=Callback.Kind.SUCCESS, payload={"output": {}})

    assert services.callback_claim(callback_id=callback.pk) is None

    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    withdrawn = AuditEvent.objects.get(request=request, action="vote_withdrawn")
    assert withdrawn.data["code"] == "self_assigned" and withdrawn.data["voter"] == "root@example.com"


def closed_by(people_and_votes, **fields) -> tuple[ApprovalRequest, Callback]:
    """A request ingested with `fields`, decided by these (user, approve) votes in order; its callback."""
    body = {"taskToken": str(uuid.uuid4()), "title": "Order 9", **fields}
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    for user, approve in people_and_votes:
        services.approval_decide(public_id=request.public_id, user=user, approve=approve, comment="ok")
    request.refresh_from_db()
    return request, Callback.objects.get(request=request)


def test_a_distinct_groups_approval_whose_voter_left_its_group_is_withdrawn_though_another_group_names_them(
    people,
):
    """alice approves for finance-approvers, frank for legal: two groups. Then alice leaves
    finance-approvers; she is still in legal, but legal's approval is frank's. Sent as it is, the
    output would say two groups approved, one of them through a member it no longer has."""
    legal = Group.objects.create(name="legal")
    people["alice"].groups.add(legal)
    frank = make_user("frank", "legal")
    request, callback = closed_by(
        [(people["alice"], True), (frank, True)],
        approvers={"groups": ["finance-approvers", "legal"]},
        policy={"required": 2, "distinctGroups": True},
    )
    assert request.status == RequestStatus.APPROVED
    assert Vote.objects.get(request=request, user=people["alice"]).group == "finance-approvers"
    leaves_the_group(people["alice"])

    assert services.callback_claim(callback_id=callback.pk) is None

    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    withdrawn = AuditEvent.objects.get(request=request, action="vote_withdrawn")
    assert withdrawn.data["voter"] == "alice@example.com" and withdrawn.data["code"] == "not_assignee"
    assert "finance-approvers" in withdrawn.data["reason"]
    # frank's approval for legal still counts; another approval from finance-approvers closes it.
    services.approval_decide(public_id=request.public_id, user=people["carol"], approve=True)
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    send = services.callback_claim(callback_id=Callback.objects.get(request=request).pk)
    assert send is not None
    assert [entry["group"] for entry in send.payload["output"]["approvals"]] == ["legal", "finance-approvers"]


def test_an_approval_whose_group_was_reassigned_away_does_not_stand_on_an_assignment_the_voter_then_made_themselves(
    people,
):
    """root approves as a member of finance-approvers (1 of 2), then reassigns the request to
    himself and carol: root's right now is only the assignment he made. carol's approval finds
    his withdrawn (it no longer counts) and waits for another."""
    people["root"].groups.add(Group.objects.get(name="finance-approvers"))
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": "Order 10",
        "approvers": {"groups": ["finance-approvers"]},
        "policy": {"required": 2},
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    services.approval_decide(public_id=request.public_id, user=people["root"], approve=True)
    services.approval_reassign(
        request_id=request.pk,
        actor=people["root"],
        users=["root@example.com", "carol@example.com"],
        reason="the two of us",
    )

    services.approval_decide(public_id=request.public_id, user=people["carol"], approve=True)

    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    withdrawn = AuditEvent.objects.get(request=request, action="vote_withdrawn")
    assert withdrawn.data["voter"] == "root@example.com" and withdrawn.data["code"] == "self_assigned"
    assert list(Vote.objects.filter(request=request).values_list("user__username", flat=True)) == ["carol"]


def reassigned_to_dave(people, request) -> None:
    services.approval_reassign(request_id=request.pk, actor=people["root"], users=["dave@example.com"], reason="r")


def joins_the_requesters_group(people, request) -> None:
    ApprovalRequest.objects.filter(pk=request.pk).update(sod_exclude_requester_groups=True)
    make_user("bob", "sales")
    people["alice"].groups.add(Group.objects.get(name="sales"))


def delegator_deactivated(people, request) -> None:
    is_deactivated(people["carol"])


def delegator_left_the_group(people, request) -> None:
    leaves_the_group(people["carol"])


def alices_quorum_vote(people, *, through_carol: bool) -> ApprovalRequest:
    """alice's approval, 1 of 2: her own as a member of finance-approvers, or standing in for carol."""
    services.delegation_set(
        delegator=people["carol"],
        delegate_email="alice@example.com",
        ends_at=timezone.now() + timedelta(days=1),
        actor=people["carol"],
    )
    if through_carol:
        leaves_the_group(people["alice"])
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": "Order 12",
        "requester": "bob@example.com",
        "approvers": {"users": ["dave@example.com"], "groups": ["finance-approvers"]},
        "policy": {"required": 2},
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)
    assert (Vote.objects.get(user=people["alice"]).on_behalf_of_id is not None) == through_carol
    return ApprovalRequest.objects.get(pk=request.pk)


def assert_alices_vote_withdrawn(request, code: str) -> None:
    withdrawn = AuditEvent.objects.get(request=request, action="vote_withdrawn")
    assert (withdrawn.data["voter"], withdrawn.data["code"]) == ("alice@example.com", code)
    assert list(Vote.objects.filter(request=request).values_list("user__username", flat=True)) == ["dave"]


LOSSES = [
    (reassigned_to_dave, "not_assignee"),
    (joins_the_requesters_group, "sod_requester_group"),
    (delegator_deactivated, "inactive_user"),
    (delegator_left_the_group, "not_assignee"),
]
LOSS_IDS = ["reassigned-away", "joined-the-requesters-group", "delegator-deactivated", "delegator-left-the-group"]


@pytest.mark.parametrize(("change", "code"), LOSSES, ids=LOSS_IDS)
def test_a_quorum_vote_whose_ground_went_before_the_next_vote_no_longer_counts_toward_it(people, change, code):
    """alice's approval is 1 of 2; it loses its ground; dave's approval is then 1 of 2, not a
    closing 2 of 2 that the callback's re-check would reopen."""
    request = alices_quorum_vote(people, through_carol=change in (delegator_deactivated, delegator_left_the_group))
    change(people, request)

    services.approval_decide(public_id=request.public_id, user=people["dave"], approve=True)

    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING and not Callback.objects.filter(request=request).exists()
    assert_alices_vote_withdrawn(request, code)


@pytest.mark.parametrize(("change", "code"), LOSSES[1:], ids=LOSS_IDS[1:])  # a closed request is not reassigned
def test_a_right_lost_between_the_closing_vote_and_the_callback_withdraws_the_vote_and_reopens(people, change, code):
    request = alices_quorum_vote(people, through_carol=change in (delegator_deactivated, delegator_left_the_group))
    services.approval_decide(public_id=request.public_id, user=people["dave"], approve=True)
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    change(people, request)

    assert services.callback_claim(callback_id=Callback.objects.get(request=request).pk) is None

    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert_alices_vote_withdrawn(request, code)


def test_the_request_page_says_a_vote_no_longer_counts_without_calling_a_request_that_never_closed_reopened(people):
    request = alices_quorum_vote(people, through_carol=False)
    reassigned_to_dave(people, request)
    services.approval_decide(public_id=request.public_id, user=people["dave"], approve=True)

    page = signed_in(people["dave"]).get(f"/requests/{request.public_id}/").content.decode()

    notice = re.search(r'<div class="notice notice-reopened"[^>]*>(.*?)</div>', page, re.S).group(1)
    assert "1 vote no longer counts — checked again when a later vote was cast" in notice
    assert "alice@example.com" in notice
    assert "Reopened" not in notice and "again." not in notice
