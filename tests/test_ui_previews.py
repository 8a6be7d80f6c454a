"""Message previews at /ui/previews: every LINE message kind drawn, hostile text escaped, bad
colors dropped, nothing loaded from another host; through real HTTP and headless chromium."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.browser import open_page, sign_in
from tests.harness import RouterUnderTest, SmtpSink, running_router
from tests.test_ui_session import signed_in


@pytest.fixture(scope="module")
async def previews_router(
    migrated: str, tables: list[str], line_simulator: Any, smtp_server: SmtpSink
) -> AsyncIterator[RouterUnderTest]:
    """One router for this file's tests (they only render pages), on emptied tables."""
    conn = await asyncpg.connect(migrated)
    try:
        await conn.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    finally:
        await conn.close()
    async with running_router(migrated, line_simulator.base_url, smtp_server) as router:
        yield router


class Page(HTMLParser):
    """The elements of a page (tag and attributes, in order) and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, css_class: str) -> list[dict[str, str]]:
        return [a for _, a in self.elements if css_class in a.get("class", "").split()]

    def kinds(self) -> list[str]:
        return [a["data-type"] for a in self.having("lp-message")]

    def sources(self) -> list[str]:
        return [a[name] for _, a in self.elements for name in ("src", "srcset") if name in a]


async def preview(
    client: httpx.AsyncClient, token: str, messages: object, **email: str
) -> tuple[str, Page]:
    resp = await client.post(
        "/ui/previews",
        data={"csrf_token": token, "line_json": json.dumps(messages), **email},
    )
    assert resp.status_code == 200, resp.text
    assert all(not src.startswith(("http:", "https:", "//")) for src in Page(resp.text).sources())
    # The form above echoes what was pasted; only what was drawn is looked at.
    result = resp.text[resp.text.index('<section class="pv-result"') :]
    return result, Page(result)


def problems(html: str) -> list[str]:
    """The field paths of the problems the page lists."""
    return re.findall(r'<code class="pv-field">([^<]*)</code>', html)


IMAGE = "https://cdn.example.com/photo.jpg"

MEDIA_AND_TEXT = [
    {
        "type": "text",
        "text": "Hi $, see https://example.com/a?b=1.",
        "emojis": [{"index": 3, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "002"}],
    },
    {
        "type": "textV2",
        "text": "{who} {{sale}} {smile}",
        "substitution": {
            "who": {"type": "mention", "mentionee": {"type": "all"}},
            "smile": {"type": "emoji", "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "003"},
        },
    },
    {"type": "image", "originalContentUrl": IMAGE, "previewImageUrl": IMAGE},
    {
        "type": "video",
        "originalContentUrl": "https://video.example.com/v.mp4",
        "previewImageUrl": "https://video.example.com/v.jpg",
    },
    {"type": "audio", "originalContentUrl": "https://audio.example.com/a.m4a", "duration": 61000},
]

PLACES_AND_TEMPLATES = [
    {
        "type": "location",
        "title": "Depot",
        "address": "1-2-3 Shibuya",
        "latitude": 35.66,
        "longitude": 139.7,
    },
    {"type": "sticker", "packageId": "446", "stickerId": "1988"},
    {
        "type": "imagemap",
        "baseUrl": "https://maps.example.com/base",
        "altText": "Map",
        "baseSize": {"width": 1040, "height": 1040},
        "actions": [
            {
                "type": "uri",
                "linkUri": "https://example.com/m",
                "area": {"x": 0, "y": 0, "width": 520, "height": 1040},
            }
        ],
    },
    {
        "type": "template",
        "altText": "Buttons",
        "template": {
            "type": "buttons",
            "thumbnailImageUrl": IMAGE,
            "title": "Title",
            "text": "Pick one",
            "actions": [
                {"type": "message", "label": "Yes", "text": "yes"},
                {"type": "uri", "label": "Site", "uri": "https://example.com/site"},
            ],
        },
    },
    {
        "type": "template",
        "altText": "Confirm",
        "template": {
            "type": "confirm",
            "text": "Sure?",
            "actions": [
                {"type": "message", "label": "Yes", "text": "yes"},
                {"type": "message", "label": "No", "text": "no"},
            ],
        },
    },
]

CAROUSELS = [
    {
        "type": "template",
        "altText": "Carousel",
        "template": {
            "type": "carousel",
            "columns": [
                {
                    "text": f"Column {n}",
                    "actions": [{"type": "postback", "label": f"Take {n}", "data": f"c={n}"}],
                }
                for n in (1, 2)
            ],
        },
    },
    {
        "type": "template",
        "altText": "Images",
        "template": {
            "type": "image_carousel",
            "columns": [
                {"imageUrl": IMAGE, "action": {"type": "uri", "label": "Open", "uri": IMAGE}}
            ],
        },
    },
    {
        "type": "flex",
        "altText": "Flex carousel",
        "contents": {
            "type": "carousel",
            "contents": [
                {
                    "type": "bubble",
                    "header": {
                        "type": "box",
                        "layout": "horizontal",
                        "contents": [{"type": "text", "text": "Header"}],
                    },
                    "hero": {"type": "image", "url": IMAGE, "size": "full"},
                    "body": {
                        "type": "box",
                        "layout": "vertical",
                        "spacing": "md",
                        "paddingAll": "12px",
                        "contents": [
                            {
                                "type": "text",
                                "text": "Big",
                                "size": "xl",
                                "weight": "bold",
                                "color": "#112233",
                                "wrap": True,
                            },
                            {
                                "type": "text",
                                "contents": [
                                    {"type": "span", "text": "Red", "color": "#ff0000"},
                                    {"type": "span", "text": " part", "weight": "bold"},
                                ],
                            },
                            {
                                "type": "box",
                                "layout": "baseline",
                                "contents": [
                                    {"type": "icon", "url": IMAGE},
                                    {"type": "text", "text": "Rated", "flex": 2},
                                ],
                            },
                            {"type": "separator", "color": "#cccccc"},
                            {"type": "filler"},
                        ],
                    },
                    "footer": {
                        "type": "box",
                        "layout": "vertical",
                        "contents": [
                            {
                                "type": "button",
                                "style": style,
                                "action": {"type": "uri", "label": style, "uri": IMAGE},
                            }
                            for style in ("primary", "secondary", "link")
                        ],
                    },
                },
                {
                    "type": "bubble",
                    "body": {
                        "type": "box",
                        "layout": "vertical",
                        "contents": [{"type": "text", "text": "Second"}],
                    },
                },
            ],
        },
        "sender": {"name": "Courier", "iconUrl": IMAGE},
        "quickReply": {
            "items": [
                {"type": "action", "action": {"type": "message", "label": "Track", "text": "t"}},
                {"type": "action", "action": {"type": "location", "label": "Send location"}},
            ]
        },
    },
]


async def test_every_kind_of_line_message_is_drawn_without_remote_loads(
    previews_router: RouterUnderTest,
) -> None:
    async with httpx.AsyncClient(base_url=previews_router.base_url, timeout=10) as client:
        token = await signed_in(client)
        example = Page((await client.get("/ui/previews")).text)
        assert example.kinds() == ["text", "sticker", "template", "flex"]
        assert example.having("lp-emoji") and example.having("lf-bubble")

        html, page = await preview(client, token, MEDIA_AND_TEXT)
        assert problems(html) == []
        assert page.kinds() == ["text", "text", "image", "video", "audio"]
        emoji = page.having("lp-emoji")
        assert [e["title"] for e in emoji] == [
            "LINE emoji 5ac1bfd5040ab15980c9b435/002",
            "LINE emoji 5ac1bfd5040ab15980c9b435/003",
        ]
        link = page.having("lp-link")[0]
        assert link["href"] == "https://example.com/a?b=1"  # the final full stop left out
        assert link["target"] == "_blank" and "noopener" in link["rel"].split()
        assert "@All" in html and "{sale}" in html  # textV2: mention, literal braces
        hosts = [tile["data-host"] for tile in page.having("lp-remote")]
        assert hosts == ["cdn.example.com", "video.example.com"]
        assert "1:01" in html and "audio.example.com" in html
        assert not [tag for tag, _ in page.elements if tag in ("img", "video", "audio")]

        html, page = await preview(client, token, {"messages": PLACES_AND_TEMPLATES})
        assert problems(html) == []
        assert page.kinds() == ["location", "sticker", "imagemap", "template", "template"]
        assert "1-2-3 Shibuya" in html and "package 446 · sticker 1988" in html
        assert [t["data-host"] for t in page.having("lp-remote")] == [
            "maps.example.com",
            "cdn.example.com",
        ]
        actions = page.having("lp-action")
        kinds = [a["data-action"] for a in actions]
        assert kinds == ["uri", "message", "uri", "message", "message"]
        assert actions[2]["href"] == "https://example.com/site"
        assert page.having("lp-template-confirm") and page.having("lp-actions-row")

        html, page = await preview(client, token, CAROUSELS)
        assert problems(html) == []
        assert page.kinds() == ["template", "template", "flex"]
        assert len(page.having("lp-card")) == 3  # two carousel columns, one image column
        assert len(page.having("lf-bubble")) == 2 and page.having("lf-carousel")
        for block in ("lf-header", "lf-hero", "lf-body", "lf-footer"):
            assert page.having(block), block
        assert page.having("lf-horizontal") and page.having("lf-baseline")
        texts = page.having("lf-text")
        big = texts[1]["style"]
        assert "font-size: 22px" in big and "font-weight: 700" in big
        assert "color: #112233" in big and "white-space: pre-wrap" in big
        assert "padding: 12px" in page.having("lf-vertical")[0]["style"]
        assert "margin-top: 8px" in texts[2]["style"]  # the body's spacing
        assert "flex: 2 2 0" in texts[3]["style"]
        assert [s["style"] for s in page.having("lf-span")] == [
            "color: #ff0000",
            "font-weight: 700",
        ]
        assert page.having("lf-icon") and page.having("lf-separator") and page.having("lf-filler")
        styles = [b["class"].split()[-1] for b in page.having("lf-button")]
        assert styles == ["lf-button-primary", "lf-button-secondary", "lf-button-link"]
        assert "Courier" in html and page.having("lp-sender-icon")
        chips = page.having("lp-chip")
        assert [c["data-action"] for c in chips] == ["message", "location"]


HOSTILE = '<script>alert(1)</script>"><img src=https://evil.example/x>'


async def test_hostile_messages_are_escaped_checked_and_never_reach_off_site(
    previews_router: RouterUnderTest,
) -> None:
    flex = {
        "type": "flex",
        "altText": HOSTILE,
        "contents": {
            "type": "bubble",
            "styles": {"body": {"backgroundColor": "red;background:url(https://evil.example/)"}},
            "body": {
                "type": "box",
                "layout": "vertical",
                "backgroundColor": "#ABCDEF80",
                "margin": "1px; background: url(https://evil.example/)",
                "contents": [
                    {"type": "text", "text": HOSTILE, "color": "#12345"},
                    {"type": "text", "text": "ok", "color": "expression(alert(1))"},
                    {"type": "sparkle", "url": "https://evil.example/v"},
                    {
                        "type": "button",
                        "style": "primary",
                        "color": "javascript:alert(1)",
                        "action": {"type": "uri", "label": "Go", "uri": "javascript:alert(1)"},
                    },
                ],
            },
        },
    }
    messages = [
        {"type": "text", "text": HOSTILE},
        flex,
        {"type": "hologram", "depth": 3},
        {"type": "image", "originalContentUrl": "http://a/x", "previewImageUrl": "//evil.example"},
    ]
    async with httpx.AsyncClient(base_url=previews_router.base_url, timeout=10) as client:
        token = await signed_in(client)
        html, page = await preview(
            client,
            token,
            messages,
            email_subject=HOSTILE,
            email_html='<img src="https://tracker.example/open.gif">Hello',
            email_text=HOSTILE,
        )
        assert "<script>" not in html and "evil.example/x>" not in html
        assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # text, flex, subject, text
        assert not [tag for tag, attrs in page.elements if tag in ("script", "img", "video")]
        assert "evil.example" not in "".join(a.get("style", "") for _, a in page.elements)
        assert "#12345" not in html and "expression(" not in html
        assert "background-color: #ABCDEF80" in html  # a valid color is kept
        assert "javascript:" not in "".join(a.get("href", "") for _, a in page.elements)
        unknown = [a["data-unknown"] for _, a in page.elements if "data-unknown" in a]
        assert unknown == ["sparkle", "hologram"]
        frame = next(a for tag, a in page.elements if tag == "iframe")
        assert frame["sandbox"] == "" and "tracker.example" in frame["srcdoc"]
        assert "src" not in frame
        # The router's own checks, each problem at its field path.
        assert problems(html) == ["messages[2].type"]  # decoding stops at the unknown type
        html, page = await preview(client, token, messages[:2] + messages[3:])
        fields = problems(html)
        assert "messages[2].originalContentUrl" in fields
        assert "messages[2].previewImageUrl" in fields
        assert any(f.startswith("messages[1].contents.body.contents[2]") for f in fields), fields
        html, page = await preview(client, token, "not messages")
        assert problems(html) == ["messages"] and not page.kinds()
        raw = await client.post("/ui/previews", data={"csrf_token": token, "line_json": "[1,"})
        assert raw.status_code == 200 and "not valid JSON" in raw.text


async def test_flex_bubble_with_a_remote_hero_in_chromium(
    previews_router: RouterUnderTest, browser: Browser
) -> None:
    bubble = {
        "type": "flex",
        "altText": "Parcel",
        "contents": {
            "type": "bubble",
            "hero": {"type": "image", "url": "https://images.example.net/hero.png"},
            "body": {
                "type": "box",
                "layout": "vertical",
                "contents": [{"type": "text", "text": "Your parcel is on its way"}],
            },
        },
    }
    async with open_page(browser) as (page, guard):
        await sign_in(page, previews_router.base_url, "/ui/previews")
        await page.fill("textarea[name=line_json]", json.dumps([bubble]))
        await page.fill(
            "textarea[name=email_html]", '<p>Hi</p><img src="https://tracker.example/o.gif">'
        )
        await page.evaluate("window.notReloaded = true")
        await page.click("form.pv-form button[type=submit]")
        hero = page.locator(".lp-message[data-type=flex] .lf-hero .lp-remote")
        await expect(hero).to_have_attribute("data-host", "images.example.net")
        await expect(hero).to_contain_text("remote image")
        await expect(page.locator(".lf-body .lf-text")).to_have_text("Your parcel is on its way")
        frame = page.frame_locator(".email-preview iframe")
        await expect(frame.locator("p")).to_have_text("Hi")
        assert await page.locator(".lp-message").count() == 1
        assert await page.evaluate("window.notReloaded") is True  # htmx swapped it in place
    guard.assert_none()


def test_odd_input_degrades_to_neutral_boxes() -> None:
    """Shapes no page should get still draw (other pages pass stored messages straight in)."""
    from router.line.messages import decode_messages
    from router.ui.pages import templates

    macro = templates().get_template("ui/previews.html").module.line_bubbles  # type: ignore[attr-defined]
    deep: dict[str, Any] = {"type": "text", "text": "deep"}
    for _ in range(200):
        deep = {"type": "box", "layout": "vertical", "contents": [deep]}
    flex = {"type": "flex", "altText": "x", "contents": {"type": "bubble", "body": deep}}
    html = str(macro([flex, "text", None, {"type": "text", "text": 5}]))
    assert "boxes nested too deep to preview" in html
    assert html.count('data-type="unknown"') == 2  # the string and the None
    assert "A str message" in html and "A NoneType message" in html
    structs = decode_messages(json.dumps(MEDIA_AND_TEXT[:1]))
    page = Page(str(macro(structs)))
    assert page.kinds() == ["text"] and page.having("lp-emoji")
    assert "No messages." in str(macro({"messages": []}))
