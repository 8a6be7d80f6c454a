"""Members: validation and normalisation, upserts merged with what is stored, look-ups.

`resolve` is where an intent's recipient becomes something routable: the member's LINE
user ID and friend status, their email address, and their opt-outs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
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
from router.reach import DEFAULT_LINE_ACCOUNT, LineIdentity, Reach
from router.store import members as member_store
from router.store.members import LineIdentityRow, MemberRow


class LineIdentityFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A member's LINE identity under one account, as a client sends it. Absent fields keep
    their stored value; `null` clears the user ID."""

    user_id: LineUserId | UnsetType | None = UNSET
    friend: bool | UnsetType = UNSET
    opt_out: bool | UnsetType = UNSET


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
    # The LINE identity under each named LINE account; the top-level line_* fields are the
    # account "default"'s.
    line: dict[str, LineIdentityFields] | UnsetType = UNSET


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


class LineIdentityView(msgspec.Struct, kw_only=True):
    """A member's LINE identity under one account, as the API shows it."""

    user_id: str | None
    friend: bool
    opt_out: bool


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
    # Every LINE account the member has an identity under (the line_* fields above repeat
    # the account "default"'s).
    line: dict[str, LineIdentityView] = msgspec.field(default_factory=dict)


class PreparedLine(msgspec.Struct, kw_only=True):
    """One account's identity in an upsert. `given` names the fields the client sent."""

    given: frozenset[str] = frozenset()
    user_id: str | None = None
    friend: bool = False
    friend_from_line: bool = False  # friend was not given: take what LINE told us, if anything
    opt_out: bool = False


class PreparedMember(msgspec.Struct, kw_only=True):
    """A validated, normalised upsert. `given` names the fields the client sent."""

    member_id: str
    given: frozenset[str]
    email: str | None = None
    email_sha256: bytes | None = None
    phone: str | None = None
    phone_sha256: bytes | None = None
    attributes: dict[str, Any] | None = None
    email_opt_out: bool = False
    email_consent: EmailConsent | None = None
    line: dict[str, PreparedLine] = msgspec.field(default_factory=dict)


def check_member_id(member_id: str) -> str | None:
    """The reason a member ID is unusable, or None."""
    if len(member_id) > MAX_MEMBER_ID or not MEMBER_ID.search(member_id):
        return MEMBER_ID_RULE
    return None


_TOP_LEVEL_LINE = {"line_user_id": "user_id", "line_friend": "friend", "line_opt_out": "opt_out"}
"""The member's top-level LINE fields: the account "default"'s identity."""


def prepare(
    member_id: str,
    fields: MemberFields,
    region: str,
    prefix: str = "",
    line_accounts: Collection[str] | None = None,
) -> PreparedMember | list[FieldError]:
    """Validate and normalise; return field errors (paths under `prefix`) instead of raising.
    `line_accounts`: the account names `line` may use (None: any; "default" always)."""
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
    for account, identity in _line_fields(fields, prefix, line_accounts, errors).items():
        out.line[account] = _prepare_line(
            identity, f"{prefix}{_line_path(account, fields)}", errors
        )
    if isinstance(fields.attributes, dict):
        out.attributes = fields.attributes
    if isinstance(fields.email_opt_out, bool):
        out.email_opt_out = fields.email_opt_out
    if isinstance(fields.email_consent, EmailConsent):
        if reason := consent.check(fields.email_consent, datetime.now(UTC)):
            errors.append(FieldError(f"{prefix}email_consent.granted_at", reason))
        out.email_consent = fields.email_consent
    return errors or out


def _line_path(account: str, fields: MemberFields) -> str:
    """Where an account's fields are reported: `line.<account>.`, or `line_` at the top
    level for the account "default" when given there."""
    top = any(getattr(fields, name) is not UNSET for name in _TOP_LEVEL_LINE)
    if account == DEFAULT_LINE_ACCOUNT and top:
        return "line_"
    return f"line.{account}."


