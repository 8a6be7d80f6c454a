"""Composed email as receivers see it: promotional mail carries one-click unsubscribe headers
and the 特定電子メール法 footer with a signed link, transactional mail neither; composed mail
leaves with its bounce address as envelope sender; relayed mail is passed on unchanged."""

from __future__ import annotations

import email
import re
import uuid
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from channels.email_compose import Composer
from router.config import ConfigError, EmailConfig
from router.deliverability.tokens import Unsubscribe, read_bounce_token, read_unsubscribe_token
from tests.harness import SmtpSink, running_router
from tests.test_smtp_ingress import PASSWORD, USER, campaign, ingress, wait_until

SECRET = "s" * 40
BASE = "https://mail.shop.example.jp"
BOUNCES = "bounces.shop.example.jp"
TEXT = "秋のセールのご案内です。\n全品 20% オフ。"
HTML = "<html><body><p>秋のセール</p></body></html>"
URL = re.compile(re.escape(BASE) + r"/u/([A-Za-z0-9_-]+)")


def parts(mail: EmailMessage) -> dict[str, str]:
    """Each part's decoded text by content type, with LF line ends."""
    found = {}
    for part in mail.walk():
        if not part.is_multipart():
            found[part.get_content_type()] = part.get_content().replace("\r\n", "\n")
    return found


def token_of(text: str) -> Unsubscribe | None:
    match = URL.search(text)
    assert match is not None, text
    return read_unsubscribe_token(SECRET.encode(), match.group(1))


