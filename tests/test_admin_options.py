"""The admin for requests with options and a form: the change page shows the options, the form
and each vote's choice and answers; bulk approve/reject decides a request with options only when
the action means exactly one of them, and never one whose form needs input (approvals/one_click.py).
"""

import pytest

from approvals import services
from approvals.models import ApprovalRequest, AuditEvent, Callback, RequestStatus, Vote
from tests.test_admin import CHANGELIST, bulk_action, client_for, ingest, messages_of, post, sso_user

pytestmark = pytest.mark.django_db

OPTIONS = [
    {"id": "eu", "label": "Deploy to EU", "outcome": "success"},
    {"id": "us", "label": "Deploy to US", "outcome": "success"},
    {"id": "postpone", "label": "Not this week", "outcome": "failure", "error": "Release.Postponed"},
]
ONE_EACH = [
    {"id": "ship", "label": "Ship it", "outcome": "success"},
    {"id": "hold", "label": "Hold", "outcome": "failure", "error": "Release.Held"},
]
REQUIRED_FORM = {
    "type": "object",
    "title": "Release details",
    "required": ["version"],
    "properties": {
        "version": {"type": "string", "title": "Version", "pattern": "^v[0-9]+$", "maxLength": 16},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 50},
        "note": {"type": "string", "maxLength": 200},
    },
}
OPTIONAL_FORM = {k: v for k, v in REQUIRED_FORM.items() if k != "required"}


@pytest.fixture
def people(db):
    return {
        "alice": sso_user("alice", "release-approvers"),
        "erin": sso_user("erin", "release-approvers"),
        "carol": sso_user("carol", "portal-admins", "release-approvers"),
    }


def release(title: str, **fields) -> ApprovalRequest:
    return ingest(title, groups=["release-approvers"], **fields)


def refusal_codes() -> list[str]:
    return list(AuditEvent.objects.filter(action="decision_refused").values_list("data__code", flat=True))


# ---------------------------------------------------------------------------
# The change page
# ---------------------------------------------------------------------------
def test_the_change_page_shows_options_form_and_each_votes_choice_and_answers_escaped_never_the_token(people):
    request = release("Release 2.4", options=OPTIONS, form=OPTIONAL_FORM, policy={"required": 2})
    services.approval_decide(
        public_id=request.public_id,
        user=people["erin"],
        choice=["us"],
        answers={"version": "v24", "note": "<script>alert(1)</script>"},
    )

    page = client_for(people["carol"]).get(f"{CHANGELIST}{request.pk}/change/").content.decode()

    for text in ("<code>eu</code>", "Deploy to EU", "<code>postpone</code>", "Release.Postponed", "failure"):
        assert text in page
    for text in ("<code>version</code>", "pattern &quot;^v[0-9]+$&quot;", "maxLength 16", "minimum 1, maximum 50"):
        assert text in page
    assert page.index("<code>version</code>") < page.index("<code>replicas</code>") < page.index("<code>note</code>")
    assert "— chose “Deploy to US” (us)" in page
    assert "version = &quot;v24&quot;" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "token-" not in page and "taskToken" not in page


def test_the_change_page_offers_a_button_per_option_and_decides_with_the_one_clicked(people):
    request = release("Release 2.4", options=OPTIONS)
    alice = client_for(people["alice"])

    page = alice.get(f"{CHANGELIST}{request.pk}/change/").content.decode()
    assert 'name="option" value="eu"' in page and 'name="option" value="postpone"' in page
    assert 'value="approve"' not in page  # no plain approve/reject for a request with options

    refused = post(alice, f"{CHANGELIST}{request.pk}/decide/", {"option": "postpone", "comment": ""})
    assert any("Say why" in note for note in messages_of(refused))
    post(alice, f"{CHANGELIST}{request.pk}/decide/", {"option": "us", "comment": ""})

    request.refresh_from_db()
    assert request.status == RequestStatus.APPROVED
    assert Vote.objects.get(request=request).choice == ["us"]


