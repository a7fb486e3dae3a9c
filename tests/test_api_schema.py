"""The API against its own OpenAPI schema: the schema is valid OpenAPI 3 (openapi-spec-validator),
and schemathesis, against the live portal (gunicorn and a worker, real dev-IdP tokens), finds no
5xx and no answer that its schema does not describe — as an approver and as an admin."""

import json
import uuid

import pytest
import requests
import schemathesis
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from approvals import services
from approvals.contract import ContractError, parse_message
from tests.support import sso_login, user_access_token

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 12


def test_the_schema_is_valid_openapi_3():
    schema = SchemaGenerator().get_schema(request=None, public=True)

    validate(json.loads(json.dumps(schema)))
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    assert {"/api/v1/inbox/", "/api/v1/requests/{public_id}/decision/", "/api/v1/audit-events/"} <= paths
    assert all(path.startswith("/api/v1/") for path in paths)


@pytest.mark.django_db
def test_the_schema_and_its_ui_are_served_from_the_portal_nothing_from_a_cdn():
    schema = Client().get("/api/schema/")
    assert schema.status_code == 200 and b"openapi: 3" in schema.content

    for page in ("/api/docs/", "/api/redoc/"):
        html = Client().get(page).content.decode()
        assert "drf_spectacular_sidecar" in html, page
        assert "cdn." not in html and "unpkg" not in html, page
        assert "<script>" not in html, f"{page}: an inline script, which the portal's CSP blocks"


def _ingest(requester: str, groups: list[str]) -> str:
    body = {
        "taskToken": f"token-{uuid.uuid4()}",
        "title": f"Order {uuid.uuid4().hex[:6]} — 5.300 € <b>",
        "requester": requester,
        "approvers": {"users": [], "groups": groups},
        "details": {"order": {"id": 1, "lines": [{"item": "Laptop"}]}},
    }
    request, _ = services.approval_request_ingest(
        message=parse_message(json.dumps(body)), sqs_message_id=str(uuid.uuid4())
    )
    return str(request.public_id)


def fuzz(operation, *, url: str, headers: dict, path_parameters: dict | None) -> None:
    """Bounded schemathesis examples of one operation against the live server, every check on."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(path_parameters=path_parameters))
    def run(case):
        case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=30)

    run()


@pytest.mark.e2e
@pytest.mark.portal_env(API_THROTTLE_USER="100000/minute")
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(portal_stack, devidp):
    url = portal_stack["url"]
    callback = f"{url}/oidc/callback/"
    tokens = {}
    for username in ("alice", "carol"):
        sso_login(url, username)  # their portal accounts, keyed by the IdP's (iss, sub)
        tokens[username] = user_access_token(devidp, username, callback)
    request_ids = [_ingest("bob@example.com", ["finance-approvers"]) for _ in range(3)]
    services.ingest_error_record(
        sqs_message_id="schemathesis-1", error=ContractError("not_json", "Not JSON"), body="{oops"
    )

    schema = schemathesis.openapi.from_url(f"{url}/api/schema/", timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    tried = 0
    for token in tokens.values():
        headers = {"Authorization": f"Bearer {token}"}
        for operation in operations:
            fixed = {"public_id": request_ids[0]} if "{public_id}" in operation.path else None
            for path_parameters in (None, fixed) if fixed else (None,):
                fuzz(operation, url=url, headers=headers, path_parameters=path_parameters)
                tried += 1
    assert tried >= 2 * len(operations)
    inbox = requests.get(f"{url}/api/v1/inbox/", headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=30)
    assert len(inbox.json()["results"]) >= 1  # the runs above read real rows, not only empty lists
    log = portal_stack["web"].output()
    assert "Traceback" not in log
    assert not [token for token in tokens.values() if token in log or token.rsplit(".", 1)[1] in log]
