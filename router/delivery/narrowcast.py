"""The narrowcast queue: a campaign's LINE part sent as one LINE narrowcast, then followed.

Once its campaign has finished fanning out, a narrowcast's row is claimed inside a
transaction (`line_narrowcasts.DUE`) that marks the group's deliveries 'sending', sends the
narrowcast under the campaign's retry key and records LINE's request id. A process that stops
before that commits leaves everything as it was: the next attempt sends again under the same
key, and LINE answers 409 with the first request's id, so nobody gets it twice. The row is
then polled (`GET /v2/bot/message/progress/narrowcast`) every `[line] narrowcast_poll_seconds`
until LINE says `succeeded` or `failed`, and the outcome is recorded for every delivery at
once. LINE reports only totals: a delivery 'sent' by a narrowcast says LINE sent the
narrowcast, not that this member received it (one who blocked the account is skipped by LINE
and counted nowhere per member). Past `[line] narrowcast_give_up_seconds` without an end,
the deliveries become 'uncertain'.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from channels.base import (
    Failed,
    Narrowcaster,
    NarrowcastProgress,
    OutboundNarrowcast,
    Retry,
    Sent,
)
from router.channel_rules import not_reachable_now
from router.config import LineConfig, WorkersConfig
from router.database import Connection, Pool
from router.delivery import outcomes
from router.delivery.caches import ContentCache
from router.delivery.dispatch import REPLAY_MARGIN
from router.queue.backoff import retry_delay
from router.queue.loops import QueueWorker
from router.store import delivery_events
from router.store import line_narrowcasts as store
from router.store.deliveries import Result
from router.store.delivery_events import Recorded
from router.store.line_narrowcasts import DueNarrowcast, Progress

log = logging.getLogger(__name__)

# LINE keeps a retry key for 24 hours; no resend is tried within REPLAY_MARGIN of that.
RETRY_KEY_LIFETIME = timedelta(hours=24)


def _timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _progress(got: NarrowcastProgress) -> Progress:
    return Progress(
        phase=got.phase,
        success_count=got.success_count,
        failure_count=got.failure_count,
        target_count=got.target_count,
        error_code=got.error_code,
        failed_description=got.failed_description,
        accepted_time=_timestamp(got.accepted_time),
        completed_time=_timestamp(got.completed_time),
    )


class NarrowcastWorker(QueueWorker):
    """One step sends a due narrowcast or polls an accepted one."""

    def __init__(
        self,
        pool: Pool,
        sender: Narrowcaster,
        line: LineConfig,
        workers: WorkersConfig,
        *,
        events: bool = False,
    ) -> None:
        # Nothing announces that a campaign finished fanning out or that a poll is due in
        # another process: look again every poll interval.
        super().__init__(
            store.DUE.queue_name, recheck_seconds=min(30.0, line.narrowcast_poll_seconds)
        )
        self._pool = pool
        self._sender = sender
        self._poll_seconds = line.narrowcast_poll_seconds
        self._give_up_seconds = line.narrowcast_give_up_seconds
        self._workers = workers
        self._events = events
        self._contents = ContentCache(size=16)

    async def step(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await store.claim(conn)
            if row is None:
                return 0
            if row.status == "waiting":
                await self._send(conn, row)
            else:
                await self._poll(conn, row)
        self.due_in(self._poll_seconds)
        return 1

    async def _send(self, conn: Connection, row: DueNarrowcast) -> None:
        token = row.claim_token
        if token is None:
            token = uuid.uuid4()
            count, left = await store.hold_deliveries(conn, row.send_group_id, token)
            await store.record_token(conn, row.campaign_id, token)
            if left:
                _, fallback = not_reachable_now(store.LINE_CHANNEL)
                await self._fail(conn, left, token, _LEFT_SINCE, fallback=fallback, dropped=True)
        else:
            count = await store.held_count(conn, row.send_group_id, token)
        row = msgspec.structs.replace(row, claim_token=token)
        if count == 0:
            await store.record_end(conn, row.campaign_id, "cancelled", "no delivery left to send")
            await store.close_group(conn, row.send_group_id, None)
            return
        first = row.first_attempt_at
        if first is not None and datetime.now(UTC) - first > RETRY_KEY_LIFETIME - REPLAY_MARGIN:
            await self._end(conn, row, "failed", Failed(_REPLAY_PASSED, fallback=True))
            return
        content_id = await store.content_id(conn, row.send_group_id)
        contents = await self._contents.get_many(self._pool, [content_id] if content_id else [])
        if content_id is None or content_id not in contents:
            await self._end(conn, row, "failed", Failed("content missing", fallback=False))
            return
        outcome = await self._sender.narrowcast(
            OutboundNarrowcast(
                key_id=row.campaign_id,
                audience_group_ids=row.audience_group_ids,
                exclude_audience_group_ids=row.exclude_audience_group_ids,
                recipients=count,
                content_id=content_id,
                content=contents[content_id],
                line_account=row.line_account,
            )
        )
        if isinstance(outcome, Sent):
            log.info("LINE narrowcast of campaign %s accepted", row.campaign_id)
            await store.record_accepted(conn, row, outcome.provider_ref, count, self._poll_seconds)
        elif isinstance(outcome, Retry) and outcome.throttled:
            # LINE allows 60 narrowcasts an hour: a refusal for that limit is not a failed
            # attempt (it would use up the attempts within the hour); the retry key's
            # lifetime above still bounds how long it is tried.
            delay = outcome.after_seconds or self._workers.backoff_max_seconds
            await store.record_retry(conn, row.campaign_id, outcome.error, delay, counts="nothing")
            self.due_in(delay)
        elif isinstance(outcome, Retry) and row.attempts + 1 < self._workers.max_attempts:
            delay = retry_delay(
                row.attempts + 1,
                self._workers.backoff_base_seconds,
                self._workers.backoff_max_seconds,
                outcome.after_seconds,
            )
            await store.record_retry(conn, row.campaign_id, outcome.error, delay, counts="attempt")
            self.due_in(delay)
        else:
            if isinstance(outcome, Retry):
                outcome = Failed(f"gave up after {row.attempts + 1} attempts: {outcome.error}")
            assert isinstance(outcome, Failed)
            await self._end(conn, row, "failed", outcome)

    async def _poll(self, conn: Connection, row: DueNarrowcast) -> None:
        assert row.request_id is not None and row.accepted_at is not None
        overdue = datetime.now(UTC) - row.accepted_at > timedelta(seconds=self._give_up_seconds)
        got = await self._sender.narrowcast_progress(row.request_id, row.line_account)
        if isinstance(got, Retry | Failed):
            if overdue:
                await self._unknown(conn, row, got.error)
            else:
                await store.record_retry(
                    conn, row.campaign_id, got.error, self._poll_seconds, counts="poll"
                )
            return
        progress = _progress(got)
        ref = row.request_id
        if progress.phase == "succeeded":
            await store.record_progress(conn, row.campaign_id, progress, "succeeded", 0)
            await self._end(conn, row, "succeeded", Sent(provider_ref=ref))
        elif progress.phase == "failed":
            await store.record_progress(conn, row.campaign_id, progress, "failed", 0)
            reason = progress.failed_description or "no reason given"
            error = f"LINE narrowcast {ref} failed: {reason} (errorCode {progress.error_code})"
            await self._end(conn, row, "failed", Failed(error, fallback=True))
        elif overdue:
            await store.record_progress(conn, row.campaign_id, progress, "accepted", 0)
            await self._unknown(conn, row, f"LINE still reports phase {progress.phase!r}")
        else:
            await store.record_progress(
                conn, row.campaign_id, progress, "accepted", self._poll_seconds
            )

    async def _unknown(self, conn: Connection, row: DueNarrowcast, why: str) -> None:
        error = (
            f"LINE narrowcast {row.request_id} did not report an end within"
            f" {self._give_up_seconds:g} s ({why}); it may or may not have been sent"
        )
        assert row.claim_token is not None
        await store.finish_deliveries(
            conn, row.send_group_id, row.claim_token, "uncertain", row.request_id, error
        )
        await store.record_end(conn, row.campaign_id, "unknown", error)
        await store.close_group(conn, row.send_group_id, row.request_id)

    async def _end(
        self, conn: Connection, row: DueNarrowcast, status: str, outcome: Sent | Failed
    ) -> None:
        """Record the narrowcast's end for every delivery it held, at once."""
        token = row.claim_token
        assert token is not None
        if isinstance(outcome, Sent):
            done = await store.finish_deliveries(
                conn,
                row.send_group_id,
                token,
                "sent",
                outcome.provider_ref,
                None,
                returning=self._events,
            )
            if self._events:
                await delivery_events.record(
                    conn,
                    [Recorded(r["id"], "delivered", response=outcome.provider_ref) for r in done],
                )
            await store.record_end(conn, row.campaign_id, status, None)
            await store.close_group(conn, row.send_group_id, outcome.provider_ref)
            return
        held = await conn.fetch(
            "SELECT id FROM deliveries WHERE send_group_id = $1 AND claim_token = $2"
            " AND status = 'sending'",
            row.send_group_id,
            token,
        )
        await self._fail(
            conn,
            [r["id"] for r in held],
            token,
            outcome.error,
            fallback=outcome.fallback,
            dropped=outcome.dropped,
            provider_ref=row.request_id,
        )
        await store.record_end(conn, row.campaign_id, status, outcome.error)
        await store.close_group(conn, row.send_group_id, row.request_id)

    async def _fail(
        self,
        conn: Connection,
        ids: list[uuid.UUID],
        token: uuid.UUID,
        error: str,
        *,
        fallback: bool,
        dropped: bool,
        provider_ref: str | None = None,
    ) -> None:
        """Fail these held deliveries, activating their fallbacks (through the ordinary
        outcome path, so events and fallbacks are those of any failed delivery)."""
        failure = "dropped" if dropped else "bounce"
        await outcomes.record(
            conn,
            token,
            [
                Result(
                    i,
                    "failed",
                    provider_ref=provider_ref,
                    error=error,
                    fallback=fallback,
                    failure=failure,
                )
                for i in ids
            ],
            events=self._events,
        )


_LEFT_SINCE = (
    "not counted as sent: since the intent was accepted the member unfollowed, was unlinked or"
    " opted out of LINE. A narrowcast cannot leave one user out of a LINE audience, so if they"
    " are still a friend at LINE they receive it anyway"
)
_REPLAY_PASSED = (
    "not sent: LINE's 24-hour retry-key window for this narrowcast has (nearly) passed, so a"
    " resend could reach members twice"
)
