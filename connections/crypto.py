"""Encryption at rest for secrets (passwords, tokens, webhook secrets) with Fernet.

FIELD_ENCRYPTION_KEY holds one or more comma-separated keys. The first encrypts; every
key decrypts, so a key is rotated by putting the new one first and re-saving
(`manage.py rotate_keys`). A key that is not a Fernet key (32 url-safe base64 bytes) is
stretched into one with SHA-256, so a long passphrase works too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def _fernet_key(raw: str) -> bytes:
    try:
        if len(base64.urlsafe_b64decode(raw.encode())) == 32:
            return raw.encode()
    except (binascii.Error, ValueError):
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest())


@lru_cache(maxsize=4)
def _multi(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(k)) for k in keys])


def _cipher() -> MultiFernet:
    return _multi(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plain: str) -> str:
    """Encrypt a string with the first key. The empty string stays empty."""
    if not plain:
        return ""
    return _cipher().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt with any configured key; raise SecretUnreadable when none fits."""
    if not token:
        return ""
    try:
        return _cipher().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            "A stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY; was the key changed "
            "without keeping the old one second in the list?"
        ) from exc


def reencrypt(token: str) -> str:
    """Re-encrypt a token with the first key (key rotation)."""
    if not token:
        return ""
    try:
        return _cipher().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            "A stored secret cannot be decrypted with any FIELD_ENCRYPTION_KEY, so it cannot "
            "be re-encrypted; put the key it was written with back in the list"
        ) from exc
