"""Password hashes for SMTP relay users: scrypt, salted, in one self-describing string."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

N, R, P = 2**14, 8, 1
PREFIX = "scrypt$"


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    b64 = base64.b64encode
    return f"{PREFIX}{N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Check against a hash from `hash_password`, or a plain configured password."""
    if not stored.startswith(PREFIX):
        return hmac.compare_digest(password.encode(), stored.encode())
    try:
        n, r, p, salt, digest = stored[len(PREFIX) :].split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
