"""The REST API in the portal's process: the same rules as the pages, answered as JSON and
RFC 9457 problem details. Signed in with the session cookie + CSRF here (the bearer tokens have
tests/test_api_tokens.py; the running stack tests/test_api_e2e.py)."""

import json
import threading
import uuid
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from approvals import services
from approvals.contract import ContractError, parse_message
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Callback,
    IdempotencyKey,
    IngestError,
    RequestStatus,
    ServiceAccount,
    Vote,
)
from tests.support import make_user, signed_in

pytestmark = pytest.mark.django_db
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:orders"


class Api:
    """A signed-in browser's JavaScript: JSON bodies, the CSRF header from the cookie."""

    def __init__(self, user, *, csrf: bool = True):
        self.client = signed_in(user)
        self.client.get("/")  # sets the CSRF cookie, as opening a page does
        self.csrf = self.client.cookies["portal_csrftoken"].value if csrf else ""

    def get(self, path, **headers):
        return self.client.get(path, headers=headers)

    def send(self, method, path, body=None, **headers):
        return getattr(self.client, method)(
            path,
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
            headers={"X-CSRFToken": self.csrf, **headers},
        )

    def post(self, path, body=None, **headers):
        return self.send("post", path, body, **headers)


@pytest.fixture
def people():
    return {
        "alice": make_user("alice", "finance-approvers"),
        "bob": make_user("bob"),
        "carol": make_user("carol", "portal-admins", admin=True),
        "dave": make_user("dave"),
        "erin": make_user("erin", "finance-approvers"),
    }


def ingest(title="Approve order 1234", *, requester="bob@example.com", groups=("finance-approvers",), users=()):
    body = {
        "taskToken": f"token-{uuid.uuid4()}",
        "title": title,
        "requester": requester,
        "approvers": {"users": list(users), "groups": list(groups)},
        "details": {"amount": 5300},
        "stateMachine": MACHINE,
        "execution": f"arn:aws:states:us-east-1:123456789012:execution:orders:{uuid.uuid4().hex[:8]}",
    }
    request, _ = services.approval_request_ingest(
        message=parse_message(json.dumps(body)), sqs_message_id=str(uuid.uuid4())
    )
    return request


@pytest.fixture
def approval(people) -> ApprovalRequest:
    return ingest()


def decision_url(approval) -> str:
    return f"/api/v1/requests/{approval.public_id}/decision/"


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:approvals:problem:{code}", body
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# ---------------------------------------------------------------------------
# Deciding: the one rule, every refusal a problem
# ---------------------------------------------------------------------------
def test_an_approver_approves_through_the_api_and_the_callback_is_queued(people, approval):
    response = Api(people["alice"]).post(decision_url(approval), {"decision": "approve", "comment": "fine"})

    assert response.status_code == 201, response.content[:500]
    body = response.json()
    assert body["request"]["status"] == "approved"
    assert body["vote"] == {**body["vote"], "by": "alice@example.com", "decision": "approve", "comment": "fine"}
    approval.refresh_from_db()
    assert approval.status == RequestStatus.APPROVED and approval.decided_by == people["alice"]
    assert Callback.objects.get(request=approval).payload["output"]["decidedBy"]["email"] == "alice@example.com"
    assert AuditEvent.objects.filter(request=approval, action="approved").exists()


def test_the_requester_gets_403_requester_cannot_decide(people):
    approval = ingest(requester="alice@example.com")

    assert_problem(
        Api(people["alice"]).post(decision_url(approval), {"decision": "approve"}), 403, "requester_cannot_decide"
    )
    assert not Vote.objects.exists()


def test_an_outsider_gets_404_as_for_a_request_that_does_not_exist_and_it_is_audited(people, approval):
    assert_problem(Api(people["dave"]).post(decision_url(approval), {"decision": "approve"}), 404, "not_found")
    assert_problem(Api(people["dave"]).get(f"/api/v1/requests/{approval.public_id}/"), 404, "not_found")
    missing = f"/api/v1/requests/{uuid.uuid4()}/decision/"
    assert_problem(Api(people["dave"]).post(missing, {"decision": "approve"}), 404, "not_found")
    refused = AuditEvent.objects.filter(action="decision_refused", actor=people["dave"])
    assert refused.count() == 2 and {event.data["via"] for event in refused} == {"api"}


