"""Working out stored LINE webhook events: follows, unfollows and account links.

Runs after LINE has had its 200. Each event is applied under the LINE account whose webhook
it came to: its friendship, its link and any reply are that account's. Each event is handled once (rows are claimed inside the
transaction that applies them and marks them processed) and its outcome is written next to it,
so a refused link is on record with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from uuid import UUID

import msgspec

from channels.base import LineAccount, ProviderError
from router.config import LineConfig
from router.database import Connection, Pool
from router.delivery import outcomes
from router.line import identity as line_identity
from router.queue.loops import QueueWorker
from router.store import journey_triggers, line_webhook_events
from router.store import members as member_store

log = logging.getLogger(__name__)

CLAIM = 100


class Source(msgspec.Struct, rename="camel"):
    type: str
    user_id: str | None = None


class Link(msgspec.Struct):
    result: str
    nonce: str | None = None


class Delivery(msgspec.Struct):
    data: str


class Event(msgspec.Struct, kw_only=True, rename="camel"):
    type: str
    source: Source | None = None
    reply_token: str | None = None
    link: Link | None = None
    delivery: Delivery | None = None


class LineEventProcessor(QueueWorker):
    """Handles stored events in the order they happened, as soon as they are stored."""

    def __init__(
        self,
        pool: Pool,
        accounts: Mapping[str, LineAccount],
        configs: Mapping[str, LineConfig],
        *,
        events: bool = False,
    ) -> None:
        """`accounts` and `configs`: each configured LINE account's operations and settings."""
        super().__init__(line_webhook_events.QUEUE.queue_name, full=CLAIM)
        self._events = events  # a confirmed notification is a `delivered` delivery event
        self._pool = pool
        self._accounts = accounts
        self._configs = configs

    async def step(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await line_webhook_events.claim(conn, CLAIM)
            for row in rows:
                try:
                    async with conn.transaction():
                        event = msgspec.json.decode(row["body"], type=Event)
                        outcome = await self._handle(
                            conn, row["account"], event, row["occurred_at"]
                        )
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    outcome = f"not understood: {exc}"
                await line_webhook_events.mark_processed(conn, row["webhook_event_id"], outcome)
        return len(rows)

    async def _handle(self, conn: Connection, account: str, event: Event, at: datetime) -> str:
        user = event.source.user_id if event.source else None
        if event.type in ("follow", "unfollow") and user:
            members = await member_store.record_friendship(
                conn, account, user, event.type == "follow", at
            )
            if event.type == "follow":
                await journey_triggers.line_followed(conn, members, at, account)
            if event.type == "unfollow":
                return f"not a friend; members updated: {len(members)}"
            if members:
                return f"friend; members updated: {len(members)}"
            invited = await self._invite(account, user, event.reply_token)
            return "friend, not linked to a member" + invited
        if event.type == "accountLink" and user and event.link is not None:
            return await self._account_link(conn, account, user, event.link, at)
        if event.type == "delivery" and event.delivery is not None:
            return await _confirm(conn, event.delivery.data, self._events)
        return "ignored"

    async def _invite(self, account: str, user: str, reply_token: str | None) -> str:
        """Reply to a new, unlinked friend of `account` with the company's link invitation
        for that account, if configured."""
        config, operations = self._configs.get(account), self._accounts.get(account)
        if config is None or operations is None:
            return ""
        text, template = config.link_invite_text, config.link_url_template
        if not (text and template and reply_token):
            return ""
        try:
            token = await operations.issue_link_token(user)
            url = template.replace("{link_token}", token)
            await operations.reply_text(reply_token, f"{text}\n{url}")
        except ProviderError as exc:
            return f"; link invitation not sent (LINE {exc.status}: {exc.message})"
        except (OSError, TimeoutError) as exc:
            return f"; link invitation not sent ({type(exc).__name__})"
        return "; link invitation sent"

    async def _account_link(
        self, conn: Connection, account: str, user: str, link: Link, at: datetime
    ) -> str:
        if link.result != "ok":
            return f"link not made: LINE reported result {link.result!r}"
        if not link.nonce:
            return "link not made: no nonce"
        try:
            member_id = await line_identity.redeem_nonce(conn, link.nonce, at, account)
            await line_identity.link(conn, member_id, user, account)
        except line_identity.LinkRefused as exc:
            return f"link not made: {exc}"
        return f"linked to member {member_id}"


async def _confirm(conn: Connection, tag: str, events: bool) -> str:
    try:
        delivery_id = UUID(tag)
    except ValueError:
        return "delivery tag is not one of the router's"
    if await outcomes.confirm(conn, delivery_id, events=events):
        return f"confirmed LINE notification {delivery_id}"
    return f"no unconfirmed LINE notification {delivery_id}"


def nonce_ttl(config: LineConfig) -> timedelta:
    return timedelta(seconds=config.link_nonce_ttl_seconds)
