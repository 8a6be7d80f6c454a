"""The dashboard's audiences page: lists, a new audience, and the upload through `/ui`, which
must report exactly what the API's upload reports; plain HTTP with a session cookie, and one
chromium run that watches the progress bar."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.async_api import Browser, expect

from tests.browser import open_page, sign_in
from tests.harness import RouterUnderTest
from tests.test_audiences import email_file, email_members, upload
from tests.test_ui_session import anonymous, signed_in

# Fields that differ between two audiences made from the same file.
OWN_FIELDS = ("id", "name", "created_at", "updated_at")


def same_report(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in OWN_FIELDS}


async def create_in_ui(client: httpx.AsyncClient, token: str, name: str) -> str:
    resp = await client.post(
        "/ui/audiences", data={"csrf_token": token, "name": name, "type": "email"}
    )
    assert resp.status_code == 303, resp.text
    location: str = resp.headers["location"]
    assert re.fullmatch(r"/ui/audiences/[0-9a-f-]{36}", location), location
    return location


def file_part(content: bytes) -> dict[str, Any]:
    return {"file": ("list.csv", content, "text/csv")}


async def test_upload_through_the_dashboard_reports_what_the_api_reports(
    router: RouterUnderTest,
) -> None:
    await email_members(router)
    api = await upload(router, email_file())
    assert api.status_code == 201, api.text
    async with anonymous(router) as client:
        token = await signed_in(client)
        page = await create_in_ui(client, token, "autumn from the dashboard")

        # What the page's script sends: the token in the header; asked for JSON here, to
        # compare with the API's answer field by field.
        scripted = await client.post(
            f"{page}/uploads",
            files=file_part(email_file()),
            headers={"X-CSRF-Token": token, "Accept": "application/json"},
        )
        assert scripted.status_code == 200, scripted.text
        assert same_report(scripted.json()) == same_report(api.json())
        assert len(api.json()["errors"]) == 7

        # The fragment the script puts on the page: every rejected line with its reason.
        again = await create_in_ui(client, token, "again")
        fragment = await client.post(
            f"{again}/uploads",
            files=file_part(email_file()),
            headers={"X-CSRF-Token": token, "HX-Request": "true"},
        )
        assert fragment.status_code == 200, fragment.text
        assert "<html" not in fragment.text
        rows = re.findall(r'<tr><td class="num">(\d+)</td><td>([^<]*)</td></tr>', fragment.text)
        assert [(int(n), r.replace("&amp;", "&")) for n, r in rows] == [
            (e["line"], e["reason"]) for e in api.json()["errors"]
        ]
        assert 'data-figure="valid">6<' in fragment.text
        assert 'data-figure="reachable_email">3<' in fragment.text

        # No JavaScript: the plain form, its token a field before the file; the page returns.
        plain = await client.post(
            f"{again}/uploads",
            data={"csrf_token": token},
            files=file_part(b"goro@example.jp\nnot an address\n"),
        )
        assert plain.status_code == 200, plain.text
        assert "<html" in plain.text and "Uploaded." in plain.text
        assert '<tr><td class="num">2</td><td>' in plain.text
        assert 'data-figure="lines">17<' in plain.text  # 15 + 2, as the API adds them

        campaign = await router.client.post(
            "/v1/campaigns",
            json={
                "audience_ids": [api.json()["id"]],
                "exclude_audience_ids": [again.rsplit("/", 1)[1]],
                "email": {"subject": "Autumn", "text": "Hello"},
            },
        )
        assert campaign.status_code == 202, campaign.text
        listing = await client.get("/ui/audiences")
        assert listing.status_code == 200
        exclusions, everything = listing.text.split("<h2>All audiences</h2>")
        exclusions = exclusions.split("<h2>Exclusion lists</h2>")[1]
        assert re.findall(r">([^<]+)</a> <span class=\"tag\">exclusion", exclusions) == ["again"]
        assert "autumn from the dashboard</a></td>" in everything
        assert "again</a> <span" in everything
        reach = await client.get(f"{again}/reach")
        assert reach.status_code == 200
        assert re.findall(r'<td class="num">(\d+)</td>', reach.text) == ["5", "1", "4"]

        # The API's limits and errors hold here too: a file that is not multipart.
        bad = await client.post(
            f"{again}/uploads",
            content=b"x",
            headers={"X-CSRF-Token": token, "Content-Type": "text/csv", "HX-Request": "true"},
        )
        assert bad.status_code == 415 and "multipart/form-data" in bad.text


async def test_upload_and_create_refuse_a_missing_or_wrong_csrf_token(
    router: RouterUnderTest,
) -> None:
    async with anonymous(router) as client:
        token = await signed_in(client)
        page = await create_in_ui(client, token, "guarded")
        no_token = await client.post(f"{page}/uploads", files=file_part(b"a@example.jp\n"))
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        wrong_field = await client.post(
            f"{page}/uploads",
            data={"csrf_token": token[:-1] + "A"},
            files=file_part(b"a@example.jp\n"),
        )
        assert wrong_field.status_code == 403
        wrong_header = await client.post(
            f"{page}/uploads",
            files=file_part(b"a@example.jp\n"),
            headers={"X-CSRF-Token": token[:-1] + "A"},
        )
        assert wrong_header.status_code == 403
        foreign = await client.post(
            f"{page}/uploads",
            data={"csrf_token": token},
            files=file_part(b"a@example.jp\n"),
            headers={"Origin": "https://attacker.example"},
        )
        assert foreign.status_code == 403
        create = await client.post("/ui/audiences", data={"name": "x", "type": "email"})
        assert create.status_code == 403
        audience_id = page.rsplit("/", 1)[1]
        report = await router.client.get(f"/v1/audiences/{audience_id}")
        assert report.json()["lines"] == 0  # nothing refused was read into it


async def test_choosing_a_file_in_chromium_shows_progress_and_the_report(
    router: RouterUnderTest, browser: Browser
) -> None:
    lines = [f"member{i}@example.jp" for i in range(4_000)]
    lines[2] = "no-at-sign.example.jp"
    content = ("\n".join(lines) + "\n").encode()
    async with open_page(browser) as (page, _guard):
        await sign_in(page, router.base_url, "/ui/audiences")
        await page.fill("input[name=name]", "spring")
        await page.click("form.inline-form button[type=submit]")
        await expect(page.locator("h1")).to_have_text("spring")
        await page.set_input_files(
            "input[name=file]",
            files=[{"name": "spring.csv", "mimeType": "text/csv", "buffer": content}],
        )
        await page.click("form.audience-upload button[type=submit]")
        await expect(page.locator("[data-upload-percent]")).to_have_text("100 %: done")
        assert await page.locator("[data-upload-progress]").get_attribute("value") == "100"
        await expect(page.locator('[data-figure="valid"]')).to_have_text("3,999")
        await expect(page.locator(".rejected-lines tbody td")).to_have_text(
            ["3", "not an email address (name@domain)"]
        )
        # The list loads each row's reach after the page (htmx): no member has these emails.
        await page.click("text=Audiences")
        row = page.locator("table.audiences tbody tr", has_text="spring").last
        await expect(row.locator("td")).to_have_text(
            ["spring", "email", "4,000", "3,999", "1", "0", "0", "0", "0"]
        )
