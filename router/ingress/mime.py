"""Reading a relayed email: what LINE should say, and how the sender wants it routed.

The message itself is relayed unchanged; this module only extracts the subject, a readable
text for LINE (the text/plain part, or the HTML made readable) with the unsubscribe footer
reduced to its link, and the optional `X-Router-*` steering headers.
"""

from __future__ import annotations

import email.policy
import re
from email import errors, message_from_bytes
from email.message import EmailMessage

import msgspec

from router.line.derived_text import html_to_text

# Structural defects that mean the message cannot be read as its sender meant it.
_FATAL_DEFECTS = (
    errors.NoBoundaryInMultipartDefect,
    errors.StartBoundaryNotFoundDefect,
    errors.CloseBoundaryNotFoundDefect,
    errors.MultipartInvariantViolationDefect,
    errors.MissingHeaderBodySeparatorDefect,
    errors.InvalidMultipartContentTransferEncodingDefect,
)
_UNSUBSCRIBE = re.compile(
    r"unsubscribe|opt[ -]?out|配信停止|配信解除|登録解除|配信を停止|メール配信の停止|受信拒否",
    re.IGNORECASE,
)
_URL = re.compile(r"https?://[^\s<>\"')\]]+")


class MalformedMessage(Exception):
    """The message cannot be delivered as it is; the text is the SMTP reason."""


class ReadMessage(msgspec.Struct, kw_only=True):
    subject: str
    line_text: str
    message_id: str | None
    route: str | None
    campaign: str | None
    idempotency_key: str | None


def read(data: bytes) -> ReadMessage:
    msg = message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    for part in msg.walk():
        for defect in part.defects:
            if isinstance(defect, _FATAL_DEFECTS):
                raise MalformedMessage(f"malformed MIME: {type(defect).__name__}")
    try:
        subject = str(msg.get("Subject", "") or "").strip()
        text_part = msg.get_body(preferencelist=("plain",))
        html_part = msg.get_body(preferencelist=("html",))
        text = text_part.get_content() if text_part is not None else None
        html = html_part.get_content() if html_part is not None else None
    except (LookupError, ValueError, UnicodeError, errors.HeaderParseError) as exc:
        raise MalformedMessage(f"malformed MIME: {exc}") from None
    if not (text and text.strip()) and not (html and html.strip()):
        raise MalformedMessage("the message has no text/plain or text/html body")
    body = text if text and text.strip() else html_to_text(html or "")
    unsubscribe = _list_unsubscribe_url(str(msg.get("List-Unsubscribe", "") or ""))
    return ReadMessage(
        subject=subject or "(no subject)",
        line_text=reduce_unsubscribe_footer(body, unsubscribe),
        message_id=_header(msg, "Message-ID"),
        route=_header(msg, "X-Router-Route"),
        campaign=_header(msg, "X-Router-Campaign"),
        idempotency_key=_header(msg, "X-Router-Idempotency-Key"),
    )


def reduce_unsubscribe_footer(text: str, unsubscribe_url: str | None = None) -> str:
    """Paragraphs about unsubscribing become one line with their link (or are dropped)."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    kept: list[str] = []
    link_given = False
    for paragraph in paragraphs:
        if _UNSUBSCRIBE.search(paragraph):
            urls = _URL.findall(paragraph)
            url = next((u for u in urls if _UNSUBSCRIBE.search(u) or "unsub" in u), None)
            url = url or (urls[0] if urls else unsubscribe_url)
            if url and not link_given:
                kept.append(f"配信停止: {url}")
                link_given = True
            continue
        kept.append(paragraph.strip())
    return "\n\n".join(p for p in kept if p)


def _list_unsubscribe_url(value: str) -> str | None:
    for candidate in re.findall(r"<([^>]+)>", value):
        if candidate.startswith(("https://", "http://")):
            return str(candidate)
    return None


def _header(msg: EmailMessage, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None
