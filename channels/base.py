"""The one interface every delivery channel implements, and the values that cross it.

A channel is two things. Its *descriptor* (`ChannelDescriptor`) says what the core needs to
know to plan, re-check and report deliveries on it: its name, who it reaches (as a rule over a
recipient and as the same rule in SQL), the address it sends to, what content it can carry,
where it stands in each route and whether it can send to many at once. Its *adapter* (`Channel`)
sends: a dispatcher hands it claimed deliveries and gets one outcome per delivery back.

The core never names a channel: it iterates over the descriptors `channels.registry` holds and
looks adapters up by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol, runtime_checkable
from uuid import UUID

import msgspec

from router.config import Config
from router.content import Content, RelayRecipient
from router.reach import DEFAULT_LINE_ACCOUNT, Reach

ALL_KINDS = frozenset({"promotional", "transactional"})


@dataclass(frozen=True, kw_only=True)
class ChannelDescriptor:
    """One registration per channel: everything the core knows about it, in one place.

    SQL fragments are spelled over `members m` (the recipient as they are now), the
    member's LINE identity `member_line_accounts l` under the intent's LINE account (joined
    by `router.reach.line_identity_join`, NULL columns when there is none) and, for
    `still_reachable_sql`, `deliveries d`; they are interpolated into the core's statements, so
    they are constants written here, never values from a request."""

    name: str
    """The value stored in `deliveries.channel`, `intents.fallback` and the API's answers."""
    routes: Mapping[str, int]
    """The routes this channel takes part in, each with its rank: a route tries its channels
    in rank order ("prefer_line": LINE 0, email 1), and the next one that reaches the
    recipient after the chosen one is the fallback."""
    not_configured: str
    """Why a route cannot use the channel when this router has no adapter for it."""
    unreachable: Callable[[Reach], str | None]
    """Why this recipient cannot be reached on the channel, or None if they can."""
    reachable_sql: str
    """The same rule in SQL, for fallbacks created later and for reports."""
    address: Callable[[Reach], str | None]
    """The address a delivery on this channel is sent to (a LINE user ID, an email address)."""
    address_sql: str
    """The same address in SQL, for fallbacks created after acceptance."""
    address_noun: str
    """What the address is, in words: "email address", "phone number"."""
    carries: Callable[[Content], bool]
    """Whether the channel can carry this content (LINE derives text from email; email cannot
    derive an email from LINE messages)."""
    no_content: str
    """Why not, when it cannot."""
    still_reachable_sql: str | None = None
    """Checked when a delivery is first sent, over `members m` and `deliveries d`: someone who
    opted out or left since acceptance is not sent to. None: `reachable_sql`; "true": never
    re-checked."""
    refusal_sql: str | None = None
    """Why the channel may not carry this delivery although it reaches the recipient, as SQL
    yielding a reason (text) or NULL: checked at every send, over `deliveries d`, `intents i`
    and `members m` (suppressed addresses, categories unsubscribed from). Intake asks the
    same through `unreachable`, from the Reach facts `router.deliverability.rules` sets."""
    campaign_refusal_sql: Callable[[str, str | None, bool], str] | None = None
    """`refusal_sql` for a campaign's members, over `members m`, given the campaign's kind,
    category and whether consent is required: members it refuses are routed as if the
    channel did not reach them."""
    left_since: str = "not sent: since the intent was accepted the member opted out of this channel"
    """Why a delivery found unreachable at send time is not sent."""
    fallback_when_left: bool = False
    """Whether the intent's fallback may carry a delivery found unreachable at send time (a
    LINE friend who left may still read email; someone who opted out of email has said no)."""
    kinds: frozenset[str] = ALL_KINDS
    """The intent kinds the channel carries."""
    kind_refusal: str = ""
    """Why a route led by this channel refuses an intent of another kind."""
    stands_in_for: str | None = None
    """In a route that sends on every channel, this one is used only when the named channel
    cannot reach the recipient (a LINE notification by phone for a non-friend)."""
    address_is_email: bool = False
    """Delivery events name the delivery's own address (otherwise the recipient's email)."""
    sends_relayed: bool = False
    """Relayed messages go out on this channel as the exact bytes received."""
    confirmed_by_provider: bool = False
    """'sent' means only that the provider took the request; the message counts as delivered
    when the provider confirms it, and as not delivered if it does not in time."""
    provider: str = ""
    """Who sends for the channel, in words ("LINE"), for the texts of confirmations."""
    group_sending: bool = False
    """The adapter can send one content to many recipients in one request (`GroupChannel`)."""
    describe: Callable[[Config], str] | None = None
    """What `router serve` says of the channel when it is configured (None: nothing)."""
    describe_unconfigured: str | None = None
    """What `router serve` says when it is not: how to configure it and what follows."""
    per_line_account: bool = False
    """The channel sends under the intent's LINE account: it is configured for an intent only
    when that account is (its adapter is then a `LineAccountSender`)."""

    @property
    def recheck_sql(self) -> str:
        return self.still_reachable_sql or self.reachable_sql


