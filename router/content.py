"""Message content of an intent: email parts and LINE messages, stored once per distinct body.

`content_id` is the SHA-256 of the canonical JSON encoding, so the same campaign body sent
to many members is one row, and deliveries that share it can be sent together.
"""

from __future__ import annotations

import hashlib
import re
from email.utils import parseaddr
from typing import Annotated, ClassVar, Literal

import msgspec

from router.identifiers import InvalidIdentifier, documented, normalize_email
from router.line.derived_text import derive_line_text
from router.line.messages import LineMessage, check_messages, text_message
from router.problems import FieldError
from router.wire_rules import Alternatives, unmet

# Header names the router writes itself; a caller may not set them.
RESERVED_HEADERS = frozenset(
    {
        "bcc",
        "cc",
        "content-transfer-encoding",
        "content-type",
        "date",
        "from",
        "message-id",
        "mime-version",
        "reply-to",
        "subject",
        "to",
    }
)


ONE_LINE = r"^[^\r\n]*$"
"""A header's text: line breaks would let a value start headers of its own."""
MAX_SUBJECT = 998

Subject = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_SUBJECT, pattern=ONE_LINE, description="One line"),
]
# RFC 5322 field name: printable US-ASCII but colon (and no space); the router's own refused.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_RESERVED_ALTERNATIVES = "|".join(
    "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in name)  # letters and "-" only
    for name in sorted(RESERVED_HEADERS)
)
HEADER_NAME = rf"^(?!(?:{_RESERVED_ALTERNATIVES})$){_FIELD_NAME.pattern}$"
HeaderName = Annotated[
    str,
    documented(
        pattern=HEADER_NAME,
        description="Printable US-ASCII without colon or space; not one the router sets"
        " itself: " + ", ".join(sorted(RESERVED_HEADERS)),
    ),
]
HeaderValue = Annotated[str, documented(pattern=ONE_LINE)]
Mailbox = Annotated[
    str,
    documented(
        format="mailbox",
        description="An address, or `Name <address>` (RFC 5322 mailbox), on one line",
    ),
]


class EmailContent(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False
):
    subject: Subject
    text: str | None = None
    html: str | None = None
    from_address: Mailbox | None = msgspec.field(default=None, name="from")
    reply_to: Mailbox | None = None
    headers: dict[HeaderName, HeaderValue] = msgspec.field(default_factory=dict)

    alternatives: ClassVar[tuple[Alternatives, ...]] = (
        Alternatives(("text", "html"), "give text, html or both"),
    )


class LineContent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    messages: Annotated[
        list[LineMessage],
        msgspec.Meta(
            min_length=1,
            max_length=5,
            description="Checked against LINE's documented limits as well (text lengths in"
            " UTF-16 units, https media URLs, flex and template sizes): a message LINE would"
            " refuse is refused with 400 naming the field",
        ),
    ]


class Relayed(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    """An email received by the SMTP relay: sent on unchanged, from its original sender.

    `ret` and `envid` are the sender's DSN parameters of MAIL FROM (RFC 3461), decoded:
    what a delivery status notification returns (FULL message or HDRS only) and the
    envelope's own id, reported back as Original-Envelope-Id."""

    message_sha256: str  # hex; the bytes are in relayed_messages
    envelope_from: str
    message_id: str | None = None
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    relay_host: str | None = None  # the name the relay received it under (Reporting-MTA)
    # Some recipient gave NOTIFY or ORCPT (kept in relayed_recipients): only then are they read.
    recipient_dsn: bool = False


class RelayRecipient(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """One relayed recipient's DSN parameters of RCPT TO (RFC 3461), decoded: `notify` is
    None (not given: failures are reported), ["NEVER"], or some of SUCCESS, FAILURE, DELAY;
    `orcpt` is the original recipient as `addr-type;address`."""

    notify: list[str] | None = None
    orcpt: str | None = None


class Content(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    email: EmailContent | None = None
    line: LineContent | None = None
    relayed: Relayed | None = None

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    def line_messages(self) -> list[LineMessage]:
        """The LINE messages to send: the caller's, or one text derived from the email."""
        if self.line is not None:
            return self.line.messages
        assert self.email is not None
        return [
            text_message(derive_line_text(self.email.subject, self.email.text, self.email.html))
        ]


def content_id(encoded: bytes) -> bytes:
    return hashlib.sha256(encoded).digest()


def check_content(content: Content, prefix: str = "") -> list[FieldError]:
    """Rules msgspec's types cannot say: LINE limits, header safety, addresses."""
    errors: list[FieldError] = []
    email = content.email
    if email is not None:
        for rule in unmet(email):
            errors.append(FieldError(f"{prefix}email", rule.message))
        for name, field in (("from", email.from_address), ("reply_to", email.reply_to)):
            if field is not None and (reason := _address_problem(field)):
                errors.append(FieldError(f"{prefix}email.{name}", reason))
        for name, value in email.headers.items():
            if not _FIELD_NAME.fullmatch(name):
                errors.append(FieldError(f"{prefix}email.headers", f"bad header name {name!r}"))
            elif name.lower() in RESERVED_HEADERS:
                errors.append(FieldError(f"{prefix}email.headers", f"{name} is set by the router"))
            if "\r" in value or "\n" in value:
                errors.append(
                    FieldError(f"{prefix}email.headers.{name}", "line breaks are not allowed")
                )
        # Subject's pattern already refuses these, but for Python's `$` (as msgspec applies
        # it) a final line break still matches.
        if "\r" in email.subject or "\n" in email.subject:
            errors.append(FieldError(f"{prefix}email.subject", "line breaks are not allowed"))
    if content.line is not None:
        for problem in check_messages(content.line.messages):
            errors.append(FieldError(f"{prefix}line.{problem.field}", problem.reason))
    return errors


def _address_problem(value: str) -> str | None:
    if "\r" in value or "\n" in value:
        return "line breaks are not allowed"
    _, address = parseaddr(value)
    try:
        normalize_email(address)
    except InvalidIdentifier as exc:
        return str(exc)
    return None
