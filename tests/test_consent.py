"""Consent to promotional email: recorded on members, enforced at intake and in campaigns
with `[email] require_consent = true`, kept past erasure while the law asks, then pruned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from router import retention
from tests.harness import RouterUnderTest, SmtpSink, running_router
from tests.test_multicast import friend_id, settled

MAIL = {"subject": "Autumn sale", "text": "20% off until Sunday"}
CONSENT = {
    "granted_at": "2026-04-01T10:00:00+09:00",
    "source": "signup-form",
    "evidence": "form rev 12, request log 8f2c",
}


@pytest.fixture
async def router(dsn: str, line_sim: Any, smtp: SmtpSink) -> AsyncIterator[RouterUnderTest]:
    async with running_router(
        dsn, line_sim.base_url, smtp, ROUTER_EMAIL_REQUIRE_CONSENT="true"
    ) as r:
        yield r


async def put_member(r: RouterUnderTest, member_id: str, **fields: Any) -> dict[str, Any]:
    resp = await r.client.put(f"/v1/members/{member_id}", json=fields)
    assert resp.status_code in (200, 201), resp.text
    body: dict[str, Any] = resp.json()
    return body


async def send(r: RouterUnderTest, member_id: str, **fields: Any) -> Any:
    return await r.client.post(
        "/v1/intents", json={"member_id": member_id, "email": MAIL, **fields}
    )


async def delivered(r: RouterUnderTest, member_id: str, **fields: Any) -> dict[str, Any]:
    resp = await send(r, member_id, **fields)
    assert resp.status_code == 202, resp.text
    return await r.wait_for(resp.json()["id"])


async def test_promotional_email_needs_consent_and_stops_when_it_is_withdrawn(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await put_member(router, "friend", email="friend@example.jp", line_user_id=friend_id(1))
    await put_member(router, "reader", email="reader@example.jp")
    created = await put_member(router, "fan", email="fan@example.jp", email_consent=CONSENT)
    assert created["email_consent"] == CONSENT

    refused = await send(router, "reader", route="email_only")
    assert refused.status_code == 422, refused.text
    assert "consent" in refused.json()["detail"]
    by_line = await delivered(router, "friend", route="prefer_line")
    assert [d["channel"] for d in by_line["deliveries"]] == ["line"]
    receipt = await delivered(router, "reader", route="email_only", kind="transactional")
    assert [d["channel"] for d in receipt["deliveries"]] == ["email"]
    await delivered(router, "fan", route="email_only")
    assert sorted(r for m in smtp.mails for r in m.rcpt_to) == [
        "fan@example.jp",
        "reader@example.jp",
    ]

    # A change that leaves consent out keeps it; null withdraws it, and the next is refused.
    updated = await put_member(router, "fan", attributes={"tier": "gold"})
    assert updated["email_consent"]["source"] == "signup-form"
    withdrawn = await put_member(router, "fan", email_consent=None)
    assert withdrawn["email_consent"] is None
    again = await send(router, "fan", route="email_only")
    assert again.status_code == 422 and "consent" in again.json()["detail"]
    assert len(smtp.mails) == 2


async def test_consent_is_checked_and_shown_with_opt_outs_and_suppression(
    router: RouterUnderTest, dsn: str
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for consent, field in (
        ({**CONSENT, "granted_at": future}, "email_consent.granted_at"),
        ({**CONSENT, "granted_at": "2026-04-01T10:00:00"}, "email_consent.granted_at"),
        ({**CONSENT, "source": ""}, "email_consent.source"),
        ({**CONSENT, "evidence": "x" * 2001}, "email_consent.evidence"),
        ({"granted_at": CONSENT["granted_at"], "source": "form"}, "email_consent"),
    ):
        resp = await router.client.put(
            "/v1/members/m-1", json={"email": "m1@example.jp", "email_consent": consent}
        )
        assert resp.status_code == 400, (consent, resp.text)
        assert field in {e["field"] for e in resp.json()["errors"]}, resp.text

    resp = await router.client.post(
        "/v1/members/batch",
        json={
            "members": [
                {"member_id": "m-1", "email": "m1@example.jp", "email_consent": CONSENT},
                {"member_id": "m-2", "email_consent": {**CONSENT, "granted_at": future}},
                {"member_id": "m-3", "email_consent": {**CONSENT, "granted_at": "yesterday"}},
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert results[0] == {"member_id": "m-1", "status": "created"}
    assert results[1]["status"] == "rejected"
    assert results[1]["errors"][0]["field"] == "members[1].email_consent.granted_at"
    assert results[2]["status"] == "rejected"
    assert results[2]["errors"][0]["field"].startswith("members[2].email_consent")

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO email_category_opt_outs (member_id, category) VALUES ('m-1', 'news')"
        )
        await conn.execute(
            "INSERT INTO email_suppressions (address, reason, detail)"
            " VALUES ('m1@example.jp', 'bounce', '550 5.1.1')"
        )
    finally:
        await conn.close()
    member = (await router.client.get("/v1/members/m-1")).json()
    assert member["email_consent"]["evidence"] == CONSENT["evidence"]
    assert [o["category"] for o in member["email_category_opt_outs"]] == ["news"]
    assert member["email_suppression"]["reason"] == "bounce"
    assert member["email_suppression"]["detail"] == "550 5.1.1"


async def test_campaign_emails_only_members_with_consent(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    people = [
        {"member_id": "f0", "email": "f0@example.jp", "line_user_id": friend_id(0)},
        {"member_id": "f1", "email": "f1@example.jp", "line_user_id": friend_id(1)},
        {"member_id": "e0", "email": "e0@example.jp"},
        {"member_id": "e1", "email": "e1@example.jp"},
    ]
    for person in people:
        if person["member_id"].endswith("0"):
            person["email_consent"] = CONSENT
    resp = await router.client.post("/v1/members/batch", json={"members": people})
    assert resp.status_code == 200, resp.text
    resp = await router.client.post(
        "/v1/audiences",
        data={"name": "all", "type": "email"},
        files={"file": ("a.csv", "\n".join(p["email"] for p in people).encode(), "text/csv")},
    )
    assert resp.status_code == 201, resp.text
    resp = await router.client.post(
        "/v1/campaigns", json={"audience_ids": [resp.json()["id"]], "email": MAIL, "route": "both"}
    )
    assert resp.status_code == 202, resp.text
    campaign_id = resp.json()["id"]
    await settled(router, campaign_id, {("line", "sent"): 2, ("email", "sent"): 2})
    view = (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()
    assert (view["targeted"], view["accepted"], view["rejected"]) == (4, 3, 1)
    assert sorted(r for m in smtp.mails for r in m.rcpt_to) == ["e0@example.jp", "f0@example.jp"]


async def test_erasure_keeps_consent_a_month_after_the_last_promotional_email(
    router: RouterUnderTest, smtp: SmtpSink, dsn: str
) -> None:
    for member in ("buyer", "customer", "quiet"):
        await put_member(router, member, email=f"{member}@example.jp", email_consent=CONSENT)
    await delivered(router, "buyer", route="email_only")
    await delivered(router, "customer", route="email_only", kind="transactional")
    for member in ("buyer", "customer", "quiet"):
        assert (await router.client.delete(f"/v1/members/{member}")).status_code == 204
        assert (await router.client.get(f"/v1/members/{member}")).status_code == 404

    kept = await router.client.get("/v1/consent-records/buyer")
    assert kept.status_code == 200, kept.text
    (record,) = kept.json()["records"]
    assert record["email"] == "buyer@example.jp"
    assert record["consent"]["evidence"] == CONSENT["evidence"]
    last = datetime.fromisoformat(record["last_promotional_at"])
    keep_until = datetime.fromisoformat(record["keep_until"])
    assert abs(datetime.now(UTC) - last) < timedelta(minutes=1)
    assert timedelta(days=28) <= keep_until - last <= timedelta(days=31)
    for member in ("customer", "quiet"):
        assert (await router.client.get(f"/v1/consent-records/{member}")).status_code == 404

    # A month later the record goes with the next sweep.
    assert (await retention.prune(router.runtime.pool, None))["email_consent_records"] == 0
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE email_consent_records SET keep_until = now() - interval '1s'")
    finally:
        await conn.close()
    assert (await retention.prune(router.runtime.pool, None))["email_consent_records"] == 1
    assert (await router.client.get("/v1/consent-records/buyer")).status_code == 404


async def test_withdrawing_consent_stops_email_already_queued_and_new_consent_lifts_it(
    router: RouterUnderTest, smtp: SmtpSink
) -> None:
    await put_member(router, "fan", email="fan@example.jp", email_consent=CONSENT)
    later = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    queued = await send(router, "fan", route="email_only", send_at=later)
    assert queued.status_code == 202, queued.text
    await put_member(router, "fan", email_consent=None)
    stopped = await router.wait_for(queued.json()["id"], ("failed",))
    assert "opted out of promotional email" in stopped["deliveries"][0]["last_error"]
    assert smtp.mails == []

    # The same record sent again (a nightly sync) does not undo the withdrawal's opt-out...
    await put_member(router, "fan", email_consent=CONSENT)
    assert (await send(router, "fan", route="email_only")).status_code == 422
    # ...a consent given after it does.
    fresh = {**CONSENT, "granted_at": datetime.now(UTC).isoformat()}
    await put_member(router, "fan", email_consent=fresh)
    await delivered(router, "fan", route="email_only")
    assert [r for m in smtp.mails for r in m.rcpt_to] == ["fan@example.jp"]
