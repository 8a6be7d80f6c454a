"""Delivery events reach the sender's webhook in SendGrid's format: signed, ordered, once each."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from router.config import ConfigError
from tests.harness import RouterUnderTest, SmtpSink, router_config, running_router

SECRET = "events-signing-secret"
FRIEND = "U" + "e" * 32
MAIL = {"subject": "Your order", "text": "Order 1234 has shipped."}

Event = dict[str, Any]


@dataclass
class Receiver:
    """An HTTP endpoint standing in for the sender's event webhook."""

    url: str = ""
    accepted: list[list[Event]] = field(default_factory=list)
    refused: list[list[Event]] = field(default_factory=list)
    bad_signatures: int = 0
    failures_left: int = 0
    # Every accepted post as it came: the raw body and the headers, for signature checks.
    posts: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        return [e for batch in self.accepted for e in batch]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Router-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401)
        batch: list[Event] = json.loads(body)
        if self.failures_left:
            self.failures_left -= 1
            self.refused.append(batch)
            return web.Response(status=503)
        self.accepted.append(batch)
        self.posts.append((body, dict(request.headers)))
        return web.Response(status=200)

    async def wait_until(
        self, done: Callable[[list[Event]], bool], timeout: float = 15.0
    ) -> list[Event]:
        deadline = time.monotonic() + timeout
        while not done(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"events so far: {self.events}")
            await asyncio.sleep(0.05)
        return self.events


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/events", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    hook.url = f"http://127.0.0.1:{port}/events"
    try:
        yield hook
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def router_with_events(
    dsn: str, line_sim: Any, smtp: SmtpSink, hook: Receiver, **env: str
) -> AsyncIterator[RouterUnderTest]:
    settings = {
        "ROUTER_EVENTS_WEBHOOK_URL": hook.url,
        "ROUTER_EVENTS_SIGNING_SECRET": SECRET,
        "ROUTER_EVENTS_BACKOFF_BASE_SECONDS": "0.1",
        "ROUTER_EVENTS_BACKOFF_MAX_SECONDS": "0.3",
    } | env
    async with running_router(dsn, line_sim.base_url, smtp, **settings) as r:
        assert r.runtime.delivery_events is not None
        r.runtime.delivery_events.recheck_seconds = 0.05
        yield r


async def send(r: RouterUnderTest, member: dict[str, Any], **intent: Any) -> str:
    resp = await r.client.put("/v1/members/m-1", json=member)
    assert resp.status_code in (200, 201), resp.text
    resp = await r.client.post("/v1/intents", json={"member_id": "m-1", **intent})
    assert resp.status_code == 202, resp.text
    intent_id: str = resp.json()["id"]
    return intent_id


def kinds(events: list[Event], channel: str | None = None) -> list[str]:
    return [e["event"] for e in events if channel is None or e["channel"] == channel]


def at_least(n: int) -> Callable[[list[Event]], bool]:
    return lambda events: len(events) >= n


LINE_MEMBER = {"email": "taro@example.jp", "line_user_id": FRIEND, "line_friend": True}


