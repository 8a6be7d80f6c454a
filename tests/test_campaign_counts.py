"""Campaign progress comes from counters kept by triggers: after a mixed run they must equal a
count of the rows themselves (sent, retried, refused with a fallback, cancelled, erased)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.harness import DERIVED_ROWS, RouterUnderTest, SmtpSink
from tests.test_multicast import MAIL, add_members, settled

# A delivery in a send group has its group's status (tests/harness.py DERIVED_ROWS).
ROW_COUNTS = f"""
SELECT d.channel, d.status, count(*) AS deliveries,
       count(DISTINCT d.send_group_id) AS multicasts
FROM intents i JOIN {DERIVED_ROWS} d ON d.intent_id = i.id
WHERE i.campaign_id = $1
GROUP BY d.channel, d.status ORDER BY d.channel, d.status
"""


async def counted_both_ways(r: RouterUnderTest, conn: asyncpg.Connection, campaign_id: str) -> Any:
    view = (await r.client.get(f"/v1/campaigns/{campaign_id}")).json()
    rows = [dict(row) for row in await conn.fetch(ROW_COUNTS, campaign_id)]
    assert view["deliveries"] == rows
    return view


async def audience_of_everyone(r: RouterUnderTest, friends: int, mail_only: int) -> str:
    lines = [f"f{i}@example.jp" for i in range(friends)] + [
        f"e{i}@example.jp" for i in range(mail_only)
    ]
    resp = await r.client.post(
        "/v1/audiences",
        data={"name": "everyone", "type": "email"},
        files={"file": ("list.csv", "\n".join(lines).encode(), "text/csv")},
    )
    assert resp.status_code == 201, resp.text
    audience_id: str = resp.json()["id"]
    return audience_id


async def test_counters_equal_row_counts_after_a_mixed_run(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    await add_members(router, 30, mail_only=10)
    conn = await asyncpg.connect(dsn)
    try:
        # Two IDs LINE refuses by name: they fail alone and fall back to email.
        await conn.execute(
            "UPDATE member_line_accounts SET user_id = 'U-not-valid-' || member_id"
            " WHERE account = 'default' AND member_id IN ('f00003', 'f00011')"
        )
        everyone = await audience_of_everyone(router, 30, 10)
        line_sim.fail_next(1, status=500)  # the first multicast is retried
        resp = await router.client.post(
            "/v1/campaigns", json={"audience_ids": [everyone], "email": MAIL}
        )
        sent_id = resp.json()["id"]
        await settled(
            router,
            sent_id,
            {("email", "sent"): 12, ("line", "failed"): 2, ("line", "sent"): 28},
        )
        view = await counted_both_ways(router, conn, sent_id)
        assert {d["channel"]: d["multicasts"] for d in view["deliveries"]}["line"] >= 1
        # Each member's own intent, as GET /v1/intents/{id} shows any intent.
        refused = await conn.fetchval(
            "SELECT id FROM intents WHERE campaign_id = $1 AND member_id = 'f00003'", sent_id
        )
        intent = (await router.client.get(f"/v1/intents/{refused}")).json()
        assert intent["idempotency_key"] == f"campaign:{sent_id}:f00003"
        assert intent["status"] == "delivered" and intent["fallback"] == "email"
        assert sorted((d["channel"], d["status"]) for d in intent["deliveries"]) == [
            ("email", "sent"),
            ("line", "failed"),
        ]
        assert (
            await conn.fetchval(
                "SELECT max(s.attempts) FROM send_groups s JOIN deliveries d ON d.send_group_id = s.id"
                " JOIN intents i ON i.id = d.intent_id WHERE i.campaign_id = $1",
                sent_id,
            )
            == 2
        )

        later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
        resp = await router.client.post(
            "/v1/campaigns", json={"audience_ids": [everyone], "email": MAIL, "send_at": later}
        )
        cancelled_id = resp.json()["id"]
        deadline = time.monotonic() + 20
        while (await router.client.get(f"/v1/campaigns/{cancelled_id}")).json()[
            "status"
        ] != "sending":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await counted_both_ways(router, conn, cancelled_id)
        resp = await router.client.post(f"/v1/campaigns/{cancelled_id}/cancel")
        assert resp.status_code == 200
        view = await counted_both_ways(router, conn, cancelled_id)
        assert {d["status"] for d in view["deliveries"]} == {"cancelled"}

        # Erasure removes a member's deliveries from both campaigns' counts.
        for member in ("f00001", "f00003", "e00002"):
            assert (await router.client.delete(f"/v1/members/{member}")).status_code in (200, 204)
        view = await counted_both_ways(router, conn, sent_id)
        assert sum(d["deliveries"] for d in view["deliveries"]) == 42 - 4
        await counted_both_ways(router, conn, cancelled_id)
    finally:
        await conn.close()
