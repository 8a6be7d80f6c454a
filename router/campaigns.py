"""Campaigns: one intent per member of (union of audiences) minus (union of exclusions).

The request is answered at once; its content is validated and stored then, once. The fan-out
runs afterwards in chunks of members in id order, each chunk one transaction and one
INSERT ... SELECT (`router.store.campaign_chunks`) routed by a table `plan` itself decides
(`router.intake.routing_sql`), with the cursor advanced in the same transaction. A member
gets one intent per campaign (a unique index), so redoing a chunk after a crash, or two
routers fanning out one campaign, adds nothing twice. A chunk that fails the same way
`fan_out_max_failures` times in a row stops the campaign as `failed`, with the reason.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal
from uuid import UUID

import asyncpg
import msgspec

from router import audiences
from router.campaign_units import UnitName, derived_unit
from router.content import Content, EmailContent, LineContent, check_content, content_id
from router.database import Connection, Pool
from router.database_outage import is_unavailable
from router.identifiers import LineAccountName
from router.intake import IntakeChannels
from router.intake.routing_sql import RoutingSql, routing_sql
from router.intents import MAX_SCHEDULE_AHEAD, Category, Kind, Route, SendAt, Tags
from router.line import narrowcast
from router.line.narrowcast import NarrowcastView
from router.line_plans import LineBudget, budget_errors
from router.log_safety import describe
from router.metrics import INTENTS_ACCEPTED
from router.problems import FieldError
from router.queue import claims
from router.queue.loops import QueueWorker
from router.queue.wakeups import Notices, notify
from router.reach import DEFAULT_LINE_ACCOUNT
from router.store import (
    campaign_chunks,
    campaign_counts,
    campaign_ranges,
    deliveries,
    delivery_events,
    send_groups,
)
from router.store.row_ids import uuid7
from router.wire_rules import Alternatives, unmet

log = logging.getLogger(__name__)

# A campaign whose fan-out has not started: claimed inside the transaction that splits its
# members into ranges (`router.store.campaign_ranges`), which the fan-out loops then share.
FANNING_OUT = claims.Locked(
    table="campaigns",
    columns="id, template::text AS template, content_id",
    pending=(
        "status = 'fanning_out'"
        " AND NOT EXISTS (SELECT 1 FROM campaign_ranges r WHERE r.campaign_id = campaigns.id)"
    ),
    order="created_at",
)


class CampaignRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    audience_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=100)]
    exclude_audience_ids: Annotated[list[UUID], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    route: Route = "prefer_line"
    kind: Kind = "promotional"
    category: Category | None = None
    email: EmailContent | None = None
    line: LineContent | None = None
    tags: Tags = msgspec.field(default_factory=list)
    send_at: SendAt | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    # How the LINE part goes out: multicasts of up to 500, or one narrowcast to the
    # audiences' synced LINE audiences (router.line.narrowcast).
    line_delivery: Literal["multicast", "narrowcast"] = "multicast"
    # The LINE aggregation unit its pushes and multicasts are counted under
    # (router.campaign_units); derived from the campaign's id when not given.
    line_aggregation_unit: UnitName | None = None
    # The LINE Official Account it goes out under, and what it may spend on LINE (None: the
    # account's default_budget for a promotional campaign, unlimited otherwise).
    line_account: LineAccountName = DEFAULT_LINE_ACCOUNT
    line_budget: LineBudget | None = None
    # Answer what the campaign would send and cost, and send nothing.
    dry_run: bool = False

    alternatives: ClassVar[tuple[Alternatives, ...]] = (
        Alternatives(("email", "line"), "give email content, LINE messages, or both"),
    )


class ChannelCount(msgspec.Struct):
    channel: str
    status: str
    deliveries: int
    # LINE multicast requests these deliveries went out in (0: each on its own).
    multicasts: int = 0


class CampaignView(msgspec.Struct, kw_only=True):
    id: UUID
    name: str | None
    status: Literal["fanning_out", "sending", "cancelled", "failed"]
    targeted: int
    accepted: int
    rejected: int
    deliveries: list[ChannelCount]
    # Why the fan-out stopped (status `failed`), or why its last chunk failed.
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    narrowcast: NarrowcastView | None = None  # with "line_delivery": "narrowcast"
    # The name LINE counts its pushes' and multicasts' impressions and clicks under.
    line_aggregation_unit: str | None = None
    # The LINE Official Account it goes out under.
    line_account: str = DEFAULT_LINE_ACCOUNT


def check(request: CampaignRequest) -> list[FieldError]:
    errors = [FieldError(rule.fields[0], rule.message) for rule in unmet(request)]
    errors.extend(budget_errors(request.line_budget, "line_budget"))
    errors.extend(check_content(Content(email=request.email, line=request.line)))
    return errors


def unworkable(request: CampaignRequest) -> list[FieldError]:
    """What makes a valid request one the router will not carry out (answered with 422)."""
    errors: list[FieldError] = []
    if set(request.audience_ids) & set(request.exclude_audience_ids):
        errors.append(FieldError("exclude_audience_ids", "an audience cannot be both in and out"))
    if request.send_at is not None and request.send_at - datetime.now(UTC) > MAX_SCHEDULE_AHEAD:
        # each intent would be refused for it at fan-out
        errors.append(FieldError("send_at", "at most 30 days ahead"))
    if request.line_delivery == "narrowcast":
        errors.extend(narrowcast.unworkable(request.route))
    return errors


# Fields added to campaign requests over time, with the value that means "not given": a
# request that leaves them so is fingerprinted as it was before they existed, so its
# idempotency key still matches the campaign it made then.
_ADDED_FIELDS: tuple[tuple[str, object], ...] = (
    ("line_aggregation_unit", None),
    ("line_account", DEFAULT_LINE_ACCOUNT),
    ("line_budget", None),
    ("dry_run", False),
)


def fingerprints(request: CampaignRequest) -> list[bytes]:
    """The request's SHA-256 as stored now, then as stored by earlier versions (which
    wrote `line_aggregation_unit` even when not given)."""
    fields = msgspec.to_builtins(request)
    current = {k: v for k, v in fields.items() if (k, v) not in _ADDED_FIELDS}
    found = [hashlib.sha256(msgspec.json.encode(current)).digest()]
    if request.line_aggregation_unit is None:
        legacy = {
            k: v
            for k, v in fields.items()
            if (k, v) not in _ADDED_FIELDS or k == "line_aggregation_unit"
        }
        found.append(hashlib.sha256(msgspec.json.encode(legacy)).digest())
    return found


class AudienceOfAnotherAccount(Exception):
    """A LINE user ID audience of another LINE account than the campaign's: its IDs name
    nobody under the campaign's account, so it would match no one."""

    def __init__(self, audience: UUID, account: str, wanted: str) -> None:
        super().__init__(
            f"audience {audience} holds LINE user IDs of the account {account!r}, and the"
            f" campaign goes out under {wanted!r}: its IDs name nobody there"
        )
        self.audience = audience


