"""Headless Chromium for the dashboard's tests: Debian's `chromium`, driven by Playwright.

`chromium` is installed with apt-get the first time a test run needs it (as root, under a lock,
so two test processes do not run apt-get at once): in a background thread started at session
start when a collected test uses the `browser` fixture, so the install overlaps the tests that
run first; the fixture waits for it. Where that cannot be done the test fails, it never skips. Playwright's own browser downloads are never used.

Every page opened through `open_page` refuses (and records) any request that would leave
127.0.0.1, and `OffsiteGuard.assert_none` fails the test that made one: the dashboard must
work with no internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
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


def ensure_chromium(
    path: str = CHROMIUM,
    lock_path: str = _INSTALL_LOCK,
    install: Callable[[], None] | None = None,
) -> str:
    """The path of Debian's chromium, installed first (`install`, apt-get by default) if it is
    missing. The lock makes test processes that find it missing install it once: the others
    wait, then find it there. Where it is already there, no lock is taken."""
    if os.path.exists(path):
        return path
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(path):
            (install or _apt_get_install)()
    if not os.path.exists(path):
        raise RuntimeError(f"installing chromium did not make {path}")
    return path


def _apt_get_install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            "the dashboard tests need Debian's chromium: run `apt-get install -y chromium` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
        check=True,
        env=env,
        capture_output=True,
    )


class BackgroundInstall:
    """`ensure_chromium` in a thread of its own, so that a first install (a minute or two on a
    fresh machine) goes on while other tests run; `wait` gives its path or raises its error."""

    def __init__(self, ensure: Callable[[], str] = ensure_chromium) -> None:
        self._ensure = ensure
        self._thread: threading.Thread | None = None
        self._path: str | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the install once; a second call does nothing."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="chromium-install", daemon=True)
            self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _run(self) -> None:
        try:
            self._path = self._ensure()
        except BaseException as exc:  # handed to the test that needs the browser
            self._error = exc

    def wait(self) -> str:
        self.start()
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("chromium could not be installed") from self._error
        assert self._path is not None
        return self._path


# This process's install: started at session start where a collected test uses the browser
# (tests/conftest.py), waited for by the `browser` fixture.
CHROMIUM_INSTALL = BackgroundInstall()


def start_installing_chromium(
    install: BackgroundInstall = CHROMIUM_INSTALL, path: str = CHROMIUM
) -> None:
    """Install chromium in the background unless it is there already (the usual case)."""
    if not os.path.exists(path):
        install.start()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = await asyncio.to_thread(CHROMIUM_INSTALL.wait)
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
