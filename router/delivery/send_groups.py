"""Send groups: claimed whole, sent as one multicast under the group's retry key, recorded
once on the group row (its grouped deliveries take their state from it); deliveries that leave
the group (unreachable now, refused, failed for good with it) are recorded one by one with
their fallbacks; a 400 that names recipients moves the rest to a new group.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence

import asyncpg
import msgspec

from channels.base import Failed, GroupChannel, OutboundGroup, Outcome, Retry, Sent, Split
from router.channel_rules import not_reachable_now
from router.config import WorkersConfig
from router.content import Content
from router.database import Connection, Pool
from router.delivery import outcomes
from router.delivery.caches import ContentCache
from router.delivery.dispatch import (
    ChannelLane,
    past_replay_window,
    replay_window_passed,
    result_of,
    retry_backoff,
)
from router.delivery.line_budget_gate import LineBudgetGate
from router.metrics import count_grouped
from router.queue import claims
from router.store import delivery_events, send_groups
from router.store.deliveries import Result
from router.store.line_budgets import Ask
from router.store.send_groups import ClaimedGroup

# The error of a grouped delivery its group's earlier reservation refused (the group is being
# retried: the reservation, and its error, are not made again).
REFUSED_BEFORE = "not sent: LINE budget: refused when its send group was reserved"

# Send groups one loop claims at a time (each is one multicast of up to 500).
GROUPS_PER_CLAIM = 8


class GroupResult(msgspec.Struct, frozen=True):
    """What to record for one claimed group: its own state, which the deliveries still in it
    take, and the result of each delivery that leaves it (`deliveries`).

    `staying`: what the group's outcome means for each delivery still in it, for their events
    only (their rows are not written). `split_off`: deliveries that go on, unsent, in a new
    group (after a 400 that named other recipients). `halve`: split them into two new groups
    instead of one. `maybe_sent`: the attempt timed out, LINE may have taken it."""

    group_id: uuid.UUID
    status: str  # 'sent' | 'pending' | 'done' (every delivery left) | 'split'
    deliveries: list[Result]
    provider_ref: str | None = None
    error: str | None = None
    retry_in_seconds: float = 0.0
    split_off: list[uuid.UUID] = msgspec.field(default_factory=list)
    halve: bool = False
    staying: list[Result] = msgspec.field(default_factory=list)
    maybe_sent: bool = False
    # How many deliveries stay in the group and take its status (for the metrics).
    staying_count: int = 0


async def record(
    conn: Connection, token: uuid.UUID, results: Sequence[GroupResult], *, events: bool = False
) -> int:
    """Store the outcomes of claimed groups; returns how many were still ours."""
    ours = 0
    async with conn.transaction():
        for r in results:
            channel = await send_groups.record(
                conn,
                r.group_id,
                token,
                r.status,
                r.provider_ref,
                r.error,
                r.retry_in_seconds,
                r.maybe_sent,
            )
            if channel is None:
                continue  # the lease was lost; the group's new holder records it
            ours += 1
            # One group's leavers per statement: the UPDATE joins its list of ids to
            # deliveries, and with a misleading estimate PostgreSQL reads the list once per
            # row; 4,000 at once (eight groups) took 6 s that way.
            await outcomes.record_grouped(conn, r.group_id, r.deliveries, events=events)
            if r.staying_count:
                count_grouped(channel, r.status, r.staying_count)
            if events and r.staying:
                await delivery_events.record(
                    conn, [e for x in r.staying if (e := outcomes.event_of(x, channel))]
                )
            if r.split_off:
                await send_groups.split_off(conn, r.group_id, channel, r.split_off, r.halve)
    return ours


class SendGroupDispatch(ChannelLane[list[GroupResult]]):
    """The loops of one channel's send groups."""

    def __init__(
        self,
        pool: Pool,
        holdings: claims.Holdings,
        channel: GroupChannel,
        config: WorkersConfig,
        contents: ContentCache,
        *,
        events: bool = False,
        budget_gate: LineBudgetGate | None = None,
    ) -> None:
        limit = min(GROUPS_PER_CLAIM, channel.groups_per_second or GROUPS_PER_CLAIM)
        super().__init__(
            send_groups.QUEUE,
            pool,
            holdings,
            channel,
            config,
            contents,
            full=limit,
            events=events,
            bucket=f"{channel.name}:groups",
            per_second=channel.groups_per_second,
        )
        self._channel = channel
        self._budget_gate = budget_gate

    def _per_second_of(self, account: str) -> int | None:
        assert self._per_account is not None
        return self._per_account.groups_per_second_of(account)

    async def work(self, rows: list[asyncpg.Record], token: uuid.UUID) -> list[GroupResult]:
        """Send the claimed groups; what becomes of each."""
        claimed = [ClaimedGroup(*r) for r in rows]
        contents = await self._contents.get_many(self.pool, [g.content_id for g in claimed])
        over_budget, granted = await self._reserve_budgets(claimed, contents)
        sent = list(
            await asyncio.gather(
                *(self._send(g, contents.get(g.content_id), over_budget) for g in claimed)
            )
        )
        if self._budget_gate is not None:
            for account, n in granted.items():
                await self._budget_gate.release(account, n)
        return sent

    async def _reserve_budgets(
        self, claimed: Sequence[ClaimedGroup], contents: Mapping[bytes, Content]
    ) -> tuple[dict[uuid.UUID, str], dict[str, int]]:
        """Reserve the LINE budget of the claimed groups' recipients not granted yet, before
        any request (one transaction per account): the refused deliveries with their errors,
        and how many were granted per account. No statement when no group has a budget."""
        if self._budget_gate is None:
            return {}, {}
        gate = self._budget_gate
        refused: dict[uuid.UUID, str] = {}
        by_account: dict[str, tuple[list[Ask], list[uuid.UUID]]] = {}
        for g in claimed:
            if g.content_id not in contents:
                continue
            if g.budget_reserved:  # a retry: reserved before, its refused ones stay out
                refused.update((d, REFUSED_BEFORE) for d in g.budget_refused)
                continue
            asks = [
                ask
                for d, own, kind in zip(g.delivery_ids, g.own_budgets, g.kinds, strict=True)
                if (ask := gate.ask(d, g.line_account, g.line_budget_id, own, kind)) is not None
            ]
            if asks:
                wanted, groups = by_account.setdefault(g.line_account, ([], []))
                wanted.extend(asks)
                groups.append(g.group_id)
        granted: dict[str, int] = {}
        for account in sorted(by_account):
            wanted, groups = by_account[account]
            reservation = await gate.reserve(account, wanted, groups)
            refused.update(reservation.refused)
            granted[account] = len(reservation.granted)
        return refused, granted

    async def record(self, conn: Connection, token: uuid.UUID, outcome: list[GroupResult]) -> None:
        await record(conn, token, outcome, events=self._events)
        retries = [r.retry_in_seconds for r in outcome if r.status == "pending"]
        if retries:
            self.due_in(min(retries))

    async def _send(
        self, group: ClaimedGroup, content: Content | None, over_budget: Mapping[uuid.UUID, str]
    ) -> GroupResult:
        """Send one group and say what becomes of it and of each of its deliveries."""
        left_out_for_budget: list[Result] = []
        if over_budget and any(d in over_budget for d in group.delivery_ids):
            # Refused by their LINE budget: they leave the group unsent, with fallback.
            keep = [
                (d, a)
                for d, a in zip(group.delivery_ids, group.addresses, strict=True)
                if d not in over_budget
            ]
            left_out_for_budget = [
                self._result(d, Failed(over_budget[d], fallback=True, dropped=True), group.attempts)
                for d in group.delivery_ids
                if d in over_budget
            ]
            group = msgspec.structs.replace(
                group, delivery_ids=[d for d, _ in keep], addresses=[a for _, a in keep]
            )
        result = await self._send_reachable(group, content)
        if not group.unreachable and not left_out_for_budget:
            return result
        error, fallback = not_reachable_now(self._channel.name)
        left_out = Failed(error, fallback=fallback, dropped=True)
        return msgspec.structs.replace(
            result,
            deliveries=[self._result(i, left_out, group.attempts) for i in group.unreachable]
            + left_out_for_budget
            + result.deliveries,
        )

    async def _send_reachable(self, group: ClaimedGroup, content: Content | None) -> GroupResult:
        ids = group.delivery_ids

        def done(outcome: Failed | Retry) -> GroupResult:
            every = [self._result(i, outcome, group.attempts) for i in ids]
            return GroupResult(group.group_id, "done", every, error=outcome.error)

        if not ids:
            return GroupResult(group.group_id, "done", [], error="no delivery left to send")
        if content is None:
            return done(Failed("content missing", fallback=False, dropped=True))
        window = self._channel.replay_window
        if past_replay_window(window, group.attempts, group.first_attempt_at):
            return done(replay_window_passed(window))
        outcome = await self._channel.send_group(
            OutboundGroup(
                group_id=group.group_id,
                addresses=group.addresses,
                attempt=group.attempts,
                content_id=group.content_id,
                content=content,
                line_account=group.line_account,
            )
        )
        if isinstance(outcome, Sent):
            staying = (
                [self._result(i, outcome, group.attempts) for i in ids] if self._events else []
            )
            return GroupResult(
                group.group_id,
                "sent",
                [],
                provider_ref=outcome.provider_ref,
                staying=staying,
                staying_count=len(ids),
            )
        if isinstance(outcome, Failed):
            return done(outcome)
        if isinstance(outcome, Retry):
            if group.attempts >= self._config.max_attempts:
                return done(outcome)  # result_of turns it into 'failed' for every delivery
            delay = retry_backoff(group.attempts, outcome, self._config)
            staying = (
                [Result(i, "pending", error=outcome.error) for i in ids] if self._events else []
            )
            return GroupResult(
                group.group_id,
                "pending",
                [],
                error=outcome.error,
                retry_in_seconds=delay,
                staying=staying,
                maybe_sent=outcome.maybe_sent,
                staying_count=len(ids),
            )
        assert isinstance(outcome, Split)
        return self._split(group, outcome)

    def _split(self, group: ClaimedGroup, split: Split) -> GroupResult:
        """Nothing was sent: fail the recipients LINE named in a 400 (or those the month's
        quota cannot cover) and send the rest in a new group; when LINE named none, halve
        the group until the bad ones stand alone."""
        ids = group.delivery_ids
        bad = {i for i in split.bad if 0 <= i < len(ids)}
        refused = Failed(split.error, fallback=True, dropped=split.dropped)
        if not bad and len(ids) == 1:
            bad = {0}
        failed = [self._result(ids[i], refused, group.attempts) for i in sorted(bad)]
        rest = [d for i, d in enumerate(ids) if i not in bad]
        return GroupResult(
            group.group_id, "split", failed, error=split.error, split_off=rest, halve=not bad
        )

    def _result(self, delivery_id: uuid.UUID, outcome: Outcome, attempts: int) -> Result:
        return result_of(delivery_id, outcome, attempts, self._config)
