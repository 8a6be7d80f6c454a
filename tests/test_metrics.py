"""`GET /metrics` over HTTP after real sends: an email to the SMTP sink, a LINE push to the
simulator, and the batch door."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import RouterUnderTest, SmtpSink

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana-dashboard.json"
FRIEND = "U" + "b" * 32
MESSAGE = {"subject": "Winter sale", "text": "30% off until Friday."}


async def scrape(r: RouterUnderTest) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await r.client.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_sends_through_line_and_email(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    line_sim.set_monthly_quota(1000)
    before = await scrape(router)
    for member, fields in (
        ("mail-only", {"email": "yuki@example.jp"}),
        ("friend", {"line_user_id": FRIEND}),
        ("both", {"line_user_id": "U" + "c" * 32, "email": "ren@example.jp"}),
    ):
        resp = await router.client.put(f"/v1/members/{member}", json=fields)
        assert resp.status_code in (200, 201), resp.text
    # LINE refuses the push for good: the intent falls back to email.
    line_sim.fail_next(1, 400)
    refused = await router.client.post("/v1/intents", json={"member_id": "both", "email": MESSAGE})
    assert refused.status_code == 202, refused.text
    await router.wait_for(refused.json()["id"])
    single = await router.client.post(
        "/v1/intents", json={"member_id": "mail-only", "email": MESSAGE}
    )
    assert single.status_code == 202, single.text
    batch = await router.client.post(
        "/v1/intents/batch",
        json={
            "intents": [
                {"member_id": "friend", "line": {"messages": [{"type": "text", "text": "hi"}]}}
            ]
        },
    )
    assert batch.status_code in (200, 207), batch.text
    (line_intent,) = batch.json()["results"]
    await router.wait_for(single.json()["id"])
    await router.wait_for(line_intent["id"])
    after = await scrape(router)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("router_intents_accepted_total", door="api") == 2
    assert moved("router_intents_accepted_total", door="batch") == 1
    assert moved("router_intents_accepted_total", door="smtp") == 0
    assert moved("router_deliveries_total", channel="email", outcome="sent") == 2
    assert moved("router_deliveries_total", channel="line", outcome="sent") == 1
    assert moved("router_deliveries_total", channel="line", outcome="failed") == 1
    assert moved("router_fallbacks_total", channel="line") == 1
    assert moved("router_fallbacks_total", channel="email") == 0
    push = "/v2/bot/message/push"
    assert moved("router_line_request_seconds_count", path=push, status="400") == 1
    assert moved("router_smtp_send_seconds_count", status="250") == 2
    assert (
        moved("router_line_request_seconds_count", path="/v2/bot/message/push", status="200") == 1
    )
    assert (
        moved(
            "router_line_request_seconds_bucket",
            path="/v2/bot/message/push",
            status="200",
            le="+Inf",
        )
        == 1
    )
    # Read at scrape time: nothing is left due once both were sent.
    assert value(after, "router_queue_due", queue="deliveries:email") == 0
    assert ("router_queue_oldest_due_seconds", (("queue", "send_groups:line"),)) in after
    assert ("router_queue_due", (("queue", "send_groups:email"),)) not in after  # no groups
    assert value(after, "router_campaigns", status="sending") == 0
    assert ("router_journey_runs_active", ()) in after
    assert (
        value(after, "router_line_quota_remaining") == 999
    )  # the quota less the one push LINE took
    # Every series the Grafana dashboard queries is one this router serves.
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"router_[a-z_]+", target["expr"])
    }
    served = {name for name, _ in after}
    assert len(queried) >= 10 and queried <= served, queried - served


async def test_metrics_need_the_api_key(router: RouterUnderTest) -> None:
    async with httpx.AsyncClient(base_url=router.base_url) as anonymous:
        resp = await anonymous.get("/metrics")
    assert resp.status_code == 401
    schema = await router.client.get("/schema/openapi.json")
    assert "/metrics" not in schema.json()["paths"]
