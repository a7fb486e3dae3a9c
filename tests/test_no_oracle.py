"""No oracle, no over-sharing: what a user may not see answers like what does not exist.

- every POST of a request page answers a request the user may not see exactly like a GET of it,
  and like a request that does not exist (status and body);
- the admin's bulk actions narrow the posted ids to the user's own list before anything else;
- the inbox's state-machine filter lists only state machines of requests the user may see;
- notifications are never sent to an address outside OIDC_ALLOWED_EMAIL_DOMAINS, and the admin
  sees who was not told, and why.

Real parts: PostgreSQL, Django's test client with CSRF checks on, the locmem mail backend,
Celery in eager mode for the sends (as in tests/test_notifications.py).
"""

import json
import re
import uuid

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.test import Client
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from approvals import services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Notification, RequestStatus, User, Vote
from approvals.roles import APPROVER_ACCESS_GROUP
from approvals.services import notifications as notification_services
from approvals.tasks import notifications as notify_tasks
from tests.support import make_user, new_request_notifications_planned, signed_in

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/approvals/approvalrequest/"
PAYMENTS = "arn:aws:states:eu-west-1:123456789012:stateMachine:payments"
SECRET_PROJECT = "arn:aws:states:eu-west-1:123456789012:stateMachine:acquire-competitor"


@pytest.fixture
def people(db):
    return {
        "alice": make_user("alice", "finance-approvers"),
        "erin": make_user("erin", "legal"),
        "root": make_user("root", "portal-admins", admin=True),
    }


def ingest(title: str, *, groups=(), users=(), requester: str = "bob@example.com", **fields) -> ApprovalRequest:
    body = {
        "taskToken": str(uuid.uuid4()),
        "title": title,
        "requester": requester,
        "approvers": {"users": list(users), "groups": list(groups)},
        **fields,
    }
    request, created = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    assert created
    return request


def normalized(response) -> tuple[int, str]:
    """Status and body, with the one part that differs on every render: the masked CSRF token."""
    body = response.content.decode()
    body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', 'name="csrfmiddlewaretoken" value=""', body)
    return response.status_code, body


# ---------------------------------------------------------------------------
# POST answers like GET
# ---------------------------------------------------------------------------
POSTS = {
    "confirm": {"decision": "approve", "comment": ""},
    "decide": {"decision": "approve", "comment": ""},
    "ask": {"question": "Which cost centre?"},
    "answer": {"answer": "4711"},
    "claim": {},
    "unclaim": {},
}


@pytest.mark.parametrize("endpoint", sorted(POSTS))
def test_a_post_to_a_request_you_may_not_see_answers_exactly_like_a_get_and_like_a_missing_one(people, endpoint):
    legal = ingest("Legal: acquisition", groups=["legal"])
    missing = uuid.uuid4()
    alice = signed_in(people["alice"])

    seen_get = normalized(alice.get(f"/requests/{legal.public_id}/"))
    assert seen_get[0] == 404
    token = alice.cookies["portal_csrftoken"].value
    missing_get = normalized(alice.get(f"/requests/{missing}/"))
    unseen_post = normalized(
        alice.post(f"/requests/{legal.public_id}/{endpoint}/", {**POSTS[endpoint], "csrfmiddlewaretoken": token})
    )
    missing_post = normalized(
        alice.post(f"/requests/{missing}/{endpoint}/", {**POSTS[endpoint], "csrfmiddlewaretoken": token})
    )

    assert unseen_post == seen_get == missing_get == missing_post
    # Nothing happened to the request, and nothing about it is recorded against it.
    legal.refresh_from_db()
    assert legal.status == RequestStatus.PENDING and legal.claimed_by is None and not legal.awaiting_info
    assert not Vote.objects.filter(request=legal).exists()
    assert not AuditEvent.objects.filter(request=legal).exclude(action="ingested").exists()


def test_a_rejection_without_a_comment_on_a_request_you_may_not_see_is_the_same_404(people):
    legal = ingest("Legal: acquisition", groups=["legal"])
    alice = signed_in(people["alice"])
    seen_get = normalized(alice.get(f"/requests/{legal.public_id}/"))
    token = alice.cookies["portal_csrftoken"].value

    for data in ({"decision": "reject", "comment": ""}, {"decision": "nonsense"}, {}):
        posted = alice.post(f"/requests/{legal.public_id}/decide/", {**data, "csrfmiddlewaretoken": token})
        assert normalized(posted) == seen_get


