"""Approver trust: a message's approvers and requester are claims, believed only as far as the
admins' setting for its state machine says (approvals/trust.py, docs/security.md "Trust boundary").

The attacker is bob: he may start executions, so he writes their input. He names himself
approver (and somebody else, or nobody, as requester) and tries to approve on every channel.
"""

import json
import uuid

import pytest
from django.conf import settings as django_conf
from django.contrib.auth.models import Group
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals import links, permissions, services
from approvals.contract import ContractError, parse_message
from approvals.forms.admin import FREE_TRUST_WARNING
from approvals.integrations import aws as gateway
from approvals.models import (
    ApprovalRequest,
    ApproverTrust,
    AuditEvent,
    Callback,
    IngestError,
    RequestStatus,
    RoutingRule,
)
from approvals.roles import APPROVER_ACCESS_GROUP
from approvals.selectors.trust import TrustRefusal
from tests.support import make_user, signed_in
from worker.consumer import consume_once

pytestmark = pytest.mark.django_db

MACHINE = "arn:aws:states:eu-west-1:111122223333:stateMachine:orders"


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "bob": approver_with_admin_access(make_user("bob")),
        "carol": make_user("carol", "portal-admins", admin=True),
        "dave": make_user("dave"),
    }


def approver_with_admin_access(user):
    """As the SSO backend makes every signed-in user: staff with the approvers' admin permissions."""
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.groups.add(Group.objects.get(name=APPROVER_ACCESS_GROUP))
    return user


def body(**fields) -> str:
    return json.dumps(
        {
            "taskToken": str(uuid.uuid4()),
            "title": "Grant production access to Bob",
            "stateMachine": MACHINE,
            "state": "WaitForApproval",
            **fields,
        }
    )


def ingest(**fields) -> ApprovalRequest:
    request, created = services.approval_request_ingest(message=parse_message(body(**fields)))
    assert created
    return request


def bobs_own_request(**fields) -> ApprovalRequest:
    """bob starts an execution naming himself approver and carol (or nobody) as requester."""
    return ingest(approvers={"users": ["bob@example.com"], "groups": []}, requester="carol@example.com", **fields)


def trust(*, actor=None, **fields) -> ApproverTrust:
    return services.approver_trust_save(
        actor=actor, **{"name": "orders", "state_machine_arn": MACHINE, "state_name": "", **fields}
    )


def csrf(client: Client, url: str = "/") -> str:
    client.get(url)
    return client.cookies["portal_csrftoken"].value


def page_post(client: Client, request: ApprovalRequest):
    token = csrf(client)
    return client.post(
        f"/requests/{request.public_id}/decide/", {"decision": "approve", "comment": "", "csrfmiddlewaretoken": token}
    )


def admin_post(client: Client, request: ApprovalRequest):
    token = csrf(client)
    return client.post(
        f"/admin/approvals/approvalrequest/{request.pk}/decide/",
        {"decision": "approve", "comment": "", "csrfmiddlewaretoken": token},
    )


def link_post(client: Client, request: ApprovalRequest):
    token = links.make_link_token(
        public_id=request.public_id, approver_email="bob@example.com", action="approve", ttl_seconds=600
    )
    path = f"/links/{token}/"
    client.get(path)
    return client.post(path, {"comment": "", "csrfmiddlewaretoken": client.cookies["portal_csrftoken"].value})


def assert_bob_cannot_approve(people, request: ApprovalRequest) -> None:
    bob = people["bob"]
    assert permissions.decision_refusal(bob, request, approve=True) is not None
    for attempt in (page_post, admin_post, link_post):
        response = attempt(signed_in(bob), request)
        assert response.status_code in {302, 403, 404}, (attempt.__name__, response.status_code)
    with pytest.raises(services.ApprovalError):
        services.approval_decide(public_id=request.public_id, user=bob, approve=True)
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert not request.votes.exists()
    assert not Callback.objects.filter(request=request).exists()


# ---------------------------------------------------------------------------
# Safe by default: a state machine nobody configured is routing only
# ---------------------------------------------------------------------------
@pytest.mark.trust_unconfigured
def test_bob_naming_himself_approver_cannot_approve_under_the_default_setting(people):
    request = bobs_own_request()

    assert [(a.kind, a.value) for a in request.assignments.all()] == [("group", django_conf.APPROVAL_DEFAULT_GROUP)]
    assert request.ignored_approvers == [
        {
            "kind": "user",
            "value": "bob@example.com",
            "reason": "Named by the message, ignored: no approver trust setting covers this state machine, "
            "so its messages may not choose their approvers (routing only).",
        }
    ]
    assert_bob_cannot_approve(people, request)
    event = AuditEvent.objects.get(request=request, action="ingested")
    assert event.data["approver_trust"] is None and event.data["approver_trust_mode"] == "routing_only"
    assert event.data["ignored_approvers"] == request.ignored_approvers


