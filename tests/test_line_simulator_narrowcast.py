"""The simulator's narrowcast is LINE's: its wire shapes are those of messaging-api.yml, it
refuses what LINE refuses naming the property, and the real line-bot-sdk's typed client
sends to it and reads its progress."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import msgspec
import pytest
import yaml
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    AudienceRecipient,
    Configuration,
    NarrowcastRequest,
    OperatorRecipient,
    TextMessage,
)

from linesim import NARROWCAST_PATH, NARROWCAST_PROGRESS_PATH, LineSimulator
from linesim import narrowcast as sim_narrowcast
from tests.test_line_message_schema import flattened, ref_name, spec_path

TOKEN = "narrowcast-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
TEXT = [{"type": "text", "text": "hello"}]


def user(n: int) -> str:
    return f"U{n:032x}"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    schemas: dict[str, Any] = yaml.safe_load(spec_path().read_text())["components"]["schemas"]
    return schemas


@pytest.fixture(scope="module")
async def simulator() -> AsyncIterator[LineSimulator]:
    sim = LineSimulator(access_tokens=[TOKEN])
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def sim(simulator: LineSimulator) -> LineSimulator:
    simulator.reset()
    return simulator


@pytest.fixture
async def sdk(sim: LineSimulator) -> AsyncIterator[AsyncMessagingApi]:
    client = AsyncApiClient(Configuration(host=sim.base_url, access_token=TOKEN))
    yield AsyncMessagingApi(client)
    await client.close()


async def audience_of(sim: LineSimulator, users: list[str]) -> int:
    """An uploaded audience of these users (through the Audience API), its group id."""
    body = {"description": "a", "audiences": [{"id": u} for u in users]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.base_url}/v2/bot/audienceGroup/upload", json=body, headers=HEADERS
        ) as r,
    ):
        assert r.status == 202
        group_id: int = (await r.json())["audienceGroupId"]
        return group_id


async def post(sim: LineSimulator, body: Any, **headers: str) -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.base_url + NARROWCAST_PATH, json=body, headers=HEADERS | headers) as r,
    ):
        return r.status, await r.json(), r.headers


async def progress(sim: LineSimulator, request_id: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            sim.base_url + NARROWCAST_PROGRESS_PATH,
            params={"requestId": request_id},
            headers={"Authorization": HEADERS["Authorization"]},
        ) as r,
    ):
        return r.status, await r.json()


# --- the shapes are LINE's -------------------------------------------------------------------


def struct_fields(cls: Any) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(cls)}


def test_request_and_response_fields_are_lines(spec: dict[str, Any]) -> None:
    request = spec["NarrowcastRequest"]
    assert struct_fields(sim_narrowcast.NarrowcastRequest) == set(request["properties"])
    assert set(request["required"]) == {"messages"}
    assert struct_fields(sim_narrowcast.Limit) == set(spec["Limit"]["properties"])
    assert struct_fields(sim_narrowcast.Filter) == set(spec["Filter"]["properties"])
    answer = spec["NarrowcastProgressResponse"]
    assert struct_fields(sim_narrowcast.NarrowcastProgressResponse) == set(answer["properties"])
    required = {
        f.encode_name
        for f in msgspec.structs.fields(sim_narrowcast.NarrowcastProgressResponse)
        if f.required
    }
    assert required == set(answer["required"])


@pytest.mark.parametrize(
    ("base", "union"),
    [
        ("Recipient", sim_narrowcast.Recipient),
        ("DemographicFilter", sim_narrowcast.DemographicFilter),
    ],
)
def test_each_kind_of_recipient_and_filter_is_lines(
    spec: dict[str, Any], base: str, union: Any
) -> None:
    mapping = spec[base]["discriminator"]["mapping"]
    by_tag = {cls.__struct_config__.tag: cls for cls in union.__args__}
    assert set(by_tag) == set(mapping)
    for tag, ref in mapping.items():
        properties, _, parent = flattened(spec, ref_name(ref))
        assert parent == base
        assert struct_fields(by_tag[tag]) == set(properties) - {"type"}


@pytest.mark.parametrize(
    ("schema", "make"),
    [
        ("AgeDemographic", lambda v: {"type": "age", "gte": v}),
        ("SubscriptionPeriodDemographic", lambda v: {"type": "subscriptionPeriod", "lt": v}),
        ("AppTypeDemographic", lambda v: {"type": "appType", "oneOf": [v]}),
        ("AreaDemographic", lambda v: {"type": "area", "oneOf": [v]}),
        ("GenderDemographic", lambda v: {"type": "gender", "oneOf": [v]}),
    ],
)
async def test_every_demographic_value_of_lines_is_taken_and_no_other(
    sim: LineSimulator, spec: dict[str, Any], schema: str, make: Any
) -> None:
    sim.set_narrowcast_limit(requests=1000)
    for value in spec[schema]["enum"]:
        status, body, _ = await post(
            sim, {"messages": TEXT, "filter": {"demographic": make(value)}}
        )
        assert status == 202, (value, body)
    status, body, _ = await post(sim, {"messages": TEXT, "filter": {"demographic": make("xx_99")}})
    assert status == 400, body


# --- what LINE refuses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"recipient": {"type": "operator", "and": [], "or": []}}, "recipient"),
        ({"recipient": {"type": "operator", "and": []}}, "recipient.and"),
        ({"recipient": {"type": "operator", "not": {"type": "audience"}}}, "recipient.not.audienceGroupId"),
        ({"recipient": {"type": "redelivery"}}, "recipient.requestId"),
        ({"recipient": {"type": "everyone"}}, "recipient.type"),
        ({"filter": {"demographic": {"type": "age", "gte": "age_30", "lt": "age_20"}}}, "filter.demographic"),
        ({"filter": {"demographic": {"type": "operator", "or": [{"type": "gender"}]}}}, "filter.demographic.or[0].oneOf"),
        ({"limit": {"max": 0}}, "limit.max"),
        ({"limit": {"forbidPartialDelivery": True}}, "limit.forbidPartialDelivery"),
        ({"messages": []}, "messages"),
    ],
)  # fmt: skip
async def test_bad_requests_are_refused_naming_the_property(
    sim: LineSimulator, change: dict[str, Any], where: str
) -> None:
    status, body, headers = await post(sim, {"messages": TEXT} | change)
    assert status == 400, body
    assert headers["X-Line-Request-Id"]
    named = [d.get("property", "") for d in body.get("details", [])] + [body["message"]]
    assert any(where in text for text in named), body
    assert sim.narrowcasts == []


async def test_an_unknown_audience_is_refused(sim: LineSimulator) -> None:
    status, body, _ = await post(
        sim, {"messages": TEXT, "recipient": {"type": "audience", "audienceGroupId": 12345}}
    )
    assert (status, body["message"]) == (400, "audience group not found")


# --- sending, through the SDK ---------------------------------------------------------------


async def test_a_narrowcast_reaches_the_friends_an_expression_names_once(
    sim: LineSimulator, sdk: AsyncMessagingApi, spec: dict[str, Any]
) -> None:
    everyone = [user(i) for i in range(120)]
    blocked = {user(1), user(2)}
    sim.set_followers(u for u in everyone if u not in blocked)
    sim.set_narrowcast_timing(waiting=60, sending=60)
    included = await audience_of(sim, everyone[:100])
    excluded = await audience_of(sim, everyone[50:])
    request = NarrowcastRequest(
        messages=[TextMessage(text="hello")],
        recipient=OperatorRecipient(
            type="operator",
            var_and=[
                AudienceRecipient(type="audience", audienceGroupId=included),
                OperatorRecipient(
                    type="operator",
                    var_not=AudienceRecipient(type="audience", audienceGroupId=excluded),
                ),
            ],
        ),
    )
    key = str(uuid.uuid4())
    answer = await sdk.narrowcast_with_http_info(request, x_line_retry_key=key)
    assert answer.status_code == 202
    request_id = answer.headers["x-line-request-id"]

    # The same key again: 409 naming the first request, nothing sent twice.
    with pytest.raises(ApiException) as conflict:
        await sdk.narrowcast(request, x_line_retry_key=key)
    assert conflict.value.status == 409
    assert conflict.value.headers["x-line-accepted-request-id"] == request_id

    seen = await sdk.get_narrowcast_progress(request_id)
    assert seen.phase == "waiting" and seen.success_count is None
    sim.advance_clock(61)
    assert (await sdk.get_narrowcast_progress(request_id)).phase == "sending"
    assert sim.total_usage == 0
    sim.advance_clock(60)
    done = await sdk.get_narrowcast_progress(request_id)
    assert (done.phase, done.success_count, done.failure_count, done.target_count) == (
        "succeeded",
        48,
        0,
        48,
    )
    assert isinstance(done.accepted_time, datetime) and done.completed_time > done.accepted_time
    [state] = sim.narrowcasts
    assert sorted(state.delivered) == sorted(set(everyone[:50]) - blocked)
    assert sim.total_usage == 48
    # The raw answer has exactly the fields LINE's schema allows, with its types.
    status, raw = await progress(sim, request_id)
    assert status == 200
    check_against(spec, "NarrowcastProgressResponse", raw)


def check_against(spec: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    schema = spec[name]
    assert set(schema["required"]) <= set(value) <= set(schema["properties"])
    for key, item in value.items():
        prop = schema["properties"][key]
        if prop["type"] == "integer":
            assert isinstance(item, int), key
        else:
            assert isinstance(item, str), key
        if "enum" in prop:
            assert item in prop["enum"]
        if prop.get("format") == "date-time":
            assert item.endswith("Z") and datetime.fromisoformat(item.replace("Z", "+00:00"))


async def test_failures_are_reported_by_progress(sim: LineSimulator, spec: dict[str, Any]) -> None:
    sim.set_followers(user(i) for i in range(60))
    sim.set_narrowcast_timing(waiting=0, sending=0)
    small = await audience_of(sim, [user(i) for i in range(10)])
    big = await audience_of(sim, [user(i) for i in range(60)])
    cases = [
        ({"type": "audience", "audienceGroupId": small}, 4, 0),
        ({"type": "operator", "not": {"type": "audience", "audienceGroupId": big}}, 2, 0),
    ]
    for recipient, code, targets in cases:
        status, _, headers = await post(sim, {"messages": TEXT, "recipient": recipient})
        assert status == 202
        status, raw = await progress(sim, headers["X-Line-Request-Id"])
        assert (raw["phase"], raw["errorCode"], raw["targetCount"]) == ("failed", code, targets)
        assert raw["failedDescription"]
        check_against(spec, "NarrowcastProgressResponse", raw)
    assert sim.total_usage == 0


async def test_quota_and_the_hourly_limit(sim: LineSimulator) -> None:
    sim.set_followers(user(i) for i in range(60))
    sim.set_narrowcast_timing(waiting=0, sending=0)
    sim.set_monthly_quota(55)
    group = await audience_of(sim, [user(i) for i in range(60)])
    to_all = {"type": "audience", "audienceGroupId": group}
    # Past what is left: fails whole, or is cut to what is left when asked to.
    _, _, headers = await post(sim, {"messages": TEXT, "recipient": to_all})
    assert (await progress(sim, headers["X-Line-Request-Id"]))[1]["phase"] == "failed"
    limit = {"upToRemainingQuota": True, "forbidPartialDelivery": True}
    _, _, headers = await post(sim, {"messages": TEXT, "recipient": to_all, "limit": limit})
    assert (await progress(sim, headers["X-Line-Request-Id"]))[1]["errorCode"] == 5
    limit = {"upToRemainingQuota": True, "max": 58}
    _, _, headers = await post(sim, {"messages": TEXT, "recipient": to_all, "limit": limit})
    raw = (await progress(sim, headers["X-Line-Request-Id"]))[1]
    assert (raw["phase"], raw["targetCount"], raw["successCount"]) == ("succeeded", 58, 55)
    assert sim.total_usage == 55

    # 60 requests an hour: three went, so 57 more do and the next is refused.
    for _ in range(57):
        assert (await post(sim, {"messages": TEXT}))[0] == 202
    status, body, _ = await post(sim, copy.deepcopy({"messages": TEXT}))
    assert status == 429, body
    sim.advance_clock(3601)
    assert (await post(sim, {"messages": TEXT}))[0] == 202


async def test_progress_of_an_unknown_request_and_without_one(sim: LineSimulator) -> None:
    assert (await progress(sim, "nope"))[0] == 404
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            sim.base_url + NARROWCAST_PROGRESS_PATH, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as r,
    ):
        assert r.status == 400
