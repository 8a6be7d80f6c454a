"""The MIME structure around an email's text when it has more than text and HTML.

Extra alternatives (text/calendar, text/x-amp-html, ...) follow the text and HTML parts inside
multipart/alternative. Files wrap that body: inline ones (a Content-ID the HTML refers to as
`cid:`) beside it in multipart/related, the others after it in multipart/mixed:

    multipart/mixed
      multipart/related
        multipart/alternative (text, html, others) or the one text part
        image/png (inline, Content-ID)
      application/pdf (attachment)

The wrapping is bytes around the body entity's, so both renderings (the plain one and the
per-recipient one, whose body is encoded apart from its URL) put the same files around their
own body; each file is decoded and encoded once per content.
"""

from __future__ import annotations

import binascii
import secrets
from dataclasses import dataclass
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP

from router.content import Attachment, BodyPart


@dataclass(frozen=True, slots=True)
class Wrapping:
    """`content_type`: the message's Content-Type line; `opening` goes after the message's
    blank line, before the body entity's headers; `closing` after the body entity."""

    content_type: bytes
    opening: bytes
    closing: bytes


def wrapping(attachments: list[Attachment]) -> Wrapping | None:
    """The multiparts around the body, or None with no files."""
    inline = [a for a in attachments if a.disposition == "inline"]
    files = [a for a in attachments if a.disposition != "inline"]
    content_type = b""  # the Content-Type line of the entity built so far
    opening = b""
    closing = b""
    for subtype, parts in (("related", inline), ("mixed", files)):  # the innermost first
        if not parts:
            continue
        # "=_" never occurs in base64 or quoted-printable text.
        boundary = ("=_" + secrets.token_hex(12)).encode()
        first = b"--" + boundary + b"\r\n"
        # The entity built so far (if any) is this one's first part, before the files.
        opening = first + content_type + b"\r\n" + opening if content_type else first
        closing += b"".join(b"\r\n--" + boundary + b"\r\n" + file_part(a) for a in parts)
        closing += b"\r\n--" + boundary + b"--\r\n"
        content_type = b"Content-Type: multipart/" + subtype.encode()
        content_type += b'; boundary="' + boundary + b'"\r\n'
    if not content_type:
        return None
    return Wrapping(content_type, opening, closing)


def file_part(attachment: Attachment) -> bytes:
    """One file's headers and base64 body; the filename in RFC 2231 when it is not ASCII."""
    data = binascii.a2b_base64(attachment.content)
    maintype, subtype, params = split_type(attachment.type or "application/octet-stream")
    part = MIMEPart()
    part.set_content(
        data,
        maintype,
        subtype,
        disposition=attachment.disposition,
        filename=attachment.filename,
        cid=f"<{attachment.content_id}>" if attachment.content_id else None,
        params={**params, "name": attachment.filename},
    )
    return part.as_bytes(policy=SMTP)


def split_type(value: str) -> tuple[str, str, dict[str, str]]:
    """`text/calendar; method=REQUEST` as ("text", "calendar", {"method": "REQUEST"})."""
    kind, *rest = value.split(";")
    maintype, _, subtype = kind.strip().lower().partition("/")
    params: dict[str, str] = {}
    for item in rest:
        name, _, param = item.strip().partition("=")
        if name:
            params[name.strip().lower()] = param.strip().replace('"', "").replace("\\", "")
    return maintype, subtype, params


def add_other_parts(msg: EmailMessage | MIMEPart, parts: list[BodyPart]) -> None:
    """The extra alternatives after text and HTML, in the order given."""
    for part in parts:
        maintype, subtype, params = split_type(part.type)
        params.pop("charset", None)  # the text is sent as UTF-8
        if maintype == "text":
            msg.add_alternative(part.value, subtype=subtype, params=params)
        else:
            msg.add_alternative(part.value.encode(), maintype, subtype, params=params)


def other_part_type(part: BodyPart) -> str:
    """The Content-Type value of an extra alternative sent as UTF-8 quoted-printable."""
    maintype, subtype, params = split_type(part.type)
    params.pop("charset", None)
    extra = "".join(f'; {name}="{value}"' for name, value in params.items())
    return f'{maintype}/{subtype}; charset="utf-8"{extra}'
