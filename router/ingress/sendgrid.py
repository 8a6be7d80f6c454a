"""SendGrid v3 Mail Send bodies as router intents.

A SendGrid client changes its host and nothing else, so the rules a client relies on are
SendGrid's: the request is validated as a whole (1,000 personalizations, 1,000 recipients,
a subject and content) and either everything is taken or nothing is. Each recipient then
becomes one intent, so a member who is a linked LINE friend gets a LINE push instead of the
email.

A personalization stays one message: every copy shows its To and Cc (bcc hidden), files go
as given, and an intent with files reaches a LINE friend by email as well (docs/sendgrid.md).
A `template_id` names a template stored through `/v3/templates`; its active version is
rendered for each personalization (router/ingress/sendgrid_templates.py). What only changes
how SendGrid itself tracks mail is accepted and ignored (tracking_settings other than
subscription tracking, mail_settings other than sandbox mode, ip_pool_name). An unsubscribe
group (`asm`, one made with `/v3/asm/groups`) or subscription tracking makes the mail
promotional, with the router's own unsubscribe link and opt-outs (docs/deliverability.md);
without either it is transactional. A `batch_id` (made with `/v3/mail/batch`) is stored
with the intents, so the scheduled send can be cancelled or paused
(router.store.mail_batches).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formataddr
from typing import Any, Literal
from uuid import uuid4

import msgspec

from router.content import (
    ATTACHMENTS_TOO_LARGE,
    MIME_TYPE,
    BodyPart,
    Content,
    EmailContent,
    LineContent,
    attachment_problems,
    check_content,
)
from router.content import Attachment as FileAttachment
from router.database import Connection
from router.identifiers import InvalidIdentifier, normalize_email
from router.ingress import sendgrid_templates
from router.intake_port import AcceptIntents
from router.intents import CUSTOM_ARGS_KEY, IntentRequest, IntentResult, Kind
from router.metrics import count_accepted
from router.store import asm_groups, email_templates, mail_batches
from router.store.email_templates import Template, Version

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 100
"""SendGrid allows 255; categories become the intent's tags, which are at most 100."""
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SEND_AHEAD = timedelta(hours=72)
MAX_SUBJECT_LENGTH = 998
MAX_IDEMPOTENCY_KEY = 255
MAX_TEMPLATE_ID = 64
MAX_REPLY_TO_LIST = 1000
MAX_GROUPS_TO_DISPLAY = 25

DOCS = "https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors"
UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"
AUTHORIZATION_REQUIRED = "authorization required"

RecipientKind = Literal["to", "cc", "bcc"]

CustomArgs = dict[str, str | int | float | bool]
"""SendGrid takes numbers and booleans as custom_args values too, and echoes them as strings."""


# --- the wire: SendGrid's request and error bodies -------------------------------------------


class Address(msgspec.Struct, kw_only=True):
    email: str
    name: str | None = None


class Personalization(msgspec.Struct, kw_only=True):
    to: list[Address] = msgspec.field(default_factory=list)
    cc: list[Address] = msgspec.field(default_factory=list)
    bcc: list[Address] = msgspec.field(default_factory=list)
    from_: Address | None = msgspec.field(default=None, name="from")
    subject: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    substitutions: dict[str, str] = msgspec.field(default_factory=dict)
    dynamic_template_data: dict[str, Any] | None = None
    custom_args: CustomArgs = msgspec.field(default_factory=dict)
    send_at: int | None = None


class ContentPart(msgspec.Struct, kw_only=True):
    type: str
    value: str


class Attachment(msgspec.Struct, kw_only=True):
    """Content and filename are required; their absence is answered as SendGrid words it."""

    content: str | None = None
    filename: str | None = None
    type: str | None = None
    disposition: str | None = None
    content_id: str | None = None


class Toggle(msgspec.Struct, kw_only=True):
    enable: bool = False


class MailSettings(msgspec.Struct, kw_only=True):
    """Only sandbox mode changes what the router does; the other settings are SendGrid's own."""

    sandbox_mode: Toggle | None = None


