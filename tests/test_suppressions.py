"""Suppressed email addresses: a hard bounce at send time suppresses the address, later intents
skip email for it (LINE still carries them), one suppressed after acceptance is not mailed,
and the /v1 and SendGrid-shaped endpoints read and manage the list."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from python_http_client.exceptions import BadRequestsError, HTTPError, NotFoundError
from sendgrid import SendGridAPIClient

from channels.smtp_bounces import hard_bounce
from tests.harness import RouterUnderTest, SmtpSink

MAIL = {"subject": "Coupon", "text": "10% off"}
FRIEND = "U" + "5" * 32


async def member(r: RouterUnderTest, member_id: str, email: str, *, friend: bool = False) -> None:
    fields: dict[str, Any] = {"email": email}
    if friend:
        fields["line_user_id"] = FRIEND
    resp = await r.client.put(f"/v1/members/{member_id}", json=fields)
    assert resp.status_code in (200, 201), resp.text


async def intent(r: RouterUnderTest, member_id: str, route: str, **extra: Any) -> Any:
    return await r.client.post(
        "/v1/intents", json={"member_id": member_id, "route": route, "email": MAIL, **extra}
    )


async def settled(r: RouterUnderTest, intent_id: str) -> dict[str, tuple[str, str | None]]:
    """Each channel's delivery status and last error once none is still on its way."""
    deadline = time.monotonic() + 20
    while True:
        body = await r.intent(intent_id)
        found = {d["channel"]: (d["status"], d.get("last_error")) for d in body["deliveries"]}
        if found and all(s not in ("pending", "claimed", "sending") for s, _ in found.values()):
            return found
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def suppression(r: RouterUnderTest, address: str) -> dict[str, Any] | None:
    resp = await r.client.get(f"/v1/suppressions/{address}")
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_the_hard_bounce_rule() -> None:
    assert hard_bounce(550, "5.1.1 no such user", "recipient") == "bounce"
    assert hard_bounce(550, "5.1.1 no such user", "message") == "bounce"
    assert hard_bounce(553, "5.1.3 bad address syntax", "recipient") == "invalid"
    assert hard_bounce(501, "bad address", "recipient") == "invalid"
    assert hard_bounce(551, "user not local", "recipient") == "bounce"
    assert hard_bounce(550, "no such user", "recipient") == "bounce"
    # Policy, mailbox state, content and the sender's own address are not the recipient's.
    assert hard_bounce(550, "5.7.1 blocked as spam", "recipient") is None
    assert hard_bounce(552, "5.2.2 mailbox full", "recipient") is None
    assert hard_bounce(550, "rejected: content", "message") is None
    assert hard_bounce(553, "5.1.8 sender domain does not exist", "sender") is None
    assert hard_bounce(450, "4.1.1 try later", "recipient") is None


