"""Dispatch: deliveries of one channel, sent on their own. Claim, send, record.

Each configured channel gets `[workers] concurrency` loops of this queue in every router
process. A claim reserves its requests in the provider's shared per-second budget before
anything is sent; a channel without provider de-duplication marks each delivery 'sending'
right before it goes out, so a crash leaves 'uncertain' rather than a duplicate. The
provider's answers are recorded even across a database outage (`LeasedWorker`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import asyncpg

from channels.base import (
    Channel,
    Failed,
    LineAccountSender,
    Link,
    Outbound,
    Retry,
    SendOutcome,
    Sent,
    Uncertain,
)
from router import ratelimit
from router.channel_rules import not_reachable_now, sends_relayed_bytes
from router.config import WorkersConfig
from router.content import RelayRecipient
from router.database import Connection, Pool
from router.delivery import outcomes, relay_reports
from router.delivery.caches import ContentCache, RelayedCache
from router.delivery.line_budget_gate import LineBudgetGate
from router.log_safety import describe
from router.queue import claims
from router.queue.backoff import retry_delay
from router.queue.loops import DATABASE_AWAY, LeasedWorker, Work
from router.reach import DEFAULT_LINE_ACCOUNT
from router.store import deliveries, relayed_recipients
from router.store.deliveries import BATCH_HELD, Claimed, Result
from router.store.line_budgets import Ask

# Deliveries of a claim marked 'sending' in one statement (at least the channel's
# connections), for a channel without de-duplication. The larger, the fewer statements per
# delivery, and the more deliveries a crash can leave 'uncertain' without having sent them:
# at most two chunks per loop (the one going out and the next).
MARKING_CHUNK = 8

# Do not resend within this margin of the provider's de-duplication window closing.
REPLAY_MARGIN = timedelta(hours=1)


def result_of(
    delivery_id: uuid.UUID, outcome: SendOutcome, attempts: int, config: WorkersConfig
) -> Result:
    """What to record for a channel's outcome; a retry past `max_attempts` fails for good."""
    if isinstance(outcome, Sent):
        return Result(
            delivery_id,
            "sent",
            provider_ref=outcome.provider_ref,
            queue_id=outcome.queue_id,
            relay_report=relay_reports.PASSED_ON if outcome.dsn_passed_on else None,
            **_link_fields(outcome.link),
        )
    if isinstance(outcome, Failed):
        return Result(
            delivery_id,
            "failed",
            error=outcome.error,
            fallback=outcome.fallback,
            failure="dropped" if outcome.dropped else "bounce",
            suppress=outcome.suppress.reason if outcome.suppress else None,
            suppress_detail=outcome.suppress.detail if outcome.suppress else None,
            status_code=outcome.status,
            **_link_fields(outcome.link),
        )
    if isinstance(outcome, Uncertain):
        return Result(delivery_id, "uncertain", error=outcome.error)
    assert isinstance(outcome, Retry)
    if attempts >= config.max_attempts:
        return Result(
            delivery_id,
            "failed",
            error=f"gave up after {attempts} attempts: {outcome.error}",
            fallback=True,
            failure="blocked",
            status_code=outcome.status,
            **_link_fields(outcome.link),
        )
    return Result(
        delivery_id,
        "pending",
        error=outcome.error,
        retry_in_seconds=retry_backoff(attempts, outcome, config),
        maybe_sent=outcome.maybe_sent,
        status_code=outcome.status,
        **_link_fields(outcome.link),
    )


class _LinkFields(TypedDict):
    local_ip: str | None
    tls: bool | None


def _link_fields(link: Link | None) -> _LinkFields:
    """What the delivery events report of the connection an answer came over."""
    if link is None:
        return {"local_ip": None, "tls": None}
    return {"local_ip": link.local_ip, "tls": link.encrypted}


def retry_backoff(attempts: int, outcome: Retry, config: WorkersConfig) -> float:
    return retry_delay(
        attempts, config.backoff_base_seconds, config.backoff_max_seconds, outcome.after_seconds
    )


def past_replay_window(window: timedelta | None, attempts: int, first_attempt_at: datetime) -> bool:
    """Whether a retry would come too close to the end of the provider's de-duplication."""
    return (
        window is not None
        and attempts > 1
        and datetime.now(UTC) - first_attempt_at > window - REPLAY_MARGIN
    )


def replay_window_passed(window: timedelta | None) -> Failed:
    return Failed(
        "not retried: the provider's retry key expires "
        f"{window} after the first attempt, and that attempt may have been delivered",
        fallback=False,
        dropped=True,
    )


def earliest_retry(results: Sequence[Result]) -> float | None:
    return min((r.retry_in_seconds or 0.0 for r in results if r.status == "pending"), default=None)


