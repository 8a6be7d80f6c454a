"""The LINE simulator serving two channels (Official Accounts) at one base URL.

The real line-bot-sdk talks to both under their own access tokens: each request lands in the
channel its token names, with that channel's quota, retry keys, rate limits and users; a user
ID one provider's channel knows names nobody under another's; each channel's webhooks are
signed with its own secret (checked with the SDK's WebhookParser); the control API picks a
channel with ``?channel=``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from linebot.v3 import WebhookParser
from linebot.v3.exceptions import InvalidSignatureError
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    MulticastRequest,
    PnpMessagesRequest,
    PushMessageRequest,
    SetWebhookEndpointRequest,
    TextMessage,
)
from linebot.v3.webhooks import AccountLinkEvent, FollowEvent

from linesim import (
    ACCOUNT_LINK_DIALOG_PATH,
    DEFAULT_CHANNEL,
    PUSH_PATH,
    LineChannel,
    LineSimulator,
    parse_channel,
)
from tests.harness import line_channel

TOKEN = "first-channel-token"  # the conftest's `api` speaks as the first channel
SECRET = "first-channel-secret"
SHOP_TOKEN = "shop-channel-token"
SHOP_SECRET = "shop-channel-secret"
UNKNOWN_USER = "The property, 'to', in the request body is invalid (line: -, column: -)"
REPO_ROOT = Path(__file__).resolve().parents[1]


def user_id() -> str:
    return "U" + uuid.uuid4().hex


def text_push(to: str, text: str = "hello") -> PushMessageRequest:
    return PushMessageRequest(to=to, messages=[TextMessage(text=text)])


def error_message(exc: ApiException) -> str:
    message: str = json.loads(exc.body)["message"]
    return message


@dataclass
class Webhook:
    path: str
    body: str
    signature: str


class Bots:
    """Both channels' bots at one server: ``/first`` and ``/shop``, each answering 200."""

    def __init__(self) -> None:
        self.received: list[Webhook] = []
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{bot}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        signature = request.headers.get("X-Line-Signature", "")
        self.received.append(Webhook(request.path, body, signature))
        return web.Response(text="ok")


@pytest.fixture(scope="module")
async def bots() -> AsyncIterator[Bots]:
    server = Bots()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def simulator(bots: Bots) -> AsyncIterator[LineSimulator]:
    sim = LineSimulator(
        access_tokens=[TOKEN], channel_secret=SECRET, webhook_url=f"{bots.base}/first"
    )
    sim.add_channel(
        "shop",
        access_tokens=[SHOP_TOKEN],
        channel_secret=SHOP_SECRET,
        webhook_url=f"{bots.base}/shop",
    )
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture(autouse=True)
def fresh_state(simulator: LineSimulator, bots: Bots) -> None:
    simulator.reset()
    bots.received.clear()


@pytest.fixture
def shop(simulator: LineSimulator) -> LineChannel:
    return simulator.channel("shop")


@pytest.fixture(scope="module")
async def shop_client(simulator: LineSimulator) -> AsyncIterator[AsyncApiClient]:
    client = AsyncApiClient(Configuration(host=simulator.base_url, access_token=SHOP_TOKEN))
    yield client
    await client.close()


@pytest.fixture
def shop_api(shop_client: AsyncApiClient) -> AsyncMessagingApi:
    return AsyncMessagingApi(shop_client)


async def test_each_token_reaches_its_own_channel(
    simulator: LineSimulator, shop: LineChannel, api: AsyncMessagingApi, shop_api: AsyncMessagingApi
) -> None:
    first_user, shop_user, someone = user_id(), user_id(), user_id()
    await api.push_message(text_push(first_user, "to the first"))
    await shop_api.push_message(text_push(shop_user, "to the shop"))
    await shop_api.multicast(
        MulticastRequest(to=[shop_user, someone], messages=[TextMessage(text="all")])
    )

    first = simulator.channel(DEFAULT_CHANNEL)
    assert [c.name for c in simulator.channels] == [DEFAULT_CHANNEL, "shop"]
    assert [p.body["to"] for p in simulator.accepted_pushes()] == [first_user]
    assert [p.body["to"] for p in first.accepted_pushes()] == [first_user]
    assert [p.body["to"] for p in shop.accepted_pushes()] == [shop_user, [shop_user, someone]]
    assert [p.path for p in shop.received] == [PUSH_PATH, "/v2/bot/message/multicast"]
    assert (simulator.stats().accepted_pushes, simulator.stats().channel) == (1, DEFAULT_CHANNEL)
    shop_stats = shop.stats()
    assert (shop_stats.accepted_pushes, shop_stats.accepted_multicasts) == (1, 1)
    assert shop_stats.channel == "shop"

    # A token of no channel is refused, and recorded by the first channel.
    bad = AsyncApiClient(Configuration(host=simulator.base_url, access_token="nobody's"))
    try:
        with pytest.raises(ApiException) as refused:
            await AsyncMessagingApi(bad).push_message(text_push(first_user))
    finally:
        await bad.close()
    assert refused.value.status == 401
    assert simulator.received[-1].status == 401
    assert len(shop.received) == 2