def test_a_second_decision_is_409_already_decided(people, approval):
    assert Api(people["alice"]).post(decision_url(approval), {"decision": "approve"}).status_code == 201

    assert_problem(
        Api(people["erin"]).post(decision_url(approval), {"decision": "reject", "comment": "no"}),
        409,
        "already_decided",
    )


def test_a_rejection_without_a_reason_is_422_reason_required(people, approval):
    assert_problem(Api(people["alice"]).post(decision_url(approval), {"decision": "reject"}), 422, "reason_required")


@pytest.mark.parametrize(
    "body",
    [{}, {"decision": "maybe"}, {"decision": "approve", "comment": "x" * 2001}, [], "approve", {"decision": None}],
)
def test_a_malformed_decision_is_400_validation_error(people, approval, body):
    problem = assert_problem(Api(people["alice"]).post(decision_url(approval), body), 400, "validation_error")
    assert not Vote.objects.exists()
    assert isinstance(problem.get("errors", {}), dict)


def test_the_session_cookie_without_csrf_is_refused(people, approval):
    response = Api(people["alice"], csrf=False).post(decision_url(approval), {"decision": "approve"})

    assert_problem(response, 403, "permission_denied")
    assert not Vote.objects.exists()


def test_a_deactivated_persons_session_is_refused(people, approval):
    api = Api(people["alice"])
    people["alice"].is_active = False
    people["alice"].save()

    assert api.get("/api/v1/inbox/").status_code in {401, 403}
    assert api.post(decision_url(approval), {"decision": "approve"}).status_code in {401, 403}
    assert not Vote.objects.exists()


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=12,
    )
    | st.fixed_dictionaries(
        {"decision": st.sampled_from(["approve", "reject", "APPROVE", "", "\u0000"]), "comment": st.text(max_size=2100)}
    )
)
def test_any_decision_body_is_a_clear_answer_never_a_crash(people, approval, body):
    response = Api(people["dave"]).post(decision_url(approval), body)

    assert response.status_code in {400, 404}
    assert response["Content-Type"] == "application/problem+json"
    assert not Vote.objects.exists()


# ---------------------------------------------------------------------------
# Idempotency-Key
# ---------------------------------------------------------------------------
def test_a_retried_decision_with_its_idempotency_key_returns_the_first_answer_and_votes_once(people, approval):
    api = Api(people["alice"])
    first = api.post(decision_url(approval), {"decision": "approve"}, **{"Idempotency-Key": "k-1"})
    again = api.post(decision_url(approval), {"decision": "approve"}, **{"Idempotency-Key": "k-1"})

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotency-Replayed"] == "true"
    assert Vote.objects.filter(request=approval).count() == 1
    # Without the key, the same decision again is what it is: already decided.
    assert_problem(api.post(decision_url(approval), {"decision": "approve"}), 409, "already_decided")


def test_the_same_key_with_another_body_is_422_idempotency_conflict(people, approval):
    api = Api(people["alice"])
    api.post(decision_url(approval), {"decision": "approve"}, **{"Idempotency-Key": "k-2"})

    response = api.post(decision_url(approval), {"decision": "reject", "comment": "no"}, **{"Idempotency-Key": "k-2"})
    assert_problem(response, 422, "idempotency_conflict")


def test_keys_are_per_caller(people, approval):
    Api(people["alice"]).post(decision_url(approval), {"decision": "approve"}, **{"Idempotency-Key": "same"})
    other = ingest("Another")

    response = Api(people["erin"]).post(decision_url(other), {"decision": "approve"}, **{"Idempotency-Key": "same"})
    assert response.status_code == 201
    assert IdempotencyKey.objects.count() == 2