class Asm(msgspec.Struct, kw_only=True):
    """SendGrid's unsubscribe groups; the router keeps its own opt-outs per member."""

    group_id: int
    groups_to_display: list[int] = msgspec.field(default_factory=list)


class MailSend(msgspec.Struct, kw_only=True):
    personalizations: list[Personalization]
    from_: Address | None = msgspec.field(default=None, name="from")
    reply_to: Address | None = None
    reply_to_list: list[Address] = msgspec.field(default_factory=list)
    subject: str | None = None
    content: list[ContentPart] = msgspec.field(default_factory=list)
    attachments: list[Attachment] = msgspec.field(default_factory=list)
    template_id: str | None = None
    sections: dict[str, str] = msgspec.field(default_factory=dict)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    categories: list[str] = msgspec.field(default_factory=list)
    custom_args: CustomArgs = msgspec.field(default_factory=dict)
    send_at: int | None = None
    batch_id: str | None = None
    asm: Asm | None = None
    ip_pool_name: str | None = None
    mail_settings: MailSettings | None = None
    tracking_settings: dict[str, Any] | None = None


class SendGridError(msgspec.Struct, kw_only=True):
    """One entry of SendGrid's error body; `field` and `help` are null rather than absent."""

    message: str
    field: str | None = None
    help: str | None = None


class ErrorBody(msgspec.Struct):
    errors: list[SendGridError]


class Invalid(Exception):
    """The request is refused as a whole, with SendGrid's status and error entries."""

    def __init__(self, errors: list[SendGridError], status: int = 400) -> None:
        super().__init__(errors[0].message)
        self.errors = errors
        self.status = status


def error_body(errors: list[SendGridError]) -> bytes:
    return msgspec.json.encode(ErrorBody(errors))


def _error(message: str, field: str | None = None) -> SendGridError:
    return SendGridError(message=message, field=field, help=DOCS if field else None)


# --- decoding and validation -----------------------------------------------------------------


_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def decode(body: bytes) -> MailSend:
    try:
        return msgspec.json.decode(body, type=MailSend)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT_PATH.search(message)
        field = dotted(match.group("path")) if match else None
        if match:
            message = message[: match.start()]
        raise Invalid([_error(message, field or None)]) from None
    except msgspec.DecodeError as exc:
        raise Invalid([_error(f"The request body is not valid JSON ({exc})")]) from None


def dotted(path: str) -> str:
    """msgspec's `personalizations[0].to[1]` in SendGrid's spelling, `personalizations.0.to.1`."""
    return re.sub(r"\[(\d+)\]", r".\1", path)


class _Recipient(msgspec.Struct, kw_only=True):
    index: int
    kind: RecipientKind
    position: int
    address: str

    @property
    def field(self) -> str:
        return f"personalizations.{self.index}.{self.kind}.{self.position}.email"


def _recipients(mail: MailSend, errors: list[SendGridError]) -> list[_Recipient]:
    out: list[_Recipient] = []
    for i, p in enumerate(mail.personalizations):
        if not p.to:
            errors.append(
                _error(
                    "The to array is required for all personalization objects, and must have "
                    "at least one email object with a valid email address.",
                    f"personalizations.{i}.to",
                )
            )
        seen: set[str] = set()
        groups: tuple[tuple[RecipientKind, list[Address]], ...] = (
            ("to", p.to),
            ("cc", p.cc),
            ("bcc", p.bcc),
        )
        for kind, addresses in groups:
            for j, a in enumerate(addresses):
                field = f"personalizations.{i}.{kind}.{j}.email"
                try:
                    address = normalize_email(a.email)
                except InvalidIdentifier as exc:
                    errors.append(_error(f"Does not contain a valid address: {exc}.", field))
                    continue
                if address.lower() in seen:
                    errors.append(
                        _error(
                            "Each email address in the personalization block should be unique "
                            f"between to, cc, and bcc. {a.email} appears more than once.",
                            f"personalizations.{i}",
                        )
                    )
                    continue
                seen.add(address.lower())
                out.append(_Recipient(index=i, kind=kind, position=j, address=address))
    return out


