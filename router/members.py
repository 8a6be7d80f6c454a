"""Members: validation and normalisation, upserts merged with what is stored, look-ups.

`resolve` is where an intent's recipient becomes something routable: the member's LINE
user ID and friend status, their email address, and their opt-outs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from router.database import Connection
from router.deliverability import consent, rules
from router.deliverability.consent import EmailConsent
from router.identifiers import (
    MAX_MEMBER_ID,
    MEMBER_ID,
    MEMBER_ID_RULE,
    EmailAddress,
    InvalidIdentifier,
    LineUserId,
    MemberId,
    PhoneNumber,
    check_line_user_id,
    email_sha256,
    normalize_email,
    normalize_phone,
    phone_sha256,
)
from router.problems import FieldError
from router.reach import Reach
from router.store import members as member_store
from router.store.members import MemberRow


class MemberFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields of a member as a client sends them. Absent fields keep their stored value;
    `null` clears a field."""

    email: EmailAddress | UnsetType | None = UNSET
    phone: PhoneNumber | UnsetType | None = UNSET
    line_user_id: LineUserId | UnsetType | None = UNSET
    line_friend: bool | UnsetType = UNSET
    attributes: dict[str, Any] | UnsetType = UNSET
    email_opt_out: bool | UnsetType = UNSET
    line_opt_out: bool | UnsetType = UNSET
    # Consent to promotional email; `null` withdraws it.
    email_consent: EmailConsent | UnsetType | None = UNSET


class MemberBatchItem(MemberFields, kw_only=True, forbid_unknown_fields=True):
    member_id: MemberId


class CategoryOptOut(msgspec.Struct, kw_only=True):
    """A category of promotional email the member unsubscribed from, and when."""

    category: str
    created_at: datetime


class EmailSuppression(msgspec.Struct, kw_only=True):
    """Why and since when the member's address is not mailed (a bounce, a complaint...)."""

    reason: str
    detail: str | None
    created_at: datetime


class Member(msgspec.Struct, kw_only=True):
    member_id: str
    email: str | None
    phone: str | None
    line_user_id: str | None
    line_friend: bool
    attributes: dict[str, Any]
    email_opt_out: bool
    line_opt_out: bool
    created_at: datetime
    updated_at: datetime
    # What decides whether email reaches the member, beyond the flags above.
    email_consent: EmailConsent | None = None
    email_category_opt_outs: list[CategoryOptOut] = msgspec.field(default_factory=list)
    email_suppression: EmailSuppression | None = None


class PreparedMember(msgspec.Struct, kw_only=True):
    """A validated, normalised upsert. `given` names the fields the client sent."""

    member_id: str
    given: frozenset[str]
    email: str | None = None
    email_sha256: bytes | None = None
    phone: str | None = None
    phone_sha256: bytes | None = None
    line_user_id: str | None = None
    line_friend: bool = False
    friend_from_line: bool = False  # line_friend was not given: take what LINE told us, if anything
    attributes: dict[str, Any] | None = None
    email_opt_out: bool = False
    line_opt_out: bool = False
    email_consent: EmailConsent | None = None


def check_member_id(member_id: str) -> str | None:
    """The reason a member ID is unusable, or None."""
    if len(member_id) > MAX_MEMBER_ID or not MEMBER_ID.search(member_id):
        return MEMBER_ID_RULE
    return None


