"""PostgreSQL stopped fast and started again while a `router serve` process delivers email and
LINE pushes, on a server of the test's own: nothing lost, nothing twice per (member, channel),
the work resumes as soon as the database is back rather than when leases run out, and what
the providers accepted while the database was away is recorded as sent, not 'uncertain'."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from router.database import migrate
from tests.harness import SmtpSink, _free_port
from tests.router_processes import (
    UNFINISHED,
    add_members_and_intents,
    start_router,
    wait_healthy,
)
from tests.separate_postgres import SeparatePostgres

FRIENDS = 600
MAIL_ONLY = 100
# Longer than the test could ever take: a delivery that waited for its lease to run out (or
# for the sweep) would never finish here.
LEASE_SECONDS = 600
OUTAGE_SECONDS = 2.5
PROVIDER_ANSWER_SECONDS = 1.0  # in flight when the database goes, answered while it is away


@pytest.fixture
async def own_postgres() -> AsyncIterator[SeparatePostgres]:
    server = SeparatePostgres()
    try:
        await asyncio.to_thread(server.init)
        await migrate(server.dsn)
        yield server
    finally:
        await asyncio.to_thread(server.remove)


async def test_fast_restart_mid_delivery_resumes_at_once_and_records_what_was_accepted(
    own_postgres: SeparatePostgres, line_sim: Any, smtp: SmtpSink
) -> None:
    port = _free_port()
    router = start_router(
        own_postgres.dsn,
        line_sim.base_url,
        smtp,
        port,
        ROUTER_WORKERS_LEASE_SECONDS=str(LEASE_SECONDS),
        ROUTER_EMAIL_CONNECTIONS="10",
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}")
        # Slow providers, so that sends are in flight whenever the database goes.
        smtp.answer_data_after(PROVIDER_ANSWER_SECONDS)
        line_sim.delay_next(FRIENDS, PROVIDER_ANSWER_SECONDS)
        await add_members_and_intents(f"http://127.0.0.1:{port}", FRIENDS, MAIL_ONLY)
        deadline = time.monotonic() + 30
        while not smtp.mails:
            assert time.monotonic() < deadline, "nothing was delivered"
            await asyncio.sleep(0.01)
        await asyncio.sleep(PROVIDER_ANSWER_SECONDS / 2)  # the next round of sends is out

        stopped, stopped_at = time.monotonic(), time.time()
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.sleep(OUTAGE_SECONDS)
        smtp.answer_data_after(0)
        line_sim.delay_next(0, 0)
        await asyncio.to_thread(own_postgres.start)
        back = time.monotonic()

        conn = await asyncpg.connect(own_postgres.dsn)
        try:
            deadline = back + 30  # far less than a lease
            while await conn.fetchval(UNFINISHED):
                assert time.monotonic() < deadline, dict(
                    await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY 1")
                )
                await asyncio.sleep(0.1)
            final = dict(await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY 1"))
        finally:
            await conn.close()
        assert router.poll() is None, "the router process did not survive the outage"
    finally:
        router.send_signal(signal.SIGTERM)
        assert router.wait(timeout=30) == 0

    # The outage did cut through sends: pushes were waiting for LINE's answer when the database
    # stopped, and the SMTP server accepted messages while it was down.
    answered_while_away = [
        r
        for r in line_sim.accepted_pushes()
        if stopped_at - PROVIDER_ANSWER_SECONDS < r.received_at < stopped_at
    ]
    assert answered_while_away
    assert any(stopped < m.accepted_at < back for m in smtp.mails)
    # Every delivery is recorded as sent: none lost, none left 'uncertain'.
    assert final == {"sent": FRIENDS + MAIL_ONLY}
    # Each member once per channel, and no push went twice (not even as a 409 repeat): the
    # answers that arrived during the outage were kept and recorded, not sent for again.
    pushed = Counter(r.body["to"] for r in line_sim.accepted_pushes())
    assert len(pushed) == FRIENDS and max(pushed.values()) == 1
    assert [r for r in line_sim.received if r.status == 409] == []
    mailed = Counter(rcpt for m in smtp.mails for rcpt in m.rcpt_to)
    assert mailed == Counter(f"e{i}@example.jp" for i in range(MAIL_ONLY))
