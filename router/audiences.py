"""Audiences: uploaded files of email addresses, phone numbers or LINE user IDs, kept as hashes.

A file is read as a stream of chunks, split into lines, each line validated, normalised and
hashed (SHA-256) in a worker thread, and the hashes streamed into PostgreSQL by one binary COPY
into a temporary table while the next chunk is read, so memory stays flat whatever the file
size and Python and PostgreSQL work at the same time. One sorted INSERT then moves the distinct
hashes into `audience_entries`. Raw values exist only in the chunk being processed: they are
never stored, logged or quoted in an error reason. Matching against members is a join on their
hash columns.

An audience belongs to one LINE account (`line_account`, "default" unless given): a file of
LINE user IDs holds that account's IDs (each provider gives a person a different one), so it
matches members by their IDs under that account; its LINE reach is counted there (and under
every configured account on request), and its LINE audience is uploaded to that account.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Literal

import msgspec
import phonenumbers

from router.config import DEFAULT_LINE_ACCOUNT, LINE_ACCOUNT_NAME
from router.database import Connection
from router.identifiers import LINE_USER_ID
from router.problems import FieldError, ProblemError
from router.reach import EMAIL_REACHABLE_SQL, LINE_REACHABLE_SQL, line_identity_join
from router.store import journey_triggers
from router.store.row_ids import uuid7
from router.upload_pieces import parsed_pieces

AudienceType = Literal["email", "phone", "line_user_id"]
AUDIENCE_TYPES: tuple[AudienceType, ...] = ("email", "phone", "line_user_id")

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_LINES = 1_500_000
MAX_ERRORS = 1_000
MAX_NAME = 255
# Memory PostgreSQL may use to de-duplicate and sort one upload's hashes (1.5M take ~180 MB;
# beyond it the sort spills to disk, which is slower but still correct).
SORT_MEMORY = "128MB"
ANALYZE_AFTER = 10_000  # valid lines in one upload that make the router refresh statistics
MAX_EMAIL = 120
# Longer lines cannot be valid of any type; they are not buffered beyond this.
MAX_LINE_BYTES = 1_024

_BOM = b"\xef\xbb\xbf"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_EMAIL_CHARS = re.compile(r"[A-Za-z0-9_.@-]+")
_PHONE_CHARS = re.compile(r"[0-9() -]+")
# The common lines, recognised on their bytes (a CR of CRLF included): exactly what the full
# checks of `LineClassifier` accept when there is no surrounding space, so those run only for
# the rest (and for every invalid line, whose reason they give).
_PLAIN: dict[str, re.Pattern[bytes]] = {
    "email": re.compile(rb"(?=.{1,%d}\r?\Z)[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+\r?" % MAX_EMAIL),
    "line_user_id": re.compile(rb"U[0-9a-f]{32}\r?"),
}

# PostgreSQL's binary COPY format: the header, each row as one 32-byte bytea field, the trailer.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_ROW = b"\x00\x01" + (32).to_bytes(4, "big")
_COPY_TRAILER = b"\xff\xff"

# How a member's key for each audience type is written in SQL, over `members m` and their
# LINE identity `member_line_accounts l` under the account in question. LINE user IDs are
# hashed on the fly: they are stored raw, the audience keeps only its hash. The LINE
# expression is the one member_line_accounts_user_id_sha256 indexes (migration 0037): an ID
# is ASCII, so its bytea cast is its UTF-8 bytes.
MEMBER_KEY: dict[str, str] = {
    "email": "m.email_sha256",
    "phone": "m.phone_sha256",
    "line_user_id": "sha256(l.user_id::bytea)",
}


def members_by_key(kind: str, hashes: str, account_sql: str = "'default'") -> str:
    """Joins after `FROM {hashes}` (rows with `value_sha256`) to the members whose key of
    `kind` is among them, as `members m` (and `l`), each through its own index."""
    if kind == "line_user_id":
        return (
            f"JOIN member_line_accounts l ON l.account = {account_sql}"
            f" AND sha256(l.user_id::bytea) = {hashes}.value_sha256"
            " JOIN members m ON m.member_id = l.member_id"
        )
    return f"JOIN members m ON {MEMBER_KEY[kind]} = {hashes}.value_sha256"


def account_literal(account: str) -> str:
    """An account name (`LINE_ACCOUNT_NAME`: letters, digits, _ and -, so the quotes hold)
    as an SQL literal, for statements whose parameters are fixed."""
    if not LINE_ACCOUNT_NAME.fullmatch(account):
        raise ValueError("not a LINE account name")
    return f"'{account}'"


class LineError(msgspec.Struct, frozen=True):
    """An invalid line of the file: its number (from 1) and why; never its content."""

    line: int
    reason: str


class AudienceReport(msgspec.Struct, kw_only=True):
    """An audience as the API reports it: upload totals and who it reaches today."""

    id: uuid.UUID
    name: str
    type: AudienceType
    line_account: str
    """The LINE account whose user IDs a `line_user_id` file holds, whose reach
    `reachable_line` counts and to which `line-sync` uploads."""
    lines: int
    valid: int
    invalid: int
    duplicates: int
    matched: int
    reachable_line: int
    reachable_email: int
    reachable_line_by_account: dict[str, int]
    """LINE reach of the matched members under each configured LINE account."""
    errors: list[LineError]
    # The LINE audience `POST /v1/audiences/{id}/line-sync` fills, once it has run.
    line_audience_group_id: int | None = None
    line_synced_at: datetime | None = None
    line_synced_ids: int | None = None
    created_at: datetime
    updated_at: datetime


_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
NAME_PATTERN = f"^[^{_CONTROL}]*[^\\s{_CONTROL}][^{_CONTROL}]*$"
"""A name: no control characters, and not only spaces (as the API document states it)."""
_NAME = re.compile(NAME_PATTERN)


def check_name(name: str | None) -> FieldError | None:
    if name is None or not name.strip():
        return FieldError("name", "give the audience a name")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        return FieldError(
            "name", f"a name is at most {MAX_NAME} characters, none a control character"
        )
    return None


def check_type(value: str | None) -> AudienceType | FieldError:
    for kind in AUDIENCE_TYPES:
        if value == kind:
            return kind
    return FieldError("type", "one of email, phone, line_user_id")


def _too_large(detail: str) -> ProblemError:
    return ProblemError(413, "Request body too large", detail, [FieldError("file", detail)])


class LineClassifier:
    """Turns one line of a file into the SHA-256 to store, or the reason it is invalid."""

    def __init__(self, kind: AudienceType, region: str) -> None:
        self.kind = kind
        self.region = region

    def __call__(self, raw: bytes) -> bytes | str:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "not UTF-8 text"
        value = text.strip()
        if _SHA256_HEX.fullmatch(value):
            return bytes.fromhex(value)  # pre-hashed by the company
        if self.kind == "email":
            return self._email(value)
        if self.kind == "phone":
            return self._phone(value)
        if not LINE_USER_ID.fullmatch(value):
            return "a LINE user ID is 'U' followed by 32 lower-case hex digits"
        return hashlib.sha256(value.encode()).digest()

    def _email(self, value: str) -> bytes | str:
        if len(value) > MAX_EMAIL:
            return f"an email address is at most {MAX_EMAIL} characters"
        if not _EMAIL_CHARS.fullmatch(value):
            return "an email address has only ASCII letters, digits and _ - . @"
        local, at, domain = value.partition("@")
        if not at or not local or not domain or "@" in domain:
            return "not an email address (name@domain)"
        return hashlib.sha256(value.lower().encode()).digest()

    def _phone(self, value: str) -> bytes | str:
        if not _PHONE_CHARS.fullmatch(value) or len(value) > 30:
            return (
                "a phone number has only digits, hyphens, spaces and parentheses, no country code"
            )
        try:
            parsed = phonenumbers.parse(value, self.region)
        except phonenumbers.NumberParseException:
            return "not a phone number"
        if (
            not phonenumbers.is_valid_number(parsed)
            or phonenumbers.region_code_for_number(parsed) != self.region
        ):
            return f"not a valid phone number of region {self.region}"
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        return hashlib.sha256(str(e164).encode()).digest()


class UploadCounts(msgspec.Struct, kw_only=True):
    lines: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    errors: list[LineError] = msgspec.field(default_factory=list)


class _LineReader:
    """Splits a byte stream into numbered lines: LF or CRLF, a leading UTF-8 BOM dropped, blank
    lines skipped (but numbered), an over-long line reported without being buffered whole."""

    def __init__(self, classify: LineClassifier, counts: UploadCounts) -> None:
        self._classify = classify
        self._plain = _PLAIN.get(classify.kind)
        self._fold_case = classify.kind == "email"
        self._counts = counts
        self._rest = b""
        self._overlong = False
        self._start = True
        self.number = 0  # lines seen, blank ones included

    def feed(self, chunk: bytes) -> list[bytes]:
        """Classify the complete lines in `chunk`; return the hashes of the valid ones."""
        data = self._rest + chunk
        if self._start:
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._rest = data
                return []
            self._start = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        lines = data.split(b"\n")
        self._rest = lines.pop()
        hashes = self._lines(lines)
        if len(self._rest) > MAX_LINE_BYTES:
            self._overlong = True
            self._rest = b""
        return hashes

    def end(self) -> list[bytes]:
        if self._start and self._rest:
            self._start = False
            self._rest = self._rest.removeprefix(_BOM)
        if not self._rest and not self._overlong:
            return []
        last, self._rest = self._rest, b""
        h = self._line(last)
        return [] if h is None else [h]

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        """`_line` for each line, with the common valid ones taken in a tighter loop."""
        if self.number + len(lines) > MAX_LINES:
            raise _too_large(f"the file has more than {MAX_LINES:,} lines")
        plain = self._plain
        if plain is None or (self._overlong and lines):
            return [h for line in lines if (h := self._line(line)) is not None]
        hashes: list[bytes] = []
        append = hashes.append
        sha256 = hashlib.sha256
        fold_case = self._fold_case
        number = self.number
        plain_lines = 0
        for line in lines:
            if plain.fullmatch(line):
                number += 1
                plain_lines += 1
                value = line.rstrip(b"\r")
                append(sha256(value.lower() if fold_case else value).digest())
            else:
                self.number = number
                if (h := self._line(line)) is not None:
                    append(h)
                number = self.number
        self.number = number
        self._counts.lines += plain_lines
        self._counts.valid += plain_lines
        return hashes

    def _line(self, line: bytes) -> bytes | None:
        self.number += 1
        if self.number > MAX_LINES:
            raise _too_large(f"the file has more than {MAX_LINES:,} lines")
        counts = self._counts
        counts.lines += 1
        if self._overlong:
            self._overlong = False
            result: bytes | str = f"longer than {MAX_LINE_BYTES} bytes"
        else:
            line = line.removesuffix(b"\r")
            if not line.strip():
                return None
            result = self._classify(line)
        if isinstance(result, str):
            counts.invalid += 1
            if len(counts.errors) < MAX_ERRORS:
                counts.errors.append(LineError(self.number, result))
            return None
        counts.valid += 1
        return result


async def ingest(
    conn: Connection,
    audience_id: uuid.UUID,
    kind: AudienceType,
    region: str,
    chunks: AsyncIterable[bytes],
    progress: Callable[[int], None] | None = None,
) -> UploadCounts:
    """Read a file from `chunks` into the audience's entries; runs in the caller's transaction,
    which holds the audience (just created, or locked by `lock`), so no other upload adds to
    it meanwhile.

    `lines` counts every line of the file; blank ones are skipped, neither valid nor invalid.
    Raises a 413 problem once the file passes 20 MB or 1,500,000 lines."""
    counts = UploadCounts()
    reader = _LineReader(LineClassifier(kind, region), counts)
    await conn.execute(
        "CREATE TEMP TABLE upload_hashes (value_sha256 bytea NOT NULL) ON COMMIT DROP"
    )
    await conn.copy_to_table(
        "upload_hashes", source=_copy_rows(reader, chunks, progress), format="binary"
    )
    counts.duplicates = counts.valid - await _insert(conn, audience_id, kind)
    await conn.execute("DROP TABLE upload_hashes")
    return counts


async def _copy_rows(
    reader: _LineReader, chunks: AsyncIterable[bytes], progress: Callable[[int], None] | None
) -> AsyncIterator[bytes]:
    """The file's valid hashes as binary COPY data, chunk by chunk as the file arrives."""
    yield _COPY_HEADER
    async for rows in parsed_pieces(
        chunks,
        lambda data, end: _feed(reader, data, end=end),
        max_bytes=MAX_FILE_BYTES,
        too_large=lambda: _too_large(f"the file is larger than {MAX_FILE_BYTES:,} bytes (20 MB)"),
        progress=progress,
    ):
        yield rows
    yield _COPY_TRAILER


