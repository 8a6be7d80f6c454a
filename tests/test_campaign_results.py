"""Campaign results: every LINE push and multicast of a campaign names its aggregation unit,
the LINE simulator counts under it as LINE does, and `GET /v1/campaigns/{id}/results` shows
LINE's figures (read through the SDK's Insight API) beside the email events and the counts."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    PushMessageRequest,
    TextMessage,
)

from channels.base import Outbound, Sent
from channels.line.account import LineAccountApi
from channels.line.push import LinePushChannel
from channels.line.quota import LineQuota
from router import campaign_results
from router.campaign_units import UNIT_PATTERN, derived_unit
from router.config import LineConfig
from router.content import Content, LineContent
from router.line.messages import text_message
from tests.harness import LINE_TOKEN, RouterUnderTest, SmtpSink
from tests.test_delivery_events import receiver, router_with_events
from tests.test_multicast import MAIL, add_members, friend_id

PUSH = "/v2/bot/message/push"
MULTICAST = "/v2/bot/message/multicast"
URL = "https://example.jp/sale"


def sent_bodies(line_sim: Any, path: str) -> list[dict[str, Any]]:
    return [r.body for r in line_sim.accepted_pushes() if r.path == path]


async def mark(line_sim: Any, unit: str, action: str, users: list[str], **extra: str) -> None:
    """What users did with the unit's messages, through the simulator's control API."""
    async with httpx.AsyncClient(base_url=line_sim.base_url) as client:
        resp = await client.post(
            f"/__simulator/aggregation-units/{unit}/events",
            json={"action": action, "user_ids": users, **extra},
        )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"marked": len(users)}


async def test_results_show_lines_figures_for_the_unit_beside_email_events(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    smtp.refuse("e3@example.jp", "550 5.1.1 <e3@example.jp>: Recipient address rejected")
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        await add_members(r, 10, mail_only=4)
        lines = [f"f{i}@example.jp" for i in range(10)] + [f"e{i}@example.jp" for i in range(4)]
        resp = await r.client.post(
            "/v1/audiences",
            data={"name": "everyone", "type": "email"},
            files={"file": ("list.csv", "\n".join(lines).encode(), "text/csv")},
        )
        assert resp.status_code == 201, resp.text
        audience = resp.json()["id"]
        line = {"messages": [{"type": "text", "text": f"Sale today: {URL}"}]}
        resp = await r.client.post(
            "/v1/campaigns", json={"audience_ids": [audience], "email": MAIL, "line": line}
        )
        assert resp.status_code == 202, resp.text
        campaign_id = resp.json()["id"]
        unit = derived_unit(uuid.UUID(campaign_id))
        view = (await r.client.get(f"/v1/campaigns/{campaign_id}")).json()
        assert view["line_aggregation_unit"] == unit

        # Every delivery's last event posted (so recorded): 10 LINE and 3 email delivered,
        # 1 bounce. Results are not read before, so LINE's figures are not cached early.
        await hook.wait_until(
            lambda events: sum(e["event"] in ("delivered", "bounce") for e in events) == 14
        )
        # LINE received the unit with the multicast, one name, as LINE wants it.
        (multicast,) = sent_bodies(line_sim, MULTICAST)
        assert multicast["customAggregationUnits"] == [unit]
        assert sorted(line_sim.unit_recipients(unit)) == [friend_id(i) for i in range(10)]

        await mark(line_sim, unit, "impression", [friend_id(i) for i in range(6)])
        await mark(line_sim, unit, "click", [friend_id(i) for i in range(3)], url=URL)
        await mark(line_sim, unit, "click", [friend_id(0)], url=URL)  # opened twice
        await mark(line_sim, unit, "media_played", [friend_id(9)])
        before = datetime.now(UTC)
        results = (await r.client.get(f"/v1/campaigns/{campaign_id}/results")).json()
        # One more impression now is not seen until the cached figures age out.
        await mark(line_sim, unit, "impression", [friend_id(7)])
        again = (await r.client.get(f"/v1/campaigns/{campaign_id}/results")).json()

    channels = {c["channel"]: c for c in results["channels"]}
    assert channels["line"] | {"channel": "line"} == {
        "channel": "line",
        "deliveries": 10,
        "waiting": 0,
        "sent": 10,
        "delivered": 10,
        "failed": 0,
        "fell_back": 0,
        "cancelled": 0,
        "uncertain": 0,
    }
    assert channels["email"]["deliveries"] == 4 and channels["email"]["sent"] == 3
    assert results["email"] == {
        "events_recorded": True,
        "delivered": 3,
        "deferred": 0,
        "bounced": 1,
        "dropped": 0,
        "unsubscribed": 0,
        "group_unsubscribed": 0,
        "spam_reports": 0,
    }
    figures = results["line"]
    assert figures["aggregation_unit"] == unit and figures["error"] is None
    # impressions: the 6 marked and the one who played the video
    assert (figures["unique_impressions"], figures["unique_clicks"], figures["clicks"]) == (7, 3, 4)
    assert figures["unique_media_played"] == 1
    assert datetime.fromisoformat(figures["read_at"]) >= before
    assert again["line"] == figures  # cached: read once


async def test_a_campaigns_push_names_its_unit_and_other_sends_name_none(line_sim: Any) -> None:
    """The adapter alone: a delivery sent as a push carries its content's unit."""
    channel = LinePushChannel(
        LineConfig(channel_access_token=LINE_TOKEN, api_base=line_sim.base_url)
    )

    def outbound(content: Content) -> Outbound:
        return Outbound(
            delivery_id=uuid.uuid4(),
            intent_id=uuid.uuid4(),
            address=friend_id(1),
            attempt=1,
            content_id=uuid.uuid4().bytes,
            content=content,
        )

    messages = LineContent(messages=[text_message("hello")])
    try:
        outcomes = await channel.send(
            [
                outbound(Content(line=messages, line_aggregation_unit="spring_sale_2026")),
                outbound(Content(line=messages)),
            ]
        )
    finally:
        await channel.aclose()
    assert all(isinstance(o, Sent) for o in outcomes)
    units = [b.get("customAggregationUnits") for b in sent_bodies(line_sim, PUSH)]
    assert sorted(units, key=str) == [None, ["spring_sale_2026"]]
    assert line_sim.unit_recipients("spring_sale_2026") == [friend_id(1)]


