"""SMTP AUTH for the relay: who may send, and how fast a wrong guess can be followed by another.

Passwords are checked against `[smtp_ingress] users`. Guessing is slowed twice: a connection
is closed after `auth_attempts` failures (router.ingress.smtp_session), and a source address
that has failed that often must wait before its next try, `auth_delay_seconds` at first and
twice as long after each further failure, up to 15 minutes. A success clears its address.

The waits live in this process: the relay's port is bound by one process per host, so one
process sees every connection a host's listener gets. Each failure and each wait imposed is
logged with the source address and the user name as configured (a name that is not
configured by a hash of it only, since it may be an email address); never the password.

A check costs the same whether the name exists or not (an unknown name is checked against a
dummy hash), so the time of a reply does not tell which names exist; scrypt runs in a thread,
so the event loop answers everyone else meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from router.passwords import hash_password, verify_password

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS = 900.0
# An address quiet for this long starts afresh; at most this many addresses are remembered
# (the oldest are forgotten first), so a spray from many addresses cannot exhaust memory.
FORGET_AFTER_SECONDS = 24 * 3600.0
MAX_ADDRESSES = 10_000


class Credentials:
    """Checks user and password; remembers good logins so a sender reconnecting does not
    pay for scrypt each time."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users
        self._verified: set[bytes] = set()
        # What an unknown name is checked against: the same scrypt work as a known one.
        self._dummy = hash_password(secrets.token_urlsafe(16))

    async def check(self, user: str, password: str) -> bool:
        stored = self._users.get(user)
        if stored is None:
            await asyncio.to_thread(verify_password, password, self._dummy)
            return False
        key = hashlib.sha256(f"{user}\0{password}\0{stored}".encode()).digest()
        if key in self._verified or await asyncio.to_thread(verify_password, password, stored):
            self._verified.add(key)
            return True
        return False

    def safe_name(self, user: str) -> str:
        """How a user name may appear in the log: a configured name as it is, any other
        only as a short hash (it is the client's text, perhaps someone's address)."""
        if user in self._users:
            return repr(user)
        digest = hashlib.sha256(user.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        return f"unknown user sha256:{digest}"


@dataclass
class _Strikes:
    failures: int = 0
    wait_until: float = 0.0
    last_failure: float = 0.0


@dataclass
class _Turns:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: int = 0


def address_key(host: str) -> str:
    """The unit a wait applies to: an IPv4 address, or an IPv6 /64 (one site's network)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AuthGuard:
    """Per source address: failures in a row, and until when its next AUTH is refused."""

    def __init__(
        self,
        attempts: int,
        first_delay: float,
        *,
        max_delay: float = MAX_DELAY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._clock = clock
        self._by_address: OrderedDict[str, _Strikes] = OrderedDict()
        self._turns: dict[str, _Turns] = {}

    @contextlib.asynccontextmanager
    async def turn(self, host: str) -> AsyncIterator[None]:
        """One AUTH check at a time per address: a check takes a while off the event loop, and
        connections opened together must not all guess before the first failure counts."""
        key = address_key(host)
        turns = self._turns.setdefault(key, _Turns())
        turns.holders += 1
        try:
            async with turns.lock:
                yield
        finally:
            turns.holders -= 1
            if not turns.holders:
                del self._turns[key]

    def wait_left(self, host: str) -> float:
        """Seconds before this address may try again (0: now)."""
        strikes = self._by_address.get(address_key(host))
        if strikes is None:
            return 0.0
        return max(0.0, strikes.wait_until - self._clock())

    def failed(self, host: str, user: str, *, on_connection: int) -> None:
        """A wrong password (`user` in its safe form): count it, log it, and make the
        address wait once it has failed `attempts` times in a row."""
        now = self._clock()
        self._forget_old(now)
        key = address_key(host)
        strikes = self._by_address.pop(key, None) or _Strikes()
        self._by_address[key] = strikes  # most recent last
        strikes.failures += 1
        strikes.last_failure = now
        closing = "; closing the connection" if on_connection >= self.attempts else ""
        log.warning(
            "SMTP AUTH failed from %s as %s (%d on this connection, %d in a row from"
            " this address)%s",
            host,
            user,
            on_connection,
            strikes.failures,
            closing,
        )
        if strikes.failures >= self.attempts:
            over = strikes.failures - self.attempts
            delay = min(self._max_delay, self._first_delay * 2 ** min(over, 32))
            strikes.wait_until = now + delay
            log.warning(
                "SMTP AUTH locked out %s for %.0f s after %d failures in a row",
                key,
                delay,
                strikes.failures,
            )

    def succeeded(self, host: str) -> None:
        self._by_address.pop(address_key(host), None)

    def _forget_old(self, now: float) -> None:
        while self._by_address:
            oldest = next(iter(self._by_address.values()))
            stale = oldest.last_failure < now - FORGET_AFTER_SECONDS
            if not stale and len(self._by_address) < MAX_ADDRESSES:
                return
            self._by_address.popitem(last=False)
