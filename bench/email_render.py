"""Email rendering per delivery: the router's cached rendering against a full EmailMessage.

The email channel renders a content's headers and body once and writes only To, Date and
Message-ID per recipient (channels/email.py, RenderedContents). The baseline, measured in the
same run, builds and flattens a complete EmailMessage for every recipient, as the standard
library's API invites. Both produce the bytes handed to SMTP; this prints messages per second
of each and their ratio, for a plain-text and a Japanese text+HTML content. Also promotional
mail composed per recipient (channels/email_compose.py: `[email] public_base_url` set, so a
signed unsubscribe link in List-Unsubscribe and in the footer of each part, quoted-printable)
against the cached rendering, as "composed /s" and composed/router.

Usage: python bench/email_render.py [--messages N]
"""

from __future__ import annotations

import argparse
import time
import uuid
from email.policy import SMTP

from channels.base import Outbound
from channels.email import RenderedContents, build_message
from channels.email_compose import Composer
from router.config import EmailConfig
from router.content import Content, EmailContent

SENDER = "news@shop.example.jp"
CONTENTS = {
    "plain text": EmailContent(subject="Autumn sale", text="Hello,\n10% off this week.\n"),
    "Japanese text+HTML": EmailContent(
        subject="秋のセール 会員さま限定 10% オフ",
        text="いつもご利用ありがとうございます。\n" * 20,
        html="<p>いつもご利用ありがとうございます。</p>" * 20,
        reply_to="support@shop.example.jp",
        headers={"List-Unsubscribe": "<https://shop.example.jp/u>"},
    ),
}


def deliveries(content: EmailContent, count: int) -> list[Outbound]:
    return [
        Outbound(
            delivery_id=uuid.uuid4(),
            intent_id=uuid.uuid4(),
            address=f"member{n}@example.jp",
            attempt=1,
            content_id=b"one campaign",
            content=Content(email=content),
            member_id=f"member-{n}",
            category="newsletter",
        )
        for n in range(count)
    ]


def per_second(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    count = parser.parse_args().messages
    composer = Composer(
        EmailConfig(
            host="127.0.0.1",
            from_address=SENDER,
            public_base_url="https://mail.shop.example.jp",
            unsubscribe_secret="b" * 40,
            bounce_domain="bounces.shop.example.jp",
            sender_name="秋葉ショップ株式会社",
            sender_postal_address="東京都千代田区外神田1-1-1",
        )
    )
    print(
        f"{'content':<20}{'baseline /s':>14}{'router /s':>12}{'ratio':>8}"
        f"{'composed /s':>14}{'composed/router':>17}"
    )
    for name, content in CONTENTS.items():
        batch = deliveries(content, count)
        started = time.perf_counter()
        for message in batch:
            build_message(message, content, SENDER).as_bytes(policy=SMTP)
        baseline = per_second(count, started)
        rendered = RenderedContents(SENDER)
        started = time.perf_counter()
        for message in batch:
            rendered.render(message, content)
        ours = per_second(count, started)
        started = time.perf_counter()
        for message in batch:
            composer.render(message, content)
            composer.envelope_sender(message)
        composed = per_second(count, started)
        print(
            f"{name:<20}{baseline:>14,.0f}{ours:>12,.0f}{ours / baseline:>7.0f}x"
            f"{composed:>14,.0f}{composed / ours:>17.2f}"
        )


if __name__ == "__main__":
    main()
