"""LINE calling the bot: webhook requests signed with the channel secret, and redeliveries.

Each body is signed the way LINE signs it (``X-Line-Signature``: base64 HMAC-SHA256 of the
body under the channel secret), or with a wrong key on request, so a receiver's signature
check is tested with real bytes; the receiver's answer is kept.  A redelivery sends earlier
events again with ``isRedelivery`` set, as LINE's redelivery does.  After an accepted LINE
notification message the bot is told of the delivery later, as LINE does, unless a fault
holds it back.  Playing a user (follow, unfollow, message) changes the follower set too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import msgspec

from linesim.events import CallbackRequest, DeliveryContext, Events, WebhookEvent
from linesim.faults import Faults
from linesim.paths import SIGNATURE_HEADER
from linesim.schemas import encode
from linesim.state import SimState


class SentWebhook(msgspec.Struct, frozen=True):
    """One webhook request the simulator sent and how the receiver answered.

    ``body`` is exactly the text that was signed; ``status`` is 0 when no HTTP
    answer came (connection refused, timeout), with the reason in ``error``.
    """

    url: str
    body: str
    payload: Any
    signature: str
    status: int
    sent_at: float
    forged: bool = False
    redelivery: bool = False
    error: str | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.payload["events"]
        return events


def _signature(secret: str, body: bytes) -> str:
    """``X-Line-Signature``: base64 of the HMAC-SHA256 of the body under the channel secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class Webhooks:
    """Where events go, as which bot, signed with which secret; and what was sent.

    The URL, secret and bot user ID are wiring rather than state: :meth:`reset` keeps them.
    """

    def __init__(
        self,
        state: SimState,
        events: Events,
        faults: Faults,
        *,
        url: str | None,
        channel_secret: str | None,
        bot_user_id: str,
        timeout: float,
        max_webhooks: int,
    ) -> None:
        self._state = state
        self._events = events
        self._faults = faults
        self.url = url
        self.channel_secret = channel_secret
        self.bot_user_id = bot_user_id
        self._timeout = timeout
        self._http: aiohttp.ClientSession | None = None
        self.sent: deque[SentWebhook] = deque(maxlen=max_webhooks)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Delivery completion events scheduled and not yet sent."""
        return len(self._tasks)

    def reset(self) -> None:
        """Forget what was sent and drop the events still waiting to be sent."""
        self.cancel_pending()
        self.sent.clear()

    async def close(self) -> None:
        self.cancel_pending()
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    def cancel_pending(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    def configure(self, url: str | None, channel_secret: str | None = None) -> None:
        """Where events go (None: nowhere) and the secret that signs them.

        A secret of None keeps the current one, so the URL can move on its own.
        """
        self.url = url
        if channel_secret is not None:
            self.channel_secret = channel_secret

    @property
    def ready(self) -> bool:
        """Whether there is somewhere to send events and a secret to sign them with."""
        return self.url is not None and self.channel_secret is not None

    def target(self) -> tuple[str, str]:
        """The URL and secret; RuntimeError when either is missing."""
        if self.url is None:
            raise RuntimeError("no webhook URL is set (set_webhook or webhook_url=)")
        return self.url, self.secret()

    def secret(self) -> str:
        """The channel secret; RuntimeError when none is set."""
        if self.channel_secret is None:
            raise RuntimeError("no channel secret is set to sign webhooks with")
        return self.channel_secret

    # --- what users do ---

    async def follow(
        self, user_id: str, *, is_unblocked: bool = False, forge_signature: bool = False
    ) -> int:
        """``user_id`` adds the bot as a friend (or unblocks it): follower set and event."""
        self.target()
        event = self._events.follow_event(user_id, is_unblocked=is_unblocked)
        self._state.users.learn(user_id)
        self._state.followers[user_id] = None
        return await self.send_events([event], forge_signature=forge_signature)

    async def unfollow(self, user_id: str, *, forge_signature: bool = False) -> int:
        """``user_id`` blocks the bot: leaves the follower set, and the bot is told."""
        self.target()
        event = self._events.unfollow_event(user_id)
        self._state.users.learn(user_id)
        self._state.followers.pop(user_id, None)
        return await self.send_events([event], forge_signature=forge_signature)

    async def message(self, user_id: str, text: str, *, forge_signature: bool = False) -> int:
        """``user_id`` sends the bot a text message."""
        self.target()
        event = self._events.message_event(user_id, text)
        self._state.users.learn(user_id)
        return await self.send_events([event], forge_signature=forge_signature)

    async def account_link(
        self, user_id: str, nonce: str, *, ok: bool = True, forge_signature: bool = False
    ) -> int:
        """An accountLink event without going through a link token and the dialog."""
        self.target()
        event = self._events.account_link_event(user_id, nonce, ok=ok)
        self._state.users.learn(user_id)
        return await self.send_events([event], forge_signature=forge_signature)

    async def delivery(self, tag: str, *, forge_signature: bool = False) -> int:
        """A delivery completion event whose ``delivery.data`` is ``tag``."""
        self.target()
        event = self._events.delivery_event(tag)
        return await self.send_events([event], forge_signature=forge_signature)

    # --- sending ---

    async def send_events(
        self, events: Sequence[WebhookEvent], *, forge_signature: bool = False
    ) -> int:
        """POST ``events`` in one signed body; returns the receiver's status (0: no answer).

        ``forge_signature`` signs with a wrong secret, as a forger would.
        """
        return (await self.post(list(events), forged=forge_signature)).status

    async def redeliver(
        self,
        event_body: SentWebhook | Mapping[str, Any] | str,
        *,
        forge_signature: bool = False,
    ) -> int:
        """Send earlier events again, as LINE's webhook redelivery does.

        ``event_body`` is a sent webhook (all its events), a webhook body or one
        event as a mapping, or a webhookEventId seen in :attr:`sent`.
        Event IDs, timestamps and reply tokens stay; ``isRedelivery`` becomes true.
        """
        payload: Mapping[str, Any]
        if isinstance(event_body, str):
            payload = self._find_event(event_body)
        elif isinstance(event_body, SentWebhook):
            payload = event_body.payload
        elif "events" in event_body:
            payload = event_body
        else:
            payload = {"destination": self.bot_user_id, "events": [event_body]}
        original = msgspec.convert(payload, CallbackRequest)
        redelivered = DeliveryContext(isRedelivery=True)
        events: list[WebhookEvent] = [
            msgspec.structs.replace(event, deliveryContext=redelivered) for event in original.events
        ]
        sent = await self.post(
            events, forged=forge_signature, redelivery=True, destination=original.destination
        )
        return sent.status

    def _find_event(self, webhook_event_id: str) -> dict[str, Any]:
        for sent in reversed(self.sent):
            for event in sent.events:
                if event.get("webhookEventId") == webhook_event_id:
                    return {"destination": sent.payload["destination"], "events": [event]}
        raise KeyError(f"no sent event has webhookEventId {webhook_event_id!r}")

    async def drain(self) -> None:
        """Wait until the scheduled delivery completion events have been sent."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def post(
        self,
        events: list[WebhookEvent],
        *,
        forged: bool = False,
        redelivery: bool = False,
        destination: str | None = None,
        url: str | None = None,
    ) -> SentWebhook:
        """Sign and POST one body of ``events``; the receiver's answer is kept in :attr:`sent`.

        ``url`` sends there instead of to the configured URL (LINE's endpoint test does)."""
        if url is None:
            url, secret = self.target()
        else:
            secret = self.secret()
        body = encode(CallbackRequest(destination=destination or self.bot_user_id, events=events))
        # Any other key gives a signature the receiver's check must refuse.
        signature = _signature(secret + "\x00forged" if forged else secret, body)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature,
            "User-Agent": "LineBotWebhook/2.0",
        }
        status, error = 0, None
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with self._client().post(
                url, data=body, headers=headers, timeout=timeout
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        counters = self._state.counters
        counters.webhooks_sent += 1
        if not 200 <= status < 300:
            counters.webhooks_failed += 1
        sent = SentWebhook(
            url=url,
            body=body.decode(),
            payload=msgspec.json.decode(body),
            signature=signature,
            status=status,
            sent_at=self._state.clock.now(),
            forged=forged,
            redelivery=redelivery,
            error=error,
        )
        self.sent.append(sent)
        return sent

    def schedule_delivery(self, data: str) -> None:
        """After an accepted PNP, tell the bot it arrived, unless told to stay quiet."""
        if not self.ready or self._faults.suppress_delivery():
            return
        delay = self._faults.pnp_delivery_delay
        task = asyncio.get_running_loop().create_task(self._deliver_later(data, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_later(self, data: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.ready:
            await self.post([self._events.delivery_event(data)])
