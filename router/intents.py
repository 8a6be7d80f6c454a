"""Intents as clients see them: what they send (`IntentRequest`), what each one's acceptance
answers (`IntentResult`) and how an accepted intent is reported (`IntentView`).

Accepting is router.intake's; this module is the vocabulary every front door shares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import asyncpg
import msgspec

from router.channel_rules import confirmed_by_provider
from router.content import EmailContent, LineContent
from router.database import Connection
from router.identifiers import EmailAddress, LineAccountName, MemberId
from router.line_plans import LineBudget
from router.problems import FieldError
from router.reach import DEFAULT_LINE_ACCOUNT
from router.store import group_state
from router.wire_rules import Alternatives

MAX_BATCH = 10_000
MAX_SCHEDULE_AHEAD = timedelta(days=30)

Route = Literal["prefer_line", "both", "line_only", "email_only", "notification_first"]
Kind = Literal["promotional", "transactional"]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Category = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="What recipients can unsubscribe from on its own (e.g. `newsletter`):"
        " letters, digits, `_`, `.` and `-`",
    ),
]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=50)]
SendAt = Annotated[
    datetime,
    msgspec.Meta(
        tz=True,
        description="With a time zone; at most 30 days ahead (further is refused with 422)",
    ),
]
# A registered channel's name (channels.registry), as deliveries and answers report it.
ChannelName = Annotated[
    str, msgspec.Meta(description="A channel's name: one of the channels this router registers")
]


CUSTOM_ARGS_KEY = "custom_args"
"""The metadata key whose object (string, number or boolean values) delivery events echo at
their top level, as SendGrid echoes custom_args; the SendGrid door keeps a request's
custom_args there, apart from its own keys (sg_message_id, sg_recipient_type)."""


class IntentRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One message for one recipient: a member, or an email address."""

    member_id: MemberId | None = None
    email_address: EmailAddress | None = None
    route: Route = "prefer_line"
    kind: Kind = "promotional"
    email: EmailContent | None = None
    line: LineContent | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    campaign: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    category: Category | None = None
    tags: Tags = msgspec.field(default_factory=list)
    metadata: dict[str, Any] | None = None
    send_at: SendAt | None = None
    # The LINE Official Account the intent goes out under, and what it may spend on LINE
    # (None: the account's default_budget for promotional intents, unlimited otherwise).
    line_account: LineAccountName = DEFAULT_LINE_ACCOUNT
    line_budget: LineBudget | None = None

    alternatives: ClassVar[tuple[Alternatives, ...]] = (
        Alternatives(
            ("member_id", "email_address"),
            "give exactly one of member_id and email_address",
            exactly_one=True,
        ),
        Alternatives(("email", "line"), "give email content, LINE messages, or both"),
    )


# Fields added to intent requests over time, with the value that means "not given": a request
# that leaves them so is fingerprinted as it was before they existed, so an idempotency key
# stored by an earlier version still matches the same request.
_ADDED_FIELDS: tuple[tuple[str, object], ...] = (
    ("line_account", DEFAULT_LINE_ACCOUNT),
    ("line_budget", None),
)


def request_fingerprint(request: IntentRequest) -> bytes:
    """SHA-256 of the request as a client sent it, for idempotent replays."""
    fields = msgspec.to_builtins(request)
    kept = {k: v for k, v in fields.items() if (k, v) not in _ADDED_FIELDS}
    return hashlib.sha256(msgspec.json.encode(kept)).digest()


class IntentOrigin(msgspec.Struct, frozen=True, gc=False):
    """Where an intent the router made itself came from, stored on it: the journey, step and
    run that sent it, and its kind (the daily promotional cap counts it)."""

    journey_id: str
    step: str
    run_id: UUID
    kind: str


