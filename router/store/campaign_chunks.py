"""One chunk of a campaign's fan-out: the next members' intents, send groups and deliveries,
made by one INSERT ... SELECT straight from the audience join.

Nothing per member passes through Python: the members are chosen, routed (the routing table
`router.intake.routing_sql` derives from `plan`), addressed, dealt into send groups and
written by PostgreSQL in one statement. The content was stored once when the campaign was
created. A member gets at most one intent per campaign (`intents_campaign_member`), so a chunk
redone after a crash or by a second router adds nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import msgspec

from router import channel_rules
from router.database import Connection
from router.reach import DEFAULT_LINE_ACCOUNT, line_identity_join
from router.store import group_state

# A time-ordered (version 7) UUID made by PostgreSQL, like `row_ids.uuid7`: the current
# millisecond in the first 48 bits of a random UUID, whose version nibble 4 becomes 7.
UUID7_SQL = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing"
    " substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)"
    " FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)


def counted_id(base: str, counter: str) -> str:
    """SQL: a chunk's row id, the chunk's own time-ordered UUID `base` (bytea, made once per
    chunk by `UUID7_SQL`) with its last 32 bits replaced by the row's `counter`: unique within
    the chunk by the counter and across chunks by the 42 random bits the base keeps (beside
    its millisecond), and still time-ordered. One random UUID per row cost more than the
    rest of making its id."""
    return f"encode(overlay({base} placing int4send(({counter})::int) FROM 13 FOR 4), 'hex')::uuid"


@dataclass(frozen=True)
class ChunkRouting:
    """The SQL fragments that route and address a chunk's members (see `RoutingSql`)."""

    code: str
    channels: str
    fallback: str
    addresses: str
    address: str


def send_group_of(deliveries: str, sizes: str) -> str:
    """The one place a fanned-out delivery's send group is decided: a SELECT of (channel,
    slot, id, groups) naming the groups to create, over the CTE `deliveries` (its `channel`)
    and `sizes` (channel, size: the most recipients one request names). Deliveries of one
    channel are dealt round-robin into as few groups as fit, of near-equal size, the rule of
    `send_groups.deal`; a channel only one delivery of the chunk uses sends it alone. A
    delivery joins the group of its channel whose `slot` is its position modulo `groups`."""
    return f"""
SELECT c.channel, slot, gen_random_uuid() AS id, c.groups
FROM (SELECT d.channel, ceil(count(*)::numeric / s.size)::int AS groups
      FROM {deliveries} d JOIN {sizes} s ON s.channel = d.channel
      WHERE s.size > 1 GROUP BY d.channel, s.size HAVING count(*) >= 2) c
CROSS JOIN LATERAL generate_series(0, c.groups - 1) AS slot"""  # noqa: S608 - constants only


