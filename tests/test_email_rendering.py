"""The email channel renders each content once and writes only To, Date and Message-ID per
recipient; what a receiver parses must be the message a full EmailMessage would have been."""

from __future__ import annotations

import email
import uuid
from email import policy

import pytest

from channels.base import Outbound
from channels.email import RenderedContents, build_message
from router.content import Content, EmailContent

SENDER = "news@shop.example.jp"

CONTENTS = [
    EmailContent(subject="Sale", text="Hello"),
    EmailContent(subject="HTML only", html="<p>Hello</p>"),
    EmailContent(
        subject="秋のセール 10% オフ、会員の皆さまへ先行のご案内です",
        text="こんにちは。\n.\nA line with a lone dot, and one that is long " + "x" * 990,
        html="<p>こんにちは</p>",
        from_address="Shop <shop@example.jp>",
        reply_to="support@example.jp",
        headers={"List-Unsubscribe": "<https://example.jp/u?m=1>", "X-Campaign": "autumn"},
    ),
]


def outbound(content: EmailContent, address: str) -> Outbound:
    return Outbound(
        delivery_id=uuid.uuid4(),
        intent_id=uuid.uuid4(),
        address=address,
        attempt=1,
        content_id=b"content-" + content.subject.encode(),
        content=Content(email=content),
    )


@pytest.mark.parametrize("content", CONTENTS, ids=["text", "html", "japanese-both"])
def test_rendered_bytes_parse_as_the_full_message(content: EmailContent) -> None:
    message = outbound(content, "taro@example.jp")
    mid, data = RenderedContents(SENDER).render(message, content)
    parsed = email.message_from_bytes(data, policy=policy.default)
    reference = email.message_from_bytes(
        build_message(message, content, SENDER).as_bytes(policy=policy.SMTP), policy=policy.default
    )
    assert mid == reference["Message-ID"] == parsed["Message-ID"]
    names = {k.lower() for k in reference if k.lower() != "content-type"}
    assert {k.lower() for k in parsed if k.lower() != "content-type"} == names
    for name in names - {"date"}:
        assert str(parsed[name]) == str(reference[name]), name
    assert parsed.get_content_type() == reference.get_content_type()
    for part, expected in zip(parsed.walk(), reference.walk(), strict=True):
        assert part.get_content_type() == expected.get_content_type()
        if not part.is_multipart():
            assert part.get_content() == expected.get_content()
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


def test_recipients_of_one_content_share_its_body_and_get_their_own_headers() -> None:
    content = CONTENTS[2]
    rendered = RenderedContents(SENDER)
    first = rendered.render(outbound(content, "taro@example.jp"), content)[1]
    second = rendered.render(outbound(content, "hanako@example.jp"), content)[1]
    head_1, _, body_1 = first.partition(b"\r\nFrom:")
    head_2, _, body_2 = second.partition(b"\r\nFrom:")
    assert body_1 == body_2
    assert b"To: taro@example.jp" in head_1 and b"To: hanako@example.jp" in head_2
    assert email.message_from_bytes(second, policy=policy.default)["To"] == "hanako@example.jp"
