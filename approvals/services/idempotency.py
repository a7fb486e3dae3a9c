"""Idempotency keys of API writes: a retried request gets the first response, never a second action."""

import hashlib
import json
from collections.abc import Callable
from datetime import datetime

from django.db import transaction

from approvals.models import AuditAction, IdempotencyKey, User
from approvals.services.common import audit

IDEMPOTENCY_CONFLICT = "idempotency_conflict"


class IdempotencyConflict(Exception):
    """The key was used before for another request (another path or body)."""


def request_fingerprint(*, method: str, path: str, body) -> str:
    canonical = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@transaction.atomic
def idempotent_call(
    *, user: User, key: str, fingerprint: str, call: Callable[[], tuple[int, dict]]
) -> tuple[int, dict, bool]:
    """(status, body, replayed): `call()`'s answer, stored under (user, key), or the stored one.

    The key's row is inserted first, in this transaction: a concurrent retry's insert waits on
    the unique index until this one commits, then finds the stored answer (it never runs
    `call` a second time). If `call` raises, everything rolls back and a retry runs it anew.
    `call` runs inside this transaction: the services' own transactions nest in it and their
    side effects (the callback's task) go out when it commits."""
    record, created = IdempotencyKey.objects.get_or_create(
        user=user, key=key, defaults={"fingerprint": fingerprint, "status_code": 0, "response": {}}
    )
    if not created:
        if record.fingerprint != fingerprint:
            raise IdempotencyConflict(key)
        return record.status_code, record.response, True
    status, body = call()
    record.status_code, record.response = status, body
    record.save(update_fields=["status_code", "response"])
    return status, body, False


@transaction.atomic
def idempotency_keys_purge(*, created_before: datetime) -> int:
    """Retention: forget the stored answers of keys older than `created_before` (a retry after
    that acts anew). One audit event with the count, none when nothing was old enough."""
    purged, _ = IdempotencyKey.objects.filter(created_at__lt=created_before).delete()
    if purged:
        audit(
            action=AuditAction.IDEMPOTENCY_KEYS_PURGED,
            request=None,
            actor=None,
            count=purged,
            created_before=created_before.isoformat(),
        )
    return purged