def _line_fields(
    fields: MemberFields,
    prefix: str,
    line_accounts: Collection[str] | None,
    errors: list[FieldError],
) -> dict[str, LineIdentityFields]:
    """Each account's identity fields, the top-level ones as the account "default"'s."""
    by_account = dict(fields.line) if isinstance(fields.line, dict) else {}
    for account in by_account:
        if account == DEFAULT_LINE_ACCOUNT or line_accounts is None or account in line_accounts:
            continue
        known = ", ".join(sorted({DEFAULT_LINE_ACCOUNT, *line_accounts}))
        errors.append(
            FieldError(
                f"{prefix}line.{account}",
                f"no LINE account named {account!r} is configured (configured: {known})",
            )
        )
    top = {
        field: value
        for name, field in _TOP_LEVEL_LINE.items()
        if (value := getattr(fields, name)) is not UNSET
    }
    if top:
        nested = by_account.get(DEFAULT_LINE_ACCOUNT)
        for name, field in _TOP_LEVEL_LINE.items():
            if field in top and nested is not None and getattr(nested, field) is not UNSET:
                errors.append(
                    FieldError(
                        f"{prefix}{name}",
                        f"give {name} or line.default.{field}, not both (they are the same field)",
                    )
                )
        merged = msgspec.structs.replace(nested or LineIdentityFields(), **top)
        by_account[DEFAULT_LINE_ACCOUNT] = merged
    return by_account


def _prepare_line(fields: LineIdentityFields, path: str, errors: list[FieldError]) -> PreparedLine:
    given = frozenset(
        f for f in LineIdentityFields.__struct_fields__ if getattr(fields, f) is not UNSET
    )
    out = PreparedLine(given=given)
    if isinstance(fields.user_id, str):
        try:
            out.user_id = check_line_user_id(fields.user_id)
        except InvalidIdentifier as exc:
            errors.append(FieldError(f"{path}user_id", str(exc)))
    if isinstance(fields.friend, bool):
        out.friend = fields.friend
    elif isinstance(fields.user_id, str):
        # A LINE user ID comes from a follow or a link: the user is a friend unless LINE's
        # webhooks said otherwise (upsert checks) or the caller does.
        out.friend = True
        out.friend_from_line = True
        given = given | {"friend"}
    elif "user_id" in given:
        given = given | {"friend"}  # clearing the ID clears friendship
    out.given = given
    if isinstance(fields.opt_out, bool):
        out.opt_out = fields.opt_out
    return out


_COLUMNS = "member_id, email, phone, attributes, email_opt_out, created_at, updated_at"

# Field groups a client sets together: an email address and its hash, a phone and its hash.
_MERGED_FIELDS = (
    ("email", "email_sha256"),
    ("phone", "phone_sha256"),
    ("attributes",),
    ("email_opt_out",),
    ("email_consent",),
)
_MERGED_LINE_FIELDS = ("user_id", "friend", "opt_out")


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
            _merge_line(m, row)

    await _friendship_from_line(conn, members)
    taken = await _line_ids_taken(conn, members)
    results: list[UpsertResult | FieldError] = []
    to_write: list[MemberRow] = []
    for m in members:
        held = next(
            (
                account
                for account, line in m.line.items()
                if line.user_id is not None and taken[account, line.user_id] != m.member_id
            ),
            None,
        )
        if held is not None:
            field = "line_user_id" if held == DEFAULT_LINE_ACCOUNT else f"line.{held}.user_id"
            results.append(FieldError(field, "this LINE user ID belongs to another member"))
            continue
        results.append(UpsertResult(m.member_id, created=m.member_id not in existing))
        to_write.append(_row(m))
    await member_store.write(conn, to_write)
    written = {r.member_id for r in to_write}
    await _follow_consent(conn, [m for m in members if m.member_id in written], had_consent)
    return results


def _merge_line(m: PreparedMember, row: MemberRow) -> None:
    """Stored identities under accounts not given, and stored fields of those given in part."""
    for account, stored in row.line.items():
        line = m.line.get(account)
        if line is None:
            m.line[account] = PreparedLine(
                user_id=stored.user_id, friend=stored.friend, opt_out=stored.opt_out
            )
            continue
        for name in _MERGED_LINE_FIELDS:
            if name not in line.given:
                setattr(line, name, getattr(stored, name))


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
        attributes=m.attributes if m.attributes is not None else {},
        email_opt_out=m.email_opt_out,
        email_consent=m.email_consent,
        line={
            account: LineIdentityRow(user_id=line.user_id, friend=line.friend, opt_out=line.opt_out)
            for account, line in m.line.items()
        },
    )


async def _friendship_from_line(conn: Connection, members: Sequence[PreparedMember]) -> None:
    """Where the caller gave a LINE user ID but no friend flag, use what webhooks told us."""
    wanted = [
        (account, line.user_id)
        for m in members
        for account, line in m.line.items()
        if line.friend_from_line and line.user_id
    ]
    if not wanted:
        return
    known = {
        (r["account"], r["line_user_id"]): r["friend"]
        for r in await conn.fetch(
            "SELECT u.account, u.line_user_id, u.friend FROM line_users u"
            " JOIN unnest($1::text[], $2::text[]) AS w(account, line_user_id)"
            "   USING (account, line_user_id)",
            [a for a, _ in wanted],
            [i for _, i in wanted],
        )
    }
    for m in members:
        for account, line in m.line.items():
            if line.friend_from_line and (account, line.user_id) in known:
                line.friend = known[account, line.user_id]


