"""SCIM bearer tokens: created, rotated and revoked by admins; checked on every SCIM request.

The secret is shown once (returned to the admin who creates it) and stored as a SHA-256 digest:
it is 256 random bits, so a plain digest is as good as a slow hash and lets a lookup by digest
find it in one indexed query. Every refusal is audited, with the token's name when the
presented secret is one of ours (revoked, rotated away) and never with the secret itself.
A flood of refusals does not become a flood of rows: the same refusal (reason, address, token)
is audited once per REFUSAL_AUDIT_WINDOW, the next row carrying how many it stood for.
"""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from approvals.models import AuditAction, ScimToken, User
from approvals.services.common import ApprovalError, audit

TOKEN_PREFIX = "scim_"  # noqa: S105 (the visible prefix of every token, not a secret)
# Longer than any token we issue by far; anything longer is refused before hashing.
MAX_TOKEN_LENGTH = 200
# last_used_at is written at most this often per token (not one row write per SCIM request).
LAST_USED_RESOLUTION = timedelta(minutes=1)
# One audit row per identical refusal this often; the refusals in between are counted.
REFUSAL_AUDIT_WINDOW = timedelta(minutes=1)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _require_admin(actor: User) -> None:
    if not (actor.is_active and actor.is_superuser):
        raise ApprovalError("Only admins manage SCIM tokens.", "forbidden")


def _validate(*, name: str, issuer: str, subject_attribute: str) -> tuple[str, str]:
    name, issuer = (name or "").strip(), (issuer or "").strip().rstrip("/")
    if not name or len(name) > 100:
        raise ApprovalError("A SCIM token needs a name of at most 100 characters.", "bad_input")
    if not issuer or len(issuer) > 255:
        raise ApprovalError("A SCIM token needs the OIDC issuer whose accounts it provisions.", "bad_input")
    if subject_attribute not in ScimToken.SubjectAttribute.values:
        raise ApprovalError("Unknown subject attribute.", "bad_input")
    return name, issuer


@transaction.atomic
def scim_token_create(
    *, actor: User, name: str, issuer: str, subject_attribute: str = ScimToken.SubjectAttribute.EXTERNAL_ID
) -> tuple[ScimToken, str]:
    """A new token and its secret (shown once; only its digest is kept)."""
    _require_admin(actor)
    name, issuer = _validate(name=name, issuer=issuer, subject_attribute=subject_attribute)
    secret = _new_secret()
    token = ScimToken.objects.create(
        name=name,
        issuer=issuer,
        subject_attribute=subject_attribute,
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        digest=_digest(secret),
        created_by=actor,
    )
    audit(
        action=AuditAction.SCIM_TOKEN_CREATED,
        request=None,
        actor=actor,
        token_id=token.pk,
        name=name,
        prefix=token.prefix,
        issuer=issuer,
        subject_attribute=subject_attribute,
    )
    return token, secret


@transaction.atomic
def scim_token_revoke(*, actor: User, token_id: int, reason: str = "revoked") -> bool:
    """Revoke a token now; revoking a revoked token changes nothing (returns False)."""
    _require_admin(actor)
    token = ScimToken.objects.select_for_update().filter(pk=token_id, revoked_at__isnull=True).first()
    if token is None:
        return False
    token.revoked_at = timezone.now()
    token.revoked_by = actor
    token.save(update_fields=["revoked_at", "revoked_by"])
    audit(
        action=AuditAction.SCIM_TOKEN_REVOKED,
        request=None,
        actor=actor,
        token_id=token.pk,
        name=token.name,
        prefix=token.prefix,
        reason=reason,
    )
    return True


@transaction.atomic
def scim_token_rotate(*, actor: User, token_id: int) -> tuple[ScimToken, str]:
    """Replace an active token by a new one with the same settings; the old one stops working now."""
    _require_admin(actor)
    old = ScimToken.objects.select_for_update().filter(pk=token_id, revoked_at__isnull=True).first()
    if old is None:
        raise ApprovalError("Only an active SCIM token can be rotated.", "not_active")
    new, secret = scim_token_create(
        actor=actor, name=old.name, issuer=old.issuer, subject_attribute=old.subject_attribute
    )
    old.revoked_at = timezone.now()
    old.revoked_by = actor
    old.replaced_by = new
    old.save(update_fields=["revoked_at", "revoked_by", "replaced_by"])
    audit(
        action=AuditAction.SCIM_TOKEN_ROTATED,
        request=None,
        actor=actor,
        token_id=old.pk,
        name=old.name,
        prefix=old.prefix,
        replaced_by=new.pk,
        new_prefix=new.prefix,
    )
    return new, secret


def _refuse(reason: str, *, remote: str, token: ScimToken | None = None) -> None:
    data = {"reason": reason, "remote": remote[:64]}
    if token is not None:
        data |= {"token_id": token.pk, "name": token.name, "prefix": token.prefix}
        if token.replaced_by_id:
            data["replaced_by"] = token.replaced_by_id
    key = f"scim-refused:{reason}:{data['remote']}:{token.pk if token is not None else ''}"
    seconds = int(REFUSAL_AUDIT_WINDOW.total_seconds())
    if not cache.add(f"{key}:window", 1, timeout=seconds):
        # Audited a moment ago: count it for the next row (the counter outlives the window).
        if not cache.add(f"{key}:repeats", 1, timeout=seconds * 60):
            cache.incr(f"{key}:repeats")
        return
    repeats = cache.get(f"{key}:repeats")
    if repeats:
        cache.delete(f"{key}:repeats")
        data["repeats_before"] = repeats
    audit(action=AuditAction.SCIM_AUTH_REFUSED, request=None, actor=None, **data)


@transaction.atomic
def scim_token_authenticate(*, authorization: str, remote: str = "") -> ScimToken | None:
    """The active token named by an `Authorization: Bearer …` header, or None (audited)."""
    scheme, _, secret = (authorization or "").strip().partition(" ")
    secret = secret.strip()
    if not authorization:
        _refuse("missing", remote=remote)
        return None
    if scheme.lower() != "bearer" or not secret or len(secret) > MAX_TOKEN_LENGTH:
        _refuse("malformed", remote=remote)
        return None
    digest = _digest(secret)
    token = ScimToken.objects.filter(digest=digest).first()
    # The lookup is by digest; the comparison is constant-time anyway.
    if token is None or not hmac.compare_digest(token.digest, digest):
        _refuse("unknown", remote=remote)
        return None
    if token.revoked_at is not None:
        _refuse("rotated" if token.replaced_by_id else "revoked", remote=remote, token=token)
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ScimToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