def test_a_required_form_sends_the_admin_to_the_request_page(people):
    request = release("Release 2.4", options=OPTIONS, form=REQUIRED_FORM)

    page = client_for(people["alice"]).get(f"{CHANGELIST}{request.pk}/change/").content.decode()

    assert 'name="option"' not in page and 'value="approve"' not in page
    assert f'href="/requests/{request.public_id}/">decide on its page</a>' in page


def test_posting_an_option_of_another_request_on_the_change_page_decides_nothing(people):
    request = release("Release 2.4", options=OPTIONS)
    release("Other", options=ONE_EACH)
    alice = client_for(people["alice"])

    refused = post(alice, f"{CHANGELIST}{request.pk}/decide/", {"option": "ship", "comment": ""})

    assert messages_of(refused) and ApprovalRequest.objects.get(pk=request.pk).status == RequestStatus.PENDING
    assert refusal_codes() == ["choice_invalid"]


# ---------------------------------------------------------------------------
# Bulk decide
# ---------------------------------------------------------------------------
def test_bulk_approve_decides_only_requests_where_approve_means_exactly_one_option_without_input(people):
    plain = release("Plain")
    one_each = release("One each", options=ONE_EACH)
    optional_form = release("Optional form", options=ONE_EACH, form=OPTIONAL_FORM)
    two_success = release("Two success", options=OPTIONS)
    required_form = release("Required form", options=ONE_EACH, form=REQUIRED_FORM)
    plain_required = release("Plain, required form", form=REQUIRED_FORM)
    ids = [plain.pk, one_each.pk, optional_form.pk, two_success.pk, required_form.pk, plain_required.pk]

    _, done = bulk_action(client_for(people["alice"]), "approve_selected", ids, comment="batch")

    statuses = dict(ApprovalRequest.objects.values_list("title", "status"))
    assert statuses == {
        "Plain": RequestStatus.APPROVED,
        "One each": RequestStatus.APPROVED,
        "Optional form": RequestStatus.APPROVED,
        "Two success": RequestStatus.PENDING,
        "Required form": RequestStatus.PENDING,
        "Plain, required form": RequestStatus.PENDING,
    }
    assert Vote.objects.get(request=one_each).choice == ["ship"]
    notes = messages_of(done)
    assert any(note.startswith("Approved 3:") for note in notes)
    assert (
        f"Not approved: “Two success” (#{two_success.pk}) — It offers 2 success options (“Deploy to EU”, "
        "“Deploy to US”), not one: choose on its page." in notes
    )
    needs_page = "Its form has required fields: approve it on its page, where the form is."
    assert f"Not approved: “Required form” (#{required_form.pk}) — {needs_page}" in notes
    assert f"Not approved: “Plain, required form” (#{plain_required.pk}) — {needs_page}" in notes
    assert sorted(refusal_codes()) == ["needs_input", "needs_input", "option_ambiguous"]
    assert not Callback.objects.filter(request__in=[two_success, required_form, plain_required]).exists()


def test_bulk_reject_picks_the_only_failure_option_and_sends_its_error_even_with_a_required_form(people):
    one_each = release("One each", options=ONE_EACH, form=REQUIRED_FORM)
    two_failures = release(
        "Two failures",
        options=[*ONE_EACH, {"id": "never", "label": "Never", "outcome": "failure", "error": "Release.Never"}],
    )

    _, done = bulk_action(client_for(people["alice"]), "reject_selected", [one_each.pk, two_failures.pk], comment="no")

    one_each.refresh_from_db()
    assert one_each.status == RequestStatus.REJECTED
    assert Callback.objects.get(request=one_each).payload["error"] == "Release.Held"
    assert ApprovalRequest.objects.get(pk=two_failures.pk).status == RequestStatus.PENDING
    assert any("It offers 2 failure options (“Hold”, “Never”)" in note for note in messages_of(done))


def test_an_admin_cannot_bulk_decide_their_own_request_with_options(people):
    own = ingest("Own release", groups=["release-approvers"], requester="carol@example.com", options=ONE_EACH)

    _, done = bulk_action(client_for(people["carol"]), "approve_selected", [own.pk], comment="mine")

    assert ApprovalRequest.objects.get(pk=own.pk).status == RequestStatus.PENDING
    assert any(note.startswith("Not approved: “Own release”") for note in messages_of(done))
    assert refusal_codes() == ["requester"]
