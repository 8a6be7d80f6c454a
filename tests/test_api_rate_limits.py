"""Request rates per API key: a token bucket in PostgreSQL, 429 with Retry-After when empty
(SendGrid's shape on /v3), one bucket per key, and no limit unless configured."""

from __future__ import annotations

import asyncpg
import httpx

from tests.harness import API_KEY, SmtpSink, running_router
from tests.test_api_members import problem

OTHER_KEY = "other-api-key"
MAIL_SEND = {
    "personalizations": [{"to": [{"email": "taro@example.jp"}]}],
    "from": {"email": "news@shop.example.jp"},
    "subject": "Autumn sale",
    "content": [{"type": "text/plain", "value": "20% off"}],
}


async def test_each_key_gets_its_burst_then_429_with_retry_after(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(
        dsn,
        None,
        smtp,
        ROUTER_API_KEYS=f"{API_KEY},{OTHER_KEY}",
        ROUTER_API_REQUESTS_PER_SECOND="0.01",  # no refill while the test runs
        ROUTER_API_BURST="3",
        ROUTER_WORKERS_ENABLED="false",
    ) as router:
        client = router.client
        for _ in range(3):
            assert (await client.get("/v1/members/m-1")).status_code == 404
        resp = await client.put("/v1/members/m-1", json={"email": "taro@example.jp"})
        body = problem(resp, 429)
        assert 90 <= int(resp.headers["retry-after"]) <= 100
        assert "0.01 requests a second" in body["detail"] and "3 at once" in body["detail"]
        # Refused before any other database work: the member was not written.
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM members") == 0
        finally:
            await conn.close()

        resp = await client.post("/v3/mail/send", json=MAIL_SEND)
        assert resp.status_code == 429 and resp.headers["retry-after"].isdigit()
        (error,) = resp.json()["errors"]
        assert "requests a second" in error["message"]

        # Another key has a bucket of its own; requests without a key are not counted.
        async with httpx.AsyncClient(
            base_url=router.base_url, headers={"Authorization": f"Bearer {OTHER_KEY}"}
        ) as other:
            assert (await other.get("/v1/members/m-1")).status_code == 404
            assert (await other.get("/healthz")).status_code == 200

        # The bucket refills with time (here: the key's row is moved an hour back).
        conn = await asyncpg.connect(dsn)
        try:
            moved = await conn.execute(
                "UPDATE rate_buckets SET second = second - interval '1 hour'"
                " WHERE bucket LIKE 'api-key:%'"
            )
            assert moved == "UPDATE 2"
        finally:
            await conn.close()
        resp = await client.put("/v1/members/m-1", json={"email": "taro@example.jp"})
        assert resp.status_code == 201, resp.text


async def test_no_limit_unless_configured(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(dsn, None, smtp, ROUTER_WORKERS_ENABLED="false") as router:
        for _ in range(30):
            assert (await router.client.get("/v1/members/m-1")).status_code == 404
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM rate_buckets") == 0
    finally:
        await conn.close()