def prepare(
    member_id: str, fields: MemberFields, region: str, prefix: str = ""
) -> PreparedMember | list[FieldError]:
    """Validate and normalise; return field errors (paths under `prefix`) instead of raising."""
    errors: list[FieldError] = []
    if reason := check_member_id(member_id):
        errors.append(FieldError(f"{prefix}member_id", reason))
    given = frozenset(f for f in MemberFields.__struct_fields__ if getattr(fields, f) is not UNSET)
    out = PreparedMember(member_id=member_id, given=given)
    if isinstance(fields.email, str):
        try:
            out.email = normalize_email(fields.email)
            out.email_sha256 = email_sha256(out.email)
        except InvalidIdentifier as exc:
            errors.append(FieldError(f"{prefix}email", str(exc)))
    if isinstance(fields.phone, str):
        try:
            out.phone = normalize_phone(fields.phone, region)
            out.phone_sha256 = phone_sha256(out.phone)
        except InvalidIdentifier as exc:
            errors.append(FieldError(f"{prefix}phone", str(exc)))
    if isinstance(fields.line_user_id, str):
        try:
            out.line_user_id = check_line_user_id(fields.line_user_id)
        except InvalidIdentifier as exc:
            errors.append(FieldError(f"{prefix}line_user_id", str(exc)))
    if isinstance(fields.line_friend, bool):
        out.line_friend = fields.line_friend
    elif isinstance(fields.line_user_id, str):
        # A LINE user ID comes from a follow or a link: the user is a friend unless LINE's
        # webhooks said otherwise (upsert checks) or the caller does.
        out.line_friend = True
        out.friend_from_line = True
        given = given | {"line_friend"}
    elif "line_user_id" in given:
        given = given | {"line_friend"}  # clearing the ID clears friendship
    out.given = given
    if isinstance(fields.attributes, dict):
        out.attributes = fields.attributes
    if isinstance(fields.email_opt_out, bool):
        out.email_opt_out = fields.email_opt_out
    if isinstance(fields.line_opt_out, bool):
        out.line_opt_out = fields.line_opt_out
    if isinstance(fields.email_consent, EmailConsent):
        if reason := consent.check(fields.email_consent, datetime.now(UTC)):
            errors.append(FieldError(f"{prefix}email_consent.granted_at", reason))
        out.email_consent = fields.email_consent
    return errors or out


_COLUMNS = (
    "member_id, email, phone, line_user_id, line_friend, attributes, email_opt_out, "
    "line_opt_out, created_at, updated_at"
)

# Field groups a client sets together: an email address and its hash, a phone and its hash.
_MERGED_FIELDS = (
    ("email", "email_sha256"),
    ("phone", "phone_sha256"),
    ("line_user_id",),
    ("line_friend",),
    ("attributes",),
    ("email_opt_out",),
    ("line_opt_out",),
    ("email_consent",),
)


class UpsertResult(msgspec.Struct, frozen=True):
    member_id: str
    created: bool


async def upsert(
    conn: Connection, members: Sequence[PreparedMember]
) -> list[UpsertResult | FieldError]:
    """Create or update members in one round of statements; absent fields keep stored values.

    Runs in the caller's transaction. Returns, per input, the outcome or the reason the
    member was not written (a LINE user ID already linked to another member)."""
    existing = await member_store.lock(conn, [m.member_id for m in members])
    had_consent = {i for i, row in existing.items() if row.email_consent is not None}
    for m in members:
        if (row := existing.get(m.member_id)) is not None:
            for group in _MERGED_FIELDS:
                if group[0] not in m.given:
                    for name in group:
                        setattr(m, name, getattr(row, name))

    await _friendship_from_line(conn, members)
    taken = await _line_ids_taken(conn, members)
    results: list[UpsertResult | FieldError] = []
    to_write: list[MemberRow] = []
    for m in members:
        if m.line_user_id is not None and taken[m.line_user_id] != m.member_id:
            results.append(
                FieldError("line_user_id", "this LINE user ID belongs to another member")
            )
            continue
        results.append(UpsertResult(m.member_id, created=m.member_id not in existing))
        to_write.append(_row(m))
    await member_store.write(conn, to_write)
    written = {r.member_id for r in to_write}
    await _follow_consent(conn, [m for m in members if m.member_id in written], had_consent)
    return results


