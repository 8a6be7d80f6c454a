"""kill -9 a router while it sends email claims: nobody gets an email twice, nobody is lost
silently, and the deliveries left 'uncertain' are at most what was marked 'sending' ahead of
the sends (two marking chunks per loop), not every claimed delivery."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import asyncpg

from router.delivery.dispatch import MARKING_CHUNK
from tests.harness import SmtpSink, _free_port
from tests.router_processes import (
    UNFINISHED,
    add_members_and_intents,
    finish_with_two_routers,
    start_router,
    wait_healthy,
)

MAIL_ONLY = 240
LOOPS = 2
CLAIM_SIZE = 30
CONNECTIONS = 2
# What a crash can leave 'uncertain' without having sent it: per loop, the chunk going out
# and the one marked next.
AHEAD = LOOPS * 2 * max(MARKING_CHUNK, CONNECTIONS)


async def test_kill_mid_email_claims_leaves_in_doubt_only_what_was_marked_ahead(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    settings = {
        "ROUTER_WORKERS_CONCURRENCY": str(LOOPS),
        "ROUTER_WORKERS_CLAIM_SIZE": str(CLAIM_SIZE),
        "ROUTER_EMAIL_CONNECTIONS": str(CONNECTIONS),
    }
    port = _free_port()
    router = start_router(dsn, line_sim.base_url, smtp, port, **settings)
    conn = await asyncpg.connect(dsn)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}")
        smtp.answer_data_after(0.1)  # a slow server: claims stay in hand for seconds
        await add_members_and_intents(f"http://127.0.0.1:{port}", 0, MAIL_ONLY)
        deadline = time.monotonic() + 30
        most_sending, held = 0, {}
        # Until both loops hold a claim (a loop wakes its sibling once its first claim is
        # recorded) and a few emails have gone.
        while sum(held.values()) < LOOPS * CLAIM_SIZE or len(smtp.mails) < 6:
            assert time.monotonic() < deadline
            held = dict(
                await conn.fetch(
                    "SELECT status, count(*) FROM deliveries"
                    " WHERE status IN ('claimed', 'sending') GROUP BY status"
                )
            )
            most_sending = max(most_sending, held.get("sending", 0))
            await asyncio.sleep(0.01)
        router.send_signal(signal.SIGKILL)
        router.wait()
        smtp.answer_data_after(0)
        # Both claims were in hand, but only a few chunks of them were ever 'sending'.
        assert 0 < most_sending <= AHEAD < LOOPS * CLAIM_SIZE

        await finish_with_two_routers(conn, dsn, line_sim.base_url, smtp, UNFINISHED, 60)
        final = dict(await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY status"))
        uncertain = {
            r["address"]
            for r in await conn.fetch("SELECT address FROM deliveries WHERE status = 'uncertain'")
        }
    finally:
        await conn.close()
        if router.poll() is None:
            router.kill()

    mailed = Counter(rcpt for m in smtp.mails for rcpt in m.rcpt_to)
    assert max(mailed.values()) == 1  # nobody twice
    # Nobody lost silently: every member was mailed, or their delivery says it may have been.
    assert set(mailed) | uncertain == {f"e{i}@example.jp" for i in range(MAIL_ONLY)}
    assert final == {"sent": MAIL_ONLY - len(uncertain), "uncertain": len(uncertain)}
    assert 0 < len(uncertain) <= AHEAD
    # Most of the claims the dead router held went out after all, once each.
    assert len(set(mailed) - uncertain) >= MAIL_ONLY - AHEAD
