"""Approval policies: N-of-M quorum, rejectOn, distinctGroups, separation of duties, admin defaults."""

import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import close_old_connections, connection

from approvals import permissions, services
from approvals.contract import ContractError, parse_message
from approvals.models import ApprovalRequest, AuditEvent, Callback, RequestStatus, Vote
from tests.support import make_user
from tests.support import signed_in as client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "erin": make_user("erin", "finance-approvers"),
        "frank": make_user("frank", "legal"),
        "grace": make_user("grace", "legal", "sales"),
        "bob": make_user("bob", "sales"),
        "dave": make_user("dave"),
        "carol": make_user("carol", admin=True),
    }


def ingest(**fields) -> ApprovalRequest:
    body = {
        "taskToken": f"token-{uuid.uuid4().hex}",
        "title": "Approve order 1234",
        "requester": "bob@example.com",
        "approvers": {"users": ["alice@example.com", "erin@example.com", "frank@example.com"]},
        **fields,
    }
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    return ApprovalRequest.objects.get(pk=request.pk)


def decide(request: ApprovalRequest, user, approve: bool = True, comment: str = "") -> ApprovalRequest:
    return services.approval_decide(public_id=request.public_id, user=user, approve=approve, comment=comment)


def refusal_of(request: ApprovalRequest, user, approve: bool = True) -> str:
    with pytest.raises(services.ApprovalError) as caught:
        decide(request, user, approve, comment="no")
    return caught.value


# ---------------------------------------------------------------------------
# The message contract
# ---------------------------------------------------------------------------
def parse(**fields):
    return parse_message(json.dumps({"taskToken": "t", **fields}))


def test_the_policy_is_read_from_the_message():
    message = parse(policy={"required": 2, "distinctGroups": True, "rejectOn": 2}, requesterGroups=[" sales ", "x"])
    assert (message.required_approvals, message.distinct_groups, message.rejections_to_deny) == (2, True, 2)
    assert message.requester_groups == ("sales", "x")
    assert parse(policy={"rejectOn": "any"}).rejections_to_deny == 1
    left_out = parse(policy={})
    assert (left_out.required_approvals, left_out.distinct_groups, left_out.rejections_to_deny) == (None, None, None)


@pytest.mark.parametrize(
    ("policy", "field", "says"),
    [
        ([2], "policy", "must be an object"),
        ({"required": 2, "quorum": 1}, "policy", "may only contain"),
        ({"required": "2"}, "policy.required", "whole number"),
        ({"required": True}, "policy.required", "whole number"),
        ({"required": 0}, "policy.required", "between 1 and 100"),
        ({"required": 101}, "policy.required", "between 1 and 100"),
        ({"distinctGroups": "yes"}, "policy.distinctGroups", "true or false"),
        ({"rejectOn": "all"}, "policy.rejectOn", '"any" or a whole number'),
        ({"rejectOn": 0}, "policy.rejectOn", "between 1 and 100"),
    ],
)
def test_a_bad_policy_is_refused_with_the_field_named(policy, field, says):
    with pytest.raises(ContractError) as caught:
        parse(policy=policy)
    assert caught.value.field == field
    assert says in caught.value.message


def test_a_policy_asking_more_approvals_than_named_approvers_is_refused():
    with pytest.raises(ContractError, match="asks for 3 approvals but 'approvers' names only 2 approvers"):
        parse(approvers={"users": ["a@example.com", "b@example.com"]}, policy={"required": 3})
    with pytest.raises(ContractError, match="names only 2 approvers and groups"):
        parse(approvers={"users": ["a@example.com"], "groups": ["g"]}, policy={"required": 3, "distinctGroups": True})
    # A group can hold any number of people: not refused.
    assert parse(approvers={"groups": ["g"]}, policy={"required": 3}).required_approvals == 3


# ---------------------------------------------------------------------------
# N of M
# ---------------------------------------------------------------------------
def test_two_of_three_the_first_approval_leaves_it_pending_the_second_closes_it(people):
    request = ingest(policy={"required": 2})
    assert request.policy == {"required": 2, "distinctGroups": False, "rejectOn": "any"}

    decide(request, people["alice"], comment="ok by me")
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert not Callback.objects.filter(request=request).exists()
    recorded = AuditEvent.objects.get(request=request, action="approval_recorded")
    assert recorded.data["approvals"] == 1 and recorded.data["required"] == 2

    assert refusal_of(request, people["alice"]).code == "already_voted"

    decide(request, people["erin"], comment="fine")
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    output = Callback.objects.get(request=request).payload["output"]
    assert output["approved"] is True
    assert [entry["email"] for entry in output["approvals"]] == ["alice@example.com", "erin@example.com"]
    assert [entry["comment"] for entry in output["approvals"]] == ["ok by me", "fine"]
    assert output["decidedBy"]["email"] == "erin@example.com"
    assert output["policy"]["required"] == 2
    assert output["rejections"] == []