class ChannelLane(LeasedWorker[Work]):
    """The loops of one channel's lane of a leased queue (its deliveries, or its send groups):
    each claim is taken out of the provider's per-second budget (`bucket`) before it is sent."""

    def __init__(
        self,
        queue: claims.Leased,
        pool: Pool,
        holdings: claims.Holdings,
        channel: Channel,
        config: WorkersConfig,
        contents: ContentCache,
        *,
        full: int,
        events: bool,
        bucket: str,
        per_second: int | None,
    ) -> None:
        super().__init__(
            queue, channel.name, pool, holdings, concurrency=config.concurrency, full=full
        )
        self._config = config
        self._contents = contents
        self._events = events  # record delivery events with each outcome
        self._bucket = bucket
        self._per_second = per_second
        # A channel that sends under several LINE accounts has per-second limits per account.
        self._per_account = channel if isinstance(channel, LineAccountSender) else None

    async def claim(self, token: uuid.UUID) -> list[asyncpg.Record]:
        """Claim up to `full` due rows of the lane, then take them out of the provider's
        per-second budget, shared by every process."""
        async with self.pool.acquire() as conn:
            rows = await claims.claim(
                conn, self.table, self.lane, self.full, token, self._config.lease_seconds
            )
            if rows:
                for bucket, requests, per_second in self._buckets(rows):
                    while requests > 0:
                        taken = min(requests, per_second)
                        await ratelimit.wait_for_room(conn, bucket, taken, per_second)
                        requests -= taken
        return rows

    def _buckets(self, rows: Sequence[asyncpg.Record]) -> list[tuple[str, int, int]]:
        """The per-second buckets a claim is taken out of: the lane's, or one per LINE account
        (the account "default" keeps the lane's name, another's is suffixed `@<account>`)."""
        if self._per_account is None:
            if self._per_second is None:
                return []
            return [(self._bucket, len(rows), self._per_second)]
        counts = Counter[str](r["line_account"] for r in rows)
        found: list[tuple[str, int, int]] = []
        for account, requests in counts.items():
            per_second = self._per_second_of(account)
            if per_second is not None:
                suffix = "" if account == DEFAULT_LINE_ACCOUNT else f"@{account}"
                found.append((self._bucket + suffix, requests, per_second))
        return found

    def _per_second_of(self, account: str) -> int | None:
        assert self._per_account is not None
        return self._per_account.requests_per_second_of(account)


