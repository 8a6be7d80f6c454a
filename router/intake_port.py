"""The accept seam: what a front door calls to hand intents to the router.

Front doors (the JSON API, the SMTP relay, the SendGrid- and listmonk-compatible APIs) receive
a callable of this type instead of the running router, so each can be read and tested with
nothing behind it but this signature. The running router's `Runtime.accept_intents` is the
one implementation: it alone knows the configured channels and whether events are recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

from router.content import Relayed
from router.database import Connection
from router.intents import IntentOrigin, IntentRequest, IntentResult


class AcceptIntents(Protocol):
    """Validate, route and store `requests` through `conn` in one transaction (nested in the
    caller's when it has one); one result per request, in order.

    A request given as an `IntentResult` (already rejected by its front door) is passed
    through, so results line up with what the caller received. `prefix` formats field paths
    of errors (`{i}` is the item's index); `relayed` names the stored message an SMTP relay
    intent sends unchanged; `campaign_id` ties a campaign's intents to it. With `multicast`
    (the default), identical LINE content for many friends is sent as LINE multicast; intents
    sent one request each and stored together (router.intake.group_commit) are not.
    `origins`, one per request, says where each intent the router made itself came from.
    `batch_id` ties every intent to a SendGrid batch (its scheduled send can be cancelled or
    paused: router.store.mail_batches)."""

    async def __call__(
        self,
        conn: Connection,
        requests: Sequence[IntentRequest | IntentResult],
        *,
        prefix: str = "",
        relayed: Relayed | None = None,
        campaign_id: UUID | None = None,
        multicast: bool = True,
        origins: Sequence[IntentOrigin | None] | None = None,
        batch_id: str | None = None,
    ) -> list[IntentResult]: ...
