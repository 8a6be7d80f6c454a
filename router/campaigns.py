"""Campaigns: one intent per member of (union of audiences) minus (union of exclusions).

The request is answered at once; the fan-out runs afterwards in chunks of members in id order,
each chunk one transaction through the ordinary accept path (so routing, the outbox and
delivery events are the same as for any intent). Each intent's idempotency key names the
campaign and the member, so redoing a chunk after a crash adds nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec

from router import audiences
from router.content import Content, EmailContent, LineContent, check_content
from router.database import Connection, Pool
from router.intake_port import AcceptIntents
from router.intents import MAX_SCHEDULE_AHEAD, IntentRequest, Kind, Route, SendAt, Tags
from router.line import narrowcast
from router.line.narrowcast import NarrowcastView
from router.problems import FieldError
from router.queue import claims
from router.queue.loops import QueueWorker
from router.queue.wakeups import notify
from router.store import deliveries, send_groups
from router.store.row_ids import uuid7
from router.wire_rules import Alternatives, unmet

log = logging.getLogger(__name__)

# A campaign still fanning out is claimed inside the transaction that creates its next chunk;
# the one advanced longest ago goes first, so campaigns fanning out at once take turns.
FANNING_OUT = claims.Locked(
    table="campaigns",
    columns="id, audience_ids, exclude_audience_ids, template::text AS template, cursor_member_id",
    pending="status = 'fanning_out'",
    order="updated_at",
)


class CampaignRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    audience_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=100)]
    exclude_audience_ids: Annotated[list[UUID], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    route: Route = "prefer_line"
    kind: Kind = "promotional"
    email: EmailContent | None = None
    line: LineContent | None = None
    tags: Tags = msgspec.field(default_factory=list)
    send_at: SendAt | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    # How the LINE part goes out: multicasts of up to 500, or one narrowcast to the
    # audiences' synced LINE audiences (router.line.narrowcast).
    line_delivery: Literal["multicast", "narrowcast"] = "multicast"

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
    status: Literal["fanning_out", "sending", "cancelled"]
    targeted: int
    accepted: int
    rejected: int
    deliveries: list[ChannelCount]
    created_at: datetime
    updated_at: datetime
    narrowcast: NarrowcastView | None = None  # with "line_delivery": "narrowcast"


def check(request: CampaignRequest) -> list[FieldError]:
    errors = [FieldError(rule.fields[0], rule.message) for rule in unmet(request)]
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


async def create(conn: Connection, request: CampaignRequest) -> tuple[UUID, bool]:
    """Store the campaign (or find the one with this idempotency key); True if new.

    Raises KeyError naming an audience that does not exist, ValueError on a key reused with
    another request."""
    fingerprint = hashlib.sha256(msgspec.json.encode(request)).digest()
    if request.idempotency_key is not None:
        row = await conn.fetchrow(
            "SELECT id, request_sha256 FROM campaigns WHERE idempotency_key = $1",
            request.idempotency_key,
        )
        if row is not None:
            if row["request_sha256"] != fingerprint:
                raise ValueError("this idempotency_key was used with a different campaign")
            return row["id"], False
    wanted = set(request.audience_ids) | set(request.exclude_audience_ids)
    found = {
        r["id"]
        for r in await conn.fetch("SELECT id FROM audiences WHERE id = ANY($1::uuid[])", wanted)
    }
    for audience in sorted(wanted - found):
        raise KeyError(str(audience))
    campaign_id = uuid7()
    await conn.execute(
        "INSERT INTO campaigns (id, name, audience_ids, exclude_audience_ids, template,"
        " idempotency_key, request_sha256, status)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, 'fanning_out')",
        campaign_id,
        request.name,
        request.audience_ids,
        request.exclude_audience_ids,
        msgspec.json.encode(request).decode(),
        request.idempotency_key,
        fingerprint,
    )
    if request.line_delivery == "narrowcast":
        await narrowcast.create(
            conn, campaign_id, request.audience_ids, request.exclude_audience_ids, request.send_at
        )
    await notify(conn, FANNING_OUT.queue_name)
    return campaign_id, True


def _in_any(first: int) -> str:
    """SQL: the member is in an audience whose id is in ${first} (email audiences),
    ${first + 1} (phone) or ${first + 2} (LINE user ID). One condition per type, each an index
    probe of audience_entries' primary key with the member's own key, so the plan is the
    same whatever the tables' statistics say."""
    return " OR ".join(
        "EXISTS (SELECT 1 FROM audience_entries e"  # noqa: S608 - constants only
        f" WHERE e.audience_id = ANY(${first + n}::uuid[]) AND e.value_sha256 = {key})"
        for n, key in enumerate(audiences.MEMBER_KEY.values())
    )


