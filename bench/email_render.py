"""Email rendering per delivery: the router's cached rendering against a full EmailMessage.

The email channel renders a content's headers and body once and writes only To, Date and
Message-ID per recipient (channels/email.py, RenderedContents). The baseline, measured in the
same run, builds and flattens a complete EmailMessage for every recipient, as the standard
library's API invites. Both produce the bytes handed to SMTP; this prints messages per second
of each and their ratio, for a plain-text and a Japanese text+HTML content. Also promotional
mail composed per recipient (channels/email_compose.py: `[email] public_base_url` set, so a
signed unsubscribe link in List-Unsubscribe and in the footer of each part, quoted-printable)
against the cached rendering, as "composed /s" and composed/router.

Two more contents: one message shown to several people (To and Cc named by the content, so
the recipient's own To line is left out), and an invoice with a 100 KB PDF and an inline
logo (channels/email_mime.py); for the latter the baseline renders the content whole per
recipient (`content_bytes_of`, no cache).

With --base DIR (default /work/base when it exists; '' to leave it out) the same script of the
tree at DIR runs too, and each content both trees know is printed with the router and
composed rates of both and their ratio (this/base): the plain paths must not get slower.

Usage: python bench/email_render.py [--messages N] [--base DIR]
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import time
import uuid
from email.policy import SMTP
from pathlib import Path

from channels.base import Outbound
from channels.email import RenderedContents, build_message, content_bytes_of
from channels.email_compose import Composer, RecipientHead
from router.config import EmailConfig
from router.content import Attachment, Content, EmailContent

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
    "to+cc, 3 shown": EmailContent(
        subject="Meeting on Friday",
        text="See you at ten.\n" * 10,
        to=["Yamada Taro <taro@example.jp>", "jiro@example.jp"],
        cc=["鈴木花子 <hanako@example.jp>"],
    ),
    "invoice, 2 files": EmailContent(
        subject="ご請求書",
        text="請求書を添付しました。\n" * 10,
        html='<p>請求書を添付しました。</p><img src="cid:logo">' * 10,
        attachments=[
            Attachment(
                content=base64.b64encode(bytes(range(256)) * 400).decode(),
                filename="請求書.pdf",
                type="application/pdf",
            ),
            Attachment(
                content=base64.b64encode(bytes(range(256)) * 8).decode(),
                filename="logo.png",
                type="image/png",
                disposition="inline",
                content_id="logo",
            ),
        ],
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


def whole_per_recipient(message: Outbound, content: EmailContent) -> bytes:
    """The baseline for contents with files: everything rendered for every recipient."""
    _, head = RecipientHead(SENDER).render(message, not content.to)
    return head + content_bytes_of(content, SENDER)


def rates_of(output: str) -> dict[str, tuple[float, float | None]]:
    """`content -> (router /s, composed /s or None)` from this script's table (an older
    one has no composed column)."""
    rates: dict[str, tuple[float, float | None]] = {}
    for line in output.splitlines()[1:]:
        numbers = [float(n.replace(",", "").rstrip("x")) for n in line[20:].split()]
        if len(numbers) >= 3:
            rates[line[:20].strip()] = (numbers[1], numbers[3] if len(numbers) > 3 else None)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--base", default="/work/base" if Path("/work/base").is_dir() else "")
    args = parser.parse_args()
    count = args.messages
    table = run_table(count)
    print(table)
    if args.base:
        base = Path(args.base)
        env = {**os.environ, "PYTHONPATH": str(base)}
        script = base / "bench" / "email_render.py"
        command = [sys.executable, str(script), "--messages", str(count)]
        if "--base" in script.read_text():
            command += ["--base", ""]
        other = subprocess.run(
            command, cwd=base, env=env, capture_output=True, text=True, check=True
        ).stdout
        ours, theirs = rates_of(table), rates_of(other)
        print(f"\nagainst {base} (same run): router /s and composed /s, this tree and base")
        print(
            f"{'content':<20}{'router':>10}{'base':>10}{'ratio':>7}{'composed':>10}{'base':>10}{'ratio':>7}"
        )
        for name in [n for n in ours if n in theirs]:
            (r, c), (br, bc) = ours[name], theirs[name]
            composed = "" if c is None or bc is None else f"{c:>10,.0f}{bc:>10,.0f}{c / bc:>7.2f}"
            print(f"{name:<20}{r:>10,.0f}{br:>10,.0f}{r / br:>7.2f}{composed}")


def run_table(count: int) -> str:
    lines: list[str] = []
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
    lines.append(
        f"{'content':<20}{'baseline /s':>14}{'router /s':>12}{'ratio':>8}"
        f"{'composed /s':>14}{'composed/router':>17}"
    )
    for name, content in CONTENTS.items():
        batch = deliveries(content, count)
        started = time.perf_counter()
        if content.attachments:
            for message in batch:
                whole_per_recipient(message, content)
        else:
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
        lines.append(
            f"{name:<20}{baseline:>14,.0f}{ours:>12,.0f}{ours / baseline:>7.0f}x"
            f"{composed:>14,.0f}{composed / ours:>17.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
