"""One API request from arrival to answer: the request log, authentication and refusals.

Every endpoint that plays LINE goes through :meth:`Exchange.handler`: the request is recorded
(so a test can see exactly what a client sent, bounded to the last ``max_recorded``), given
an ``X-Line-Request-Id``, and answered once, whether carried out or refused with a
:class:`~linesim.validation.Refusal`.  The steps that several areas share in the order LINE
applies them (body size, bearer token, rate limit, no retry key where none is supported,
JSON decoding) are methods here, so each area's handler reads as the list of its checks.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any, Final, Protocol, TypeVar

import msgspec
from aiohttp import web

from linesim.limits import MAX_BODY_BYTES
from linesim.paths import (
    ACCEPTED_REQUEST_ID_HEADER,
    REQUEST_ID_HEADER,
    RETRY_KEY_HEADER,
    SEND_PATHS,
)
from linesim.schemas import ErrorDetail
from linesim.state import SimState
from linesim.validation import (
    RETRY_KEY_NOT_SUPPORTED,
    TOO_LARGE,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    Refusal,
    decode_json,
)

JSON: Final = "application/json"
HTML: Final = "text/html; charset=utf-8"

_T = TypeVar("_T")


class RateLimit(Protocol):
    def over_limit(self, now: float) -> bool: ...


class ReceivedRequest(msgspec.Struct, frozen=True):
    """One API request as the simulator saw it; ``status`` is 0 until it is answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    retry_key: str | None
    request_id: str
    status: int
    received_at: float
    recipient: str | None = None


class Entry(msgspec.Struct, gc=False):
    """What is kept per request: raw parts only, decoded when someone looks.

    Records and retry keys hold no containers of their own objects, so they are
    kept out of the cyclic garbage collector; with a million of them alive, full
    collections would otherwise pause the server for tens of milliseconds.
    """

    method: str
    path: str
    raw_headers: tuple[tuple[bytes, bytes], ...]
    retry_key: str | None
    request_id: str
    received_at: float
    raw_body: bytes | None = None
    status: int = 0
    recipient: str | None = None

    def public(self) -> ReceivedRequest:
        body: Any = None
        if self.raw_body:
            try:
                body = msgspec.json.decode(self.raw_body)
            except msgspec.DecodeError:
                body = None
        headers = {
            name.decode("latin-1").lower(): value.decode("utf-8", "replace")
            for name, value in self.raw_headers
        }
        return ReceivedRequest(
            method=self.method,
            path=self.path,
            headers=headers,
            body=body,
            retry_key=self.retry_key,
            request_id=self.request_id,
            status=self.status,
            received_at=self.received_at,
            recipient=self.recipient,
        )


Step = Callable[[web.Request, Entry], Awaitable[web.Response]]
Handler = Callable[[web.Request], Awaitable[web.Response]]
SendHook = Callable[[ReceivedRequest], Awaitable[None]]
"""Called with each send LINE accepted (push, multicast, narrowcast, reply, notification
message), before its answer goes out: how a program hosting the simulator keeps what was sent."""


def bearer_token(header: str | None) -> str | None:
    if header is None or len(header) < 8 or header[:7].lower() != "bearer ":
        return None
    return header[7:].strip()