async def check_audiences(conn: Connection, request: CampaignRequest) -> None:
    """Raise KeyError naming an audience that does not exist, or AudienceOfAnotherAccount."""
    wanted = set(request.audience_ids) | set(request.exclude_audience_ids)
    found = {
        r["id"]: (r["type"], r["line_account"])
        for r in await conn.fetch(
            "SELECT id, type, line_account FROM audiences WHERE id = ANY($1::uuid[])", wanted
        )
    }
    for audience in sorted(wanted - set(found)):
        raise KeyError(str(audience))
    for audience, (kind, account) in sorted(found.items()):
        if kind == "line_user_id" and account != request.line_account:
            raise AudienceOfAnotherAccount(audience, account, request.line_account)


async def create(conn: Connection, request: CampaignRequest) -> tuple[UUID, bool]:
    """Store the campaign (or find the one with this idempotency key); True if new.

    Raises KeyError naming an audience that does not exist, ValueError on a key reused with
    another request."""
    fingerprint, *earlier = fingerprints(request)
    if request.idempotency_key is not None:
        row = await conn.fetchrow(
            "SELECT id, request_sha256 FROM campaigns WHERE idempotency_key = $1",
            request.idempotency_key,
        )
        if row is not None:
            if row["request_sha256"] not in (fingerprint, *earlier):
                raise ValueError("this idempotency_key was used with a different campaign")
            return row["id"], False
    await check_audiences(conn, request)
    campaign_id = uuid7()
    unit = request.line_aggregation_unit or derived_unit(campaign_id)
    content = await _store_content(conn, request, unit)
    await conn.execute(
        "INSERT INTO campaigns (id, name, audience_ids, exclude_audience_ids, template,"
        " idempotency_key, request_sha256, status, content_id, line_aggregation_unit,"
        " line_account)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, 'fanning_out', $8, $9, $10)",
        campaign_id,
        request.name,
        request.audience_ids,
        request.exclude_audience_ids,
        msgspec.json.encode(request).decode(),
        request.idempotency_key,
        fingerprint,
        content,
        unit,
        request.line_account,
    )
    if request.line_delivery == "narrowcast":
        await narrowcast.create(
            conn,
            campaign_id,
            request.audience_ids,
            request.exclude_audience_ids,
            request.send_at,
            request.line_account,
        )
    await notify(conn, FANNING_OUT.queue_name)
    return campaign_id, True


