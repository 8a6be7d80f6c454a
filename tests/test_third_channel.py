"""A third channel, registered from outside the router, routes, delivers, falls back and
reports end to end: the seam `channels.registry` promises, proved without touching the core.

The fake channel stands for SMS: it reaches any member with a phone number, ranks after email
in `prefer_line` and takes part in `both`. Its adapter is an in-memory gateway that records
what it was handed and can refuse numbers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from channels import registry
from channels.base import ChannelDescriptor, Failed, Outbound, Outcome, Sent
from tests.harness import RouterUnderTest, SmtpSink, running_router
from tests.test_delivery_events import kinds, receiver, router_with_events

FRIEND = "U" + "5" * 32
PHONE = "+819012345678"
MAIL = {"subject": "Your order", "text": "Order 1234 has shipped."}


class SmsGateway:
    """The fake channel's adapter: records sends, refuses the numbers in `refuse`."""

    name = "sms"
    replay_window: timedelta | None = timedelta(hours=1)
    max_concurrency = 4
    requests_per_second: int | None = None

    def __init__(self) -> None:
        self.sent: list[Outbound] = []
        self.refuse: set[str] = set()

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for message in batch:
            if message.address in self.refuse:
                outcomes.append(Failed("the number cannot receive SMS"))
            else:
                self.sent.append(message)
                outcomes.append(Sent(f"sms-{message.delivery_id}"))
        return outcomes

    async def aclose(self) -> None:
        return None


SMS = ChannelDescriptor(
    name="sms",
    routes={"prefer_line": 2, "both": 2},
    not_configured="SMS is not configured on this router",
    unreachable=lambda reach: None if reach.phone else "no phone number for this recipient",
    reachable_sql="(m.phone IS NOT NULL)",
    address=lambda reach: reach.phone,
    address_sql="m.phone",
    address_noun="phone number",
    carries=lambda content: content.email is not None or content.line is not None,
    no_content="the intent has nothing to send as text",
    describe=lambda config: "SMS through the test gateway",
)


@pytest.fixture
def sms() -> Iterator[SmsGateway]:
    gateway = SmsGateway()
    registry.register(SMS, lambda config, built: gateway)
    try:
        yield gateway
    finally:
        registry.unregister(SMS.name)


@pytest.fixture
async def router_with_sms(
    dsn: str, line_sim: Any, smtp: SmtpSink, sms: SmsGateway
) -> AsyncIterator[RouterUnderTest]:
    async with running_router(dsn, line_sim.base_url, smtp) as r:
        yield r


async def intent_for(r: RouterUnderTest, member: dict[str, Any], **intent: Any) -> dict[str, Any]:
    resp = await r.client.put("/v1/members/m-1", json=member)
    assert resp.status_code in (200, 201), resp.text
    resp = await r.client.post("/v1/intents", json={"member_id": "m-1", "email": MAIL, **intent})
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


def delivery(body: dict[str, Any], channel: str) -> dict[str, Any]:
    (found,) = [d for d in body["deliveries"] if d["channel"] == channel]
    return found


async def test_a_member_with_only_a_phone_is_routed_to_the_registered_channel(
    router_with_sms: RouterUnderTest, sms: SmsGateway, smtp: SmtpSink
) -> None:
    accepted = await intent_for(router_with_sms, {"phone": "090-1234-5678"})
    assert accepted["channels"] == ["sms"] and "fallback" not in accepted
    body = await router_with_sms.wait_for(accepted["id"])
    sent = delivery(body, "sms")
    assert sent["status"] == "sent" and sent["provider_ref"].startswith("sms-")
    (message,) = sms.sent
    assert message.address == PHONE
    assert message.content.email is not None and message.content.email.subject == "Your order"
    assert smtp.mails == []


async def test_both_sends_on_every_channel_including_the_registered_one(
    router_with_sms: RouterUnderTest, sms: SmsGateway, smtp: SmtpSink, line_sim: Any
) -> None:
    member = {"email": "taro@example.jp", "phone": PHONE, "line_user_id": FRIEND}
    accepted = await intent_for(router_with_sms, member, route="both")
    assert accepted["channels"] == ["line", "email", "sms"]
    body = await router_with_sms.wait_for(accepted["id"])
    assert {d["channel"]: d["status"] for d in body["deliveries"]} == {
        "line": "sent",
        "email": "sent",
        "sms": "sent",
    }
    assert len(sms.sent) == 1 and len(smtp.mails) == 1 and len(line_sim.accepted_pushes()) == 1


async def test_a_line_refusal_falls_back_to_the_registered_channel(
    router_with_sms: RouterUnderTest, sms: SmsGateway, line_sim: Any
) -> None:
    # No email address: after LINE, the next channel of prefer_line that reaches them is SMS.
    line_sim.fail_next(1, status=400, message="The request body has 1 error(s)")
    accepted = await intent_for(router_with_sms, {"phone": PHONE, "line_user_id": FRIEND})
    assert accepted["channels"] == ["line"] and accepted["fallback"] == "sms"
    body = await router_with_sms.wait_for(accepted["id"])
    assert delivery(body, "line")["status"] == "failed"
    fallback = delivery(body, "sms")
    assert fallback["status"] == "sent" and fallback["fallback"] is True
    assert [m.address for m in sms.sent] == [PHONE]


async def test_an_email_bounce_falls_back_to_the_registered_channel(
    router_with_sms: RouterUnderTest, sms: SmsGateway, smtp: SmtpSink
) -> None:
    smtp.fail_next_rcpt("550 5.1.1 mailbox unavailable")
    accepted = await intent_for(router_with_sms, {"email": "taro@example.jp", "phone": PHONE})
    assert accepted["channels"] == ["email"] and accepted["fallback"] == "sms"
    body = await router_with_sms.wait_for(accepted["id"])
    assert delivery(body, "email")["status"] == "failed"
    assert delivery(body, "sms")["status"] == "sent"
    assert len(sms.sent) == 1


async def test_a_refused_registered_channel_is_reported_failed(
    router_with_sms: RouterUnderTest, sms: SmsGateway
) -> None:
    sms.refuse.add(PHONE)
    accepted = await intent_for(router_with_sms, {"phone": PHONE}, route="prefer_line")
    body = await router_with_sms.wait_for(accepted["id"], ("failed",))
    failed = delivery(body, "sms")
    assert failed["status"] == "failed" and failed["last_error"] == "the number cannot receive SMS"


async def test_delivery_events_report_the_registered_channel(
    dsn: str, line_sim: Any, smtp: SmtpSink, sms: SmsGateway
) -> None:
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        accepted = await intent_for(r, {"email": "taro@example.jp", "phone": PHONE}, route="both")
        await r.wait_for(accepted["id"])
        events = await hook.wait_until(lambda seen: len(kinds(seen, "sms")) >= 2)
    sms_events = [e for e in events if e["channel"] == "sms"]
    assert kinds(sms_events) == ["processed", "delivered"]
    # Events about a channel whose address is not an email name the member's email.
    assert {e["email"] for e in sms_events} == {"taro@example.jp"}
    assert all(e["intent_id"] == accepted["id"] for e in sms_events)
