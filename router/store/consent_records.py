"""Consent records of erased members: written when a member is erased, read by operators,
deleted by retention once `keep_until` has passed (router.deliverability.consent).

Every function runs in the caller's transaction; none opens its own.
"""

from __future__ import annotations

import msgspec

from router.database import Connection
from router.deliverability.consent import ConsentRecord, EmailConsent

# How long a consent is kept after the last promotional email sent on it.
KEEP_AFTER_LAST_SEND = "1 month"

# The last promotional email sent to the member (handed to their mail system: bounces and
# complaints came after a send), over `members m`. An intent with no kind predates kinds and
# was promotional (the API's default).
_LAST_PROMOTIONAL_SEND = """
    SELECT max(coalesce(d.sent_at, d.updated_at)) AS at
    FROM intents i JOIN deliveries d ON d.intent_id = i.id
    WHERE i.member_id = m.member_id AND d.channel = 'email'
      AND d.status IN ('sent', 'bounced', 'complained')
      AND coalesce(i.kind, 'promotional') = 'promotional'"""

_KEEP = f"""
INSERT INTO email_consent_records (member_id, email, consent, last_promotional_at, keep_until)
SELECT m.member_id, m.email, m.email_consent, last.at, last.at + interval '{KEEP_AFTER_LAST_SEND}'
FROM members m CROSS JOIN LATERAL ({_LAST_PROMOTIONAL_SEND}) AS last
WHERE m.member_id = $1 AND m.email_consent IS NOT NULL
  AND last.at + interval '{KEEP_AFTER_LAST_SEND}' > now()
RETURNING keep_until"""  # noqa: S608 - constant fragments


async def keep_for_erasure(conn: Connection, member_id: str) -> bool:
    """Copy the member's consent into the kept records if a promotional email was sent to
    them less than a month ago; run before the member is deleted. True if one was kept."""
    return await conn.fetchval(_KEEP, member_id) is not None


async def of_member(conn: Connection, member_id: str) -> list[ConsentRecord]:
    """The kept records of one erased member, oldest erasure first."""
    rows = await conn.fetch(
        "SELECT member_id, email, consent::text AS consent, last_promotional_at, keep_until,"
        " erased_at FROM email_consent_records WHERE member_id = $1 ORDER BY erased_at",
        member_id,
    )
    return [
        ConsentRecord(
            **{**dict(r), "consent": msgspec.json.decode(r["consent"], type=EmailConsent)}
        )
        for r in rows
    ]


# Records past their keep_until, at most $1 per statement (retention).
PRUNE_EXPIRED = """
    DELETE FROM email_consent_records WHERE (member_id, erased_at) IN (
        SELECT member_id, erased_at FROM email_consent_records
        WHERE keep_until < now() LIMIT $1)"""