@pytest.mark.parametrize(
    ("units", "detail"),
    [
        (["spring-sale"], ("customAggregationUnits[0]", "underscores")),
        (["a" * 31], ("customAggregationUnits[0]", "1 to 30")),
        (["one", "two"], ("customAggregationUnits", "Size must be between 0 and 1")),
    ],
)
async def test_the_simulator_refuses_a_bad_unit_as_line_does(
    line_sim: Any, units: list[str], detail: tuple[str, str]
) -> None:
    configuration = Configuration(host=line_sim.base_url, access_token=LINE_TOKEN)
    async with AsyncApiClient(configuration) as client:
        api = AsyncMessagingApi(client)
        request = PushMessageRequest(
            to=friend_id(2), messages=[TextMessage(text="hi")], custom_aggregation_units=units
        )
        with pytest.raises(ApiException) as refused:
            await api.push_message(request)
    assert refused.value.status == 400
    body = msgspec.json.decode(refused.value.body)
    assert body["message"] == "The request body has 1 error(s)"
    (found,) = body["details"]
    assert found["property"] == detail[0] and detail[1] in found["message"]
    assert sent_bodies(line_sim, PUSH) == []  # nothing was sent or counted


async def test_a_campaign_may_name_its_unit_and_a_bad_name_is_refused_naming_the_field(
    router: RouterUnderTest,
) -> None:
    audience = (
        await router.client.post(
            "/v1/audiences",
            data={"name": "a", "type": "email"},
            files={"file": ("list.csv", b"x@example.jp", "text/csv")},
        )
    ).json()["id"]
    body = {"audience_ids": [audience], "email": MAIL}
    resp = await router.client.post(
        "/v1/campaigns", json=body | {"line_aggregation_unit": "spring sale!"}
    )
    assert resp.status_code == 400, resp.text
    assert "line_aggregation_unit" in resp.text
    resp = await router.client.post(
        "/v1/campaigns", json=body | {"line_aggregation_unit": "Spring_Sale_2026"}
    )
    assert resp.status_code == 202, resp.text
    view = (await router.client.get(f"/v1/campaigns/{resp.json()['id']}")).json()
    assert view["line_aggregation_unit"] == "Spring_Sale_2026"
    missing = await router.client.get(f"/v1/campaigns/{uuid.uuid4()}/results")
    assert missing.status_code == 404


def test_derived_units_are_valid_for_line_and_one_per_campaign() -> None:
    ids = [uuid.uuid4() for _ in range(200)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    units = [derived_unit(i) for i in ids]
    assert all(re.fullmatch(UNIT_PATTERN, u) for u in units)
    assert len(set(units)) == len(ids)
    assert derived_unit(ids[0]) == units[0]  # stable


async def test_line_that_cannot_be_read_is_reported_in_the_results_not_raised() -> None:
    config = LineConfig(channel_access_token=LINE_TOKEN, api_base="http://127.0.0.1:9")
    quota_client = AsyncApiClient(Configuration(host=config.api_base, access_token=LINE_TOKEN))
    account = LineAccountApi(config, LineQuota(quota_client, 60))
    try:
        figures = await campaign_results.line_figures(
            account, uuid.uuid4(), "c_unit", datetime.now(UTC)
        )
    finally:
        await account.aclose()
        await quota_client.close()
    assert figures.error is not None and "LINE could not be read" in figures.error
    assert figures.unique_impressions is None and figures.read_at is not None
