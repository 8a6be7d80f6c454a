"""The LINE simulator, driven by the real line-bot-sdk where the SDK can express the request.

Raw aiohttp requests cover what the SDK refuses to send (bad JSON, oversize
bodies, unknown message types) and the control API.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    FlexBox,
    FlexBubble,
    FlexMessage,
    FlexText,
    ImageMessage,
    MulticastRequest,
    PushMessageRequest,
    StickerMessage,
    TextMessage,
)

from linesim import (
    MAX_BODY_BYTES,
    MULTICAST_PATH,
    PUSH_PATH,
    RETRY_KEY_TTL_SECONDS,
    LineSimulator,
    parse_listen,
    utf16_length,
)

TOKEN = "channel-token-under-test"
OTHER_TOKEN = "second-token-of-the-channel"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UNAUTHORIZED = (
    "Authentication failed. Confirm that the access token in the authorization header is valid."
)
REPO_ROOT = Path(__file__).resolve().parents[1]


def user_id() -> str:
    return "U" + uuid.uuid4().hex


def retry_key() -> str:
    return str(uuid.uuid4())


def text_push(text: str = "hello", to: str | None = None) -> PushMessageRequest:
    return PushMessageRequest(to=to or user_id(), messages=[TextMessage(text=text)])


def error_body(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert isinstance(body, dict)
    return body


def start_of_rate_window(simulator: LineSimulator) -> None:
    """Move the clock just past a whole second so a burst stays in one rate window."""
    now = simulator.now()
    simulator.advance_clock(math.ceil(now) - now + 0.001)


@pytest.fixture(scope="module")
async def simulator() -> AsyncIterator[LineSimulator]:
    sim = LineSimulator(access_tokens=[TOKEN, OTHER_TOKEN])
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture(autouse=True)
def fresh_state(simulator: LineSimulator) -> None:
    simulator.reset()


async def post_json(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    token: str = TOKEN,
    key: str | None = None,
    seconds: float = 10.0,
) -> tuple[int, Mapping[str, str], Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["X-Line-Retry-Key"] = key
    timeout = aiohttp.ClientTimeout(total=seconds)
    async with http.post(url, data=body, headers=headers, timeout=timeout) as resp:
        payload = await resp.read()
        return resp.status, resp.headers.copy(), json.loads(payload) if payload else None


# --- push through the SDK --------------------------------------------------------


async def test_push_is_accepted_and_recorded(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    to, key = user_id(), retry_key()
    response = await api.push_message_with_http_info(
        PushMessageRequest(to=to, messages=[TextMessage(text="hello")]), x_line_retry_key=key
    )

    assert response.status_code == 200
    request_id = response.headers["x-line-request-id"]
    assert UUID_RE.fullmatch(request_id)
    [sent] = response.data.sent_messages
    assert sent.id.isdigit()
    assert sent.quote_token
    [record] = simulator.accepted_pushes()
    assert record.request_id == request_id
    assert record.retry_key == key
    assert record.status == 200
    assert record.path == PUSH_PATH
    assert record.body == {
        "to": to,
        "messages": [{"type": "text", "text": "hello"}],
        "notificationDisabled": False,
    }
    assert record.headers["authorization"] == f"Bearer {TOKEN}"
    assert record.headers["x-line-retry-key"] == key
    stats = simulator.stats()
    assert (stats.requests, stats.accepted_pushes, stats.accepted_messages) == (1, 1, 1)
    assert simulator.total_usage == 1


async def test_each_message_gets_an_id_and_only_quotable_ones_a_quote_token(
    api: AsyncMessagingApi,
) -> None:
    request = PushMessageRequest(
        to=user_id(),
        messages=[
            TextMessage(text="a"),
            ImageMessage(
                original_content_url="https://example.com/a.jpg",
                preview_image_url="https://example.com/a-small.jpg",
            ),
            StickerMessage(package_id="446", sticker_id="1988"),
        ],
    )
    response = await api.push_message(request)

    text, image, sticker = response.sent_messages
    assert len({text.id, image.id, sticker.id}) == 3
    assert text.quote_token and sticker.quote_token
    assert image.quote_token is None


async def test_request_ids_are_fresh_per_response(api: AsyncMessagingApi) -> None:
    first = await api.push_message_with_http_info(text_push())
    second = await api.push_message_with_http_info(text_push())
    assert first.headers["x-line-request-id"] != second.headers["x-line-request-id"]


async def test_same_retry_key_is_executed_once(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    request, key = text_push(), retry_key()
    first = await api.push_message_with_http_info(request, x_line_retry_key=key)

    with pytest.raises(ApiException) as caught:
        await api.push_message(request, x_line_retry_key=key)

    assert caught.value.status == 409
    headers = caught.value.headers
    assert headers["x-line-accepted-request-id"] == first.headers["x-line-request-id"]
    assert headers["x-line-request-id"] != first.headers["x-line-request-id"]
    body = error_body(caught.value)
    assert body["message"] == "The retry key is already accepted"
    assert body["sentMessages"] == [
        {"id": sent.id, "quoteToken": sent.quote_token} for sent in first.data.sent_messages
    ]
    assert len(simulator.accepted_pushes()) == 1
    assert [r.status for r in simulator.received] == [200, 409]
    assert simulator.stats().conflicts == 1
    assert simulator.total_usage == 1


async def test_retry_key_expires_after_24_hours(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    request, key = text_push(), retry_key()
    await api.push_message(request, x_line_retry_key=key)

    simulator.advance_clock(RETRY_KEY_TTL_SECONDS - 5)
    with pytest.raises(ApiException) as caught:
        await api.push_message(request, x_line_retry_key=key)
    assert caught.value.status == 409

    simulator.advance_clock(10)
    again = await api.push_message_with_http_info(request, x_line_retry_key=key)
    assert again.status_code == 200
    assert len(simulator.accepted_pushes()) == 2


async def test_retry_keys_are_kept_per_token_and_endpoint(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    key = retry_key()
    await api.push_message(text_push(), x_line_retry_key=key)
    async with AsyncApiClient(
        Configuration(host=simulator.base_url, access_token=OTHER_TOKEN)
    ) as other_client:
        await AsyncMessagingApi(other_client).push_message(text_push(), x_line_retry_key=key)
    await api.multicast(
        MulticastRequest(to=[user_id()], messages=[TextMessage(text="x")]), x_line_retry_key=key
    )
    assert [r.status for r in simulator.received] == [200, 200, 200]


async def test_retry_key_must_be_a_uuid(api: AsyncMessagingApi) -> None:
    with pytest.raises(ApiException) as caught:
        await api.push_message(text_push(), x_line_retry_key="not-a-uuid")
    assert caught.value.status == 400
    assert error_body(caught.value)["details"][0]["property"] == "X-Line-Retry-Key"


# --- authentication and validation -----------------------------------------------


async def test_bad_token_is_rejected(simulator: LineSimulator, http: aiohttp.ClientSession) -> None:
    async with AsyncApiClient(
        Configuration(host=simulator.base_url, access_token="wrong-token")
    ) as bad_client:
        with pytest.raises(ApiException) as caught:
            await AsyncMessagingApi(bad_client).push_message(text_push())
    assert caught.value.status == 401
    assert error_body(caught.value) == {"message": UNAUTHORIZED}
    assert UUID_RE.fullmatch(caught.value.headers["x-line-request-id"])

    body = json.dumps({"to": user_id(), "messages": [{"type": "text", "text": "x"}]}).encode()
    async with http.post(f"{simulator.base_url}{PUSH_PATH}", data=body) as resp:
        assert resp.status == 401
        assert await resp.json() == {"message": UNAUTHORIZED}
    assert simulator.accepted_pushes() == []


@pytest.mark.parametrize(
    "bad_id",
    [
        "U" + "A" * 32,  # upper-case hex
        "U" + "0" * 31,  # too short
        "X" + "0" * 32,  # wrong prefix
        "someone@example.com",
    ],
)
async def test_malformed_user_id_is_rejected(api: AsyncMessagingApi, bad_id: str) -> None:
    with pytest.raises(ApiException) as caught:
        await api.push_message(text_push(to=bad_id))
    assert caught.value.status == 400
    body = error_body(caught.value)
    assert body["message"] == "The request body has 1 error(s)"
    assert [d["property"] for d in body["details"]] == ["to"]


async def test_more_than_five_messages_is_rejected(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    # The SDK's own model refuses six messages, so skip its validation to reach the server.
    request = PushMessageRequest.construct(
        to=user_id(), messages=[TextMessage(text=str(i)) for i in range(6)]
    )
    with pytest.raises(ApiException) as caught:
        await api.push_message(request)
    assert caught.value.status == 400
    assert error_body(caught.value)["details"] == [
        {"message": "Size must be between 1 and 5", "property": "messages"}
    ]
    assert simulator.total_usage == 0


async def test_text_length_is_counted_in_utf16_units(api: AsyncMessagingApi) -> None:
    emoji = "\U0001f600"  # outside the BMP: two UTF-16 units
    assert utf16_length(emoji * 2500) == 5000

    for accepted in ("a" * 5000, emoji * 2500, "\u3042" * 5000):
        response = await api.push_message_with_http_info(text_push(accepted))
        assert response.status_code == 200

    for rejected in ("a" * 5001, emoji * 2500 + "a", ""):
        with pytest.raises(ApiException) as caught:
            await api.push_message(text_push(rejected))
        assert caught.value.status == 400
        [detail] = error_body(caught.value)["details"]
        assert detail["property"] == "messages[0].text"


async def test_flex_alt_text_limit(api: AsyncMessagingApi) -> None:
    def flex(alt_text: str) -> PushMessageRequest:
        bubble = FlexBubble(body=FlexBox(layout="vertical", contents=[FlexText(text="hi")]))
        return PushMessageRequest(
            to=user_id(), messages=[FlexMessage(alt_text=alt_text, contents=bubble)]
        )

    assert (await api.push_message_with_http_info(flex("x" * 1500))).status_code == 200
    with pytest.raises(ApiException) as caught:
        await api.push_message(flex("x" * 1501))
    assert caught.value.status == 400
    assert error_body(caught.value)["details"][0]["property"] == "messages[0].altText"


async def test_unknown_message_type_and_missing_fields(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{simulator.base_url}{PUSH_PATH}"
    unknown = json.dumps({"to": user_id(), "messages": [{"type": "hologram"}]}).encode()
    status, _, body = await post_json(http, url, unknown)
    assert status == 400
    assert body["details"][0]["property"] == "messages[0].type"

    sticker = {"type": "sticker", "packageId": "446"}
    missing = json.dumps({"to": user_id(), "messages": [sticker]}).encode()
    status, _, body = await post_json(http, url, missing)
    assert status == 400
    assert body["details"] == [
        {"message": "Must be specified", "property": "messages[0].stickerId"}
    ]

    status, _, body = await post_json(http, url, b'{"messages": [{"type": "text", "text": "x"}]}')
    assert status == 400
    assert body["details"][0]["property"] == "to"


async def test_invalid_json_is_rejected(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    status, headers, body = await post_json(
        http, f"{simulator.base_url}{PUSH_PATH}", b'{"to": "U",\n  "messages": [}'
    )
    assert status == 400
    assert body == {"message": "The request body could not be parsed as JSON (line: 2, column: 16)"}
    assert UUID_RE.fullmatch(headers["X-Line-Request-Id"])
    [record] = simulator.received
    assert record.status == 400
    assert record.body is None


async def test_body_limit_is_2_mb(simulator: LineSimulator, http: aiohttp.ClientSession) -> None:
    url = f"{simulator.base_url}{PUSH_PATH}"
    payload = json.dumps({"to": user_id(), "messages": [{"type": "text", "text": "x"}]}).encode()
    exactly_2mb = payload + b" " * (MAX_BODY_BYTES - len(payload))

    status, _, _ = await post_json(http, url, exactly_2mb)
    assert status == 200
    status, headers, body = await post_json(http, url, exactly_2mb + b" ")
    assert status == 413
    assert "message" in body
    assert UUID_RE.fullmatch(headers["X-Line-Request-Id"])

    async def streamed() -> AsyncIterator[bytes]:
        yield payload
        for _ in range(3):
            yield b" " * (1024 * 1024)

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with http.post(url, data=streamed(), headers=headers) as resp:
        assert resp.status == 413
    assert [r.status for r in simulator.received] == [200, 413, 413]
    assert len(simulator.accepted_pushes()) == 1


# --- faults, limits and quota ----------------------------------------------------


async def test_injected_server_error_then_retry_succeeds(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    simulator.fail_next(1, 500)
    request, key = text_push(), retry_key()

    with pytest.raises(ApiException) as caught:
        await api.push_message(request, x_line_retry_key=key)
    assert caught.value.status == 500
    assert UUID_RE.fullmatch(caught.value.headers["x-line-request-id"])

    # A failed request was not executed, so its retry key is still free.
    response = await api.push_message_with_http_info(request, x_line_retry_key=key)
    assert response.status_code == 200
    stats = simulator.stats()
    assert (stats.server_errors, stats.injected_failures, stats.accepted_pushes) == (1, 1, 1)


async def test_timeout_after_execution_is_answered_409_on_retry(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    simulator.delay_next(1, 1.0)
    url = f"{simulator.base_url}{PUSH_PATH}"
    body = json.dumps({"to": user_id(), "messages": [{"type": "text", "text": "x"}]}).encode()
    key = retry_key()

    with pytest.raises(asyncio.TimeoutError):
        await post_json(http, url, body, key=key, seconds=0.25)
    status, headers, _ = await post_json(http, url, body, key=key)

    assert status == 409
    first = simulator.received[0]
    assert first.status == 200
    assert headers["x-line-accepted-request-id"] == first.request_id
    assert len(simulator.accepted_pushes()) == 1


async def test_delay_before_execution_lets_the_retry_win(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    simulator.delay_next(1, 0.5, before_processing=True)
    url = f"{simulator.base_url}{PUSH_PATH}"
    body = json.dumps({"to": user_id(), "messages": [{"type": "text", "text": "x"}]}).encode()
    key = retry_key()

    with pytest.raises(asyncio.TimeoutError):
        await post_json(http, url, body, key=key, seconds=0.25)
    status, _, _ = await post_json(http, url, body, key=key)
    assert status == 200

    # The held-back original runs after its delay and finds the key taken.
    for _ in range(100):
        if simulator.received[0].status:
            break
        await asyncio.sleep(0.02)
    assert [r.status for r in simulator.received] == [409, 200]
    assert len(simulator.accepted_pushes()) == 1


async def test_rate_limit_answers_429(simulator: LineSimulator, api: AsyncMessagingApi) -> None:
    simulator.set_rate_limits(push=2)
    start_of_rate_window(simulator)
    await api.push_message(text_push())
    await api.push_message(text_push())
    with pytest.raises(ApiException) as caught:
        await api.push_message(text_push())
    assert caught.value.status == 429
    assert error_body(caught.value) == {"message": "Too many requests"}
    # Multicast has its own window.
    await api.multicast(MulticastRequest(to=[user_id()], messages=[TextMessage(text="x")]))

    simulator.advance_clock(1)
    assert (await api.push_message_with_http_info(text_push())).status_code == 200
    stats = simulator.stats()
    assert (stats.rate_limited, stats.by_status[429], stats.accepted_pushes) == (1, 1, 3)


async def test_monthly_limit(simulator: LineSimulator, api: AsyncMessagingApi) -> None:
    # Two message objects in one push to one user count as one message.
    simulator.set_monthly_quota(2)
    two = PushMessageRequest(to=user_id(), messages=[TextMessage(text="1"), TextMessage(text="2")])
    await api.push_message(two)
    await api.push_message(two)

    with pytest.raises(ApiException) as caught:
        await api.push_message(text_push())
    assert caught.value.status == 429
    assert error_body(caught.value) == {"message": "You have reached your monthly limit."}

    quota = await api.get_message_quota()
    assert (quota.type, quota.value) == ("limited", 2)
    assert (await api.get_message_quota_consumption()).total_usage == 2
    assert simulator.stats().quota_exceeded == 1


async def test_quota_endpoints_default_to_unlimited(api: AsyncMessagingApi) -> None:
    quota = await api.get_message_quota_with_http_info()
    assert quota.status_code == 200
    assert UUID_RE.fullmatch(quota.headers["x-line-request-id"])
    assert quota.data.type == "none"
    assert quota.data.value is None
    assert (await api.get_message_quota_consumption()).total_usage == 0


async def test_retry_key_on_a_read_endpoint_is_rejected(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Line-Retry-Key": retry_key()}
    async with http.get(f"{simulator.base_url}/v2/bot/message/quota", headers=headers) as resp:
        assert resp.status == 400


# --- multicast -------------------------------------------------------------------


async def test_multicast(simulator: LineSimulator, api: AsyncMessagingApi) -> None:
    recipients = [user_id() for _ in range(3)]
    request = MulticastRequest(
        to=recipients, messages=[TextMessage(text="a"), TextMessage(text="b")]
    )
    key = retry_key()
    response = await api.multicast_with_http_info(request, x_line_retry_key=key)
    assert response.status_code == 200
    assert response.raw_data == "{}"

    with pytest.raises(ApiException) as caught:
        await api.multicast(request, x_line_retry_key=key)
    assert caught.value.status == 409
    assert (
        caught.value.headers["x-line-accepted-request-id"] == response.headers["x-line-request-id"]
    )
    assert error_body(caught.value) == {"message": "The retry key is already accepted"}

    [record] = simulator.accepted_pushes()
    assert record.path == MULTICAST_PATH
    assert record.body["to"] == recipients
    stats = simulator.stats()
    assert (stats.accepted_multicasts, stats.accepted_messages, stats.total_usage) == (1, 6, 3)


async def test_multicast_validation(api: AsyncMessagingApi) -> None:
    with pytest.raises(ApiException) as caught:
        await api.multicast(
            MulticastRequest(
                to=[user_id(), "Cgroupsarenotallowedhere000000000", user_id()],
                messages=[TextMessage(text="x")],
            )
        )
    assert caught.value.status == 400
    assert [d["property"] for d in error_body(caught.value)["details"]] == ["to[1]"]

    too_many = MulticastRequest.construct(
        to=[user_id() for _ in range(501)], messages=[TextMessage(text="x")]
    )
    with pytest.raises(ApiException) as caught:
        await api.multicast(too_many)
    assert caught.value.status == 400
    assert error_body(caught.value)["details"] == [
        {"message": "Size must be between 1 and 500", "property": "to"}
    ]


async def test_concurrent_pushes_are_all_accepted(
    simulator: LineSimulator, api: AsyncMessagingApi
) -> None:
    responses = await asyncio.gather(
        *(api.push_message_with_http_info(text_push(str(i))) for i in range(200))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.headers["x-line-request-id"] for r in responses}) == 200
    assert len({r.data.sent_messages[0].id for r in responses}) == 200
    assert simulator.stats().accepted_pushes == 200


# --- control API over HTTP -------------------------------------------------------


async def test_control_api(simulator: LineSimulator, http: aiohttp.ClientSession) -> None:
    base = simulator.base_url
    push_url = f"{base}{PUSH_PATH}"
    body = json.dumps({"to": user_id(), "messages": [{"type": "text", "text": "x"}]}).encode()

    async def faults(spec: dict[str, Any]) -> dict[str, Any]:
        async with http.post(f"{base}/__simulator/faults", json=spec) as resp:
            assert resp.status == 200, await resp.text()
            stats: dict[str, Any] = await resp.json()
            return stats

    stats = await faults({"fail_next": {"count": 1, "status": 503, "message": "maintenance"}})
    assert stats["pending_failures"] == 1
    status, _, answer = await post_json(http, push_url, body)
    assert (status, answer) == (503, {"message": "maintenance"})
    assert (await post_json(http, push_url, body))[0] == 200

    stats = await faults({"delay_next": {"count": 1, "seconds": 0.2}})
    assert stats["pending_delays"] == 1
    started = asyncio.get_running_loop().time()
    assert (await post_json(http, push_url, body))[0] == 200
    assert asyncio.get_running_loop().time() - started >= 0.2

    stats = await faults({"monthly_quota": 1, "rate_limits": {"push": 100}})
    assert (stats["monthly_quota"], stats["push_rate_per_second"]) == (1, 100)
    status, _, answer = await post_json(http, push_url, body)
    assert (status, answer) == (429, {"message": "You have reached your monthly limit."})
    assert (await faults({"monthly_quota": None}))["monthly_quota"] is None

    key = retry_key()
    assert (await post_json(http, push_url, body, key=key))[0] == 200
    assert (await post_json(http, push_url, body, key=key))[0] == 409
    assert (await faults({"advance_clock": RETRY_KEY_TTL_SECONDS + 1}))[
        "clock_offset_seconds"
    ] > RETRY_KEY_TTL_SECONDS
    assert (await post_json(http, push_url, body, key=key))[0] == 200

    async with http.get(f"{base}/__simulator/requests") as resp:
        assert resp.status == 200
        assert "x-line-request-id" in resp.headers
        received = await resp.json()
    assert [r["status"] for r in received] == [503, 200, 200, 429, 200, 409, 200]
    assert received[-1]["retry_key"] == key
    assert received[-1]["body"]["messages"] == [{"type": "text", "text": "x"}]
    async with http.get(f"{base}/__simulator/requests?accepted=1&limit=2") as resp:
        limited = await resp.json()
    assert [r["status"] for r in limited] == [200, 200]
    assert limited[-1]["request_id"] == received[-1]["request_id"]
    async with http.get(f"{base}/__simulator/requests?status=409") as resp:
        assert len(await resp.json()) == 1
    # indented for people by default, one line with ?pretty=0; the same JSON either way
    async with http.get(f"{base}/__simulator/requests?limit=1") as resp:
        text = await resp.text()
    assert text.startswith('[\n  {\n    "method": "POST",\n') and text.endswith("\n]\n")
    async with http.get(f"{base}/__simulator/requests?limit=1&pretty=0") as resp:
        compact = await resp.text()
    assert "\n" not in compact and json.loads(compact) == json.loads(text)

    async with http.get(f"{base}/__simulator/stats") as resp:
        stats = await resp.json()
    assert stats["requests"] == 7
    assert stats["accepted_pushes"] == 4
    assert stats["conflicts"] == 1
    assert stats["quota_exceeded"] == 1
    assert stats["by_status"] == {"200": 4, "409": 1, "429": 1, "503": 1}

    async with http.post(f"{base}/__simulator/faults", json={"fail_next": {"count": -1}}) as resp:
        assert resp.status == 400
    async with http.post(f"{base}/__simulator/faults", json={"surprise": 1}) as resp:
        assert resp.status == 400

    async with http.post(f"{base}/__simulator/reset") as resp:
        stats = await resp.json()
    assert (stats["requests"], stats["recorded"], stats["clock_offset_seconds"]) == (0, 0, 0)
    assert simulator.received == []


async def test_every_response_has_a_request_id(
    simulator: LineSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{simulator.base_url}/v2/bot/no-such-endpoint") as resp:
        assert resp.status == 404
        assert UUID_RE.fullmatch(resp.headers["X-Line-Request-Id"])


# --- foreground server and helpers ------------------------------------------------


async def test_run_serves_until_sigterm(http: aiohttp.ClientSession) -> None:
    code = "from linesim import run; run('127.0.0.1:0', ['cli-token'])"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=15)).decode()
        base_url = line.split()[-1]
        assert base_url.startswith("http://127.0.0.1:")
        body = json.dumps({"to": user_id(), "messages": [{"type": "text", "text": "x"}]}).encode()
        status, _, answer = await post_json(http, f"{base_url}{PUSH_PATH}", body, token="cli-token")
        assert status == 200
        assert len(answer["sentMessages"]) == 1
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        return_code = await asyncio.wait_for(proc.wait(), timeout=10)
    assert return_code == 0


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    for bad in ("9100", "localhost", "host:port", ":9100", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(TypeError):
        LineSimulator(access_tokens="single-token-string")
    with pytest.raises(ValueError):
        LineSimulator(access_tokens=[])
    with pytest.raises(ValueError):
        LineSimulator(access_tokens=[TOKEN], monthly_quota=-1)