@pytest.mark.trust_unconfigured
def test_under_routing_only_the_admins_routing_rule_decides_and_the_page_says_what_was_ignored(people):
    RoutingRule.objects.create(name="orders", state_machine_arn=MACHINE, groups=["finance-approvers"])
    trust(mode=ApproverTrust.Mode.ROUTING_ONLY)
    request = bobs_own_request()

    assert [a.value for a in request.assignments.all()] == ["finance-approvers"]
    page = signed_in(people["alice"]).get(f"/requests/{request.public_id}/").content.decode()
    assert "Not assigned" in page and "bob@example.com" in page
    assert "the approver trust setting &#x27;orders&#x27;" in page and "takes approvers from routing only" in page
    admin_page = signed_in(people["carol"]).get(f"/admin/approvals/approvalrequest/{request.pk}/change/")
    assert "ignored approvers" in admin_page.content.decode().lower()
    assert "takes approvers from routing only" in admin_page.content.decode()
    assert_bob_cannot_approve(people, request)
    services.approval_decide(public_id=request.public_id, user=people["alice"], approve=True)


# ---------------------------------------------------------------------------
# Allow-list: a message outside it is refused at ingest, never widened
# ---------------------------------------------------------------------------
@pytest.mark.trust_unconfigured
def test_bob_outside_the_allow_list_is_refused_at_ingest_with_the_rule_named(people):
    setting = trust(mode=ApproverTrust.Mode.ALLOW_LIST, allowed_groups=["finance-approvers"])

    with pytest.raises(TrustRefusal) as refused:
        bobs_own_request()

    assert isinstance(refused.value, ContractError)
    assert refused.value.code == "approver_not_allowed"
    assert f"'orders' (#{setting.pk})" in refused.value.message
    assert "bob@example.com" in refused.value.message
    assert not ApprovalRequest.objects.exists()


@pytest.mark.trust_unconfigured
def test_a_message_within_the_allow_list_is_assigned_as_it_says(people):
    trust(mode=ApproverTrust.Mode.ALLOW_LIST, allowed_users=["Alice@Example.com"], allowed_groups=["finance-approvers"])

    request = ingest(
        approvers={"users": ["alice@example.com"], "groups": ["finance-approvers"]}, requester="bob@example.com"
    )

    assert sorted(a.value for a in request.assignments.all()) == ["alice@example.com", "finance-approvers"]
    assert request.ignored_approvers == []


@pytest.mark.trust_unconfigured
def test_a_message_outside_the_allow_list_becomes_an_ingest_error_replayable_after_the_admin_widens_it(aws, people):
    carol = signed_in(people["carol"])
    setting = trust(mode=ApproverTrust.Mode.ALLOW_LIST, allowed_groups=["finance-approvers"])
    raw = body(approvers={"users": ["dave@example.com"]}, requester="bob@example.com")
    message_id = gateway.send_message(queue_url=aws.APPROVAL_QUEUE_URL, body=raw)
    consume_once(queue_url=aws.APPROVAL_QUEUE_URL, wait_seconds=1, visibility_timeout=30, max_bytes=256 * 1024)
    row = IngestError.objects.get(sqs_message_id=message_id)
    assert row.code == "approver_not_allowed"
    assert f"approver trust setting 'orders' (#{setting.pk})" in row.reason and "dave@example.com" in row.reason
    assert not ApprovalRequest.objects.exists()
    listed = carol.get(f"/admin/approvals/ingesterror/{row.pk}/change/").content.decode()
    assert "approver_not_allowed" in listed and "allow-list" in listed

    # The admin widens the allow-list on the setting's change page...
    change_url = f"/admin/approvals/approvertrust/{setting.pk}/change/"
    saved = carol.post(
        change_url,
        {
            "name": "orders",
            "state_machine_arn": MACHINE,
            "state_name": "",
            "mode": "allow_list",
            "users_text": "dave@example.com",
            "groups_text": "finance-approvers",
            "priority": "0",
            "enabled": "on",
            "csrfmiddlewaretoken": csrf(carol, change_url),
        },
    )
    assert saved.status_code == 302, saved.content.decode()[:2000]
    setting.refresh_from_db()
    assert setting.allowed_users == ["dave@example.com"]
    event = AuditEvent.objects.filter(action="approver_trust_saved").latest("pk")
    assert event.actor == people["carol"] and event.data["after"]["allowed_users"] == ["dave@example.com"]

    # ...and replays the message (kept with the error; the queue has nothing left): now it
    # becomes a request for dave.
    replayed = services.ingest_error_replay(ingest_error_id=row.pk, actor=people["carol"])
    assert replayed.status == IngestError.Status.REPLAYED
    request = ApprovalRequest.objects.get()
    assert [a.value for a in request.assignments.all()] == ["dave@example.com"]