class DeliveryDispatch(ChannelLane[list[Result]]):
    """The loops of one channel's deliveries sent on their own."""

    def __init__(
        self,
        pool: Pool,
        holdings: claims.Holdings,
        channel: Channel,
        config: WorkersConfig,
        contents: ContentCache,
        relayed: RelayedCache,
        *,
        events: bool = False,
        budget_gate: LineBudgetGate | None = None,
    ) -> None:
        size = min(config.claim_size, channel.requests_per_second or config.claim_size)
        super().__init__(
            deliveries.QUEUE,
            pool,
            holdings,
            channel,
            config,
            contents,
            full=size,
            events=events,
            bucket=channel.name,
            per_second=channel.requests_per_second,
        )
        self._channel = channel
        self._relayed = relayed
        # Per channel, not per loop: at most this many deliveries are being sent at once.
        self._slots = asyncio.Semaphore(channel.max_concurrency)
        self._marking_chunk = max(MARKING_CHUNK, channel.max_concurrency)
        self._budget_gate = budget_gate

    async def work(self, rows: list[asyncpg.Record], token: uuid.UUID) -> list[Result]:
        """Send the claimed deliveries; what to record for each one still ours."""
        channel = self._channel
        claimed = [Claimed(*r) for r in rows]
        contents = await self._contents.get_many(self.pool, [c.content_id for c in claimed])
        results: list[Result] = []
        sendable: list[Outbound] = []
        # Relayed email: its outcome may be reported to the envelope sender, and its
        # recipients' DSN parameters go to the upstream.
        relayed = {
            c.delivery_id: (c.intent_id, content.relayed)
            for c in claimed
            if (content := contents.get(c.content_id)) is not None
            and content.relayed is not None
            and sends_relayed_bytes(channel.name)
        }
        recipients: dict[uuid.UUID, RelayRecipient] = {}
        with_parameters = [i for i, about in relayed.values() if about.recipient_dsn]
        if with_parameters:
            async with self.pool.acquire() as conn:
                recipients = await relayed_recipients.load(conn, with_parameters)
        over_budget, granted = await self._reserve_budgets(claimed, contents)
        for c in claimed:
            content = contents.get(c.content_id)
            if c.batch_hold is not None:  # settled by router.store.mail_batches, not sent
                results.append(Result(c.delivery_id, BATCH_HELD))
            elif not c.reachable:
                error, fallback = not_reachable_now(channel.name)
                left_out = Failed(error, fallback=fallback, dropped=True)
                results.append(result_of(c.delivery_id, left_out, c.attempts, self._config))
            elif c.refusal is not None:
                refused = Failed(f"not sent: {c.refusal}", fallback=True, dropped=True)
                results.append(result_of(c.delivery_id, refused, c.attempts, self._config))
            elif (budget_error := over_budget.get(c.delivery_id)) is not None:
                refused = Failed(budget_error, fallback=True, dropped=True)
                results.append(result_of(c.delivery_id, refused, c.attempts, self._config))
            elif content is None:
                results.append(
                    Result(c.delivery_id, "failed", error="content missing", failure="dropped")
                )
            elif past_replay_window(channel.replay_window, c.attempts, c.first_attempt_at):
                too_late = replay_window_passed(channel.replay_window)
                results.append(result_of(c.delivery_id, too_late, c.attempts, self._config))
            else:
                raw = None
                if content.relayed is not None and sends_relayed_bytes(channel.name):
                    raw = await self._relayed.get(self.pool, content.relayed.message_sha256)
                sendable.append(
                    Outbound(
                        delivery_id=c.delivery_id,
                        intent_id=c.intent_id,
                        address=c.address,
                        attempt=c.attempts,
                        content_id=c.content_id,
                        content=content,
                        relayed_message=raw,
                        relay_recipient=recipients.get(c.intent_id),
                        member_id=c.member_id,
                        kind=c.kind,
                        category=c.category,
                        line_account=c.line_account,
                    )
                )
        if sendable:
            if channel.replay_window is None:
                sent = await self._send_one_by_one(sendable, token)
                results.extend(r for r in sent if r is not None)
            else:
                outcomes_ = await channel.send(sendable)
                results.extend(
                    result_of(m.delivery_id, o, m.attempt, self._config)
                    for m, o in zip(sendable, outcomes_, strict=True)
                )
        if self._budget_gate is not None:
            for account, n in granted.items():
                await self._budget_gate.release(account, n)
        if relayed:
            results = [
                r
                if (about := relayed.get(r.delivery_id)) is None
                else relay_reports.marked(r, about[1], recipients.get(about[0]))
                for r in results
            ]
        return results

    async def _reserve_budgets(
        self, claimed: Sequence[Claimed], contents: Mapping[bytes, object]
    ) -> tuple[dict[uuid.UUID, str], dict[str, int]]:
        """Reserve the LINE budget of each claimed delivery about to be sent that has one and
        no grant yet, before any request: the refused ones with their errors, and how many
        were granted per account. No statement when none has a budget."""
        if self._budget_gate is None:
            return {}, {}
        gate = self._budget_gate
        by_account: dict[str, list[Ask]] = {}
        for c in claimed:
            if (
                c.line_budget_granted
                or not c.reachable
                or c.refusal is not None
                or c.batch_hold is not None
                or c.content_id not in contents
            ):
                continue
            ask = gate.ask(c.delivery_id, c.line_account, c.line_budget_id, c.line_budget, c.kind)
            if ask is not None:
                by_account.setdefault(c.line_account, []).append(ask)
        refused: dict[uuid.UUID, str] = {}
        granted: dict[str, int] = {}
        for account in sorted(by_account):
            reservation = await gate.reserve(account, by_account[account])
            refused.update(reservation.refused)
            granted[account] = len(reservation.granted)
        return refused, granted

    async def record(self, conn: Connection, token: uuid.UUID, outcome: list[Result]) -> None:
        await outcomes.record(conn, token, outcome, events=self._events)
        retry = earliest_retry(outcome)
        if retry is not None:
            self.due_in(retry)

    async def _send_one_by_one(
        self, batch: Sequence[Outbound], token: uuid.UUID
    ) -> list[Result | None]:
        """For channels without de-duplication: mark deliveries 'sending' just before they go
        out, so a crash leaves 'uncertain' rather than a duplicate. The claim is marked a
        chunk at a time (one statement each), the next chunk while the current one is sent,
        so a crash can leave at most one chunk per loop 'uncertain' that was never sent. One
        the database could not mark is not sent, and goes back to pending."""
        size = self._marking_chunk
        chunks = [batch[i : i + size] for i in range(0, len(batch), size)]
        results: list[Result | None] = []
        marking = asyncio.ensure_future(self._mark(chunks[0], token))
        try:
            for n, chunk in enumerate(chunks):
                marked = await marking
                if n + 1 < len(chunks):
                    marking = asyncio.ensure_future(self._mark(chunks[n + 1], token))
                results.extend(await asyncio.gather(*(self._send_marked(m, marked) for m in chunk)))
        finally:
            marking.cancel()
        return results

    async def _mark(self, chunk: Sequence[Outbound], token: uuid.UUID) -> set[uuid.UUID] | str:
        """The deliveries now 'sending' (the others' leases were lost), or why none is."""
        try:
            async with self.pool.acquire() as conn:
                return await deliveries.mark_sending(conn, [m.delivery_id for m in chunk], token)
        except DATABASE_AWAY as exc:
            return f"not sent: the database was out of reach ({describe(exc)})"

    async def _send_marked(self, message: Outbound, marked: set[uuid.UUID] | str) -> Result | None:
        if isinstance(marked, str):
            return Result(message.delivery_id, "pending", error=marked, retry_in_seconds=0.0)
        if message.delivery_id not in marked:
            return None  # lease lost: someone else owns it now
        async with self._slots:
            (outcome,) = await self._channel.send([message])
        return result_of(message.delivery_id, outcome, message.attempt, self._config)
