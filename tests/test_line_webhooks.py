"""The webhook receiver over real HTTP: signatures, durable events, friendship, forwarding."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from tests.harness import RouterUnderTest, SmtpSink, running_router

SECRET = "test-channel-secret"
USER = "U" + "7" * 32


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "X-Line-Signature": base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }


def event(kind: str, user: str = USER, event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user},
        "webhookEventId": event_id or f"01H{kind.upper()}{time.monotonic_ns()}",
        "deliveryContext": {"isRedelivery": False},
        **extra,
    }


def body_of(*events: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"destination": "U" + "0" * 32, "events": list(events)})


async def post_webhook(r: RouterUnderTest, body: bytes, headers: dict[str, str]) -> Any:
    return await r.client.post("/webhooks/line", content=body, headers=headers)


async def wait_processed(dsn: str, count: int, timeout: float = 10.0) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = await conn.fetch(
                "SELECT event_type, outcome FROM line_webhook_events"
                " WHERE processed_at IS NOT NULL ORDER BY occurred_at"
            )
            if len(rows) >= count:
                return rows
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def line_router(dsn: str, line_sim: Any, smtp: SmtpSink | None, **env: str) -> Any:
    return running_router(dsn, line_sim.base_url, smtp, ROUTER_LINE_CHANNEL_SECRET=SECRET, **env)


async def test_forged_or_missing_signature_gets_401_and_stores_nothing(
    dsn: str, line_sim: Any
) -> None:
    async with line_router(dsn, line_sim, None) as r:
        body = body_of(event("follow"))
        assert (await post_webhook(r, body, signed(body, "another-secret"))).status_code == 401
        no_sig = {"Content-Type": "application/json"}
        assert (await post_webhook(r, body, no_sig)).status_code == 401
        tampered = body.replace(b"follow", b"unfollow")
        assert (await post_webhook(r, tampered, signed(body))).status_code == 401
        empty = body_of()
        resp = await post_webhook(r, empty, signed(empty))  # LINE's connectivity check
        assert resp.status_code == 200 and resp.json() == {"stored": 0, "duplicates": 0}
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM line_webhook_events") == 0
    finally:
        await conn.close()


async def test_follow_and_unfollow_steer_prefer_line(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with line_router(dsn, line_sim, smtp) as r:
        await r.client.put(
            "/v1/members/m",
            json={"email": "m@example.jp", "line_user_id": USER, "line_friend": False},
        )
        mail = {"subject": "Hi", "text": "Hello"}
        resp = await r.client.post("/v1/intents", json={"member_id": "m", "email": mail})
        assert resp.json()["channels"] == ["email"]

        body = body_of(event("follow", follow={"isUnblocked": True}))
        assert (await post_webhook(r, body, signed(body))).json()["stored"] == 1
        await wait_processed(dsn, 1)
        assert (await r.client.get("/v1/members/m")).json()["line_friend"] is True
        resp = await r.client.post("/v1/intents", json={"member_id": "m", "email": mail})
        assert resp.json()["channels"] == ["line"]

        body = body_of(event("unfollow"))
        await post_webhook(r, body, signed(body))
        rows = await wait_processed(dsn, 2)
        assert rows[-1]["outcome"].startswith("not a friend")
        resp = await r.client.post("/v1/intents", json={"member_id": "m", "email": mail})
        assert resp.json()["channels"] == ["email"]


async def test_unknown_follower_is_remembered_for_a_later_link(dsn: str, line_sim: Any) -> None:
    async with line_router(dsn, line_sim, None) as r:
        body = body_of(event("follow"))
        await post_webhook(r, body, signed(body))
        (row,) = await wait_processed(dsn, 1)
        assert row["outcome"] == "friend, not linked to a member"
        # an unfollow that happened earlier but arrives later does not undo the follow
        late = event("unfollow")
        late["timestamp"] -= 60_000
        body = body_of(late)
        await post_webhook(r, body, signed(body))
        await wait_processed(dsn, 2)
        resp = await r.client.put("/v1/members/m", json={"line_user_id": USER})
        assert resp.json()["line_friend"] is True


async def test_member_linked_later_gets_the_friend_status_line_reported(
    dsn: str, line_sim: Any
) -> None:
    async with line_router(dsn, line_sim, None) as r:
        body = body_of(event("unfollow"))
        await post_webhook(r, body, signed(body))
        await wait_processed(dsn, 1)
        resp = await r.client.put("/v1/members/m", json={"line_user_id": USER})
        assert resp.json()["line_friend"] is False  # LINE said this user blocked the account
        resp = await r.client.put("/v1/members/n", json={"line_user_id": "U" + "8" * 32})
        assert resp.json()["line_friend"] is True  # nothing known: a given ID implies a friend


async def test_redelivered_event_is_processed_once(dsn: str, line_sim: Any) -> None:
    async with line_router(dsn, line_sim, None) as r:
        first = event("follow", event_id="01HREDELIVERED")
        body = body_of(first)
        assert (await post_webhook(r, body, signed(body))).json() == {"stored": 1, "duplicates": 0}
        again = dict(first, deliveryContext={"isRedelivery": True})
        body = body_of(again)
        assert (await post_webhook(r, body, signed(body))).json() == {"stored": 0, "duplicates": 1}
        await wait_processed(dsn, 1)
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM line_webhook_events") == 1
        finally:
            await conn.close()


async def test_signed_body_that_is_not_a_webhook_is_400(dsn: str, line_sim: Any) -> None:
    async with line_router(dsn, line_sim, None) as r:
        body = b'{"hello": "world"}'
        resp = await post_webhook(r, body, signed(body))
        assert resp.status_code == 400 and "not a LINE webhook" in resp.json()["detail"]


async def test_webhooks_are_forwarded_unchanged_in_order_with_retries(
    dsn: str, line_sim: Any
) -> None:
    received: list[tuple[bytes, str]] = []
    failures = {"left": 2}

    async def bot(request: web.Request) -> web.Response:
        if failures["left"]:
            failures["left"] -= 1
            return web.Response(status=503)
        received.append((await request.read(), request.headers["X-Line-Signature"]))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/bot", bot)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with line_router(
            dsn, line_sim, None, ROUTER_LINE_FORWARD_WEBHOOKS_TO=f"http://127.0.0.1:{port}/bot"
        ) as r:
            r.runtime.forwarder.backoff_base = 0.05  # type: ignore[union-attr]
            sent = []
            for i in range(3):
                body = body_of(event("follow", user=f"U{i:032x}"))
                headers = signed(body)
                sent.append((body, headers["X-Line-Signature"]))
                assert (await post_webhook(r, body, headers)).status_code == 200
            deadline = time.monotonic() + 15
            while len(received) < 3:
                assert time.monotonic() < deadline, received
                await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    assert received == sent  # byte for byte, original signatures, original order