async def _store_content(conn: Connection, request: CampaignRequest, unit: str | None) -> bytes:
    """Store the campaign's content once, canonical, as every one of its intents will name it
    (checked by `check` before), with its LINE aggregation unit; its id."""
    encoded = Content(email=request.email, line=request.line, line_aggregation_unit=unit).encode()
    stored = content_id(encoded)
    await conn.execute(
        "INSERT INTO contents (id, body) VALUES ($1, $2::jsonb) ON CONFLICT DO NOTHING",
        stored,
        encoded.decode(),
    )
    return stored


def _found_in(first: int) -> str:
    """SQL: a row (`hit`) when the member is in an audience whose id is in ${first} (email
    audiences), ${first + 1} (phone) or ${first + 2} (LINE user ID); no row otherwise. One
    primary-key probe of audience_entries per type with the member's own key, stopping at the
    first hit; written as a LATERAL subquery with LIMIT so that PostgreSQL cannot turn it into
    a hash of the whole audience, whatever the tables' statistics say."""
    probes = " UNION ALL ".join(
        "SELECT 1 AS hit FROM audience_entries e"  # noqa: S608 - constants only
        f" WHERE e.audience_id = ANY(${first + n}::uuid[]) AND e.value_sha256 = {key}"
        for n, key in enumerate(audiences.MEMBER_KEY.values())
    )
    return f"({probes} LIMIT 1)"


# Members (`members m`) in any of the campaign's audiences ($2..$4) and in none of its
# exclusions ($5..$7): joins to put after `FROM members m`, and the condition that goes with them.
AUDIENCE_JOINS = (
    f"JOIN LATERAL {_found_in(2)} AS inside ON true"
    f" LEFT JOIN LATERAL {_found_in(5)} AS outside ON true"
)
AUDIENCE_WHERE = "outside.hit IS NULL"


async def ids_by_type(conn: Connection, ids: list[UUID]) -> list[list[UUID]]:
    """The audience ids of each type, in `audiences.MEMBER_KEY` order."""
    found: dict[str, list[UUID]] = {kind: [] for kind in audiences.MEMBER_KEY}
    for r in await conn.fetch(
        "SELECT type, array_agg(id) AS ids FROM audiences WHERE id = ANY($1::uuid[]) GROUP BY type",
        ids,
    ):
        found[r["type"]] = r["ids"]
    return list(found.values())


async def cancel(conn: Connection, campaign_id: UUID) -> bool:
    """Stop the fan-out and every delivery not yet handed to a provider."""
    async with conn.transaction():
        found = await conn.fetchval(
            "UPDATE campaigns SET status = 'cancelled', updated_at = now() WHERE id = $1"
            " RETURNING true",
            campaign_id,
        )
        if not found:
            return False
        await send_groups.cancel_pending(conn, campaign_id)
        await deliveries.cancel_campaign(conn, campaign_id)
    return True


async def view(conn: Connection, campaign_id: UUID) -> CampaignView | None:
    row = await conn.fetchrow(
        "SELECT id, name, status, targeted, accepted, rejected, created_at, updated_at,"
        " line_aggregation_unit, line_account,"
        " CASE WHEN status = 'failed' THEN 'the fan-out stopped: a chunk failed '"
        "   || failed_chunks || ' times in a row (' || last_error || ')'"
        " ELSE last_error END AS error"
        " FROM campaigns WHERE id = $1",
        campaign_id,
    )
    if row is None:
        return None
    # Read before the counts: a narrowcast's end and its deliveries' commit together, so an
    # end shown here is never shown beside deliveries still 'sending'.
    sent_as_narrowcast = await narrowcast.view(conn, campaign_id)
    counts = [
        ChannelCount(c.channel, c.status, c.deliveries, c.send_groups)
        for c in await campaign_counts.read(conn, campaign_id)
    ]
    return CampaignView(deliveries=counts, narrowcast=sent_as_narrowcast, **dict(row))


