"""Message content of an intent: email parts and LINE messages, stored once per distinct body.

`content_id` is the SHA-256 of the canonical JSON encoding, so the same campaign body sent
to many members is one row, and deliveries that share it can be sent together.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from email.utils import getaddresses, parseaddr
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


MailboxList = Annotated[
    str,
    documented(
        format="mailbox",
        description="One or more addresses, each an address or `Name <address>`, separated by"
        " commas (RFC 5322 address list), on one line",
    ),
]
MIME_TYPE = r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(?:[ \t]*;[ \t]*[!-~]+)*$"
"""`type/subtype`, optionally with `; name=value` parameters; nothing that starts a new line."""
MimeType = Annotated[str, documented(pattern=MIME_TYPE)]
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$"
"""Base64 as encoders write it for an API (what `decoded_size` takes): not empty, no line
breaks."""
MAX_ATTACHMENT_BYTES = 30 * 1024 * 1024
"""The files of one email together, decoded: SendGrid's limit for a whole message."""
ATTACHMENTS_TOO_LARGE = (
    f"The attachments of one email may total at most 30 MB ({MAX_ATTACHMENT_BYTES:,} bytes"
    " decoded)."
)


class Attachment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A file sent with the email as given: inline ones (with a `content_id` the HTML refers
    to as `cid:`) beside the text in multipart/related, the others in multipart/mixed."""

    content: Annotated[
        str,
        documented(
            minLength=1,
            pattern=BASE64,
            description="The file's bytes in base64 (RFC 4648, padded, without line breaks)",
        ),
    ]
    filename: Annotated[str, documented(minLength=1, pattern=ONE_LINE)]
    type: Annotated[
        str | None,
        documented(pattern=MIME_TYPE, description="Its MIME type; application/octet-stream"),
    ] = None
    disposition: Literal["attachment", "inline"] = "attachment"
    content_id: Annotated[
        str | None,
        documented(
            pattern=r"^[!-;=?-~]+$",
            description="The Content-ID (without angle brackets); required when inline",
        ),
    ] = None


class BodyPart(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One more alternative of the body (text/calendar, text/x-amp-html, ...), sent after the
    text and HTML parts in the order given."""

    type: MimeType
    value: str


class EmailContent(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False
):
    subject: Subject
    text: str | None = None
    html: str | None = None
    from_address: Mailbox | None = msgspec.field(default=None, name="from")
    reply_to: MailboxList | None = None
    headers: dict[HeaderName, HeaderValue] = msgspec.field(default_factory=dict)
    to: Annotated[
        list[Mailbox],
        msgspec.Meta(
            description="The To: header every recipient sees (one message to several people);"
            " empty: the recipient's own address. It is display only: the email goes to the"
            " intent's recipient alone"
        ),
    ] = msgspec.field(default_factory=list)
    cc: Annotated[
        list[Mailbox],
        msgspec.Meta(description="The Cc: header every recipient sees; display only"),
    ] = msgspec.field(default_factory=list)
    other_parts: list[BodyPart] = msgspec.field(default_factory=list)
    attachments: Annotated[
        list[Attachment],
        msgspec.Meta(
            description="Files, at most 30 MB together decoded. Under `prefer_line` an intent"
            " with attachments goes by email as well as to a LINE friend"
        ),
    ] = msgspec.field(default_factory=list)

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
    # A campaign's LINE aggregation unit (router.campaign_units): its pushes and multicasts
    # carry it as `customAggregationUnits`, so LINE counts their impressions and clicks
    # under it. Part of the content, so each campaign's content is its own.
    line_aggregation_unit: str | None = None

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
            if field is not None and (reason := _address_problem(field, name == "reply_to")):
                errors.append(FieldError(f"{prefix}email.{name}", reason))
        for name, mailboxes in (("to", email.to), ("cc", email.cc)):
            for n, mailbox in enumerate(mailboxes):
                if reason := _address_problem(mailbox):
                    errors.append(FieldError(f"{prefix}email.{name}[{n}]", reason))
        for n, part in enumerate(email.other_parts):
            if not re.fullmatch(MIME_TYPE, part.type) or "\n" in part.type:
                errors.append(FieldError(f"{prefix}email.other_parts[{n}].type", "not a MIME type"))
        for file in attachment_problems(email.attachments):
            errors.append(
                FieldError(f"{prefix}email.attachments[{file.index}]{file.field}", file.message)
            )
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


def _address_problem(value: str, several: bool = False) -> str | None:
    if "\r" in value or "\n" in value:
        return "line breaks are not allowed"
    addresses = [a for _, a in getaddresses([value])] if several else [parseaddr(value)[1]]
    for address in addresses or [""]:
        try:
            normalize_email(address)
        except InvalidIdentifier as exc:
            return str(exc)
    return None


class AttachmentProblem(msgspec.Struct, frozen=True):
    """`field`: `""` for the attachment as a whole, else `.content`, `.filename`, ..."""

    index: int
    field: str
    message: str


_CONTENT_ID = re.compile(r"[!-;=?-~]+")


def attachment_problems(attachments: list[Attachment]) -> list[AttachmentProblem]:
    """What SendGrid refuses in attachments: content that is not base64, no filename, an
    inline file without a content_id, and more than 30 MB of files in one message."""
    problems: list[AttachmentProblem] = []
    total = 0
    for n, a in enumerate(attachments):
        size = decoded_size(a.content)
        if not a.content:
            problems.append(AttachmentProblem(n, ".content", "The attachment content is required."))
        elif size is None:
            problems.append(
                AttachmentProblem(n, ".content", "The attachment content must be base64 encoded.")
            )
        if size is not None:
            total += size
        if not a.filename:
            problems.append(
                AttachmentProblem(n, ".filename", "The attachment filename parameter is required.")
            )
        elif "\r" in a.filename or "\n" in a.filename:
            problems.append(AttachmentProblem(n, ".filename", "line breaks are not allowed"))
        if a.type is not None and not re.fullmatch(MIME_TYPE, a.type):
            problems.append(
                AttachmentProblem(n, ".type", "The attachment type must be a MIME type.")
            )
        if a.disposition == "inline" and not a.content_id:
            problems.append(
                AttachmentProblem(
                    n,
                    ".content_id",
                    "The content_id parameter is required if the disposition is set to inline.",
                )
            )
        if a.content_id is not None and not _CONTENT_ID.fullmatch(a.content_id):
            problems.append(
                AttachmentProblem(
                    n, ".content_id", "The content_id may hold printable ASCII but <, > and spaces."
                )
            )
        if total > MAX_ATTACHMENT_BYTES:
            problems.append(AttachmentProblem(n, "", ATTACHMENTS_TOO_LARGE))
            break
    return problems


def decoded_size(content: str) -> int | None:
    """The size of base64 `content` decoded, or None when it is not `BASE64`: whole groups
    of four, padding only at the end, nothing but the alphabet (what strict decoding holds
    to)."""
    if len(content) % 4:
        return None
    try:
        return len(binascii.a2b_base64(content, strict_mode=True))
    except (binascii.Error, ValueError):
        return None
