"""The dashboard's campaign pages: the list, one campaign's live progress, cancel, the email
preview's own policy, and LINE's and email's results side by side."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.async_api import Browser, expect

from router.campaign_units import derived_unit
from router.ui.pages import EMAIL_FRAME_POLICY
from tests.browser import open_page, sign_in
from tests.harness import RouterUnderTest
from tests.test_multicast import add_members, friend_id
from tests.test_ui_session import anonymous, signed_in

HTML = '<p style="color: red">Spring sale</p><img src="https://tracker.example/p.gif">'
EMAIL = {"subject": "Spring sale", "text": "Spring sale: 20% off", "html": HTML}


async def audience_of(r: RouterUnderTest, friends: int, mail_only: int) -> str:
    await add_members(r, friends, mail_only=mail_only)
    lines = [f"f{i}@example.jp" for i in range(friends)] + [
        f"e{i}@example.jp" for i in range(mail_only)
    ]
    resp = await r.client.post(
        "/v1/audiences",
        data={"name": "spring", "type": "email"},
        files={"file": ("list.csv", "\n".join(lines).encode(), "text/csv")},
    )
    assert resp.status_code == 201, resp.text
    audience: str = resp.json()["id"]
    return audience


async def start_campaign(r: RouterUnderTest, audience: str, **extra: Any) -> str:
    resp = await r.client.post(
        "/v1/campaigns",
        json={"name": "Spring sale", "audience_ids": [audience], "email": EMAIL} | extra,
    )
    assert resp.status_code == 202, resp.text
    campaign_id: str = resp.json()["id"]
    return campaign_id


async def test_list_detail_email_frame_and_cancel_over_http(router: RouterUnderTest) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    audience = await audience_of(router, 3, 2)
    campaign_id = await start_campaign(router, audience, send_at=later)  # waits: cancellable
    async with anonymous(router) as client:
        token = await signed_in(client)
        listed = await client.get("/ui/campaigns")
        assert listed.status_code == 200
        assert f'href="/ui/campaigns/{campaign_id}"' in listed.text and "Spring sale" in listed.text
        assert 'role="progressbar"' in listed.text

        page = await client.get(f"/ui/campaigns/{campaign_id}")
        assert page.status_code == 200
        assert derived_unit(uuid.UUID(campaign_id)) in page.text
        assert 'hx-trigger="every 1s"' in page.text  # still to send: the page polls
        assert f'src="/ui/campaigns/{campaign_id}/email.html"' in page.text
        assert '<dd id="campaign-line-account">default</dd>' in page.text
        assert '<td class="line-account">default</td>' in listed.text
        async with router.runtime.pool.acquire() as conn:
            # The account the pages read is the stored campaigns.line_account.
            await conn.execute(
                "UPDATE campaigns SET line_account = 'shop-b' WHERE id = $1", uuid.UUID(campaign_id)
            )
        page = await client.get(f"/ui/campaigns/{campaign_id}")
        assert '<dd id="campaign-line-account">shop-b</dd>' in page.text
        listed = await client.get("/ui/campaigns")
        assert '<td class="line-account">shop-b</td>' in listed.text

        frame = await client.get(f"/ui/campaigns/{campaign_id}/email.html")
        assert frame.status_code == 200 and frame.text == HTML
        assert frame.headers["content-security-policy"] == EMAIL_FRAME_POLICY

        refused = await client.post(f"/ui/campaigns/{campaign_id}/cancel", data={})
        assert refused.status_code == 403
        cancelled = await client.post(
            f"/ui/campaigns/{campaign_id}/cancel", data={"csrf_token": token}
        )
        assert cancelled.status_code == 303
        assert cancelled.headers["location"] == f"/ui/campaigns/{campaign_id}"
        view = (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()
        assert view["status"] == "cancelled"
        # Done: the fragment no longer asks to be polled.
        progress = await client.get(f"/ui/campaigns/{campaign_id}/progress")
        assert progress.status_code == 200 and 'data-done="true"' in progress.text
        assert "hx-trigger" not in progress.text
        missing = await client.get(f"/ui/campaigns/{uuid.uuid4()}")
        assert missing.status_code == 404


async def test_a_campaign_reaches_100_percent_live_in_chromium(
    router: RouterUnderTest, line_sim: Any, browser: Browser
) -> None:
    """30 LINE friends and 20 email-only members, sent three seconds after the campaign is
    made: its page opens before, the chart fills by polling (no reload) and LINE's and
    email's results show."""
    audience = await audience_of(router, 30, 20)
    async with open_page(browser) as (page, _guard):
        await sign_in(page, router.base_url, "/ui/campaigns")
        send_at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
        campaign_id = await start_campaign(router, audience, send_at=send_at)
        unit = derived_unit(uuid.UUID(campaign_id))
        await page.goto(f"{router.base_url}/ui/campaigns/{campaign_id}")
        await page.evaluate("document.body.dataset.loadedOnce = 'yes'")
        progress = page.locator("#campaign-progress")
        await expect(progress).to_have_attribute("data-done", "false")
        await expect(progress).to_have_attribute("data-done", "true", timeout=15_000)
        await expect(page.locator(".campaign-percent")).to_have_text("100 %")
        line_row = page.locator('tr[data-channel="line"] .sent')
        await expect(line_row).to_have_text("30")
        await expect(page.locator('tr[data-channel="email"] .sent')).to_have_text("20")
        bars = page.locator('.campaign-chart rect[data-segment="sent"]')
        await expect(bars).to_have_count(2)
        assert await page.evaluate("document.body.dataset.loadedOnce") == "yes"  # no reload
        await expect(page.locator(".results-line")).to_contain_text("Unique impressions")
        await expect(page.locator(".lp-bubble").first).to_be_visible()
    assert sorted(line_sim.unit_recipients(unit)) == [friend_id(i) for i in range(30)]
