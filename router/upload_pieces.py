"""Parsing an uploaded file while it arrives: audience files and coupon code files.

The body comes in small network chunks; parsing each alone costs a thread hop apiece, and
parsing the whole file at the end holds it in memory. So chunks are gathered to `PARSE_CHUNK`
bytes and each piece is parsed in a worker thread (validation is CPU work: the event loop
keeps answering), its rows handed on to COPY at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable

PARSE_CHUNK = 256 * 1024

# Parses one piece of the file (True: the last one, so the parser flushes its partial line)
# into rows for COPY, or b"" when none.
Parse = Callable[[bytes, bool], bytes]


async def parsed_pieces(
    chunks: AsyncIterable[bytes],
    parse: Parse,
    *,
    max_bytes: int,
    too_large: Callable[[], Exception],
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The rows `parse` makes of the file, piece by piece; `too_large()` is raised as soon as
    more than `max_bytes` arrived, and `progress` is told the bytes read so far."""
    size = 0
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise too_large()
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= PARSE_CHUNK:
            rows = await asyncio.to_thread(parse, b"".join(pending), False)
            pending, pending_size = [], 0
            if rows:
                yield rows
        if progress is not None:
            progress(size)
    rows = await asyncio.to_thread(parse, b"".join(pending), True)
    if rows:
        yield rows