def test_the_approver_still_gets_the_reason_on_a_request_they_may_see(people):
    own = ingest("Own: order", groups=["finance-approvers"], requester="alice@example.com")
    alice = signed_in(people["alice"])
    alice.get(f"/requests/{own.public_id}/")
    token = alice.cookies["portal_csrftoken"].value

    response = alice.post(f"/requests/{own.public_id}/decide/", {"decision": "approve", "csrfmiddlewaretoken": token})

    assert response.status_code == 403
    assert "You requested this approval" in response.content.decode()


# ---------------------------------------------------------------------------
# Bulk actions in the admin
# ---------------------------------------------------------------------------
def admin_approver(user):
    """An approver in the admin, as every SSO sign-in makes one (approvals/roles.py)."""
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.groups.add(Group.objects.get(name=APPROVER_ACCESS_GROUP))
    return user


def bulk(client: Client, action: str, ids: list[int], **form):
    client.get(CHANGELIST)
    token = client.cookies["portal_csrftoken"].value
    selection = {"action": action, "_selected_action": [str(pk) for pk in ids], "csrfmiddlewaretoken": token}
    page = client.post(CHANGELIST, {**selection, "index": "0"})
    done = client.post(CHANGELIST, {**selection, "confirm": "yes", **form}, follow=True)
    return page, done


@pytest.mark.parametrize("action", ["approve_selected", "reject_selected"])
def test_a_bulk_action_on_ids_outside_your_list_answers_like_ids_that_do_not_exist_and_records_nothing(people, action):
    mine = ingest("Finance: order 1", groups=["finance-approvers"])
    legal = ingest("Legal: acquisition", groups=["legal"])
    missing = ApprovalRequest.objects.order_by("-pk").first().pk + 1000
    alice = signed_in(admin_approver(people["alice"]))

    page, done = bulk(alice, action, [mine.pk, legal.pk, missing], comment="Batch")

    confirmation = page.content.decode()
    assert "Legal: acquisition" not in confirmation
    notes = [str(message) for message in done.context["messages"]]
    about_legal = [note.replace(f"#{legal.pk} ", "#N ") for note in notes if f"request #{legal.pk} " in note]
    about_missing = [note.replace(f"#{missing} ", "#N ") for note in notes if f"request #{missing} " in note]
    assert about_legal == about_missing and len(about_legal) == 1
    assert "not yours to see" in about_legal[0]
    legal.refresh_from_db()
    assert legal.status == RequestStatus.PENDING
    assert not AuditEvent.objects.filter(request=legal).exclude(action="ingested").exists()
    assert not AuditEvent.objects.filter(action="decision_refused", data__public_id=str(legal.public_id)).exists()
    mine.refresh_from_db()
    assert mine.status != RequestStatus.PENDING  # the row in her list was decided


# ---------------------------------------------------------------------------
# The inbox's state-machine filter
# ---------------------------------------------------------------------------
def machines_listed(client: Client) -> set[str]:
    page = client.get("/").content.decode()
    select = re.search(r'<select id="machine".*?</select>', page, re.S).group(0)
    return set(re.findall(r'<option value="(arn:[^"]+)"', select))


def test_the_inbox_lists_only_state_machines_of_requests_the_user_may_see(people):
    ingest("Finance: order 1", groups=["finance-approvers"], stateMachine=PAYMENTS)
    ingest("Legal: acquisition", groups=["legal"], stateMachine=SECRET_PROJECT)
    ingest("Asked by alice", groups=["legal"], requester="alice@example.com", stateMachine=PAYMENTS)

    assert machines_listed(signed_in(people["alice"])) == {PAYMENTS}
    assert machines_listed(signed_in(people["erin"])) == {PAYMENTS, SECRET_PROJECT}
    assert machines_listed(signed_in(make_user("zed"))) == set()
    assert machines_listed(signed_in(people["root"])) == {PAYMENTS, SECRET_PROJECT}


