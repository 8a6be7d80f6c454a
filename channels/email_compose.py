"""Composed email that differs per recipient: the one-click unsubscribe link, the
特定電子メール法 footer and the bounce address (docs/deliverability.md).

A content is prepared once: its headers rendered to bytes, each text part kept as a string
split where the recipient's unsubscribe URL goes. Per recipient only the URL is joined in and
each part encoded (quoted-printable in C, `binascii.b2a_qp`); no EmailMessage is built per
recipient, which is what made the plain path fast (`channels.email.RenderedContents`).
Mail that needs nothing per recipient stays on that plain path.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
import time
from binascii import b2a_qp
from collections import OrderedDict
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path

import jinja2
import msgspec

from channels.base import Outbound
from channels.email_mime import other_part_type, wrapping
from router.config import ConfigError, EmailConfig
from router.content import EmailContent
from router.deliverability.secret import token_secret
from router.deliverability.tokens import Unsubscribe, bounce_address, unsubscribe_token

log = logging.getLogger(__name__)

TAGS = (
    "<%unsubscribe_url%>",
    "<%asm_global_unsubscribe_raw_url%>",
    "<%asm_group_unsubscribe_raw_url%>",
    "<%asm_preferences_raw_url%>",
)
"""Body tags replaced by the recipient's unsubscribe URL (SendGrid's spellings too; its
preferences page is the router's unsubscribe page)."""
_TAG = re.compile("|".join(re.escape(tag) for tag in TAGS))

# Headers the router writes on promotional mail it links; a caller's own are left out then.
LIST_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})

DEFAULT_FOOTER_TEXT = """\
--
{% if sender_name %}送信者 / Sender: {{ sender_name }}
{% endif %}{% if sender_postal_address %}住所 / Address: {{ sender_postal_address }}
{% endif %}配信停止はこちら / Unsubscribe: {{ unsubscribe_url }}
"""
DEFAULT_FOOTER_HTML = """\
<div style="margin-top:2em;font-size:12px;color:#666666">
{% if sender_name %}<p>送信者 / Sender: {{ sender_name }}</p>
{% endif %}{% if sender_postal_address %}<p>住所 / Address: {{ sender_postal_address }}</p>
{% endif %}<p><a href="{{ unsubscribe_url }}">配信停止はこちら / Unsubscribe</a></p>
</div>
"""
MAX_CACHED_BYTES = 256 * 1024
"""A rendering kept for the next recipient is at most this large (files make it larger): the
cache of 256 contents stays small, and a large file is encoded again per recipient."""

# Stands for the URL while a footer template renders; split on afterwards. Characters no
# template escapes (HTML autoescaping leaves it alone) and no sender field holds.
_URL_MARK = "\x00unsubscribe-url\x00"


class RecipientHead:
    """To, Date and Message-ID: the lines every recipient's message starts with. The Date
    of the current second is formatted once. Addresses are validated ASCII addr-specs."""

    def __init__(self, from_address: str) -> None:
        self._domain = message_id_domain(from_address)
        self._date = (0, "")

    def _date_now(self) -> str:
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, formatdate(second, localtime=False, usegmt=True))
        return self._date[1]

    def render(self, message: Outbound, own_to: bool = True) -> tuple[str, bytes]:
        """The Message-ID and the lines; no To when the content names whom it shows
        (`own_to` false: one message to several people, written with the content)."""
        mid = f"<{message.delivery_id}@{self._domain}>"
        if own_to:
            head = f"To: {message.address}\r\nDate: {self._date_now()}\r\nMessage-ID: {mid}\r\n"
        else:
            head = f"Date: {self._date_now()}\r\nMessage-ID: {mid}\r\n"
        return mid, head.encode("ascii")


def message_id_domain(from_address: str) -> str:
    return from_address.rpartition("@")[2].strip(">").strip() or "delivery-router.invalid"


def header_part(
    email: EmailContent, default_from: str, leave_out: frozenset[str] = frozenset()
) -> EmailMessage:
    """From, Subject, Reply-To, the To and Cc shown when the content names them, and the
    caller's headers (less `leave_out`, lower case)."""
    msg = EmailMessage()
    msg["From"] = email.from_address or default_from
    msg["Subject"] = email.subject
    if email.reply_to:
        msg["Reply-To"] = email.reply_to
    if email.to:
        msg["To"] = ", ".join(email.to)
    if email.cc:
        msg["Cc"] = ", ".join(email.cc)
    for name, value in email.headers.items():
        if name.lower() not in leave_out:
            msg[name] = value
    return msg


def has_tag(email: EmailContent) -> bool:
    return any(part is not None and _TAG.search(part) for part in (email.text, email.html))


def without_tags(email: EmailContent) -> EmailContent:
    """The content with its unsubscribe tags removed: mail with no link to give them."""
    if not has_tag(email):
        return email
    return msgspec.structs.replace(
        email,
        text=None if email.text is None else _TAG.sub("", email.text),
        html=None if email.html is None else _TAG.sub("", email.html),
    )


