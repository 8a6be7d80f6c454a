"""Coupon code uploads: a text file (one code per line) or a JSON list, checked code by code,
streamed into PostgreSQL by one COPY into a temporary table while the rest arrives, then moved
into the pool by one sorted INSERT that leaves out what the pool already has.

A code is a secret of the member it will go to: a rejected one is reported by its line
number (or its index in the list) and the reason, never quoted, and no code is logged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import msgspec

from router.database import Connection
from router.problems import FieldError, ProblemError
from router.upload_pieces import parsed_pieces

MAX_CODES = 1_000_000
"""Lines of a file (blank ones included) or items of a JSON list in one upload."""
MAX_CODE = 255
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_REJECTIONS = 1_000
"""Rejected codes reported one by one; the count covers them all."""
SORT_MEMORY = "128MB"
ANALYZE_AFTER = 10_000
# Longer lines cannot be a code; they are not buffered beyond this.
MAX_LINE_BYTES = 4 * MAX_CODE + 2

_BOM = b"\xef\xbb\xbf"
# A chunk of lines that are all plain ASCII codes (no surrounding space, no CR): taken whole,
# without looking at each line, which is what nearly every real file is.
_PLAIN_LINES = re.compile(rb"(?:[\x21-\x7e](?:[\x20-\x7e]{0,%d}[\x21-\x7e])?\n)*" % (MAX_CODE - 2))
_PLAIN_LINE = re.compile(rb"[\x21-\x7e](?:[\x20-\x7e]{0,%d}[\x21-\x7e])?" % (MAX_CODE - 2))


class RejectedCode(msgspec.Struct, frozen=True, omit_defaults=True):
    """A code that was not added: where it was (the file's line from 1, or the list's index
    from 0) and why; never the code itself."""

    reason: str
    line: int | None = None
    index: int | None = None


class UploadCounts(msgspec.Struct, kw_only=True):
    received: int = 0
    """Codes given: lines that are not blank, or items of the list."""
    added: int = 0
    duplicates: int = 0
    """Valid codes not added: already in the pool, or given twice in this upload."""
    rejected: int = 0
    rejections: list[RejectedCode] = msgspec.field(default_factory=list)


def check_code(text: str) -> str | None:
    """Why `text` (already trimmed) cannot be a code, or None."""
    if not text:
        return "empty"
    if len(text) > MAX_CODE:
        return f"longer than {MAX_CODE} characters"
    if not text.isprintable():
        return "contains a character that is not printable (a control or separator)"
    return None


def _too_large(detail: str, field: str = "file") -> ProblemError:
    return ProblemError(413, "Request body too large", detail, [FieldError(field, detail)])


def _copy_text(code: bytes) -> bytes:
    """A code as a value of COPY's text format (a printable code has no tab or line break)."""
    return code.replace(b"\\", b"\\\\")


class _LineReader:
    """Splits a byte stream into numbered lines (LF or CRLF, a leading BOM dropped, blank lines
    skipped but numbered) and turns them into COPY text rows of the valid codes."""

    def __init__(self, counts: UploadCounts) -> None:
        self._counts = counts
        self._rest = b""
        self._overlong = False
        self._start = True
        self.number = 0

    def feed(self, chunk: bytes) -> bytes:
        data = self._rest + chunk
        if self._start:
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._rest = data
                return b""
            self._start = False
            data = data.removeprefix(_BOM)
        cut = data.rfind(b"\n") + 1
        whole, self._rest = data[:cut], data[cut:]
        rows = self._lines(whole)
        if len(self._rest) > MAX_LINE_BYTES:
            self._overlong = True
            self._rest = b""
        return rows

    def end(self) -> bytes:
        if self._start:
            self._start = False
            self._rest = self._rest.removeprefix(_BOM)
        if not self._rest and not self._overlong:
            return b""
        last, self._rest = self._rest, b""
        row = self._line(last)
        return b"" if row is None else row + b"\n"

    def _lines(self, whole: bytes) -> bytes:
        """COPY rows for complete lines (`whole` ends with a line break or is empty)."""
        count = whole.count(b"\n")
        if self.number + count > MAX_CODES:
            raise _too_large(f"the file has more than {MAX_CODES:,} lines")
        if not self._overlong and _PLAIN_LINES.fullmatch(whole):
            self.number += count
            self._counts.received += count
            return _copy_text(whole)
        rows = [row for line in whole.split(b"\n")[:-1] if (row := self._line(line)) is not None]
        return b"\n".join(rows) + b"\n" if rows else b""

    def _line(self, line: bytes) -> bytes | None:
        self.number += 1
        if self.number > MAX_CODES:
            raise _too_large(f"the file has more than {MAX_CODES:,} lines")
        if self._overlong:
            self._overlong = False
            self._counts.received += 1
            self._reject(f"longer than {MAX_CODE} characters", line=self.number)
            return None
        line = line.removesuffix(b"\r")
        if _PLAIN_LINE.fullmatch(line):
            self._counts.received += 1
            return _copy_text(line)
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._counts.received += 1
            self._reject("not UTF-8 text", line=self.number)
            return None
        if not text:
            return None
        self._counts.received += 1
        if (reason := check_code(text)) is not None:
            self._reject(reason, line=self.number)
            return None
        return _copy_text(text.encode())

    def _reject(self, reason: str, **where: int) -> None:
        _reject(self._counts, RejectedCode(reason, **where))