async def test_a_user_of_one_account_is_nobody_under_another(
    simulator: LineSimulator, shop: LineChannel, api: AsyncMessagingApi, shop_api: AsyncMessagingApi
) -> None:
    first_user, shop_user, both_person_first, both_person_shop = (user_id() for _ in range(4))
    simulator.set_followers([first_user, both_person_first])
    shop.set_followers([shop_user, both_person_shop])

    for to in (first_user, both_person_first):
        with pytest.raises(ApiException) as refused:
            await shop_api.push_message(text_push(to))
        assert (refused.value.status, error_message(refused.value)) == (400, UNKNOWN_USER)
    with pytest.raises(ApiException) as refused:
        await shop_api.multicast(
            MulticastRequest(to=[shop_user, first_user], messages=[TextMessage(text="x")])
        )
    assert refused.value.status == 400
    with pytest.raises(ApiException) as refused:
        await api.push_message(text_push(shop_user))
    assert refused.value.status == 400
    with pytest.raises(ApiException):
        await shop_api.issue_link_token(first_user)

    # Under its own account each is reached; a user ID nobody knows is anybody's.
    await api.push_message(text_push(first_user))
    await api.push_message(text_push(both_person_first))
    await shop_api.push_message(text_push(both_person_shop))
    await shop_api.push_message(text_push(user_id()))
    assert len(simulator.accepted_pushes()) == 2
    assert len(shop.accepted_pushes()) == 1 + 1
    assert (shop.total_usage, shop.stats().foreign_recipients) == (2, 3)
    assert simulator.stats().foreign_recipients == 1

    # A phone number reaches the user it was registered for, under that user's account only.
    phone_hash = shop.register_phone("+818033334444", shop_user)
    by_phone = PnpMessagesRequest(to=phone_hash, messages=[TextMessage(text="parcel")])
    with pytest.raises(ApiException) as unknown_phone:
        await api.push_messages_by_phone(by_phone)
    assert unknown_phone.value.status == 422
    await shop_api.push_messages_by_phone(by_phone)
    assert [sent.recipient for sent in shop.accepted_pnp()] == [shop_user]

    # A test cannot make one user ID both providers'.
    with pytest.raises(ValueError, match="differ per provider"):
        shop.register_phone("+818011112222", first_user)
    with pytest.raises(ValueError, match="differ per provider"):
        await shop.follow(first_user)
    # A channel of the shop's provider shares its users, and knows none of the first's.
    sister = simulator.add_channel("shop-2", access_tokens=["sister-token"], provider="shop")
    try:
        sister.set_followers([shop_user])
        with pytest.raises(ValueError, match="differ per provider"):
            sister.set_followers([first_user])
    finally:
        await simulator.remove_channel("shop-2")


async def test_quotas_and_rate_limits_are_per_channel(
    simulator: LineSimulator, shop: LineChannel, api: AsyncMessagingApi, shop_api: AsyncMessagingApi
) -> None:
    simulator.set_monthly_quota(1)
    shop.set_monthly_quota(3)
    await api.push_message(text_push(user_id()))
    with pytest.raises(ApiException) as refused:
        await api.push_message(text_push(user_id()))
    assert (refused.value.status, error_message(refused.value)) == (
        429,
        "You have reached your monthly limit.",
    )
    await shop_api.multicast(
        MulticastRequest(to=[user_id(), user_id()], messages=[TextMessage(text="two")])
    )

    assert (await api.get_message_quota()).value == 1
    assert (await shop_api.get_message_quota()).value == 3
    assert (await api.get_message_quota_consumption()).total_usage == 1
    assert (await shop_api.get_message_quota_consumption()).total_usage == 2

    # A tight push rate on the shop leaves the first channel's alone.
    simulator.set_monthly_quota(None)
    shop.set_rate_limits(push=0)
    with pytest.raises(ApiException) as limited:
        await shop_api.push_message(text_push(user_id()))
    assert limited.value.status == 429
    await api.push_message(text_push(user_id()))
    assert (shop.stats().rate_limited, simulator.stats().rate_limited) == (1, 0)


