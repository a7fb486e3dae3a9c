"""Operations on the task tokens at rest: key rotation, and erasure after the retention period."""

import logging
from dataclasses import dataclass, field

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import tokens
from approvals.models import (
    CALLBACK_IN_FLIGHT,
    ApprovalRequest,
    AuditAction,
    Callback,
    IngestError,
    RequestStatus,
    User,
)
from approvals.services.common import audit

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------
@dataclass
class KeyRotationReport:
    """What `token_keys_rotate` did. `skipped`: (request public id, why) for each row left as it was."""

    rotated: int = 0
    refingerprinted: int = 0
    erased: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def token_keys_rotate(*, actor: User | None = None, batch_size: int = 500) -> KeyRotationReport:
    """Move every stored task token to the newest keys: re-encrypt it with the first of
    TOKEN_ENCRYPTION_KEYS and re-fingerprint it with the first of TOKEN_FINGERPRINT_KEYS.

    Rotation: put a new key first in the list and deploy, run this, then drop the old key.
    Each batch is its own transaction, so a long run never holds many locks. A row that no
    configured key decrypts is skipped and reported (and audited on its request), never the
    end of the run; a row whose token was erased after the retention period has nothing to move.
    """
    report = KeyRotationReport()
    last_pk = 0
    while True:
        with transaction.atomic():
            batch = list(
                ApprovalRequest.objects.select_for_update()
                .filter(pk__gt=last_pk)
                .order_by("pk")
                .only("pk", "public_id", "token_ciphertext", "token_fingerprint")[:batch_size]
            )
            if not batch:
                break
            last_pk = batch[-1].pk
            changed = _rotate_batch(batch, report)
            ApprovalRequest.objects.bulk_update(changed, ["token_ciphertext", "token_fingerprint"])
    _rotate_kept_messages(report, batch_size)
    with transaction.atomic():
        audit(
            action=AuditAction.TOKEN_KEYS_ROTATED,
            request=None,
            actor=actor,
            count=report.rotated,
            refingerprinted=report.refingerprinted,
            erased=report.erased,
            skipped=[{"request": public_id, "reason": reason} for public_id, reason in report.skipped],
        )
    return report


def _rotate_batch(batch: list[ApprovalRequest], report: KeyRotationReport) -> list[ApprovalRequest]:
    """Re-encrypt and re-fingerprint the rows of one locked batch; the ones that changed."""
    fernet = tokens.current_fernet()
    moved: dict[str, tuple[ApprovalRequest, str]] = {}  # new fingerprint -> (row, its token)
    for request in batch:
        if tokens.is_erased(request.token_ciphertext):
            report.erased += 1
            continue
        try:
            token = fernet.decrypt(request.token_ciphertext.encode()).decode()
        except (InvalidToken, UnicodeError, ValueError):
            _skip(request, report, "no key in TOKEN_ENCRYPTION_KEYS decrypts the stored token")
            continue
        fingerprint = tokens.fingerprint_token(token)
        if fingerprint in moved:
            _skip(request, report, "another request holds the same task token")
            continue
        moved[fingerprint] = (request, token)
    # A fingerprint is unique: one already held by a row outside this batch stays where it is.
    taken = set(
        ApprovalRequest.objects.filter(token_fingerprint__in=list(moved))
        .exclude(pk__in=[request.pk for request in batch])
        .values_list("token_fingerprint", flat=True)
    )
    changed = []
    for fingerprint, (request, token) in moved.items():
        if fingerprint in taken:
            _skip(request, report, "another request holds the same task token")
            continue
        if fingerprint != request.token_fingerprint:
            request.token_fingerprint = fingerprint
            report.refingerprinted += 1
        request.token_ciphertext = tokens.encrypt_token(token)
        report.rotated += 1
        changed.append(request)
    return changed


def _rotate_kept_messages(report: KeyRotationReport, batch_size: int) -> None:
    """Re-encrypt the messages ingest errors keep for replay (each holds a task token)."""
    fernet = tokens.current_fernet()
    last_pk = 0
    while True:
        with transaction.atomic():
            batch = list(
                IngestError.objects.select_for_update()
                .filter(pk__gt=last_pk)
                .exclude(message_ciphertext="")
                .order_by("pk")
                .only("pk", "message_ciphertext")[:batch_size]
            )
            if not batch:
                return
            last_pk = batch[-1].pk
            changed = []
            for row in batch:
                try:
                    row.message_ciphertext = fernet.rotate(row.message_ciphertext.encode()).decode()
                except (InvalidToken, UnicodeError, ValueError):
                    reason = "no key in TOKEN_ENCRYPTION_KEYS decrypts the kept message"
                    report.skipped.append((f"ingest error #{row.pk}", reason))
                    logger.warning("rotate_token_keys skipped ingest error %s: %s", row.pk, reason)
                    continue
                report.rotated += 1
                changed.append(row)
            IngestError.objects.bulk_update(changed, ["message_ciphertext"])


def _skip(request: ApprovalRequest, report: KeyRotationReport, reason: str) -> None:
    report.skipped.append((str(request.public_id), reason))
    logger.warning("rotate_token_keys skipped request %s: %s", request.public_id, reason)
    audit(action=AuditAction.TOKEN_KEY_ROTATION_SKIPPED, request=request, actor=None, reason=reason)


# ---------------------------------------------------------------------------
# Retention: erase the tokens of requests closed long ago
# ---------------------------------------------------------------------------


@transaction.atomic
def approval_token_erase(*, request_id: int, actor: User | None = None) -> bool:
    """Erase a closed request's task token (its ciphertext); the request and its audit trail stay.

    Step Functions refuses the token of a task that ended anyway; keeping it only keeps a secret
    around. The fingerprint stays, so the same message arriving again is still a duplicate.
    False when there was nothing to erase (pending again, a callback in flight, already erased).
    """
    request = ApprovalRequest.objects.select_for_update(of=("self",)).filter(pk=request_id).first()
    if request is None or request.status == RequestStatus.PENDING or tokens.is_erased(request.token_ciphertext):
        return False
    callback = Callback.objects.filter(request_id=request.pk).only("status").first()
    if callback is not None and callback.status in CALLBACK_IN_FLIGHT:
        return False
    request.token_ciphertext = tokens.ERASED
    request.save(update_fields=["token_ciphertext", "updated_at"])
    audit(
        action=AuditAction.TOKEN_ERASED,
        request=request,
        actor=actor,
        retention_days=settings.TOKEN_RETENTION_DAYS,
        closed_at=request.decided_at.isoformat() if request.decided_at else None,
    )
    return True


@transaction.atomic
def ingest_error_message_erase(*, ingest_error_id: int, actor: User | None = None) -> bool:
    """Erase the message an ingest error kept for replay (the error and its redacted body stay).

    False when there was nothing to erase. A replay then answers that the message was erased.
    """
    row = IngestError.objects.select_for_update().filter(pk=ingest_error_id).exclude(message_ciphertext="").first()
    if row is None:
        return False
    row.message_ciphertext = ""
    row.message_erased_at = timezone.now()
    row.save(update_fields=["message_ciphertext", "message_erased_at"])
    audit(
        action=AuditAction.INGEST_MESSAGE_ERASED,
        request=None,
        actor=actor,
        ingest_error_id=row.pk,
        sqs_message_id=row.sqs_message_id,
        retention_days=settings.TOKEN_RETENTION_DAYS,
    )
    return True
