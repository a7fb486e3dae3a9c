"""Task tokens over time: fingerprint-key rotation, `rotate_token_keys` robustness, and retention.

Real parts: PostgreSQL; the callback and heartbeat paths run in-process without any AWS
endpoint at all, so a call that reached for an erased token would fail the test loudly.
"""

import json
import uuid
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.utils import timezone

from approvals import selectors, services, tokens
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent, Callback, CallbackStatus, RequestStatus, User
from approvals.services.common import ApprovalError
from approvals.tasks import deliver_callback, erase_closed_tokens, send_heartbeats
from portal.celery import app as celery_app

pytestmark = pytest.mark.django_db

OLD_FINGERPRINT_KEY = "old-fingerprint-key-0123456789"
NEW_FINGERPRINT_KEY = "new-fingerprint-key-9876543210"


def message(token: str, **fields) -> str:
    return json.dumps({"taskToken": token, "title": "Approve order 7", "approvers": {"groups": ["finance"]}, **fields})


def ingest(token: str | None = None, **fields) -> ApprovalRequest:
    request, created = services.approval_request_ingest(message=parse_message(message(token or str(uuid.uuid4()))))
    assert created
    return request


@pytest.fixture
def alice() -> User:
    user = User.objects.create(username="alice", email="alice@example.com", oidc_sub="sub-alice", oidc_issuer="x")
    user.groups.add(Group.objects.create(name="finance"))
    return user


# ---------------------------------------------------------------------------
# Fingerprint-key rotation
# ---------------------------------------------------------------------------
def test_a_token_ingested_under_the_old_fingerprint_key_is_still_a_duplicate_after_rotation(settings):
    settings.TOKEN_FINGERPRINT_KEYS = [OLD_FINGERPRINT_KEY]
    first = ingest("token-before-rotation")
    settings.TOKEN_FINGERPRINT_KEYS = [NEW_FINGERPRINT_KEY, OLD_FINGERPRINT_KEY]  # new key deployed first

    again, created = services.approval_request_ingest(message=parse_message(message("token-before-rotation")))

    assert not created
    assert again.pk == first.pk
    assert ApprovalRequest.objects.count() == 1


def test_rotation_moves_fingerprints_to_the_new_key_so_the_old_key_can_be_dropped(settings):
    settings.TOKEN_FINGERPRINT_KEYS = [OLD_FINGERPRINT_KEY]
    first = ingest("token-to-move")
    settings.TOKEN_FINGERPRINT_KEYS = [NEW_FINGERPRINT_KEY, OLD_FINGERPRINT_KEY]

    call_command("rotate_token_keys")
    settings.TOKEN_FINGERPRINT_KEYS = [NEW_FINGERPRINT_KEY]  # old key dropped

    again, created = services.approval_request_ingest(message=parse_message(message("token-to-move")))
    assert (again.pk, created) == (first.pk, False)
    assert AuditEvent.objects.get(action="token_keys_rotated").data["refingerprinted"] == 1


def test_a_new_token_after_rotation_gets_the_new_keys_fingerprint(settings):
    settings.TOKEN_FINGERPRINT_KEYS = [NEW_FINGERPRINT_KEY, OLD_FINGERPRINT_KEY]

    request = ingest("fresh-token")

    assert request.token_fingerprint == tokens._fingerprint(NEW_FINGERPRINT_KEY, "fresh-token")


def test_rotate_token_keys_skips_and_reports_a_row_no_key_can_decrypt_and_rotates_the_others(settings, capsys):
    old_key = settings.TOKEN_ENCRYPTION_KEYS[0]
    before = ingest("readable-before")
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # a key that is gone by now
    lost = ingest("unreadable")
    settings.TOKEN_ENCRYPTION_KEYS = [old_key]
    after = ingest("readable-after")
    new_key = Fernet.generate_key().decode()
    settings.TOKEN_ENCRYPTION_KEYS = [new_key, old_key]
    lost_ciphertext = ApprovalRequest.objects.get(pk=lost.pk).token_ciphertext

    with pytest.raises(CommandError, match="1 request"):
        call_command("rotate_token_keys")

    assert f"skipped request {lost.public_id}" in capsys.readouterr().err
    settings.TOKEN_ENCRYPTION_KEYS = [new_key]  # the rows on both sides of it were rotated
    assert tokens.decrypt_token(ApprovalRequest.objects.get(pk=before.pk).token_ciphertext) == "readable-before"
    assert tokens.decrypt_token(ApprovalRequest.objects.get(pk=after.pk).token_ciphertext) == "readable-after"
    assert ApprovalRequest.objects.get(pk=lost.pk).token_ciphertext == lost_ciphertext  # left as it was
    run = AuditEvent.objects.get(action="token_keys_rotated").data
    assert run["count"] == 2
    assert run["skipped"] == [{"request": str(lost.public_id), "reason": run["skipped"][0]["reason"]}]
    assert "TOKEN_ENCRYPTION_KEYS" in run["skipped"][0]["reason"]
    assert AuditEvent.objects.filter(request=lost, action="token_key_rotation_skipped").exists()


