"""Exceptions reach the log as class, SQLSTATE and frames, never as their message: messages
quote values, and addresses must not reach the log."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import pytest

from router.log_safety import describe, frames
from tests.harness import SmtpSink, running_router

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
