"""An audience's reachable LINE friends, uploaded to LINE as an audience for narrowcasts.

The router keeps only hashes of uploaded values, so the LINE user IDs sent are those of the
members the audience matches who are linked, friends and not opted out: the set
`GET /v1/audiences/{id}/line-user-ids.csv` exports (`audiences.line_user_id_page`). The first sync
creates the LINE audience with the first 10,000 IDs and adds the rest 10,000 a request; its
audienceGroupId is recorded as soon as LINE answers, so a sync cut short continues into the
same LINE audience instead of leaving a second one behind. Later syncs add to it, and create
a new one only when LINE no longer has it (deleted or expired).

A sync goes page by page in LINE user ID order (keyset: the next 10,000 after the last one
LINE accepted), each page read in its own short query and recorded in its own short
transaction; nothing is held while LINE is asked or the sync waits its turn. A lease on the
audience row (renewed before every request) keeps a second sync out. A sync that stopped
(LINE refused, or the process died: its lease then runs out) is resumed by the next one after
the last ID LINE accepted; a page LINE took just before a crash is sent again, which adds
nobody twice. Each page sees members as they are when it is read: one who became reachable
meanwhile is in it if their ID comes after the pages already sent, else in the next sync.

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
# How long a sync holds its audience without a sign of life: longer than the longest wait
# between two renewals (a 429 back-off, then LINE's answer), so only a sync that stopped for
# good (a crashed process) loses it; the next sync then resumes where it stopped.
LEASE_SECONDS = 180.0

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

    def __init__(self, pool: Pool, account: LineAccount, audience_id: UUID, holder: UUID) -> None:
        self._pool = pool
        self._account = account
        self._audience_id = audience_id
        self._holder = holder
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
            async with self._pool.acquire() as conn:
                if not await audiences.renew_line_sync(
                    conn, self._audience_id, self._holder, LEASE_SECONDS
                ):
                    raise _lost(self._audience_id)
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
    if need be, or resume the sync that stopped where it stopped. Raises a 404, 409 (a sync of
    it is running), 422 (nobody to upload) or 502 (LINE refused) problem. Takes one request
    per 10,000 IDs, about a second each."""
    async with pool.acquire() as conn:
        lease = await audiences.take_line_sync(conn, audience_id, LEASE_SECONDS)
        if lease is None:
            exists = await conn.fetchval("SELECT true FROM audiences WHERE id = $1", audience_id)
    if lease is None:
        if not exists:
            raise ProblemError(404, "Not found", f"no audience with id {audience_id}")
        raise ProblemError(
            409, "Conflict", f"a LINE sync of audience {audience_id} is already running"
        )
    try:
        return await _sync(pool, account, audience_id, lease, progress)
    finally:
        # After a finish this finds nothing to release; after a refusal (or a lost lease) the
        # resume point stays and the next sync goes on from it.
        async with pool.acquire() as conn:
            await audiences.release_line_sync(conn, audience_id, lease.holder)


async def _sync(
    pool: Pool,
    account: LineAccount,
    audience_id: UUID,
    lease: audiences.LineSyncLease,
    progress: Callable[[int], None] | None,
) -> LineAudienceSync:
    """The pages: each read, sent and recorded on its own, with no connection held while LINE
    is asked or the sync waits its turn."""
    uploader = _Uploader(pool, account, audience_id, lease.holder)
    group_id, after, uploaded = lease.group_id, lease.after, lease.sent
    created = False
    if group_id is not None and not await _still_at_line(account, group_id):
        group_id, after, uploaded = None, None, 0
        async with pool.acquire() as conn:
            await audiences.restart_line_sync(conn, audience_id, lease.holder)
    try:
        while True:
            async with pool.acquire() as conn:
                batch = await audiences.line_user_id_page(
                    conn, audience_id, lease.type, after, MAX_IDS_PER_REQUEST, lease.line_account
                )
            if not batch:
                break
            if group_id is None:
                group_id = await uploader.create(lease.name, batch)
                created = True
            else:
                await uploader.add(group_id, batch)
            after, uploaded = batch[-1], uploaded + len(batch)
            page = audiences.LineSyncPage(group_id=group_id, after=after, sent=uploaded)
            async with pool.acquire() as conn:
                if not await audiences.record_line_sync_page(
                    conn, audience_id, lease.holder, page, LEASE_SECONDS
                ):
                    raise _lost(audience_id)
            if progress is not None:
                progress(uploaded)
    except ProviderError as exc:
        log.warning(
            "LINE audience sync of %s stopped after %d IDs: LINE answered %d",
            audience_id,
            uploaded,
            exc.status,
        )
        raise _refused(exc, group_id, created, uploaded) from None
    if group_id is None:
        raise ProblemError(
            422,
            "Nothing to upload",
            "no member of this audience is a linked LINE friend who has not opted out;"
            " a LINE audience is made of user IDs, so there is nothing to send",
        )
    async with pool.acquire() as conn:
        synced_at = await audiences.finish_line_sync(
            conn, audience_id, lease.holder, group_id, uploaded
        )
    if synced_at is None:
        raise _lost(audience_id)
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


def _lost(audience_id: UUID) -> ProblemError:
    return ProblemError(
        409,
        "Conflict",
        f"audience {audience_id} was deleted, or its LINE sync was taken over, meanwhile",
    )


async def _still_at_line(account: LineAccount, group_id: int) -> bool:
    """False when LINE no longer has the recorded audience (deleted, or expired)."""
    status = await account.audience_status(group_id)
    if status is None or status in GONE_STATUSES:
        log.info("LINE audience %d is %s; a new one will be created", group_id, status or "gone")
        return False
    return True