def _feed(reader: _LineReader, data: bytes, *, end: bool = False) -> bytes:
    hashes = reader.feed(data)
    if end:
        hashes += reader.end()
    return _COPY_ROW + _COPY_ROW.join(hashes) if hashes else b""


async def _insert(conn: Connection, audience_id: uuid.UUID, kind: AudienceType) -> int:
    """Move the upload's distinct hashes that the audience lacks into its entries, in key
    order (each index page is then written once, not once per row); returns how many."""
    await conn.execute(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
    # Without statistics the planner takes the temporary table for a few hundred rows and
    # de-duplicates by hashing before it sorts; knowing its size, it sorts once and drops
    # repeats on the way (a third less time at 1.5M rows).
    await conn.execute("ANALYZE upload_hashes")
    has_entries = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM audience_entries WHERE audience_id = $1)", audience_id
    )
    # Nothing else writes this audience's entries while the caller holds it, so a plain
    # INSERT cannot conflict: a first upload skips the look-up of every hash, a later one
    # leaves out what the audience already has.
    already = (
        " WHERE NOT EXISTS (SELECT 1 FROM audience_entries e"
        " WHERE e.audience_id = $1 AND e.value_sha256 = u.value_sha256)"
        if has_entries
        else ""
    )
    select = "SELECT DISTINCT $1::uuid, u.value_sha256 FROM upload_hashes u" + already  # noqa: S608
    insert = f"INSERT INTO audience_entries (audience_id, value_sha256) {select} ORDER BY 2"
    if await journey_triggers.audience_wanted(conn, audience_id):
        # Members newly in the audience enter the journeys that start on it.
        account = account_literal(await line_account_of(conn, audience_id) or "default")
        added: int = await conn.fetchval(
            journey_triggers.audience_joined_sql(insert, members_by_key(kind, "added", account)),
            audience_id,
        )
        return added
    status = await conn.execute(insert, audience_id)
    return int(status.rsplit(" ", 1)[1])


