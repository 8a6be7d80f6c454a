"""The database's own checks that intents name a member and a content that exist and that
deliveries name an intent that exists, and the deletes that follow a member's erasure: checked
per statement, with member erasure and intake racing each other in both orders."""

from __future__ import annotations

import asyncio
import hashlib
from uuid import UUID

import asyncpg
import pytest

from router.store import intents as intent_store
from router.store import members as member_store
from router.store.intents import ContentRow, DeliveryRow, IntentColumns
from router.store.row_ids import uuid7s
from tests.harness import RouterUnderTest

BODY = '{"email": {"subject": "Hello", "text": "hi"}}'
CONTENT_ID = hashlib.sha256(BODY.encode()).digest()


def intent_columns(ids: list[UUID], member_ids: list[str | None]) -> IntentColumns:
    return IntentColumns(
        id=ids,
        member_id=member_ids,
        email_address=[None if m else "stranger@example.jp" for m in member_ids],
        content_id=[CONTENT_ID] * len(ids),
        route=["email_only"] * len(ids),
        fallback=[None] * len(ids),
        campaign=[None] * len(ids),
        tags=["[]"] * len(ids),
        metadata=[None] * len(ids),
        idempotency_key=[None] * len(ids),
        request_sha256=[None] * len(ids),
        kind=[None] * len(ids),
        category=[None] * len(ids),
        journey_id=[None] * len(ids),
        journey_step=[None] * len(ids),
        journey_run=[None] * len(ids),
        line_account=["default"] * len(ids),
    )


def delivery_row(intent_id: UUID) -> DeliveryRow:
    return DeliveryRow(
        intent_id=intent_id,
        channel="email",
        address="m@example.jp",
        send_at=None,
        send_group_id=None,
    )


async def insert(
    conn: asyncpg.Connection, member_ids: list[str | None], *, content: bool = True
) -> list[UUID]:
    """Intents (and their email deliveries) for these members through intake's statement."""
    ids = uuid7s(len(member_ids))
    await intent_store.insert(
        conn,
        [ContentRow(id=CONTENT_ID, body=BODY)] if content else [],
        intent_columns(ids, member_ids),
        [],
        [delivery_row(i) for i in ids],
        None,
    )
    return ids


async def waiting_on_the_fence(conn: asyncpg.Connection) -> None:
    """Until a session waits for the reference fence (an advisory lock)."""
    for _ in range(1000):
        if await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no session waited for the reference fence")


async def test_rows_naming_what_does_not_exist_are_refused(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO members (member_id, email) VALUES ('m', 'm@example.jp')")
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await insert(conn, ["m", None, "nobody"])
        assert "names a member that does not exist" in str(refused.value)
        assert "nobody" in (refused.value.detail or "")
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await insert(conn, ["m"], content=False)
        assert "names a content that does not exist" in str(refused.value)
        assert CONTENT_ID.hex() in (refused.value.detail or "")
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await conn.execute(
                "INSERT INTO deliveries (intent_id, channel, address, status)"
                " VALUES ($1, 'email', 'm@example.jp', 'pending')",
                uuid7s(1)[0],
            )
        assert "names an intent that does not exist" in str(refused.value)
        assert await conn.fetchval("SELECT count(*) FROM intents") == 0

        # A member's own and an address-only intent pass, and then their content cannot go.
        await insert(conn, ["m", None])
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == 2
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await conn.execute("DELETE FROM contents")
        assert "still named by intents" in (refused.value.detail or "")
    finally:
        await conn.close()


async def test_erasure_waits_for_an_insert_in_progress_and_deletes_its_rows(dsn: str) -> None:
    inserting, erasing = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await inserting.execute("INSERT INTO members (member_id) VALUES ('m'), ('stays')")
        async with inserting.transaction():
            await insert(inserting, ["m", "stays"])

            async def erase() -> bool:
                async with erasing.transaction():
                    return await member_store.erase(erasing, "m")

            erased = asyncio.create_task(erase())
            await waiting_on_the_fence(inserting)
            assert not erased.done()
        assert await erased
        rows = await inserting.fetch(
            "SELECT member_id FROM intents JOIN deliveries d ON true WHERE d.intent_id = intents.id"
        )
        assert [r["member_id"] for r in rows] == ["stays"]
    finally:
        await inserting.close()
        await erasing.close()


async def test_an_intent_for_a_member_erased_meanwhile_is_not_accepted(
    router: RouterUnderTest, dsn: str
) -> None:
    """Intake found the member, and its erasure commits before the intent's insert does."""
    resp = await router.client.put("/v1/members/leaving", json={"email": "l@example.jp"})
    assert resp.status_code in (200, 201), resp.text
    erasing = await asyncpg.connect(dsn)
    try:
        async with erasing.transaction():
            assert await member_store.erase(erasing, "leaving")
            posted = asyncio.create_task(
                router.client.post(
                    "/v1/intents",
                    json={"member_id": "leaving", "email": {"subject": "Hi", "text": "hi"}},
                )
            )
            await waiting_on_the_fence(erasing)
        resp = await posted
        assert resp.status_code == 500, resp.text
        assert await erasing.fetchval("SELECT count(*) FROM intents") == 0
        assert await erasing.fetchval("SELECT count(*) FROM deliveries") == 0
    finally:
        await erasing.close()
