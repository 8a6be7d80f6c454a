"""listmonk's HTTP postback messenger payload as router intents.

listmonk renders each campaign message per subscriber and POSTs it (one recipient per
request in practice) to the messenger's URL; anything but 200 counts as a send error, and
after `max_send_errors` of them listmonk pauses the campaign. It never resends a message on
its own, but a paused campaign that is resumed, or a proxy in between, can post the same
message again, so each intent carries an idempotency key of campaign, subscriber and body.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

import msgspec

from router.content import MAX_SUBJECT, ONE_LINE, EmailContent, HeaderName, HeaderValue, Mailbox
from router.database import Connection
from router.identifiers import EmailAddress, InvalidIdentifier, normalize_email
from router.intake_port import AcceptIntents
from router.intents import IntentRequest, IntentResult
from router.metrics import count_accepted
from router.problems import FieldError

# Content types listmonk always sends as HTML. "markdown" arrives rendered to HTML inside the
# campaign template, and "plain" often does too, so those two are judged by their body.
HTML_TYPES = frozenset({"html", "richtext", "visual", "grapes_mjml"})
_HTML_TAG = re.compile(
    r"<(?:!doctype|html|head|body|p|div|br|table|span|a|h[1-6]|ul|ol|li|img|strong|em)\b",
    re.IGNORECASE,
)


class Recipient(msgspec.Struct, kw_only=True):
    uuid: str
    email: EmailAddress
    name: str = ""
    attribs: dict[str, Any] | None = None
    status: str = ""


class Campaign(msgspec.Struct, kw_only=True):
    uuid: str
    name: Annotated[str, msgspec.Meta(max_length=255)] = ""
    from_email: Mailbox | None = None
    headers: list[dict[HeaderName, HeaderValue]] | None = None
    # Empty tags are dropped; the others become the intents' tags.
    tags: (
        Annotated[list[Annotated[str, msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=50)]
        | None
    ) = None


class Attachment(msgspec.Struct, kw_only=True):
    name: str
    header: dict[str, list[str]] | None = None
    content: str | None = None  # base64, as Go encodes []byte


class Postback(msgspec.Struct, kw_only=True):
    subject: Annotated[str, msgspec.Meta(max_length=MAX_SUBJECT, pattern=ONE_LINE)] = ""
    body: Annotated[str, msgspec.Meta(pattern=r"\S", description="Not empty or only spaces")]
    content_type: str = "plain"
    recipients: Annotated[list[Recipient], msgspec.Meta(min_length=1)]
    campaign: Campaign | None = None
    attachments: (
        Annotated[
            list[Attachment],
            msgspec.Meta(max_length=0, description="Not sent by the router: link to files instead"),
        ]
        | None
    ) = None


def is_html(content_type: str, body: str) -> bool:
    return content_type in HTML_TYPES or _HTML_TAG.search(body) is not None


def idempotency_key(campaign_uuid: str, subscriber_uuid: str, body_sha256: str) -> str:
    token = f"{campaign_uuid}\n{subscriber_uuid}\n{body_sha256}"
    return "listmonk:" + hashlib.sha256(token.encode()).hexdigest()


class Refused(Exception):
    """The message as a whole cannot be taken; nothing was accepted."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{errors[0].field}: {errors[0].message}")
        self.errors = errors


# Where an IntentRequest limit comes from in listmonk's payload.
_FIELDS = {"tags": "campaign.tags", "campaign": "campaign.name", "email.subject": "subject"}
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def _refused(exc: msgspec.ValidationError) -> Refused:
    message = str(exc)
    match = _AT_PATH.search(message)
    path = match.group("path") if match else ""
    if match:
        message = message[: match.start()]
    field = next((v for k, v in _FIELDS.items() if path.startswith(k)), path or "body")
    return Refused([FieldError(field, message)])


def check(message: Postback) -> list[FieldError]:
    """What the router cannot carry out is refused, not half done. (Recipients, a body and
    no attachments are `Postback`'s own limits, applied as it is decoded.)"""
    errors: list[FieldError] = []
    for i, recipient in enumerate(message.recipients):
        try:
            normalize_email(recipient.email)
        except InvalidIdentifier as exc:
            errors.append(FieldError(f"recipients[{i}].email", str(exc)))
    if "\r" in message.subject or "\n" in message.subject:  # `$` lets a final one through
        errors.append(FieldError("subject", "line breaks are not allowed"))
    return errors


def to_intents(message: Postback) -> list[IntentRequest]:
    """One intent per recipient, matched to a member by email address."""
    campaign = message.campaign
    html = is_html(message.content_type, message.body)
    headers: dict[str, str] = {}
    if campaign is not None:
        for entry in campaign.headers or []:
            headers.update(entry)
    # listmonk allows a campaign without a subject for non-email messengers; email needs one.
    subject = message.subject.strip() or (campaign.name if campaign else "") or "(no subject)"
    email = EmailContent(
        subject=subject,
        text=None if html else message.body,
        html=message.body if html else None,
        from_address=(campaign.from_email or None) if campaign else None,
        headers=headers,
    )
    body_sha256 = hashlib.sha256(
        f"{message.content_type}\n{subject}\n{message.body}".encode()
    ).hexdigest()
    tags = [t for t in (campaign.tags or []) if t] if campaign else []
    out: list[IntentRequest] = []
    for r in message.recipients:
        metadata: dict[str, Any] = {"listmonk_subscriber_uuid": r.uuid}
        key: str | None = None
        if campaign is not None:
            metadata["listmonk_campaign_uuid"] = campaign.uuid
            key = idempotency_key(campaign.uuid, r.uuid, body_sha256)
        fields = {
            "email_address": r.email,
            "route": "prefer_line",
            "email": msgspec.to_builtins(email),
            "idempotency_key": key,
            "campaign": (campaign.name or None) if campaign else None,
            "tags": tags,
            "metadata": metadata,
        }
        try:
            # convert() applies IntentRequest's limits (tag and campaign lengths, subject
            # length), exactly as decoding a /v1/intents body would.
            out.append(msgspec.convert(fields, IntentRequest))
        except msgspec.ValidationError as exc:
            raise _refused(exc) from None
    return out


class Outcome(msgspec.Struct, kw_only=True):
    results: list[IntentResult]

    @property
    def taken(self) -> int:
        return sum(r.status != "rejected" for r in self.results)


async def submit(conn: Connection, message: Postback, accept_intents: AcceptIntents) -> Outcome:
    """Accept the message for every recipient; raises `Refused` before accepting anything."""
    errors = check(message)
    if errors:
        raise Refused(errors)
    results = await accept_intents(conn, to_intents(message), prefix="recipients[{i}].")
    count_accepted("listmonk", results)
    return Outcome(results=results)
