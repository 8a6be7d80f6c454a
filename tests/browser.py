"""Headless Chromium for the dashboard's tests: Debian's `chromium`, driven by Playwright.

`chromium` is installed with apt-get the first time a test needs it (as root, under a lock, so
two test processes do not run apt-get at once); where that cannot be done the test fails, it
never skips. Playwright's own browser downloads are never used.

Every page opened through `open_page` refuses (and records) any request that would leave
127.0.0.1, and `OffsiteGuard.assert_none` fails the test that made one: the dashboard must
work with no internet.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright

from tests.harness import API_KEY

CHROMIUM = "/usr/bin/chromium"
_INSTALL_LOCK = "/tmp/delivery-router-chromium.lock"
LOCAL_SCHEMES = frozenset({"data", "blob", "about"})
LOCAL_HOSTS = frozenset({"127.0.0.1"})
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def ensure_chromium() -> str:
    """The path of Debian's chromium, installed first if it is missing."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            "the dashboard tests need Debian's chromium: run `apt-get install -y chromium` as root"
        )
    with open(_INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(CHROMIUM):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
                check=True,
                env=env,
                capture_output=True,
            )
    return CHROMIUM


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = ensure_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class OffsiteGuard:
    """Requests a page tried to make to anywhere but 127.0.0.1 (each was refused)."""

    refused: list[str] = field(default_factory=list)

    async def route(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in LOCAL_SCHEMES or parts.hostname in LOCAL_HOSTS:
            await route.continue_()
        else:
            self.refused.append(url)
            await route.abort("blockedbyclient")

    def assert_none(self) -> None:
        assert not self.refused, f"the page tried to leave 127.0.0.1: {self.refused}"


@contextlib.asynccontextmanager
async def open_page(browser: Browser) -> AsyncIterator[tuple[Page, OffsiteGuard]]:
    """A fresh browser context (no cookies) and page, guarded; fails on any offsite request."""
    guard = OffsiteGuard()
    context: BrowserContext = await browser.new_context()
    await context.route("**/*", guard.route)
    page = await context.new_page()
    try:
        yield page, guard
    finally:
        await context.close()
    guard.assert_none()


async def sign_in(page: Page, base_url: str, next_path: str = "/ui") -> None:
    """Open `next_path`, which redirects to the login form, and sign in with the test key."""
    await page.goto(f"{base_url}{next_path}")
    await page.fill("input[name=api_key]", API_KEY)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base_url}{next_path}*")