async def _follow_consent(
    conn: Connection, members: Sequence[PreparedMember], had_consent: set[str]
) -> None:
    """A withdrawn consent stops promotional email already queued, as a one-click
    unsubscribe does: it is recorded as the opt-out of all promotional email (category '*'),
    which every send checks. A consent given after such an opt-out lifts it; one given
    before (a sync resending the same record) does not."""
    given = [m for m in members if "email_consent" in m.given]
    withdrawn = [
        m.member_id for m in given if m.email_consent is None and m.member_id in had_consent
    ]
    granted = [m for m in given if m.email_consent is not None]
    if withdrawn:
        await conn.execute(
            "INSERT INTO email_category_opt_outs (member_id, category)"
            " SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
            withdrawn,
            rules.ALL_PROMOTIONAL,
        )
    if granted:
        await conn.execute(
            "DELETE FROM email_category_opt_outs o"
            " USING unnest($1::text[], $2::timestamptz[]) AS g(member_id, granted_at)"
            " WHERE o.member_id = g.member_id AND o.category = $3"
            "   AND g.granted_at > o.created_at",
            [m.member_id for m in granted],
            [m.email_consent.granted_at for m in granted if m.email_consent is not None],
            rules.ALL_PROMOTIONAL,
        )


def _row(m: PreparedMember) -> MemberRow:
    return MemberRow(
        member_id=m.member_id,
        email=m.email,
        email_sha256=m.email_sha256,
        phone=m.phone,
        phone_sha256=m.phone_sha256,
        line_user_id=m.line_user_id,
        line_friend=m.line_friend,
        attributes=m.attributes if m.attributes is not None else {},
        email_opt_out=m.email_opt_out,
        line_opt_out=m.line_opt_out,
        email_consent=m.email_consent,
    )


async def _friendship_from_line(conn: Connection, members: Sequence[PreparedMember]) -> None:
    """Where the caller gave a LINE user ID but no friend flag, use what webhooks told us."""
    ids = [m.line_user_id for m in members if m.friend_from_line and m.line_user_id]
    if not ids:
        return
    known = {
        r["line_user_id"]: r["friend"]
        for r in await conn.fetch(
            "SELECT line_user_id, friend FROM line_users WHERE line_user_id = ANY($1::text[])",
            ids,
        )
    }
    for m in members:
        if m.friend_from_line and m.line_user_id in known:
            m.line_friend = known[m.line_user_id]


async def _line_ids_taken(conn: Connection, members: Sequence[PreparedMember]) -> dict[str, str]:
    """LINE user ID -> the member that holds it: stored owners first, then the first member
    of this batch that claims it. A member never takes an ID another member holds."""
    wanted = [m.line_user_id for m in members if m.line_user_id is not None]
    if not wanted:
        return {}
    owners: dict[str, str] = {
        r["line_user_id"]: r["member_id"]
        for r in await conn.fetch(
            "SELECT line_user_id, member_id FROM members WHERE line_user_id = ANY($1::text[])",
            wanted,
        )
    }
    for m in members:
        if m.line_user_id is not None:
            owners.setdefault(m.line_user_id, m.member_id)
    return owners


# A member with their consent, category opt-outs and address suppression, in one statement.
_GET = f"""
SELECT {_COLUMNS}, email_consent::text AS email_consent,
    (SELECT json_agg(json_build_object('category', o.category, 'created_at', o.created_at)
                     ORDER BY o.category)::text
     FROM email_category_opt_outs o WHERE o.member_id = m.member_id) AS email_category_opt_outs,
    (SELECT json_build_object('reason', s.reason, 'detail', s.detail,
                              'created_at', s.created_at)::text
     FROM email_suppressions s WHERE s.address = m.email) AS email_suppression
FROM members m WHERE member_id = $1"""  # noqa: S608 - constant columns


