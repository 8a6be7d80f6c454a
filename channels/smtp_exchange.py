"""One message's SMTP transaction (MAIL, RCPT, DATA, the content) on an open connection, with
the envelope pipelined when the server offers PIPELINING (RFC 2920).

The client library reads one reply per command it writes, so it cannot have several commands
in flight. For the transaction, a `ReplyReader` takes the connection's incoming bytes in the
library's protocol's place and keeps every reply in order; the library's protocol gets the
connection back when the transaction is over, and still does the rest (greeting, EHLO,
STARTTLS, AUTH, RSET, QUIT). With PIPELINING, MAIL FROM, RCPT TO and DATA go out in one write
and their replies are read in order (DATA may only end a group, so the content waits for the
354); without it, each command waits for its reply, as RFC 5321 asks. Either way the message
takes its two or four writes and no more, and each reply is matched to its own command.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import aiosmtplib
from aiosmtplib import SMTPResponse, SMTPStatus
from aiosmtplib.protocol import SMTPProtocol

# A reply longer than this (a hostile or broken server) ends the connection.
MAX_REPLY_BYTES = 32 * 1024

# Content lines starting with "." get another one (RFC 5321 4.5.2, "transparency").
_LEADING_PERIOD = re.compile(rb"^\.", re.MULTILINE)


def content_bytes(normalized: bytes) -> bytes:
    """The message (its line ends already CRLF: `normalize_message_line_endings`) as it goes
    after the 354: dot-stuffed, with the end marker."""
    return _LEADING_PERIOD.sub(b"..", normalized) + b".\r\n"


class ReplyReader(asyncio.Protocol):
    """Every reply the server sends during one transaction, parsed and kept in order.

    The protocol it stands in for (`inner`) still learns of a lost connection and of the
    transport's flow control, so the client library sees the connection as it is."""

    def __init__(self, inner: SMTPProtocol) -> None:
        self._inner = inner
        self.write = inner.write  # the client library's: it refuses a closing connection
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._failure: aiosmtplib.SMTPException | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (reply := self._parse_one()) is not None:
            self._replies.append(reply)
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._fail(
                aiosmtplib.SMTPResponseException(
                    SMTPStatus.invalid_response.value, "Response too long"
                )
            )
        self._wake()

    def _parse_one(self) -> SMTPResponse | None:
        """The first whole reply in the buffer, taken out of it (None: not whole yet)."""
        lines: list[bytes] = []
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset : end + 1])
            offset = end + 1
            code = line[:3]
            if not code.isdigit():
                text = line.decode("utf-8", "replace").strip()
                self._buffer.clear()
                self._fail(
                    aiosmtplib.SMTPResponseException(
                        SMTPStatus.invalid_response.value, f"Malformed SMTP response line: {text}"
                    )
                )
                return None
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                text = b"\n".join(lines).decode("utf-8", "surrogateescape")
                return SMTPResponse(int(code), text)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        failure = aiosmtplib.SMTPServerDisconnected("Connection lost")
        failure.__cause__ = exc
        self._fail(failure)
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes, and connection_lost follows

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _fail(self, failure: aiosmtplib.SMTPException) -> None:
        if self._failure is None:
            self._failure = failure
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def reply(self, timeout: float | None) -> SMTPResponse:  # noqa: ASYNC109
        """The next reply, in the order the commands were written."""
        if not self._replies and self._failure is None:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        if self._replies:
            return self._replies.popleft()
        if self._failure is not None:
            raise self._failure
        raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@contextmanager
def reading_replies(client: aiosmtplib.SMTP) -> Iterator[ReplyReader]:
    """The connection's incoming bytes go to a `ReplyReader` until the block ends."""
    transport, protocol = client.transport, client.protocol
    if transport is None or protocol is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    reader = ReplyReader(protocol)
    transport.set_protocol(reader)
    try:
        yield reader
    finally:
        if transport.get_protocol() is reader:
            transport.set_protocol(protocol)


async def transact(
    client: aiosmtplib.SMTP,
    envelope: tuple[bytes, bytes],
    content: bytes,
    *,
    pipelining: bool,
    timeout: float | None,  # noqa: ASYNC109
    written: Callable[[], None],
) -> SMTPResponse:
    """Send one message: `envelope` is the MAIL and RCPT command lines (without CRLF),
    `content` what follows the 354 (see `content_bytes`). Returns the reply to the content;
    a refusal raises as the client library's `sendmail` does (the sender: SMTPSenderRefused,
    the recipient: SMTPRecipientsRefused with its reply, the DATA or the content:
    SMTPDataError), the envelope then still open for a RSET. `written` is called once the
    whole content has been handed to the transport."""
    mail_line, rcpt_line = envelope
    with reading_replies(client) as reader:
        write = reader.write
        if pipelining:
            write(b"%s\r\n%s\r\nDATA\r\n" % (mail_line, rcpt_line))
            mail = await reader.reply(timeout)
            rcpt = await reader.reply(timeout)
            data = await reader.reply(timeout)
        else:
            write(mail_line + b"\r\n")
            mail = rcpt = data = await reader.reply(timeout)
            if mail.code == SMTPStatus.completed:
                write(rcpt_line + b"\r\n")
                rcpt = data = await reader.reply(timeout)
                if rcpt.code in (SMTPStatus.completed, SMTPStatus.will_forward):
                    write(b"DATA\r\n")
                    data = await reader.reply(timeout)
        refusal = _refusal(mail, rcpt, data, mail_line, rcpt_line)
        if refusal is not None:
            if data.code == SMTPStatus.start_input:
                # The server waits for content that must not go: only closing ends that.
                client.close()
            raise refusal
        write(content)
        written()
        final = await reader.reply(timeout)
    if final.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(final.code, final.message)
    return final


def _refusal(
    mail: SMTPResponse,
    rcpt: SMTPResponse,
    data: SMTPResponse,
    mail_line: bytes,
    rcpt_line: bytes,
) -> Exception | None:
    """The first refusal among the envelope's replies, as the client library raises it."""
    if mail.code != SMTPStatus.completed:
        return aiosmtplib.SMTPSenderRefused(mail.code, mail.message, _address(mail_line))
    if rcpt.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        refused = aiosmtplib.SMTPRecipientRefused(rcpt.code, rcpt.message, _address(rcpt_line))
        return aiosmtplib.SMTPRecipientsRefused([refused])
    if data.code != SMTPStatus.start_input:
        return aiosmtplib.SMTPDataError(data.code, data.message)
    return None


def _address(command_line: bytes) -> str:
    """`MAIL FROM:<a@b> SIZE=1` -> `a@b`."""
    start = command_line.find(b"<") + 1
    return command_line[start : command_line.find(b">", start)].decode("ascii")
