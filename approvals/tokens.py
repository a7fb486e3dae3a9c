"""Task tokens at rest: encrypted with rotatable Fernet keys, found by a keyed fingerprint."""

import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

# What a request's token_ciphertext holds after the retention sweep erased it.
ERASED = ""


class TokenKeyError(Exception):
    """The stored token cannot be decrypted with any configured key."""


class TokenErasedError(TokenKeyError):
    """The token was erased after its request closed (TOKEN_RETENTION_DAYS)."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def current_fernet() -> MultiFernet:
    """Every configured encryption key: the first encrypts, each decrypts."""
    return _fernet(tuple(settings.TOKEN_ENCRYPTION_KEYS))


_current = current_fernet


def encrypt_token(token: str) -> str:
    return _current().encrypt(token.encode()).decode()


def decrypt_token(ciphertext: str) -> str:
    if is_erased(ciphertext):
        raise TokenErasedError("the task token was erased after the retention period")
    try:
        return _current().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenKeyError("the task token cannot be decrypted with the configured keys") from None


def fingerprint_token(token: str) -> str:
    """A keyed hash with the newest key: lets us find a request by token without storing or decrypting it."""
    return _fingerprint(settings.TOKEN_FINGERPRINT_KEYS[0], token)


def fingerprint_candidates(token: str) -> list[str]:
    """The token's fingerprint under every configured key, newest first.

    A request ingested before a key rotation is stored under an older key until
    `rotate_token_keys` moves it: looking up all of them still recognises its duplicates.
    """
    return [_fingerprint(key, token) for key in settings.TOKEN_FINGERPRINT_KEYS]


def _fingerprint(key: str, token: str) -> str:
    return hmac.new(key.encode(), token.encode(), hashlib.sha256).hexdigest()


def is_erased(ciphertext: str) -> bool:
    """True when the retention sweep erased this token (the request is long closed)."""
    return ciphertext == ERASED
