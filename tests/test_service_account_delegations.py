"""Service accounts neither lend nor receive authority through a delegation (docs/security.md).

A bot's authority is what an admin gave it (docs/api.md): the email and groups that make it an
assignee, the state machines of its scope, and whether it may decide at all. Delegation is a
person's "out of office": whoever is away names who stands in. Before, a bot could set one with
its own API token (`POST /api/v1/delegations/`: everyone manages their own delegations), and the
person it named then decided the bot's requests — a read-only bot's, or outside its scope — on
every channel, because the check on service accounts asks about the person deciding, not the
account they stand in for. And a person could name a bot as their delegate: the bot decided what
no admin assigned it. Now a delegation that names a service account on either side is refused
on every channel that sets one, and one set before (nothing refused it then) lends nothing.

Real PostgreSQL, the real services, pages, admin, API (with a bot's bearer token signed by the
dev IdP's key), signed links and Slack's signed interactivity endpoint (a local stand-in for
Slack's Web API).
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvals import permissions, services
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Delegation, Notification, RequestStatus, SlackIdentity, User
from tests.support import make_user, new_request_notifications_planned, signed_in
from tests.test_admin import CHANGELIST, bulk_action, sso_user
from tests.test_admin import post as admin_post
from tests.test_api import Api, assert_problem, decision_url
from tests.test_api_tokens import api, claims_for, idp_key, sign  # noqa: F401 - fixtures
from tests.test_links import link_path
from tests.test_slack import TEAM, click, refusals, slack_api  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:orders"
OTHER_MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:payroll"
BOT_GROUP = "deploy-bots"


@pytest.fixture
def people() -> dict[str, User]:
    xavier = sso_user("xavier")  # may use the admin as an approver, like anyone who signed in
    xavier.sso_verified_at = timezone.now()  # signed in a moment ago (a Slack click needs it)
    xavier.save(update_fields=["sso_verified_at"])
    SlackIdentity.objects.create(team_id=TEAM, slack_user_id="U0XAVIER", user=xavier)
    return {
        "alice": make_user("alice", "finance-approvers"),  # a person who goes away
        "bob": make_user("bob"),  # the requester
        "carol": make_user("carol", admin=True),
        "xavier": xavier,  # whom a delegation names
    }


def save_bot(people, *, may_decide: bool = False, state_machines=(MACHINE,), issuer="https://idp.test", **changes):
    return services.service_account_save(
        actor=people["carol"],
        name="report bot",
        issuer=issuer,
        subject="report-bot-client",
        email="bot@example.com",
        groups=[BOT_GROUP],
        state_machines=list(state_machines),
        may_decide=may_decide,
        **changes,
    )


def ingest(*, users=(), groups=(BOT_GROUP,), machine=MACHINE) -> ApprovalRequest:
    body = {
        "taskToken": f"token-{uuid.uuid4()}",
        "title": "Deploy release 4711",
        "requester": "bob@example.com",
        "approvers": {"users": list(users), "groups": list(groups)},
        "details": {"release": 4711},
        "stateMachine": machine,
        "execution": f"{machine.replace(':stateMachine:', ':execution:')}:{uuid.uuid4().hex[:8]}",
    }
    request, created = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    assert created
    return request


def set_before_this_release(delegator: User, delegate: User) -> Delegation:
    """A delegation as the release before let anyone set: nothing refused a service account then."""
    now = timezone.now()
    return Delegation.objects.create(
        delegator=delegator,
        delegate=delegate,
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(days=7),
        created_by=delegator,
    )


def assert_undecided(request: ApprovalRequest) -> None:
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert not request.votes.exists()


# ---------------------------------------------------------------------------
# Setting one: refused on every channel
# ---------------------------------------------------------------------------
def test_a_service_account_cannot_set_itself_a_delegation_with_its_own_api_token(api, idp_key, people):  # noqa: F811
    account = save_bot(people, issuer=api.OIDC_OP_ISSUER)
    token = sign(claims_for(api.OIDC_OP_ISSUER, sub=account.subject), *idp_key)
    body = {"delegate_email": "xavier@example.com", "ends_at": (timezone.now() + timedelta(days=7)).isoformat()}

    response = Client().post(
        "/api/v1/delegations/", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )

    body = assert_problem(response, 403, "permission_denied")
    assert "service account" in body["detail"]
    assert not Delegation.objects.exists()
    assert not AuditEvent.objects.filter(action="delegation_set").exists()


def test_a_person_cannot_name_a_service_account_their_delegate_on_the_page_or_in_the_api(people):
    save_bot(people, may_decide=True)
    until = timezone.now() + timedelta(days=7)
    alice = signed_in(people["alice"])
    alice.get("/out-of-office/")

    page = alice.post(
        "/out-of-office/",
        {
            "delegate_email": "bot@example.com",
            "ends_at": timezone.localtime(until).strftime("%Y-%m-%dT%H:%M"),
            "csrfmiddlewaretoken": alice.cookies["portal_csrftoken"].value,
        },
    )
    assert page.status_code == 400
    assert "bot@example.com is a service account" in page.content.decode()

    body = assert_problem(
        Api(people["alice"]).post(
            "/api/v1/delegations/", {"delegate_email": "bot@example.com", "ends_at": until.isoformat()}
        ),
        400,
        "validation_error",
    )
    assert "service account" in body["detail"]
    assert not Delegation.objects.exists()


@pytest.mark.parametrize(("away", "stands_in"), [("bot", "xavier"), ("alice", "bot")], ids=["from-a-bot", "to-a-bot"])
def test_an_admin_cannot_set_a_delegation_that_names_a_service_account_either(people, away, stands_in):
    save_bot(people, may_decide=True)
    until = timezone.localtime(timezone.now() + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")
    carol = signed_in(people["carol"])

    page = admin_post(
        carol,
        "/admin/approvals/delegation/add/",
        {"delegator_email": f"{away}@example.com", "delegate_email": f"{stands_in}@example.com", "ends_at": until},
        follow=False,
    )

    assert page.status_code == 200  # the form again, with the reason
    assert "is a service account" in page.content.decode()
    assert not Delegation.objects.exists()
    with pytest.raises(services.ApprovalError):
        services.delegation_set(
            delegator=User.objects.get(email=f"{away}@example.com"),
            delegate_email=f"{stands_in}@example.com",
            ends_at=timezone.now() + timedelta(days=7),
            actor=people["carol"],
        )


# ---------------------------------------------------------------------------
# One set before: the delegate of a bot decides nothing for it, on any channel
# ---------------------------------------------------------------------------
def by_page(people, request):
    xavier = signed_in(people["xavier"])
    xavier.get("/")
    csrf = xavier.cookies["portal_csrftoken"].value
    return xavier.post(
        f"/requests/{request.public_id}/decide/", {"decision": "approve", "comment": "ok", "csrfmiddlewaretoken": csrf}
    )


def by_email_link(people, request):
    xavier = signed_in(people["xavier"])
    path = link_path(request, email="xavier@example.com")
    xavier.get(path)
    return xavier.post(path, {"comment": "ok", "csrfmiddlewaretoken": xavier.cookies["portal_csrftoken"].value})


def by_api(people, request):
    return Api(people["xavier"]).post(decision_url(request), {"decision": "approve", "comment": "ok"})


def by_admin_change_page(people, request):
    return admin_post(
        signed_in(people["xavier"]), f"{CHANGELIST}{request.pk}/decide/", {"decision": "approve", "comment": "ok"}
    )


def by_admin_bulk_action(people, request):
    return bulk_action(signed_in(people["xavier"]), "approve_selected", [request.pk], comment="ok")[1]


CHANNELS = {
    "page": by_page,
    "email-link": by_email_link,
    "api": by_api,
    "admin": by_admin_change_page,
    "admin-bulk": by_admin_bulk_action,
}


@pytest.mark.parametrize("channel", CHANNELS)
def test_the_delegate_of_a_read_only_service_account_decides_nothing_for_it(people, channel):
    account = save_bot(people, may_decide=False)
    request = ingest()
    set_before_this_release(account.user, people["xavier"])
    assert permissions.decision_refusal(account.user, request).code == "service_account_read_only"

    CHANNELS[channel](people, request)

    assert_undecided(request)
    assert permissions.decision_refusal(people["xavier"], request).code == "not_assignee"


def test_the_delegate_of_a_read_only_service_account_decides_nothing_for_it_from_slack(
    people,
    slack_api,  # noqa: F811
    celery_eager,  # noqa: F811
):
    account = save_bot(people, may_decide=False)
    request = ingest()
    set_before_this_release(account.user, people["xavier"])

    click(slack_api, request, user="U0XAVIER")

    assert refusals() == [("not_assignee", "slack")]
    assert_undecided(request)


@pytest.mark.parametrize(
    "bot",
    [
        {"may_decide": True, "state_machines": [OTHER_MACHINE]},  # it may decide, but not this workflow
        {"may_decide": True, "state_machines": [MACHINE]},  # it may decide this: still its own to decide
    ],
    ids=["out-of-scope", "in-scope"],
)
def test_the_delegate_of_a_service_account_that_may_decide_decides_nothing_for_it_either(people, bot):
    account = save_bot(people, **bot)
    request = ingest()
    set_before_this_release(account.user, people["xavier"])

    by_page(people, request)

    assert_undecided(request)


def test_the_delegate_of_a_service_account_neither_sees_its_requests_nor_hears_of_them(people, settings):
    settings.NOTIFICATION_EMAIL_ENABLED = True
    account = save_bot(people, may_decide=False)
    set_before_this_release(account.user, people["xavier"])
    request = ingest()
    new_request_notifications_planned()

    recipients = set(Notification.objects.filter(request=request).values_list("recipient", flat=True))
    assert "xavier@example.com" not in recipients
    xavier = signed_in(people["xavier"])
    assert "Deploy release 4711" not in xavier.get("/").content.decode()
    assert xavier.get(f"/requests/{request.public_id}/").status_code == 404
    assert Api(people["xavier"]).get("/api/v1/inbox/").json()["results"] == []
    assert not permissions.can_view(people["xavier"], request)


def test_a_vote_cast_for_a_service_account_before_this_release_is_withdrawn_at_the_callback_check(people):
    account = save_bot(people, may_decide=False)
    request = ingest()
    set_before_this_release(account.user, people["xavier"])
    vote = request.votes.create(
        user=people["xavier"], on_behalf_of=account.user, approve=True, group=BOT_GROUP, created_at=timezone.now()
    )

    assert permissions.vote_refusal(vote, request).code == "not_assignee"


# ---------------------------------------------------------------------------
# The mirror: a person's delegation to a bot gives the bot nothing
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bot", "code"),
    [
        ({"may_decide": False}, "service_account_read_only"),  # refused before too: the bot is who decides
        ({"may_decide": True, "state_machines": [OTHER_MACHINE]}, "service_account_out_of_scope"),  # so was this
        ({"may_decide": True}, "not_assignee"),  # decided before: no admin assigned the bot alice's requests
    ],
    ids=["read-only", "out-of-scope", "may-decide"],
)
def test_a_service_account_named_a_persons_delegate_decides_none_of_their_requests(people, bot, code):
    account = save_bot(people, **bot)
    request = ingest(users=["alice@example.com"], groups=[])
    set_before_this_release(people["alice"], account.user)

    assert permissions.decision_refusal(account.user, request).code == code
    Api(account.user).post(decision_url(request), {"decision": "approve"})

    assert_undecided(request)
    assert permissions.decision_refusal(people["alice"], request) is None  # alice herself still decides


def test_a_persons_delegate_is_unaffected(people):
    # The control: between people a delegation lends as before.
    request = ingest(users=["alice@example.com"], groups=[])
    services.delegation_set(
        delegator=people["alice"],
        delegate_email="xavier@example.com",
        ends_at=timezone.now() + timedelta(days=7),
        actor=people["alice"],
    )

    assert by_page(people, request).status_code == 302
    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED and request.votes.get().on_behalf_of == people["alice"]
