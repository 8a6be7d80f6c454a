"""A database outage at the HTTP layer: 503 with Retry-After on every front door, then 2xx
again once PostgreSQL is back, without restarting the router.

The router runs against a PostgreSQL of its own (pgserver's binaries, a data directory of this
test), which the test stops with `pg_ctl stop -m fast` and starts again.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pgserver
import pytest
from pgserver._commands import pg_ctl

from router.database import migrate
from tests.harness import SmtpSink, running_router

EMAIL = {"subject": "Autumn sale", "text": "20% off until Sunday"}
MAIL_SEND = {
    "personalizations": [{"to": [{"email": "taro@example.jp"}]}],
    "from": {"email": "news@shop.example.jp"},
    "subject": "Autumn sale",
    "content": [{"type": "text/plain", "value": "20% off"}],
}
POSTBACK = {
    "subject": "Autumn sale",
    "body": "20% off",
    "content_type": "plain",
    "recipients": [{"uuid": "5d3e2c1a-0000-4000-8000-000000000001", "email": "taro@example.jp"}],
}


@dataclass
class SeparatePostgres:
    """A PostgreSQL server this test may stop and start."""

    server: Any

    @property
    def dsn(self) -> str:
        uri: str = self.server.get_uri()
        return uri

    def stop(self) -> None:
        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()  # same data directory, same socket: same DSN


@pytest.fixture
def separate_postgres() -> Iterator[SeparatePostgres]:
    with tempfile.TemporaryDirectory(prefix="router-outage-pg-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            yield SeparatePostgres(server)
        finally:
            server.cleanup()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collected_logs(*names: str) -> Iterator[list[logging.LogRecord]]:
    """Records of these loggers (Litestar replaces the root logger's handlers at start-up)."""
    collect = Collect()
    for name in names:
        logging.getLogger(name).addHandler(collect)
    try:
        yield collect.records
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(collect)


def assert_problem_503(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"].isdigit()
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == 503 and body["title"] == "Service unavailable"
    assert "database" in body["detail"]


async def test_an_outage_answers_503_with_retry_after_and_heals_without_restart(
    separate_postgres: SeparatePostgres, smtp: SmtpSink
) -> None:
    await migrate(separate_postgres.dsn)
    async with running_router(
        separate_postgres.dsn, None, smtp, ROUTER_WORKERS_ENABLED="false"
    ) as router:
        client = router.client
        resp = await client.put("/v1/members/m-1", json={"email": "taro@example.jp"})
        assert resp.status_code == 201, resp.text

        separate_postgres.stop()
        with collected_logs("router", "asyncpg") as records:
            answers = {
                "put member": await client.put("/v1/members/m-2", json={"email": "a@example.jp"}),
                "get member": await client.get("/v1/members/m-1"),
                "erase member": await client.delete("/v1/members/m-1"),
                "member batch": await client.post(
                    "/v1/members/batch", json={"members": [{"member_id": "m-3"}]}
                ),
                "intent": await client.post(
                    "/v1/intents", json={"member_id": "m-1", "email": EMAIL}
                ),
                "intent batch": await client.post(
                    "/v1/intents/batch", json={"intents": [{"member_id": "m-1", "email": EMAIL}]}
                ),
                "listmonk": await client.post("/v1/compat/listmonk", json=POSTBACK),
            }
            for name, resp in answers.items():
                assert resp.status_code == 503, f"{name}: {resp.status_code} {resp.text}"
                assert_problem_503(resp)

            resp = await client.post("/v3/mail/send", json=MAIL_SEND)
            assert resp.status_code == 503, resp.text
            assert resp.headers["retry-after"].isdigit()
            (error,) = resp.json()["errors"]
            assert "database" in error["message"]
            assert (await client.get("/healthz")).status_code == 503

        # One warning line per request, no traceback, nothing logged as an error.
        ours = [r for r in records if r.name.startswith("router")]
        outages = [r for r in ours if "database unavailable" in r.getMessage()]
        assert len(outages) == len(answers) + 1, [r.getMessage() for r in ours]
        assert all(r.levelno == logging.WARNING and r.exc_info is None for r in outages)
        assert not [r for r in ours if r.levelno >= logging.ERROR]
        # asyncpg's pool, retrying its connections, says so in one line too.
        assert not [r for r in records if r.exc_info], [r.getMessage() for r in records]

        separate_postgres.start()
        deadline = time.monotonic() + 30
        while (resp := await client.get("/v1/members/m-1")).status_code == 503:
            assert time.monotonic() < deadline, "still 503 30 s after PostgreSQL came back"
        assert resp.status_code == 200, resp.text
        resp = await client.put("/v1/members/m-2", json={"email": "hanako@example.jp"})
        assert resp.status_code == 201, resp.text
        resp = await client.post("/v1/intents", json={"member_id": "m-2", "email": EMAIL})
        assert resp.status_code == 202, resp.text
        resp = await client.post("/v3/mail/send", json=MAIL_SEND)
        assert resp.status_code == 202, resp.text
        resp = await client.post("/v1/compat/listmonk", json=POSTBACK)
        assert resp.status_code == 200, resp.text
