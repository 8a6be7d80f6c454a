"""Test harness: the router on a real socket, and a real SMTP server that records mail."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from linesim import LineChannel, LineSimulator
from router.api.app import create_app
from router.config import Config, load_config
from router.service import Runtime, start_runtime

API_KEY = "test-api-key"
LINE_TOKEN = "test-channel-access-token"

# Deliveries as they are seen: one made inside a send group ('grouped') has its group's status
# and LINE request id. DERIVED_ROWS is a subquery; use DERIVED as "SELECT ... {DERIVED} WHERE".
DERIVED_ROWS = """(
    SELECT d.id, d.intent_id, d.channel, d.address, d.send_group_id,
           CASE WHEN d.status = 'grouped' THEN s.status ELSE d.status END AS status,
           CASE WHEN d.status = 'grouped' THEN s.provider_ref ELSE d.provider_ref END
               AS provider_ref
    FROM deliveries d LEFT JOIN send_groups s ON s.id = d.send_group_id)"""
DERIVED = f"FROM {DERIVED_ROWS} AS deliveries"


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    accepted_at: float = 0.0  # time.monotonic() when the 250 was given

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)


@dataclass
class _Handler:
    mails: list[ReceivedMail] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    refusals: dict[str, str] = field(default_factory=dict)  # address -> reply to its RCPT
    sessions: int = 0
    data_seconds: float = 0.0  # how long the end of DATA waits for its 250
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            reply = self.rcpt_replies.pop(0) if self.rcpt_replies else None
            reply = self.refusals.get(address, reply)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        if self.data_seconds:
            await asyncio.sleep(self.data_seconds)
        with self.lock:
            self.mails.append(
                ReceivedMail(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    bytes(data),
                    accepted_at=time.monotonic(),
                )
            )
        return "250 Message accepted for delivery"


class SmtpSink:
    """aiosmtpd on a free loopback port; `rcpt_replies` queues replies such as '451 busy'."""

    def __init__(self) -> None:
        self.handler = _Handler()
        self.port = _free_port()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def reset(self) -> None:
        with self.handler.lock:
            self.handler.mails.clear()
            self.handler.rcpt_replies.clear()
            self.handler.refusals.clear()
            self.handler.sessions = 0
            self.handler.data_seconds = 0.0

    @property
    def mails(self) -> list[ReceivedMail]:
        with self.handler.lock:
            return list(self.handler.mails)

    @property
    def sessions(self) -> int:
        """SMTP sessions opened (EHLO count) since the last reset."""
        with self.handler.lock:
            return self.handler.sessions

    def answer_data_after(self, seconds: float) -> None:
        """Accept each message only `seconds` after its data has arrived (a slow server)."""
        with self.handler.lock:
            self.handler.data_seconds = seconds

    def fail_next_rcpt(self, *replies: str) -> None:
        with self.handler.lock:
            self.handler.rcpt_replies.extend(replies)

    def refuse(self, address: str, reply: str) -> None:
        """Answer every RCPT of `address` with `reply`, whatever order deliveries come in."""
        with self.handler.lock:
            self.handler.refusals[address] = reply


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def router_config(dsn: str, line_base: str | None, smtp: SmtpSink | None, **env: str) -> Config:
    values = {
        "ROUTER_DATABASE_URL": dsn,
        "ROUTER_API_KEYS": API_KEY,
        "ROUTER_WORKERS_BACKOFF_BASE_SECONDS": "0.05",
        "ROUTER_WORKERS_BACKOFF_MAX_SECONDS": "0.2",
        "ROUTER_WORKERS_CONCURRENCY": "2",
        "ROUTER_DATABASE_POOL_SIZE": "6",
        "ROUTER_SMTP_INGRESS_LISTEN": "",
        # Consent has tests of its own (tests/test_consent.py); the others send promotional
        # mail to members they make without recording one.
        "ROUTER_EMAIL_REQUIRE_CONSENT": "false",
    }
    if line_base is not None:
        values |= {
            "ROUTER_LINE_CHANNEL_ACCESS_TOKEN": LINE_TOKEN,
            "ROUTER_LINE_API_BASE": line_base,
            "ROUTER_LINE_TIMEOUT_SECONDS": "2",
        }
    if smtp is not None:
        values |= {
            "ROUTER_EMAIL_HOST": "127.0.0.1",
            "ROUTER_EMAIL_PORT": str(smtp.port),
            "ROUTER_EMAIL_FROM_ADDRESS": "news@shop.example.jp",
        }
    values |= env
    return load_config(None, values)


class PromptServer(uvicorn.Server):
    """uvicorn's server that stops as soon as asked: uvicorn looks at `should_exit` every
    0.1 s and, stopping, waits a fixed 0.1 s before it polls its connections every 0.1 s,
    about 0.15 s of every test that starts a router. Here the same steps, each taken as soon
    as what it waits for has happened."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop_asked = asyncio.Event()

    def stop(self) -> None:
        """Ask the server to stop (as `should_exit = True` does), waking its loop now."""
        self.should_exit = True
        self._stop_asked.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_asked.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        # Answers still being written finish (as uvicorn waits for them, without a limit).
        while self.server_state.connections or self.server_state.tasks:
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


@dataclass
class RouterUnderTest:
    runtime: Runtime
    base_url: str
    client: httpx.AsyncClient

    def set_clock(self, at: datetime) -> None:
        """Journeys read `at` from now on (going on at real pace), and due steps fire."""
        self.runtime.clock.set(at)
        if self.runtime.journey_timers is not None:
            self.runtime.journey_timers.kick()

    async def intent(self, intent_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/intents/{intent_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def wait_for(
        self, intent_id: str, statuses: Iterable[str] = ("delivered",), timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll the public API until the intent reaches one of `statuses`."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        body = await self.intent(intent_id)
        while body["status"] not in wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"intent {intent_id} stuck: {body}")
            await asyncio.sleep(0.05)
            body = await self.intent(intent_id)
        return body


@contextlib.asynccontextmanager
async def running_router(
    dsn: str,
    line_base: str | None,
    smtp: SmtpSink | None,
    config: Config | None = None,
    **env: str,
) -> AsyncIterator[RouterUnderTest]:
    """Start runtime and HTTP server on a free port; stop both afterwards."""
    config = config or router_config(dsn, line_base, smtp, **env)
    runtime = await start_runtime(config)
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose protocol says TCP, and
    # without it every answer written in two parts waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = PromptServer(uvicorn.Config(create_app(runtime), log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:
        try:
            yield RouterUnderTest(runtime, base, client)
        finally:
            server.stop()
            await task
            await runtime.aclose()


def line_channel(
    simulator: LineSimulator, name: str, token: str, *, channel_secret: str | None = None
) -> LineChannel:
    """The session simulator's LINE channel `name` under `token`, added on first use.

    `reset()` keeps channels, so tests of several accounts share the session's simulator:
    each asks for the channel it needs and gets the same one every time.
    """
    try:
        channel = simulator.channel(name)
    except KeyError:
        return simulator.add_channel(name, access_tokens=[token], channel_secret=channel_secret)
    if token not in channel.access_tokens:
        raise ValueError(f"the simulator's channel {name!r} takes another token")
    return channel