def _check_request(mail: MailSend, now: datetime) -> list[SendGridError]:
    errors: list[SendGridError] = []
    n = len(mail.personalizations)
    if n == 0:
        errors.append(_error("You must have at least one personalization.", "personalizations"))
    elif n > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                f"The personalization block is limited to {MAX_PERSONALIZATIONS} "
                f"personalizations per API request. You have provided {n} personalizations. "
                "Please consider splitting this into multiple requests and resending your "
                "request.",
                "personalizations",
            )
        )
    total = sum(len(p.to) + len(p.cc) + len(p.bcc) for p in mail.personalizations)
    if total > MAX_RECIPIENTS:
        errors.append(
            _error(
                f"There is a limit of {MAX_RECIPIENTS} total recipients (to + cc + bcc) per "
                f"request; this one has {total}.",
                "personalizations",
            )
        )
    errors.extend(_content_rules(mail))
    errors.extend(_attachment_rules(mail))
    errors.extend(_reply_to_rules(mail))
    if mail.from_ is None:
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
                "from",
            )
        )
    # A template's subject is known once it is rendered (`_templated`).
    if not (mail.template_id or mail.subject or all(p.subject for p in mail.personalizations)):
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
            )
        )
    if len(mail.categories) > MAX_CATEGORIES:
        errors.append(_error(f"Too many categories: at most {MAX_CATEGORIES}.", "categories"))
    for k, category in enumerate(mail.categories):
        if not category or len(category) > MAX_CATEGORY_LENGTH:
            errors.append(
                _error(
                    f"A category must be 1 to {MAX_CATEGORY_LENGTH} characters "
                    "(delivery-router keeps categories as intent tags).",
                    f"categories.{k}",
                )
            )
    for where, send_at in _send_times(mail):
        try:
            moment = datetime.fromtimestamp(send_at, UTC) if send_at >= 0 else None
        except (OverflowError, OSError, ValueError):  # past what a clock can hold
            moment = None
        if moment is None or moment - now > MAX_SEND_AHEAD:
            errors.append(
                _error(
                    "send_at is a unix timestamp at most 72 hours ahead.",
                    f"{where}send_at",
                )
            )
    for i, p in enumerate(mail.personalizations):
        if len(msgspec.json.encode(merged_custom_args(mail, p))) > MAX_CUSTOM_ARGS_BYTES:
            errors.append(
                _error(
                    f"custom_args may total at most {MAX_CUSTOM_ARGS_BYTES:,} bytes.",
                    f"personalizations.{i}.custom_args",
                )
            )
        subject = p.subject or mail.subject or ""
        if len(subject) > MAX_SUBJECT_LENGTH:
            field = f"personalizations.{i}.subject" if p.subject else "subject"
            errors.append(_error(f"The subject is at most {MAX_SUBJECT_LENGTH} characters.", field))
    return errors


def _content_rules(mail: MailSend) -> list[SendGridError]:
    """The template or the content parts."""
    errors: list[SendGridError] = []
    if mail.template_id is not None:
        # Looked up among the stored templates when the request is submitted.
        errors.extend(_template_id_rules(mail.template_id))
    elif not mail.content:
        errors.append(
            _error(
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
                "content",
            )
        )
    ranks = [_CONTENT_RANK.get(part.type.lower(), 2) for part in mail.content]
    if ranks != sorted(ranks):
        errors.append(_error(CONTENT_ORDER, "content"))
    for k, part in enumerate(mail.content):
        if not re.fullmatch(MIME_TYPE, part.type):
            errors.append(
                _error(
                    f"The content type must be a MIME type such as text/plain; {part.type!r} is"
                    " not one.",
                    f"content.{k}.type",
                )
            )
        elif not part.value:
            errors.append(
                _error(
                    "The content value must be a string at least one character in length.",
                    f"content.{k}.value",
                )
            )
    return errors