@dataclass(frozen=True, slots=True)
class Footer:
    """The footer's text and HTML, each split where the unsubscribe URL goes."""

    text: tuple[str, ...]
    html: tuple[str, ...]


def load_footer(config: EmailConfig) -> Footer:
    """The footer templates read, compiled and rendered once (the sender's fields are fixed);
    a file that cannot be read or compiled stops the start."""
    fields = {
        "sender_name": config.sender_name,
        "sender_postal_address": config.sender_postal_address,
        "unsubscribe_url": _URL_MARK,
    }
    parts: list[tuple[str, ...]] = []
    for key, path, default, autoescape in (
        ("footer_text_template", config.footer_text_template, DEFAULT_FOOTER_TEXT, False),
        ("footer_html_template", config.footer_html_template, DEFAULT_FOOTER_HTML, True),
    ):
        source = default
        if path:
            try:
                source = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"[email] {key} {path!r}: {exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(f"[email] {key} {path!r}: not UTF-8 text") from exc
        # The text footer is plain text, not HTML: nothing to escape there.
        env = jinja2.Environment(
            autoescape=autoescape,  # noqa: S701
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        try:
            rendered = env.from_string(source).render(fields)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"[email] {key} {path!r}: {exc}") from exc
        parts.append(tuple(_crlf(rendered).split(_URL_MARK)))
    return Footer(text=parts[0], html=parts[1])


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def _joined(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    """Two texts split at the URL, one after the other."""
    return (*first[:-1], first[-1] + second[0], *second[1:])


_PART_HEADERS = (
    'Content-Type: {}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
)
_OTHER_PART_HEADERS = "Content-Type: {}\r\nContent-Transfer-Encoding: quoted-printable\r\n"


@dataclass(frozen=True, slots=True)
class _Part:
    """One text part, encoded but for the URL: the text between URLs is encoded once, each
    piece ending in a soft line break, so per recipient only the URL is encoded (on lines
    of its own, which soft breaks make invisible) and the pieces joined around it."""

    head: bytes  # what comes before the encoded text: a boundary and headers, or nothing
    encoded: tuple[bytes, ...]
    is_html: bool

    @classmethod
    def of(cls, head: bytes, pieces: tuple[str, ...], is_html: bool) -> _Part:
        """`pieces`: CRLF line ends, the last ending with one; the URL goes between them."""
        encoded = tuple(_qp(piece) for piece in pieces)
        return cls(head, tuple(piece + b"=\r\n" for piece in encoded[:-1]) + encoded[-1:], is_html)


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends: `b2a_qp` breaks a text without any line end
    with bare LFs, and no raw CR or LF is left in its output but line ends."""
    encoded = b2a_qp(text.encode("utf-8"), istext=True)
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass(frozen=True, slots=True)
class _Prepared:
    head: bytes  # the content's headers, MIME headers and the blank line
    parts: tuple[_Part, ...]
    tail: bytes
    list_headers: bool
    own_to: bool  # the recipient's own To line: the content names no To of its own


class Composer:
    """Renders the composed email that needs something per recipient, and names every
    composed email's envelope sender."""

    def __init__(self, config: EmailConfig, size: int = 256) -> None:
        self._from = config.from_address
        self._base_url = _checked_base_url(config.public_base_url)
        self._html_base_url = html.escape(self._base_url, quote=True)
        self._bounce_domain = config.bounce_domain
        self._config = config
        self._footer = load_footer(config)
        self._heads = RecipientHead(config.from_address)
        self._items: OrderedDict[tuple[bytes, bool], _Prepared | None] = OrderedDict()
        self._size = size
        self._secret: bytes | None = None
        if self._base_url and not (config.sender_name and config.sender_postal_address):
            log.warning(
                "[email] public_base_url is set but sender_name or sender_postal_address is"
                " empty: promotional email must name its sender and postal address in Japan"
            )

    def _key(self) -> bytes:
        if self._secret is None:
            self._secret = token_secret(self._config)
        return self._secret

    def envelope_sender(self, message: Outbound) -> str:
        """MAIL FROM of a composed email: its bounce address when there is a bounce domain."""
        if not self._bounce_domain:
            return self._from
        return bounce_address(self._key(), message.delivery_id, self._bounce_domain)

    def render(self, message: Outbound, email: EmailContent) -> tuple[str, bytes] | None:
        """The Message-ID and bytes for this recipient, or None when the content's plain
        rendering (unsubscribe tags removed) is the message."""
        if not self._base_url:
            return None
        promotional = message.kind == "promotional"
        key = (message.content_id, promotional)
        try:
            prepared = self._items[key]
        except KeyError:
            prepared = self._prepare(email, promotional)
            if prepared is None or len(prepared.tail) <= MAX_CACHED_BYTES:
                self._items[key] = prepared
                if len(self._items) > self._size:
                    self._items.popitem(last=False)
        if prepared is None:
            return None
        token = unsubscribe_token(self._key(), self._unsubscribe(message))
        url = f"{self._base_url}/u/{token}"
        mid, head = self._heads.render(message, prepared.own_to)
        out = [head]
        if prepared.list_headers:
            out.append(self._list_headers(url, token))
        out.append(prepared.head)
        url_qp = _qp(url) + b"=\r\n"  # the URL on lines of its own
        if self._html_base_url == self._base_url:
            html_qp = url_qp
        else:
            html_qp = _qp(f"{self._html_base_url}/u/{token}") + b"=\r\n"
        for part in prepared.parts:
            out.append(part.head)
            out.append((html_qp if part.is_html else url_qp).join(part.encoded))
        out.append(prepared.tail)
        return mid, b"".join(out)

    @staticmethod
    def _unsubscribe(message: Outbound) -> Unsubscribe:
        if message.member_id is None:
            return Unsubscribe(
                subject="a",
                recipient=message.address,
                category=message.category,
                delivery_id=message.delivery_id,
            )
        return Unsubscribe(
            subject="m",
            recipient=message.member_id,
            category=message.category,
            delivery_id=message.delivery_id,
        )

    def _list_headers(self, url: str, token: str) -> bytes:
        """RFC 2369 and RFC 8058: the link, the mailto beside it, one-click POST allowed."""
        value = f"<{url}>"
        if self._bounce_domain:
            value += f",\r\n <mailto:unsubscribe@{self._bounce_domain}?subject={token}>"
        return (
            f"List-Unsubscribe: {value}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        ).encode("ascii")

    def _prepare(self, email: EmailContent, promotional: bool) -> _Prepared | None:
        tagged = has_tag(email)
        if not (promotional or tagged):
            return None
        text = None if email.text is None else tuple(_TAG.split(_ended(email.text)))
        markup = None if email.html is None else tuple(_TAG.split(_ended(email.html)))
        if promotional and not tagged:
            if text is not None:  # a blank line, then the footer
                text = _line_ended(_joined(_joined(text, ("\r\n",)), self._footer.text))
            if markup is not None:
                markup = _line_ended(_with_html_footer(_ended(email.html or ""), self._footer.html))
        headers = header_part(email, self._from, LIST_HEADERS if promotional else frozenset())
        head = headers.as_bytes(policy=SMTP)[:-2]  # less the blank line: MIME headers follow
        head += b"MIME-Version: 1.0\r\n"
        # Each text's part headers; the extra alternatives have no URL in them.
        found = [
            (p, is_html, _PART_HEADERS.format("text/html" if is_html else "text/plain"))
            for p, is_html in ((text, False), (markup, True))
            if p is not None
        ]
        found += [
            ((_ended(o.value),), False, _OTHER_PART_HEADERS.format(other_part_type(o)))
            for o in email.other_parts
        ]
        tail = b""
        if (wrapped := wrapping(email.attachments)) is not None:
            head += wrapped.content_type + b"\r\n" + wrapped.opening
            tail = wrapped.closing
        own_to = not email.to
        if len(found) == 1:
            pieces, is_html, part_headers = found[0]
            head += part_headers.encode() + b"\r\n"
            return _Prepared(head, (_Part.of(b"", pieces, is_html),), tail, promotional, own_to)
        # "=_" never occurs in quoted-printable text ("=" is always "=3D" there).
        boundary = "=_" + secrets.token_hex(12)
        head += f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode()
        # Each part's text ends with a line end of its own; the CRLF before a boundary
        # belongs to the boundary (RFC 2046).
        parts = tuple(
            _Part.of(
                (b"" if i == 0 else b"\r\n")
                + f"--{boundary}\r\n".encode()
                + part_headers.encode()
                + b"\r\n",
                pieces,
                is_html,
            )
            for i, (pieces, is_html, part_headers) in enumerate(found)
        )
        tail = f"\r\n--{boundary}--\r\n".encode() + tail
        return _Prepared(head, parts, tail, promotional, own_to)


def _ended(text: str) -> str:
    """CRLF line ends, and one at the end (as the plain rendering's parts end)."""
    text = _crlf(text)
    return text if text.endswith("\r\n") else text + "\r\n"


def _line_ended(pieces: tuple[str, ...]) -> tuple[str, ...]:
    return pieces if pieces[-1].endswith("\r\n") else (*pieces[:-1], pieces[-1] + "\r\n")


def _with_html_footer(markup: str, footer: tuple[str, ...]) -> tuple[str, ...]:
    """The footer before the last </body>, or at the end when there is none."""
    at = markup.lower().rfind("</body>")
    if at < 0:
        return _joined((markup,), footer)
    return _joined(_joined((markup[:at],), footer), (markup[at:],))


def _checked_base_url(value: str) -> str:
    """`public_base_url` without its trailing slash; it goes into a header as it is."""
    url = value.rstrip("/")
    if url and (
        not url.startswith(("https://", "http://"))
        or not url.isascii()
        or any(c in url for c in ' <>",\t\r\n')
    ):
        raise ConfigError(
            f"[email] public_base_url {value!r} must be an https:// URL without spaces,"
            " quotes, commas or angle brackets"
        )
    return url
