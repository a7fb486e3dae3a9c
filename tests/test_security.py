"""Security properties of the pages and the configuration."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import Client

from approvals import links, services
from approvals.contract import parse_message
from approvals.models import AuditEvent, Callback, RequestStatus
from tests.support import make_user, signed_in

REPO_DIR = Path(__file__).resolve().parent.parent

SCRIPT = "<script>alert('xss')</script>"
ATTRIBUTE = '" onmouseover="alert(1)" x="'
IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture
def hostile_request(db):
    body = {
        "taskToken": "tok-hostile-0001",
        "title": f"Order {SCRIPT} {ATTRIBUTE}",
        "requester": "bob@example.com",
        "approvers": {"users": ["alice@example.com"], "groups": [f"grp{IMG}"]},
        "details": {IMG: SCRIPT, "link": f"javascript:alert(1){ATTRIBUTE}", "nested": [{"k": IMG}]},
    }
    return services.approval_request_ingest(message=parse_message(json.dumps(body)))[0]


def assert_inert(html: str) -> None:
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert 'onmouseover="alert(1)"' not in html
    assert "&lt;script&gt;alert(" in html or "&lt;script&gt;alert(&#x27;xss&#x27;)" in html


def test_script_and_attribute_payloads_render_inert_in_inbox_and_detail(hostile_request):
    client = signed_in(make_user("alice"))

    inbox = client.get("/").content.decode()
    detail = client.get(f"/requests/{hostile_request.public_id}/").content.decode()

    assert_inert(inbox)
    assert_inert(detail)
    assert "&lt;img src=x onerror=alert(1)&gt;" in detail


def test_script_and_attribute_payloads_render_inert_in_the_admin(hostile_request):
    client = signed_in(make_user("carol", "portal-admins", admin=True))

    listing = client.get("/admin/approvals/approvalrequest/").content.decode()
    change = client.get(f"/admin/approvals/approvalrequest/{hostile_request.pk}/change/").content.decode()

    assert_inert(listing)
    assert_inert(change)


def test_an_admin_without_an_assignment_cannot_decide(db, hostile_request):
    carol = make_user("carol", "portal-admins", admin=True)
    client = signed_in(carol)
    client.get("/")

    response = client.post(
        f"/requests/{hostile_request.public_id}/decide/",
        {"decision": "approve", "csrfmiddlewaretoken": client.cookies["portal_csrftoken"].value},
    )

    assert response.status_code == 403
    hostile_request.refresh_from_db()
    assert hostile_request.status == RequestStatus.PENDING
    assert not Callback.objects.exists()
    assert AuditEvent.objects.get(action="decision_refused", actor=carol).data["code"] == "not_assignee"


def test_a_cross_site_post_without_csrf_is_refused(hostile_request):
    client = signed_in(make_user("alice"))

    response = client.post(
        f"/requests/{hostile_request.public_id}/decide/",
        {"decision": "approve"},
        HTTP_ORIGIN="https://evil.example",
    )

    assert response.status_code == 403
    hostile_request.refresh_from_db()
    assert hostile_request.status == RequestStatus.PENDING


def test_a_post_after_the_sign_in_window_goes_back_to_the_page_instead_of_deciding(hostile_request):
    client = signed_in(make_user("alice"))
    client.get("/")
    session = client.session
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()
    detail = f"/requests/{hostile_request.public_id}/"

    response = client.post(
        f"{detail}decide/",
        {"decision": "approve", "csrfmiddlewaretoken": client.cookies["portal_csrftoken"].value},
        HTTP_REFERER=f"http://testserver{detail}",
    )

    assert response.status_code == 303
    assert response["Location"] == f"http://testserver{detail}"
    hostile_request.refresh_from_db()
    assert hostile_request.status == RequestStatus.PENDING


# Each of these reached PostgreSQL with the NUL character and answered 500 (a DataError), the
# admin's own filters (Django's, for a field's choices) too.
@pytest.mark.parametrize(
    "query",
    [
        "/admin/approvals/approvalrequest/?machine=a%00b",
        "/admin/approvals/approvalrequest/?group=%00",
        "/admin/approvals/approvalrequest/?status__exact=pending%00",
        "/admin/approvals/auditevent/?action=%00",
        "/admin/approvals/callback/?status__exact=%00",
        "/admin/approvals/notification/?channel__exact=%00",
        "/admin/approvals/approvalrequest/?q=supplier%00",
        "/?machine=%00",
        "/admin/approvals/approvalrequest/?%00=1",
        "/links/a%00b/",
    ],
)
def test_a_nul_character_in_a_url_is_a_bad_request_not_a_server_error(db, query):
    client = signed_in(make_user("carol", "portal-admins", admin=True))
    response = client.get(query)
    assert response.status_code == 400
    assert "NUL character" in response.content.decode()


def test_a_nul_character_in_an_api_or_scim_url_is_an_error_in_their_own_shape(db):
    client = signed_in(make_user("carol", "portal-admins", admin=True))
    response = client.get("/api/v1/audit-events/?actor=%00")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "bad_request"

    scim = Client().get('/scim/v2/Users?filter=userName eq "a%00"')
    assert scim.status_code == 400
    assert scim["Content-Type"].startswith("application/scim+json")
    assert scim.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_sign_in_never_redirects_off_site(db):
    response = Client().get("/signin/?next=https://evil.example/")

    html = response.content.decode()
    assert "evil.example" not in html
    assert "/oidc/authenticate/?next=%2F" in html


def test_pages_send_security_headers(db):
    response = Client().get("/signin/")

    assert response["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_pages_that_show_a_request_are_never_stored_by_the_browser(hostile_request):
    """After "Sign out" on a shared computer, Back (or the browser's disk cache) must not show
    the next person what the request said, nor whose it was."""
    client = signed_in(make_user("alice"))
    request_path = f"/requests/{hostile_request.public_id}/"
    link = links.make_link_token(
        public_id=hostile_request.public_id, approver_email="alice@example.com", action="approve"
    )
    pages = [
        "/",
        request_path,
        f"{request_path}result/",
        f"{request_path}details/",
        f"{request_path}details/?format=json",
        f"/links/{link}/",
        "/out-of-office/",
        "/preferences/",
    ]

    responses = {path: client.get(path) for path in pages}
    responses["the confirm page"] = client.post(
        f"{request_path}confirm/",
        {"decision": "approve", "csrfmiddlewaretoken": client.cookies["portal_csrftoken"].value},
    )

    for page, response in responses.items():
        assert response.status_code == 200, page
        cache_control = {part.strip() for part in response.get("Cache-Control", "").split(",")}
        assert {"no-store", "private"} <= cache_control, (page, response.get("Cache-Control"))


def test_production_settings_pass_check_deploy_without_warnings(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "PORTAL_ENV": "production",
        "DJANGO_SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-" + "9" * 20,
        "DJANGO_ALLOWED_HOSTS": "approvals.example.com",
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "TOKEN_FINGERPRINT_KEY": "0123456789abcdef-fingerprint",
        "OIDC_OP_ISSUER": "https://idp.example.com",
        "OIDC_RP_CLIENT_ID": "approval-portal",
        "OIDC_RP_CLIENT_SECRET": "client-secret",
        "APPROVAL_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/approval-requests",
        # One cache for every process (throttles, the API's token caches): without it check --deploy warns.
        "CACHE_URL": "redis://127.0.0.1:6379/11",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_its_secrets():
    env = {"PATH": os.environ["PATH"], "PORTAL_ENV": "production"}

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