def _template_id_rules(template_id: str) -> list[SendGridError]:
    if not template_id or len(template_id) > MAX_TEMPLATE_ID:
        return [_error("The template_id must be a template's id.", "template_id")]
    return []


CONTENT_ORDER = (
    "If present, text/plain must be first, followed by text/html, followed by any other content."
)
_CONTENT_RANK = {"text/plain": 0, "text/html": 1}


def _attachment_rules(mail: MailSend) -> list[SendGridError]:
    """Files and inline images."""
    errors: list[SendGridError] = []
    for n, a in enumerate(mail.attachments):
        if a.disposition not in (None, "attachment", "inline"):
            errors.append(
                _error(
                    'The disposition of an attachment can be either "inline" or "attachment".',
                    f"attachments.{n}.disposition",
                )
            )
        if a.content is None:
            errors.append(_error("The attachment content is required.", f"attachments.{n}.content"))
        if a.filename is None:
            errors.append(
                _error(
                    "The attachment filename parameter is required.", f"attachments.{n}.filename"
                )
            )
    for problem in attachment_problems(_attachments(mail)):
        errors.append(_error(problem.message, f"attachments.{problem.index}{problem.field}"))
    return errors


def _attachments(mail: MailSend) -> list[FileAttachment]:
    return [
        FileAttachment(
            content=a.content or "",
            filename=a.filename if a.filename is not None else "-",
            type=a.type,
            disposition="inline" if a.disposition == "inline" else "attachment",
            content_id=a.content_id,
        )
        for a in mail.attachments
    ]


def _reply_to_rules(mail: MailSend) -> list[SendGridError]:
    """Where replies go."""
    errors: list[SendGridError] = []
    if mail.reply_to is not None and mail.reply_to_list:
        errors.append(
            _error(
                "The reply_to and reply_to_list parameters are mutually exclusive; give one.",
                "reply_to_list",
            )
        )
    if len(mail.reply_to_list) > MAX_REPLY_TO_LIST:
        errors.append(
            _error(f"reply_to_list holds at most {MAX_REPLY_TO_LIST} addresses.", "reply_to_list")
        )
    for n, a in enumerate(mail.reply_to_list):
        try:
            normalize_email(a.email)
        except InvalidIdentifier as exc:
            errors.append(
                _error(f"Does not contain a valid address: {exc}.", f"reply_to_list.{n}.email")
            )
    return errors


async def _unknown_references(conn: Connection, mail: MailSend) -> list[SendGridError]:
    """The unsubscribe groups and the batch the request names must exist, as with SendGrid
    (an unknown group would give recipients a link to a group no one can list or manage)."""
    errors: list[SendGridError] = []
    if mail.asm is not None:
        asm = mail.asm
        if len(asm.groups_to_display) > MAX_GROUPS_TO_DISPLAY:
            errors.append(
                _error(
                    f"groups_to_display may list at most {MAX_GROUPS_TO_DISPLAY} groups.",
                    "asm.groups_to_display",
                )
            )
        named = [asm.group_id, *asm.groups_to_display]
        known = await asm_groups.existing(conn, [i for i in named if 0 < i < 2**31])
        if asm.group_id not in known:
            errors.append(
                _error(
                    f"No unsubscribe group has the id {asm.group_id}: create it with "
                    "POST /v3/asm/groups first.",
                    "asm.group_id",
                )
            )
        for k, group_id in enumerate(asm.groups_to_display):
            if group_id not in known:
                errors.append(
                    _error(
                        f"No unsubscribe group has the id {group_id}.",
                        f"asm.groups_to_display.{k}",
                    )
                )
    if mail.batch_id is not None and not await mail_batches.exists(conn, mail.batch_id):
        errors.append(
            _error("The batch_id is not valid: create one with POST /v3/mail/batch.", "batch_id")
        )
    return errors