@pytest.mark.trust_unconfigured
def test_bob_is_refused_under_an_allow_list_that_does_not_hold_him_even_beside_an_allowed_group(people):
    trust(mode=ApproverTrust.Mode.ALLOW_LIST, allowed_groups=["finance-approvers"])

    with pytest.raises(TrustRefusal):
        ingest(approvers={"users": ["bob@example.com"], "groups": ["finance-approvers"]}, requester="carol@example.com")

    assert not ApprovalRequest.objects.exists()


# ---------------------------------------------------------------------------
# Free: the admin is told what it trusts
# ---------------------------------------------------------------------------
@pytest.mark.trust_unconfigured
def test_the_change_page_of_a_free_setting_warns_that_it_trusts_every_starter(people):
    setting = trust(mode=ApproverTrust.Mode.FREE)
    carol = signed_in(people["carol"])

    page = carol.get(f"/admin/approvals/approvertrust/{setting.pk}/change/").content.decode()

    assert "trusts every principal allowed to start executions" in page
    assert FREE_TRUST_WARNING.split(":")[0] in page
    # The routing-only page does not cry wolf.
    other = trust(name="quiet", state_name="Other", mode=ApproverTrust.Mode.ROUTING_ONLY)
    quiet = carol.get(f"/admin/approvals/approvertrust/{other.pk}/change/").content.decode()
    assert '<li class="warning">' not in quiet


@pytest.mark.trust_unconfigured
def test_in_free_mode_the_message_names_its_approvers_but_four_eyes_still_holds(people):
    trust(mode=ApproverTrust.Mode.FREE)
    request = ingest(approvers={"users": ["bob@example.com"]}, requester="bob@example.com")

    assert [a.value for a in request.assignments.all()] == ["bob@example.com"]
    assert permissions.decision_refusal(people["bob"], request).code == "requester"


# ---------------------------------------------------------------------------
# The requester
# ---------------------------------------------------------------------------
@pytest.mark.trust_unconfigured
def test_a_required_requester_that_is_missing_is_refused_at_ingest(people):
    setting = trust(mode=ApproverTrust.Mode.ROUTING_ONLY, require_requester=True)

    with pytest.raises(TrustRefusal) as refused:
        ingest(approvers={"groups": ["finance-approvers"]})

    assert refused.value.code == "requester_required"
    assert f"'orders' (#{setting.pk}) requires one" in refused.value.message
    assert not ApprovalRequest.objects.exists()
    # With a requester it goes through.
    assert ingest(requester="bob@example.com").requester_user == people["bob"]


def test_a_requester_whose_email_changed_after_ingest_is_still_refused(people):
    bob = people["bob"]
    bob.groups.add(Group.objects.get(name="finance-approvers"))
    request = ingest(approvers={"groups": ["finance-approvers"]}, requester="bob@example.com")
    assert request.requester_user == bob

    # The IdP renames bob; the portal mirrors it at his next sign-in.
    bob.email = "robert@example.com"
    bob.save(update_fields=["email"])
    request = ApprovalRequest.objects.get(pk=request.pk)

    refusal = permissions.decision_refusal(bob, request, approve=True)
    assert refusal is not None and refusal.code == "requester"
    response = page_post(signed_in(bob), request)
    assert response.status_code == 403
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING and not request.votes.exists()


def test_the_callback_recheck_refuses_a_vote_by_a_requester_whose_email_changed(people):
    bob = people["bob"]
    bob.groups.add(Group.objects.get(name="finance-approvers"))
    request = ingest(approvers={"groups": ["finance-approvers"]}, requester="bob@example.com")
    bob.email = "robert@example.com"
    bob.save(update_fields=["email"])
    from approvals.models import Vote

    vote = Vote(request=request, user=bob, approve=True, group="finance-approvers")
    assert permissions.vote_refusal(vote, request).code == "requester"