async def create(
    conn: Connection, name: str, kind: AudienceType, line_account: str = DEFAULT_LINE_ACCOUNT
) -> uuid.UUID:
    account_literal(line_account)  # a name that cannot be one is never stored
    audience_id = uuid7()
    await conn.execute(
        "INSERT INTO audiences (id, name, type, line_account) VALUES ($1, $2, $3, $4)",
        audience_id,
        name,
        kind,
        line_account,
    )
    return audience_id


async def line_account_of(conn: Connection, audience_id: uuid.UUID) -> str | None:
    """The audience's LINE account; None if there is no such audience."""
    account: str | None = await conn.fetchval(
        "SELECT line_account FROM audiences WHERE id = $1", audience_id
    )
    return account


async def lock(conn: Connection, audience_id: uuid.UUID) -> AudienceType | None:
    """The audience's type, locking its row until the transaction ends (one upload at a time)."""
    kind = await conn.fetchval("SELECT type FROM audiences WHERE id = $1 FOR UPDATE", audience_id)
    checked = check_type(kind)
    return None if isinstance(checked, FieldError) else checked


async def record(conn: Connection, audience_id: uuid.UUID, counts: UploadCounts) -> None:
    """Add an upload's counts to the audience's totals; its errors replace the previous ones."""
    await conn.execute(
        "UPDATE audiences SET lines = lines + $2, valid = valid + $3, invalid = invalid + $4,"
        " duplicates = duplicates + $5, errors = $6::text::jsonb, updated_at = now()"
        " WHERE id = $1",
        audience_id,
        counts.lines,
        counts.valid,
        counts.invalid,
        counts.duplicates,
        msgspec.json.encode(counts.errors).decode(),
    )
    if counts.valid >= ANALYZE_AFTER:
        # Statistics now rather than at autovacuum's next pass: the report's match and the
        # campaign fan-out are planned by them, and a plan made without them for a large new
        # audience can read the whole audience once per member. ANALYZE samples a fixed
        # number of rows, so this costs about the same for any audience size.
        await conn.execute("ANALYZE audiences, audience_entries")


