"""Which errors mean "PostgreSQL cannot be reached right now", as opposed to a bug or bad input.

Front doors answer those with 503 and `Retry-After` (the client should try again) instead of
500 (the client should give up). The test is on the exception and its causes: a connection
exception (SQLSTATE class 08), a server shutting down, starting up or full (57P01, 57P02,
57P03, 57P05, 53300), a connection asyncpg already knows is closed, or a socket error or
timeout raised while asyncpg was connecting, waiting for a pool connection or for an answer.
"""

from __future__ import annotations

import asyncpg

UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05", "53300"})
"""admin_shutdown, crash_shutdown, cannot_connect_now, idle_session_timeout,
too_many_connections: the server is there, but not for this connection."""


def is_unavailable(exc: BaseException) -> bool:
    """True if `exc`, or an exception it was raised from, says the database is unreachable."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _unavailable(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresConnectionError):
        return True
    if getattr(exc, "sqlstate", None) in UNAVAILABLE_SQLSTATES:
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        message = str(exc)
        return "connection is closed" in message or "pool is closing" in message
    if isinstance(exc, OSError | TimeoutError):
        # A refused or reset socket, a missing Unix socket, a connect or command timeout: only
        # when asyncpg raised it, so an unreachable LINE or SMTP server is not mistaken for it.
        return _raised_in_asyncpg(exc)
    return False


def _raised_in_asyncpg(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith("asyncpg"):
            return True
        tb = tb.tb_next
    return False


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.TransactionRollbackError,
)
"""For a worker's `except` around its own statements: the database was out of reach or stopped
the statement (a restart, a lost connection, a server starting up or out of connections, a
serialization failure), not that the statement was wrong, so what it was storing is stored
again once the database answers. Wider than `is_unavailable`, which must tell a front door's
database errors from its other I/O."""
