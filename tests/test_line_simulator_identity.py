"""The LINE simulator's identity side: webhooks, account linking, replies, followers,
LINE notification messages by phone number and LINE Login ID token verification.

The real line-bot-sdk makes the calls it has; a small aiohttp server stands in for
the bot and checks every webhook's signature with the channel secret through the
SDK's own WebhookParser, which also proves the events parse as the SDK's models.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from linebot.v3 import WebhookParser
from linebot.v3.exceptions import InvalidSignatureError
from linebot.v3.messaging import (
    ApiException,
    AsyncMessagingApi,
    PnpMessagesRequest,
    PushMessageRequest,
    ReplyMessageRequest,
    TextMessage,
)
from linebot.v3.webhooks import (
    AccountLinkEvent,
    Event,
    FollowEvent,
    MessageEvent,
    PnpDeliveryCompletionEvent,
    TextMessageContent,
    UnfollowEvent,
)

from linesim import (
    LINK_TOKEN_TTL_SECONDS,
    PNP_PATH,
    REPLY_PATH,
    REPLY_TOKEN_TTL_SECONDS,
    LineSimulator,
    hash_phone_number,
)

TOKEN = "identity-channel-token"
SECRET = "identity-channel-secret"
CHANNEL_ID = "1234567890"
PHONE = "+818012345678"
TAG = "order-42-delivery-tag"  # 16..100 characters
ULID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
USER_ID_RE = re.compile(r"U[0-9a-f]{32}")


def user_id() -> str:
    return "U" + uuid.uuid4().hex


def error_body(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert isinstance(body, dict)
    return body


def expected_signature(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# --- the bot's side: a webhook receiver that checks signatures -------------------


@dataclass
class Delivery:
    body: bytes
    signature: str
    content_type: str
    valid: bool
    events: list[Event] = field(default_factory=list)

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


class Receiver:
    """Answers 200 to a correctly signed webhook and 400 to anything else."""

    def __init__(self) -> None:
        self.parser = WebhookParser(SECRET)
        self.deliveries: list[Delivery] = []
        self.answer_status = 200
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/callback"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        signature = request.headers.get("X-Line-Signature", "")
        content_type = request.headers.get("Content-Type", "")
        try:
            events = self.parser.parse(body.decode(), signature)
        except InvalidSignatureError:
            self.deliveries.append(Delivery(body, signature, content_type, valid=False))
            return web.Response(status=400, text="bad signature")
        self.deliveries.append(Delivery(body, signature, content_type, True, list(events)))
        return web.Response(status=self.answer_status, text="ok")

    @property
    def events(self) -> list[Event]:
        return [
            event for delivery in self.deliveries if delivery.valid for event in delivery.events
        ]

    async def wait_for(self, count: int, seconds: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while len(self.deliveries) < count:
            assert loop.time() < deadline, f"only {len(self.deliveries)} of {count} webhooks came"
            await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    bot = Receiver()
    await bot.start()
    yield bot
    await bot.stop()


@pytest.fixture(scope="module")
async def simulator(receiver: Receiver) -> AsyncIterator[LineSimulator]:
    sim = LineSimulator(access_tokens=[TOKEN], channel_secret=SECRET, webhook_url=receiver.url)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture(autouse=True)
def fresh_state(simulator: LineSimulator, receiver: Receiver) -> None:
    simulator.reset()
    simulator.set_webhook(receiver.url, SECRET)
    receiver.deliveries.clear()
    receiver.answer_status = 200


def auth(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **extra}


# --- webhook envelope, signature, redelivery ---------------------------------------


async def test_follow_event_is_signed_and_shaped_as_webhook_yml_says(
    simulator: LineSimulator, receiver: Receiver
) -> None:
    uid = user_id()
    before_ms = int(simulator.now() * 1000)
    assert await simulator.follow(uid) == 200

    [delivery] = receiver.deliveries
    assert delivery.valid
    assert delivery.signature == expected_signature(delivery.body)
    assert delivery.content_type.startswith("application/json")
    [event] = delivery.events
    assert isinstance(event, FollowEvent)
    assert event.source is not None and event.source.user_id == uid
    assert event.follow.is_unblocked is False
    assert event.reply_token

    payload = delivery.payload
    assert payload["destination"] == simulator.bot_user_id
    assert USER_ID_RE.fullmatch(payload["destination"])
    [raw] = payload["events"]
    assert raw["type"] == "follow"
    assert raw["mode"] == "active"
    assert raw["deliveryContext"] == {"isRedelivery": False}
    assert raw["source"] == {"type": "user", "userId": uid}
    assert ULID_RE.fullmatch(raw["webhookEventId"])
    assert before_ms <= raw["timestamp"] <= int(simulator.now() * 1000)
    assert simulator.followers == [uid]

    [sent] = simulator.sent_webhooks
    assert (sent.status, sent.url, sent.forged) == (200, receiver.url, False)
    assert sent.body.encode() == delivery.body
    assert sent.signature == delivery.signature


async def test_event_ids_are_unique_and_sorted_by_time(
    simulator: LineSimulator, receiver: Receiver
) -> None:
    uid = user_id()
    events = [simulator.message_event(uid, str(i)) for i in range(20)]
    assert await simulator.send_events(events) == 200
    ids = [raw["webhookEventId"] for raw in receiver.deliveries[0].payload["events"]]
    assert len(set(ids)) == 20
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)  # 48-bit time prefix
    assert len(receiver.events) == 20


async def test_forged_signature_is_really_wrong(
    simulator: LineSimulator, receiver: Receiver
) -> None:
    assert await simulator.follow(user_id(), forge_signature=True) == 400

    [delivery] = receiver.deliveries
    assert not delivery.valid
    assert delivery.signature != expected_signature(delivery.body)
    [sent] = simulator.sent_webhooks
    assert sent.forged
    assert sent.signature == delivery.signature
    assert simulator.stats().webhooks_failed == 1


async def test_redelivery_keeps_the_event_id_and_says_so(
    simulator: LineSimulator, receiver: Receiver
) -> None:
    uid = user_id()
    await simulator.follow(uid)
    first = simulator.sent_webhooks[-1]
    [original] = first.events

    assert await simulator.redeliver(first) == 200
    assert await simulator.redeliver(original["webhookEventId"]) == 200

    assert len(receiver.deliveries) == 3
    for delivery in receiver.deliveries[1:]:
        assert delivery.valid
        [raw] = delivery.payload["events"]
        assert raw["webhookEventId"] == original["webhookEventId"]
        assert raw["timestamp"] == original["timestamp"]
        assert raw["replyToken"] == original["replyToken"]
        assert raw["deliveryContext"] == {"isRedelivery": True}
        [event] = delivery.events
        assert event.delivery_context.is_redelivery is True
    assert [s.redelivery for s in simulator.sent_webhooks] == [False, True, True]
    with pytest.raises(KeyError):
        await simulator.redeliver("01NOSUCHEVENT0000000000000")


async def test_receiver_status_and_unreachable_receiver_are_reported(
    simulator: LineSimulator, receiver: Receiver
) -> None:
    receiver.answer_status = 500
    assert await simulator.unfollow(user_id()) == 500
    [event] = receiver.events
    assert isinstance(event, UnfollowEvent)
    assert not hasattr(event, "reply_token")

    simulator.set_webhook("http://127.0.0.1:9/nothing-listens-here")
    assert await simulator.delivery(TAG) == 0
    last = simulator.sent_webhooks[-1]
    assert last.status == 0
    assert last.error
    assert simulator.stats().webhooks_failed == 2

    simulator.set_webhook(None)
    with pytest.raises(RuntimeError):
        await simulator.follow(user_id())
    assert simulator.followers == []


# --- account linking ------------------------------------------------------------------


async def test_issue_link_token(simulator: LineSimulator, api: AsyncMessagingApi) -> None:
    uid = user_id()
    response = await api.issue_link_token_with_http_info(uid)
    assert response.status_code == 200
    assert re.fullmatch(r"[A-Za-z0-9]{32}", response.data.link_token)
    assert response.headers["x-line-request-id"]
    [record] = simulator.received
    assert (record.path, record.status, record.recipient) == (
        f"/v2/bot/user/{uid}/linkToken",
        200,
        uid,
    )
    other = await api.issue_link_token(uid)
    assert other.link_token != response.data.link_token


@pytest.mark.parametrize("bad_id", ["not-a-user", "U" + "A" * 32, "C" + "0" * 32])
async def test_link_token_for_a_malformed_user_id_is_refused(
    api: AsyncMessagingApi, bad_id: str
) -> None:
    with pytest.raises(ApiException) as caught:
        await api.issue_link_token(bad_id)
    assert caught.value.status == 400
    assert "userId" in error_body(caught.value)["message"]


async def test_link_token_needs_a_token_and_takes_no_retry_key(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{simulator.base_url}/v2/bot/user/{user_id()}/linkToken"
    async with http.post(url) as resp:
        assert resp.status == 401
    async with http.post(url, headers=auth(**{"X-Line-Retry-Key": str(uuid.uuid4())})) as resp:
        assert resp.status == 400
        assert (await resp.json())["details"][0]["property"] == "X-Line-Retry-Key"


async def test_account_link_dialog_sends_a_signed_event_once(
    simulator: LineSimulator,
    receiver: Receiver,
    api: AsyncMessagingApi,
    http: aiohttp.ClientSession,
) -> None:
    uid = user_id()
    link_token = (await api.issue_link_token(uid)).link_token
    dialog = f"{simulator.base_url}/dialog/bot/accountLink"
    params = {"linkToken": link_token, "nonce": "member-7-nonce-abc"}

    async with http.get(dialog, params=params) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "linked" in (await resp.text()).lower()
    # The event was sent before the page was answered.
    [delivery] = receiver.deliveries
    assert delivery.valid
    assert delivery.signature == expected_signature(delivery.body)
    [event] = delivery.events
    assert isinstance(event, AccountLinkEvent)
    assert event.source is not None and event.source.user_id == uid
    assert (event.link.result, event.link.nonce) == ("ok", "member-7-nonce-abc")
    assert event.reply_token

    # A link token is single use: the second visit fails, without a reply token.
    async with http.get(dialog, params={**params, "nonce": "second-try-nonce"}) as resp:
        assert resp.status == 200
        assert "failed" in (await resp.text()).lower()
    [raw] = receiver.deliveries[1].payload["events"]
    assert raw["link"] == {"result": "failed", "nonce": "second-try-nonce"}
    assert raw["source"] == {"type": "user", "userId": uid}
    assert "replyToken" not in raw


async def test_link_token_expires_after_ten_minutes(
    simulator: LineSimulator,
    receiver: Receiver,
    api: AsyncMessagingApi,
    http: aiohttp.ClientSession,
) -> None:
    dialog = f"{simulator.base_url}/dialog/bot/accountLink"
    fresh = (await api.issue_link_token(user_id())).link_token
    stale = (await api.issue_link_token(user_id())).link_token

    simulator.advance_clock(LINK_TOKEN_TTL_SECONDS - 5)
    async with http.get(dialog, params={"linkToken": fresh, "nonce": "n-fresh-0001"}) as resp:
        assert "linked" in (await resp.text()).lower()
    simulator.advance_clock(10)
    async with http.get(dialog, params={"linkToken": stale, "nonce": "n-stale-0001"}) as resp:
        assert "failed" in (await resp.text()).lower()

    results = [raw["link"]["result"] for d in receiver.deliveries for raw in d.payload["events"]]
    assert results == ["ok", "failed"]


async def test_unknown_link_token_and_missing_nonce(
    simulator: LineSimulator, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    dialog = f"{simulator.base_url}/dialog/bot/accountLink"
    async with http.get(dialog, params={"linkToken": "x" * 32}) as resp:
        assert resp.status == 400
    assert receiver.deliveries == []

    uid = user_id()
    params = {"linkToken": "y" * 32, "nonce": "some-nonce-1", "userId": uid}
    async with http.get(dialog, params=params) as resp:
        assert "failed" in (await resp.text()).lower()
    [raw] = receiver.deliveries[0].payload["events"]
    assert raw["link"]["result"] == "failed"
    assert raw["source"]["userId"] == uid


# --- replies ----------------------------------------------------------------------------


async def test_reply_to_a_follow_event_is_single_use(
    simulator: LineSimulator, receiver: Receiver, api: AsyncMessagingApi
) -> None:
    uid = user_id()
    await simulator.follow(uid)
    [event] = receiver.events
    assert isinstance(event, FollowEvent)
    request = ReplyMessageRequest(reply_token=event.reply_token, messages=[TextMessage(text="hi")])

    response = await api.reply_message_with_http_info(request)
    assert response.status_code == 200
    [sent] = response.data.sent_messages
    assert sent.id.isdigit() and sent.quote_token

    with pytest.raises(ApiException) as caught:
        await api.reply_message(request)
    assert caught.value.status == 400
    assert error_body(caught.value) == {"message": "Invalid reply token"}

    [record] = simulator.accepted_replies()
    assert (record.path, record.recipient) == (REPLY_PATH, uid)
    assert record.body["messages"] == [{"type": "text", "text": "hi"}]
    stats = simulator.stats()
    assert (stats.accepted_replies, stats.reply_messages, stats.invalid_reply_tokens) == (1, 1, 1)
    # Replies are free: they do not count toward the monthly usage.
    assert (await api.get_message_quota_consumption()).total_usage == 0
    assert simulator.accepted_pushes() == []


async def test_reply_token_expires_after_a_minute(
    simulator: LineSimulator, receiver: Receiver, api: AsyncMessagingApi
) -> None:
    uid = user_id()
    await simulator.message(uid, "first")
    await simulator.message(uid, "second")
    first, second = receiver.events
    assert isinstance(first, MessageEvent) and isinstance(second, MessageEvent)
    assert isinstance(first.message, TextMessageContent)
    assert first.message.text == "first" and first.message.quote_token

    simulator.advance_clock(REPLY_TOKEN_TTL_SECONDS - 5)
    ok = ReplyMessageRequest(reply_token=first.reply_token, messages=[TextMessage(text="a")])
    assert (await api.reply_message_with_http_info(ok)).status_code == 200

    simulator.advance_clock(10)
    late = ReplyMessageRequest(reply_token=second.reply_token, messages=[TextMessage(text="b")])
    with pytest.raises(ApiException) as caught:
        await api.reply_message(late)
    assert caught.value.status == 400
    assert error_body(caught.value)["message"] == "Invalid reply token"


async def test_reply_validation_leaves_the_token_usable(
    simulator: LineSimulator, receiver: Receiver, api: AsyncMessagingApi
) -> None:
    await simulator.follow(user_id())
    [event] = receiver.events
    assert isinstance(event, FollowEvent)
    too_many = ReplyMessageRequest.construct(
        reply_token=event.reply_token, messages=[TextMessage(text=str(i)) for i in range(6)]
    )
    with pytest.raises(ApiException) as caught:
        await api.reply_message(too_many)
    assert caught.value.status == 400
    assert error_body(caught.value)["details"] == [
        {"message": "Size must be between 1 and 5", "property": "messages"}
    ]

    unknown = ReplyMessageRequest(reply_token="0" * 32, messages=[TextMessage(text="x")])
    with pytest.raises(ApiException) as caught:
        await api.reply_message(unknown)
    assert error_body(caught.value) == {"message": "Invalid reply token"}

    good = ReplyMessageRequest(reply_token=event.reply_token, messages=[TextMessage(text="x")])
    assert (await api.reply_message_with_http_info(good)).status_code == 200


async def test_reply_takes_no_retry_key(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    body = {"replyToken": "x", "messages": [{"type": "text", "text": "x"}]}
    headers = auth(**{"X-Line-Retry-Key": str(uuid.uuid4())})
    async with http.post(f"{simulator.base_url}{REPLY_PATH}", json=body, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["details"][0]["property"] == "X-Line-Retry-Key"


async def test_failed_account_link_has_no_reply_token_but_a_good_one_does(
    simulator: LineSimulator, receiver: Receiver, api: AsyncMessagingApi
) -> None:
    uid = user_id()
    await simulator.account_link(uid, "nonce-failed-1", ok=False)
    await simulator.account_link(uid, "nonce-good-01")
    failed, good = receiver.events
    assert isinstance(failed, AccountLinkEvent) and isinstance(good, AccountLinkEvent)
    assert failed.reply_token is None
    assert good.reply_token
    reply = ReplyMessageRequest(reply_token=good.reply_token, messages=[TextMessage(text="ok")])
    await api.reply_message(reply)
    assert simulator.accepted_replies()[0].recipient == uid


# --- followers --------------------------------------------------------------------------


async def test_followers_are_paged(simulator: LineSimulator, api: AsyncMessagingApi) -> None:
    everyone = [user_id() for _ in range(5)]
    simulator.set_followers(everyone)

    seen: list[str] = []
    page = await api.get_followers(limit=2)
    pages = 1
    while True:
        seen += page.user_ids
        if page.next is None:
            break
        assert len(page.user_ids) == 2
        page = await api.get_followers(start=page.next, limit=2)
        pages += 1
    assert seen == everyone
    assert pages == 3


async def test_followers_default_limit_is_300(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    simulator.set_followers(user_id() for _ in range(301))
    first = await api.get_followers()
    assert len(first.user_ids) == 300
    assert first.next
    last = await api.get_followers(start=first.next)
    assert len(last.user_ids) == 1
    assert last.next is None
    assert first.user_ids + last.user_ids == simulator.followers

    simulator.set_followers([])
    empty = await api.get_followers_with_http_info()
    assert empty.data.user_ids == []
    assert json.loads(empty.raw_data) == {"userIds": []}


async def test_follow_and_unfollow_change_the_followers_and_a_walk_sees_one_snapshot(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    a, b, c = user_id(), user_id(), user_id()
    await simulator.follow(a)
    await simulator.follow(b)
    await simulator.follow(c)
    await simulator.unfollow(b)
    assert (await api.get_followers()).user_ids == [a, c]

    first = await api.get_followers(limit=1)
    await simulator.unfollow(c)
    assert first.next is not None
    rest = await api.get_followers(start=first.next, limit=1)
    assert first.user_ids + rest.user_ids == [a, c]
    assert (await api.get_followers()).user_ids == [a]


async def test_followers_bad_limit_and_start(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{simulator.base_url}/v2/bot/followers/ids"
    for limit in ("0", "1001", "many"):
        async with http.get(url, params={"limit": limit}, headers=auth()) as resp:
            assert resp.status == 400
            assert (await resp.json())["details"][0]["property"] == "limit"
    async with http.get(url, params={"limit": "1000"}, headers=auth()) as resp:
        assert resp.status == 200
    async with http.get(url, params={"start": "made-up"}, headers=auth()) as resp:
        assert resp.status == 400
    async with http.get(url) as resp:
        assert resp.status == 401


# --- LINE notification messages (PNP) ---------------------------------------------------


async def test_pnp_to_a_registered_phone_is_delivered_and_reported_by_webhook(
    simulator: LineSimulator, receiver: Receiver, api: AsyncMessagingApi
) -> None:
    uid = user_id()
    phone_hash = simulator.register_phone(PHONE, uid)
    assert phone_hash == hashlib.sha256(PHONE.encode()).hexdigest() == hash_phone_number(PHONE)

    request = PnpMessagesRequest(to=phone_hash, messages=[TextMessage(text="Your parcel")])
    response = await api.push_messages_by_phone_with_http_info(request, x_line_delivery_tag=TAG)
    assert response.status_code == 200
    assert json.loads(response.raw_data) == {}
    assert response.headers["x-line-request-id"]

    await simulator.drain_webhooks()
    [delivery] = receiver.deliveries
    assert delivery.valid
    assert delivery.signature == expected_signature(delivery.body)
    [event] = delivery.events
    assert isinstance(event, PnpDeliveryCompletionEvent)
    assert event.delivery.data == TAG
    [raw] = delivery.payload["events"]
    assert raw["type"] == "delivery"
    assert raw["delivery"] == {"data": TAG}
    assert "source" not in raw  # the phone's owner is not disclosed
    assert ULID_RE.fullmatch(raw["webhookEventId"])

    [record] = simulator.accepted_pnp()
    assert (record.path, record.recipient) == (PNP_PATH, uid)
    assert record.headers["x-line-delivery-tag"] == TAG
    stats = simulator.stats()
    assert (stats.accepted_pnp, stats.pnp_messages) == (1, 1)
    # LINE notification messages are counted apart from the monthly message usage.
    assert (await api.get_message_quota_consumption()).total_usage == 0
    assert stats.quota_counted_paths == ["/v2/bot/message/push", "/v2/bot/message/multicast"]


async def test_pnp_without_a_tag_reports_the_phone_hash(
    simulator: LineSimulator, receiver: Receiver, api: AsyncMessagingApi
) -> None:
    phone_hash = simulator.register_phone(PHONE, user_id())
    await api.push_messages_by_phone(
        PnpMessagesRequest(to=phone_hash, messages=[TextMessage(text="x")])
    )
    await simulator.drain_webhooks()
    [event] = receiver.events
    assert isinstance(event, PnpDeliveryCompletionEvent)
    assert event.delivery.data == phone_hash


async def test_pnp_to_an_unknown_phone_is_422(
    simulator: LineSimulator, receiver: Receiver, api: AsyncMessagingApi
) -> None:
    request = PnpMessagesRequest(
        to=hash_phone_number("+819099999999"), messages=[TextMessage(text="x")]
    )
    with pytest.raises(ApiException) as caught:
        await api.push_messages_by_phone(request, x_line_delivery_tag=TAG)
    assert caught.value.status == 422
    assert error_body(caught.value) == {"message": "Failed to send messages"}

    simulator.register_phone(PHONE, user_id())
    simulator.forget_phone(PHONE)
    with pytest.raises(ApiException) as caught:
        await api.push_messages_by_phone(
            PnpMessagesRequest(to=hash_phone_number(PHONE), messages=[TextMessage(text="x")])
        )
    assert caught.value.status == 422
    await simulator.drain_webhooks()
    assert receiver.deliveries == []
    assert simulator.stats().pnp_undeliverable == 2


@pytest.mark.parametrize(
    "to",
    [
        PHONE,  # the number itself, unhashed
        hashlib.sha256(PHONE.encode()).hexdigest().upper(),
        hashlib.sha256(PHONE.encode()).hexdigest()[:63],
    ],
)
async def test_pnp_to_must_be_a_lower_case_sha256(api: AsyncMessagingApi, to: str) -> None:
    with pytest.raises(ApiException) as caught:
        await api.push_messages_by_phone(
            PnpMessagesRequest(to=to, messages=[TextMessage(text="x")])
        )
    assert caught.value.status == 400
    assert [d["property"] for d in error_body(caught.value)["details"]] == ["to"]


async def test_pnp_delivery_tag_length_and_retry_key(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{simulator.base_url}{PNP_PATH}"
    body = {
        "to": simulator.register_phone(PHONE, user_id()),
        "messages": [{"type": "text", "text": "x"}],
    }
    for tag, status in (("t" * 15, 400), ("t" * 16, 200), ("t" * 100, 200), ("t" * 101, 400)):
        async with http.post(url, json=body, headers=auth(**{"X-Line-Delivery-Tag": tag})) as resp:
            assert resp.status == status, tag
            if status == 400:
                assert (await resp.json())["details"][0]["property"] == "X-Line-Delivery-Tag"
    headers = auth(**{"X-Line-Retry-Key": str(uuid.uuid4())})
    async with http.post(url, json=body, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["details"][0]["property"] == "X-Line-Retry-Key"
    async with http.post(url, json=body) as resp:
        assert resp.status == 401


async def test_pnp_faults_and_delivery_controls(
    simulator: LineSimulator, receiver: Receiver, api: AsyncMessagingApi
) -> None:
    request = PnpMessagesRequest(
        to=simulator.register_phone(PHONE, user_id()), messages=[TextMessage(text="x")]
    )
    simulator.fail_next(1, 503)
    with pytest.raises(ApiException) as caught:
        await api.push_messages_by_phone(request, x_line_delivery_tag=TAG + "-0")
    assert caught.value.status == 503

    simulator.set_pnp_delivery(suppress_next=1)
    await api.push_messages_by_phone(request, x_line_delivery_tag=TAG + "-1")
    await simulator.drain_webhooks()
    assert receiver.deliveries == []

    simulator.set_pnp_delivery(delay_seconds=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await api.push_messages_by_phone(request, x_line_delivery_tag=TAG + "-2")
    assert loop.time() - started < 0.25  # the answer does not wait for the event
    assert receiver.deliveries == []
    await simulator.drain_webhooks()
    assert loop.time() - started >= 0.3
    [event] = receiver.events
    assert isinstance(event, PnpDeliveryCompletionEvent)
    assert event.delivery.data == TAG + "-2"

    simulator.delay_next(1, 0.2)
    started = loop.time()
    await api.push_messages_by_phone(request)
    assert loop.time() - started >= 0.2
    assert [r.status for r in simulator.received] == [503, 200, 200, 200]


# --- LINE Login ID token verification ---------------------------------------------------


async def verify(
    http: aiohttp.ClientSession, simulator: LineSimulator, **form: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{simulator.base_url}/oauth2/v2.1/verify", data=form) as resp:
        assert resp.headers["x-line-request-id"]
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def test_id_token_verifies_to_its_claims(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    uid = user_id()
    id_token = simulator.mint_id_token(
        uid,
        client_id=CHANNEL_ID,
        nonce="login-nonce-1",
        name="Taro Line",
        picture="https://profile.example/taro",
        email="taro@example.com",
    )
    header, _, signature = id_token.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    assert signature

    now = int(simulator.now())
    status, claims = await verify(
        http, simulator, id_token=id_token, client_id=CHANNEL_ID, nonce="login-nonce-1", user_id=uid
    )
    assert status == 200
    assert claims["iss"] == "https://access.line.me"
    assert (claims["sub"], claims["aud"], claims["nonce"]) == (uid, CHANNEL_ID, "login-nonce-1")
    assert now - 2 <= claims["iat"] <= now + 2
    assert claims["exp"] == claims["iat"] + 3600
    assert claims["amr"] == ["linesso"]
    assert (claims["name"], claims["picture"], claims["email"]) == (
        "Taro Line",
        "https://profile.example/taro",
        "taro@example.com",
    )
    # Without nonce and user_id in the request, they are not checked.
    status, _ = await verify(http, simulator, id_token=id_token, client_id=CHANNEL_ID)
    assert status == 200


async def test_id_token_rejections_use_lines_descriptions(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    uid = user_id()
    id_token = simulator.mint_id_token(uid, client_id=CHANNEL_ID, nonce="n-1", expires_in=60)
    header, payload, signature = id_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = user_id()
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    foreign = simulator.mint_id_token(uid, client_id=CHANNEL_ID, issuer="https://evil.example")

    cases = [
        ({"id_token": "not-a-jwt", "client_id": CHANNEL_ID}, "Invalid IdToken."),
        (
            {"id_token": f"{header}.{forged_payload}.{signature}", "client_id": CHANNEL_ID},
            "Invalid IdToken.",
        ),
        ({"id_token": foreign, "client_id": CHANNEL_ID}, "Invalid IdToken Issuer."),
        ({"id_token": id_token, "client_id": "9999999999"}, "Invalid IdToken Audience."),
        (
            {"id_token": id_token, "client_id": CHANNEL_ID, "nonce": "other"},
            "Invalid IdToken Nonce.",
        ),
        (
            {"id_token": id_token, "client_id": CHANNEL_ID, "user_id": user_id()},
            "Invalid IdToken Subject Identifier.",
        ),
    ]
    for form, description in cases:
        status, body = await verify(http, simulator, **form)
        assert (status, body) == (
            400,
            {"error": "invalid_request", "error_description": description},
        )

    simulator.advance_clock(61)
    status, body = await verify(http, simulator, id_token=id_token, client_id=CHANNEL_ID)
    assert (status, body["error_description"]) == (400, "IdToken expired.")

    status, body = await verify(http, simulator, client_id=CHANNEL_ID)
    assert (status, body["error"]) == (400, "invalid_request")


async def test_id_tokens_from_another_simulator_are_invalid(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    other = LineSimulator(access_tokens=["x"])
    id_token = other.mint_id_token(user_id(), client_id=CHANNEL_ID)
    status, body = await verify(http, simulator, id_token=id_token, client_id=CHANNEL_ID)
    assert (status, body["error_description"]) == (400, "Invalid IdToken.")


# --- control API over HTTP --------------------------------------------------------------


async def test_control_api_for_identity(
    simulator: LineSimulator, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    base = f"{simulator.base_url}/__simulator"

    async def post(path: str, body: dict[str, Any], status: int = 200) -> Any:
        async with http.post(f"{base}{path}", json=body) as resp:
            assert resp.status == status, await resp.text()
            return await resp.json()

    state = await post("/webhook", {"url": receiver.url, "channel_secret": SECRET})
    assert state == {"url": receiver.url, "destination": simulator.bot_user_id, "signed": True}

    a, b = user_id(), user_id()
    assert (await post("/followers", {"user_ids": [a, b]}))["followers"] == [a, b]
    await post("/followers", {"user_ids": ["nobody"]}, status=400)

    answer = await post("/events/follow", {"user_id": user_id(), "is_unblocked": True})
    assert answer["status"] == 200
    [event] = answer["webhook"]["payload"]["events"]
    assert event["follow"] == {"isUnblocked": True}
    assert len(simulator.followers) == 3

    answer = await post("/events/redeliver", {"webhook_event_id": event["webhookEventId"]})
    redelivered = answer["webhook"]["payload"]["events"][0]
    assert redelivered["webhookEventId"] == event["webhookEventId"]
    assert redelivered["deliveryContext"] == {"isRedelivery": True}
    await post("/events/redeliver", {"webhook_event_id": "nope"}, status=404)

    answer = await post("/events/accountLink", {"user_id": a, "nonce": "n-ctl-1", "ok": False})
    assert answer["webhook"]["payload"]["events"][0]["link"]["result"] == "failed"
    answer = await post("/events/message", {"user_id": a, "text": "hello"})
    assert answer["webhook"]["payload"]["events"][0]["message"]["text"] == "hello"
    answer = await post("/events/delivery", {"data": TAG, "forge_signature": True})
    assert answer["status"] == 400 and answer["webhook"]["forged"] is True
    await post("/events/unfollow", {"user_id": a})
    assert a not in simulator.followers
    await post("/events/surprise", {}, status=404)

    hashes = (await post("/phones", {"phones": [{"phone": PHONE, "user_id": b}]}))["hashes"]
    assert hashes == {PHONE: hash_phone_number(PHONE)}
    await post("/phones", {"phones": [{"phone": "080-1234-5678", "user_id": b}]}, status=400)

    stats = await post("/faults", {"pnp_delivery": {"delay_seconds": 0.05, "suppress_next": 2}})
    assert (stats["pnp_delivery_delay_seconds"], stats["pnp_deliveries_to_suppress"]) == (0.05, 2)

    minted = await post("/id-tokens", {"user_id": b, "client_id": CHANNEL_ID, "nonce": "abc"})
    status, claims = await verify(
        http, simulator, id_token=minted["id_token"], client_id=CHANNEL_ID, nonce="abc"
    )
    assert (status, claims["sub"]) == (200, b)

    async with http.get(f"{base}/webhooks") as resp:
        sent = await resp.json()
    assert len(sent) == len(simulator.sent_webhooks) == 6
    assert len(receiver.deliveries) == 6

    await post("/webhook", {"url": None})
    await post("/events/follow", {"user_id": user_id()}, status=409)


async def test_reset_forgets_identity_state_but_keeps_the_webhook(
    simulator: LineSimulator, receiver: Receiver, api: AsyncMessagingApi
) -> None:
    uid = user_id()
    await simulator.follow(uid)
    simulator.register_phone(PHONE, uid)
    link_token = (await api.issue_link_token(uid)).link_token
    assert link_token

    simulator.reset()
    assert simulator.followers == []
    assert simulator.sent_webhooks == []
    stats = simulator.stats()
    assert (stats.registered_phones, stats.link_tokens, stats.reply_tokens) == (0, 0, 0)
    assert simulator.webhook_url == receiver.url
    assert await simulator.follow(uid) == 200


async def test_push_is_unaffected_by_the_identity_endpoints(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    await simulator.follow(user_id())
    await api.push_message(PushMessageRequest(to=user_id(), messages=[TextMessage(text="x")]))
    assert len(simulator.accepted_pushes()) == 1
    assert (await api.get_message_quota_consumption()).total_usage == 1
