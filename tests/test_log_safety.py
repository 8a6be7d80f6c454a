"""Exceptions reach the log as class, SQLSTATE and frames, never as their message: messages
quote values, and addresses must not reach the log."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import Any

import aiosmtplib
import asyncpg
import httpx
import pytest

from router.log_safety import SafeFormatter, describe, frames
from tests.harness import API_KEY, SmtpSink, _free_port, running_router
from tests.router_processes import exit_report, router_log, start_router, wait_healthy
from tests.test_smtp_ingress import HASHED, PASSWORD, USER, campaign, wait_until

ADDRESS = "taro.yamada@example.jp"


async def test_a_postgres_error_quoting_a_value_is_described_without_it(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.fetchval("SELECT $1::text::uuid", ADDRESS)
    finally:
        await conn.close()
    assert ADDRESS in str(caught.value)  # what a naive log line would have carried
    assert describe(caught.value) == "InvalidTextRepresentationError [SQLSTATE 22P02]"
    assert "fetchval" in frames(caught.value) and ADDRESS not in frames(caught.value)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_an_unexpected_error_in_a_dispatch_loop_logs_no_address(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    collect = Collect()
    logging.getLogger("router").addHandler(collect)
    try:
        await dispatch_with_a_bug(dsn, line_sim, smtp)
    finally:
        logging.getLogger("router").removeHandler(collect)
    errors = [rec for rec in collect.records if "dispatch loop error" in rec.getMessage()]
    assert errors and "RuntimeError" in errors[0].getMessage()
    assert "broken" in errors[0].getMessage()  # the frame where it was raised
    for record in collect.records:
        assert ADDRESS not in record.getMessage() and not record.exc_info


async def dispatch_with_a_bug(dsn: str, line_sim: Any, smtp: SmtpSink) -> None:
    async with running_router(dsn, line_sim.base_url, smtp) as r:
        channel = r.runtime.channels["email"]
        calls = 0

        async def broken(batch: Any) -> Any:
            nonlocal calls
            calls += 1
            raise RuntimeError(f"could not format a message for {batch[0].address}")

        channel.send = broken  # type: ignore[method-assign]
        resp = await r.client.post(
            "/v1/intents", json={"email_address": ADDRESS, "email": {"subject": "S", "text": "T"}}
        )
        assert resp.status_code == 202, resp.text
        deadline = time.monotonic() + 10
        while not calls:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)


async def test_log_lines_escape_control_characters(dsn: str, smtp: SmtpSink) -> None:
    """Whatever a client put in a path or a field, a log line stays one line of text."""
    async with running_router(dsn, None, smtp):
        # Litestar sets up the root logger when the app starts; its handlers use our format.
        formatters = [h.formatter for h in logging.getLogger().handlers]
        assert formatters and all(isinstance(f, SafeFormatter) for f in formatters)
    record = logging.LogRecord(
        "router.api", logging.WARNING, __file__, 1, "member %s: %s", ("a\x00b", "x\ny\u2028"), None
    )
    try:
        raise ValueError("bad\x00value\r")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = SafeFormatter().format(record)
    assert "\x00" not in line and "\r" not in line and "\u2028" not in line
    first, *traceback_lines = line.split("\n")
    assert first.endswith("router.api: member a\\x00b: x\\x0ay\\u2028")
    assert traceback_lines[0] == "Traceback (most recent call last):"
    assert traceback_lines[-1] == "ValueError: bad\\x00value\\x0d"


async def test_a_relayed_message_leaves_no_address_in_what_router_serve_writes(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    """aiosmtpd logs every command it reads, envelope addresses included, at INFO."""
    sender, member = "shop.sender@example.jp", ADDRESS
    port, ingress_port = _free_port(), _free_port()
    router = start_router(
        dsn,
        line_sim.base_url,
        smtp,
        port,
        ROUTER_SMTP_INGRESS_LISTEN=f"127.0.0.1:{ingress_port}",
        ROUTER_SMTP_INGRESS_USERS=f"{USER}:{HASHED}",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_healthy(base)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as client:
            resp = await client.put("/v1/members/taro", json={"email": member})
            assert resp.status_code in (200, 201), resp.text
        relay = aiosmtplib.SMTP(hostname="127.0.0.1", port=ingress_port, start_tls=False)
        await relay.connect()
        await relay.login(USER, PASSWORD)
        await relay.sendmail(sender, [member], campaign([member]))
        await relay.quit()
        await wait_until(lambda: len(smtp.mails) == 1)
    finally:
        router.send_signal(signal.SIGTERM)
        assert router.wait(timeout=30) == 0, exit_report(router)
    written = router_log(router)
    assert "smtp ingress: listening on" in written  # what it writes is what is read here
    assert sender not in written and member not in written, written
