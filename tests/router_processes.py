"""Router processes for the crash tests: each a real `router serve` on a database of the
test's, started, killed and waited for as an operator would."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO

import asyncpg
import httpx

from tests.harness import API_KEY, DERIVED, LINE_TOKEN, SmtpSink, _free_port


def start_router(
    dsn: str, line_base: str, smtp: SmtpSink, port: int, **extra: str
) -> subprocess.Popen[bytes]:
    env = (
        os.environ
        | {
            "ROUTER_HTTP_LISTEN": f"127.0.0.1:{port}",
            "ROUTER_DATABASE_URL": dsn,
            "ROUTER_API_KEYS": API_KEY,
            "ROUTER_LINE_CHANNEL_ACCESS_TOKEN": LINE_TOKEN,
            "ROUTER_LINE_API_BASE": line_base,
            "ROUTER_EMAIL_HOST": "127.0.0.1",
            "ROUTER_EMAIL_PORT": str(smtp.port),
            "ROUTER_EMAIL_FROM_ADDRESS": "news@shop.example.jp",
            "ROUTER_EMAIL_REQUIRE_CONSENT": "false",
            "ROUTER_WORKERS_LEASE_SECONDS": "2",
            "ROUTER_WORKERS_BACKOFF_BASE_SECONDS": "0.1",
            "ROUTER_WORKERS_CLAIM_SIZE": "50",
        }
        | extra
    )
    # The log goes to an unnamed temporary file: read back by `exit_report` when a test fails.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the process runs)
    process = subprocess.Popen(
        [sys.executable, "-m", "router", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    _LOGS[process.pid] = log
    return process


_LOGS: dict[int, IO[bytes]] = {}


def router_log(process: subprocess.Popen[bytes]) -> str:
    """Everything a router wrote to its stdout and stderr so far."""
    log = _LOGS[process.pid]
    log.seek(0)
    return log.read().decode(errors="replace")


def exit_report(process: subprocess.Popen[bytes], lines: int = 40) -> str:
    """The exit code and the last lines of a router's log, for an assertion's message."""
    tail = router_log(process).splitlines()[-lines:]
    return f"exit code {process.returncode}:\n" + "\n".join(tail)


UNFINISHED = f"SELECT count(*) {DERIVED} WHERE status IN ('pending', 'claimed', 'sending')"


async def finish_with_two_routers(
    conn: asyncpg.Connection,
    dsn: str,
    line_base: str,
    smtp: SmtpSink,
    unfinished: str,
    seconds: float,
    **extra: str,
) -> None:
    """Start two routers on the database and stop them once `unfinished` counts nothing."""
    others = [start_router(dsn, line_base, smtp, _free_port(), **extra) for _ in range(2)]
    try:
        deadline = time.monotonic() + seconds
        while await conn.fetchval(unfinished):
            assert time.monotonic() < deadline, "the routers did not finish the work"
            await asyncio.sleep(0.2)
    finally:
        for p in others:
            p.send_signal(signal.SIGTERM)
        for p in others:
            assert p.wait(timeout=30) == 0, exit_report(p)


async def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=base) as client:
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "router did not start"
            await asyncio.sleep(0.1)


async def add_members_and_intents(base: str, friends: int, mail_only: int) -> None:
    """`friends` members with a LINE user ID and `mail_only` without, one intent each (email
    content: a LINE friend gets a push of its derived text). Each text is the member's own:
    one content for all would go to the friends as LINE multicast, not as pushes."""
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as client:
        people = [
            {"member_id": f"f{i}", "email": f"f{i}@example.jp", "line_user_id": f"U{i:032x}"}
            for i in range(friends)
        ] + [{"member_id": f"e{i}", "email": f"e{i}@example.jp"} for i in range(mail_only)]
        resp = await client.post("/v1/members/batch", json={"members": people})
        assert resp.status_code == 200
        intents = [
            {
                "member_id": p["member_id"],
                "email": {"subject": "Sale", "text": f"Hello {p['member_id']}"},
            }
            for p in people
        ]
        resp = await client.post("/v1/intents/batch", json={"intents": intents})
        assert all(r["status"] == "accepted" for r in resp.json()["results"])
