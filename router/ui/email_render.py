"""An intent's email as the email channel renders it, for the dashboard to show.

The message is made by the channel's own code (`channels.email_compose.Composer` for mail
that needs something per recipient: the unsubscribe link and footer; else
`channels.email.RenderedContents`, the plain path), then read back with the standard
library's parser: what the preview shows is what the recipient's mail program gets. Files
are listed by name, type and size, never shown.
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from uuid import UUID

import msgspec

from channels.base import Outbound
from channels.email import RenderedContents
from channels.email_compose import Composer
from router.config import EmailConfig
from router.content import Content, decoded_size

PREVIEW_ADDRESS = "recipient@preview.invalid"
"""The To of a preview for an intent that planned no email delivery."""


class AttachmentNote(msgspec.Struct, frozen=True, kw_only=True):
    filename: str
    type: str
    disposition: str
    size: int | None  # bytes, decoded


class RenderedEmail(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    subject: str
    html: str | None
    text: str | None
    attachments: list[AttachmentNote]
    composed: bool  # rendered per recipient (unsubscribe link, footer)


_RENDERERS: dict[int, tuple[EmailConfig, Composer, RenderedContents]] = {}


def _renderers(config: EmailConfig) -> tuple[Composer, RenderedContents]:
    """One of each per configuration, kept as the channel keeps them (the footer is
    compiled once)."""
    kept = _RENDERERS.get(id(config))
    if kept is None or kept[0] is not config:
        if len(_RENDERERS) >= 4:
            _RENDERERS.clear()
        kept = _RENDERERS[id(config)] = (
            config,
            Composer(config),
            RenderedContents(config.from_address),
        )
    return kept[1], kept[2]


class EmailTarget(msgspec.Struct, frozen=True, kw_only=True):
    """The delivery the email is rendered for (its id names the Message-ID and the
    unsubscribe link)."""

    delivery_id: UUID
    intent_id: UUID
    address: str
    content_id: bytes
    member_id: str | None
    kind: str | None
    category: str | None


def render_email(
    config: EmailConfig, target: EmailTarget, content: Content
) -> RenderedEmail | None:
    """The email as it is (or would be) sent, or None when the intent has no email part."""
    email = content.email
    if email is None:
        return None
    outbound = Outbound(
        delivery_id=target.delivery_id,
        intent_id=target.intent_id,
        address=target.address,
        attempt=0,
        content_id=target.content_id,
        content=content,
        member_id=target.member_id,
        kind=target.kind or "promotional",
        category=target.category,
    )
    composer, plain = _renderers(config)
    composed = composer.render(outbound, email)
    message_id, data = composed if composed is not None else plain.render(outbound, email)
    parsed = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return RenderedEmail(
        message_id=message_id,
        subject=email.subject,
        html=_body(parsed, "html"),
        text=_body(parsed, "plain"),
        attachments=[
            AttachmentNote(
                filename=a.filename,
                type=a.type or "application/octet-stream",
                disposition=a.disposition,
                size=decoded_size(a.content),
            )
            for a in email.attachments
        ],
        composed=composed is not None,
    )


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    text: str = part.get_content()
    return text
