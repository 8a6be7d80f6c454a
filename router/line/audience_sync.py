"""An audience's reachable LINE friends, uploaded to LINE as an audience for narrowcasts.

The router keeps only hashes of uploaded values, so the LINE user IDs sent are those of the
members the audience matches who are linked, friends and not opted out: the set
`GET /v1/audiences/{id}/line-user-ids.csv` exports (`audiences.line_user_ids`). The first sync
creates the LINE audience with the first 10,000 IDs and adds the rest 10,000 a request; its
audienceGroupId is recorded as soon as LINE answers, so a sync cut short continues into the
same LINE audience instead of leaving a second one behind. Later syncs add to it, and create
a new one only when LINE no longer has it (deleted or expired).

LINE cannot remove a user ID from an uploaded audience: a member who unfollowed, opted out or
left the audience since an earlier sync stays in the LINE audience. The way to shrink it is to
delete it at LINE (LINE Official Account Manager) and sync again, which creates a fresh one.

LINE allows 60 requests a minute on each upload endpoint. Every router process takes its
turn through `rate_buckets` (one row per request, at the time it went), a little over a
second apart; a 429 is waited out and the same request sent again, which is safe because
adding an ID twice is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import msgspec

from channels.base import LineAccount, ProviderError
from router import audiences, ratelimit
from router.database import Pool
from router.problems import ProblemError

log = logging.getLogger(__name__)

MAX_IDS_PER_REQUEST = 10_000  # LINE's limit for one upload request
MAX_DESCRIPTION_UTF16 = 120  # LINE's limit for an audience's name
# 60 requests a minute, whatever window LINE counts them in, with room for network jitter.
REQUEST_SPACING_SECONDS = 1.05
# Waits after a 429 (LINE says nothing of when to retry), then after each further one.
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 60.0
MAX_ATTEMPTS = 7
CREATE_BUCKET = "line:audience-create"
ADD_BUCKET = "line:audience-add"
GONE_STATUSES = frozenset({"EXPIRED"})

_T = TypeVar("_T")


# Seconds until the bucket's last request is `$2` seconds old (none or negative: go now).
class LineAudienceSync(msgspec.Struct, kw_only=True):
    """What a sync did: the LINE audience it filled and how much it sent."""

    audience_id: UUID
    line_audience_group_id: int
    created: bool  # a new LINE audience (first sync, or LINE no longer had the recorded one)
    uploaded_ids: int  # reachable LINE friends now; all are in the LINE audience
    requests: int  # upload requests LINE accepted
    synced_at: datetime


class _Uploader:
    """Sends upload requests at LINE's pace and retries the ones LINE may safely get again."""

    def __init__(self, pool: Pool, account: LineAccount, audience_id: UUID) -> None:
        self._pool = pool
        self._account = account
        self._audience_id = audience_id
        self.requests = 0

    async def create(self, name: str, user_ids: list[str]) -> int:
        """Create the LINE audience. A 429 was not executed, so it is retried; anything else
        is not: after a timeout or 5xx LINE may have created it, and a retry would make two."""
        group_id = await self._send(
            CREATE_BUCKET,
            lambda: self._account.create_audience(
                _description(name), self._upload_description(), user_ids
            ),
            idempotent=False,
        )
        return group_id

    async def add(self, group_id: int, user_ids: list[str]) -> None:
        await self._send(
            ADD_BUCKET,
            lambda: self._account.add_to_audience(group_id, self._upload_description(), user_ids),
            idempotent=True,
        )

    def _upload_description(self) -> str:
        return f"router audience {self._audience_id} part {self.requests + 1}"

    async def _send(
        self, bucket: str, call: Callable[[], Awaitable[_T]], *, idempotent: bool
    ) -> _T:
        delay = RETRY_FIRST_SECONDS
        for attempt in range(1, MAX_ATTEMPTS + 1):
            await ratelimit.wait_for_turn(self._pool, bucket, REQUEST_SPACING_SECONDS)
            try:
                result = await call()
            except ProviderError as exc:
                retryable = exc.status == 429 or (
                    idempotent and (exc.status == 0 or exc.status >= 500)
                )
                if not retryable or attempt == MAX_ATTEMPTS:
                    raise
                log.warning(
                    "LINE audience upload for %s answered %d; retrying in %.1f s",
                    self._audience_id,
                    exc.status,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            self.requests += 1
            return result
        raise AssertionError("unreachable")


def _description(name: str) -> str:
    """The audience's name cut to LINE's 120 characters (counted in UTF-16 units)."""
    units = 0
    for index, char in enumerate(name):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > MAX_DESCRIPTION_UTF16:
            return name[:index]
    return name


def _refused(
    exc: ProviderError, group_id: int | None, created: bool, uploaded: int
) -> ProblemError:
    if exc.status == 0 and group_id is None:
        detail = (
            "LINE did not answer the request creating the audience; it may have created one"
            f" anyway, which this router does not know of ({exc.message})"
        )
    elif exc.status == 0:
        detail = f"LINE did not answer ({exc.message})"
    else:
        detail = f"LINE answered {exc.status}: {exc.message}"
    if created:
        detail += (
            f"; LINE audience {group_id} was created with the first {uploaded:,} IDs and is"
            " recorded: sync again to add the rest"
        )
    return ProblemError(502, "LINE refused the request", detail)


async def sync(
    pool: Pool,
    account: LineAccount,
    audience_id: UUID,
    progress: Callable[[int], None] | None = None,
) -> LineAudienceSync:
    """Upload the audience's reachable LINE friends to its LINE audience, creating that first
    if need be. Raises a 404, 409 (a sync of it is running), 422 (nobody to upload) or 502
    (LINE refused) problem. Takes one request per 10,000 IDs, about a second each."""
    # One transaction for the whole sync: one snapshot of who is reachable, and the lock
    # that keeps a second sync of the same audience from creating a second LINE audience.
    async with pool.acquire() as conn, conn.transaction():
        locked = await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('line-audience-sync:' || $1, 0))",
            str(audience_id),
        )
        row = await conn.fetchrow(
            "SELECT name, line_audience_group_id FROM audiences WHERE id = $1", audience_id
        )
        if row is None:
            raise ProblemError(404, "Not found", f"no audience with id {audience_id}")
        if not locked:
            raise ProblemError(
                409, "Conflict", f"a LINE sync of audience {audience_id} is already running"
            )
        batches = audiences.line_user_ids(conn, audience_id, MAX_IDS_PER_REQUEST)
        first = await anext(batches, None)
        if first is None:
            raise ProblemError(
                422,
                "Nothing to upload",
                "no member of this audience is a linked LINE friend who has not opted out;"
                " a LINE audience is made of user IDs, so there is nothing to send",
            )
        uploader = _Uploader(pool, account, audience_id)
        group_id, created = row["line_audience_group_id"], False
        uploaded = 0
        try:
            if group_id is not None and not await _still_at_line(account, group_id):
                group_id = None
            batch: list[str] | None = first
            while batch is not None:
                if group_id is None:
                    group_id = await uploader.create(row["name"], batch)
                    created = True
                    await _record_group(pool, audience_id, group_id)
                else:
                    await uploader.add(group_id, batch)
                uploaded += len(batch)
                if progress is not None:
                    progress(uploaded)
                batch = await anext(batches, None)
        except ProviderError as exc:
            log.warning(
                "LINE audience sync of %s stopped after %d IDs: LINE answered %d",
                audience_id,
                uploaded,
                exc.status,
            )
            raise _refused(exc, group_id, created, uploaded) from None
        assert group_id is not None
        synced_at = await audiences.record_line_sync(conn, audience_id, group_id, uploaded)
        if synced_at is None:
            raise ProblemError(404, "Not found", f"audience {audience_id} was deleted meanwhile")
    log.info(
        "LINE audience %d of %s: %d IDs in %d requests",
        group_id,
        audience_id,
        uploaded,
        uploader.requests,
    )
    return LineAudienceSync(
        audience_id=audience_id,
        line_audience_group_id=group_id,
        created=created,
        uploaded_ids=uploaded,
        requests=uploader.requests,
        synced_at=synced_at,
    )


async def _still_at_line(account: LineAccount, group_id: int) -> bool:
    """False when LINE no longer has the recorded audience (deleted, or expired)."""
    status = await account.audience_status(group_id)
    if status is None or status in GONE_STATUSES:
        log.info("LINE audience %d is %s; a new one will be created", group_id, status or "gone")
        return False
    return True


async def _record_group(pool: Pool, audience_id: UUID, group_id: int) -> None:
    """Committed at once, outside the sync's transaction: the LINE audience exists now."""
    async with pool.acquire() as conn:
        await audiences.record_line_group(conn, audience_id, group_id)