async def test_retry_keys_are_per_channel(
    simulator: LineSimulator, shop: LineChannel, api: AsyncMessagingApi, shop_api: AsyncMessagingApi
) -> None:
    key = str(uuid.uuid4())
    first = await api.push_message_with_http_info(text_push(user_id()), x_line_retry_key=key)
    shop_first = await shop_api.push_message_with_http_info(
        text_push(user_id()), x_line_retry_key=key
    )
    assert (first.status_code, shop_first.status_code) == (200, 200)
    with pytest.raises(ApiException) as repeat:
        await shop_api.push_message(text_push(user_id()), x_line_retry_key=key)
    assert repeat.value.status == 409
    assert (
        repeat.value.headers["X-Line-Accepted-Request-Id"]
        == (shop_first.headers["x-line-request-id"])
    )
    assert (simulator.stats().conflicts, shop.stats().conflicts) == (0, 1)


async def test_webhooks_are_signed_with_each_channels_secret(
    simulator: LineSimulator, shop: LineChannel, bots: Bots, shop_api: AsyncMessagingApi
) -> None:
    first_user, shop_user = user_id(), user_id()
    assert await simulator.follow(first_user) == 200
    assert await shop.follow(shop_user) == 200
    # The account-link page, opened without a token, is the channel's that issued the link.
    link = await shop_api.issue_link_token(shop_user)
    async with aiohttp.ClientSession() as http:
        dialog = f"{simulator.base_url}{ACCOUNT_LINK_DIALOG_PATH}"
        query = {"linkToken": link.link_token, "nonce": "n-1"}
        async with http.get(dialog, params=query) as page:
            assert page.status == 200

    first_hook, shop_hook, link_hook = bots.received
    assert (first_hook.path, shop_hook.path, link_hook.path) == ("/first", "/shop", "/shop")
    [follow] = WebhookParser(SECRET).parse(first_hook.body, first_hook.signature)
    assert isinstance(follow, FollowEvent) and follow.source.user_id == first_user
    assert json.loads(first_hook.body)["destination"] == simulator.bot_user_id
    for hook, event_type in ((shop_hook, FollowEvent), (link_hook, AccountLinkEvent)):
        [event] = WebhookParser(SHOP_SECRET).parse(hook.body, hook.signature)
        assert isinstance(event, event_type) and event.source.user_id == shop_user
        assert json.loads(hook.body)["destination"] == shop.bot_user_id
        with pytest.raises(InvalidSignatureError):
            WebhookParser(SECRET).parse(hook.body, hook.signature)
    assert shop.bot_user_id != simulator.bot_user_id
    assert shop.followers == [shop_user] and simulator.followers == [first_user]

    # Moving the shop's webhook through the API moves the shop's only.
    await shop_api.set_webhook_endpoint(
        SetWebhookEndpointRequest(endpoint=f"{bots.base}/shop-moved")
    )
    assert shop.webhook_url == f"{bots.base}/shop-moved"
    assert simulator.webhook_url == f"{bots.base}/first"
    shop.set_webhook(f"{bots.base}/shop")


