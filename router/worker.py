"""Outbox workers: claim due deliveries, hand them to their channel, record the outcome.

Each configured channel gets `[workers] concurrency` dispatch loops in every router process.
Loops sleep on an event set by PostgreSQL LISTEN/NOTIFY (new or re-activated deliveries) or
until the next scheduled retry; they never poll an empty table.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from channels.base import (
    Channel,
    Failed,
    GroupChannel,
    Outbound,
    OutboundGroup,
    Outcome,
    Retry,
    Sent,
    Split,
)
from router import outbox, ratelimit, send_batches
from router.config import WorkersConfig
from router.content import Content
from router.database import Pool
from router.intents import NOTIFY_CHANNEL
from router.log_safety import describe, frames

log = logging.getLogger(__name__)

# Do not resend within this margin of the provider's de-duplication window closing.
REPLAY_MARGIN = timedelta(hours=1)
IDLE_RECHECK_SECONDS = 30.0
# Send batches one group loop claims at a time (each is one multicast of up to 500).
GROUPS_PER_CLAIM = 8


class ContentCache:
    """Decoded contents by id; a campaign's body is read from PostgreSQL once per process."""

    def __init__(self, size: int = 4096) -> None:
        self._items: OrderedDict[bytes, Content] = OrderedDict()
        self._size = size

    async def get_many(self, pool: Pool, ids: Sequence[bytes]) -> dict[bytes, Content]:
        missing = [i for i in set(ids) if i not in self._items]
        if missing:
            async with pool.acquire() as conn:
                self._items.update(await outbox.load_contents(conn, missing))
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return {i: self._items[i] for i in ids if i in self._items}


class RelayedCache:
    """Relayed messages' bytes by hash, up to a memory budget: a campaign is read once."""

    def __init__(self, budget_bytes: int = 64_000_000) -> None:
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._budget = budget_bytes
        self._size = 0

    async def get(self, pool: Pool, sha256_hex: str) -> bytes | None:
        data = self._items.get(sha256_hex)
        if data is not None:
            self._items.move_to_end(sha256_hex)
            return data
        async with pool.acquire() as conn:
            data = await outbox.load_relayed(conn, sha256_hex)
        if data is None:
            return None
        self._items[sha256_hex] = data
        self._size += len(data)
        while self._size > self._budget and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self._size -= len(dropped)
        return data