class Exchange:
    """The request log and the steps every API request shares."""

    def __init__(self, state: SimState, access_tokens: frozenset[str], max_recorded: int) -> None:
        self._state = state
        self._tokens = access_tokens
        self.recorded: deque[Entry] = deque(maxlen=max_recorded)
        self.requests = 0
        self.by_status: dict[int, int] = {}
        # Request ids look like UUIDs; a counter after a random prefix keeps them unique.
        self._request_id_prefix = str(uuid.uuid4())[:24]
        self._request_seq = 0
        self.on_accepted_send: SendHook | None = None

    def reset(self) -> None:
        self.recorded.clear()
        self.requests = 0
        self.by_status = {}

    def accepted(self, paths: Collection[str]) -> Iterator[Entry]:
        """Recorded requests to ``paths`` that were answered 200."""
        return (entry for entry in self.recorded if entry.status == 200 and entry.path in paths)

    def next_request_id(self) -> str:
        self._request_seq += 1
        return f"{self._request_id_prefix}{self._request_seq:012x}"

    async def ensure_request_id(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every response carries a request id, including 404s and control answers."""
        if REQUEST_ID_HEADER not in response.headers:
            response.headers[REQUEST_ID_HEADER] = self.next_request_id()

    def handler(self, path: str | None, step: Step) -> Handler:
        """An aiohttp handler that records the request under ``path`` (None: the request's
        own path, for paths with ids in them), runs ``step`` and answers its refusal."""

        async def handle(request: web.Request) -> web.Response:
            entry = self.begin(request, request.path if path is None else path)
            try:
                response = await step(request, entry)
            except Refusal as refusal:
                return self.refuse(entry, refusal)
            hook = self.on_accepted_send
            if hook is not None and entry.status in (200, 202) and entry.path in SEND_PATHS:
                await hook(entry.public())
            return response

        return handle

    def begin(self, request: web.Request, path: str) -> Entry:
        self.requests += 1
        entry = Entry(
            request.method,
            path,
            request.raw_headers,
            request.headers.get(RETRY_KEY_HEADER),
            self.next_request_id(),
            self._state.clock.now(),
        )
        self.recorded.append(entry)
        return entry

    def answer(
        self,
        entry: Entry,
        status: int,
        body: bytes,
        *,
        accepted_request_id: str | None = None,
        content_type: str = JSON,
    ) -> web.Response:
        entry.status = status
        self.by_status[status] = self.by_status.get(status, 0) + 1
        headers = {"Content-Type": content_type, REQUEST_ID_HEADER: entry.request_id}
        if accepted_request_id is not None:
            headers[ACCEPTED_REQUEST_ID_HEADER] = accepted_request_id
        return web.Response(status=status, body=body, headers=headers)

    def refuse(self, entry: Entry, refusal: Refusal) -> web.Response:
        return self.answer(
            entry, refusal.status, refusal.body, accepted_request_id=refusal.accepted_request_id
        )

    async def read_body(self, request: web.Request, entry: Entry) -> bytes:
        """The body, kept with the entry; refused 413 when it is over LINE's 2 MB."""
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise Refusal(413, TOO_LARGE)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Refusal(413, TOO_LARGE) from None
        entry.raw_body = raw
        return raw

    def authorize(self, request: web.Request) -> str:
        """The request's access token; refused 401 unless it is one of the channel's."""
        token = bearer_token(request.headers.get("Authorization"))
        if token is None or token not in self._tokens:
            raise Refusal(401, UNAUTHORIZED)
        return token

    def admit(
        self,
        request: web.Request,
        limit: RateLimit,
        now: float,
        limited: bytes = TOO_MANY_REQUESTS,
    ) -> str:
        """Authorize, then count the request against ``limit``: refused 429 past it."""
        token = self.authorize(request)
        if limit.over_limit(now):
            self._state.counters.rate_limited += 1
            raise Refusal(429, limited)
        return token

    @staticmethod
    def refuse_retry_key(entry: Entry) -> None:
        """Endpoints without retry-key support refuse a request that carries one."""
        if entry.retry_key is not None:
            raise Refusal(400, RETRY_KEY_NOT_SUPPORTED)

    def authorize_read(self, request: web.Request, entry: Entry) -> None:
        """Read-only endpoints need a token and, per LINE, reject a retry key with 400."""
        self.authorize(request)
        self.refuse_retry_key(entry)

    @staticmethod
    def decode(
        request: web.Request,
        raw: bytes,
        decoder: msgspec.json.Decoder[_T],
        check: Callable[[_T], list[ErrorDetail]],
    ) -> _T:
        """The body as ``decoder``'s type, or refused 400 (see :func:`decode_json`)."""
        return decode_json(request.headers.get("Content-Type", ""), raw, decoder, check)
