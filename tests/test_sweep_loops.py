"""Beat's loops over many items: one item that breaks never costs the others their turn.

Raised out of a loop, a bug in one item (or data no check foresaw) cost every item after it,
round after round: the next round met the same item first again. Here the fault is simulated
with pytest's monkeypatch on the service the loop calls, for one item only: no real request is
known to break these services, and none can be made on demand. The rest is real (the database,
the services themselves for the other items).
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import services, tokens
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, RequestStatus
from approvals.tasks import erase_closed_tokens, expire_overdue_requests, send_heartbeats
from tests.support import breaking_for

pytestmark = pytest.mark.django_db


def ingest(title: str, **fields) -> ApprovalRequest:
    body = {"taskToken": str(uuid.uuid4()), "title": title, "requester": "bob@example.com", **fields}
    request, created = services.approval_request_ingest(message=parse_message(json.dumps(body)))
    assert created
    return request


def breaks_for(monkeypatch, name: str, broken: ApprovalRequest, *, otherwise=None) -> list[int]:
    """`services.<name>` raises for `broken` (a simulated bug); the ids it was called with."""
    called: list[int] = []

    def is_broken(*, request_id, **_) -> bool:
        called.append(request_id)
        return request_id == broken.pk

    monkeypatch.setattr(services, name, breaking_for(otherwise or getattr(services, name), is_broken))
    return called


def test_a_request_whose_expiry_breaks_never_keeps_the_others_waiting_past_their_deadline(monkeypatch, caplog):
    broken, overdue = ingest("Broken"), ingest("Overdue")
    ApprovalRequest.objects.filter(pk=broken.pk).update(deadline=timezone.now() - timedelta(hours=2))
    ApprovalRequest.objects.filter(pk=overdue.pk).update(deadline=timezone.now() - timedelta(hours=1))
    breaks_for(monkeypatch, "approval_expire", broken)  # the broken one is first: its deadline is older

    assert expire_overdue_requests() == 1

    assert ApprovalRequest.objects.get(pk=overdue.pk).status == RequestStatus.EXPIRED
    assert ApprovalRequest.objects.get(pk=broken.pk).status == RequestStatus.PENDING  # the next round tries again
    assert f"expiring request {broken.pk} failed; the others go on" in caplog.text


def test_a_request_whose_heartbeat_breaks_never_costs_the_others_theirs(monkeypatch, caplog):
    """A missed heartbeat fails the execution (States.HeartbeatTimeout): one broken request must
    not cost every other waiting task its heartbeats."""
    broken, waiting = ingest("Broken", heartbeatSeconds=60), ingest("Waiting", heartbeatSeconds=60)
    ApprovalRequest.objects.update(received_at=timezone.now() - timedelta(minutes=5))
    called = breaks_for(monkeypatch, "heartbeat_send", broken, otherwise=lambda **_: None)

    assert send_heartbeats() == 0  # the other's heartbeat_send answered "nothing to send" (no AWS here)

    assert sorted(called) == sorted([broken.pk, waiting.pk])
    assert f"the heartbeat of request {broken.pk} failed; the others go on" in caplog.text


def test_a_token_whose_erasure_breaks_never_keeps_the_others_past_their_retention(monkeypatch, settings, caplog):
    settings.TOKEN_RETENTION_DAYS = 30
    broken, closed = ingest("Broken"), ingest("Closed")
    ApprovalRequest.objects.filter(pk=broken.pk).update(
        status=RequestStatus.REJECTED, decided_at=timezone.now() - timedelta(days=41)
    )
    ApprovalRequest.objects.filter(pk=closed.pk).update(
        status=RequestStatus.REJECTED, decided_at=timezone.now() - timedelta(days=40)
    )
    breaks_for(monkeypatch, "approval_token_erase", broken)

    assert erase_closed_tokens() == 1

    assert ApprovalRequest.objects.get(pk=closed.pk).token_ciphertext == tokens.ERASED
    assert ApprovalRequest.objects.get(pk=broken.pk).token_ciphertext != tokens.ERASED
    assert f"erasing the token of request {broken.pk} failed; the others go on" in caplog.text