async def test_composed_mail_links_unsubscribe_and_names_its_bounce_address(
    dsn: str, line_sim: Any, smtp: SmtpSink, tmp_path: Path
) -> None:
    footer = tmp_path / "footer.txt"
    footer.write_text("{{ sender_name }} / {{ sender_postal_address }}\n{{ unsubscribe_url }}\n")
    env = {
        "ROUTER_EMAIL_PUBLIC_BASE_URL": BASE + "/",
        "ROUTER_EMAIL_BOUNCE_DOMAIN": BOUNCES,
        "ROUTER_EMAIL_UNSUBSCRIBE_SECRET": SECRET,
        "ROUTER_EMAIL_SENDER_NAME": "秋葉ショップ <株式会社>",
        "ROUTER_EMAIL_SENDER_POSTAL_ADDRESS": "東京都千代田区1-1",
        "ROUTER_EMAIL_FOOTER_TEXT_TEMPLATE": str(footer),
    }
    async with ingress(dsn, line_sim, smtp, **env) as (r, port):
        for member in ("promo", "tagged", "receipt"):
            resp = await r.client.put(f"/v1/members/{member}", json={"email": f"{member}@x.jp"})
            assert resp.status_code in (200, 201), resp.text
        intents = [
            {  # the caller's own List-Unsubscribe gives way to the router's
                "member_id": "promo",
                "category": "newsletter",
                "email": {
                    "subject": "秋のセール",
                    "text": TEXT,
                    "html": HTML,
                    "headers": {"List-Unsubscribe": "<https://elsewhere.example/u>"},
                },
            },
            {
                "member_id": "tagged",
                "email": {
                    "subject": "Sale",
                    "text": "Stop: <%unsubscribe_url%>",
                    "html": '<a href="<%asm_group_unsubscribe_raw_url%>">stop</a>',
                },
            },
            {
                "member_id": "receipt",
                "kind": "transactional",
                "email": {"subject": "Receipt", "text": "Paid.", "html": "<p>Paid.</p>"},
            },
        ]
        resp = await r.client.post("/v1/intents/batch", json={"intents": intents})
        assert resp.status_code in (200, 207), resp.text
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.login(USER, PASSWORD)
        relayed = campaign(["mail@example.jp"])
        await client.sendmail("bounce@shop.example.jp", ["mail@example.jp"], relayed)
        await client.quit()
        await wait_until(lambda: len(smtp.mails) == 4)
    received = {m.rcpt_to[0]: m for m in smtp.mails}

    # Relayed: the bytes and envelope sender it came with.
    assert received["mail@example.jp"].data == relayed
    assert received["mail@example.jp"].mail_from == "bounce@shop.example.jp"

    sent = {}
    for member in ("promo", "tagged", "receipt"):
        got = received[f"{member}@x.jp"]
        mail = email.message_from_bytes(got.data, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        delivery = uuid.UUID(mail["Message-ID"].strip("<>").partition("@")[0])
        local, _, domain = got.mail_from.partition("@")
        assert domain == BOUNCES and local.startswith("bounce+")
        assert read_bounce_token(SECRET.encode(), local.removeprefix("bounce+")) == delivery
        sent[member] = (mail, delivery)

    # Promotional: both headers (the caller's left out), the footer in both parts, one link.
    mail, delivery = sent["promo"]
    promo = Unsubscribe("m", "promo", "newsletter", delivery)
    (link,) = mail.get_all("List-Unsubscribe")
    url, mailto = (u.strip(" <>") for u in str(link).split(","))
    assert token_of(url) == promo
    assert mailto.startswith(f"mailto:unsubscribe@{BOUNCES}?subject=")
    assert read_unsubscribe_token(SECRET.encode(), mailto.partition("=")[2]) == promo
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = parts(mail)["text/plain"], parts(mail)["text/html"]
    assert text == f"{TEXT}\n\n秋葉ショップ <株式会社> / 東京都千代田区1-1\n{url}\n"
    assert html.startswith("<html><body><p>秋のセール</p><div")
    assert html.endswith("</div>\n</body></html>\n")
    assert "秋葉ショップ &lt;株式会社&gt;" in html and "東京都千代田区1-1" in html
    assert f'<a href="{url}">配信停止はこちら / Unsubscribe</a>' in html

    # A body that links already: the tags become the link, no footer.
    mail, delivery = sent["tagged"]
    tagged = Unsubscribe("m", "tagged", None, delivery)
    assert token_of(str(mail["List-Unsubscribe"])) == tagged
    text, html = parts(mail)["text/plain"], parts(mail)["text/html"]
    assert text.startswith("Stop: https://") and token_of(text) == tagged
    assert html.startswith('<a href="https://') and token_of(html) == tagged
    assert "<%" not in text + html and "配信停止" not in text + html

    # Transactional: neither headers nor footer.
    mail, _ = sent["receipt"]
    assert mail["List-Unsubscribe"] is None and mail["List-Unsubscribe-Post"] is None
    assert parts(mail) == {"text/plain": "Paid.\n", "text/html": "<p>Paid.</p>\n"}


async def test_without_a_public_url_tags_are_dropped_and_no_link_is_given(
    dsn: str, smtp: SmtpSink
) -> None:
    async with running_router(dsn, None, smtp) as r:
        intent = {
            "email_address": "anon@x.jp",
            "email": {"subject": "Sale", "text": "Sale.<%unsubscribe_url%>"},
        }
        resp = await r.client.post("/v1/intents", json=intent)
        assert resp.status_code in (200, 201, 202), resp.text
        await wait_until(lambda: len(smtp.mails) == 1)
    (got,) = smtp.mails
    mail = email.message_from_bytes(got.data, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    assert mail["List-Unsubscribe"] is None
    assert parts(mail) == {"text/plain": "Sale.\n"}
    assert got.mail_from == "news@shop.example.jp"


@pytest.mark.parametrize(
    ("key", "source", "problem"),
    [
        ("footer_html_template", "<p>{{ sender_name </p>", "footer_html_template"),
        ("footer_text_template", "{{ no_such_field }}", "no_such_field"),
        ("public_base_url", None, "public_base_url"),
    ],
)
def test_a_bad_footer_template_or_base_url_stops_the_start(
    tmp_path: Path, key: str, source: str | None, problem: str
) -> None:
    value = "mail.example.jp/<x>"
    if source is not None:
        path = tmp_path / "footer"
        path.write_text(source)
        value = str(path)
    keys = {"public_base_url": BASE, key: value}
    config = EmailConfig(host="h", from_address="a@x.jp", **keys)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=problem):
        Composer(config)


def test_a_link_without_the_senders_name_and_address_is_warned_of_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="channels.email_compose"):
        Composer(EmailConfig(host="h", from_address="a@x.jp", sender_name="Shop"))
        assert caplog.records == []
        Composer(EmailConfig(host="h", from_address="a@x.jp", public_base_url=BASE))
    (record,) = caplog.records
    assert "sender_postal_address" in record.getMessage()
