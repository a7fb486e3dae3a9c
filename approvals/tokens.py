"""Task tokens at rest: encrypted with rotatable Fernet keys, found by a keyed fingerprint."""

import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class TokenKeyError(Exception):
    """The stored token cannot be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.TOKEN_ENCRYPTION_KEYS))


def encrypt_token(token: str) -> str:
    return _current().encrypt(token.encode()).decode()


def decrypt_token(ciphertext: str) -> str:
    try:
        return _current().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenKeyError("the task token cannot be decrypted with the configured keys") from None


def rotate_token(ciphertext: str) -> str:
    """Re-encrypt with the newest key (after a new key was put first in the list)."""
    return _current().rotate(ciphertext.encode()).decode()


def fingerprint_token(token: str) -> str:
    """A keyed hash: lets us find a request by token without storing or decrypting it."""
    return hmac.new(settings.TOKEN_FINGERPRINT_KEY.encode(), token.encode(), hashlib.sha256).hexdigest()