def _send_times(mail: MailSend) -> Iterator[tuple[str, int]]:
    if mail.send_at is not None:
        yield "", mail.send_at
    for i, p in enumerate(mail.personalizations):
        if p.send_at is not None:
            yield f"personalizations.{i}.", p.send_at


# --- conversion ------------------------------------------------------------------------------


def substitute(text: str | None, values: dict[str, str]) -> str | None:
    """SendGrid's legacy substitutions: plain replacement of each key, in one pass.

    One pass over the longest keys first, so a replacement value is never substituted again
    and `-name-` does not clobber `-name-full-`."""
    keys = sorted((k for k in values if k), key=len, reverse=True)
    if text is None or not keys:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in keys))
    return pattern.sub(lambda m: values[m.group(0)], text)


def _mailbox(address: Address) -> str:
    """`Name <address>`; an address that cannot be one (non-ASCII) is passed on as given, for
    the content check to refuse with its field named."""
    email = address.email.strip()
    try:
        return formataddr((address.name or "", email))
    except UnicodeEncodeError:
        return email


def _email_content(
    mail: MailSend, p: Personalization, attachments: list[FileAttachment]
) -> EmailContent:
    text = next((c.value for c in mail.content if c.type.lower() == "text/plain"), None)
    html = next((c.value for c in mail.content if c.type.lower() == "text/html"), None)
    subject = p.subject or mail.subject or ""

    def fill(value: str | None) -> str | None:
        return substitute(substitute(value, p.substitutions), mail.sections)

    sender = p.from_ or mail.from_
    reply_to = [mail.reply_to] if mail.reply_to is not None else mail.reply_to_list
    return EmailContent(
        subject=fill(subject) or subject,
        text=fill(text),
        html=fill(html),
        from_address=_mailbox(sender) if sender is not None else None,
        reply_to=", ".join(_mailbox(a) for a in reply_to) if reply_to else None,
        headers={**mail.headers, **p.headers},
        to=_shown_to(p),
        cc=[_mailbox(a) for a in p.cc],
        other_parts=[
            BodyPart(type=c.type, value=fill(c.value) or "")
            for c in mail.content
            if c.type.lower() not in _CONTENT_RANK
        ],
        attachments=attachments,
    )


def _shown_to(p: Personalization) -> list[str]:
    """The personalization's To: header, for every copy of its message. One bare address
    with no copies is what each recipient's own To: says already: left out, so such
    personalizations with the same body share one stored content."""
    if len(p.to) == 1 and not p.to[0].name and not p.cc and not p.bcc:
        return []
    return [_mailbox(a) for a in p.to]


def _content_errors(
    content: EmailContent, i: int, p: Personalization, mail_reply_to: bool
) -> list[SendGridError]:
    """The router's own content rules (header safety, addresses), named as SendGrid names them."""
    mapped: list[SendGridError] = []
    for problem in check_content(Content(email=content)):
        name = problem.field.removeprefix("email").lstrip(".")
        if name.startswith("attachments"):
            continue  # the door's own attachment rules named these already
        if name.startswith(("to[", "cc[")):
            kind, _, rest = name.partition("[")
            field = f"personalizations.{i}.{kind}.{rest.partition(']')[0]}.email"
        elif name.startswith("other_parts"):
            field = "content"
        elif name.startswith("headers"):
            field = f"personalizations.{i}.headers" if p.headers else "headers"
        elif name == "from":
            field = f"personalizations.{i}.from.email" if p.from_ else "from.email"
        elif name == "reply_to":
            field = "reply_to.email" if mail_reply_to else "reply_to_list"
        elif name == "subject":
            field = f"personalizations.{i}.subject" if p.subject else "subject"
        else:
            field = "content"
        mapped.append(_error(problem.message, field))
    return mapped