def test_rotate_token_keys_skips_a_row_whose_ciphertext_is_not_fernet_at_all(settings):
    ingest("good")
    broken = ingest("broken")
    ApprovalRequest.objects.filter(pk=broken.pk).update(token_ciphertext="not a fernet token ✗")

    report = services.token_keys_rotate()

    assert report.rotated == 1
    assert [public_id for public_id, _ in report.skipped] == [str(broken.public_id)]


def test_rotation_in_small_batches_reaches_every_row(settings):
    requests = [ingest() for _ in range(5)]
    new_key = Fernet.generate_key().decode()
    settings.TOKEN_ENCRYPTION_KEYS = [new_key, settings.TOKEN_ENCRYPTION_KEYS[0]]

    report = services.token_keys_rotate(batch_size=2)

    settings.TOKEN_ENCRYPTION_KEYS = [new_key]
    assert report.rotated == 5
    for request in requests:
        tokens.decrypt_token(ApprovalRequest.objects.get(pk=request.pk).token_ciphertext)


# ---------------------------------------------------------------------------
# Retention: tokens of closed requests are erased
# ---------------------------------------------------------------------------
def closed(alice: User, *, days_ago: float, delivered: bool = True) -> ApprovalRequest:
    """A request approved `days_ago`, its callback delivered (or still pending)."""
    request = ingest()
    services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    ApprovalRequest.objects.filter(pk=request.pk).update(decided_at=timezone.now() - timedelta(days=days_ago))
    if delivered:
        Callback.objects.filter(request=request).update(status=CallbackStatus.DELIVERED)
    return ApprovalRequest.objects.get(pk=request.pk)


def test_the_retention_sweep_erases_the_token_of_an_old_closed_request_and_keeps_the_request_and_its_trail(
    settings, alice
):
    settings.TOKEN_RETENTION_DAYS = 30
    old = closed(alice, days_ago=31)
    trail = list(AuditEvent.objects.filter(request=old).values_list("action", flat=True))

    assert erase_closed_tokens() == 1

    old.refresh_from_db()
    assert tokens.is_erased(old.token_ciphertext)
    assert old.status == RequestStatus.APPROVED and old.title == "Approve order 7"
    actions = list(AuditEvent.objects.filter(request=old).values_list("action", flat=True))
    assert actions == [*trail, "token_erased"]
    assert AuditEvent.objects.get(request=old, action="token_erased").data["retention_days"] == 30


def test_the_retention_sweep_leaves_pending_recent_and_in_flight_requests_alone(settings, alice):
    settings.TOKEN_RETENTION_DAYS = 30
    pending = ingest()
    ApprovalRequest.objects.filter(pk=pending.pk).update(received_at=timezone.now() - timedelta(days=90))
    recent = closed(alice, days_ago=29)
    in_flight = closed(alice, days_ago=60, delivered=False)  # its callback may still be sent

    assert erase_closed_tokens() == 0

    for request in (pending, recent, in_flight):
        assert not tokens.is_erased(ApprovalRequest.objects.get(pk=request.pk).token_ciphertext)


def test_retention_zero_keeps_tokens_forever(settings, alice):
    settings.TOKEN_RETENTION_DAYS = 0
    old = closed(alice, days_ago=3650)

    assert erase_closed_tokens() == 0
    assert not tokens.is_erased(ApprovalRequest.objects.get(pk=old.pk).token_ciphertext)


def test_erasing_twice_is_harmless(settings, alice):
    settings.TOKEN_RETENTION_DAYS = 1
    old = closed(alice, days_ago=2)

    assert services.approval_token_erase(request_id=old.pk) is True
    assert services.approval_token_erase(request_id=old.pk) is False
    assert AuditEvent.objects.filter(request=old, action="token_erased").count() == 1


