"""LINE notification messages: `POST /bot/pnp/push` to a phone number, no friendship needed.

The endpoint has no retry key, so a request that may have reached LINE is never repeated:
only a connection that was refused, or LINE saying it did not process the request (429), is
retried. Each request carries `X-Line-Delivery-Tag` = the delivery id; LINE confirms a
delivery with a `delivery` webhook event carrying that tag (router.line.events).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta

import aiohttp
from linebot.v3.messaging import ApiException

from channels.base import Channel, ChannelDescriptor, Failed, Outbound, Outcome, Retry, Sent
from channels.line.push import LINE, LinePushChannel, account_missing, classify, describe_error
from router.config import Config
from router.identifiers import phone_sha256_hex
from router.reach import Reach

PNP_PATH = "/bot/pnp/push"


def _unreachable(reach: Reach) -> str | None:
    if reach.phone is None:
        return "no phone number for this recipient"
    if reach.line_opt_out:
        return "the member opted out of LINE"
    return None


LINE_NOTIFICATION = ChannelDescriptor(
    name="line_notification",
    # Leads its own route; under "both" it reaches a non-friend by phone in LINE's place.
    routes={"notification_first": 0, "both": 0},
    stands_in_for=LINE.name,
    kinds=frozenset({"transactional"}),
    kind_refusal=(
        "LINE notification messages carry transactional messages only: "
        'send this intent with "kind": "transactional", or use another route'
    ),
    not_configured=(
        "LINE notification messages are not enabled on this router "
        "([line] notification_messages; LINE must have approved the account)"
    ),
    unreachable=_unreachable,
    reachable_sql="(m.phone IS NOT NULL AND NOT coalesce(l.opt_out, false))",
    still_reachable_sql="true",  # transactional: what was accepted is sent
    # LINE addresses a notification by the SHA-256 of the E.164 number, never the number.
    address=lambda reach: None if reach.phone is None else phone_sha256_hex(reach.phone),
    address_sql="encode(m.phone_sha256, 'hex')",
    address_noun="phone number",
    carries=LINE.carries,
    no_content=LINE.no_content,
    confirmed_by_provider=True,
    provider="LINE",
    per_line_account=True,
    describe=lambda config: f"LINE notification messages via {config.line.api_base}",
)


def build(config: Config, built: Mapping[str, Channel]) -> LineNotificationChannel | None:
    push = built.get(LINE.name)
    if not isinstance(push, LinePushChannel):
        return None
    channel = LineNotificationChannel(push)
    return channel if channel.line_accounts else None


class LineNotificationChannel:
    """The `line_notification` channel; shares the push channel's clients and quotas, and
    sends under each account that has `notification_messages` on."""

    name = LINE_NOTIFICATION.name
    replay_window: timedelta | None = None  # no retry key: never resend blindly
    requests_per_second: int | None = None

    def __init__(self, push: LinePushChannel) -> None:
        self._push = push
        self.max_concurrency = push.max_concurrency
        self.line_accounts = frozenset(
            name for name, sender in push.senders.items() if sender.notification_messages
        )

    def requests_per_second_of(self, account: str) -> int | None:
        return None

    def groups_per_second_of(self, account: str) -> int | None:
        return None

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._send(m) for m in batch)))

    async def _send(self, message: Outbound) -> Outcome:
        sender = self._push.sender(message.line_account)
        if sender is None or message.line_account not in self.line_accounts:
            return account_missing(message.line_account)
        try:
            messages = self._push.wire_messages(message)
        except ValueError as exc:
            return Failed(f"LINE messages could not be built: {exc}", dropped=True)
        try:
            response = await sender.post_json(
                PNP_PATH,
                {"X-Line-Delivery-Tag": str(message.delivery_id)},
                {"to": message.address, "messages": messages},
            )
        except ApiException as exc:
            return _classify(exc)
        except aiohttp.ClientConnectorError as exc:
            return Retry(f"LINE could not be reached ({exc}); the request was not sent")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Failed(
                f"LINE did not answer ({type(exc).__name__}); it may have sent the notification, "
                "so it is not repeated"
            )
        await sender.settle_quota(None, 1)
        request_id = response.headers.get("x-line-request-id") if response.headers else None
        # Accepted; LINE's `delivery` webhook event later sets the delivery's confirmed_at.
        return Sent(provider_ref=str(request_id or ""))

    async def aclose(self) -> None:
        """The shared client belongs to the push channel."""


def _classify(exc: ApiException) -> Outcome:
    status = int(exc.status or 0)
    if status == 422:
        error = describe_error(exc.body)
        return Failed(f"LINE 422: no LINE user has this phone number ({error.message})")
    if status == 429:
        return classify(status, exc.headers or {}, exc.body)  # not processed: retry is safe
    if status >= 500:
        return Failed(
            f"LINE {status}: it may or may not have sent the notification, so it is not repeated"
        )
    return classify(status, exc.headers or {}, exc.body)
