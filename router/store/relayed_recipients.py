"""The only writer of `relayed_recipients`: a relayed recipient's DSN parameters (NOTIFY,
ORCPT), kept with the intent made for it, in the transaction that accepts the intent."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from router.content import RelayRecipient
from router.database import Connection


async def store(conn: Connection, rows: Sequence[tuple[UUID, RelayRecipient]]) -> None:
    """Keep the parameters of these just-accepted intents."""
    if not rows:
        return
    await conn.execute(
        "INSERT INTO relayed_recipients (intent_id, notify, orcpt)"
        " SELECT i, string_to_array(n, ','), o"
        " FROM unnest($1::uuid[], $2::text[], $3::text[]) AS r(i, n, o)"
        " ON CONFLICT DO NOTHING",
        [r[0] for r in rows],
        # One array column cannot hold arrays of arrays of different lengths: joined here.
        [None if r[1].notify is None else ",".join(r[1].notify) for r in rows],
        [r[1].orcpt for r in rows],
    )


async def load(conn: Connection, intent_ids: Sequence[UUID]) -> dict[UUID, RelayRecipient]:
    """The parameters of those of these intents that have any."""
    if not intent_ids:
        return {}
    rows = await conn.fetch(
        "SELECT intent_id, notify, orcpt FROM relayed_recipients WHERE intent_id = ANY($1::uuid[])",
        list(intent_ids),
    )
    return {
        r["intent_id"]: RelayRecipient(
            notify=None if r["notify"] is None else list(r["notify"]), orcpt=r["orcpt"]
        )
        for r in rows
    }
