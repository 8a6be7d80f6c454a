"""A message received by the SMTP relay is kept while a content names it, and no longer:
erasing the last member whose intent used it deletes it, and the retention sweep deletes one
that no recipient ever took."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiosmtplib
import asyncpg
import pytest

from router import retention
from tests.harness import SmtpSink
from tests.test_smtp_ingress import (
    FRIEND,
    PASSWORD,
    USER,
    _send_with,
    campaign,
    ingress,
    wait_until,
)


async def stored_messages(conn: asyncpg.Connection) -> list[bytes]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM relayed_messages ORDER BY id")]


async def test_erasing_the_last_member_using_a_relayed_message_deletes_it(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    data = campaign(["friend@example.jp", "mail@example.jp"])
    conn = await asyncpg.connect(dsn)
    try:
        async with ingress(dsn, line_sim, smtp) as (r, port):
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            await client.connect()
            await client.login(USER, PASSWORD)
            await client.sendmail(
                "bounce@shop.example.jp", ["friend@example.jp", "mail@example.jp"], data
            )
            await client.quit()
            await wait_until(lambda: len(smtp.mails) == 1 and len(line_sim.accepted_pushes()) == 1)
            assert line_sim.accepted_pushes()[0].body["to"] == FRIEND
            # One message, one content, shared by both recipients' intents.
            assert await stored_messages(conn) == [hashlib.sha256(data).digest()]
            assert await conn.fetchval("SELECT count(DISTINCT content_id) FROM intents") == 1

            assert (await r.client.delete("/v1/members/friend")).status_code == 204
            assert await stored_messages(conn) == [hashlib.sha256(data).digest()]
            assert await conn.fetchval("SELECT count(*) FROM contents") == 1

            assert (await r.client.delete("/v1/members/mail")).status_code == 204
            assert await stored_messages(conn) == []
            assert await conn.fetchval("SELECT count(*) FROM contents") == 0
    finally:
        await conn.close()


async def test_a_named_message_cannot_be_deleted(dsn: str, line_sim: Any, smtp: SmtpSink) -> None:
    async with ingress(dsn, line_sim, smtp) as (_, port):
        await asyncio.to_thread(_send_with, port, USER, PASSWORD)
        await wait_until(lambda: len(smtp.mails) == 1)
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("DELETE FROM relayed_messages")
    finally:
        await conn.close()


async def test_retention_deletes_a_message_no_recipient_took_and_keeps_one_in_use(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    taken = campaign(["mail@example.jp"], "<taken@shop.example.jp>")
    refused = campaign(["mail@example.jp"], "<refused@shop.example.jp>")
    async with ingress(dsn, line_sim, smtp) as (r, port):
        await asyncio.to_thread(_send_with, port, USER, PASSWORD, taken)
        await wait_until(lambda: len(smtp.mails) == 1)
        # The recipient opts out between RCPT and DATA: the relay stores the message, then
        # refuses every recipient, so no content ever names it.
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.login(USER, PASSWORD)
        await client.mail("a@shop.example.jp")
        await client.rcpt("mail@example.jp")
        await r.client.put("/v1/members/mail", json={"email_opt_out": True})
        with pytest.raises(aiosmtplib.SMTPDataError) as no_one:
            await client.data(refused)
        assert no_one.value.code == 554
        await client.quit()

    ids = sorted([hashlib.sha256(taken).digest(), hashlib.sha256(refused).digest()])
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            assert await stored_messages(conn) == ids
            # Within the window both stay.
            assert (await retention.prune(pool, days=30))["relayed_messages"] == 0
            await conn.execute(
                "UPDATE relayed_messages SET created_at = created_at - interval '40 days'"
            )
            assert (await retention.prune(pool, days=30))["relayed_messages"] == 1
            assert await stored_messages(conn) == [hashlib.sha256(taken).digest()]
            # However old, a message a content names is kept.
            assert (await retention.prune(pool, days=0))["relayed_messages"] == 0
    finally:
        await pool.close()
