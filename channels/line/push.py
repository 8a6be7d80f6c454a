"""LINE push and multicast, through line-bot-sdk's async client.

One delivery is one `POST /v2/bot/message/push`; a send group (deliveries of one campaign with
the same content) is one `POST /v2/bot/message/multicast` to up to 500 user IDs.

Requests go through the SDK's `AsyncApiClient` (its connection pool, bearer auth and
`ApiException` error model) with the JSON body built once per content. The SDK's typed
`push_message` would validate the same messages again with pydantic on every call, which costs
more than the HTTP request itself; the router already validated them when the intent was
accepted (router.line.messages), so that per-call work buys nothing here.

Every request carries `X-Line-Retry-Key`, a UUID derived from the delivery id (the send
group's id for a multicast). LINE keeps a key for 24 hours and answers a repeat with 409 plus
the original request id, so a resend after a crash or a timeout can never reach the user
twice; the worker refuses to resend once that window has passed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
import msgspec
from linebot.v3.messaging import ApiException, AsyncApiClient, Configuration

from channels.base import (
    ChannelDescriptor,
    Failed,
    GroupOutcome,
    Outbound,
    OutboundGroup,
    Outcome,
    Retry,
    Sent,
    Split,
)
from channels.line.quota import LineQuota
from channels.metrics import LINE_REQUEST_SECONDS
from router.config import DEFAULT_LINE_ACCOUNT, Config, LineConfig
from router.content import Content
from router.reach import LINE_REACHABLE_SQL, Reach

log = logging.getLogger(__name__)

RETRY_KEY_NAMESPACE = uuid.UUID("5d3c0c52-8a8e-4a59-9a64-0c9f3b1f6d21")
RETRY_KEY_LIFETIME = timedelta(hours=24)
MONTHLY_LIMIT_MESSAGE = "You have reached your monthly limit."
PUSH_PATH = "/v2/bot/message/push"
MULTICAST_PATH = "/v2/bot/message/multicast"
MAX_MULTICAST_RECIPIENTS = 500
_RECIPIENT_PROPERTY = re.compile(r"to\[(\d+)\]")
_T = TypeVar("_T")


def retry_key(delivery_id: uuid.UUID) -> uuid.UUID:
    """The same delivery always gets the same key; different deliveries never share one."""
    return uuid.uuid5(RETRY_KEY_NAMESPACE, f"push:{delivery_id}")


def multicast_retry_key(group_id: uuid.UUID) -> uuid.UUID:
    """A send group's key: never equal to any delivery's push key."""
    return uuid.uuid5(RETRY_KEY_NAMESPACE, f"multicast:{group_id}")


class LineError(msgspec.Struct):
    """LINE's error body (`ErrorResponse` in messaging-api.yml)."""

    message: str = ""
    details: list[dict[str, str]] = msgspec.field(default_factory=list)


def describe_error(body: str | bytes | None) -> LineError:
    try:
        return msgspec.json.decode(body or b"{}", type=LineError)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return LineError(message=str(body)[:200] if body else "")


def _unreachable(reach: Reach) -> str | None:
    if reach.line_user_id is None:
        return "no LINE user ID is linked to this recipient"
    if not reach.line_friend:
        return "the LINE user is not a friend of the official account"
    if reach.line_opt_out:
        return "the member opted out of LINE"
    return None


LINE = ChannelDescriptor(
    name="line",
    routes={"prefer_line": 0, "both": 0, "line_only": 0},
    not_configured="LINE is not configured on this router",
    unreachable=_unreachable,
    reachable_sql=LINE_REACHABLE_SQL,
    # The member must still hold the user ID the delivery was addressed to.
    still_reachable_sql=f"({LINE_REACHABLE_SQL} AND l.user_id = d.address)",
    address=lambda reach: reach.line_user_id,
    address_sql="l.user_id",
    address_noun="LINE user ID",
    carries=lambda content: content.line is not None or content.email is not None,
    no_content="the intent has neither LINE messages nor email content to derive them from",
    left_since=(
        "not sent: since the intent was accepted the member unfollowed, was unlinked or "
        "opted out of LINE"
    ),
    fallback_when_left=True,
    group_sending=True,
    per_line_account=True,
    describe=lambda config: f"push via {config.line.api_base}",
    describe_unconfigured=(
        "not configured ([line] channel_access_token) - prefer_line intents go to email, "
        "line_only intents are refused"
    ),
)