class IntentResult(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """Outcome of one intent in a request. `code` is the HTTP status it would have alone."""

    status: Literal["accepted", "duplicate", "rejected"]
    code: int
    id: UUID | None = None
    channels: list[ChannelName] = msgspec.field(default_factory=list)
    fallback: ChannelName | None = None
    reason: str | None = None
    errors: list[FieldError] = msgspec.field(default_factory=list)


class NarrowcastNote(msgspec.Struct, kw_only=True):
    """A LINE delivery that went out in a narrowcast: which one and how it ended. LINE
    reports only totals, so whether this member received it is not known."""

    request_id: str | None
    status: str  # waiting | accepted | succeeded | failed | unknown | cancelled
    received_by_this_member: Literal["not reported by LINE"] = "not reported by LINE"


class DeliveryView(msgspec.Struct, kw_only=True):
    id: UUID
    channel: str
    status: str
    fallback: bool
    attempts: int
    last_error: str | None
    provider_ref: str | None
    # Email: the upstream SMTP server's final reply, naming its queue id
    # (`250 2.0.0 Ok: queued as C75E816241F`); provider_ref is then the Message-ID.
    smtp_queue_id: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    confirmed_at: datetime | None
    # Email: when the recipient's mail system reported a bounce or a complaint after it was
    # sent (status `bounced` or `complained`).
    feedback_at: datetime | None = None
    # Set when the delivery went out in a LINE narrowcast instead of a push or multicast.
    narrowcast: NarrowcastNote | None = None


class JourneyRef(msgspec.Struct, kw_only=True):
    """Where a journey's intent came from."""

    journey_id: str
    step: str  # steps[2].then[1]
    run_id: UUID


class IntentView(msgspec.Struct, kw_only=True):
    id: UUID
    status: str
    member_id: str | None
    email_address: str | None
    route: str
    fallback: str | None
    campaign: str | None
    tags: list[str]
    metadata: dict[str, Any] | None
    idempotency_key: str | None
    created_at: datetime
    deliveries: list[DeliveryView]
    # Set when a journey's send step made the intent: the journey, the step and the run.
    journey: JourneyRef | None = None
    # The LINE Official Account it goes out under.
    line_account: str = DEFAULT_LINE_ACCOUNT


def rejected(reason: str, errors: list[FieldError] | None = None, code: int = 400) -> IntentResult:
    return IntentResult(status="rejected", code=code, reason=reason, errors=errors or [])


def unknown_line_account(field: str, account: str, configured: Collection[str]) -> FieldError:
    """The error for a `line_account` that names no account this router has."""
    known = ", ".join(sorted(configured)) or "none"
    return FieldError(
        field, f"no LINE account {account!r} is configured on this router (configured: {known})"
    )


_VIEW_INTENT = """
SELECT id, member_id, email_address, route, fallback, campaign, tags, metadata,
       -- a campaign's intents are keyed by (campaign, member) and carry no text key
       coalesce(idempotency_key, 'campaign:' || campaign_id || ':' || member_id)
           AS idempotency_key,
       created_at, journey_id, journey_step, journey_run, line_account
FROM intents WHERE id = $1
"""

# A grouped delivery's state is its send group's (router/store/group_state.py).
_VIEW_DELIVERIES = f"""
SELECT id, channel, status, fallback, attempts, last_error, provider_ref, smtp_queue_id,
       CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
       created_at, updated_at, sent_at, confirmed_at, feedback_at, narrowcast_status,
       narrowcast_request_id
FROM (
    SELECT d.id, d.channel, {group_state.status("d", "s")} AS status,
           d.is_fallback AS fallback, {group_state.field("d", "s", "attempts")} AS attempts,
           {group_state.field("d", "s", "last_error")} AS last_error,
           {group_state.field("d", "s", "provider_ref")} AS provider_ref, d.smtp_queue_id,
           {group_state.field("d", "s", "next_attempt_at")} AS next_attempt_at,
           d.created_at, {group_state.field("d", "s", "updated_at")} AS updated_at,
           {group_state.field("d", "s", "sent_at")} AS sent_at, d.confirmed_at, d.feedback_at,
           n.status AS narrowcast_status, n.request_id AS narrowcast_request_id
    FROM deliveries d LEFT JOIN line_narrowcasts n ON n.send_group_id = d.send_group_id
    LEFT JOIN send_groups s ON s.id = d.send_group_id
    WHERE d.intent_id = $1 ORDER BY d.is_fallback, d.created_at
) AS derived
"""  # noqa: S608 - built from constant fragments only


async def view(conn: Connection, intent_id: UUID) -> IntentView | None:
    row = await conn.fetchrow(_VIEW_INTENT, intent_id)
    if row is None:
        return None
    deliveries = [_delivery(r) for r in await conn.fetch(_VIEW_DELIVERIES, intent_id)]
    status = intent_status(row["route"], deliveries, frozenset(confirmed_by_provider()))
    fields = dict(row)
    journey_id, step, run = (fields.pop(k) for k in ("journey_id", "journey_step", "journey_run"))
    journey = (
        None if journey_id is None else JourneyRef(journey_id=journey_id, step=step, run_id=run)
    )
    return IntentView(status=status, deliveries=deliveries, journey=journey, **fields)


def _delivery(row: asyncpg.Record) -> DeliveryView:
    fields = dict(row)
    status = fields.pop("narrowcast_status")
    request_id = fields.pop("narrowcast_request_id")
    note = None if status is None else NarrowcastNote(request_id=request_id, status=status)
    return DeliveryView(narrowcast=note, **fields)


class RelayedMessageView(msgspec.Struct, kw_only=True):
    """The intents made from one message the SMTP relay received (its recipients)."""

    reference: str
    intents: list[IntentView]


_RELAYED_INTENTS = """
SELECT i.id FROM intents i JOIN contents c ON c.id = i.content_id
WHERE c.relayed_message_id = $1 ORDER BY i.created_at, i.id
"""


async def relayed_view(conn: Connection, message_sha256: bytes) -> RelayedMessageView | None:
    """Every intent made from the relayed message with these bytes (the reference the
    relay's 250 reply gives), or None if there is none."""
    ids = [r["id"] for r in await conn.fetch(_RELAYED_INTENTS, message_sha256)]
    views = [v for i in ids if (v := await view(conn, i)) is not None]
    if not views:
        return None
    return RelayedMessageView(reference=message_sha256.hex(), intents=views)


def intent_status(
    route: str, deliveries: Sequence[DeliveryView], confirmed_by: Collection[str] = ()
) -> str:
    """Summarise deliveries: queued until every active delivery has an outcome.

    With `both`, each channel counts on its own (`partially_delivered` when some failed);
    with the other routes one successful channel delivers the intent. A delivery on a
    channel in `confirmed_by` is delivered only once the provider confirms it; until then
    the intent is `sent`, never more than its deliveries say."""
    active = [d for d in deliveries if d.status != "cancelled"]
    if any(d.status in ("pending", "claimed", "sending", "held") for d in active):
        return "queued"
    # A narrowcast's deliveries are never confirmed per member: LINE reports only totals.
    unconfirmed = sum(
        d.status == "sent"
        and d.confirmed_at is None
        and (d.channel in confirmed_by or d.narrowcast is not None)
        for d in active
    )
    # A complaint came after delivery: the message arrived. A bounce came instead of it.
    delivered = sum(d.status in ("sent", "complained") for d in active) - unconfirmed
    if route == "both":
        if unconfirmed:
            return "sent"
        if delivered == len(active) and delivered:
            return "delivered"
        if delivered:
            return "partially_delivered"
    elif delivered:
        return "delivered"
    elif unconfirmed:
        return "sent"
    if any(d.status == "uncertain" for d in active):
        return "uncertain"
    if not active:
        return "cancelled"
    return "failed"
