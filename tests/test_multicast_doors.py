"""Identical LINE content to many friends from every front door goes out as LINE multicast
(send groups), not one push per friend, and each intent's record stays exact: the batch
endpoint, the SendGrid endpoint (personalizations) and the SMTP relay (one message, many
recipients). Intents with another content or another send time are never grouped with them."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosmtplib
import asyncpg

from tests.harness import API_KEY, RouterUnderTest, SmtpSink, running_router
from tests.test_compat_sendgrid import send
from tests.test_smtp_ingress import PASSWORD, USER, campaign, ingress

MULTICAST = "/v2/bot/message/multicast"
PUSH = "/v2/bot/message/push"


def friend_id(i: int) -> str:
    return f"U{i:032x}"


async def add_friends(r: RouterUnderTest, count: int) -> None:
    members = [
        {"member_id": f"f{i}", "email": f"f{i}@example.jp", "line_user_id": friend_id(i)}
        for i in range(count)
    ]
    resp = await r.client.post("/v1/members/batch", json={"members": members})
    assert resp.status_code == 200, resp.text


def sent(sim: Any, path: str) -> list[Any]:
    return [q for q in sim.accepted_pushes() if q.path == path]


async def exact(r: RouterUnderTest, intent_ids: list[str], dsn: str) -> None:
    """Every intent delivered, with one sent LINE delivery naming the multicast request
    that carried it."""
    conn = await asyncpg.connect(dsn)
    try:
        for intent_id in intent_ids:
            view = await r.wait_for(intent_id)
            (delivery,) = view["deliveries"]
            assert delivery["channel"] == "line" and delivery["status"] == "sent"
            assert delivery["attempts"] == 1 and delivery["provider_ref"]
            group = await conn.fetchval(
                "SELECT send_group_id FROM deliveries WHERE id = $1", delivery["id"]
            )
            assert group is not None
    finally:
        await conn.close()


async def test_batch_friends_with_one_content_get_one_multicast(
    router: RouterUnderTest, line_sim: Any, dsn: str
) -> None:
    await add_friends(router, 10)
    sale = {"messages": [{"type": "text", "text": "Autumn sale"}]}
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    intents = (
        [{"member_id": f"f{i}", "route": "line_only", "line": sale} for i in range(6)]
        + [
            {
                "member_id": f"f{i}",
                "route": "line_only",
                "line": {"messages": [{"type": "text", "text": t}]},
            }
            for i, t in ((6, "Just for you"), (7, "Another text"))
        ]
        + [
            {"member_id": f"f{i}", "route": "line_only", "line": sale, "send_at": later}
            for i in (8, 9)
        ]
    )
    resp = await router.client.post("/v1/intents/batch", json={"intents": intents})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert all(r["status"] == "accepted" for r in results), results
    ids = [r["id"] for r in results]
    await exact(router, ids[:6], dsn)
    for intent_id in ids[6:8]:  # a content only one intent has goes as a push
        (delivery,) = (await router.wait_for(intent_id))["deliveries"]
        assert delivery["status"] == "sent"

    for intent_id in ids[8:]:  # scheduled: waiting, in a group of their own
        assert (await router.intent(intent_id))["status"] == "queued"

    (multicast,) = sent(line_sim, MULTICAST)
    assert sorted(multicast.body["to"]) == sorted(friend_id(i) for i in range(6))
    assert multicast.retry_key is not None
    assert sorted(q.body["to"] for q in sent(line_sim, PUSH)) == [friend_id(6), friend_id(7)]
    conn = await asyncpg.connect(dsn)
    try:
        groups = await conn.fetch(
            "SELECT g.status, array_agg(d.address ORDER BY d.address) AS addresses"
            " FROM deliveries d JOIN send_groups g ON g.id = d.send_group_id GROUP BY g.id"
        )
        assert sorted((g["status"], g["addresses"]) for g in groups) == [
            ("pending", sorted(friend_id(i) for i in (8, 9))),
            ("sent", sorted(friend_id(i) for i in range(6))),
        ]
        ungrouped = await conn.fetch(
            "SELECT address FROM deliveries WHERE send_group_id IS NULL ORDER BY address"
        )
        assert [r["address"] for r in ungrouped] == [friend_id(6), friend_id(7)]
    finally:
        await conn.close()


async def test_sendgrid_personalizations_to_friends_go_as_one_multicast(
    router: RouterUnderTest, line_sim: Any, dsn: str
) -> None:
    await add_friends(router, 4)
    body = {
        "personalizations": [{"to": [{"email": f"f{i}@example.jp"}]} for i in range(4)],
        "from": {"email": "news@shop.example.jp"},
        "subject": "Autumn sale",
        "content": [{"type": "text/plain", "value": "20% off until Sunday."}],
    }
    resp = await send(router, body)
    assert resp.status_code == 202
    conn = await asyncpg.connect(dsn)
    try:
        ids = [str(r["id"]) for r in await conn.fetch("SELECT id FROM intents")]
    finally:
        await conn.close()
    assert len(ids) == 4
    await exact(router, ids, dsn)
    (multicast,) = sent(line_sim, MULTICAST)
    assert sorted(multicast.body["to"]) == sorted(friend_id(i) for i in range(4))
    assert not sent(line_sim, PUSH)


async def test_smtp_relay_message_to_many_friends_goes_as_one_multicast(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    recipients = [f"f{i}@example.jp" for i in range(3)] + ["mail@example.jp"]
    async with ingress(dsn, line_sim, smtp) as (r, port):
        await add_friends(r, 3)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.login(USER, PASSWORD)
        errors, reply = await client.sendmail(
            "bounce@shop.example.jp", recipients, campaign(recipients)
        )
        await client.quit()
        assert errors == {} and reply.startswith("2.0.0 OK: 4 recipient(s) queued")
        conn = await asyncpg.connect(dsn)
        try:
            line_ids = [
                str(row["id"])
                for row in await conn.fetch(
                    "SELECT i.id FROM intents i JOIN deliveries d ON d.intent_id = i.id"
                    " WHERE d.channel = 'line'"
                )
            ]
        finally:
            await conn.close()
        assert len(line_ids) == 3
        await exact(r, line_ids, dsn)
        while len(smtp.mails) < 1:
            await asyncio.sleep(0.05)
    (multicast,) = sent(line_sim, MULTICAST)
    assert sorted(multicast.body["to"]) == sorted(friend_id(i) for i in range(3))
    assert not sent(line_sim, PUSH)
    assert Counter(m.rcpt_to[0] for m in smtp.mails) == {"mail@example.jp": 1}


async def test_multicast_off_keeps_one_push_per_friend_for_a_batch(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with running_router(dsn, line_sim.base_url, smtp, ROUTER_LINE_MULTICAST="false") as r:
        await add_friends(r, 3)
        line = {"messages": [{"type": "text", "text": "Autumn sale"}]}
        resp = await r.client.post(
            "/v1/intents/batch",
            json={"intents": [{"member_id": f"f{i}", "line": line} for i in range(3)]},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        for result in resp.json()["results"]:
            await r.wait_for(result["id"])
    assert not sent(line_sim, MULTICAST)
    assert len(sent(line_sim, PUSH)) == 3