async def _line_ids_taken(
    conn: Connection, members: Sequence[PreparedMember]
) -> dict[tuple[str, str], str]:
    """(account, LINE user ID) -> the member that holds it: stored owners first, then the
    first member of this batch that claims it. A member never takes an ID another member
    holds under the same account."""
    wanted = [
        (account, line.user_id)
        for m in members
        for account, line in m.line.items()
        if line.user_id is not None
    ]
    if not wanted:
        return {}
    owners: dict[tuple[str, str], str] = {
        (r["account"], r["user_id"]): r["member_id"]
        for r in await conn.fetch(
            "SELECT a.account, a.user_id, a.member_id FROM member_line_accounts a"
            " JOIN unnest($1::text[], $2::text[]) AS w(account, user_id) USING (account, user_id)",
            [a for a, _ in wanted],
            [i for _, i in wanted],
        )
    }
    for m in members:
        for account, line in m.line.items():
            if line.user_id is not None:
                owners.setdefault((account, line.user_id), m.member_id)
    return owners


# A member with their consent, category opt-outs and address suppression, in one statement.
_GET = f"""
SELECT {_COLUMNS}, email_consent::text AS email_consent,
    (SELECT json_object_agg(a.account, json_build_object(
                'user_id', a.user_id, 'friend', a.friend, 'opt_out', a.opt_out))::text
     FROM member_line_accounts a WHERE a.member_id = m.member_id) AS line,
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
    for name in ("email_consent", "email_category_opt_outs", "email_suppression", "line"):
        found[name] = None if found[name] is None else msgspec.json.decode(found[name])
    found["email_category_opt_outs"] = found["email_category_opt_outs"] or []
    found["line"] = found["line"] or {}
    default = found["line"].get(DEFAULT_LINE_ACCOUNT, {})
    found["line_user_id"] = default.get("user_id")
    found["line_friend"] = default.get("friend", False)
    found["line_opt_out"] = default.get("opt_out", False)
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
# Each member's LINE identities come as four parallel arrays (NULL when there are none).
_RESOLVE_COLUMNS = f"""
m.member_id, m.email, m.email_opt_out, m.phone,
{rules.SUPPRESSED_SQL} AS email_suppressed, m.email_consent IS NOT NULL AS email_consent,
{rules.OPTED_OUT_CATEGORIES_SQL} AS email_opted_out_categories,
l.line_accounts, l.line_user_ids, l.line_friends, l.line_opt_outs
"""
_LINE_IDENTITIES = """
LEFT JOIN LATERAL (
    SELECT array_agg(a.account) AS line_accounts, array_agg(a.user_id) AS line_user_ids,
           array_agg(a.friend) AS line_friends, array_agg(a.opt_out) AS line_opt_outs
    FROM member_line_accounts a WHERE a.member_id = m.member_id) l ON true
"""
_RESOLVE = f"""
SELECT NULL::bytea AS by_email, {_RESOLVE_COLUMNS}
FROM members m {_LINE_IDENTITIES} WHERE m.member_id = ANY($1::text[])
UNION ALL
(SELECT DISTINCT ON (m.email_sha256) m.email_sha256, {_RESOLVE_COLUMNS}
 FROM members m {_LINE_IDENTITIES}
 WHERE m.email_sha256 = ANY($2::bytea[]) ORDER BY m.email_sha256, m.created_at)
"""  # noqa: S608 - constant fragments


def _reach(r: Any) -> Reach:
    """The recipient as reached through the account "default" (`Reach.under` for others)."""
    identities = (
        ()
        if r["line_accounts"] is None
        else tuple(
            LineIdentity(account=a, user_id=u, friend=f, opt_out=o)
            for a, u, f, o in zip(
                r["line_accounts"],
                r["line_user_ids"],
                r["line_friends"],
                r["line_opt_outs"],
                strict=True,
            )
        )
    )
    default = next((i for i in identities if i.account == DEFAULT_LINE_ACCOUNT), None)
    return Reach(
        member_id=r["member_id"],
        line_user_id=None if default is None else default.user_id,
        line_friend=default is not None and default.friend,
        line_opt_out=default is not None and default.opt_out,
        line_identities=identities,
        email=r["email"],
        email_opt_out=r["email_opt_out"],
        phone=r["phone"],
        email_suppressed=r["email_suppressed"],
        email_consent=r["email_consent"],
        email_opted_out_categories=tuple(r["email_opted_out_categories"] or ()),
    )