def test_the_same_message_arriving_after_erasure_is_still_a_duplicate(settings, alice):
    settings.TOKEN_RETENTION_DAYS = 1
    request = ingest("redelivered-long-after")
    services.approval_decide(public_id=request.public_id, user=alice, approve=True)
    Callback.objects.filter(request=request).update(status=CallbackStatus.DELIVERED)
    ApprovalRequest.objects.filter(pk=request.pk).update(decided_at=timezone.now() - timedelta(days=2))
    erase_closed_tokens()

    again, created = services.approval_request_ingest(message=parse_message(message("redelivered-long-after")))

    assert (again.pk, created) == (request.pk, False)


def test_a_callback_for_an_erased_token_fails_cleanly_without_calling_aws(settings, alice):
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens: a call would be a transient error
    old = closed(alice, days_ago=400)
    services.approval_token_erase(request_id=old.pk)
    callback = Callback.objects.get(request=old)
    Callback.objects.filter(pk=callback.pk).update(status=CallbackStatus.PENDING)  # e.g. a stale sweep

    assert deliver_callback(callback.pk) == "nothing-to-send"

    callback.refresh_from_db()
    assert (callback.status, callback.error_code, callback.attempts) == (CallbackStatus.FAILED, "token_erased", 0)


def test_an_admin_cannot_retry_the_callback_of_an_erased_token(settings, alice):
    old = closed(alice, days_ago=400)
    services.approval_token_erase(request_id=old.pk)
    Callback.objects.filter(request=old).update(status=CallbackStatus.FAILED)
    admin = User.objects.create(username="root", email="root@example.com", is_superuser=True, is_staff=True)

    with pytest.raises(ApprovalError) as refused:
        services.callback_retry(callback_id=Callback.objects.get(request=old).pk, actor=admin)

    assert refused.value.code == "token_erased"
    assert Callback.objects.get(request=old).status == CallbackStatus.FAILED


def test_heartbeats_never_reach_for_an_erased_token(settings, alice):
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:9"
    old = closed(alice, days_ago=400)
    ApprovalRequest.objects.filter(pk=old.pk).update(heartbeat_seconds=60)
    services.approval_token_erase(request_id=old.pk)

    assert old.pk not in selectors.heartbeat_due_request_ids()
    assert services.heartbeat_send(request_id=old.pk) is None
    assert send_heartbeats() == 0


def test_rotation_counts_erased_tokens_and_leaves_them_erased(settings, alice):
    old = closed(alice, days_ago=400)
    services.approval_token_erase(request_id=old.pk)
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), settings.TOKEN_ENCRYPTION_KEYS[0]]

    report = services.token_keys_rotate()

    assert (report.erased, report.skipped) == (1, [])
    assert tokens.is_erased(ApprovalRequest.objects.get(pk=old.pk).token_ciphertext)


def test_the_retention_sweep_is_in_the_beat_schedule_and_registered_with_celery(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE.values()
    entries = [entry for entry in schedule if entry["task"] == "worker.tasks.erase_closed_tokens"]

    assert len(entries) == 1
    assert entries[0]["task"] in celery_app.tasks


def test_rotation_re_encrypts_the_messages_ingest_errors_keep_so_the_old_key_can_be_dropped(settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.TOKEN_ENCRYPTION_KEYS = [old_key]
    body = '{"taskToken": "kept-token", "timeoutSeconds": -1}'
    error = services.received_message_ingest(sqs_message_id="m-kept", body=body, max_bytes=4096)
    assert error is not None and error.code == "bad_value"
    unreadable = services.received_message_ingest(sqs_message_id="m-lost", body="not json", max_bytes=4096)
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    unreadable.message_ciphertext = tokens.encrypt_token("a message under a key nobody has any more")
    unreadable.save(update_fields=["message_ciphertext"])
    settings.TOKEN_ENCRYPTION_KEYS = [new_key, old_key]  # new key deployed first

    with pytest.raises(CommandError):  # exits non-zero: one row was skipped, and said so
        call_command("rotate_token_keys")
    settings.TOKEN_ENCRYPTION_KEYS = [new_key]  # old key dropped

    error.refresh_from_db()
    assert tokens.decrypt_token(error.message_ciphertext) == body
    skipped = AuditEvent.objects.get(action="token_keys_rotated").data["skipped"]
    assert skipped == [
        {
            "request": f"ingest error #{unreadable.pk}",
            "reason": "no key in TOKEN_ENCRYPTION_KEYS decrypts the kept message",
        }
    ]