# The next members, in id order after the cursor ($1), who are in any of the campaign's
# audiences and in none of its exclusions.
_TARGETS = f"""
SELECT m.member_id FROM members m
WHERE ($1::text IS NULL OR m.member_id > $1)
  AND ({_in_any(2)})
  AND NOT ({_in_any(5)})
ORDER BY m.member_id
LIMIT $8
"""  # noqa: S608 - only constants are interpolated


async def _ids_by_type(conn: Connection, ids: list[UUID]) -> list[list[UUID]]:
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
        "SELECT id, name, status, targeted, accepted, rejected, created_at, updated_at"
        " FROM campaigns WHERE id = $1",
        campaign_id,
    )
    if row is None:
        return None
    # Read before the counts: a narrowcast's end and its deliveries' commit together, so an
    # end shown here is never shown beside deliveries still 'sending'.
    sent_as_narrowcast = await narrowcast.view(conn, campaign_id)
    counts = [
        ChannelCount(r["channel"], r["status"], r["n"], r["groups"])
        for r in await conn.fetch(
            "SELECT d.channel, d.status, count(*) AS n,"
            " count(DISTINCT d.send_group_id) AS groups FROM intents i"
            " JOIN deliveries d ON d.intent_id = i.id WHERE i.campaign_id = $1"
            " GROUP BY d.channel, d.status ORDER BY d.channel, d.status",
            campaign_id,
        )
    ]
    return CampaignView(deliveries=counts, narrowcast=sent_as_narrowcast, **dict(row))


class CampaignFanOut(QueueWorker):
    """Runs fan-outs, one chunk of members per step: a campaign's own as soon as it is
    created, and any left unfinished by a stopped process."""

    def __init__(self, pool: Pool, accept: AcceptIntents, chunk: int) -> None:
        super().__init__(FANNING_OUT.queue_name)
        self._pool = pool
        self._accept = accept
        self._chunk = chunk

    async def step(self) -> int:
        """Create the intents of one campaign's next chunk; 0 once no campaign is left."""
        async with self._pool.acquire() as conn, conn.transaction():
            found = await claims.claim_locked(conn, FANNING_OUT, 1)
            if not found:
                return 0  # finished, or every one is being fanned out by another process
            row = found[0]
            campaign_id = row["id"]
            template = msgspec.json.decode(row["template"], type=CampaignRequest)
            members = [
                r["member_id"]
                for r in await conn.fetch(
                    _TARGETS,
                    row["cursor_member_id"],
                    *await _ids_by_type(conn, row["audience_ids"]),
                    *await _ids_by_type(conn, row["exclude_audience_ids"]),
                    self._chunk,
                )
            ]
            if not members:
                await conn.execute(
                    "UPDATE campaigns SET status = 'sending', updated_at = now() WHERE id = $1",
                    campaign_id,
                )
                return 1
            requests: list[Any] = [
                IntentRequest(
                    member_id=member_id,
                    route=template.route,
                    kind=template.kind,
                    email=template.email,
                    line=template.line,
                    campaign=template.name or str(campaign_id),
                    tags=template.tags,
                    send_at=template.send_at,
                    idempotency_key=f"campaign:{campaign_id}:{member_id}"[:255],
                )
                for member_id in members
            ]
            results = await self._accept(conn, requests, campaign_id=campaign_id)
            if template.line_delivery == "narrowcast":
                await narrowcast.join(conn, campaign_id, [r.id for r in results if r.id])
            accepted = sum(r.status == "accepted" for r in results)
            rejected = sum(r.status == "rejected" for r in results)
            await conn.execute(
                "UPDATE campaigns SET cursor_member_id = $2, targeted = targeted + $3,"
                " accepted = accepted + $4, rejected = rejected + $5, updated_at = now()"
                " WHERE id = $1",
                campaign_id,
                members[-1],
                len(members),
                accepted,
                rejected,
            )
            return 1