# ---------------------------------------------------------------------------
# Allowed email domains: nobody outside them is assigned
# ---------------------------------------------------------------------------
def test_approvers_outside_the_allowed_email_domains_are_not_assigned_and_shown_with_the_reason(people, settings):
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]

    request = ingest(
        approvers={"users": ["alice@example.com", "mallory@evil.test"], "groups": []}, requester="bob@example.com"
    )

    assert [a.value for a in request.assignments.all()] == ["alice@example.com"]
    [ignored] = request.ignored_approvers
    assert ignored["value"] == "mallory@evil.test" and "allowed email domains (example.com)" in ignored["reason"]
    page = signed_in(people["alice"]).get(f"/requests/{request.public_id}/").content.decode()
    assert "mallory@evil.test" in page and "allowed email domains" in page
    admin_page = signed_in(people["carol"]).get(f"/admin/approvals/approvalrequest/{request.pk}/change/")
    assert "mallory@evil.test" in admin_page.content.decode()


def test_a_routing_rule_user_outside_the_allowed_domains_is_not_assigned_either(people, settings):
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]
    RoutingRule.objects.create(name="orders", users=["mallory@evil.test"])

    request = ingest(requester="bob@example.com")

    # The rule named nobody who may sign in: the default group, never nobody.
    assert [(a.kind, a.value) for a in request.assignments.all()] == [("group", django_conf.APPROVAL_DEFAULT_GROUP)]
    assert request.ignored_approvers[0]["value"] == "mallory@evil.test"
    assert "routing rule 'orders'" in request.ignored_approvers[0]["reason"]


# ---------------------------------------------------------------------------
# The state machine a message names is its execution's (approvals/contract.py)
# ---------------------------------------------------------------------------
# Written by somebody else, routing only: whoever writes its definition must not borrow "orders"'.
PAYROLL = MACHINE.replace(":stateMachine:orders", ":stateMachine:payroll")
PAYROLL_RUN = MACHINE.replace(":stateMachine:orders", ":execution:payroll:run-1")


def payroll_routing_only() -> None:
    trust(name="payroll", state_machine_arn=PAYROLL, mode=ApproverTrust.Mode.ROUTING_ONLY)
    RoutingRule.objects.create(name="payroll", state_machine_arn=PAYROLL, groups=["finance-approvers"])


@pytest.mark.trust_unconfigured
def test_a_message_naming_a_free_state_machine_from_another_machines_execution_is_an_ingest_error(people):
    trust(mode=ApproverTrust.Mode.FREE)  # "orders": its messages name their approvers
    payroll_routing_only()
    token = str(uuid.uuid4())
    sent = json.loads(body(approvers={"users": ["bob@example.com"]}, requester="carol@example.com"))
    sent.update(taskToken=token, execution=PAYROLL_RUN)  # stateMachine still says "orders"

    error = services.received_message_ingest(sqs_message_id="m-borrow", body=json.dumps(sent), max_bytes=262_144)

    assert not ApprovalRequest.objects.exists()
    assert error is not None and error.code == "execution_mismatch"
    assert "'payroll'" in error.reason and "'orders'" in error.reason
    assert token not in error.reason
    assert IngestError.objects.get(sqs_message_id="m-borrow").code == "execution_mismatch"


@pytest.mark.trust_unconfigured
def test_a_message_naming_only_its_execution_gets_that_state_machines_setting_not_the_catch_all(people):
    trust(name="everything else", state_machine_arn="", mode=ApproverTrust.Mode.FREE)
    payroll_routing_only()
    sent = json.loads(body(approvers={"users": ["bob@example.com"]}, requester="carol@example.com"))
    del sent["stateMachine"]
    sent["execution"] = PAYROLL_RUN

    assert services.received_message_ingest(sqs_message_id="m-1", body=json.dumps(sent), max_bytes=262_144) is None

    request = ApprovalRequest.objects.get()
    assert request.state_machine_arn == PAYROLL
    assert [(a.kind, a.value) for a in request.assignments.all()] == [("group", "finance-approvers")]
    assert [item["value"] for item in request.ignored_approvers] == ["bob@example.com"]
    assert_bob_cannot_approve(people, request)


# ---------------------------------------------------------------------------
# Whatever a message says, nobody it names is assigned beyond what the setting allows
# ---------------------------------------------------------------------------
emails = st.sampled_from(
    ["alice@example.com", "bob@example.com", "carol@example.com", "mallory@evil.test", "zoë@example.com"]
)
groups = st.sampled_from(["finance-approvers", "legal", "portal-admins", "Ünïcode group", "x" * 150])


