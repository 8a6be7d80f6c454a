"""Intake, step 2: who each intent is for, and whether it was sent before.

Idempotency keys are checked first (a replay is answered with the original intent, a key
reused with another body is refused), then recipients are resolved in two indexed queries:
by member ID, and by the SHA-256 of an email address. An address no member has is still a
recipient, reachable by email only.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from router import members
from router.database import Connection
from router.intake.validate import Validated
from router.intents import IntentResult, rejected
from router.problems import FieldError
from router.reach import Reach
from router.store import intents as intent_store
from router.store import suppressions


async def drop_replays(
    conn: Connection, pending: Sequence[Validated], results: list[IntentResult | None]
) -> list[Validated]:
    """Answer intents whose idempotency key was seen before (here or earlier in the batch);
    return the rest."""
    keys = [p.request.idempotency_key for p in pending if p.request.idempotency_key is not None]
    if not keys:
        return list(pending)
    seen: dict[str, tuple[UUID | None, bytes | None]] = dict(
        await intent_store.idempotency_keys(conn, keys)
    )
    fresh: list[Validated] = []
    for p in pending:
        key = p.request.idempotency_key
        if key is None:
            fresh.append(p)
            continue
        if key not in seen:
            seen[key] = (None, p.fingerprint)  # first use in this batch
            fresh.append(p)
            continue
        original, fingerprint = seen[key]
        if fingerprint != p.fingerprint:
            results[p.index] = rejected(
                "this idempotency_key was used with a different request", code=409
            )
        elif original is None:
            # Same request twice in one batch: answered as a duplicate once the first has an id.
            results[p.index] = IntentResult(status="duplicate", code=200, reason=key)
        else:
            results[p.index] = IntentResult(status="duplicate", code=200, id=original)
    return fresh


async def recipients(
    conn: Connection,
    pending: Sequence[Validated],
    prefix: str,
    results: list[IntentResult | None],
) -> list[tuple[Validated, Reach]]:
    """Each intent with how its recipient can be reached; an unknown member_id is refused."""
    by_id, by_email = await members.resolve(
        conn,
        [p.request.member_id for p in pending if p.request.member_id is not None],
        [p.email_hash for p in pending if p.email_hash is not None],
    )
    # Recipients known by an address no member has: only a suppression can be known of them.
    unknown = [
        p.email_address
        for p in pending
        if p.request.member_id is None
        and p.email_hash not in by_email
        and p.email_address is not None
    ]
    suppressed = await suppressions.reasons(conn, unknown)
    found: list[tuple[Validated, Reach]] = []
    for p in pending:
        if p.request.member_id is not None:
            reach = by_id.get(p.request.member_id)
            if reach is None:
                field = f"{prefix.format(i=p.index)}member_id"
                results[p.index] = rejected(
                    "no member with this member_id",
                    [FieldError(field, "no member with this id")],
                    code=422,
                )
                continue
        else:
            assert p.email_hash is not None
            reach = by_email.get(p.email_hash) or Reach.address_only(
                p.email_address, suppressed.get(p.email_address or "")
            )
        found.append((p, reach))
    return found
