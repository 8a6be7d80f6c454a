"""When email may not carry an intent to someone it reaches: the address is suppressed, the
member unsubscribed from the intent's category (or from all promotional email), or
promotional email lacks their consent.

Said twice, as the reachability rules are (router/reach.py): in Python for intake, which
decides each intent's channels from the `Reach` facts `router.members.resolve` reads, and in
SQL for the campaign fan-out and for the check at every send. Only composed email is subject
to category and consent rules; a relayed message's sender did that before it reached us. A
suppressed address is never mailed, relayed or not.
"""

from __future__ import annotations

import msgspec

from router.reach import Reach

ALL_PROMOTIONAL = "*"
"""The category a member's opt-out of all promotional email is recorded under (a global
one-click unsubscribe). No intent can name it: categories start with a letter or digit.
`members.email_opt_out` is not used for it, since that flag stops transactional email too."""
ALL_PROMOTIONAL_REFUSAL = (
    "the member opted out of promotional email (unsubscribed, or withdrew consent)"
)

ADDRESS_ONLY_PREFIX = "email:"
"""Member IDs the router gives recipients known only by an address (router.members): no
consent can be recorded for them, so the sender's request stands for it."""


def email_refusal(
    reach: Reach, kind: str, category: str | None, *, composed: bool, require_consent: bool
) -> str | None:
    """Why email may not carry this intent to this recipient, or None."""
    if reach.email_suppressed is not None:
        return f"suppressed: {reach.email_suppressed}"
    if kind != "promotional" or not composed:
        return None
    if ALL_PROMOTIONAL in reach.email_opted_out_categories:
        return ALL_PROMOTIONAL_REFUSAL
    if category is not None and category in reach.email_opted_out_categories:
        return f"the member unsubscribed from {category!r} email"
    if (
        require_consent
        and not reach.email_consent
        and reach.member_id is not None
        and not reach.member_id.startswith(ADDRESS_ONLY_PREFIX)
    ):
        return (
            "no email consent is recorded for the member, and promotional email needs one"
            " ([email] require_consent)"
        )
    return None


def for_intent(
    reach: Reach, kind: str, category: str | None, *, composed: bool, require_consent: bool
) -> Reach:
    """`reach` as the email channel sees it for one intent."""
    refusal = email_refusal(
        reach, kind, category, composed=composed, require_consent=require_consent
    )
    if refusal == reach.email_refusal:
        return reach
    return msgspec.structs.replace(reach, email_refusal=refusal)


# What `router.members.resolve` reads for `Reach.email_suppressed`, over `members m`.
SUPPRESSED_SQL = (
    "(SELECT s.reason || coalesce(' (' || s.detail || ')', '') FROM email_suppressions s"
    " WHERE s.address = m.email)"
)
OPTED_OUT_CATEGORIES_SQL = (
    "(SELECT array_agg(o.category) FROM email_category_opt_outs o WHERE o.member_id = m.member_id)"
)


def refusal_sql(address: str, member_id: str, kind: str, category: str, consent: str) -> str:
    """`email_refusal` in SQL: a reason (text) or NULL. Each argument is an SQL expression:
    the address mailed, the member, the intent's kind and category, and whether the member's
    consent is required and missing. Both callers judge composed email (a relayed message has
    no category, and consent is not asked of it at send time), so relaying is not a term."""
    return f"""coalesce(
        (SELECT 'suppressed: ' || s.reason || coalesce(' (' || s.detail || ')', '')
         FROM email_suppressions s WHERE s.address = {address}),
        CASE WHEN coalesce({kind}, 'promotional') = 'promotional' THEN
            coalesce(
                -- one look at the member's opt-outs finds both '*' and the category
                (SELECT CASE WHEN o.category = '{ALL_PROMOTIONAL}'
                             THEN '{ALL_PROMOTIONAL_REFUSAL}'
                             ELSE 'the member unsubscribed from ''' || o.category || ''' email'
                        END
                 FROM email_category_opt_outs o
                 WHERE o.member_id = {member_id}
                   AND o.category IN ('{ALL_PROMOTIONAL}', {category})
                 ORDER BY o.category = '{ALL_PROMOTIONAL}' DESC LIMIT 1),
                CASE WHEN {consent}
                     THEN 'no email consent is recorded for the member, and promotional email'
                          || ' needs one ([email] require_consent)'
                END)
        END)"""  # noqa: S608 - SQL expressions of the caller's, never values


def address_only_id_sql(address: str) -> str:
    """`router.members.address_only_id` of an address, in SQL: the member an opt-out of an
    address without a member is recorded on (SendGrid's group suppressions)."""
    return (
        f"('{ADDRESS_ONLY_PREFIX}' ||"
        f" left(encode(sha256(convert_to(lower({address}), 'UTF8')), 'hex'), 32))"
    )


# At send time, over `deliveries d`, `intents i` and `members m`. Consent is judged when the
# intent is accepted (a withdrawal is an opt-out, which the send-time check sees); a relayed
# message has no category, so only its address is checked. An intent accepted for an
# address no member had is checked against the address-only member opted out since.
SEND_TIME_REFUSAL_SQL = refusal_sql(
    address="d.address",
    member_id=f"coalesce(i.member_id, {address_only_id_sql('d.address')})",
    kind="i.kind",
    category="i.category",
    consent="false",
)


def campaign_refusal_sql(kind: str, category: str | None, require_consent: bool) -> str:
    """The rule for one campaign's members (`members m`): its kind and category are fixed,
    its email is composed."""
    literal = "NULL::text" if category is None else "'" + category.replace("'", "''") + "'"
    consent = (
        f"(m.email_consent IS NULL AND m.member_id NOT LIKE '{ADDRESS_ONLY_PREFIX}%')"
        if require_consent
        else "false"
    )
    return refusal_sql("m.email", "m.member_id", f"'{kind}'", literal, consent)