def test_the_retention_sweep_forgets_keys_older_than_their_hours_and_audits_the_count(people, approval, settings):
    from approvals.tasks.sweeps import erase_closed_tokens

    settings.API_IDEMPOTENCY_KEY_HOURS = 24
    api = Api(people["alice"])
    api.post(decision_url(approval), {"decision": "approve"}, **{"Idempotency-Key": "old"})
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    other = ingest("Another")
    Api(people["erin"]).post(decision_url(other), {"decision": "approve"}, **{"Idempotency-Key": "new"})

    erase_closed_tokens()

    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
    purged = AuditEvent.objects.get(action="idempotency_keys_purged")
    assert purged.data["count"] == 1 and purged.actor is None
    erase_closed_tokens()  # nothing old enough: no second event
    assert AuditEvent.objects.filter(action="idempotency_keys_purged").count() == 1


@pytest.mark.parametrize(("rate", "status"), [("0/minute", 429), ("600/fortnight", None)])
def test_an_api_rate_of_none_or_a_misspelt_one_refuses_every_call_which_is_why_the_check_refuses_it(
    people, settings, rate, status
):
    # approvals.E043 refuses both at start-up (API_THROTTLE_USER); here is what they would do.
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {**rates, "user": rate}}
    api = Api(people["alice"])

    if status is None:  # a period DRF does not know: KeyError, a 500 for every call
        with pytest.raises(KeyError):
            api.get("/api/v1/inbox/")
    else:
        assert_problem(api.get("/api/v1/inbox/"), status, "throttled")  # the first call of the day


def test_keys_kept_for_no_hours_are_forgotten_by_the_next_sweep_which_is_why_the_check_refuses_it(
    people, approval, settings
):
    from approvals.tasks.sweeps import erase_closed_tokens

    settings.API_IDEMPOTENCY_KEY_HOURS = 0  # approvals.E043 refuses it at start-up
    api = Api(people["alice"])
    first = api.post(decision_url(approval), {"decision": "approve"}, **{"Idempotency-Key": "k-0"})
    assert first.status_code == 201

    erase_closed_tokens()  # the hourly retention sweep, run a moment later

    # The client's retry (its connection broke before the 201) no longer gets its first answer.
    retry = api.post(decision_url(approval), {"decision": "approve"}, **{"Idempotency-Key": "k-0"})
    assert_problem(retry, 409, "already_decided")


@pytest.mark.parametrize("key", ["", "x" * 201, "caf\u00e9"])
def test_a_bad_idempotency_key_is_400(people, approval, key):
    response = Api(people["alice"]).post(decision_url(approval), {"decision": "approve"}, **{"Idempotency-Key": key})
    assert_problem(response, 400, "validation_error")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_retries_with_one_key_decide_once():
    alice = make_user("alice", "finance-approvers")
    make_user("bob")
    approval = ingest()
    api = Api(alice)
    start = threading.Barrier(2)
    answers = []

    def retry():
        start.wait()
        try:
            answers.append(api.post(decision_url(approval), {"decision": "approve"}, **{"Idempotency-Key": "race"}))
        finally:
            connection.close()

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [answer.status_code for answer in answers] == [201, 201]
    assert answers[0].json() == answers[1].json()
    assert Vote.objects.filter(request=approval).count() == 1
    assert AuditEvent.objects.filter(request=approval, action="approved").count() == 1


# ---------------------------------------------------------------------------
# Reads: inbox, request, ETags
# ---------------------------------------------------------------------------
def test_the_inbox_pages_with_an_opaque_cursor_without_skipping_or_repeating(people):
    made = {str(ingest(f"Order {n}").public_id) for n in range(30)}
    api = Api(people["alice"])

    first = api.get("/api/v1/inbox/?tab=waiting").json()
    second = Client.get(api.client, first["next"]).json()

    assert len(first["results"]) == 25 and len(second["results"]) == 5
    seen = [row["id"] for row in first["results"] + second["results"]]
    assert set(seen) == made and len(seen) == 30
    assert second["next"] is None and second["previous"] is not None