# ---------------------------------------------------------------------------
# Notifications only to the allowed email domains
# ---------------------------------------------------------------------------
def test_no_mail_goes_to_an_address_outside_the_allowed_domains_and_the_admin_sees_the_refusal(
    people, settings, committed
):
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]
    settings.NOTIFICATION_EMAIL_ENABLED = True
    # Named by the message, mallory is not even assigned (approvals/trust.py: nobody in her domain
    # can sign in); an account of hers from before the domains were restricted is still a member
    # of the group, so the notifications themselves must refuse her.
    mallory = make_user("mallory", "finance-approvers")
    User.objects.filter(pk=mallory.pk).update(email="mallory@evil.test")
    mail.outbox.clear()

    request = committed(
        ingest,
        "Approve order 9",
        users=["mallory@evil.test", "zoe@example.com"],
        groups=["finance-approvers"],
        requester="boss@Evil.Test",
    )

    assert sorted(message.to[0] for message in mail.outbox) == ["alice@example.com", "zoe@example.com"]
    assert not request.assignments.filter(value="mallory@evil.test").exists()
    refused = Notification.objects.get(request=request, recipient="mallory@evil.test")
    assert refused.status == Notification.Status.REFUSED and "allowed email domains" in refused.last_error
    event = AuditEvent.objects.get(request=request, action="notification_refused")
    assert event.data["recipients"] == ["email:mallory@evil.test"]

    # The requester outside the domains hears nothing of the outcome either.
    committed(services.approval_decide, public_id=request.public_id, user=people["alice"], approve=True)
    assert not [message for message in mail.outbox if "evil" in message.to[0].lower()]
    assert Notification.objects.get(request=request, kind="outcome").status == Notification.Status.REFUSED

    # The admin sees them: the notifications list, filtered by the refused status.
    listing = signed_in(people["root"]).get("/admin/approvals/notification/?status__exact=refused")
    assert listing.status_code == 200
    text = listing.content.decode()
    assert "mallory@evil.test" in text and "boss@evil.test" in text and "zoe@example.com" not in text


def test_a_notification_planned_before_the_domains_were_restricted_is_refused_when_it_is_sent(people, settings):
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = []
    settings.NOTIFICATION_EMAIL_ENABLED = True
    request = ingest("Approve order 10", users=["mallory@evil.test"])
    new_request_notifications_planned()  # what the ingest's after-commit planning task does
    planned = Notification.objects.get(request=request, recipient="mallory@evil.test")
    assert planned.status == Notification.Status.PENDING
    mail.outbox.clear()

    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]
    assert notify_tasks.send_notification(planned.pk) == "nothing-to-send"

    assert mail.outbox == []
    planned.refresh_from_db()
    assert planned.status == Notification.Status.REFUSED
    assert AuditEvent.objects.filter(request=request, action="notification_refused").exists()
    # An admin's "send again" only resends failed rows: a refused one stays refused.
    assert not notification_services.notification_resend(notification_id=planned.pk, actor=people["root"])


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    local=st.text(min_size=1, max_size=20).filter(lambda text: "@" not in text),
    domain=st.text(min_size=1, max_size=30),
)
def test_only_addresses_in_an_allowed_domain_pass_whatever_their_shape(local, domain):
    from django.conf import settings as django_settings

    allowed = ["example.com"]
    old = django_settings.OIDC_ALLOWED_EMAIL_DOMAINS
    django_settings.OIDC_ALLOWED_EMAIL_DOMAINS = allowed
    try:
        address = f"{local}@{domain}"
        assert notification_services.address_allowed(address) == (domain.rsplit("@", 1)[-1].lower() in allowed)
        assert notification_services.address_allowed(f"{local}@example.com")
        assert notification_services.address_allowed(f"{local}@EXAMPLE.com")
        assert not notification_services.address_allowed(f"{local}@example.com.evil.test")
    finally:
        django_settings.OIDC_ALLOWED_EMAIL_DOMAINS = old


@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    posted=st.lists(
        st.one_of(
            st.integers(min_value=-(2**70), max_value=2**70).map(str),
            st.text(max_size=12),
            st.sampled_from(["1", "01", " 2", "3.0", "1e3", "", "-0"]),
        ),
        max_size=30,
    )
)
@example(posted=[str(2**63), str(-(2**63) - 1)])  # beyond a 64-bit key: SQLite's driver cannot even bind it
def test_whatever_ids_are_posted_a_bulk_action_only_ever_acts_on_rows_of_the_users_list(people, posted):
    from django.test import RequestFactory

    from approvals import selectors
    from approvals.admin.base import selected_ids as _selected_ids
    from approvals.admin.base import unseen_ids as _unseen_ids

    mine = ingest(f"Finance {uuid.uuid4().hex[:6]}", groups=["finance-approvers"])
    ingest(f"Legal {uuid.uuid4().hex[:6]}", groups=["legal"])
    queryset = selectors.admin_requests_for(people["alice"])
    request = RequestFactory().post(CHANGELIST, {"_selected_action": [*posted, str(mine.pk)]})

    selected = _selected_ids(request, queryset)
    unseen = _unseen_ids(request, selected)

    assert set(selected) <= set(queryset.values_list("pk", flat=True))
    assert mine.pk in selected
    assert not set(selected) & set(unseen)
