"""Receiving LINE webhooks: verify the signature, store events and forwards, nothing more.

The HTTP answer to LINE waits only for this module's one transaction, so it comes well
inside LINE's two seconds; what the events mean is worked out afterwards (router.line.events),
woken by the commit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from router.database import Connection
from router.store import line_webhook_events, webhook_forwards

SIGNATURE_HEADER = "x-line-signature"


class WebhookSource(msgspec.Struct, rename="camel"):
    type: str
    user_id: str | None = None


class WebhookEvent(msgspec.Struct, kw_only=True, rename="camel"):
    """The fields of a webhook event (webhook.yml `Event`) the router reads."""

    type: str
    webhook_event_id: str
    timestamp: int
    source: WebhookSource | None = None
    reply_token: str | None = None


class WebhookBody(msgspec.Struct):
    destination: str
    events: list[msgspec.Raw]


class BadWebhook(Exception):
    """A correctly signed body that is not a LINE webhook."""


def signature_matches(secret: str, body: bytes, signature: str | None) -> bool:
    """LINE signs the raw body: base64(HMAC-SHA256(channel secret, body)). Constant time."""
    if not signature or not secret:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, signature.encode())


class Stored(msgspec.Struct):
    events: int
    duplicates: int


def parse(body: bytes) -> list[tuple[WebhookEvent, str]]:
    """Each event with its own JSON text, as LINE sent it."""
    try:
        envelope = msgspec.json.decode(body, type=WebhookBody)
        return [
            (msgspec.json.decode(raw, type=WebhookEvent), bytes(raw).decode())
            for raw in envelope.events
        ]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadWebhook(str(exc)) from None


async def store(
    conn: Connection, account: str, body: bytes, signature: str, forward_to: Sequence[str]
) -> Stored:
    """Store the new events of a webhook that came to LINE account `account` (a redelivered
    webhookEventId is kept once) and queue the forwards of that account's body."""
    events = parse(body)
    async with conn.transaction():
        inserted = 0
        if events:
            inserted = await line_webhook_events.add(
                conn,
                [
                    line_webhook_events.NewEvent(
                        account=account,
                        webhook_event_id=e.webhook_event_id,
                        event_type=e.type,
                        line_user_id=e.source.user_id if e.source else None,
                        occurred_at=datetime.fromtimestamp(e.timestamp / 1000, UTC),
                        body=text,
                    )
                    for e, text in events
                ],
            )
        if forward_to:
            await webhook_forwards.add(conn, forward_to, body, signature)
    return Stored(events=inserted, duplicates=len(events) - inserted)