def _reject(counts: UploadCounts, rejection: RejectedCode) -> None:
    counts.rejected += 1
    if len(counts.rejections) < MAX_REJECTIONS:
        counts.rejections.append(rejection)


async def _file_rows(reader: _LineReader, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The file's valid codes as COPY text rows, a piece at a time as the file arrives."""
    async for rows in parsed_pieces(
        chunks,
        lambda data, end: reader.feed(data) + (reader.end() if end else b""),
        max_bytes=MAX_FILE_BYTES,
        too_large=lambda: _too_large(f"the file is larger than {MAX_FILE_BYTES:,} bytes (64 MiB)"),
    ):
        yield rows


def list_rows(codes: Iterable[str], counts: UploadCounts) -> bytes:
    """COPY text rows of the valid codes of a JSON list; the others counted as rejected."""
    rows: list[bytes] = []
    for index, given in enumerate(codes):
        counts.received += 1
        text = given.strip()
        if (reason := check_code(text)) is not None:
            _reject(counts, RejectedCode(reason, index=index))
            continue
        rows.append(_copy_text(text.encode()))
    return b"\n".join(rows) + b"\n" if rows else b""


async def add_file(conn: Connection, pool_id: str, chunks: AsyncIterable[bytes]) -> UploadCounts:
    """Add a file's codes to the pool; in the caller's transaction, which holds the pool."""
    counts = UploadCounts()
    await _load(conn, pool_id, _file_rows(_LineReader(counts), chunks), counts)
    return counts


async def add_list(conn: Connection, pool_id: str, codes: list[str]) -> UploadCounts:
    """Add a JSON list's codes to the pool; in the caller's transaction, which holds the pool."""
    counts = UploadCounts()
    rows = await asyncio.to_thread(list_rows, codes, counts)

    async def source() -> AsyncIterator[bytes]:
        if rows:
            yield rows

    await _load(conn, pool_id, source(), counts)
    return counts


async def _load(
    conn: Connection, pool_id: str, rows: AsyncIterable[bytes], counts: UploadCounts
) -> None:
    await conn.execute(
        'CREATE TEMP TABLE upload_codes (code text COLLATE "C" NOT NULL) ON COMMIT DROP'
    )
    await conn.copy_to_table("upload_codes", source=rows, format="text")
    await conn.execute(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
    await conn.execute("ANALYZE upload_codes")
    # The caller holds the pool (`coupon_pools.hold`), so no other upload adds codes
    # meanwhile: a first upload inserts without looking anything up, a later one leaves out
    # the codes the pool has (held ones included: a repeated code stays with its holder).
    has_codes = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM coupon_codes WHERE pool_id = $1)", pool_id
    )
    already = (
        " WHERE NOT EXISTS (SELECT 1 FROM coupon_codes c WHERE c.pool_id = $1 AND c.code = u.code)"
        if has_codes
        else ""
    )
    select = "SELECT DISTINCT $1::text, u.code FROM upload_codes u" + already  # noqa: S608
    status = await conn.execute(
        f"INSERT INTO coupon_codes (pool_id, code) {select} ORDER BY 2", pool_id
    )
    counts.added = int(status.rsplit(" ", 1)[1])
    counts.duplicates = counts.received - counts.rejected - counts.added
    await conn.execute("DROP TABLE upload_codes")
    if counts.added >= ANALYZE_AFTER:
        # Fresh statistics for the hand-out's look-up of a free code in a large new pool.
        await conn.execute("ANALYZE coupon_codes")
