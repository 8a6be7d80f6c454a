"""`router line webhook set|show|test` through the real line-bot-sdk against the simulator,
whose test webhook reaches a running router's /webhooks/line and is verified there.

The command runs in this process (started as a process, its imports alone take seconds)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from linesim import LineSimulator
from router import cli
from tests.harness import LINE_TOKEN, running_router

SECRET = "webhook-endpoint-secret"


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LineSimulator]:
    """A simulator of its own (the shared one's webhook wiring stays untouched), and the
    environment that points the command at it."""
    for name in [k for k in os.environ if k.startswith("ROUTER_")]:
        monkeypatch.delenv(name)
    async with LineSimulator(access_tokens=[LINE_TOKEN], channel_secret=SECRET) as simulator:
        monkeypatch.setenv("ROUTER_LINE_API_BASE", simulator.base_url)
        monkeypatch.setenv("ROUTER_LINE_CHANNEL_ACCESS_TOKEN", LINE_TOKEN)
        yield simulator


async def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, ["line", "webhook", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_set_show_and_test_reach_the_router(
    dsn: str, sim: LineSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(capsys, "show") == (0, "LINE webhook URL: not set\n", "")

    # LINE takes only HTTPS (the simulator also takes http:// to loopback hosts)
    code, out, err = await run(capsys, "set", "http://shop.example.jp/webhooks/line")
    assert (code, out) == (1, "")
    assert err.startswith("router: LINE refused the webhook URL: 400 ")
    assert "HTTPS" in err and len(err.splitlines()) == 1
    assert sim.webhook_url is None
    # another path is taken (a proxy may rewrite it), with a note of where the router listens
    code, out, err = await run(capsys, "set", "https://shop.example.jp/line")
    assert (code, out) == (0, "LINE webhook URL: https://shop.example.jp/line (active)\n")
    assert err == "router: note: the router receives LINE webhooks at /webhooks/line\n"

    async with running_router(dsn, sim.base_url, None, ROUTER_LINE_CHANNEL_SECRET=SECRET) as r:
        url = f"{r.base_url}/webhooks/line"
        line = f"LINE webhook URL: {url} (active)\n"
        assert await run(capsys, "set", url) == (0, line, "")
        assert sim.webhook_url == url
        assert await run(capsys, "show") == (0, line, "")
        put = [(e.path, e.body, e.status) for e in sim.received if e.method == "PUT"]
        assert put[-1] == ("/v2/bot/channel/webhook/endpoint", {"endpoint": url}, 200)

        # the router verifies the signed test webhook and answers 200
        code, out, err = await run(capsys, "test")
        assert (code, err) == (0, "")
        assert out == "LINE's test webhook to the webhook URL: answered 200 (OK)\n"
        sent = sim.sent_webhooks[-1]
        assert sent.url == url and sent.status == 200
        assert sent.payload == {"destination": sim.bot_user_id, "events": []}
        expected = hmac.new(SECRET.encode(), sent.body.encode(), hashlib.sha256).digest()
        assert sent.signature == base64.b64encode(expected).decode()

        # signed with another secret: the router refuses it, and the command says so
        sim.set_webhook(url, "not-the-router-secret")
        code, out, err = await run(capsys, "test")
        assert (code, out) == (1, "")
        assert err == (
            "router: LINE's test webhook to the webhook URL failed:"
            " answered 401, ERROR_STATUS_CODE: 401\n"
        )

    # a URL given to `test` is tried instead of the one set; nothing listens there now
    code, out, err = await run(capsys, "test", url)
    assert (code, out) == (1, "")
    assert err.startswith(f"router: LINE's test webhook to {url} failed: no answer, ")
    assert "COULD_NOT_CONNECT" in err
    assert sim.webhook_url == url


async def test_simulator_answers_in_lines_shapes(sim: LineSimulator) -> None:
    """Shapes of messaging-api.yml: the GET and test answers, LINE's 400 for a bad URL."""
    headers = {"Authorization": f"Bearer {LINE_TOKEN}"}
    endpoint = f"{sim.base_url}/v2/bot/channel/webhook/endpoint"
    async with aiohttp.ClientSession(headers=headers) as http:
        long_url = "https://shop.example.jp/" + "a" * 500
        async with http.put(endpoint, json={"endpoint": long_url}) as resp:
            assert resp.status == 400
            assert await resp.json() == {
                "message": "The request body has 1 error(s)",
                "details": [
                    {"message": "Length must be between 1 and 500", "property": "endpoint"}
                ],
            }
        async with http.post(f"{sim.base_url}/v2/bot/channel/webhook/test") as resp:
            assert resp.status == 400  # nothing set, nothing named
        async with http.put(endpoint, json={"endpoint": "https://shop.example.jp/webhooks/line"}):
            pass
        async with http.get(endpoint) as resp:
            assert await resp.json() == {
                "endpoint": "https://shop.example.jp/webhooks/line",
                "active": True,
            }
        async with http.get(endpoint, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401


async def test_without_an_access_token_nothing_is_asked(
    sim: LineSimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ROUTER_LINE_CHANNEL_ACCESS_TOKEN")
    for args in (["show"], ["set", "https://shop.example.jp/webhooks/line"], ["test"]):
        assert await run(capsys, *args) == (
            2,
            "",
            "router: [line] channel_access_token is not set\n",
        )
    assert sim.received == []


async def test_a_receiver_too_slow_is_reported_as_timeout() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    app = web.Application()
    app.router.add_post("/webhooks/line", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/line"
    try:
        async with (
            LineSimulator(
                access_tokens=[LINE_TOKEN], channel_secret=SECRET, webhook_timeout=0.2
            ) as simulator,
            aiohttp.ClientSession() as http,
            http.post(
                f"{simulator.base_url}/v2/bot/channel/webhook/test",
                json={"endpoint": url},
                headers={"Authorization": f"Bearer {LINE_TOKEN}"},
            ) as resp,
        ):
            answer = await resp.json()
    finally:
        await runner.cleanup()
    assert resp.status == 200
    assert (answer["success"], answer["statusCode"], answer["reason"]) == (
        False,
        0,
        "REQUEST_TIMEOUT",
    )
    assert answer["timestamp"].endswith("Z")
