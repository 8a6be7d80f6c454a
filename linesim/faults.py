"""Fault injection: the failures a LINE client must survive, on demand.

LINE has outages (5xx in front of the API), answers late (a client times out although the
message went out), limits rates (429) and sends delivery completion events late or never.
A test asks for these through ``POST /__simulator/faults`` or the matching methods of
``LineSimulator``; the send endpoints consult :class:`Faults` on every request. Besides the
next few requests, faults can strike at rates (``500=0.2,429=0.1,timeout=0.05``), drawn from
a seeded generator so a run can be repeated.  Tighter rate limits, quota and the clock are
set on their owners; their request shapes are here, with the rest of the faults body.
"""

from __future__ import annotations

import asyncio
import random
from http import HTTPStatus
from typing import Annotated, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType

from linesim.schemas import ErrorResponse, encode
from linesim.state import SimState
from linesim.validation import Refusal

NonNegativeInt = Annotated[int, Meta(ge=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]


class FailNext(msgspec.Struct, forbid_unknown_fields=True):
    """The next ``count`` send requests answer ``status`` with ``message``, unexecuted.

    They fail before authentication and validation, like an outage in front of LINE,
    so their retry keys stay free for the retry.
    """

    count: NonNegativeInt
    status: Annotated[int, Meta(ge=100, le=599)] = 500
    message: str | None = None


class DelayNext(msgspec.Struct, forbid_unknown_fields=True):
    """The next ``count`` send requests are answered ``seconds`` late.

    By default the request is executed first and only the response is late, as
    when LINE accepts a message but the client times out; ``before_processing``
    holds the request back before it is executed instead.
    """

    count: NonNegativeInt
    seconds: NonNegativeFloat
    before_processing: bool = False


TIMEOUT: Final = "timeout"


class FaultRates(msgspec.Struct, forbid_unknown_fields=True):
    """Each send request, at random: refused with an HTTP status, unexecuted (``"500": 0.2``,
    ``"429": 0.1``), or carried out but answered ``late_seconds`` late (``"timeout": 0.05``),
    after a client's timeout, as when LINE took the message and the answer was lost.

    Rates add up to at most 1; draws come from ``random.Random(seed)``. Empty rates stop it.
    """

    rates: dict[str, Annotated[float, Meta(ge=0, le=1)]]
    seed: int = 0
    late_seconds: NonNegativeFloat = 5.0


def parse_fault_rates(text: str) -> dict[str, float]:
    """``500=0.2,429=0.1,timeout=0.05`` as rates by fault (see :class:`FaultRates`)."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        fault, sep, rate = part.partition("=")
        try:
            rates[fault.strip()] = float(rate) if sep else -1.0
        except ValueError:
            rates[fault.strip()] = -1.0
    check_fault_rates(rates)
    return rates


def check_fault_rates(rates: dict[str, float]) -> None:
    """Faults are ``timeout`` or an HTTP status of 400 to 599, each at a rate of 0 to 1,
    together at most 1."""
    for fault, rate in rates.items():
        if fault != TIMEOUT and not (fault.isdigit() and 400 <= int(fault) <= 599):
            raise ValueError(f"a fault is an HTTP status of 400 to 599 or 'timeout', not {fault!r}")
        if not 0 <= rate <= 1:
            raise ValueError(f"the rate of {fault} must be a number from 0 to 1")
    if sum(rates.values()) > 1:
        raise ValueError("fault rates add up to more than 1")


class RateLimits(msgspec.Struct, forbid_unknown_fields=True):
    """Requests per second; an omitted endpoint keeps its current limit."""

    push: NonNegativeInt | None = None
    multicast: NonNegativeInt | None = None
    reply: NonNegativeInt | None = None
    pnp: NonNegativeInt | None = None


class PnpDeliveryFault(msgspec.Struct, forbid_unknown_fields=True):
    """How delivery completion events follow accepted LINE notification messages.

    ``delay_seconds`` holds every later event back (LINE sends it once the user
    has the message, which may be much later); ``suppress_next`` drops the next
    events outright, as when the user never consents or verifies by SMS.
    An omitted part keeps its current value.
    """

    delay_seconds: NonNegativeFloat | None = None
    suppress_next: NonNegativeInt | None = None


class AudienceLimit(msgspec.Struct, forbid_unknown_fields=True):
    """Requests each audience upload endpoint accepts in any ``window_seconds``.

    LINE allows 60 a minute; a test shortens the window rather than wait a minute.
    An omitted part keeps its current value.
    """

    requests: NonNegativeInt | None = None
    window_seconds: Annotated[float, Meta(gt=0)] | None = None


class FaultsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /__simulator/faults``; every part is optional.

    ``monthly_quota`` distinguishes absent (unchanged) from ``null`` (unlimited).
    """

    fail_next: FailNext | None = None
    delay_next: DelayNext | None = None
    rate_limits: RateLimits | None = None
    monthly_quota: NonNegativeInt | UnsetType | None = UNSET
    rates: FaultRates | None = None
    advance_clock: NonNegativeFloat | None = None
    pnp_delivery: PnpDeliveryFault | None = None
    audience_limit: AudienceLimit | None = None


def check_count(count: int) -> None:
    """Counts of upcoming requests a fault applies to are never negative."""
    if count < 0:
        raise ValueError("count must be >= 0")


def _failure_message(status: int) -> str:
    if status == 429:
        return "Too many requests"
    if status == 500:
        return "Internal server error"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Faults:
    """Faults pending for upcoming send requests and delivery completion events."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self.reset()

    def reset(self) -> None:
        self.failures_left = 0
        self._failure_status = 500
        self._failure_body = b""
        self.delays_left = 0
        self._delay_seconds = 0.0
        self._delay_before = False
        self.pnp_delivery_delay = 0.0
        self.pnp_suppress_left = 0
        self.set_rates({})

    def fail_next(self, count: int, status: int = 500, message: str | None = None) -> None:
        """Answer the next ``count`` push/multicast/PNP requests with ``status``, unexecuted.

        Replies are left alone: a bot replying to a follow event would otherwise use
        up a failure meant for the push a test is about.
        """
        check_count(count)
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        self.failures_left = count
        self._failure_status = status
        self._failure_body = encode(ErrorResponse(message=message or _failure_message(status)))

    def delay_next(self, count: int, seconds: float, *, before_processing: bool = False) -> None:
        """Answer the next ``count`` push/multicast/PNP requests ``seconds`` late (see DelayNext)."""
        check_count(count)
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self.delays_left = count
        self._delay_seconds = seconds
        self._delay_before = before_processing

    def set_rates(self, rates: dict[str, float], seed: int = 0, late_seconds: float = 5.0) -> None:
        """Make each send request fail or answer late at these rates (see FaultRates)."""
        check_fault_rates(rates)
        if late_seconds < 0:
            raise ValueError("late_seconds must be >= 0")
        self._rates = [
            (fault, rate, encode(ErrorResponse(message=_failure_message(int(fault)))))
            for fault, rate in rates.items()
            if fault != TIMEOUT
        ]
        self._late_rate = rates.get(TIMEOUT, 0.0)
        self._late_seconds = late_seconds
        self._random = random.Random(seed)
        self.rates = dict(rates)

    def draw(self) -> float:
        """One draw for this send request: raises its :class:`Refusal` (unexecuted) when it
        is to fail; the seconds its answer is to be held back when it is to answer late."""
        if not self.rates:
            return 0.0
        point = self._random.random()
        for fault, rate, body in self._rates:
            if point < rate:
                self._state.counters.injected_failures += 1
                raise Refusal(int(fault), body)
            point -= rate
        return self._late_seconds if point < self._late_rate else 0.0

    def set_pnp_delivery(
        self, *, delay_seconds: float | None = None, suppress_next: int | None = None
    ) -> None:
        """Delay every later delivery completion event, or drop the next few (see PnpDeliveryFault)."""
        if delay_seconds is not None:
            if delay_seconds < 0:
                raise ValueError("delay_seconds must be >= 0")
            self.pnp_delivery_delay = delay_seconds
        if suppress_next is not None:
            check_count(suppress_next)
            self.pnp_suppress_left = suppress_next

    def raise_injected_failure(self) -> None:
        """Refuse this send request with the pending failure, if there is one."""
        if self.failures_left:
            self.failures_left -= 1
            self._state.counters.injected_failures += 1
            raise Refusal(self._failure_status, self._failure_body)

    async def hold(self) -> float:
        """Take a pending delay: sleep now if it comes before processing, else return the
        seconds the answer is to be held back after it."""
        if not self.delays_left:
            return 0.0
        self.delays_left -= 1
        if self._delay_before:
            await asyncio.sleep(self._delay_seconds)
            return 0.0
        return self._delay_seconds

    def suppress_delivery(self) -> bool:
        """Whether the next delivery completion event is to be dropped (and counts it)."""
        if self.pnp_suppress_left:
            self.pnp_suppress_left -= 1
            return True
        return False
