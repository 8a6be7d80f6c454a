"""The dashboard's door: the login form, the session cookie, CSRF, and pages that never reach
past 127.0.0.1, through real HTTP and headless chromium."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from playwright.async_api import Browser

from router import api_keys
from tests.browser import open_page, sign_in
from tests.harness import API_KEY, RouterUnderTest


def anonymous(router: RouterUnderTest) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=router.base_url, follow_redirects=False, timeout=10)


async def signed_in(client: httpx.AsyncClient, key: str = API_KEY) -> str:
    """Sign in over plain HTTP; the CSRF token as the overview page carries it."""
    resp = await client.post("/ui/login", data={"api_key": key, "next": "/ui"})
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/ui"
    page = await client.get("/ui")
    assert page.status_code == 200, page.text
    marker = 'name="csrf_token" value="'
    start = page.text.index(marker) + len(marker)
    return page.text[start : page.text.index('"', start)]


async def test_every_page_needs_a_session_and_static_files_do_not(
    router: RouterUnderTest,
) -> None:
    async with anonymous(router) as client:
        resp = await client.get("/ui")
        assert resp.status_code == 303
        assert resp.headers["location"] == "/ui/login?next=/ui"
        deep = await client.get("/ui?since=7d")
        assert deep.status_code == 303
        assert deep.headers["location"] == "/ui/login?next=/ui%3Fsince%3D7d"
        htmx = await client.get("/ui", headers={"HX-Request": "true"})
        assert htmx.status_code == 401 and htmx.headers["hx-redirect"].startswith("/ui/login")
        form = await client.get("/ui/login")
        assert form.status_code == 200 and 'name="api_key"' in form.text
        assert "default-src 'self'" in form.headers["content-security-policy"]
        script = await client.get("/ui/static/htmx.min.js")
        assert script.status_code == 200 and "htmx" in script.text


async def test_login_sets_a_strict_http_only_cookie_and_refuses_a_wrong_key(
    router: RouterUnderTest,
) -> None:
    async with anonymous(router) as client:
        wrong = await client.post("/ui/login", data={"api_key": "not-a-key"})
        assert wrong.status_code == 401
        assert "That API key is not valid." in wrong.text
        assert "set-cookie" not in wrong.headers
        outside = await client.post(
            "/ui/login", data={"api_key": API_KEY, "next": "https://elsewhere.example/"}
        )
        assert outside.status_code == 303 and outside.headers["location"] == "/ui"
        cookie = outside.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/ui" in cookie
        assert API_KEY not in cookie
        assert (await client.get("/ui")).status_code == 200
        client.cookies.set("router_ui", client.cookies["router_ui"][:-2] + "xx", path="/ui")
        assert (await client.get("/ui")).status_code == 303


async def test_unsafe_requests_need_the_csrf_token_and_the_same_origin(
    router: RouterUnderTest,
) -> None:
    async with anonymous(router) as client:
        token = await signed_in(client)
        missing = await client.post("/ui/logout", data={})
        assert missing.status_code == 403 and "CSRF" in missing.text
        # Another last character (the token is base64url: it may end in "A" itself).
        altered = token[:-1] + ("B" if token.endswith("A") else "A")
        wrong = await client.post("/ui/logout", data={"csrf_token": altered})
        assert wrong.status_code == 403
        foreign = await client.post(
            "/ui/logout",
            data={"csrf_token": token},
            headers={"Origin": "https://attacker.example"},
        )
        assert foreign.status_code == 403
        assert (await client.get("/ui")).status_code == 200  # still signed in
        out = await client.post(
            "/ui/logout", data={"csrf_token": token}, headers={"Origin": router.base_url}
        )
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert (await client.get("/ui")).status_code == 303


async def test_revoking_a_key_ends_its_sessions(router: RouterUnderTest) -> None:
    async with router.runtime.pool.acquire() as conn:
        key_id, key = await api_keys.create(conn, "dashboard")
    async with anonymous(router) as client:
        await signed_in(client, key)
        async with router.runtime.pool.acquire() as conn:
            assert await api_keys.revoke(conn, key_id)
        deadline = time.monotonic() + 5
        while (await client.get("/ui")).status_code == 200:
            assert time.monotonic() < deadline, "the revoked key's session still works"
            await asyncio.sleep(0.2)


async def test_sign_in_in_chromium(router: RouterUnderTest, browser: Browser) -> None:
    async with open_page(browser) as (page, _guard):
        await sign_in(page, router.base_url)
        assert await page.text_content("h1") == "Overview"
        nav: Any = await page.locator("nav a").all_text_contents()
        assert "Campaigns" in nav and "Sandbox" in nav
