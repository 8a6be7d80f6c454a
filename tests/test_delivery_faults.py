"""Provider failures: retries without duplicates, fallback to email, visible final failures."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import asyncpg

from tests.harness import RouterUnderTest, SmtpSink, running_router

FRIEND = "U" + "f" * 32
MAIL = {"subject": "Your coupon", "text": "Use code AUTUMN at checkout."}


async def friend_intent(r: RouterUnderTest, route: str = "prefer_line") -> str:
    resp = await r.client.put(
        "/v1/members/friend", json={"email": "friend@example.jp", "line_user_id": FRIEND}
    )
    assert resp.status_code in (200, 201)
    resp = await r.client.post(
        "/v1/intents", json={"member_id": "friend", "route": route, "email": MAIL}
    )
    assert resp.status_code == 202, resp.text
    intent_id: str = resp.json()["id"]
    return intent_id


def delivery(body: dict[str, Any], channel: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in body["deliveries"] if d["channel"] == channel)
    return found


async def test_server_errors_are_retried_with_the_same_retry_key(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    line_sim.fail_next(2, status=500)
    body = await router.wait_for(await friend_intent(router))
    line = delivery(body, "line")
    assert line["status"] == "sent" and line["attempts"] == 3
    assert "500" in line["last_error"]
    attempts = [r for r in line_sim.received if r.path == "/v2/bot/message/push"]
    assert [r.status for r in attempts] == [500, 500, 200]
    assert len({r.retry_key for r in attempts}) == 1
    assert len(line_sim.accepted_pushes()) == 1 and smtp.mails == []


async def test_rate_limit_429_is_retried(router: RouterUnderTest, line_sim: Any) -> None:
    line_sim.fail_next(1, status=429, message="Too many requests")
    body = await router.wait_for(await friend_intent(router))
    assert delivery(body, "line")["attempts"] == 2
    assert len(line_sim.accepted_pushes()) == 1


async def test_timeout_after_line_accepted_is_not_a_duplicate(
    router: RouterUnderTest, line_sim: Any
) -> None:
    # LINE accepts the push but answers after the router's 2 s timeout; the retry carries the
    # same key, LINE answers 409 with the accepted request id, and the member got one message.
    line_sim.delay_next(1, 3.0)
    body = await router.wait_for(await friend_intent(router), timeout=20)
    line = delivery(body, "line")
    assert line["status"] == "sent" and line["attempts"] == 2
    pushes = [r for r in line_sim.received if r.path == "/v2/bot/message/push"]
    assert [r.status for r in pushes] == [200, 409]
    assert line["provider_ref"] == pushes[0].request_id
    assert len(line_sim.accepted_pushes()) == 1


async def test_monthly_limit_falls_back_to_email(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    line_sim.set_monthly_quota(0)
    body = await router.wait_for(await friend_intent(router))
    line, email = delivery(body, "line"), delivery(body, "email")
    assert line["status"] == "failed" and line["attempts"] == 1
    assert "monthly message quota is used up (0 + 0 of 0)" in line["last_error"]
    assert email["status"] == "sent" and email["fallback"] is True
    (mail,) = smtp.mails
    assert mail.rcpt_to == ["friend@example.jp"]
    assert line_sim.received == [r for r in line_sim.received if "quota" in r.path]


async def test_monthly_limit_429_falls_back_to_email(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    # Without the router's own quota check, LINE's 429 is what says the month is over.
    line_sim.set_monthly_quota(0)
    async with running_router(dsn, line_sim.base_url, smtp, ROUTER_LINE_CHECK_QUOTA="false") as r:
        body = await r.wait_for(await friend_intent(r))
    line, email = delivery(body, "line"), delivery(body, "email")
    assert (
        line["status"] == "failed" and "You have reached your monthly limit." in line["last_error"]
    )
    assert email["status"] == "sent"


async def test_quota_counts_own_pushes_between_reads(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    line_sim.set_monthly_quota(2)
    resp = await router.client.get("/v1/line/quota")
    assert resp.status_code == 200, resp.text
    assert resp.json()["limit"] == 2 and resp.json()["remaining"] == 2
    first = await router.wait_for(await friend_intent(router, "line_only"))
    assert delivery(first, "line")["status"] == "sent"
    figures = (await router.client.get("/v1/line/quota")).json()
    assert figures["sent_since_read"] == 1 and figures["remaining"] == 1


async def test_permanent_line_error_falls_back_but_line_only_fails(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    line_sim.fail_next(1, status=400, message="The request body has 1 error(s)")
    body = await router.wait_for(await friend_intent(router))
    assert delivery(body, "line")["status"] == "failed"
    assert delivery(body, "email")["status"] == "sent"

    line_sim.fail_next(1, status=403, message="Access to this API is not available")
    body = await router.wait_for(await friend_intent(router, "line_only"), ("failed",))
    (line,) = body["deliveries"]
    assert line["status"] == "failed" and "403" in line["last_error"]
    assert len(smtp.mails) == 1


async def test_both_reports_partial_delivery(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    smtp.fail_next_rcpt("550 5.1.1 mailbox unavailable")
    body = await router.wait_for(await friend_intent(router, "both"), ("partially_delivered",))
    assert delivery(body, "line")["status"] == "sent"
    email = delivery(body, "email")
    assert email["status"] == "failed" and "550" in email["last_error"]


async def test_smtp_temporary_failure_is_retried(router: RouterUnderTest, smtp: SmtpSink) -> None:
    await router.client.put("/v1/members/m", json={"email": "m@example.jp"})
    smtp.fail_next_rcpt("451 4.3.0 try again later")
    resp = await router.client.post("/v1/intents", json={"member_id": "m", "email": MAIL})
    body = await router.wait_for(resp.json()["id"])
    (email,) = body["deliveries"]
    assert email["attempts"] == 2 and "451" in email["last_error"]
    assert len(smtp.mails) == 1


async def test_no_retry_once_the_retry_key_may_have_expired(line_sim: Any, dsn: str) -> None:
    # A delivery whose first attempt was 23.5 hours ago may already have reached the user, and
    # LINE is about to forget its retry key: it fails visibly instead of being resent.
    line_sim.fail_next(1000, status=500)
    slow_retries = {
        "ROUTER_WORKERS_BACKOFF_BASE_SECONDS": "1",
        "ROUTER_WORKERS_BACKOFF_MAX_SECONDS": "1",
    }
    async with running_router(dsn, line_sim.base_url, None, **slow_retries) as router:
        intent_id = await friend_intent(router, "line_only")
        conn = await asyncpg.connect(dsn)
        try:
            aged = 0
            for _ in range(200):
                aged = await conn.fetchval(
                    "WITH aged AS (UPDATE deliveries"
                    " SET first_attempt_at = now() - interval '23 hours 30 minutes'"
                    " WHERE intent_id = $1 AND status = 'pending' AND attempts >= 1"
                    " RETURNING 1) SELECT count(*) FROM aged",
                    UUID(intent_id),
                )
                if aged:
                    break
                await asyncio.sleep(0.05)
            assert aged == 1
        finally:
            await conn.close()
        body = await router.wait_for(intent_id, ("failed",))
    (line,) = body["deliveries"]
    assert "retry key" in line["last_error"], line
    assert line_sim.accepted_pushes() == []
