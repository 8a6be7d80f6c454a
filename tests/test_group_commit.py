"""Single `POST /v1/intents` requests that arrive together share one transaction (group
commit), and each still gets its own answer, after the commit, as if it had been alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from router.content import EmailContent, Relayed
from router.database import Connection, Pool
from router.intake.group_commit import GroupCommit
from router.intents import IntentRequest, IntentResult
from tests.harness import RouterUnderTest

MAIL = {"subject": "Your order", "text": "Order 1 has shipped."}


async def add_members(r: RouterUnderTest, count: int) -> None:
    members = [
        {"member_id": f"m{i}", "email": f"m{i}@example.jp", "line_user_id": f"U{i:032x}"}
        for i in range(count)
    ]
    resp = await r.client.post("/v1/members/batch", json={"members": members})
    assert resp.status_code == 200, resp.text


async def test_concurrent_singles_share_transactions_and_each_is_answered_exactly(
    router: RouterUnderTest, dsn: str
) -> None:
    await add_members(router, 40)
    bodies: list[dict[str, Any]] = [
        {"member_id": f"m{i}", "route": "email_only", "email": MAIL} for i in range(40)
    ]
    bodies += [
        {"member_id": "nobody", "email": MAIL},  # 422 alone
        {"member_id": "m1", "email": MAIL, "idempotency_key": "k-1"},
        {"member_id": "m1", "email": MAIL, "idempotency_key": "k-1"},  # the same again
        {"member_id": "m2", "email": MAIL, "idempotency_key": "k-1"},  # another body: 409
    ]
    answers = await asyncio.gather(*(router.client.post("/v1/intents", json=b) for b in bodies))
    codes = [a.status_code for a in answers]
    assert codes[:40] == [202] * 40
    assert codes[40] == 422
    assert answers[40].json()["errors"] == [
        {"field": "member_id", "message": "no member with this id"}
    ]
    keyed = sorted(codes[41:])
    assert keyed == [200, 202, 409], [a.text for a in answers[41:]]
    (first,) = [a for a in answers[41:43] if a.status_code == 202]
    (again,) = [a for a in answers[41:43] if a.status_code == 200]
    assert again.json()["id"] == first.json()["id"]

    ids = [a.json()["id"] for a in answers[:40]] + [first.json()["id"]]
    assert len(set(ids)) == 41
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetch("SELECT id, member_id, xmin::text AS tx FROM intents")
        transactions = len({r["tx"] for r in stored})
    finally:
        await conn.close()
    assert {str(r["id"]) for r in stored} == set(ids)
    # Accepted together: fewer transactions than intents.
    assert transactions < len(ids)
    for intent_id in ids[:40]:
        view = await router.wait_for(intent_id)
        assert [d["channel"] for d in view["deliveries"]] == ["email"]


async def test_singles_stored_together_are_pushed_not_multicast(
    router: RouterUnderTest, line_sim: Any
) -> None:
    await add_members(router, 6)
    line = {"messages": [{"type": "text", "text": "Your parcel is on its way"}]}
    answers = await asyncio.gather(
        *(
            router.client.post("/v1/intents", json={"member_id": f"m{i}", "line": line})
            for i in range(6)
        )
    )
    assert [a.status_code for a in answers] == [202] * 6
    for a in answers:
        await router.wait_for(a.json()["id"])
    paths = sorted(q.path for q in line_sim.accepted_pushes())
    assert paths == ["/v2/bot/message/push"] * 6


async def test_a_group_that_fails_is_retried_one_intent_at_a_time(
    router: RouterUnderTest, dsn: str
) -> None:
    """A statement error caused by one intent (injected here, since valid input never causes
    one) fails that intent's request only; the others of its group are accepted."""
    await add_members(router, 5)
    runtime = router.runtime
    calls: list[int] = []

    async def accept(
        conn: Connection,
        requests: Sequence[IntentRequest | IntentResult],
        *,
        prefix: str = "",
        relayed: Relayed | None = None,
        campaign_id: UUID | None = None,
        multicast: bool = True,
    ) -> list[IntentResult]:
        calls.append(len(requests))
        async with conn.transaction():
            results = await runtime.accept_intents(conn, requests, multicast=multicast)
            if any(isinstance(r, IntentRequest) and r.member_id == "m3" for r in requests):
                # Raised after the statement, inside the transaction: all of it rolls back.
                raise asyncpg.CheckViolationError("injected")
        return results

    pool: Pool = runtime.pool
    commit = GroupCommit(pool, accept)
    mail = EmailContent(subject="Your order", text="Order 1 has shipped.")
    requests = [IntentRequest(member_id=f"m{i}", route="email_only", email=mail) for i in range(5)]
    outcomes = await asyncio.gather(*(commit.accept(r) for r in requests), return_exceptions=True)
    assert isinstance(outcomes[3], asyncpg.CheckViolationError)
    accepted = [o for i, o in enumerate(outcomes) if i != 3]
    assert all(isinstance(o, IntentResult) and o.status == "accepted" for o in accepted)
    assert calls[0] > 1  # they were tried together first
    conn = await asyncpg.connect(dsn)
    try:
        members = {r["member_id"] for r in await conn.fetch("SELECT member_id FROM intents")}
    finally:
        await conn.close()
    assert members == {"m0", "m1", "m2", "m4"}