def test_the_inbox_search_and_tabs_are_the_pages_ones(people):
    ingest("Laptop for Zed")
    ingest("Order 77", requester="alice@example.com", groups=("ops",))
    api = Api(people["alice"])

    assert [row["title"] for row in api.get("/api/v1/inbox/?q=laptop").json()["results"]] == ["Laptop for Zed"]
    assert [row["title"] for row in api.get("/api/v1/inbox/?tab=requested").json()["results"]] == ["Order 77"]
    assert_problem(api.get("/api/v1/inbox/?tab=everything"), 400, "validation_error")


def test_a_request_read_has_policy_votes_conversation_and_an_etag(people, approval):
    api = Api(people["alice"])
    response = api.get(f"/api/v1/requests/{approval.public_id}/")

    assert response.status_code == 200
    body = response.json()
    assert body["may_decide"] is True and body["refusal"] is None
    assert body["policy"]["required_approvals"] == 1 and body["votes"] == [] and body["conversation"] == []
    assert "token" not in json.dumps(body).lower()
    etag = response["ETag"]
    assert api.get(f"/api/v1/requests/{approval.public_id}/", **{"If-None-Match": etag}).status_code == 304

    Api(people["erin"]).post(decision_url(approval), {"decision": "approve"})
    assert api.get(f"/api/v1/requests/{approval.public_id}/", **{"If-None-Match": etag}).status_code == 200


def test_the_requester_sees_their_request_but_may_not_decide(people, approval):
    body = Api(people["bob"]).get(f"/api/v1/requests/{approval.public_id}/").json()

    assert body["may_decide"] is False and body["refusal"]["code"] == "requester"


# ---------------------------------------------------------------------------
# Claim, conversation, delegations
# ---------------------------------------------------------------------------
def test_claim_release_ask_and_answer(people, approval):
    alice, bob = Api(people["alice"]), Api(people["bob"])
    base = f"/api/v1/requests/{approval.public_id}"

    assert alice.post(f"{base}/claim/").json()["claimed_by"] == "alice@example.com"
    assert_problem(Api(people["erin"]).post(f"{base}/claim/"), 409, "claimed")
    assert alice.send("delete", f"{base}/claim/").json()["claimed_by"] is None
    asked = alice.post(f"{base}/questions/", {"text": "Which cost centre?"}).json()
    assert asked["awaiting_info"] is True
    assert_problem(alice.post(f"{base}/answers/", {"text": "me?"}), 403, "not_requester")
    answered = bob.post(f"{base}/answers/", {"text": "CC-42"}).json()
    assert [message["text"] for message in answered["conversation"]] == ["Which cost centre?", "CC-42"]


def test_a_question_or_answer_the_database_cannot_store_is_a_problem_not_a_server_error(people, approval):
    alice, bob = Api(people["alice"]), Api(people["bob"])
    base = f"/api/v1/requests/{approval.public_id}"
    assert_problem(alice.post(f"{base}/questions/", {"text": "Which\x00?"}), 400, "validation_error")
    alice.post(f"{base}/questions/", {"text": "Which cost centre?"})
    assert_problem(bob.post(f"{base}/answers/", {"text": "CC\x0042"}), 400, "validation_error")
    assert [message.text for message in approval.info_messages.all()] == ["Which cost centre?"]


def test_delegations_of_ones_own(people):
    alice = Api(people["alice"])
    ends_at = (timezone.now() + timedelta(days=7)).isoformat()
    created = alice.post("/api/v1/delegations/", {"delegate_email": "erin@example.com", "ends_at": ends_at})
    assert created.status_code == 201, created.content
    listed = alice.get("/api/v1/delegations/").json()
    assert [row["delegate"] for row in listed["given"]] == ["erin@example.com"]
    delegation_id = created.json()["id"]

    assert_problem(
        Api(people["dave"]).send("delete", f"/api/v1/delegations/{delegation_id}/"), 403, "permission_denied"
    )
    assert alice.send("delete", f"/api/v1/delegations/{delegation_id}/").status_code == 200