class OutboxWorkers:
    """All dispatch loops of one process, plus the listener and the lease sweeper."""

    def __init__(
        self,
        pool: Pool,
        dsn: str,
        channels: Mapping[str, Channel],
        config: WorkersConfig,
        unconfirmed_after: float | None = None,
        *,
        events: bool = False,
    ) -> None:
        self._unconfirmed_after = unconfirmed_after
        self._events = events  # record delivery events with each outcome
        self._pool = pool
        self._dsn = dsn
        self._channels = dict(channels)
        self._config = config
        self._wake = {name: asyncio.Event() for name in self._channels}
        self._groups = {
            n: c
            for n, c in self._channels.items()
            if isinstance(c, GroupChannel) and c.max_group_size > 1
        }
        self._group_wake = {name: asyncio.Event() for name in self._groups}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._contents = ContentCache()
        self._relayed = RelayedCache()
        # Per channel, not per loop: at most this many deliveries are 'sending' at once.
        self._slots = {name: asyncio.Semaphore(c.max_concurrency) for name, c in channels.items()}

    async def start(self) -> None:
        async with self._pool.acquire() as conn:
            await send_batches.recover_expired(conn, events=self._events)
            await outbox.recover_expired(conn, events=self._events)
        for name in self._wake:
            self.wake(name)
        self._tasks.append(asyncio.create_task(self._listen(), name="outbox-listen"))
        self._tasks.append(asyncio.create_task(self._sweep(), name="outbox-sweep"))
        for name, channel in self._channels.items():
            size = min(self._config.batch_size, channel.requests_per_second or 1 << 30)
            run = functools.partial(self._run_batch, channel, size)
            for n in range(self._config.concurrency):
                task = self._dispatch(name, self._wake[name], run, size)
                self._tasks.append(asyncio.create_task(task, name=f"outbox-{name}-{n}"))
        for name, group_channel in self._groups.items():
            limit = min(GROUPS_PER_CLAIM, group_channel.groups_per_second or GROUPS_PER_CLAIM)
            run = functools.partial(self._run_groups, group_channel, limit)
            for n in range(self._config.concurrency):
                task = self._dispatch(name, self._group_wake[name], run, limit, groups=True)
                self._tasks.append(asyncio.create_task(task, name=f"outbox-{name}-groups-{n}"))

    async def stop(self, grace_seconds: float = 15.0) -> None:
        """Stop claiming; let batches in flight finish and be recorded."""
        self._stopping.set()
        for name in self._wake:
            self.wake(name)
        _, still = await asyncio.wait(self._tasks, timeout=grace_seconds)
        for task in still:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def wake(self, channel: str) -> None:
        if channel in self._wake:
            self._wake[channel].set()
        if channel in self._group_wake:
            self._group_wake[channel].set()

    async def _listen(self) -> None:
        while not self._stopping.is_set():
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                for name in self._wake:  # anything sent while we were away
                    self.wake(name)
                while not self._stopping.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=5.0)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("outbox listener lost its connection (%s); reconnecting", describe(exc))
                await asyncio.sleep(1.0)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.wake(payload)

    async def _sweep(self) -> None:
        interval = max(1.0, self._config.lease_seconds / 4)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
            if self._stopping.is_set():
                return
            try:
                async with self._pool.acquire() as conn:
                    for channel in await send_batches.recover_expired(conn, events=self._events):
                        self.wake(channel)
                    for channel in await outbox.recover_expired(conn, events=self._events):
                        self.wake(channel)
                    if self._unconfirmed_after is not None:
                        await outbox.expire_unconfirmed(
                            conn, self._unconfirmed_after, events=self._events
                        )
                    await ratelimit.prune(conn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("lease sweep failed: %s", describe(exc))

    async def _dispatch(
        self,
        name: str,
        wake: asyncio.Event,
        run: Callable[[], Awaitable[int]],
        full: int,
        *,
        groups: bool = False,
    ) -> None:
        """Run `run` (one claim, send and record) while it finds work, then sleep until woken
        or until the next retry is due. `full`: a claim this large suggests there is more."""
        what = f"{name} multicast" if groups else name
        while not self._stopping.is_set():
            wake.clear()
            try:
                worked = await run()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("%s dispatch failed (%s); backing off", what, describe(exc))
                await asyncio.sleep(1.0)
                continue
            except Exception as exc:
                # A bug must not stop delivery: the claim's leases expire and it is retried.
                log.error(
                    "%s dispatch loop error (%s); continuing\n%s", what, describe(exc), frames(exc)
                )
                await asyncio.sleep(1.0)
                continue
            if worked >= full:
                wake.set()  # there may be more: let a sibling loop look too
                continue
            if worked:
                continue
            await self._idle(name, wake, groups=groups)

    async def _idle(self, name: str, wake: asyncio.Event, *, groups: bool = False) -> None:
        timeout = IDLE_RECHECK_SECONDS
        next_due = send_batches.next_due if groups else outbox.next_due
        try:
            async with self._pool.acquire() as conn:
                due = await next_due(conn, name)
        except (OSError, asyncpg.PostgresError):
            due = None
        if due is not None:
            timeout = min(timeout, max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.01)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=timeout)

    async def _run_batch(self, channel: Channel, batch_size: int) -> int:
        """Claim, send and record one batch; return how many deliveries it held."""
        token = uuid.uuid4()
        limit = channel.requests_per_second
        async with self._pool.acquire() as conn:
            claimed = await outbox.claim(
                conn, channel.name, batch_size, token, self._config.lease_seconds
            )
            if not claimed:
                return 0
            if limit is not None:
                # Reserve what was claimed in the provider's shared per-second budget; the
                # window is a wall-clock second in PostgreSQL, so waiting for it is the point.
                while not await ratelimit.reserve(  # noqa: ASYNC110
                    conn, channel.name, len(claimed), limit
                ):
                    await asyncio.sleep(ratelimit.seconds_to_next_window())
        contents = await self._contents.get_many(self._pool, [c.content_id for c in claimed])
        results: list[outbox.Result] = []
        sendable: list[Outbound] = []
        window = channel.replay_window
        now = datetime.now(UTC)
        for c in claimed:
            content = contents.get(c.content_id)
            if not c.reachable:
                error, fallback = outbox.not_reachable_now(channel.name)
                results.append(
                    self._result(
                        c.delivery_id, Failed(error, fallback=fallback, dropped=True), c.attempts
                    )
                )
            elif content is None:
                results.append(
                    outbox.Result(
                        c.delivery_id, "failed", error="content missing", failure="dropped"
                    )
                )
            elif (
                window is not None
                and c.attempts > 1
                and now - c.first_attempt_at > window - REPLAY_MARGIN
            ):
                results.append(
                    self._result(c.delivery_id, self._replay_window_passed(window), c.attempts)
                )
            else:
                raw = None
                if content.relayed is not None and channel.name == "email":
                    raw = await self._relayed.get(self._pool, content.relayed.message_sha256)
                sendable.append(
                    Outbound(
                        delivery_id=c.delivery_id,
                        intent_id=c.intent_id,
                        address=c.address,
                        attempt=c.attempts,
                        content_id=c.content_id,
                        content=content,
                        relayed_message=raw,
                    )
                )
        if sendable:
            outcomes: list[Outcome | None]
            if window is None:
                outcomes = await self._send_one_by_one(channel, sendable, token)
            else:
                outcomes = list(await channel.send(sendable))
            by_attempt = {c.delivery_id: c.attempts for c in claimed}
            for message, outcome in zip(sendable, outcomes, strict=True):
                if outcome is not None:
                    results.append(
                        self._result(message.delivery_id, outcome, by_attempt[message.delivery_id])
                    )
        async with self._pool.acquire() as conn:
            await outbox.record(conn, token, results, events=self._events)
        return len(claimed)

    async def _run_groups(self, channel: GroupChannel, limit: int) -> int:
        """Claim, send and record send batches; return how many were claimed."""
        token = uuid.uuid4()
        async with self._pool.acquire() as conn:
            claimed = await send_batches.claim(
                conn, channel.name, limit, token, self._config.lease_seconds
            )
            if not claimed:
                return 0
            per_second = channel.groups_per_second
            if per_second is not None:
                while not await ratelimit.reserve(  # noqa: ASYNC110
                    conn, f"{channel.name}:groups", len(claimed), per_second
                ):
                    await asyncio.sleep(ratelimit.seconds_to_next_window())
        contents = await self._contents.get_many(self._pool, [b.content_id for b in claimed])
        results = await asyncio.gather(
            *(self._send_batch(channel, b, contents.get(b.content_id)) for b in claimed)
        )
        async with self._pool.acquire() as conn:
            await send_batches.record(conn, token, results, events=self._events)
        return len(claimed)

    async def _send_batch(
        self, channel: GroupChannel, batch: send_batches.ClaimedBatch, content: Content | None
    ) -> send_batches.BatchResult:
        """Send one batch and say what becomes of it and of each of its deliveries."""
        result = await self._send_reachable(channel, batch, content)
        if not batch.unreachable:
            return result
        error, fallback = outbox.not_reachable_now(channel.name)
        left_out = Failed(error, fallback=fallback, dropped=True)
        return msgspec.structs.replace(
            result,
            deliveries=[self._result(i, left_out, batch.attempts) for i in batch.unreachable]
            + result.deliveries,
        )

    async def _send_reachable(
        self, channel: GroupChannel, batch: send_batches.ClaimedBatch, content: Content | None
    ) -> send_batches.BatchResult:
        ids = batch.delivery_ids

        def every(outcome: Outcome) -> list[outbox.Result]:
            return [self._result(i, outcome, batch.attempts) for i in ids]

        def done(outcome: Outcome, ref: str | None = None) -> send_batches.BatchResult:
            error = None if isinstance(outcome, Sent) else outcome.error
            return send_batches.BatchResult(
                batch.batch_id, "done", every(outcome), provider_ref=ref, error=error
            )

        if not ids:
            return send_batches.BatchResult(
                batch.batch_id, "done", [], error="no delivery left to send"
            )
        if content is None:
            return done(Failed("content missing", fallback=False, dropped=True))
        window = channel.replay_window
        if (
            window is not None
            and batch.attempts > 1
            and datetime.now(UTC) - batch.first_attempt_at > window - REPLAY_MARGIN
        ):
            return done(self._replay_window_passed(window))
        outcome = await channel.send_group(
            OutboundGroup(
                batch_id=batch.batch_id,
                addresses=batch.addresses,
                attempt=batch.attempts,
                content_id=batch.content_id,
                content=content,
            )
        )
        if isinstance(outcome, Sent):
            return done(outcome, outcome.provider_ref)
        if isinstance(outcome, Failed):
            return done(outcome)
        if isinstance(outcome, Retry):
            if batch.attempts >= self._config.max_attempts:
                return done(outcome)  # _result turns it into 'failed' for every delivery
            delay = self.backoff(batch.attempts, outcome)
            return send_batches.BatchResult(
                batch.batch_id,
                "pending",
                [
                    outbox.Result(i, "pending", error=outcome.error, retry_in_seconds=delay)
                    for i in ids
                ],
                error=outcome.error,
                retry_in_seconds=delay,
            )
        assert isinstance(outcome, Split)
        return self._split(batch, outcome)

    def _split(self, batch: send_batches.ClaimedBatch, split: Split) -> send_batches.BatchResult:
        """A 400 sent nothing: fail the recipients LINE named and send the rest in a new
        batch; when LINE named none, halve the batch until the bad ones stand alone."""
        ids = batch.delivery_ids
        bad = {i for i in split.bad if 0 <= i < len(ids)}
        refused = Failed(split.error, fallback=True)
        if not bad and len(ids) == 1:
            bad = {0}
        failed = [self._result(ids[i], refused, batch.attempts) for i in sorted(bad)]
        rest = [d for i, d in enumerate(ids) if i not in bad]
        return send_batches.BatchResult(
            batch.batch_id,
            "split",
            failed,
            error=split.error,
            split_off=rest,
            halve=not bad,
        )

    @staticmethod
    def _replay_window_passed(window: timedelta) -> Failed:
        return Failed(
            "not retried: the provider's retry key expires "
            f"{window} after the first attempt, and that attempt may have been delivered",
            fallback=False,
            dropped=True,
        )

    async def _send_one_by_one(
        self, channel: Channel, batch: Sequence[Outbound], token: uuid.UUID
    ) -> list[Outcome | None]:
        """For channels without de-duplication: mark each delivery 'sending' just before it
        goes out, so a crash leaves 'uncertain' rather than a duplicate."""
        slots = self._slots[channel.name]

        async def one(message: Outbound) -> Outcome | None:
            async with slots:
                async with self._pool.acquire() as conn:
                    if not await outbox.mark_sending(conn, message.delivery_id, token):
                        return None  # lease lost: someone else owns it now
                return (await channel.send([message]))[0]

        return list(await asyncio.gather(*(one(m) for m in batch)))

    def _result(self, delivery_id: uuid.UUID, outcome: Outcome, attempts: int) -> outbox.Result:
        if isinstance(outcome, Sent):
            return outbox.Result(delivery_id, "sent", provider_ref=outcome.provider_ref)
        if isinstance(outcome, Failed):
            return outbox.Result(
                delivery_id,
                "failed",
                error=outcome.error,
                fallback=outcome.fallback,
                failure="dropped" if outcome.dropped else "bounce",
            )
        assert isinstance(outcome, Retry)
        if attempts >= self._config.max_attempts:
            return outbox.Result(
                delivery_id,
                "failed",
                error=f"gave up after {attempts} attempts: {outcome.error}",
                fallback=True,
                failure="blocked",
            )
        return outbox.Result(
            delivery_id,
            "pending",
            error=outcome.error,
            retry_in_seconds=self.backoff(attempts, outcome),
        )

    def backoff(self, attempts: int, outcome: Retry) -> float:
        """Exponential backoff with jitter (half to full step), never shorter than the provider
        asked for."""
        cap = min(
            self._config.backoff_max_seconds,
            self._config.backoff_base_seconds * 2 ** (attempts - 1),
        )
        delay = random.uniform(cap / 2, cap)
        if outcome.after_seconds is not None:
            delay = max(delay, outcome.after_seconds)
        return delay