def message_id(scope: str) -> str:
    """A SendGrid-like 22-character id for one request (`scope`: its own random one, or the
    client's idempotency key, so a retry under that key gets the id the first one got)."""
    raw = hashlib.sha256(scope.encode()).digest()[:16]
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def idempotency_key(key: str, recipient: _Recipient) -> str:
    """One intent's key under the client's `Idempotency-Key`: a retry of the request finds
    each of its recipients' intents, and the same key on another body is refused (409)."""
    token = f"{key}:{recipient.index}:{recipient.address.lower()}"
    return "sendgrid:" + hashlib.sha256(token.encode()).hexdigest()


class Conversion(msgspec.Struct, kw_only=True):
    """Intents ready for `accept`, with the SendGrid field each one answers for."""

    message_id: str
    requests: list[IntentRequest]
    fields: list[str]


class ChosenTemplate(msgspec.Struct, frozen=True):
    """The stored template a request's `template_id` names, with its active version."""

    template: Template | None
    version: Version | None


def _templated(
    mail: MailSend, i: int, p: Personalization, chosen: ChosenTemplate, content: EmailContent
) -> tuple[EmailContent, LineContent | None, list[SendGridError]]:
    """One personalization's content from the template (errors name their field)."""
    reason = sendgrid_templates.unusable(chosen.template, chosen.version)
    if reason is not None or chosen.template is None or chosen.version is None:
        return content, None, [_error(reason or "no template", "template_id")]
    if chosen.template.generation == "legacy":
        if p.dynamic_template_data is not None:
            message = (
                f"The template {chosen.template.id} is a legacy template: it takes "
                "substitutions, not dynamic_template_data; use a dynamic (d-) template."
            )
            return content, None, [_error(message, "template_id")]
        return sendgrid_templates.legacy_content(chosen.version, content), None, []
    email, line, problems = sendgrid_templates.dynamic_content(
        chosen.version,
        content,
        p.dynamic_template_data or {},
        f"personalizations.{i}.dynamic_template_data",
    )
    errors = [_error(problem.message, problem.field) for problem in problems]
    if not email.subject and not problems:
        errors.append(
            _error(
                "The subject is required: the template's active version has none, and "
                "neither the request nor this personalization gives one.",
                "subject",
            )
        )
    return email, line, errors


def convert(
    mail: MailSend, key: str | None, now: datetime, chosen: ChosenTemplate | None = None
) -> Conversion:
    """Validate the whole request, then build one intent per recipient; raises `Invalid`.
    `chosen`: the template `template_id` names, as looked up by `submit`."""
    errors = _check_request(mail, now)
    recipients = _recipients(mail, errors)
    attachments = _attachments(mail)
    contents: list[EmailContent] = []
    lines: list[LineContent | None] = []
    for i, p in enumerate(mail.personalizations):
        content = _email_content(mail, p, attachments)
        line = None
        if chosen is not None and not errors:
            content, line, problems = _templated(mail, i, p, chosen, content)
            errors.extend(problems)
            if problems:
                break
        if (mail.content or chosen is not None) and mail.from_ is not None:
            errors.extend(_content_errors(content, i, p, mail.reply_to is not None))
        contents.append(content)
        lines.append(line)
    if errors:
        too_large = any(e.message == ATTACHMENTS_TOO_LARGE for e in errors)
        raise Invalid(errors, 413 if too_large else 400)

    sg_message_id = message_id("key:" + key if key is not None else "request:" + uuid4().hex)
    categories = list(dict.fromkeys(mail.categories))
    kind, category = _kind_and_category(mail)
    requests: list[IntentRequest] = []
    for r in recipients:
        p = mail.personalizations[r.index]
        metadata: dict[str, Any] = {"sg_message_id": sg_message_id}
        custom_args = merged_custom_args(mail, p)
        if custom_args:
            metadata[CUSTOM_ARGS_KEY] = custom_args
        if r.kind != "to":
            metadata["sg_recipient_type"] = r.kind
        send_at = p.send_at if p.send_at is not None else mail.send_at
        requests.append(
            IntentRequest(
                email_address=r.address,
                # A copy is a copy of the email: only the addressee is worth a LINE push.
                route="prefer_line" if r.kind == "to" else "email_only",
                email=contents[r.index],
                # A template's LINE version is for the addressee, who may be a LINE friend.
                line=lines[r.index] if r.kind == "to" else None,
                idempotency_key=None if key is None else idempotency_key(key, r),
                campaign=categories[0] if categories else None,
                kind=kind,
                category=category,
                tags=categories,
                metadata=metadata,
                send_at=datetime.fromtimestamp(send_at, UTC) if send_at is not None else None,
            )
        )
    return Conversion(
        message_id=sg_message_id, requests=requests, fields=[r.field for r in recipients]
    )