# ---------------------------------------------------------------------------
# Admin
# ---------------------------------------------------------------------------
def test_only_admins_reassign_and_cancel(people, approval):
    base = f"/api/v1/requests/{approval.public_id}"
    body = {"users": ["dave@example.com"], "reason": "Alice is away"}

    assert_problem(Api(people["alice"]).post(f"{base}/reassign/", body), 403, "permission_denied")
    reassigned = Api(people["carol"]).post(f"{base}/reassign/", body)
    assert reassigned.status_code == 200 and reassigned.json()["approvers"] == {
        "users": ["dave@example.com"],
        "groups": [],
    }
    assert_problem(Api(people["carol"]).post(f"{base}/cancel/", {}), 400, "validation_error")
    cancelled = Api(people["carol"]).post(f"{base}/cancel/", {"reason": "Order withdrawn"})
    assert cancelled.json()["status"] == "cancelled"
    assert AuditEvent.objects.filter(request=approval, action__in=["reassigned", "cancelled"]).count() == 2
    assert_problem(Api(people["carol"]).post(f"{base}/cancel/", {"reason": "again"}), 409, "already_decided")


def test_an_overdue_request_is_not_reassigned_through_the_api(people, approval):
    # Its deadline passed before the expiry sweep ran: nobody may decide it, so nobody is asked to.
    ApprovalRequest.objects.filter(pk=approval.pk).update(deadline=timezone.now() - timedelta(minutes=1))

    refused = Api(people["carol"]).post(
        f"/api/v1/requests/{approval.public_id}/reassign/", {"users": ["dave@example.com"], "reason": "Alice is away"}
    )

    assert "deadline for this request has passed" in assert_problem(refused, 409, "expired")["detail"]
    assert list(approval.assignments.values_list("value", flat=True)) == ["finance-approvers"]
    assert not AuditEvent.objects.filter(request=approval, action="reassigned").exists()


