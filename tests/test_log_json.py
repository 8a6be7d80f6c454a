"""`[log] format = "json"`: a real `router serve` writes one JSON object per line, each
line of a request carrying its id, and no address."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx

from tests.harness import API_KEY, SmtpSink, _free_port
from tests.router_processes import exit_report, router_log, start_router, wait_healthy

ADDRESS = "hanako.sato@example.jp"
REQUEST_ID = "order-7f3a:retry.2"


async def test_json_log_lines_carry_the_request_id_and_no_address(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    port = _free_port()
    process = start_router(dsn, line_sim.base_url, smtp, port, ROUTER_LOG_FORMAT="json")
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_healthy(base)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as client:
            resp = await client.post(
                "/v1/intents",
                json={"email_address": ADDRESS, "email": {"subject": "S", "text": "T"}},
                headers={"X-Request-Id": REQUEST_ID},
            )
            assert resp.status_code == 202, resp.text
            assert resp.headers["x-request-id"] == REQUEST_ID
            # Not short and printable: replaced by a fresh id, still echoed.
            refused = await client.get(
                f"/v1/members/{ADDRESS}", headers={"X-Request-Id": "two words"}
            )
            made = refused.headers["x-request-id"]
            assert made != "two words" and len(made) == 32
            anonymous = await client.get("/metrics", headers={"Authorization": ""})
            assert anonymous.status_code == 401 and anonymous.headers["x-request-id"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, exit_report(process)
    lines = [line for line in router_log(process).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line one JSON object
    assert all(
        isinstance(e, dict) and {"time", "level", "logger", "message"} <= e.keys() for e in entries
    )
    ours = [e for e in entries if e.get("request_id") == REQUEST_ID]
    assert ours and "POST /v1/intents 202" in ours[0]["message"], lines
    assert any(e.get("request_id") == made for e in entries)
    assert ADDRESS not in router_log(process)