def merged_custom_args(mail: MailSend, p: Personalization) -> dict[str, str]:
    """The message's custom_args under the personalization's (which win), every value a
    string as SendGrid posts them: numbers and booleans as their JSON text (7, 1.5, true)."""
    merged = {**mail.custom_args, **p.custom_args}
    return {
        k: v if isinstance(v, str) else msgspec.json.encode(v).decode() for k, v in merged.items()
    }


def _kind_and_category(mail: MailSend) -> tuple[Kind, str | None]:
    """SendGrid adds unsubscribe links only to mail sent with an unsubscribe group (`asm`)
    or subscription tracking on; everything else it sends as it is. So: mail with either is
    promotional (List-Unsubscribe, the footer, opt-outs apply), with the group as its
    category (`asm-<group_id>`: recipients can leave that group alone); the rest is
    transactional, as a password reset sent through SendGrid is."""
    if mail.asm is not None:
        return "promotional", f"asm-{mail.asm.group_id}"
    tracking = (mail.tracking_settings or {}).get("subscription_tracking")
    if isinstance(tracking, dict) and tracking.get("enable") is True:
        return "promotional", None
    return "transactional", None


class Submitted(msgspec.Struct, kw_only=True):
    message_id: str
    sandbox: bool
    results: list[IntentResult]
    fields: list[str]

    @property
    def rejected(self) -> list[SendGridError]:
        return [
            _error(r.reason or "rejected", field)
            for r, field in zip(self.results, self.fields, strict=True)
            if r.status == "rejected"
        ]

    @property
    def taken(self) -> int:
        """Recipients with an intent: accepted now or by an earlier identical request."""
        return sum(r.status != "rejected" for r in self.results)


async def submit(
    conn: Connection,
    body: bytes,
    accept_intents: AcceptIntents,
    now: datetime | None = None,
    *,
    key: str | None = None,
) -> Submitted:
    """Validate a Mail Send body and accept one intent per recipient.

    As with SendGrid, every accepted request is a send: the same body twice is two emails
    (a "send the code again" button). Only a client's `Idempotency-Key` (`key`) makes a
    retry: the same key again answers with the first request's message id and sends
    nothing more; the same key on a different body is refused with 409."""
    now = now or datetime.now(UTC)
    mail = decode(body)
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise Invalid([_error(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters.")])
    chosen = None
    if mail.template_id:
        found = await email_templates.active_version(conn, mail.template_id)
        chosen = ChosenTemplate(*found) if found is not None else ChosenTemplate(None, None)
    if chosen is None:
        conversion = convert(mail, key, now)
    else:
        # Rendering up to 1,000 personalizations takes a while: not on the event loop.
        conversion = await asyncio.to_thread(convert, mail, key, now, chosen)
    if errors := await _unknown_references(conn, mail):
        raise Invalid(errors)
    if (
        mail.mail_settings
        and mail.mail_settings.sandbox_mode
        and mail.mail_settings.sandbox_mode.enable
    ):
        return Submitted(
            message_id=conversion.message_id, sandbox=True, results=[], fields=conversion.fields
        )
    # A batch's deliveries are sent one by one (no LINE multicast), so each can be held alone.
    results = await accept_intents(
        conn, conversion.requests, batch_id=mail.batch_id, multicast=mail.batch_id is None
    )
    count_accepted("sendgrid", results)
    return Submitted(
        message_id=conversion.message_id,
        sandbox=False,
        results=results,
        fields=conversion.fields,
    )