class _Stopped(Exception):
    """The campaign was cancelled or stopped while a chunk of it was being made."""


class CampaignFanOut(QueueWorker):
    """Runs fan-outs: splits a new campaign's members into ranges, then makes one chunk of a
    range per step, with `workers` loops per process (and every router process) working on
    the ranges of one campaign at once. A campaign becomes `sending` in the transaction that
    finishes its last range."""

    def __init__(
        self,
        pool: Pool,
        channels: Callable[[], IntakeChannels],
        chunk: int,
        *,
        max_failures: int,
        events: bool,
        workers: int = 1,
        range_members: int = 50_000,
    ) -> None:
        super().__init__(FANNING_OUT.queue_name, concurrency=workers)
        self._pool = pool
        self._channels = channels
        self._chunk = chunk
        self._max_failures = max_failures
        self._events = events
        self._range_members = range_members

    async def step(self) -> int:
        """Start one campaign's fan-out, or make one chunk of a range; 0 once none is left."""
        if await self._start_next():
            return 1
        working: list[UUID] = []
        try:
            return await self._next_chunk(working)
        except _Stopped:
            return 1
        except (asyncpg.PostgresError, TimeoutError) as exc:
            if not working or (is_unavailable(exc) and not isinstance(exc, TimeoutError)):
                raise
            await self._chunk_failed(working[0], describe(exc))
            raise

    async def _start_next(self) -> bool:
        """Split the next new campaign into ranges and wake every process's loops for them."""
        async with self._pool.acquire() as conn, conn.transaction():
            found = await claims.claim_locked(conn, FANNING_OUT, 1)
            if not found:
                return False
            campaign_id = found[0]["id"]
            content = found[0]["content_id"]
            template = msgspec.json.decode(found[0]["template"], type=CampaignRequest)
            ranges = await campaign_ranges.split(conn, campaign_id, self._range_members)
            if template.line_delivery == "narrowcast" and content is not None:
                # made now, so that the ranges' chunks find it rather than wait on each other
                await narrowcast.group_for(conn, campaign_id, content)
            await notify(conn, FANNING_OUT.queue_name)
            log.info("campaign %s fans out in %d ranges", campaign_id, ranges)
            return True

    async def _next_chunk(self, working: list[UUID]) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            # A chunk committed without waiting for its WAL to reach disk can be lost only
            # with its range's cursor, in a crash of PostgreSQL itself; the range is then
            # redone from the cursor that did reach disk, and the unique (campaign, member)
            # index keeps anything that survived from being made twice. Nothing of a lost
            # chunk can have been sent: every claim of a delivery commits synchronously,
            # which flushes the WAL before it, this chunk's included.
            await conn.execute("SET LOCAL synchronous_commit = off")
            work = await campaign_ranges.claim(conn)
            if work is None:
                return 0  # finished, or every range is being fanned out by another loop
            campaign_id = work.campaign_id
            working.append(campaign_id)
            row = await conn.fetchrow(
                "SELECT audience_ids, exclude_audience_ids, template::text AS template,"
                " content_id, line_aggregation_unit FROM campaigns WHERE id = $1",
                campaign_id,
            )
            assert row is not None
            template = msgspec.json.decode(row["template"], type=CampaignRequest)
            content = row["content_id"]
            if content is None:  # created before contents were stored with the campaign
                content = await _store_content(conn, template, row["line_aggregation_unit"])
                await conn.execute(
                    "UPDATE campaigns SET content_id = $2 WHERE id = $1", campaign_id, content
                )
            channels = self._channels()
            whole_group = None
            if template.line_delivery == "narrowcast":
                group = await narrowcast.group_for(conn, campaign_id, content)
                if group is not None:
                    whole_group = (narrowcast.LINE_CHANNEL, group)
            chunk = await campaign_chunks.fan_out_chunk(
                conn,
                _chunk_statement(template, channels),
                work.cursor if work.cursor is not None else work.after,
                [
                    *await ids_by_type(conn, row["audience_ids"]),
                    *await ids_by_type(conn, row["exclude_audience_ids"]),
                ],
                self._chunk,
                campaign_chunks.ChunkTemplate(
                    campaign_id=campaign_id,
                    content_id=content,
                    route=template.route,
                    campaign=template.name or str(campaign_id),
                    tags=msgspec.json.encode(template.tags).decode(),
                    send_at=template.send_at,
                    kind=template.kind,
                    category=template.category,
                    line_account=template.line_account,
                ),
                channels.group_sizes,
                events=self._events,
                whole_group=whole_group,
                last=work.last,
            )
            finished = chunk.targeted < self._chunk  # the range holds no member after these
            await campaign_ranges.advance(conn, work, chunk.last_member, finished)
            notices = Notices()
            for channel in chunk.alone:
                notices.add(deliveries.QUEUE.queue_name(channel), template.send_at)
            for channel in chunk.grouped:
                notices.add(send_groups.QUEUE.queue_name(channel), template.send_at)
            if chunk.accepted and self._events:
                notices.add(delivery_events.QUEUE.queue_name)
            await notices.send(conn)
            # Last, so that chunks of one campaign wait for each other only to commit. Every
            # chunk takes the campaign row's lock here, so the one that finishes the last
            # range sees the others' ranges done (its next statement reads what they
            # committed) and makes the campaign `sending`, exactly once; and a chunk that
            # finds the campaign cancelled or stopped meanwhile is undone.
            counted = await conn.fetchval(
                "UPDATE campaigns SET targeted = targeted + $2, accepted = accepted + $3,"
                " rejected = rejected + $4, failed_chunks = 0, last_error = NULL,"
                " updated_at = now() WHERE id = $1 AND status = 'fanning_out' RETURNING true",
                campaign_id,
                chunk.targeted,
                chunk.accepted,
                chunk.targeted - chunk.accepted,
            )
            if not counted:
                raise _Stopped
            INTENTS_ACCEPTED.labels("campaign").inc(chunk.accepted)
            if finished and not await campaign_ranges.any_left(conn, campaign_id):
                await conn.execute(
                    "UPDATE campaigns SET status = 'sending', updated_at = now() WHERE id = $1",
                    campaign_id,
                )
            return 1

    async def _chunk_failed(self, campaign_id: UUID, error: str) -> None:
        """Count a failed chunk; the same failure `max_failures` times in a row stops the
        campaign as `failed`, so a chunk that cannot succeed is not retried for ever."""
        async with self._pool.acquire() as conn:
            status = await conn.fetchval(_CHUNK_FAILED, campaign_id, error, self._max_failures)
        if status == "failed":
            log.error("campaign %s stopped: its fan-out failed: %s", campaign_id, error)