async def get(conn: Connection, member_id: str) -> Member | None:
    row = await conn.fetchrow(_GET, member_id)
    if row is None:
        return None
    found = dict(row)
    for name in ("email_consent", "email_category_opt_outs", "email_suppression"):
        found[name] = None if found[name] is None else msgspec.json.decode(found[name])
    found["email_category_opt_outs"] = found["email_category_opt_outs"] or []
    return msgspec.convert(found, Member)


async def erase(conn: Connection, member_id: str) -> bool:
    """Delete a member and everything of theirs (see `router.store.members.erase`)."""
    async with conn.transaction():
        return await member_store.erase(conn, member_id)


async def resolve(
    conn: Connection, member_ids: Sequence[str], email_hashes: Sequence[bytes]
) -> tuple[dict[str, Reach], dict[bytes, Reach]]:
    """Look up recipients by member ID and by email hash: one statement, two index scans."""
    by_id: dict[str, Reach] = {}
    by_email: dict[bytes, Reach] = {}
    if not member_ids and not email_hashes:
        return by_id, by_email
    for r in await conn.fetch(_RESOLVE, list(set(member_ids)), list(set(email_hashes))):
        if r["by_email"] is None:
            by_id[r["member_id"]] = _reach(r)
        else:
            by_email[r["by_email"]] = _reach(r)
    return by_id, by_email


ADDRESS_ONLY_PREFIX = rules.ADDRESS_ONLY_PREFIX


def address_only_id(email_hash: bytes) -> str:
    """The member ID given to someone known only by an email address: derived from the
    address's hash, so two requests naming a new address at once make one member, and the
    ID shows no address."""
    return ADDRESS_ONLY_PREFIX + email_hash.hex()[:32]


async def existing_or_address_only(
    conn: Connection, member_ids: Sequence[str], addresses: Mapping[bytes, str]
) -> tuple[set[str], dict[bytes, str]]:
    """Which of `member_ids` exist, and the member each address (by its SHA-256) belongs to:
    the one `resolve` matches, else a new address-only member (email only, no consent
    flags changed), created here. One query to resolve, one statement to create."""
    by_id, by_email = await resolve(conn, member_ids, list(addresses))
    owners: dict[bytes, str] = {}
    new: list[tuple[str, str, bytes]] = []
    for email_hash, address in addresses.items():
        reach = by_email.get(email_hash)
        if reach is not None and reach.member_id is not None:
            owners[email_hash] = reach.member_id
        else:
            owners[email_hash] = address_only_id(email_hash)
            new.append((owners[email_hash], address, email_hash))
    await member_store.add_address_only(conn, new)
    return set(by_id), owners


# Several members may share an address: the oldest one is the match.
_RESOLVE_COLUMNS = f"""
m.member_id, m.line_user_id, m.line_friend, m.line_opt_out, m.email, m.email_opt_out, m.phone,
{rules.SUPPRESSED_SQL} AS email_suppressed, m.email_consent IS NOT NULL AS email_consent,
{rules.OPTED_OUT_CATEGORIES_SQL} AS email_opted_out_categories
"""
_RESOLVE = f"""
SELECT NULL::bytea AS by_email, {_RESOLVE_COLUMNS}
FROM members m WHERE m.member_id = ANY($1::text[])
UNION ALL
(SELECT DISTINCT ON (m.email_sha256) m.email_sha256, {_RESOLVE_COLUMNS}
 FROM members m WHERE m.email_sha256 = ANY($2::bytea[]) ORDER BY m.email_sha256, m.created_at)
"""  # noqa: S608 - constant fragments


def _reach(r: Any) -> Reach:
    return Reach(
        member_id=r["member_id"],
        line_user_id=r["line_user_id"],
        line_friend=r["line_friend"],
        line_opt_out=r["line_opt_out"],
        email=r["email"],
        email_opt_out=r["email_opt_out"],
        phone=r["phone"],
        email_suppressed=r["email_suppressed"],
        email_consent=r["email_consent"],
        email_opted_out_categories=tuple(r["email_opted_out_categories"] or ()),
    )
