"""The dashboard's overview: figures that equal what the router sent through the LINE simulator
and the SMTP sink, LINE's month priced under each plan, and the page in chromium."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from router import line_plans
from tests.browser import open_page, sign_in
from tests.harness import RouterUnderTest, SmtpSink
from tests.test_ui_session import anonymous, signed_in

FRIEND = "U" + "0" * 31 + "1"
OTHER_FRIEND = "U" + "0" * 31 + "2"
MAIL = {"subject": "Autumn sale", "text": "20% off until Sunday."}


def row_figures(html: str, attribute: str, key: str) -> dict[str, str]:
    """The `data-figure` cells of the table row marked `attribute="key"`."""
    match = re.search(rf'<tr {attribute}="{re.escape(key)}">(.*?)</tr>', html, re.S)
    assert match is not None, f"no row {attribute}={key}"
    return dict(re.findall(r'data-figure="([a-z]+)">([^<]*)', match.group(1)))


def titled(svg: str, channel: str) -> int:
    """The deliveries the chart's bars of `channel` say they show, summed."""
    return sum(int(n) for n in re.findall(rf"<title>{channel}: (\d+) deliveries", svg))


async def send(router: RouterUnderTest, member_id: str, **fields: Any) -> str:
    resp = await router.client.put(f"/v1/members/{member_id}", json=fields)
    assert resp.status_code in (200, 201), resp.text
    resp = await router.client.post("/v1/intents", json={"member_id": member_id, "email": MAIL})
    assert resp.status_code == 202, resp.text
    intent_id: str = resp.json()["id"]
    return intent_id


async def send_three(router: RouterUnderTest, line_sim: Any) -> None:
    """LINE refuses the first push for good (its email fallback is sent), the second goes by
    LINE, the third by email: 3 intents, LINE 2 deliveries (1 failed), email 2 (1 fallback)."""
    line_sim.set_monthly_quota(1000)
    line_sim.fail_next(1, status=400, message="The request body has 1 error(s)")
    fell_back = await send(router, "fell-back", email="fb@example.jp", line_user_id=FRIEND)
    body = await router.wait_for(fell_back)
    assert {d["channel"]: d["status"] for d in body["deliveries"]} == {
        "line": "failed",
        "email": "sent",
    }
    on_line = await send(router, "on-line", email="ol@example.jp", line_user_id=OTHER_FRIEND)
    by_mail = await send(router, "by-mail", email="bm@example.jp")
    await router.wait_for(on_line)
    await router.wait_for(by_mail)


