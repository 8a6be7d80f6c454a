"""The dashboard's intent pages after real sends (LINE simulator, SMTP sink): each search
filter, keyset paging, one intent's deliveries, provider ids, fallback and errors, the email
preview's own policy, escaping; and one walk through them in chromium."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from playwright.async_api import Browser, expect

from router.ui.pages import EMAIL_FRAME_POLICY
from tests.browser import open_page, sign_in
from tests.harness import RouterUnderTest, SmtpSink
from tests.test_ui_session import anonymous, signed_in

FRIEND = "U" + "f" * 32
MAIL = {"subject": "Autumn sale", "text": "20% off until Sunday.", "html": "<p>20% off</p>"}
INTENT_LINK = re.compile(r'href="/ui/intents/([0-9a-f-]{36})"')


async def put_member(r: RouterUnderTest, member_id: str, **fields: Any) -> None:
    resp = await r.client.put(f"/v1/members/{member_id}", json=fields)
    assert resp.status_code in (200, 201), resp.text


async def send(r: RouterUnderTest, **fields: Any) -> str:
    resp = await r.client.post("/v1/intents", json={"email": MAIL, **fields})
    assert resp.status_code == 202, resp.text
    intent_id: str = resp.json()["id"]
    return intent_id


async def found(client: httpx.AsyncClient, **query: str) -> list[str]:
    """The intent ids one results page lists, in order."""
    resp = await client.get("/ui/intents?" + urlencode(query))
    assert resp.status_code == 200, resp.text
    return INTENT_LINK.findall(resp.text)


async def every_page(client: httpx.AsyncClient, **query: str) -> tuple[list[str], int]:
    """Follow the "Older" links to the end: every id listed, and how many pages."""
    url: str | None = "/ui/intents?" + urlencode(query)
    ids: list[str] = []
    pages = 0
    while url is not None:
        resp = await client.get(url)
        assert resp.status_code == 200, resp.text
        ids += INTENT_LINK.findall(resp.text)
        pages += 1
        more = re.search(r'<a href="([^"]+)" rel="next"', resp.text)
        url = more.group(1).replace("&amp;", "&") if more else None
    return ids, pages


async def test_each_filter_finds_exactly_its_intents_and_paging_neither_repeats_nor_skips(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await put_member(router, "m-line", email="line@example.jp", line_user_id=FRIEND)
    await put_member(router, "m-mail", email="Mail@Example.jp")
    line = await send(router, member_id="m-line", campaign="autumn", tags=["sale", "vip"])
    mail = await send(router, member_id="m-mail", campaign="autumn", tags=["sale"])
    await router.wait_for(line)
    await router.wait_for(mail)
    later = await send(router, member_id="m-mail", campaign="winter")
    address_only = await send(router, email_address="guest@example.jp", tags=["guest"])
    for intent_id in (later, address_only):
        await router.wait_for(intent_id)
    # 30 intents in one statement share their created_at: the keyset's id breaks the tie.
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    batch = [{"member_id": "m-mail", "email": MAIL, "send_at": ahead} for _ in range(30)]
    resp = await router.client.post("/v1/intents/batch", json={"intents": batch})
    assert resp.status_code == 200, resp.text
    scheduled = {r["id"] for r in resp.json()["results"]}
    assert len(scheduled) == 30
    created = {i: (await router.intent(i))["created_at"] for i in (line, mail, later)}
    async with router.runtime.pool.acquire() as conn:
        # The account the pages read is the stored intents.line_account (the account the
        # intent was accepted for); these two go out under a second account.
        await conn.execute(
            "UPDATE intents SET line_account = 'shop-b' WHERE id = ANY($1::uuid[])", [mail, later]
        )

    async with anonymous(router) as client:
        await signed_in(client)
        assert await found(client, member="m-line") == [line]
        assert await found(client, email="mail@example.jp", status="delivered") == [later, mail]
        assert await found(client, email="GUEST@example.jp") == [address_only]
        assert await found(client, email="nobody@example.jp") == []
        assert await found(client, member="m-line", email="mail@example.jp") == []
        assert await found(client, campaign="autumn") == [mail, line]
        assert await found(client, tag="vip") == [line]
        assert await found(client, tag="sale") == [mail, line]
        assert await found(client, channel="line") == [line]
        assert set(await found(client, channel="email", status="delivered")) == {
            mail,
            later,
            address_only,
        }
        assert set(await found(client, status="delivered")) == {line, mail, later, address_only}
        assert await found(client, account="shop-b") == [later, mail]
        assert await found(client, account="default", campaign="autumn") == [line]
        assert await found(client, account="shop-b", member="m-line") == []
        listed = (await client.get("/ui/intents", params={"campaign": "autumn"})).text
        assert re.findall(r'<td class="line-account">([^<]*)</td>', listed) == ["shop-b", "default"]
        shop_b = (await client.get("/ui/intents", params={"account": "shop-b"})).text
        assert '<option value="shop-b" selected>' in shop_b  # not configured, still searchable
        page = (await client.get(f"/ui/intents/{later}")).text
        shown = re.search(r'id="intent-line-account">([^ <]+)', page)
        assert shown is not None and shown.group(1) == "shop-b"
        page = (await client.get(f"/ui/intents/{line}")).text
        shown = re.search(r'id="intent-line-account">([^ <]+)', page)
        assert shown is not None and shown.group(1) == "default"
        window = {"from": created[mail], "to": created[later]}
        assert await found(client, **window) == [mail]

        everything, pages = await every_page(client, size="25")
        assert pages == 2 and len(everything) == len(set(everything)) == 34
        assert set(everything) == scheduled | {line, mail, later, address_only}
        assert everything[-4:] == [address_only, later, mail, line]  # newest first
        queued, pages = await every_page(client, status="queued", size="25")
        assert pages == 2 and len(queued) == len(set(queued)) == 30 and set(queued) == scheduled
        assert queued == everything[:30]

        bad = await client.get("/ui/intents?status=lost&from=yesterday&size=7&account=Shop+B")
        assert bad.status_code == 400
        for field in ("status", "from", "size", "account"):
            assert f'data-field="{field}"' in bad.text
        htmx = await client.get("/ui/intents?tag=vip", headers={"HX-Request": "true"})
        assert htmx.status_code == 200 and "<html" not in htmx.text
        assert INTENT_LINK.findall(htmx.text) == [line]
        assert htmx.headers["hx-push-url"] == "/ui/intents?tag=vip"


async def test_an_intents_page_shows_provider_ids_fallback_errors_and_escapes_what_it_shows(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await put_member(router, "friend", email="friend@example.jp", line_user_id=FRIEND)
    hostile = "<script>alert(1)</script>"
    pushed = await send(router, member_id="friend", tags=[hostile], campaign=hostile)
    await router.wait_for(pushed)
    line_sim.fail_next(1, status=400, message="The request body has 1 error(s)")
    fell_back = await send(router, member_id="friend", email={**MAIL, "subject": hostile})
    body = await router.wait_for(fell_back)
    email = next(d for d in body["deliveries"] if d["channel"] == "email")
    assert email["fallback"] is True
    (mail,) = smtp.mails
    await put_member(router, "reader", email="reader@example.jp")
    attached = await send(
        router,
        member_id="reader",
        email={
            "subject": "Price list",
            "text": "plain part",
            "html": f"<p>Hello</p>{hostile}<img src='https://tracker.example/p.gif'>",
            "attachments": [{"content": "aGVsbG8=", "filename": "price list.txt"}],
        },
    )
    await router.wait_for(attached)

    async with anonymous(router) as client:
        await signed_in(client)
        page = await client.get(f"/ui/intents/{pushed}")
        assert page.status_code == 200
        (push,) = line_sim.accepted_pushes()
        assert push.request_id in page.text and str(push.retry_key) in page.text
        assert hostile not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert 'class="lp-bubble' in page.text

        page = await client.get(f"/ui/intents/{fell_back}")
        assert page.status_code == 200
        assert email["provider_ref"] == mail.message["Message-ID"]
        assert mail.message["Message-ID"].replace("<", "&lt;").replace(">", "&gt;") in page.text
        assert "upstream SMTP reply" in page.text and email["smtp_queue_id"] in page.text
        assert "Fallback because line:" in page.text
        assert "The request body has 1 error(s)" in page.text  # the failed attempt's error
        assert hostile not in page.text

        page = await client.get(f"/ui/intents/{attached}")
        assert "price list.txt" in page.text and "5 bytes" in page.text
        assert "aGVsbG8=" not in page.text and hostile not in page.text
        assert f'src="/ui/intents/{attached}/email.html"' in page.text
        frame = await client.get(f"/ui/intents/{attached}/email.html")
        assert frame.status_code == 200
        assert frame.headers["content-security-policy"] == EMAIL_FRAME_POLICY
        assert frame.headers["content-type"].startswith("text/html")
        assert "<p>Hello</p>" in frame.text  # the HTML as the channel sent it, framed apart

        for missing in ("00000000-0000-0000-0000-000000000000", "not-an-id"):
            gone = await client.get(f"/ui/intents/{missing}")
            assert gone.status_code == 404 and "Intent not found" in gone.text
            assert (await client.get(f"/ui/intents/{missing}/email.html")).status_code == 404


async def test_search_by_email_and_open_an_intent_in_chromium(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, browser: Browser
) -> None:
    await put_member(router, "taro", email="taro@example.jp", line_user_id=FRIEND)
    intent_id = await send(
        router, member_id="taro", line={"messages": [{"type": "text", "text": "Hi Taro"}]}
    )
    await router.wait_for(intent_id)
    async with open_page(browser) as (page, _guard):
        await sign_in(page, router.base_url, "/ui/intents")
        await page.fill("input[name=email]", "taro@example.jp")
        await page.click("form.intent-search button[type=submit]")
        link = page.locator(f'a.intent-link[href="/ui/intents/{intent_id}"]')
        await expect(link).to_have_count(1)
        await expect(page).to_have_url(re.compile(r"email=taro%40example\.jp"))
        await link.click()
        await expect(page.locator("#intent-status")).to_have_text("delivered")
        await expect(page.locator("section.delivery[data-channel=line]")).to_have_count(1)
        await expect(page.locator(".lp-bubble")).to_contain_text("Hi Taro")