_CHUNK_FAILED = """
UPDATE campaigns
SET failed_chunks = CASE WHEN last_error = $2 THEN failed_chunks + 1 ELSE 1 END,
    last_error = $2,
    status = CASE WHEN last_error = $2 AND failed_chunks + 1 >= $3 OR $3 <= 1
                  THEN 'failed' ELSE status END,
    updated_at = now()
WHERE id = $1 AND status = 'fanning_out'
RETURNING status
"""


def _chunk_statement(template: CampaignRequest, channels: IntakeChannels) -> str:
    """The chunk statement for this campaign's route, content and kind over these channels."""
    routing = campaign_routing(template, channels)
    return campaign_chunks.chunk_sql(
        campaign_chunks.ChunkRouting(
            code=routing.code,
            channels=routing.channels,
            fallback=routing.fallback,
            addresses=routing.addresses,
            address=routing.address,
        ),
        AUDIENCE_JOINS,
        AUDIENCE_WHERE,
    )


def campaign_routing(template: CampaignRequest, channels: IntakeChannels) -> RoutingSql:
    """How the campaign's members are routed, in SQL: the fan-out's and the dry run's."""
    return routing_sql(
        template.route,
        Content(email=template.email, line=template.line),
        channels.routes,
        channels.configured_for(template.line_account),
        template.kind,
        refusals={
            d.name: d.campaign_refusal_sql(
                template.kind, template.category, channels.require_consent
            )
            for d in channels.descriptors
            if d.campaign_refusal_sql is not None
        },
    )