async def test_control_api_takes_a_channel(
    simulator: LineSimulator, shop: LineChannel, shop_api: AsyncMessagingApi
) -> None:
    base = f"{simulator.base_url}/__simulator"
    shop_user = user_id()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/followers?channel=shop", json={"user_ids": [shop_user]}
        ) as resp:
            assert (resp.status, (await resp.json())["followers"]) == (200, [shop_user])
        assert shop.followers == [shop_user] and simulator.followers == []
        # The first channel's user list is unchanged without a selector.
        async with http.post(f"{base}/followers", json={"user_ids": [shop_user]}) as resp:
            assert resp.status == 400
            assert "differ per provider" in (await resp.json())["message"]

        async with http.post(
            f"{base}/faults?channel=shop", json={"fail_next": {"count": 1, "status": 503}}
        ) as resp:
            assert (resp.status, (await resp.json())["pending_failures"]) == (200, 1)
        with pytest.raises(ApiException) as failed:
            await shop_api.push_message(text_push(shop_user))
        assert failed.value.status == 503
        assert simulator.stats().pending_failures == 0
        await shop_api.push_message(text_push(shop_user))

        async with http.get(f"{base}/requests?channel=shop&accepted=1") as resp:
            [pushed] = await resp.json()
        assert pushed["body"]["to"] == shop_user
        async with http.get(f"{base}/requests") as resp:
            assert await resp.json() == []
        async with http.get(f"{base}/stats?channel=shop") as resp:
            stats = await resp.json()
        assert (stats["channel"], stats["accepted_pushes"], stats["total_usage"]) == ("shop", 1, 1)
        async with http.get(f"{base}/stats?channel=nowhere") as resp:
            assert resp.status == 404

        async with http.post(f"{base}/events/follow?channel=shop", json={"user_id": user_id()}):
            pass
        async with http.get(f"{base}/webhooks?channel=shop") as resp:
            [sent] = await resp.json()
        assert sent["url"].endswith("/shop")

        # A third channel added over HTTP answers at once, under its own token.
        third = {"name": "third", "access_tokens": ["third-token"], "monthly_quota": 10}
        async with http.post(f"{base}/channels", json=third) as resp:
            assert (resp.status, (await resp.json())["provider"]) == (200, "third")
        try:
            async with http.post(f"{base}/channels", json=third) as resp:
                assert resp.status == 409
            push = {"to": user_id(), "messages": [{"type": "text", "text": "hi"}]}
            headers = {"Authorization": "Bearer third-token"}
            async with http.post(
                f"{simulator.base_url}{PUSH_PATH}", json=push, headers=headers
            ) as resp:
                assert resp.status == 200
            async with http.get(f"{base}/channels") as resp:
                listed = {c["name"]: c for c in await resp.json()}
            assert list(listed) == [DEFAULT_CHANNEL, "shop", "third"]
            assert (listed["third"]["total_usage"], listed["third"]["monthly_quota"]) == (1, 10)
            assert listed["shop"]["destination"] == shop.bot_user_id
        finally:
            await simulator.remove_channel("third")
        async with http.post(
            f"{simulator.base_url}{PUSH_PATH}", json=push, headers=headers
        ) as resp:
            assert resp.status == 401

        # Resetting one channel leaves the others.
        await simulator.follow(user_id())
        async with http.post(f"{base}/reset?channel=shop") as resp:
            assert (await resp.json())["requests"] == 0
        assert shop.followers == [] and len(simulator.followers) == 1


def test_channels_are_checked() -> None:
    sim = LineSimulator(access_tokens=["a"], channel_name="brand-a")
    assert sim.name == "brand-a" and sim.channel("brand-a").access_tokens == {"a"}
    with pytest.raises(ValueError, match="already"):
        sim.add_channel("brand-a", access_tokens=["b"])
    with pytest.raises(ValueError, match="already"):
        sim.add_channel("brand-b", access_tokens=["a"])
    with pytest.raises(ValueError):
        sim.add_channel("brand-b", access_tokens=["b"], monthly_quota=-1)
    with pytest.raises(KeyError):
        sim.channel("brand-b")
    spec = parse_channel("shop:tok:sec")
    assert (spec.name, spec.access_token, spec.channel_secret) == ("shop", "tok", "sec")
    spec = parse_channel("shop:tok")
    assert (spec.name, spec.access_token, spec.channel_secret) == ("shop", "tok", None)
    for bad in ("shop", "shop::sec", "a:tok:sec:d", ":tok"):
        with pytest.raises(ValueError) as error:
            parse_channel(bad)
        assert "tok" not in str(error.value) and "sec" not in str(error.value)


def test_harness_gives_one_channel_per_name() -> None:
    sim = LineSimulator(access_tokens=["a"])
    shop = line_channel(sim, "shop", "b", channel_secret="s")
    assert line_channel(sim, "shop", "b") is shop and shop.channel_secret == "s"
    with pytest.raises(ValueError, match="another token"):
        line_channel(sim, "shop", "c")


async def test_cli_serves_further_channels() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "line-simulator",
        "--listen",
        "127.0.0.1:0",
        "--token",
        "cli-first",
        "--channel",
        "shop:cli-shop:cli-shop-secret",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=15)).decode()
        base_url = line.split()[-1]
        push = {"to": user_id(), "messages": [{"type": "text", "text": "x"}]}
        async with aiohttp.ClientSession() as http:
            for token in ("cli-first", "cli-shop"):
                headers = {"Authorization": f"Bearer {token}"}
                async with http.post(f"{base_url}{PUSH_PATH}", json=push, headers=headers) as resp:
                    assert resp.status == 200
            async with http.get(f"{base_url}/__simulator/channels") as resp:
                channels: list[dict[str, Any]] = await resp.json()
        assert [(c["name"], c["signed"], c["total_usage"]) for c in channels] == [
            (DEFAULT_CHANNEL, False, 1),
            ("shop", True, 1),
        ]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
