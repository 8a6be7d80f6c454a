"""The signed tokens in composed email: the unsubscribe link's and the bounce address's.

Both are HMAC-SHA256 over what they name, under keys derived from one secret (`[email]
unsubscribe_secret`, or the one the router keeps in `router_secrets`), so a token cannot be
guessed or altered, needs no table to look it up, and never expires. A token that does not
verify is simply not one of ours.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from typing import Literal
from uuid import UUID

import msgspec

_UNSUBSCRIBE_MAC = 16  # bytes of HMAC kept: 128 bits, beyond guessing
_BOUNCE_MAC = 10  # the bounce address's local part is short: 80 bits


class Unsubscribe(msgspec.Struct, frozen=True, array_like=True):
    """What a one-click unsubscribe link names: a member (`subject` "m", their ID) or an
    address-only recipient ("a", the address), the category (None: all promotional email)
    and the delivery the link was sent in (for the event; None if not known)."""

    subject: Literal["m", "a"]
    recipient: str
    category: str | None = None
    delivery_id: UUID | None = None


@functools.lru_cache(maxsize=8)  # one secret per router: derived once, not per message
def _key(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, b"delivery-router/" + purpose, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    if not text or len(text) > 2000 or not text.isascii():
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        return None


def unsubscribe_token(secret: bytes, what: Unsubscribe) -> str:
    payload = msgspec.msgpack.encode(what)
    mac = hmac.new(_key(secret, b"unsubscribe"), payload, hashlib.sha256).digest()
    return _b64(payload + mac[:_UNSUBSCRIBE_MAC])


def read_unsubscribe_token(secret: bytes, token: str) -> Unsubscribe | None:
    """What the token names, or None if it is not one this router signed."""
    raw = _unb64(token)
    if raw is None or len(raw) <= _UNSUBSCRIBE_MAC:
        return None
    payload, mac = raw[:-_UNSUBSCRIBE_MAC], raw[-_UNSUBSCRIBE_MAC:]
    expected = hmac.new(_key(secret, b"unsubscribe"), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected[:_UNSUBSCRIBE_MAC]):
        return None
    try:
        return msgspec.msgpack.decode(payload, type=Unsubscribe)
    except msgspec.DecodeError:
        return None


def bounce_token(secret: bytes, delivery_id: UUID) -> str:
    """The part after `bounce+` in a delivery's envelope sender: lower-case hex (52
    characters), since mail systems may change the case of a local part, and hex is made
    at C speed where base32 is not."""
    mac = hmac.new(_key(secret, b"bounce"), delivery_id.bytes, hashlib.sha256).digest()
    return (delivery_id.bytes + mac[:_BOUNCE_MAC]).hex()


def read_bounce_token(secret: bytes, token: str) -> UUID | None:
    """The delivery a bounce address names, or None for one this router did not sign."""
    if len(token) != 2 * (16 + _BOUNCE_MAC) or not token.isascii():
        return None
    try:
        raw = bytes.fromhex(token)
    except ValueError:
        return None
    delivery = UUID(bytes=raw[:16])
    expected = hmac.new(_key(secret, b"bounce"), raw[:16], hashlib.sha256).digest()
    if not hmac.compare_digest(raw[16:], expected[:_BOUNCE_MAC]):
        return None
    return delivery


def bounce_address(secret: bytes, delivery_id: UUID, bounce_domain: str) -> str:
    return f"bounce+{bounce_token(secret, delivery_id)}@{bounce_domain}"