def build(config: Config, built: object) -> LinePushChannel | None:
    accounts = config.line_accounts()
    return LinePushChannel(config.line, accounts) if accounts else None


def account_missing(account: str) -> Failed:
    """Why nothing is sent under an account this router no longer has."""
    return Failed(
        f"not sent: the LINE account {account!r} is not configured on this router",
        fallback=True,
        dropped=True,
    )


class LinePushChannel:
    """The `line` channel: push messages to linked friends, multicast to send groups, under
    the LINE account each delivery or group names (one `LineSender` per account)."""

    name = LINE.name
    replay_window: timedelta | None = RETRY_KEY_LIFETIME

    def __init__(
        self, config: LineConfig, accounts: Mapping[str, LineConfig] | None = None
    ) -> None:
        """`config` is the `[line]` section (the channel's own settings); `accounts` every
        configured account's effective settings (without: `config` as the account
        "default")."""
        if accounts is None:
            accounts = {DEFAULT_LINE_ACCOUNT: config}
        self.senders = {name: LineSender(settings) for name, settings in accounts.items()}
        self.line_accounts = frozenset(self.senders)
        self.max_concurrency = config.max_connections
        self.requests_per_second: int | None = config.push_per_second
        # 1 when multicast is turned off: every delivery then goes out as its own push.
        self.max_group_size = MAX_MULTICAST_RECIPIENTS if config.multicast else 1
        self.groups_per_second: int | None = config.multicast_per_second
        self._messages: OrderedDict[bytes, list[Any]] = OrderedDict()
        for sender in self.senders.values():
            sender.wire_content = self.wire_content

    @property
    def quota(self) -> LineQuota:
        """The account "default"'s monthly quota (the first account's when it has none)."""
        default = self.senders.get(DEFAULT_LINE_ACCOUNT) or next(iter(self.senders.values()))
        return default.quota

    def sender(self, account: str) -> LineSender | None:
        return self.senders.get(account)

    def requests_per_second_of(self, account: str) -> int | None:
        sender = self.senders.get(account)
        return None if sender is None else sender.push_per_second

    def groups_per_second_of(self, account: str) -> int | None:
        sender = self.senders.get(account)
        return None if sender is None else sender.multicast_per_second

    def wire_messages(self, message: Outbound) -> list[Any]:
        """LINE's JSON for a content's messages, built once per content and reused."""
        return self.wire_content(message.content_id, message.content)

    def wire_content(self, content_id: bytes, content: Content) -> list[Any]:
        cached = self._messages.get(content_id)
        if cached is None:
            cached = [msgspec.to_builtins(m) for m in content.line_messages()]
            self._messages[content_id] = cached
            if len(self._messages) > 1024:
                self._messages.popitem(last=False)
        return cached

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        """Each account's pushes through its own sender; one outcome each, in order."""
        account = batch[0].line_account if batch else DEFAULT_LINE_ACCOUNT
        if all(m.line_account == account for m in batch):
            return await self._send_under(account, batch)
        by_account: dict[str, list[int]] = {}
        for n, m in enumerate(batch):
            by_account.setdefault(m.line_account, []).append(n)
        outcomes: list[Outcome | None] = [None] * len(batch)
        sent = await asyncio.gather(
            *(self._send_under(a, [batch[n] for n in ns]) for a, ns in by_account.items())
        )
        for positions, answers in zip(by_account.values(), sent, strict=True):
            for n, outcome in zip(positions, answers, strict=True):
                outcomes[n] = outcome
        return [o for o in outcomes if o is not None]

    async def _send_under(self, account: str, batch: Sequence[Outbound]) -> list[Outcome]:
        sender = self.senders.get(account)
        if sender is None:
            return [account_missing(account)] * len(batch)
        return await sender.send(batch)

    async def send_group(self, group: OutboundGroup) -> GroupOutcome:
        sender = self.senders.get(group.line_account)
        if sender is None:
            return account_missing(group.line_account)
        return await sender.send_group(group)

    async def aclose(self) -> None:
        for sender in self.senders.values():
            await sender.aclose()