async def test_line_delivery_is_processed_then_delivered(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        intent_id = await send(r, LINE_MEMBER, email=MAIL, tags=["shipping"])
        body = await r.wait_for(intent_id)
        events = await hook.wait_until(at_least(2))
    (line,) = body["deliveries"]
    assert kinds(events) == ["processed", "delivered"]
    for e in events:
        assert e["channel"] == "line" and e["email"] == "taro@example.jp"
        assert e["member_id"] == "m-1" and e["intent_id"] == intent_id
        assert e["delivery_id"] == line["id"] and e["sg_message_id"] == intent_id
        assert e["category"] == ["shipping"]
        assert isinstance(e["timestamp"], int) and abs(e["timestamp"] - time.time()) < 60
    assert events[1]["response"] == line["provider_ref"]
    assert len({e["sg_event_id"] for e in events}) == 2
    assert hook.bad_signatures == 0


async def test_sg_message_id_comes_from_metadata(dsn: str, line_sim: Any, smtp: SmtpSink) -> None:
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        await send(
            r,
            {"email": "hanako@example.jp"},
            email=MAIL,
            metadata={"sg_message_id": "abc123.filter0001"},
        )
        events = await hook.wait_until(at_least(2))
    assert {e["sg_message_id"] for e in events} == {"abc123.filter0001"}
    assert events[1]["smtp-id"].startswith("<")  # the Message-ID the email went out with


async def test_smtp_permanent_failure_is_a_bounce_with_the_reason(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    smtp.fail_next_rcpt("550 5.1.1 mailbox unavailable")
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        intent_id = await send(r, {"email": "gone@example.jp"}, email=MAIL)
        await r.wait_for(intent_id, ("failed",))
        events = await hook.wait_until(at_least(2))
    assert kinds(events) == ["processed", "bounce"]
    bounce = events[1]
    assert bounce["channel"] == "email" and bounce["email"] == "gone@example.jp"
    assert "550" in bounce["reason"] and "mailbox unavailable" in bounce["reason"]
    assert bounce["type"] == "bounce"


async def test_smtp_temporary_failure_is_deferred_then_delivered(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    smtp.fail_next_rcpt("451 4.3.0 try again later")
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        intent_id = await send(r, {"email": "busy@example.jp"}, email=MAIL)
        await r.wait_for(intent_id)
        events = await hook.wait_until(at_least(3))
    assert kinds(events) == ["processed", "deferred", "delivered"]
    deferred = events[1]
    assert "451" in deferred["response"] and "451" in deferred["reason"]
    assert deferred["attempt"] == "1"
    assert {e["email"] for e in events} == {"busy@example.jp"}


async def test_monthly_quota_drops_line_and_the_email_fallback_is_delivered(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    # The LINE push is not attempted (quota used up): `dropped`, not `bounce`, so bounce
    # handling does not suppress the member's address; the fallback is its own delivery.
    line_sim.set_monthly_quota(0)
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        intent_id = await send(r, LINE_MEMBER, email=MAIL)
        await r.wait_for(intent_id)
        events = await hook.wait_until(at_least(4))
    assert [(e["channel"], e["event"]) for e in events] == [
        ("line", "processed"),
        ("line", "dropped"),
        ("email", "processed"),
        ("email", "delivered"),
    ]
    assert "monthly message quota is used up" in events[1]["reason"]
    assert {e["email"] for e in events} == {"taro@example.jp"}
    assert events[1]["delivery_id"] != events[2]["delivery_id"]


async def test_refused_batches_are_retried_and_each_event_arrives_once_in_order(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        hook.failures_left = 2
        first = await send(r, {"email": "a@example.jp"}, email=MAIL)
        await r.wait_for(first)
        events = await hook.wait_until(at_least(2))
        second = await send(r, {"email": "a@example.jp"}, email=MAIL)
        await r.wait_for(second)
        events = await hook.wait_until(at_least(4))
        await asyncio.sleep(0.5)  # nothing further may arrive
        events = hook.events
    assert len(hook.refused) == 2 and hook.bad_signatures == 0
    assert [(e["intent_id"], e["event"]) for e in events] == [
        (first, "processed"),
        (first, "delivered"),
        (second, "processed"),
        (second, "delivered"),
    ]
    assert len({e["sg_event_id"] for e in events}) == 4
    # Each refused attempt carried the oldest events, in the order they were finally accepted.
    accepted_ids = [e["sg_event_id"] for e in events]
    for batch in hook.refused:
        ids = [e["sg_event_id"] for e in batch]
        assert ids == accepted_ids[: len(ids)]
    conn = await asyncpg.connect(dsn)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM delivery_events WHERE sent_at IS NULL") == 0
        )
    finally:
        await conn.close()


async def test_nothing_is_recorded_or_sent_without_a_webhook_url(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with receiver() as hook, running_router(dsn, line_sim.base_url, smtp) as r:
        assert r.runtime.delivery_events is None
        smtp.fail_next_rcpt("451 4.3.0 try again later")
        intent_id = await send(r, LINE_MEMBER, route="both", email=MAIL)
        await r.wait_for(intent_id)
        await asyncio.sleep(1.2)
    assert hook.accepted == [] and hook.refused == []
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM delivery_events") == 0
    finally:
        await conn.close()


def test_a_webhook_url_needs_a_signing_secret(dsn: str) -> None:
    with pytest.raises(ConfigError, match="signing_secret"):
        router_config(dsn, None, None, ROUTER_EVENTS_WEBHOOK_URL="https://hooks.example.jp/e")


async def test_a_campaigns_deliveries_are_each_processed_then_delivered(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        people = [
            {"member_id": "c-1", "email": "c1@example.jp", "line_user_id": FRIEND},
            {"member_id": "c-2", "email": "c2@example.jp"},
            {"member_id": "c-3", "email": "c3@example.jp", "line_user_id": f"U{3:032x}"},
        ]
        resp = await r.client.post("/v1/members/batch", json={"members": people})
        assert resp.status_code == 200, resp.text
        lines = "\n".join(p["email"] for p in people).encode()
        resp = await r.client.post(
            "/v1/audiences",
            data={"name": "all", "type": "email"},
            files={"file": ("list.csv", lines, "text/csv")},
        )
        resp = await r.client.post(
            "/v1/campaigns",
            json={"audience_ids": [resp.json()["id"]], "email": {"subject": "Hi", "text": "hi"}},
        )
        assert resp.status_code == 202, resp.text
        events = await hook.wait_until(at_least(6))
        by_address = sorted((e["email"], e["channel"], e["event"]) for e in events)
        # LINE events name the member's email; each delivery is processed once, then delivered.
        assert by_address == [
            ("c1@example.jp", "line", "delivered"),
            ("c1@example.jp", "line", "processed"),
            ("c2@example.jp", "email", "delivered"),
            ("c2@example.jp", "email", "processed"),
            ("c3@example.jp", "line", "delivered"),
            ("c3@example.jp", "line", "processed"),
        ]