async def test_a_hard_bounce_suppresses_the_address_and_later_intents_skip_email(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await member(router, "gone", "gone@example.jp")
    smtp.fail_next_rcpt("550 5.1.1 <gone@example.jp>: mailbox unavailable")
    resp = await intent(router, "gone", "email_only")
    assert resp.status_code == 202, resp.text
    first = await settled(router, resp.json()["id"])
    assert first["email"][0] == "failed" and "550" in (first["email"][1] or "")

    stored = await suppression(router, "gone@EXAMPLE.jp")
    assert stored is not None
    assert stored["reason"] == "bounce"
    assert stored["detail"] == "550 5.1.1 <gone@example.jp>: mailbox unavailable"
    assert stored["delivery_id"] is not None

    # email_only: nothing else reaches them, so the intent is refused saying why.
    resp = await intent(router, "gone", "email_only")
    assert resp.status_code == 422, resp.text
    assert "suppressed: bounce (550 5.1.1" in resp.text

    # The same address on a LINE friend: prefer_line reaches LINE; both sends LINE only.
    await router.client.delete("/v1/members/gone")
    await member(router, "friend", "gone@example.jp", friend=True)
    for route in ("prefer_line", "both"):
        resp = await intent(router, "friend", route)
        assert resp.status_code == 202, resp.text
        assert await settled(router, resp.json()["id"]) == {"line": ("sent", None)}
    assert len(line_sim.accepted_pushes()) == 2
    assert smtp.mails == []


async def test_a_policy_refusal_does_not_suppress(router: RouterUnderTest, smtp: SmtpSink) -> None:
    await member(router, "m", "m@example.jp")
    smtp.fail_next_rcpt("550 5.7.1 message refused as spam")
    resp = await intent(router, "m", "email_only")
    first = await settled(router, resp.json()["id"])
    assert first["email"][0] == "failed" and "5.7.1" in (first["email"][1] or "")
    assert await suppression(router, "m@example.jp") is None
    resp = await intent(router, "m", "email_only")
    assert resp.status_code == 202, resp.text
    assert (await settled(router, resp.json()["id"]))["email"][0] == "sent"
    assert [m.rcpt_to for m in smtp.mails] == [["m@example.jp"]]


async def test_an_address_suppressed_after_acceptance_is_not_mailed(
    router: RouterUnderTest, smtp: SmtpSink
) -> None:
    await member(router, "later", "later@example.jp")
    send_at = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    resp = await intent(router, "later", "email_only", send_at=send_at)
    assert resp.status_code == 202, resp.text
    added = await router.client.post(
        "/v1/suppressions",
        json={"suppressions": [{"address": "later@example.jp", "detail": "asked by phone"}]},
    )
    assert added.status_code == 200, added.text
    (email,) = (await settled(router, resp.json()["id"])).values()
    assert email == ("failed", "not sent: suppressed: manual (asked by phone)")
    assert smtp.mails == []


async def test_the_suppressions_api_round_trip_and_bad_input(router: RouterUnderTest) -> None:
    c = router.client
    resp = await c.post(
        "/v1/suppressions",
        json={
            "suppressions": [
                {"address": " a@Example.JP "},
                {"address": "b@example.jp", "reason": "unsubscribe", "detail": "web form"},
                {"address": "c@example.jp", "reason": "bounce"},
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["added"] == 3
    assert [(s["address"], s["reason"]) for s in body["suppressions"]] == [
        ("a@example.jp", "manual"),
        ("b@example.jp", "unsubscribe"),
        ("c@example.jp", "bounce"),
    ]
    # Again: nothing new, and the first reason stays.
    resp = await c.post("/v1/suppressions", json={"suppressions": [{"address": "b@example.jp"}]})
    assert resp.json()["added"] == 0
    assert resp.json()["suppressions"][0]["reason"] == "unsubscribe"

    listed = (await c.get("/v1/suppressions", params={"limit": 2})).json()
    assert len(listed["suppressions"]) == 2 and listed["next_offset"] == 2
    rest = (await c.get("/v1/suppressions", params={"limit": 2, "offset": 2})).json()
    assert len(rest["suppressions"]) == 1 and "next_offset" not in rest
    every = {s["address"] for s in listed["suppressions"] + rest["suppressions"]}
    assert every == {"a@example.jp", "b@example.jp", "c@example.jp"}
    only = (await c.get("/v1/suppressions", params={"reason": "unsubscribe"})).json()
    assert [s["address"] for s in only["suppressions"]] == ["b@example.jp"]

    assert (await c.get("/v1/suppressions/b@example.jp")).json()["detail"] == "web form"
    assert (await c.delete("/v1/suppressions/b@example.jp")).status_code == 204
    assert (await c.delete("/v1/suppressions/b@example.jp")).status_code == 404
    assert (await c.get("/v1/suppressions/b@example.jp")).status_code == 404

    bad = await c.post(
        "/v1/suppressions",
        json={"suppressions": [{"address": "ok@example.jp"}, {"address": "not-an-address"}]},
    )
    assert bad.status_code == 400
    problem = bad.json()
    assert problem["errors"][0]["field"] == "suppressions[1].address"
    assert await suppression(router, "ok@example.jp") is None  # nothing of it was stored
    bad = await c.post(
        "/v1/suppressions", json={"suppressions": [{"address": "x@example.jp", "reason": "x"}]}
    )
    assert bad.status_code == 400 and "reason" in bad.text
    assert (await c.get("/v1/suppressions/nope")).status_code == 400
    assert (await c.get("/v1/suppressions", params={"reason": "other"})).status_code == 400
    unauthorized = await c.get("/v1/suppressions", headers={"Authorization": "Bearer wrong"})
    assert unauthorized.status_code == 401


def sendgrid_client(r: RouterUnderTest) -> Any:
    return SendGridAPIClient(api_key="test-api-key", host=r.base_url).client


async def test_sendgrid_suppression_endpoints_with_the_official_client(
    router: RouterUnderTest, smtp: SmtpSink
) -> None:
    sg = sendgrid_client(router)
    await member(router, "b", "bounced@example.jp")
    smtp.fail_next_rcpt("550 5.1.1 no such user")
    resp = await intent(router, "b", "email_only")
    await settled(router, resp.json()["id"])
    await router.client.post(
        "/v1/suppressions",
        json={
            "suppressions": [
                {"address": "spam@example.jp", "reason": "spamreport"},
                {"address": "typo@example.jp", "reason": "invalid", "detail": "553 5.1.3 bad"},
            ]
        },
    )

    def run() -> None:
        bounces = sg.suppression.bounces.get(query_params={"limit": 10}).to_dict
        assert [(b["email"], b["status"]) for b in bounces] == [("bounced@example.jp", "5.1.1")]
        assert bounces[0]["reason"] == "550 5.1.1 no such user"
        assert abs(bounces[0]["created"] - time.time()) < 60
        future = int(time.time()) + 3600
        assert sg.suppression.bounces.get(query_params={"start_time": future}).to_dict == []
        one = sg.suppression.bounces._("bounced@example.jp").get().to_dict
        assert [b["email"] for b in one] == ["bounced@example.jp"]
        assert sg.suppression.bounces._("spam@example.jp").get().to_dict == []

        spam = sg.suppression.spam_reports.get().to_dict
        assert [s["email"] for s in spam] == ["spam@example.jp"]
        invalid = sg.suppression.invalid_emails.get().to_dict
        assert [(i["email"], i["reason"]) for i in invalid] == [
            ("typo@example.jp", "553 5.1.3 bad")
        ]

        added = sg.asm.suppressions._("global").post(
            request_body={"recipient_emails": ["u1@example.jp", "u2@example.jp"]}
        )
        assert added.status_code == 201
        assert added.to_dict == {"recipient_emails": ["u1@example.jp", "u2@example.jp"]}
        assert sg.asm.suppressions._("global")._("u1@example.jp").get().to_dict == {
            "recipient_email": "u1@example.jp"
        }
        assert sg.asm.suppressions._("global")._("nobody@example.jp").get().to_dict == {}
        unsubscribes = sg.suppression.unsubscribes.get().to_dict
        assert sorted(u["email"] for u in unsubscribes) == ["u1@example.jp", "u2@example.jp"]
        assert sg.asm.suppressions._("global")._("u1@example.jp").delete().status_code == 204
        assert sg.asm.suppressions._("global")._("u1@example.jp").get().to_dict == {}

        assert sg.suppression.bounces._("bounced@example.jp").delete().status_code == 204
        with pytest.raises(NotFoundError) as missing:
            sg.suppression.bounces._("bounced@example.jp").delete()
        assert b'"errors"' in missing.value.body
        with pytest.raises(BadRequestsError) as bad:
            sg.asm.suppressions._("global").post(request_body={"recipient_emails": ["nope"]})
        errors = bad.value.to_dict["errors"]
        assert errors[0]["field"] == "recipient_emails.0" and "nope" in errors[0]["message"]
        with pytest.raises(HTTPError):
            sg.suppression.bounces.delete(request_body={"delete_all": True, "emails": ["x@y.jp"]})

    await asyncio.to_thread(run)
    # A bounce deleted by address lifts the suppression: email may go again.
    assert await suppression(router, "bounced@example.jp") is None
    resp = await router.client.post(
        "/v1/suppressions",
        json={
            "suppressions": [{"address": f"x{i}@example.jp", "reason": "bounce"} for i in range(3)]
        },
    )
    assert resp.status_code == 200

    def delete_some_then_all() -> None:
        deleted = sg.suppression.bounces.delete(request_body={"emails": ["x0@example.jp"]})
        assert deleted.status_code == 204
        assert len(sg.suppression.bounces.get().to_dict) == 2
        assert sg.suppression.bounces.delete(request_body={"delete_all": True}).status_code == 204
        assert sg.suppression.bounces.get().to_dict == []

    await asyncio.to_thread(delete_some_then_all)
    # Other reasons were left alone.
    assert (await suppression(router, "spam@example.jp")) is not None


async def test_sendgrid_routes_refuse_bad_values_in_sendgrids_shape(
    router: RouterUnderTest,
) -> None:
    c = router.client
    resp = await c.get("/v3/suppression/bounces", params={"limit": 0})
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "limit"
    resp = await c.get("/v3/suppression/bounces", params={"start_time": 10**15, "end_time": -1})
    assert resp.status_code == 200 and resp.json() == []
    resp = await c.get(f"/v3/suppression/bounces/{'a' * 300}")
    assert resp.status_code == 400 and "errors" in resp.json()
    resp = await c.request("DELETE", "/v3/suppression/bounces", json={})
    assert resp.status_code == 400 and "delete_all" in resp.json()["errors"][0]["message"]
    resp = await c.request("DELETE", "/v3/suppression/bounces", json={"delete_all": 0})
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "delete_all"
