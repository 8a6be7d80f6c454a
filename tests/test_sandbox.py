"""Sandbox mode: `router serve --sandbox` as a user runs it, with no other process; the
README's quick start run from its own text; the captured list over HTTP and on the dashboard
in chromium; and what the routes say outside sandbox mode."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, expect

from tests.browser import open_page
from tests.harness import API_KEY, RouterUnderTest, _free_port, router_config, running_router
from tests.router_command import ROOT, ServingRouter, serving_router
from tests.test_cli import router_env
from tests.test_ui_session import anonymous, signed_in

LINE_USER = "U0123456789abcdef0123456789abcdef"


def quick_start_blocks() -> list[str]:
    """The shell blocks of README's quick start that talk to the router (curl)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Five-minute quick start")
    section = readme[start : readme.index("\n## ", start + 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [block for block in blocks if "curl" in block]


def run_block(block: str, port: int, key: str) -> str:
    """One README block in bash, against this router, with `KEY` set as the reader would."""
    script = block.replace("localhost:8080", f"127.0.0.1:{port}")
    done = subprocess.run(
        ["bash", "-euc", script],
        env={"KEY": key, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def wait_for_messages(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60  # a bound for a busy machine, not a speed check
    while True:
        resp = await client.get("/v1/sandbox/messages")
        assert resp.status_code == 200, resp.text
        messages: list[dict[str, Any]] = resp.json()["messages"]
        if len(messages) >= count:
            return messages
        assert time.monotonic() < deadline, f"only {len(messages)} message(s) captured"
        await asyncio.sleep(0.1)


async def test_sandbox_runs_the_quick_start_alone_and_shows_what_was_sent(
    migrated: str, dsn: str, tmp_path: Path, browser: Browser
) -> None:
    """No LINE token, no SMTP server, no simulator process: the README's commands end with
    one LINE push and one email captured, listed, filtered, paged, shown and cleared."""
    port = _free_port()
    env = router_env(ROUTER_DATABASE_URL=dsn, ROUTER_HTTP_LISTEN=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    async with serving_router("--sandbox", env=env, cwd=tmp_path) as router:
        await wait_serving(router, base)
        key = printed_key(router)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as client:
            health = (await client.get("/healthz")).json()
            assert health == {"status": "ok", "database": "ok", "sandbox": True}
            blocks = quick_start_blocks()
            assert len(blocks) == 3, blocks  # members, intents, the sandbox list
            run_block(blocks[0], port, key)
            accepted = json.loads(run_block(blocks[1], port, key))
            assert [r["status"] for r in accepted["results"]] == ["accepted", "accepted"]
            await wait_for_messages(client, 2)
            listed = json.loads(run_block(blocks[2], port, key))["messages"]
            assert [m["channel"] for m in listed] == ["email", "line"] or [
                m["channel"] for m in listed
            ] == ["line", "email"]
            assert listed[0]["id"] > listed[1]["id"]  # newest first
            line = next(m for m in listed if m["channel"] == "line")
            email = next(m for m in listed if m["channel"] == "email")
            assert (line["kind"], line["member_id"], line["recipient"]) == (
                "push",
                "m-1",
                LINE_USER,
            )
            assert line["email"] is None
            assert line["line"]["messages"][0]["type"] == "text"
            assert "20% off until Sunday" in line["line"]["messages"][0]["text"]
            assert (email["kind"], email["member_id"], email["recipient"]) == (
                "smtp",
                "m-2",
                "hanako@example.jp",
            )
            assert email["email"]["subject"] == "Autumn sale"
            assert email["email"]["envelope_from"] == "sandbox@delivery-router.invalid"
            assert "20% off until Sunday" in email["email"]["text"]
            headers = {h["name"].lower(): h["value"] for h in email["email"]["headers"]}
            assert headers["to"] == "hanako@example.jp"
            await check_filters_and_paging(client, line, email)
            await check_dashboard(browser, base, key, client)
            cleared = await client.delete("/v1/sandbox/messages")
            assert cleared.status_code == 200 and cleared.json() == {"removed": 0}
    assert router.process.returncode == 0, router.output  # a clean stop on SIGTERM
    start = "\n".join(router.output)
    assert "SANDBOX MODE: nothing leaves this machine" in start
    assert re.search(r"bundled simulator at http://127\.0\.0\.1:\d+", start), start


async def wait_serving(router: ServingRouter, base: str) -> None:
    """Until /healthz answers; a process that stops first fails the test with its output.
    The bound is generous: importing the router takes seconds on a busy machine."""
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        while True:
            assert router.process.returncode is None, "\n".join(router.output)
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            assert time.monotonic() < deadline, "\n".join(router.output)
            await asyncio.sleep(0.1)


def printed_key(router: ServingRouter) -> str:
    prefix = "API key (shown once, stored only as a hash):"
    key = router.printed(prefix)
    assert key, router.output
    return key


async def check_filters_and_paging(
    client: httpx.AsyncClient, line: dict[str, Any], email: dict[str, Any]
) -> None:
    async def ids(**params: Any) -> tuple[list[int], int | None]:
        resp = await client.get("/v1/sandbox/messages", params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return [m["id"] for m in body["messages"]], body.get("next_before")

    assert await ids(channel="email") == ([email["id"]], None)
    assert await ids(channel="line_notification") == ([], None)
    assert await ids(member_id="m-1") == ([line["id"]], None)
    assert await ids(recipient="hanako@example.jp") == ([email["id"]], None)
    assert await ids(recipient=LINE_USER, channel="email") == ([], None)
    newest, older = sorted([line["id"], email["id"]], reverse=True)
    assert await ids(limit=1) == ([newest], newest)
    assert await ids(limit=1, before=newest) == ([older], None)
    bad = await client.get("/v1/sandbox/messages", params={"channel": "fax", "limit": 0})
    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["errors"]} >= {"channel", "limit"}
    async with httpx.AsyncClient(base_url=str(client.base_url)) as nobody:
        assert (await nobody.get("/v1/sandbox/messages")).status_code == 401


WAIT_MS = 30_000  # how long a locator may take to match on a busy machine


async def check_dashboard(browser: Browser, base: str, key: str, client: httpx.AsyncClient) -> None:
    """Signed in with the printed key, the page shows the LINE bubble; an HTML email sent
    while it is open appears without a reload, its frame showing the HTML but never loading
    a remote image; the clear button empties the list."""
    async with open_page(browser) as (page, guard):
        await page.goto(f"{base}/ui/sandbox")
        await page.fill("input[name=api_key]", key)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base}/ui/sandbox", timeout=WAIT_MS)
        await expect(page.locator(".sandbox-banner")).to_be_visible(timeout=WAIT_MS)
        bubble = page.locator("[data-channel=line] .lp-bubble")
        await expect(bubble).to_contain_text("20% off until Sunday", timeout=WAIT_MS)
        sent = await client.post(
            "/v1/intents",
            json={
                "member_id": "m-2",
                "route": "email_only",
                "email": {
                    "subject": "Preview me",
                    "text": "plain part",
                    "html": '<p>Hello <b id="who">Hanako</b></p>'
                    '<img src="https://tracker.example.com/pixel.gif" alt="">',
                },
            },
        )
        assert sent.status_code == 202, sent.text
        frame = page.frame_locator("[data-channel=email] iframe").first
        await expect(frame.locator("#who")).to_have_text("Hanako", timeout=WAIT_MS)
        await expect(page.locator("[data-channel=email] .email-text").first).to_have_text(
            re.compile("plain part"), timeout=WAIT_MS
        )
        await page.click("form.sandbox-clear button")
        await expect(page.locator(".sandbox-empty")).to_be_visible(timeout=WAIT_MS)
        guard.assert_none()
    assert (await client.get("/v1/sandbox/messages")).json() == {"messages": []}


async def test_outside_sandbox_mode_the_list_is_a_conflict(router: RouterUnderTest) -> None:
    async with httpx.AsyncClient(
        base_url=router.base_url, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        for method in ("GET", "DELETE"):
            resp = await client.request(method, "/v1/sandbox/messages")
            assert resp.status_code == 409, resp.text
            assert resp.headers["content-type"].startswith("application/problem+json")
            assert resp.json()["title"] == "Sandbox mode is off"
            assert "--sandbox" in resp.json()["detail"]
        assert (await client.get("/healthz")).json()["sandbox"] is False
    async with anonymous(router) as ui:
        await signed_in(ui)
        page = await ui.get("/ui/sandbox")
        assert page.status_code == 200
        assert "Sandbox mode is off" in page.text and "sandbox-banner" not in page.text


async def test_sandbox_captures_multicasts_and_notification_messages_with_their_members(
    dsn: str,
) -> None:
    """In-process (no LINE token, no SMTP server configured): a multicast is one entry per
    friend, a LINE notification message names the member of its delivery and the phone's
    hash, never the number."""
    config = router_config(
        dsn,
        None,
        None,
        ROUTER_SANDBOX_ENABLED="true",
        ROUTER_LINE_NOTIFICATION_MESSAGES="true",
    )
    async with running_router(dsn, None, None, config=config) as r:
        assert r.runtime.sandbox is not None and r.runtime.config.line_configured
        members = [
            {"member_id": "f1", "line_user_id": f"U{1:032x}"},
            {"member_id": "f2", "line_user_id": f"U{2:032x}"},
            {"member_id": "p", "phone": "080-1234-5678", "email": "p@example.jp"},
        ]
        resp = await r.client.post("/v1/members/batch", json={"members": members})
        assert resp.status_code == 200, resp.text
        same = {"email": {"subject": "Hello", "text": "to both friends"}}
        resp = await r.client.post(
            "/v1/intents/batch",
            json={
                "intents": [
                    {"member_id": "f1", **same},
                    {"member_id": "f2", **same},
                    {
                        "member_id": "p",
                        "kind": "transactional",
                        "route": "notification_first",
                        "email": {"subject": "Order", "text": "shipped"},
                    },
                    {
                        "member_id": "p",
                        "route": "email_only",
                        "email": {"subject": "News", "html": "<p id='x'>styled</p>"},
                    },
                ]
            },
        )
        assert resp.status_code == 200, resp.text
        captured = await wait_for_messages(r.client, 4)
        await check_email_frame_and_poll(r, captured)
    got = {(m["kind"], m["member_id"], m["recipient"]) for m in captured}
    assert got == {
        ("multicast", "f1", f"U{1:032x}"),
        ("multicast", "f2", f"U{2:032x}"),
        ("notification", "p", hashlib.sha256(b"+818012345678").hexdigest()),
        ("smtp", "p", "p@example.jp"),
    }
    notification = next(m for m in captured if m["kind"] == "notification")
    assert notification["channel"] == "line_notification"
    assert notification["line"]["messages"][0]["text"].endswith("shipped")


async def check_email_frame_and_poll(r: RouterUnderTest, captured: list[dict[str, Any]]) -> None:
    """The HTML part is served alone under its own strict policy; the page's poll returns
    only what is newer than it has."""
    email = next(m for m in captured if m["channel"] == "email")
    line = next(m for m in captured if m["channel"] == "line")
    async with anonymous(r) as ui:
        await signed_in(ui)
        html = await ui.get(f"/ui/sandbox/{email['id']}/email.html")
        assert html.status_code == 200 and "<p id='x'>styled</p>" in html.text
        policy = html.headers["content-security-policy"]
        assert policy.startswith("default-src 'none'; style-src 'unsafe-inline'; img-src data:")
        assert (await ui.get(f"/ui/sandbox/{line['id']}/email.html")).status_code == 404
        newest = max(m["id"] for m in captured)
        older = await ui.get("/ui/sandbox/newer", params={"after": newest - 1})
        assert older.text.count('class="sandbox-message"') == 1
        assert f'after={newest}"' in older.text
        none = await ui.get("/ui/sandbox/newer", params={"after": newest})
        assert "sandbox-message" not in none.text and f'after={newest}"' in none.text
