"""What may be logged about an exception: its class, its SQLSTATE and where it was raised,
never its message. Messages quote values (PostgreSQL's "invalid input syntax ... "x"", a
provider's echo of a bad address), and the log must never carry an address or a token.

The log format itself escapes control characters (`SafeFormatter`): ids and paths a client
chose end up in log lines, and a NUL or a line break in one must not corrupt the log."""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any


def describe(exc: BaseException) -> str:
    """`UniqueViolationError [SQLSTATE 23505]`, `TimeoutError`: enough to act on, no values."""
    code = getattr(exc, "sqlstate", None)
    name = type(exc).__name__
    return f"{name} [SQLSTATE {code}]" if isinstance(code, str) else name


def frames(exc: BaseException) -> str:
    """The traceback's file, line, function and source text, without the exception's
    message or any local value."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def escape_controls(text: str, keep_newlines: bool = False) -> str:
    """`text` with every control character (and lone surrogate) written as an escape, so a
    value in a log line can neither end the line, hide text nor make `grep` see binary."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if keep_newlines and char == "\n":
            return char
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(escape, text)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SafeFormatter(logging.Formatter):
    """The router's log format, with control characters escaped: in the message entirely, in a
    traceback all but the line breaks between its lines."""

    def __init__(self, fmt: str = LOG_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return escape_controls(super().formatException(ei), keep_newlines=True)

    def formatStack(self, stack_info: str) -> str:
        return escape_controls(super().formatStack(stack_info), keep_newlines=True)


# Libraries whose lines below WARNING carry what the log must not: linebot's debug lines hold
# response bodies, pgserver's the initdb and pg_ctl transcripts, and aiosmtpd's ("mail.log")
# INFO lines every SMTP command it reads, envelope sender and recipient addresses included.
LIBRARY_LEVELS = {
    "linebot": logging.WARNING,
    "pgserver": logging.WARNING,
    "mail.log": logging.WARNING,
}


def configure_logging() -> None:
    """The process's logging: INFO and up on stderr in the safe format, the libraries above at
    their levels. Litestar later replaces the root's handlers (with the same format) but keeps
    these levels: it configures only its own logger and the root."""
    console = logging.StreamHandler()
    console.setFormatter(SafeFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[console])
    for name, level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level)


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
