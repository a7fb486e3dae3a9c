"""Operations on the token encryption keys."""

from django.db import transaction

from approvals import tokens
from approvals.models import ApprovalRequest, User
from approvals.services.common import audit


# ---------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------
def token_keys_rotate(*, actor: User | None = None, batch_size: int = 500) -> int:
    """Re-encrypt every stored task token with the newest key in TOKEN_ENCRYPTION_KEYS.

    Rotation: put a new key first in the list and deploy, run this, then drop the old key.
    Each batch is its own transaction, so a long run never holds many locks.
    """
    rotated = 0
    last_pk = 0
    while True:
        with transaction.atomic():
            batch = list(
                ApprovalRequest.objects.select_for_update()
                .filter(pk__gt=last_pk)
                .order_by("pk")
                .only("pk", "token_ciphertext")[:batch_size]
            )
            if not batch:
                break
            for request in batch:
                request.token_ciphertext = tokens.rotate_token(request.token_ciphertext)
            ApprovalRequest.objects.bulk_update(batch, ["token_ciphertext"])
            rotated += len(batch)
            last_pk = batch[-1].pk
    with transaction.atomic():
        audit(action="token_keys_rotated", request=None, actor=actor, count=rotated)
    return rotated
