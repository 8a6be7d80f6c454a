"""SendGrid's signed Event Webhook: each post carries an ECDSA P-256 signature (SHA-256, DER,
base64) over the timestamp header's text followed by the body's bytes, so a receiver built
for SendGrid (its own `EventWebhook` verifiers, listmonk's SendGrid bounce webhook) checks the
router's posts with the public key `router events public-key` prints.

The key pair is `[events] signing_key_file` (a PEM private key on P-256), or one the router
makes the first time and keeps in PostgreSQL (`router_secrets`), so every process signs with
the same key and the receiver's copy of the public key stays valid across restarts.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from router.config import ConfigError, EventsConfig
from router.database import Connection
from router.store import router_secrets

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
SECRET_NAME = "event_webhook_key"  # noqa: S105 - the row's name, not a secret


def _from_pem(path: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"[events] signing_key_file: cannot read a PEM private key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError("[events] signing_key_file: the key must be an EC key on P-256")
    return key


def _new_key_der() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def configured_key(config: EventsConfig) -> ec.EllipticCurvePrivateKey | None:
    """`[events] signing_key_file`'s key (read at start, so a bad file stops the start)."""
    return _from_pem(config.signing_key_file) if config.signing_key_file else None


async def signing_key(conn: Connection, config: EventsConfig) -> ec.EllipticCurvePrivateKey:
    """The configured key, else the router's own (made and stored the first time)."""
    if config.signing_key_file:
        return _from_pem(config.signing_key_file)
    der = await router_secrets.get_or_put(conn, SECRET_NAME, _new_key_der())
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid's console shows it and its verifiers take it: the DER
    SubjectPublicKeyInfo in base64, on one line."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def sign(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    """The signature header's value for this timestamp header's value and body."""
    der = key.sign(timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode("ascii")
