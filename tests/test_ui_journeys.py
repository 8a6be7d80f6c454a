"""The dashboard's journeys page over plain HTTP: after driving a journey, its steps show the
counts the runs in PostgreSQL hold."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from router.journeys import timing
from tests.harness import SmtpSink, running_router
from tests.journey_helpers import add_event, add_member, put_journey, runs, steps, until
from tests.test_ui_session import anonymous, signed_in

DEFINITION: dict[str, Any] = {
    "name": "Welcome",
    "trigger": {"event": "signed_up"},
    "quiet_hours": None,
    "steps": [
        {"send": {"email": {"subject": "Welcome", "text": 'Your code: {{ coupon("welcome") }}'}}},
        {"if": {"attribute": "vip"}, "then": [{"exit": "vip"}]},
        {"wait": "P1D"},
        {"send": {"email": {"subject": "Day two", "text": "Hello again"}}},
    ],
}


def figures(html: str, attribute: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(rf'{attribute}="([^"]+)">(\d+)<', html)}


async def test_journey_page_counts_equal_the_runs(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(dsn, None, smtp) as router:
        pool = await router.client.put("/v1/coupon-pools/welcome", json={"name": "Welcome codes"})
        assert pool.status_code in (200, 201), pool.text
        codes = await router.client.post(
            "/v1/coupon-pools/welcome/codes", json={"codes": ["A1", "A2", "A3"]}
        )
        assert codes.status_code in (200, 201), codes.text
        await put_journey(router.client, "welcome", DEFINITION)
        await add_member(router, "vip-1", attributes={"vip": True})
        await add_member(router, "m-2")
        await add_member(router, "m-3")
        for member in ("vip-1", "m-2", "m-3"):
            await add_event(router.client, member, "signed_up")

        async def settled() -> list[Any]:
            found = await runs(dsn, "welcome")
            at_wait = [r for r in found if r["status"] == "active" and r["position"] != [0]]
            exited = [r for r in found if r["status"] == "exited"]
            return found if len(found) == 3 and len(at_wait) == 2 and exited else []

        found = await until(settled)
        waiting = Counter(timing.label(r["position"]) for r in found if r["status"] == "active")
        sent = Counter(s["step"] for s in await steps(dsn, "welcome") if s["outcome"] == "sent")
        statuses = Counter(r["status"] for r in found)

        async with anonymous(router) as client:
            await signed_in(client)
            page = await client.get("/ui/journeys")
        assert page.status_code == 200, page.text
        html = page.text
        assert figures(html, "data-total") == {
            "entered": 3,
            "active": statuses["active"],
            "completed": statuses["completed"],
            "exited": statuses["exited"],
            "exited_by_goal": 0,
            "ended": 0,
        }
        shown = re.findall(r'data-step="([^"]+)" data-waiting="(\d+)" data-sent="(\d+)"', html)
        assert [label for label, _, _ in shown] == [
            "steps[0]",
            "steps[1]",
            "steps[1].then[0]",
            "steps[2]",
            "steps[3]",
        ]
        assert {label: int(n) for label, n, _ in shown} == {
            label: waiting[label] for label, _, _ in shown
        }
        assert {label: int(n) for label, _, n in shown} == {
            label: sent[label] for label, _, _ in shown
        }
        assert sent["steps[0]"] == 3 and sum(waiting.values()) == 2
        assert "event signed_up" in html and "coupon welcome" in html and "exit (vip)" in html
        for member in ("vip-1", "m-2", "m-3"):
            assert f'href="/ui/members/{member}"' in html
