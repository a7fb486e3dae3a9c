"""Task tokens at rest: encrypted, found by fingerprint, and the keys can rotate."""

import json

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from approvals import services, tokens
from approvals.contract import parse_message
from approvals.models import ApprovalRequest, AuditEvent

pytestmark = pytest.mark.django_db

TOKEN = "AAAAKgAAAAIAAAAAAAAAAQ" + "Zm9v+/=" * 150


def test_the_token_is_stored_encrypted_and_found_by_its_fingerprint():
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps({"taskToken": TOKEN})))

    stored = ApprovalRequest.objects.get(pk=request.pk)
    assert TOKEN not in stored.token_ciphertext
    assert tokens.decrypt_token(stored.token_ciphertext) == TOKEN
    assert ApprovalRequest.objects.get(token_fingerprint=tokens.fingerprint_token(TOKEN)) == stored


def test_rotating_keys_re_encrypts_tokens_so_the_old_key_can_be_dropped(settings):
    old_key = settings.TOKEN_ENCRYPTION_KEYS[0]
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps({"taskToken": TOKEN})))
    new_key = Fernet.generate_key().decode()
    settings.TOKEN_ENCRYPTION_KEYS = [new_key, old_key]

    call_command("rotate_token_keys")

    settings.TOKEN_ENCRYPTION_KEYS = [new_key]
    assert tokens.decrypt_token(ApprovalRequest.objects.get(pk=request.pk).token_ciphertext) == TOKEN
    assert AuditEvent.objects.get(action="token_keys_rotated").data == {
        "count": 1,
        "refingerprinted": 0,
        "erased": 0,
        "skipped": [],
    }


def test_a_token_under_an_unknown_key_is_a_clear_error_without_the_token(settings):
    request, _ = services.approval_request_ingest(message=parse_message(json.dumps({"taskToken": TOKEN})))
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(tokens.TokenKeyError) as error:
        tokens.decrypt_token(ApprovalRequest.objects.get(pk=request.pk).token_ciphertext)

    assert TOKEN not in str(error.value)