class LineSender:
    """Push and multicast for one LINE account: its own SDK client (token, api_base), its
    connections and its monthly quota."""

    def __init__(self, config: LineConfig) -> None:
        configuration = Configuration(
            host=config.api_base, access_token=config.channel_access_token
        )
        # The SDK sizes its connection pool by CPU count (10 on two cores); deliveries need more.
        configuration.connection_pool_maxsize = config.max_connections
        # The SDK's session trusts the environment, so aiohttp looks up proxy variables and
        # stats ~/.netrc in a thread on every request: more CPU than the request itself. The
        # proxy is resolved once here instead, and the session is replaced by one that does not.
        configuration.proxy = proxy_for(config.api_base)
        self._client = AsyncApiClient(configuration)
        self.client = self._client
        rest = self._client.rest_client
        self._sdk_session = rest.pool_manager
        rest.pool_manager = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.max_connections), trust_env=False
        )
        self._timeout = config.timeout_seconds
        self.timeout = config.timeout_seconds
        self._slots = asyncio.Semaphore(config.max_connections)
        self.push_per_second: int | None = config.push_per_second
        self.multicast_per_second: int | None = config.multicast_per_second
        self.notification_messages = config.notification_messages
        self.quota = LineQuota(self._client, config.quota_cache_seconds)
        self._check_quota = config.check_quota
        # The channel's content cache, shared by its accounts (set by the channel).
        self.wire_content: Callable[[bytes, Content], list[Any]] = _wire_uncached

    def wire_messages(self, message: Outbound) -> list[Any]:
        return self.wire_content(message.content_id, message.content)

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        """One quota reservation for the whole claim; where what is left of the month's quota
        cannot cover them all, each push reserves its own, so those that fit still go."""
        outcomes = await self.within_quota(uuid.uuid4(), len(batch), lambda: self._pushes(batch))
        if isinstance(outcomes, Failed):
            return list(await asyncio.gather(*(self._push_within_quota(m) for m in batch)))
        return outcomes

    async def _pushes(self, batch: Sequence[Outbound]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._push(m) for m in batch)))

    async def _push_within_quota(self, message: Outbound) -> Outcome:
        return await self.within_quota(
            retry_key(message.delivery_id), 1, lambda: self._push(message)
        )

    async def _push(self, message: Outbound) -> Outcome:
        try:
            messages = self.wire_messages(message)
        except ValueError as exc:
            return Failed(f"LINE messages could not be built: {exc}", fallback=True, dropped=True)
        body = _with_unit({"to": message.address, "messages": messages}, message.content)
        outcome = await self._post(PUSH_PATH, retry_key(message.delivery_id), body)
        assert not isinstance(outcome, _Refused)  # only a multicast's 400 is kept apart
        return outcome

    async def send_group(self, group: OutboundGroup) -> GroupOutcome:
        """One multicast for the whole group. A 400 naming recipients (`to[i]`) becomes
        `Split` so they can be set apart; one naming the messages fails the whole group, since
        splitting could not help."""
        if not 1 <= len(group.addresses) <= MAX_MULTICAST_RECIPIENTS:
            raise ValueError(f"a multicast names 1 to {MAX_MULTICAST_RECIPIENTS} user IDs")
        try:
            messages = self.wire_content(group.content_id, group.content)
        except ValueError as exc:
            return Failed(f"LINE messages could not be built: {exc}", fallback=True, dropped=True)
        body = _with_unit({"to": group.addresses, "messages": messages}, group.content)
        key = multicast_retry_key(group.group_id)
        recipients = len(group.addresses)
        outcome = await self._within_quota(
            key, recipients, lambda: self._post(MULTICAST_PATH, key, body)
        )
        if isinstance(outcome, _Short):
            if 0 < outcome.remaining < recipients:
                # Nothing was sent under this key: the first `remaining` go on in a new group
                # (a new key), so the quota is used to the last message; the others fall back.
                error = outcome.failed.error
                return Split(error, bad=list(range(outcome.remaining, recipients)), dropped=True)
            return outcome.failed
        if isinstance(outcome, _Refused):
            return _split_or_fail(outcome)
        return outcome

    async def within_quota(
        self, key: uuid.UUID, recipients: int, send: Callable[[], Awaitable[_T]]
    ) -> _T | Failed:
        """`send()` with the month's quota held for `recipients` under `key` while it runs,
        settled after with what LINE took; a permanent failure when what is left cannot
        cover them (nothing is sent)."""
        outcome = await self._within_quota(key, recipients, send)
        return outcome.failed if isinstance(outcome, _Short) else outcome

    async def _within_quota(
        self, key: uuid.UUID, recipients: int, send: Callable[[], Awaitable[_T]]
    ) -> _T | _Short:
        """`within_quota`, saying how many recipients the quota could still cover."""
        if not self._check_quota:
            return await send()
        held = await self._reserve_quota(key, recipients)
        if isinstance(held, _Short):
            return held
        outcome: object = None
        try:
            outcome = await send()
            return outcome
        finally:
            await self.settle_quota(held, _sent(outcome, recipients))

    async def post_json(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        """POST a JSON body already built (and checked) by the router through the SDK's
        client: its pool, bearer auth and `ApiException` for non-2xx answers. Timed by
        path and status (`channels.metrics`)."""
        started = time.perf_counter()
        status = "error"
        try:
            response = await self._client.call_api(
                path,
                "POST",
                header_params={
                    **headers,
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                body=body,
                response_types_map={},
                auth_settings=["Bearer"],
                _request_timeout=self._timeout,
            )
            status = str(getattr(response, "status", None) or getattr(response, "status_code", 200))
        except ApiException as exc:
            status = str(exc.status)
            raise
        finally:
            LINE_REQUEST_SECONDS.labels(path, status).observe(time.perf_counter() - started)
        return response

    async def _post(self, path: str, key: uuid.UUID, body: dict[str, Any]) -> Outcome | _Refused:
        async with self._slots:
            try:
                response = await self.post_json(path, {"X-Line-Retry-Key": str(key)}, body)
            except ApiException as exc:
                outcome = classify(exc.status, exc.headers or {}, exc.body)
                if exc.status == 400 and path == MULTICAST_PATH:
                    return _Refused(outcome, describe_error(exc.body))
                return outcome
            except (TimeoutError, aiohttp.ClientError) as exc:
                return Retry(
                    f"LINE request failed: {type(exc).__name__} {exc}".strip(),
                    maybe_sent=isinstance(exc, TimeoutError),
                )
        return Sent(provider_ref=_header(response.headers, "x-line-request-id"))

    async def _reserve_quota(self, key: uuid.UUID, recipients: int) -> uuid.UUID | _Short | None:
        """Hold the month's quota for this request before it is sent: the key it is held
        under, or a permanent failure (so prefer_line falls back) when what is left cannot
        cover these recipients. None: the quota could not be read; sent unreserved."""
        try:
            answer = await self.quota.reserve(key, recipients)
        except Exception as exc:  # a ledger or LINE that cannot say must not stop sending
            log.warning("LINE quota could not be read (%s); sending anyway", type(exc).__name__)
            return None
        if answer.granted:
            return key
        figures = answer.figures
        held = f"{figures.used_per_line:,} + {figures.sent_since_read:,}"
        if figures.reserved:
            held += f" + {figures.reserved:,} in flight"
        if figures.remaining:
            reason = f"has {figures.remaining:,} left, fewer than the {recipients:,} needed"
        else:
            reason = "is used up"
        failed = Failed(
            f"not sent: LINE's monthly message quota {reason} ({held} of {figures.limit or 0:,})",
            fallback=True,
            dropped=True,
        )
        return _Short(failed, figures.remaining or 0)

    async def settle_quota(self, reserved: uuid.UUID | None, sent: int) -> None:
        """Release the reservation and count what LINE took. A failure here only costs the
        ledger's accuracy until LINE's next figures, never the message's outcome."""
        if reserved is None and not sent:
            return
        try:
            await self.quota.settle(reserved, sent)
        except Exception as exc:
            log.warning("LINE quota could not be settled (%s)", type(exc).__name__)

    async def aclose(self) -> None:
        await self._client.close()
        await self._sdk_session.close()


def _wire_uncached(content_id: bytes, content: Content) -> list[Any]:
    return [msgspec.to_builtins(m) for m in content.line_messages()]


def _with_unit(body: dict[str, Any], content: Content) -> dict[str, Any]:
    """A campaign's request names its aggregation unit, so LINE counts its impressions and
    clicks under it; other requests carry none."""
    if content.line_aggregation_unit is not None:
        body["customAggregationUnits"] = [content.line_aggregation_unit]
    return body


def _sent(outcome: object, recipients: int) -> int:
    """Messages LINE took: every recipient of a request it accepted (or had accepted: 409),
    one per accepted push of a claim."""
    if isinstance(outcome, list):
        return sum(isinstance(o, Sent) for o in outcome)
    return recipients if isinstance(outcome, Sent) else 0


class _Short(msgspec.Struct, frozen=True):
    """The month's quota cannot cover a request: why (a permanent failure, nothing sent) and
    how many recipients it could still cover."""

    failed: Failed
    remaining: int


class _Refused(msgspec.Struct, frozen=True):
    """A multicast answered 400: nothing was sent, and the details may name recipients."""

    outcome: Outcome
    error: LineError


def _split_or_fail(refused: _Refused) -> GroupOutcome:
    text = refused.outcome.error if isinstance(refused.outcome, (Retry, Failed)) else ""
    properties = [d.get("property", "") for d in refused.error.details]
    bad = sorted({int(m.group(1)) for p in properties if (m := _RECIPIENT_PROPERTY.fullmatch(p))})
    if bad:
        return Split(text, bad)
    if any(p.startswith("messages") for p in properties):
        return refused.outcome  # the content itself: every recipient would be refused
    return Split(text)


def proxy_for(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY, ...) names for `url`, if any."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxy: str | None = urllib.request.getproxies().get(parts.scheme)
    return proxy


def _header(headers: Any, name: str) -> str:
    value = headers.get(name) if headers is not None else None
    return str(value) if value else ""


def classify(status: int, headers: Any, body: str | bytes | None) -> Outcome:
    """Map a LINE error response to what the outbox should do next."""
    error = describe_error(body)
    request_id = _header(headers, "x-line-request-id")
    text = f"LINE {status}: {error.message}".rstrip(": ")
    if error.details:
        text += (
            " ("
            + "; ".join(f"{d.get('property', '')}: {d.get('message', '')}" for d in error.details)
            + ")"
        )
    if request_id:
        text += f" [request {request_id}]"
    if status == 409:
        accepted = _header(headers, "x-line-accepted-request-id")
        if accepted:
            return Sent(provider_ref=accepted)  # LINE had already accepted this retry key
        return Failed(text, fallback=False)
    if status == 429:
        if error.message == MONTHLY_LIMIT_MESSAGE:
            # Refused for the account's quota, not for the recipient.
            return Failed(text, fallback=True, dropped=True)
        return Retry(text, after_seconds=_retry_after(headers), throttled=True)
    if status >= 500:
        return Retry(text, after_seconds=_retry_after(headers))
    return Failed(text, fallback=True)


def _retry_after(headers: Any) -> float | None:
    value = _header(headers, "retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None
