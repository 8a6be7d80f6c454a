"""A campaign's routing in SQL agrees with `plan` in Python, member shape by member shape.

The chunk statement routes members with the table `routing_sql` builds; intake routes one
intent with `plan`. Both read the channels' descriptors: here every combination of how a
member can be reached is stored in PostgreSQL and routed both ways, for every route, kind,
content and set of configured channels, and the channels, fallback and addresses must match.
"""

from __future__ import annotations

import itertools

import asyncpg
import pytest

from channels.registry import descriptors
from router import members
from router.content import Content, EmailContent, LineContent
from router.identifiers import email_sha256, phone_sha256
from router.intake.routing import Plan, Routes, plan
from router.intake.routing_sql import routing_sql
from router.intents import Kind, Route
from router.line.messages import text_message
from router.reach import line_identity_join

ROUTES: tuple[Route, ...] = ("prefer_line", "both", "line_only", "email_only", "notification_first")
KINDS: tuple[Kind, ...] = ("promotional", "transactional")
CONTENTS = {
    "email": Content(email=EmailContent(subject="Hi", text="hi")),
    "line": Content(line=LineContent(messages=[text_message("hi")])),
    "both": Content(
        email=EmailContent(subject="Hi", text="hi"),
        line=LineContent(messages=[text_message("hi")]),
    ),
}
CONFIGURED = (
    frozenset({"line", "email", "line_notification"}),
    frozenset({"line", "email"}),
    frozenset({"email"}),
    frozenset({"line"}),
)


async def seed_shapes(conn: asyncpg.Connection) -> list[str]:
    """One member per combination of LINE ID, friendship, opt-outs, email and phone."""
    ids: list[str] = []
    for n, (line_id, friend, line_out, email, email_out, phone) in enumerate(
        itertools.product((False, True), repeat=6)
    ):
        member_id = f"shape{n:02d}"
        address = f"{member_id}@example.jp" if email else None
        number = f"+8190{n:08d}" if phone else None
        await conn.execute(
            "INSERT INTO members (member_id, email, email_sha256, phone, phone_sha256,"
            " email_opt_out) VALUES ($1, $2, $3, $4, $5, $6)",
            member_id,
            address,
            email_sha256(address) if address else None,
            number,
            phone_sha256(number) if number else None,
            email_out,
        )
        if line_id or friend or line_out:  # the member's identity under the account "default"
            await conn.execute(
                "INSERT INTO member_line_accounts (member_id, account, user_id, friend, opt_out)"
                " VALUES ($1, 'default', $2, $3, $4)",
                member_id,
                f"U{n:032x}" if line_id else None,
                friend,
                line_out,
            )
        ids.append(member_id)
    return ids


async def test_sql_routing_agrees_with_plan_for_every_member_shape(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        ids = await seed_shapes(conn)
        reach, _ = await members.resolve(conn, ids, [])
        routes = Routes(descriptors())
        by_channel = {d.name: d for d in descriptors()}
        compared = 0
        for route, kind, (content_name, content), configured in itertools.product(
            ROUTES, KINDS, CONTENTS.items(), CONFIGURED
        ):
            table = routing_sql(route, content, routes, configured, kind)
            rows = await conn.fetch(f"""
SELECT member_id, channels, fallback,
       ARRAY(SELECT {table.address} FROM unnest(channels) AS c(channel)) AS sent_to
FROM (SELECT member_id, addresses, {table.channels} AS channels, {table.fallback} AS fallback
      FROM (SELECT m.member_id, {table.code} AS code, {table.addresses} AS addresses
            FROM members m {line_identity_join("'default'")}) AS t) AS p""")
            assert len(rows) == len(ids)
            for row in rows:
                member = reach[row["member_id"]]
                expected = plan(route, member, content, routes, configured, kind)
                case = (route, kind, content_name, sorted(configured), member)
                if isinstance(expected, Plan):
                    assert row["channels"] == list(expected.primary), case
                    assert row["fallback"] == expected.fallback, case
                    assert row["sent_to"] == [
                        by_channel[name].address(member) for name in expected.primary
                    ], case
                else:
                    assert row["channels"] is None and row["fallback"] is None, case
                compared += 1
        assert compared == len(ROUTES) * len(KINDS) * len(CONTENTS) * len(CONFIGURED) * 64
    finally:
        await conn.close()


def test_a_route_over_too_many_channels_is_refused_not_tabled() -> None:
    class Many:
        def ranked(self, route: str) -> tuple[object, ...]:
            return tuple(range(9))

    with pytest.raises(ValueError, match="more than 8 channels"):
        routing_sql("both", CONTENTS["email"], Many(), frozenset(), "promotional")  # type: ignore[arg-type]