def test_the_audit_trail_filters_and_exports_as_csv_and_json_lines(people, approval):
    Api(people["alice"]).post(decision_url(approval), {"decision": "approve", "comment": "=HYPERLINK(1)"})
    carol = Api(people["carol"])

    page = carol.get(f"/api/v1/audit-events/?request={approval.public_id}&action=approved").json()
    assert [event["action"] for event in page["results"]] == ["approved"]
    jsonl = carol.get(f"/api/v1/audit-events/?request={approval.public_id}&format=jsonl")
    lines = [json.loads(line) for line in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert {line["action"] for line in lines} >= {"received", "approved"} or len(lines) >= 2
    csv_text = b"".join(carol.get("/api/v1/audit-events/?format=csv").streaming_content).decode()
    assert csv_text.startswith("id,at,action,actor,request,data")
    assert "alice@example.com" in csv_text
    assert_problem(Api(people["alice"]).get("/api/v1/audit-events/"), 403, "permission_denied")


def test_an_audit_export_limit_below_one_exports_nothing_which_is_why_the_check_refuses_it(people, approval, settings):
    # approvals.E043 refuses these at start-up; here is what they would do.
    carol = Api(people["carol"])
    settings.API_AUDIT_EXPORT_LIMIT = 0

    csv_text = b"".join(carol.get("/api/v1/audit-events/?format=csv").streaming_content).decode()
    jsonl = b"".join(carol.get("/api/v1/audit-events/?format=jsonl").streaming_content).decode()

    assert AuditEvent.objects.exists()
    assert csv_text.splitlines() == ["id,at,action,actor,request,data"] and jsonl == ""  # no word why
    settings.API_AUDIT_EXPORT_LIMIT = -1
    with pytest.raises(ValueError, match="Negative indexing"):
        carol.get("/api/v1/audit-events/?format=csv")


def test_admins_list_and_discard_ingest_errors(people):
    services.ingest_error_record(sqs_message_id="bad-1", error=ContractError("invalid_json", "Not JSON"), body="{oops")
    carol = Api(people["carol"])
    listed = carol.get("/api/v1/ingest-errors/").json()["results"]
    assert [row["sqs_message_id"] for row in listed] == ["bad-1"]

    discarded = carol.post(f"/api/v1/ingest-errors/{listed[0]['id']}/discard/")
    assert discarded.status_code == 200 and discarded.json()["status"] == IngestError.Status.DISCARDED
    assert_problem(Api(people["alice"]).get("/api/v1/ingest-errors/"), 403, "permission_denied")


def test_the_ingest_errors_list_refuses_a_status_it_does_not_know(people):
    """`status` is one of the documented values; anything else is the caller's mistake, said as
    such (a NUL character in it reached PostgreSQL and answered 500)."""
    carol = Api(people["carol"])
    body = assert_problem(carol.get("/api/v1/ingest-errors/?status=nonsense"), 400, "validation_error")
    assert list(body["errors"]) == ["status"]
    for value in ("open%00", "%00"):  # refused before the view (portal/middleware.py)
        body = assert_problem(carol.get(f"/api/v1/ingest-errors/?status={value}"), 400, "bad_request")
        assert "\x00" not in body["detail"]
    for status in IngestError.Status.values:
        assert carol.get(f"/api/v1/ingest-errors/?status={status}").status_code == 200


# ---------------------------------------------------------------------------
# Service accounts: scoped, read-only or may decide, four eyes like a person
# ---------------------------------------------------------------------------
def bot(people, *, may_decide: bool, state_machines=(MACHINE,), email="bot@example.com", groups=("finance-approvers",)):
    account = services.service_account_save(
        actor=people["carol"],
        name=f"bot {uuid.uuid4().hex[:6]}",
        issuer="https://idp.test",
        subject=f"client-{uuid.uuid4().hex[:6]}",
        email=email,
        groups=groups,
        state_machines=state_machines,
        may_decide=may_decide,
    )
    return account


def test_a_read_only_service_account_sees_its_requests_but_gets_403_on_decide(people, approval):
    account = bot(people, may_decide=False)
    api = Api(account.user)

    assert api.get(f"/api/v1/requests/{approval.public_id}/").status_code == 200
    assert_problem(api.post(decision_url(approval), {"decision": "approve"}), 403, "service_account_read_only")
    assert not Vote.objects.exists()


def test_a_service_account_does_not_see_other_state_machines(people, approval):
    account = bot(people, may_decide=True, state_machines=["arn:aws:states:us-east-1:123456789012:stateMachine:other"])
    api = Api(account.user)

    assert_problem(api.get(f"/api/v1/requests/{approval.public_id}/"), 404, "not_found")
    assert api.get("/api/v1/inbox/").json()["results"] == []


def test_a_service_account_allowed_to_decide_approves_where_assigned(people, approval):
    account = bot(people, may_decide=True)

    response = Api(account.user).post(decision_url(approval), {"decision": "approve"})
    assert response.status_code == 201
    assert Callback.objects.get(request=approval).payload["output"]["decidedBy"]["issuer"] == "https://idp.test"


def test_four_eyes_holds_for_a_service_account(people):
    account = bot(people, may_decide=True, email="bot@example.com")
    approval = ingest(requester="bot@example.com")

    assert_problem(
        Api(account.user).post(decision_url(approval), {"decision": "approve"}), 403, "requester_cannot_decide"
    )


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"may_decide": False}, "service_account_read_only"),
        (
            {"state_machines": ["arn:aws:states:us-east-1:123456789012:stateMachine:other"]},
            "service_account_out_of_scope",
        ),
        ({"active": False}, "inactive_user"),
    ],
    ids=["read-only", "out-of-scope", "deactivated"],
)
def test_a_service_accounts_approval_is_withdrawn_when_an_admin_narrows_it_before_the_callback(
    people, approval, change, code
):
    account = bot(people, may_decide=True)
    assert Api(account.user).post(decision_url(approval), {"decision": "approve"}).status_code == 201
    settings = {
        "name": account.name,
        "issuer": account.issuer,
        "subject": account.subject,
        "email": "bot@example.com",
        "groups": ["finance-approvers"],
        "state_machines": [MACHINE],
        "may_decide": True,
    }
    services.service_account_save(actor=people["carol"], account_id=account.pk, **{**settings, **change})

    assert services.callback_claim(callback_id=Callback.objects.get(request=approval).pk) is None

    approval.refresh_from_db()
    assert approval.status == RequestStatus.PENDING and not Callback.objects.filter(request=approval).exists()
    withdrawn = AuditEvent.objects.get(request=approval, action="vote_withdrawn")
    assert withdrawn.data["code"] == code and withdrawn.data["voter"] == "bot@example.com"


