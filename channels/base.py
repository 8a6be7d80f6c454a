"""The one interface every delivery channel implements, and the values that cross it.

The outbox worker hands a channel a batch of due deliveries and gets one outcome per
delivery back. It never imports an adapter: adapters are built from configuration by
`channels.registry` and looked up by name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable
from uuid import UUID

import msgspec

from router.content import Content


class Outbound(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery to send now."""

    delivery_id: UUID
    intent_id: UUID
    address: str
    attempt: int
    content_id: bytes
    content: Content
    relayed_message: bytes | None = None  # the original bytes, for relayed email


class Sent(msgspec.Struct, frozen=True, tag=True):
    """The provider accepted the message; `provider_ref` is its id for it."""

    provider_ref: str


class Retry(msgspec.Struct, frozen=True, tag=True):
    """Transient failure; try again later (after `after_seconds`, if the provider said)."""

    error: str
    after_seconds: float | None = None


class Failed(msgspec.Struct, frozen=True, tag=True):
    """Permanent failure. `fallback` says whether another channel may carry the message.

    `dropped`: the message was not sent for a reason of the sender's (quota used up, content
    that cannot be built), not refused for the recipient; reported as dropped, not bounced."""

    error: str
    fallback: bool = True
    dropped: bool = False


Outcome = Sent | Retry | Failed


class OutboundGroup(msgspec.Struct, frozen=True, kw_only=True):
    """One content to many recipients in one provider request (LINE multicast).

    `batch_id` names the group as stored; the provider's retry key is derived from it, so a
    group is only ever resent whole, with the same recipients."""

    batch_id: UUID
    addresses: list[str]
    attempt: int
    content_id: bytes
    content: Content


class Split(msgspec.Struct, frozen=True, tag=True):
    """The provider refused the whole request because of some of its recipients, so nothing
    was sent. `bad` holds their positions; empty when the provider did not say which."""

    error: str
    bad: list[int] = msgspec.field(default_factory=list)


GroupOutcome = Sent | Retry | Failed | Split


class QuotaFigures(msgspec.Struct, kw_only=True):
    """The month's LINE message quota as the router sees it (`GET /v1/line/quota`)."""

    limited: bool
    limit: int | None
    used_per_line: int
    sent_since_read: int
    remaining: int | None
    read_at: float


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
        """`line` or `email`: the value stored in `deliveries.channel`."""
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

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        """Send every delivery in the batch; one outcome each, in order. Never raises for a
        provider error: that is what `Retry` and `Failed` are for."""
        ...

    async def aclose(self) -> None: ...


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

    def follower_pages(self) -> AsyncIterator[list[str]]: ...

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

    async def aclose(self) -> None: ...


class IdTokenSubject(Protocol):
    """What a verified LINE Login ID token tells the router: whose it is."""

    @property
    def sub(self) -> str: ...