class Outbound(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery to send now."""

    delivery_id: UUID
    intent_id: UUID
    address: str
    attempt: int
    content_id: bytes
    content: Content
    relayed_message: bytes | None = None  # the original bytes, for relayed email
    relay_recipient: RelayRecipient | None = None  # its recipient's DSN parameters, if any
    # Whom and what it is for: the recipient's member ID, the intent's kind ("promotional",
    # "transactional") and category. Email composes the unsubscribe link from these.
    member_id: str | None = None
    kind: str = "promotional"
    category: str | None = None
    # The LINE Official Account it goes out under (channels that send per account).
    line_account: str = DEFAULT_LINE_ACCOUNT


class Link(msgspec.Struct, frozen=True):
    """The connection an answer came over, as delivery events report it (SendGrid's `ip` and
    `tls`): the router's own address on it and whether it was encrypted."""

    local_ip: str
    encrypted: bool


class Sent(msgspec.Struct, frozen=True, tag=True):
    """The provider accepted the message; `provider_ref` is its id for it (for email the
    Message-ID) and `queue_id` the receiving SMTP server's final reply, which names the id
    it queued the message under (`250 2.0.0 Ok: queued as C75E816241F`)."""

    provider_ref: str
    queue_id: str | None = None
    # A relayed message's DSN parameters went on to an upstream that offers DSN (RFC 3461),
    # which now reports success itself.
    dsn_passed_on: bool = False
    link: Link | None = None


class Retry(msgspec.Struct, frozen=True, tag=True):
    """Transient failure; try again later (after `after_seconds`, if the provider said).

    `maybe_sent`: the request went out and no answer came in time, so the provider may have
    taken it; a cancel then leaves the delivery 'uncertain', not 'cancelled'. `throttled`: the
    provider refused it unprocessed for its rate limit, which says nothing about the message,
    so a queue whose limit is hours long need not count it as a failed attempt."""

    error: str
    after_seconds: float | None = None
    maybe_sent: bool = False
    throttled: bool = False
    status: str | None = None  # the provider's status code for it (SMTP enhanced: 4.2.0)
    link: Link | None = None


class Failed(msgspec.Struct, frozen=True, tag=True):
    """Permanent failure. `fallback` says whether another channel may carry the message.

    `dropped`: the message was not sent for a reason of the sender's (quota used up, content
    that cannot be built), not refused for the recipient; reported as dropped, not bounced.
    `suppress`: the refusal says the address is bad (channels.smtp_bounces)."""

    error: str
    fallback: bool = True
    dropped: bool = False
    suppress: Suppress | None = None
    status: str | None = None  # the provider's status code for it (SMTP enhanced: 5.1.1)
    link: Link | None = None


class Suppress(msgspec.Struct, frozen=True):
    """The recipient's server refused the address for good: email is not sent to it again.
    `reason` is a suppression reason ('bounce', 'invalid'); `detail` the server's reply."""

    reason: str
    detail: str


class Uncertain(msgspec.Struct, frozen=True, tag=True):
    """The provider had the whole message but its answer never came (the connection was lost
    or timed out while waiting for it): it may have been delivered. A channel that cannot
    tell a resend from a new message must not resend it, so the delivery is left
    'uncertain', as a crash while 'sending' leaves it."""

    error: str


Outcome = Sent | Retry | Failed  # the provider's answer
SendOutcome = Outcome | Uncertain  # what sending one delivery comes to


class OutboundGroup(msgspec.Struct, frozen=True, kw_only=True):
    """One content to many recipients in one provider request (LINE multicast).

    `group_id` names the group as stored; the provider's retry key is derived from it, so a
    group is only ever resent whole, with the same recipients."""

    group_id: UUID
    addresses: list[str]
    attempt: int
    content_id: bytes
    content: Content
    line_account: str = DEFAULT_LINE_ACCOUNT  # the LINE Official Account it goes out under


class Split(msgspec.Struct, frozen=True, tag=True):
    """Nothing was sent because of some of the request's recipients: the provider refused
    them, or (`dropped`) the month's quota cannot cover them, so the others go on without
    them. `bad` holds their positions; empty when the provider did not say which."""

    error: str
    bad: list[int] = msgspec.field(default_factory=list)
    dropped: bool = False


GroupOutcome = Sent | Retry | Failed | Split


class QuotaFigures(msgspec.Struct, kw_only=True):
    """The month's LINE message quota as the router sees it (`GET /v1/line/quota`):
    `remaining` is what neither LINE's usage, sends since, nor requests in flight hold."""

    limited: bool
    limit: int | None
    used_per_line: int
    sent_since_read: int
    remaining: int | None
    read_at: float
    reserved: int = 0


class QuotaAnswer(msgspec.Struct, frozen=True):
    """A reservation's answer: whether the messages were reserved, and the figures then."""

    granted: bool
    figures: QuotaFigures


class QuotaLedger(Protocol):
    """The month's LINE quota where every process sending for the account sees it.

    A sender reserves a request's messages before sending and settles after LINE answers, so
    concurrent requests can never together pass what is left."""

    async def reserve(
        self, key: UUID, messages: int, fresh_for: float | None
    ) -> QuotaAnswer | None:
        """Hold `messages` under `key` if what is left covers them. None when there are no
        figures for this month read within `fresh_for` seconds (None: any age): read LINE's
        and `refresh` first."""
        ...

    async def refresh(self, limit: int | None, used: int) -> None:
        """LINE's figures as just read: its limit (None: unlimited) and the month's usage."""
        ...

    async def settle(self, key: UUID | None, sent: int) -> None:
        """Release reservation `key` (if any) and count the `sent` messages LINE took."""
        ...

    async def figures(self, fresh_for: float | None) -> QuotaFigures | None:
        """The month's figures, if read within `fresh_for` seconds."""
        ...


class ProviderError(Exception):
    """A provider refused an account operation (not a delivery); `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Channel(Protocol):
    """A way to reach a member. Implementations live one per module under `channels/`."""

    @property
    def name(self) -> str:
        """Its descriptor's name: the value stored in `deliveries.channel`."""
        ...

    @property
    def replay_window(self) -> timedelta | None:
        """How long the provider de-duplicates a resend of the same delivery.

        None: no de-duplication, so a send interrupted by a crash is never repeated (the
        worker marks each delivery 'sending' first). A duration: resending within it is
        safe, and a delivery is never retried once it has passed."""
        ...

    @property
    def max_concurrency(self) -> int:
        """Sends the channel can have in flight at once in this process."""
        ...

    @property
    def requests_per_second(self) -> int | None:
        """The provider's request limit, shared by every router process; None if unlimited."""
        ...

    async def send(self, batch: Sequence[Outbound]) -> Sequence[SendOutcome]:
        """Send every delivery in the batch; one outcome each, in order. Never raises for a
        provider error: that is what `Retry` and `Failed` are for (and `Uncertain`, when
        the provider's answer to a whole message was lost)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LineAccountSender(Protocol):
    """An adapter that sends under several LINE Official Accounts, each with its own
    credentials and provider limits, choosing by `Outbound.line_account` (a group's, a
    narrowcast's)."""

    @property
    def line_accounts(self) -> frozenset[str]:
        """The accounts it can send under."""
        ...

    def requests_per_second_of(self, account: str) -> int | None:
        """The account's request limit (None: unlimited, or an account it does not have)."""
        ...

    def groups_per_second_of(self, account: str) -> int | None:
        """The account's limit on group requests (None as above)."""
        ...


@runtime_checkable
class GroupChannel(Channel, Protocol):
    """A channel that can also send one content to many recipients in one request."""

    @property
    def max_group_size(self) -> int:
        """Most recipients one request may name (LINE multicast: 500); 1 turns groups off."""
        ...

    @property
    def groups_per_second(self) -> int | None:
        """The provider's limit on group requests, shared by every router process."""
        ...

    async def send_group(self, group: OutboundGroup) -> GroupOutcome:
        """One request for the whole group; never raises for a provider error."""
        ...


class LineAccount(Protocol):
    """Operations on the LINE Official Account itself: linking, replies, followers, login."""

    async def issue_link_token(self, line_user_id: str) -> str: ...

    async def reply_text(self, reply_token: str, text: str) -> None: ...

    async def follower_page(self, start: str | None) -> FollowerPage:
        """One page of the account's followers: the first (`start` None) or the one LINE's
        continuation token names. Raises ProviderError (400: LINE no longer knows the token)."""
        ...

    async def verify_id_token(self, id_token: str, client_id: str) -> IdTokenSubject: ...

    async def quota(self) -> QuotaFigures: ...

    async def create_audience(
        self, description: str, upload_description: str, user_ids: Sequence[str]
    ) -> int:
        """Create a LINE audience of these user IDs (at most 10,000); its audienceGroupId.

        Raises ProviderError; status 0 when LINE did not answer (it may have created one)."""
        ...

    async def add_to_audience(
        self, audience_group_id: int, upload_description: str, user_ids: Sequence[str]
    ) -> None:
        """Add user IDs (at most 10,000) to a LINE audience; IDs already in it are harmless."""
        ...

    async def audience_status(self, audience_group_id: int) -> str | None:
        """The audience's status at LINE (READY, EXPIRED, ...); None if LINE has no such one."""
        ...

    async def unit_statistics(self, unit: str, start: date, end: date) -> UnitStatistics:
        """LINE's figures for the messages sent under an aggregation unit from `start` to
        `end` (LINE's days, UTC+9; at most 30 days apart). Raises ProviderError."""
        ...

    async def aclose(self) -> None: ...


class UnitStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """LINE's own figures for an aggregation unit (its insight "statistics per unit"): how
    many users displayed a message, opened a URL in it, played its media (to the end).
    None where LINE gives no figure."""

    unique_impressions: int | None
    unique_clicks: int | None
    unique_media_played: int | None
    unique_media_played_100_percent: int | None
    clicks: int | None  # URL opens, repeats included


class FollowerPage(msgspec.Struct, frozen=True):
    """One page of LINE's follower list, and the token of the next (None: this was the last)."""

    user_ids: list[str]
    next: str | None


class IdTokenSubject(Protocol):
    """What a verified LINE Login ID token tells the router: whose it is."""

    @property
    def sub(self) -> str: ...


# --- LINE narrowcast: one request to the users of synced LINE audiences --------------------


class OutboundNarrowcast(msgspec.Struct, frozen=True, kw_only=True):
    """One narrowcast: to the union of `audience_group_ids` minus the union of
    `exclude_audience_group_ids` (LINE audiences), under a retry key derived from `key_id`.
    `recipients` is what the month's quota is reserved for (LINE counts its targets)."""

    key_id: UUID
    audience_group_ids: list[int]
    exclude_audience_group_ids: list[int]
    recipients: int
    content_id: bytes
    content: Content
    line_account: str = DEFAULT_LINE_ACCOUNT  # the LINE Official Account it goes out under


class NarrowcastProgress(msgspec.Struct, frozen=True, kw_only=True):
    """What LINE reports of a narrowcast: only totals, never which users received it."""

    phase: str  # waiting | sending | succeeded | failed
    success_count: int | None = None
    failure_count: int | None = None
    target_count: int | None = None
    error_code: int | None = None
    failed_description: str | None = None
    accepted_time: str | None = None
    completed_time: str | None = None


@runtime_checkable
class Narrowcaster(Protocol):
    """A channel that can send one narrowcast and report its progress."""

    async def narrowcast(self, request: OutboundNarrowcast) -> Outcome:
        """Sent (provider_ref: LINE's request id, also for a 409 repeat), Retry or Failed."""
        ...

    async def narrowcast_progress(
        self, request_id: str, line_account: str = DEFAULT_LINE_ACCOUNT
    ) -> NarrowcastProgress | Retry | Failed:
        """LINE's progress of an accepted narrowcast (sent under `line_account`)."""
        ...