@pytest.mark.trust_unconfigured
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.sampled_from(ApproverTrust.Mode.values + [None]),
    allowed_users=st.lists(emails, max_size=3),
    allowed_groups=st.lists(groups, max_size=3),
    users=st.lists(emails, max_size=4),
    named_groups=st.lists(groups, max_size=4),
    requester=st.one_of(st.just(""), emails),
    require_requester=st.booleans(),
    domains=st.sampled_from([[], ["example.com"]]),
)
def test_the_assignees_never_exceed_what_the_trust_setting_allows(
    django_settings, mode, allowed_users, allowed_groups, users, named_groups, requester, require_requester, domains
):
    django_settings.OIDC_ALLOWED_EMAIL_DOMAINS = domains
    ApproverTrust.objects.all().delete()
    if mode is not None:
        trust(
            mode=mode,
            allowed_users=allowed_users,
            allowed_groups=allowed_groups,
            require_requester=require_requester,
        )
    fields = {"approvers": {"users": users, "groups": named_groups}}
    if requester:
        fields["requester"] = requester
    try:
        message = parse_message(body(**fields))
    except ContractError:
        return  # the contract's own refusals are tests/test_contract.py's
    try:
        request, _ = services.approval_request_ingest(message=message)
    except TrustRefusal as refusal:
        assert refusal.code in {"approver_not_allowed", "requester_required"}
        assert mode is not None
        assert refusal.message and "#" in refusal.message
        return
    assigned_users = {a.value for a in request.assignments.all() if a.kind == "user"}
    assigned_groups = {a.value for a in request.assignments.all() if a.kind == "group"}
    assert assigned_users or assigned_groups  # never dropped
    if domains:
        assert all(email.endswith("@example.com") for email in assigned_users)
    if mode in {None, ApproverTrust.Mode.ROUTING_ONLY}:
        assert not assigned_users and assigned_groups == {django_conf.APPROVAL_DEFAULT_GROUP}
    if mode == ApproverTrust.Mode.ALLOW_LIST:
        default = {django_conf.APPROVAL_DEFAULT_GROUP}
        assert assigned_users <= set(allowed_users) and assigned_groups - default <= set(allowed_groups)
    if mode == ApproverTrust.Mode.FREE and not domains:
        assert assigned_users == set(users)
    # Everything the message named is assigned or recorded as ignored, with a reason.
    ignored = {(entry["kind"], entry["value"]) for entry in request.ignored_approvers}
    assert all(entry["reason"] for entry in request.ignored_approvers)
    for email in users:
        assert email in assigned_users or ("user", email) in ignored
    for name in named_groups:
        assert name in assigned_groups or ("group", name) in ignored


@pytest.fixture
def django_settings(settings):
    return settings


@pytest.mark.trust_unconfigured
def test_an_admin_adds_a_setting_in_the_admin_and_choosing_free_is_warned_about_and_audited(people):
    carol = signed_in(people["carol"])
    add_url = "/admin/approvals/approvertrust/add/"
    form = carol.get(add_url)
    assert form.status_code == 200 and "trusts every principal allowed to start executions" in form.content.decode()

    saved = carol.post(
        add_url,
        {
            "name": "front door",
            "state_machine_arn": MACHINE,
            "state_name": "",
            "mode": "free",
            "users_text": "",
            "groups_text": "",
            "require_requester": "on",
            "priority": "0",
            "enabled": "on",
            "csrfmiddlewaretoken": carol.cookies["portal_csrftoken"].value,
        },
        follow=True,
    )

    assert saved.status_code == 200
    assert any("trusts every principal" in str(message) for message in saved.context["messages"])
    setting = ApproverTrust.objects.get(name="front door")
    assert setting.mode == "free" and setting.require_requester
    event = AuditEvent.objects.get(action="approver_trust_saved")
    assert event.actor == people["carol"] and event.data["before"] is None and event.data["after"]["mode"] == "free"
    listing = carol.get("/admin/approvals/approvertrust/").content.decode()
    assert "front door" in listing


@pytest.mark.trust_unconfigured
def test_an_approver_cannot_change_trust_settings(people):
    response = signed_in(people["bob"]).get("/admin/approvals/approvertrust/")
    assert response.status_code == 403
    with pytest.raises(services.ApprovalError):
        services.approver_trust_save(actor=people["carol"], name="x", mode="everyone")


def test_a_change_page_url_of_other_digits_is_no_server_error(people):
    # "²".isdigit() is true, and the lookup of pk="²" raised: the admin answered 500.
    response = signed_in(people["carol"]).get("/admin/approvals/approvertrust/%C2%B2/change/")
    assert response.status_code in (302, 404)