def test_a_rejection_before_the_quorum_denies_with_the_approvals_so_far_in_the_cause(people):
    request = ingest(policy={"required": 2})
    decide(request, people["alice"], comment="ok by me")
    decide(request, people["frank"], approve=False, comment="not in budget")

    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED
    callback = Callback.objects.get(request=request)
    assert callback.kind == Callback.Kind.FAILURE and callback.payload["error"] == "ApprovalDenied"
    cause = json.loads(callback.payload["cause"])
    assert [entry["email"] for entry in cause["approvals"]] == ["alice@example.com"]
    assert cause["rejections"][0]["email"] == "frank@example.com"
    assert cause["rejections"][0]["comment"] == "not in budget"
    # Closed: erin's approval comes too late.
    assert refusal_of(request, people["erin"]).code == "not_pending"


def test_reject_on_two_needs_two_rejections(people):
    request = ingest(policy={"required": 3, "rejectOn": 2})
    decide(request, people["alice"], approve=False, comment="no")
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert AuditEvent.objects.filter(request=request, action="rejection_recorded").exists()
    decide(request, people["erin"], approve=False, comment="no either")
    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED
    assert len(json.loads(Callback.objects.get(request=request).payload["cause"])["rejections"]) == 2


def test_distinct_groups_refuses_a_second_approval_from_the_same_group(people):
    request = ingest(
        approvers={"groups": ["finance-approvers", "legal"]}, policy={"required": 2, "distinctGroups": True}
    )
    decide(request, people["alice"])
    refused = refusal_of(request, people["erin"])
    assert refused.code == "distinct_groups"
    assert "finance-approvers has already approved" in refused.message
    # A rejection may come from any group; an approval from another group closes it.
    decide(request, people["frank"])
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    groups = [entry["group"] for entry in Callback.objects.get(request=request).payload["output"]["approvals"]]
    assert groups == ["finance-approvers", "legal"]


def test_the_inbox_moves_a_voted_request_from_waiting_to_decided(people):
    request = ingest(policy={"required": 2})
    alice = client_for(people["alice"])
    decide(request, people["alice"])

    waiting = alice.get("/").content.decode()
    decided = alice.get("/?tab=decided").content.decode()
    assert str(request.public_id) not in waiting
    assert str(request.public_id) in decided
    assert str(request.public_id) in client_for(people["erin"]).get("/").content.decode()
    page = alice.get(f"/requests/{request.public_id}/").content.decode()
    assert "1 of 2</strong> approvals" in page
    assert "You already decided this request" in page


def test_two_approvers_completing_a_two_of_two_at_the_same_moment_make_one_callback(people, transactional_db):
    request = ingest(policy={"required": 2}, approvers={"users": ["alice@example.com", "erin@example.com"]})
    start = threading.Barrier(2)
    errors = []

    def approve(user):
        try:
            start.wait()
            decide(request, user)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(people[name],)) for name in ("alice", "erin")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    close_old_connections()

    assert errors == []
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    assert Callback.objects.filter(request=request).count() == 1
    assert Vote.objects.filter(request=request).count() == 2
    output = Callback.objects.get(request=request).payload["output"]
    assert sorted(entry["email"] for entry in output["approvals"]) == ["alice@example.com", "erin@example.com"]


def test_every_counted_vote_is_checked_again_before_the_callback(people):
    request = ingest(approvers={"groups": ["finance-approvers"]}, policy={"required": 2})
    decide(request, people["alice"])
    decide(request, people["erin"])
    people["alice"].groups.remove(Group.objects.get(name="finance-approvers"))  # left the team meanwhile

    callback = Callback.objects.get(request=request)
    assert services.callback_claim(callback_id=callback.pk) is None
    # Alice's vote no longer counts, erin's alone does not meet 2 of 2: pending again.
    assert not Callback.objects.filter(pk=callback.pk).exists()
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    reopened = AuditEvent.objects.get(request=request, action="reopened")
    assert reopened.data["code"] == "identity_recheck_failed"
    assert "alice@example.com is no longer an approver" in reopened.data["reason"]
    assert reopened.data["withdrawn_votes"] == ["alice@example.com"]