def test_service_accounts_are_created_and_changed_with_an_audit_event(people):
    account = bot(people, may_decide=False)
    services.service_account_save(
        actor=people["carol"], account_id=account.pk, name=account.name, issuer=account.issuer, subject=account.subject,
        may_decide=True, state_machines=["*"],
    )  # fmt: skip

    events = AuditEvent.objects.filter(action__startswith="service_account").order_by("id")
    assert [event.action for event in events] == ["service_account_created", "service_account_saved"]
    assert events[1].data["before"]["may_decide"] is False and events[1].data["after"]["may_decide"] is True
    assert not account.user.is_staff and not account.user.has_usable_password()


def test_an_admin_creates_a_service_account_in_the_admin_through_the_service(people):
    client = signed_in(people["carol"])
    page = client.get("/admin/approvals/serviceaccount/add/")
    assert page.status_code == 200
    response = client.post(
        "/admin/approvals/serviceaccount/add/",
        {
            "csrfmiddlewaretoken": page.context["csrf_token"],
            "name": "deploy bot",
            "issuer": "https://idp.test",
            "subject": "0oa-deploy-bot",
            "email": "deploy-bot@example.com",
            "groups_text": "release-approvers",
            "state_machines_text": MACHINE,
            "may_decide": "on",
            "active": "on",
        },
    )

    assert response.status_code == 302, response.content[:2000]
    account = ServiceAccount.objects.get(name="deploy bot")
    assert account.covers(MACHINE) and account.may_decide
    assert account.user.email == "deploy-bot@example.com" and account.user.oidc_sub == "0oa-deploy-bot"
    assert AuditEvent.objects.filter(action="service_account_created", actor=people["carol"]).exists()
    assert client.get(f"/admin/approvals/serviceaccount/{account.pk}/change/").status_code == 200
    # Someone who is not an admin does not manage service accounts.
    assert signed_in(people["alice"]).get("/admin/approvals/serviceaccount/add/").status_code in {302, 403}


# ---------------------------------------------------------------------------
# Throttling: per person, per service account, configurable
# ---------------------------------------------------------------------------
def test_each_caller_has_their_own_budget_and_a_429_says_when_to_come_back(people, settings):
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "2/minute", "service_account": "3/minute"},
    }
    alice, erin, robot = Api(people["alice"]), Api(people["erin"]), Api(bot(people, may_decide=False).user)

    assert [alice.get("/api/v1/inbox/").status_code for _ in range(2)] == [200, 200]
    problem = assert_problem(alice.get("/api/v1/inbox/"), 429, "throttled")
    assert int(alice.get("/api/v1/inbox/")["Retry-After"]) > 0 and problem["detail"]
    assert erin.get("/api/v1/inbox/").status_code == 200  # someone else's budget
    assert [robot.get("/api/v1/inbox/").status_code for _ in range(4)] == [200, 200, 200, 429]
    cache.clear()


@pytest.mark.parametrize("cursor", ["²", "١٢٣", "9" * 30, "-5", "abc"])
def test_a_hand_made_cursor_on_the_admin_lists_is_never_a_server_error(people, cursor):
    # "²".isdigit() is true and int("²") raises: the audit trail and the ingest errors answered 500.
    carol = Api(people["carol"])
    for path in ("/api/v1/audit-events/", "/api/v1/ingest-errors/"):
        response = carol.get(f"{path}?cursor={quote(cursor)}")
        assert response.status_code in (200, 400), (path, response.status_code)


def test_a_body_past_the_upload_limit_is_a_413_problem_not_an_html_page(people, approval, settings):
    # Django refuses a body past DATA_UPLOAD_MAX_MEMORY_SIZE when DRF reads it; that answered
    # Django's HTML "Bad Request (400)" page to an API client.
    body = {"decision": "approve", "comment": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    problem = assert_problem(Api(people["alice"]).post(decision_url(approval), body), 413, "body_too_large")
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in problem["detail"].replace(",", "")
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "pending"
