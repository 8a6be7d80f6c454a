"""What may be logged about an exception: its class, its SQLSTATE and where it was raised,
never its message. Messages quote values (PostgreSQL's "invalid input syntax ... "x"", a
provider's echo of a bad address), and the log must never carry an address or a token."""

from __future__ import annotations

import logging
import traceback


def describe(exc: BaseException) -> str:
    """`UniqueViolationError [SQLSTATE 23505]`, `TimeoutError`: enough to act on, no values."""
    code = getattr(exc, "sqlstate", None)
    name = type(exc).__name__
    return f"{name} [SQLSTATE {code}]" if isinstance(code, str) else name


def frames(exc: BaseException) -> str:
    """The traceback's file, line, function and source text, without the exception's
    message or any local value."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()


class ExceptionInOneLine(logging.Filter):
    """For a library logger that logs every failed retry with its traceback (asyncpg's pool
    while the database is down): the exception described on the record's line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {describe(record.exc_info[1])}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True