# ---------------------------------------------------------------------------
# Admin defaults
# ---------------------------------------------------------------------------
MACHINE = "arn:aws:states:eu-west-1:123456789012:stateMachine:payments"


def test_the_admin_default_applies_and_the_message_overrides_its_quorum(people):
    services.approval_policy_save(
        actor=people["carol"],
        name="payments",
        state_machine_arn=MACHINE,
        required_approvals=2,
        rejections_to_deny=2,
        sod_distinct_levels=True,
    )
    defaulted = ingest(stateMachine=MACHINE)
    assert (defaulted.required_approvals, defaulted.rejections_to_deny, defaulted.sod_distinct_levels) == (2, 2, True)
    overridden = ingest(stateMachine=MACHINE, policy={"required": 1})
    assert (overridden.required_approvals, overridden.rejections_to_deny) == (1, 2)
    assert overridden.sod_distinct_levels  # separation of duties is the admins' alone
    other = ingest(stateMachine=MACHINE.replace("payments", "other"))
    assert (other.required_approvals, other.sod_distinct_levels) == (1, False)
    assert AuditEvent.objects.filter(action="approval_policy_saved", actor=people["carol"]).exists()


def test_the_admin_edits_default_policies_through_the_service(people):
    admin = client_for(people["carol"])
    admin.get("/admin/approvals/approvalpolicy/add/")
    response = admin.post(
        "/admin/approvals/approvalpolicy/add/",
        {
            "name": "two for payments",
            "state_machine_arn": MACHINE,
            "state_name": "",
            "required_approvals": "2",
            "rejections_to_deny": "1",
            "priority": "0",
            "enabled": "on",
            "sod_exclude_requester_groups": "on",
            "csrfmiddlewaretoken": admin.cookies["portal_csrftoken"].value,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="approval_policy_saved")
    assert event.data["after"]["required_approvals"] == 2
    assert event.data["after"]["sod_exclude_requester_groups"] is True
    assert admin.get("/admin/approvals/approvalpolicy/").status_code == 200
    assert client_for(people["alice"]).get("/admin/approvals/approvalpolicy/").status_code in {302, 403}


# ---------------------------------------------------------------------------
# Separation of duties
# ---------------------------------------------------------------------------
EXECUTION = "arn:aws:states:eu-west-1:123456789012:execution:payments:run-1"


def level(state: str, *, distinct_levels: bool = True, execution: str = EXECUTION, **fields) -> ApprovalRequest:
    request = ingest(execution=execution, state=state, **fields)
    ApprovalRequest.objects.filter(pk=request.pk).update(sod_distinct_levels=distinct_levels)
    request.refresh_from_db()
    return request


def test_nobody_decides_two_levels_of_one_execution(people):
    first = level("ManagerApproval")
    decide(first, people["alice"])
    second = level("DirectorApproval")

    refused = refusal_of(second, people["alice"])
    assert refused.code == "sod_previous_level"
    assert "already decided an earlier step of this workflow (ManagerApproval)" in refused.message
    assert AuditEvent.objects.filter(request=second, action="decision_refused", data__code="sod_previous_level")
    decide(second, people["erin"])  # someone else may
    assert ApprovalRequest.objects.get(pk=second.pk).status == RequestStatus.APPROVED


def test_two_levels_rule_allows_map_siblings_other_executions_and_when_off(people):
    decide(level("Approve"), people["alice"])
    decide(level("Approve"), people["alice"])  # a Map sibling: the same state, not another level
    decide(level("Director", execution=EXECUTION + "-other"), people["alice"])  # another execution
    decide(level("Director", distinct_levels=False), people["alice"])  # the rule is off for this one


def test_nobody_who_shares_a_group_with_the_requester_decides(people):
    request = ingest(approvers={"groups": ["legal"]})
    ApprovalRequest.objects.filter(pk=request.pk).update(sod_exclude_requester_groups=True)
    request.refresh_from_db()

    refused = refusal_of(request, people["grace"])  # grace is in sales, like bob the requester
    assert refused.code == "sod_requester_group"
    assert "share the group 'sales' with the requester" in refused.message
    decide(request, people["frank"])
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.APPROVED


def test_the_requester_groups_can_come_from_the_message(people):
    request = ingest(approvers={"users": ["frank@example.com"]}, requester="zoe@example.com", requesterGroups=["legal"])
    ApprovalRequest.objects.filter(pk=request.pk).update(sod_exclude_requester_groups=True)
    request.refresh_from_db()
    assert refusal_of(request, people["frank"]).code == "sod_requester_group"

    ApprovalRequest.objects.filter(pk=request.pk).update(sod_exclude_requester_groups=False)
    request.refresh_from_db()
    assert permissions.decision_refusal(people["frank"], request) is None


def test_the_requester_never_approves_even_when_named(people):
    request = ingest(approvers={"users": ["bob@example.com", "alice@example.com"]})
    refused = refusal_of(request, people["bob"])
    assert refused.code == "requester"
    assert "someone else has to decide" in refused.message


@pytest.mark.parametrize(
    ("code", "status"),
    [("sod_previous_level", 403), ("sod_requester_group", 403), ("already_voted", 409), ("distinct_groups", 403)],
)
def test_refusal_pages_have_a_status_for_each_policy_refusal(code, status):
    from approvals.views.requests import ERROR_STATUS

    assert ERROR_STATUS[code] == status


def test_reminders_go_only_to_approvers_who_have_not_voted(people, settings):
    from approvals.models import FollowUp, Notification
    from approvals.services.notifications import approval_follow_up

    settings.NOTIFICATION_EMAIL_ENABLED = True
    settings.REMINDER_AFTER_SECONDS = 1
    request = ingest(policy={"required": 2})
    decide(request, people["alice"])
    later = request.received_at + timedelta(hours=2)

    assert approval_follow_up(request_id=request.pk, kind=FollowUp.Kind.REMINDER, now=later)
    reminded = set(Notification.objects.filter(request=request, kind="reminder").values_list("recipient", flat=True))
    assert reminded == {"erin@example.com", "frank@example.com"}


def test_the_admin_change_page_shows_the_policy_and_the_votes(people):
    request = ingest(policy={"required": 2})
    decide(request, people["alice"], comment="ok")
    page = client_for(people["carol"]).get(f"/admin/approvals/approvalrequest/{request.pk}/change/").content.decode()
    assert "2 approval(s) required" in page
    assert "Approved by alice@example.com" in page


def test_the_requesters_groups_still_count_after_their_email_changes(people):
    """Four eyes follows the account the requester's email named when the request arrived
    (docs/security.md); the requester-group rule reads the groups of that same account."""
    request = ingest(approvers={"groups": ["legal"]})
    assert request.requester_user == people["bob"]
    ApprovalRequest.objects.filter(pk=request.pk).update(sod_exclude_requester_groups=True)
    people["bob"].email = "robert@example.com"
    people["bob"].save(update_fields=["email"])
    request.refresh_from_db()

    refused = refusal_of(request, people["grace"])  # grace is in sales, like bob the requester
    assert refused.code == "sod_requester_group"
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.PENDING
    decide(request, people["frank"])
    assert ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.APPROVED


def test_an_approval_that_no_longer_holds_neither_uses_up_its_group_nor_counts_toward_the_next_decision(people):
    """alice approved for finance-approvers (1 of 2 from distinct groups), then left the group.
    Her approval would be withdrawn before any callback; it must not keep erin, of the same
    group, from approving ("finance-approvers has already approved"), nor close the request with
    erin's as a 2 of 2 that the callback's re-check then reopens."""
    request = ingest(
        approvers={"groups": ["finance-approvers", "legal"]}, policy={"required": 2, "distinctGroups": True}
    )
    decide(request, people["alice"])
    people["alice"].groups.remove(Group.objects.get(name="finance-approvers"))

    decide(request, people["erin"])

    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING  # 1 of 2: erin's
    withdrawn = AuditEvent.objects.get(request=request, action="vote_withdrawn")
    assert (withdrawn.data["voter"], withdrawn.data["code"]) == ("alice@example.com", "not_assignee")
    assert list(Vote.objects.filter(request=request).values_list("user__username", flat=True)) == ["erin"]
    decide(request, people["frank"])
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    groups = [entry["group"] for entry in Callback.objects.get(request=request).payload["output"]["approvals"]]
    assert groups == ["finance-approvers", "legal"]
    assert services.callback_claim(callback_id=Callback.objects.get(request=request).pk) is not None