def _members_in(kind: str, account_sql: str = "'default'", matched_sql: str | None = None) -> str:
    """`FROM members m` with their LINE identity `l` under `account_sql`, matched by the
    audience $1's entries; a `line_user_id` audience matches by the member's ID under
    `matched_sql` (its own account; None: the same as `account_sql`), which is then the
    statement's $3."""
    if kind == "line_user_id" and matched_sql is not None:
        return (
            f"FROM members m {line_identity_join(account_sql)}"  # noqa: S608 - constants
            " WHERE EXISTS (SELECT 1 FROM member_line_accounts k JOIN audience_entries e"
            "   ON e.audience_id = $1 AND e.value_sha256 = sha256(k.user_id::bytea)"
            f" WHERE k.member_id = m.member_id AND k.account = {matched_sql})"
        )
    return (
        f"FROM members m {line_identity_join(account_sql)}"  # noqa: S608 - constants
        " WHERE EXISTS (SELECT 1 FROM audience_entries e"
        f" WHERE e.audience_id = $1 AND e.value_sha256 = {MEMBER_KEY[kind]})"
    )


def _matched_by(kind: str, own: str) -> tuple[str, ...]:  # `_members_in`'s $3, if it takes one
    return (own,) if kind == "line_user_id" else ()


async def report(
    conn: Connection, audience_id: uuid.UUID, accounts: Sequence[str] = ()
) -> AudienceReport | None:
    """The audience with its match counts as of now (members change after an upload), its
    LINE reach under its own account and each of `accounts`."""
    row = await conn.fetchrow(
        "SELECT id, name, type, line_account, lines, valid, invalid, duplicates,"
        " errors::text AS errors, line_audience_group_id, line_synced_at, line_synced_ids,"
        " created_at, updated_at FROM audiences WHERE id = $1",
        audience_id,
    )
    if row is None:
        return None
    own = row["line_account"]
    counts = await conn.fetchrow(
        "SELECT count(*) AS matched,"
        f" count(*) FILTER (WHERE {LINE_REACHABLE_SQL}) AS reachable_line,"
        f" count(*) FILTER (WHERE {EMAIL_REACHABLE_SQL}) AS reachable_email "
        + _members_in(row["type"], "$2"),
        audience_id,
        own,
    )
    assert counts is not None
    by_account = {own: counts["reachable_line"]}
    for account in sorted(set(accounts) - {own}):
        by_account[account] = await conn.fetchval(
            f"SELECT count(*) {_members_in(row['type'], '$2', '$3')} AND {LINE_REACHABLE_SQL}",
            audience_id,
            account,
            *_matched_by(row["type"], own),
        )
    return AudienceReport(
        id=row["id"],
        name=row["name"],
        type=row["type"],
        line_account=own,
        reachable_line_by_account=dict(sorted(by_account.items())),
        lines=row["lines"],
        valid=row["valid"],
        invalid=row["invalid"],
        duplicates=row["duplicates"],
        matched=counts["matched"],
        reachable_line=counts["reachable_line"],
        reachable_email=counts["reachable_email"],
        errors=msgspec.json.decode(row["errors"], type=list[LineError]),
        line_audience_group_id=row["line_audience_group_id"],
        line_synced_at=row["line_synced_at"],
        line_synced_ids=row["line_synced_ids"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def delete(conn: Connection, audience_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval("DELETE FROM audiences WHERE id = $1 RETURNING true", audience_id)
    )


async def line_user_ids(
    conn: Connection, audience_id: uuid.UUID, batch: int = 5_000, account: str | None = None
) -> AsyncIterator[list[str]]:
    """LINE user IDs under `account` (None: the audience's own) of matched members who are
    friends there and have not opted out, in batches.

    Needs a transaction (a server-side cursor), so a large export is never held whole."""
    row = await conn.fetchrow("SELECT type, line_account FROM audiences WHERE id = $1", audience_id)
    if row is None:
        return
    own, under = row["line_account"], account or row["line_account"]
    matched = _matched_by(row["type"], own) if under != own else ()
    cursor = await conn.cursor(
        f"SELECT l.user_id {_members_in(row['type'], '$2', '$3' if matched else None)}"
        f" AND {LINE_REACHABLE_SQL} ORDER BY l.user_id",
        audience_id,
        under,
        *matched,
    )
    while rows := await cursor.fetch(batch):
        yield [r["user_id"] for r in rows]


class LineSyncLease(msgspec.Struct, frozen=True):
    """A LINE sync's hold on its audience, and where an unfinished earlier sync stopped."""

    holder: uuid.UUID
    name: str
    type: AudienceType
    line_account: str  # the LINE account the audience is uploaded to
    group_id: int | None
    after: str | None  # the last LINE user ID LINE accepted; None: from the start
    sent: int  # IDs LINE accepted before `after`, this sync and the one it resumes


class LineSyncPage(msgspec.Struct, frozen=True):
    """Where a sync stands after a page LINE accepted."""

    group_id: int
    after: str
    sent: int


async def take_line_sync(
    conn: Connection, audience_id: uuid.UUID, lease_seconds: float
) -> LineSyncLease | None:
    """Hold the audience for a LINE sync for `lease_seconds`; None if another sync holds it
    (or the audience is gone)."""
    holder = uuid.uuid4()
    row = await conn.fetchrow(
        "UPDATE audiences SET line_sync_holder = $2,"
        " line_sync_lease_until = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND (line_sync_lease_until IS NULL OR line_sync_lease_until < now())"
        " RETURNING name, type, line_account, line_audience_group_id, line_sync_after,"
        " line_sync_sent",
        audience_id,
        holder,
        lease_seconds,
    )
    if row is None:
        return None
    return LineSyncLease(
        holder=holder,
        name=row["name"],
        type=row["type"],
        line_account=row["line_account"],
        group_id=row["line_audience_group_id"],
        after=row["line_sync_after"],
        sent=row["line_sync_sent"] or 0,
    )


async def renew_line_sync(
    conn: Connection, audience_id: uuid.UUID, holder: uuid.UUID, lease_seconds: float
) -> bool:
    """Extend the lease; False if it was lost (expired and taken, or the audience deleted)."""
    status = await conn.execute(
        "UPDATE audiences SET line_sync_lease_until = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND line_sync_holder = $2",
        audience_id,
        holder,
        lease_seconds,
    )
    return status.endswith(" 1")


async def record_line_sync_page(
    conn: Connection,
    audience_id: uuid.UUID,
    holder: uuid.UUID,
    page: LineSyncPage,
    lease_seconds: float,
) -> bool:
    """LINE accepted a page: where to go on from, and the LINE audience it went to (recorded
    at once after a create, so a sync cut short never leaves a second LINE audience behind).
    False if the lease was lost."""
    status = await conn.execute(
        "UPDATE audiences SET line_audience_group_id = $3, line_sync_after = $4,"
        " line_sync_sent = $5, line_sync_lease_until = now() + make_interval(secs => $6)"
        " WHERE id = $1 AND line_sync_holder = $2",
        audience_id,
        holder,
        page.group_id,
        page.after,
        page.sent,
        lease_seconds,
    )
    return status.endswith(" 1")


async def restart_line_sync(conn: Connection, audience_id: uuid.UUID, holder: uuid.UUID) -> None:
    """The recorded LINE audience is gone at LINE: the next page starts a new one from the top."""
    await conn.execute(
        "UPDATE audiences SET line_audience_group_id = NULL, line_sync_after = NULL,"
        " line_sync_sent = NULL WHERE id = $1 AND line_sync_holder = $2",
        audience_id,
        holder,
    )


async def release_line_sync(conn: Connection, audience_id: uuid.UUID, holder: uuid.UUID) -> None:
    """Let go of the audience, keeping where the sync stopped for the next one to resume."""
    await conn.execute(
        "UPDATE audiences SET line_sync_holder = NULL, line_sync_lease_until = NULL"
        " WHERE id = $1 AND line_sync_holder = $2",
        audience_id,
        holder,
    )


async def line_user_id_page(
    conn: Connection,
    audience_id: uuid.UUID,
    kind: AudienceType,
    after: str | None,
    limit: int,
    account: str = DEFAULT_LINE_ACCOUNT,
) -> list[str]:
    """The next `limit` LINE user IDs under `account` (the audience's own) of matched
    members who are friends and have not opted out, in ID order after `after`: one short
    query per page (keyset), no snapshot held."""
    rows = await conn.fetch(
        f"SELECT l.user_id {_members_in(kind, '$4')} AND {LINE_REACHABLE_SQL}"
        " AND l.user_id > $2 ORDER BY l.user_id LIMIT $3",
        audience_id,
        after or "",
        limit,
        account,
    )
    return [r["user_id"] for r in rows]


async def finish_line_sync(
    conn: Connection, audience_id: uuid.UUID, holder: uuid.UUID, group_id: int, uploaded: int
) -> datetime | None:
    """A sync finished: when, and how many IDs it sent; the lease and the resume point go.
    None if the lease was lost or the audience is gone."""
    synced_at: datetime | None = await conn.fetchval(
        "UPDATE audiences SET line_audience_group_id = $3, line_synced_at = now(),"
        " line_synced_ids = $4, line_sync_after = NULL, line_sync_sent = NULL,"
        " line_sync_holder = NULL, line_sync_lease_until = NULL"
        " WHERE id = $1 AND line_sync_holder = $2 RETURNING line_synced_at",
        audience_id,
        holder,
        group_id,
        uploaded,
    )
    return synced_at