def chunk_sql(routing: ChunkRouting, audience_joins: str, audience_where: str) -> str:
    """The chunk statement. $1 the cursor (last member done, or NULL), $2..$7 the audience ids
    `audience_joins` (after `FROM members m`) and `audience_where` read, $8 the chunk size, $9 the campaign, $10 its content, $11 route,
    $12 the intents' campaign name, $13 tags (JSON), $14 send_at, $15/$16 group sizes by
    channel, $17 whether `processed` delivery events are recorded, $18/$19 a channel whose
    deliveries all join one campaign-wide group, and that group (a narrowcast), or NULLs. Answers one row: members
    looked at, intents made, the last member, and the channels of new deliveries outside and
    inside send groups. $20 the range's last member (NULL: no upper bound); $21/$22 the
    intents' kind and category; $23 their LINE account."""
    event_email = channel_rules.event_email_sql("a")
    return f"""
WITH bases AS MATERIALIZED (
    SELECT uuid_send({UUID7_SQL}) AS intents, uuid_send({UUID7_SQL}) AS deliveries
), targets AS MATERIALIZED (
    SELECT m.member_id, {routing.code} AS code, {routing.addresses} AS addresses
    FROM members m {line_identity_join("$23::text")} {audience_joins}
    WHERE ($1::text IS NULL OR m.member_id > $1) AND ($20::text IS NULL OR m.member_id <= $20)
      AND {audience_where}
    ORDER BY m.member_id
    LIMIT $8
), planned AS MATERIALIZED (
    SELECT member_id, addresses, {routing.channels} AS channels, {routing.fallback} AS fallback,
           {counted_id("b.intents", "row_number() OVER ()")} AS intent_id
    FROM targets CROSS JOIN bases b
), added AS (
    INSERT INTO intents (id, member_id, content_id, route, fallback, campaign, tags, campaign_id,
                         kind, category, line_account)
    SELECT intent_id, member_id, $10, $11, fallback, $12, $13::jsonb, $9, $21::text, $22::text,
           $23::text
    FROM planned WHERE channels IS NOT NULL
    ORDER BY intent_id
    ON CONFLICT (campaign_id, member_id) WHERE campaign_id IS NOT NULL DO NOTHING
    RETURNING id
), wanted AS MATERIALIZED (
    SELECT p.intent_id, p.member_id, c.channel, {routing.address} AS address,
           row_number() OVER (PARTITION BY c.channel ORDER BY p.intent_id) - 1 AS n,
           row_number() OVER () AS k
    FROM planned p JOIN added a ON a.id = p.intent_id
    CROSS JOIN LATERAL unnest(p.channels) AS c(channel)
), sizes AS (
    SELECT * FROM unnest($15::text[], $16::int[]) AS s(channel, size)
), groups AS MATERIALIZED ({send_group_of("wanted", "sizes")}
), new_groups AS (
    INSERT INTO send_groups (id, channel, content_id, status, next_attempt_at, line_account)
    SELECT id, channel, $10, 'pending', greatest(coalesce($14, now()), now()), $23::text
    FROM groups
), inserted AS (
    INSERT INTO deliveries (id, intent_id, channel, address, status, next_attempt_at,
                            send_group_id, campaign_id)
    SELECT {counted_id("b.deliveries", "w.k")}, w.intent_id, w.channel, w.address,
           {group_state.initial_status("g.id")},
           greatest(coalesce($14, now()), now()),
           coalesce(CASE WHEN w.channel = $18::text THEN $19::uuid END, g.id), $9
    FROM wanted w CROSS JOIN bases b
    LEFT JOIN groups g ON g.channel = w.channel AND g.slot = w.n % g.groups
    RETURNING id, intent_id, channel, address, send_group_id
), processed AS (
    INSERT INTO delivery_events (event, intent_id, delivery_id, channel, email)
    SELECT 'processed', a.intent_id, a.id, a.channel, {event_email}
    FROM inserted a JOIN wanted w ON w.intent_id = a.intent_id AND w.channel = a.channel
    JOIN members m ON m.member_id = w.member_id
    CROSS JOIN (SELECT NULL::text AS email_address) i
    WHERE $17::boolean
)
SELECT (SELECT count(*) FROM targets) AS targeted,
       (SELECT count(*) FROM added) AS accepted,
       (SELECT max(member_id) FROM targets) AS last_member,
       (SELECT coalesce(array_agg(DISTINCT channel), '{{}}') FROM inserted
        WHERE send_group_id IS NULL) AS alone,
       (SELECT coalesce(array_agg(DISTINCT channel), '{{}}') FROM inserted
        WHERE send_group_id IS NOT NULL) AS grouped
"""  # noqa: S608 - built from the descriptors' constant fragments only


class Chunk(msgspec.Struct, frozen=True):
    targeted: int  # members of the audiences looked at
    accepted: int  # intents made
    last_member: str | None  # the new cursor; None when no member was left
    alone: list[str]  # channels with new deliveries sent one at a time
    grouped: list[str]  # channels with new send groups


@dataclass(frozen=True)
class ChunkTemplate:
    """What every intent of the campaign shares."""

    campaign_id: UUID
    content_id: bytes
    route: str
    campaign: str
    tags: str  # JSON array
    send_at: datetime | None
    kind: str = "promotional"
    category: str | None = None
    line_account: str = DEFAULT_LINE_ACCOUNT


async def fan_out_chunk(
    conn: Connection,
    sql: str,
    cursor: str | None,
    audience_ids: Sequence[Sequence[UUID]],
    size: int,
    template: ChunkTemplate,
    group_sizes: Mapping[str, int],
    *,
    events: bool,
    whole_group: tuple[str, UUID] | None = None,
    last: str | None = None,
) -> Chunk:
    """Run one chunk statement (`chunk_sql`) in the caller's transaction. `whole_group`: a
    channel whose deliveries all join one group made beforehand (a campaign's narrowcast),
    instead of groups dealt per chunk. `last`: the range's last member, or None."""
    if whole_group is not None:
        group_sizes = {c: n for c, n in group_sizes.items() if c != whole_group[0]}
    row = await conn.fetchrow(
        sql,
        cursor,
        *audience_ids,
        size,
        template.campaign_id,
        template.content_id,
        template.route,
        template.campaign,
        template.tags,
        template.send_at,
        list(group_sizes),
        list(group_sizes.values()),
        events,
        None if whole_group is None else whole_group[0],
        None if whole_group is None else whole_group[1],
        last,
        template.kind,
        template.category,
        template.line_account,
    )
    assert row is not None
    return Chunk(
        targeted=row["targeted"],
        accepted=row["accepted"],
        last_member=row["last_member"],
        alone=list(row["alone"]),
        grouped=list(row["grouped"]),
    )