async def test_overview_figures_equal_what_was_sent(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await send_three(router, line_sim)
    assert len(smtp.mails) == 2 and len(line_sim.accepted_pushes()) == 1
    async with anonymous(router) as client:
        await signed_in(client)
        page = await client.get("/ui")
        assert page.status_code == 200
        html = page.text
        assert "(3 intents)" in html
        assert row_figures(html, "data-channel", "line") == {
            "deliveries": "2",
            "sent": "1",
            "failed": "1",
            "fallbacks": "0",
            "waiting": "0",
        }
        assert row_figures(html, "data-channel", "email") == {
            "deliveries": "2",
            "sent": "2",
            "failed": "0",
            "fallbacks": "1",
            "waiting": "0",
        }
        svg = html[html.index("<svg") : html.index("</svg>")]
        assert '<title id="chart-title">Deliveries per channel and intents per hour' in svg
        # (an hour may turn while the test sends: sum the bars' and points' titles)
        assert titled(svg, "line") == 2 and titled(svg, "email") == 2
        assert sum(int(n) for n in re.findall(r"<title>intents: (\d+), \d\d:00<", svg)) == 3
        assert 'hx-trigger="every 5s"' in html
        # the queues /metrics reports, all drained
        assert row_figures(html, "data-queue", "deliveries:email") == {"due": "0"}
        # LINE's month: one message taken of 1,000, and what it costs under each plan
        quota = html[html.index('id="line-quota"') :]
        assert re.search(r'data-figure="used">1<', quota)
        assert re.search(r'data-figure="left">999 of 1000<', quota)
        assert row_figures(html, "data-plan", "Free") == {
            "extra": "0 (none sold)",
            "cost": "¥0",
            "blocked": "none",
        }
        assert row_figures(html, "data-plan", "Standard")["cost"] == "¥15,000"
        # each account under its own plan (none set: LINE's limit is what is included)
        assert row_figures(html, "data-account", "default") == {
            "used": "1",
            "includedleft": "999",
            "spent": "¥0",
            "next": "¥0.0",
        }

        # the polled panel alone, for another window and layout
        part = await client.get("/ui/overview/figures", params={"range": "7d", "layout": "grouped"})
        assert part.status_code == 200 and "<html" not in part.text
        assert part.text.lstrip().startswith('<section id="overview-figures"')
        assert "intents per day, last 7d" in part.text
        assert row_figures(part.text, "data-channel", "email")["fallbacks"] == "1"
        bad = await client.get("/ui", params={"range": "1y"})
        assert bad.status_code == 400 and "range: one of 24h, 7d, 30d" in bad.text


@pytest.mark.parametrize(
    ("messages", "free", "light", "standard"),
    [
        # (cost yen, blocked) under Free, Light, Standard
        (0, (0, 0), (5_000, 0), (15_000, 0)),
        (200, (0, 0), (5_000, 0), (15_000, 0)),
        (201, (0, 1), (5_000, 0), (15_000, 0)),
        (5_000, (0, 4_800), (5_000, 0), (15_000, 0)),
        (5_001, (0, 4_801), (5_000, 1), (15_000, 0)),
        (30_000, (0, 29_800), (5_000, 25_000), (15_000, 0)),
        (30_001, (0, 29_801), (5_000, 25_001), (15_003, 0)),
        (31_000, (0, 30_800), (5_000, 26_000), (18_000, 0)),
    ],
)
def test_line_cost_by_plan_at_the_plan_edges(
    messages: int, free: tuple[int, int], light: tuple[int, int], standard: tuple[int, int]
) -> None:
    got = {c.plan.name: (c.cost_yen, c.blocked) for c in line_plans.costs(messages)}
    assert got == {"Free": free, "Light": light, "Standard": standard}
    standard_cost = line_plans.costs(messages)[2]
    assert standard_cost.extra_messages == max(0, messages - 30_000)
    assert all(c.sent + c.blocked == messages for c in line_plans.costs(messages))
    with pytest.raises(ValueError, match="messages must be >= 0"):
        line_plans.cost(line_plans.JAPAN_PLANS[0], -1)


async def test_overview_and_a_member_in_chromium(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, browser: Browser
) -> None:
    await send_three(router, line_sim)
    async with open_page(browser) as (page, _guard):
        await sign_in(page, router.base_url)
        await expect(page.locator("#overview-figures svg rect").first).to_be_visible()
        await expect(page.locator("#overview-figures svg title").first).to_contain_text(
            "Deliveries per channel"
        )
        line_row = page.locator('#channel-figures tr[data-channel="line"]')
        await expect(line_row.locator('[data-figure="failed"]')).to_have_text("1")
        email_row = page.locator('#channel-figures tr[data-channel="email"]')
        await expect(email_row.locator('[data-figure="fallbacks"]')).to_have_text("1")
        await page.click("nav >> text=Members")
        await page.fill("#member-q", "FB@Example.JP")
        await page.click("form.search button")
        await page.click("#members-found a >> text=fell-back")
        await expect(page.locator("h1")).to_have_text("Member fell-back")
        history = page.locator("#member-history [data-channel]")
        await expect(history).to_have_count(2)
        await expect(history.nth(1)).to_have_text("email (fallback): sent")
