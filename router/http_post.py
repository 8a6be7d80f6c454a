"""Posting a body to a receiver the company runs, and saying in one line what went wrong."""

from __future__ import annotations

import aiohttp


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> str | None:
    """None when the receiver answered 2xx; otherwise the reason, for the row's last_error."""
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            if 200 <= resp.status < 300:
                return None
            return f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()
