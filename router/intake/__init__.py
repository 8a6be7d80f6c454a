"""Intake: the one path by which every front door accepts intents.

`accept` reads top to bottom as the four steps it takes:
validate (each intent on its own) -> resolve (idempotency keys, then recipients) ->
plan (routing over the registered channels) -> persist (one statement, then a wake-up).
What it writes, it writes in one statement (in one transaction with the delivery events,
when those are recorded), committed before anyone is told "accepted".
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from channels.base import ChannelDescriptor
from router.content import Relayed
from router.database import Connection
from router.deliverability import rules
from router.intake import persist, resolve
from router.intake.persist import Planned
from router.intake.routing import Plan, Routes, Unroutable, plan
from router.intake.validate import ContentChecks, Validated, validate
from router.intents import IntentOrigin, IntentRequest, IntentResult, rejected
from router.reach import DEFAULT_LINE_ACCOUNT, Reach
from router.store import delivery_events
from router.store.row_ids import uuid7s


@dataclass(frozen=True)
class IntakeChannels:
    """The channels intake plans over: every registered descriptor, which of them this
    router has adapters for, and how many recipients one request may name on those that send
    to many at once (used for campaigns)."""

    descriptors: Sequence[ChannelDescriptor]
    configured: frozenset[str]
    group_sizes: Mapping[str, int] = field(default_factory=dict)
    # Promotional email only to members with a recorded consent ([email] require_consent).
    require_consent: bool = True
    # Each configured LINE account, with the channels sending under it that it has (a LINE
    # account without a token has none: those channels are then not configured for it).
    line_accounts: Mapping[str, frozenset[str]] = field(default_factory=dict)
    routes: Routes = field(init=False)
    by_name: Mapping[str, ChannelDescriptor] = field(init=False)
    _configured_under: dict[str, frozenset[str]] = field(init=False)

    def __post_init__(self) -> None:
        # Ranked once per set of registered channels, not per request or intent.
        key = tuple(id(d) for d in self.descriptors)
        known = _RANKED.get(key)
        if known is None:
            known = _RANKED[key] = (
                Routes(self.descriptors),
                {d.name: d for d in self.descriptors},
            )
        object.__setattr__(self, "routes", known[0])
        object.__setattr__(self, "by_name", known[1])
        per_account = frozenset(d.name for d in self.descriptors if d.per_line_account)
        elsewhere = self.configured - per_account
        under = {a: elsewhere | (self.configured & own) for a, own in self.line_accounts.items()}
        under.setdefault(DEFAULT_LINE_ACCOUNT, elsewhere)
        object.__setattr__(self, "_configured_under", under)

    def configured_for(self, line_account: str) -> frozenset[str]:
        """The channels configured for an intent under this LINE account: a channel that
        sends per account only when the account is configured and has it."""
        return self._configured_under.get(
            line_account, self._configured_under[DEFAULT_LINE_ACCOUNT]
        )

    def knows_line_account(self, line_account: str) -> bool:
        """Whether an intent may name this account ("default" always may)."""
        return line_account == DEFAULT_LINE_ACCOUNT or line_account in self.line_accounts


# The registry changes only when a channel is registered: a handful of keys per process. Each
# value holds its descriptors, so an id in a key cannot be reused by another object.
_RANKED: dict[tuple[int, ...], tuple[Routes, Mapping[str, ChannelDescriptor]]] = {}


async def accept(
    conn: Connection,
    requests: Sequence[IntentRequest | IntentResult],
    channels: IntakeChannels,
    prefix: str = "",
    relayed: Relayed | None = None,
    *,
    events: bool = False,
    campaign_id: UUID | None = None,
    multicast: bool = True,
    origins: Sequence[IntentOrigin | None] | None = None,
    batch_id: str | None = None,
) -> list[IntentResult]:
    """Accept a batch; `requests` may already hold per-item decoding failures (kept as-is).

    Returns one result per input, in order. One bad item never affects the others. With
    `events`, each new delivery gets a `processed` delivery event in the same transaction.
    Deliveries of one call that share a channel able to send to many at once (LINE
    multicast), their content and their send time go into send groups: a campaign chunk, a
    batch, one relayed message's recipients or one SendGrid request's personalizations;
    not without `multicast`."""
    results: list[IntentResult | None] = [None] * len(requests)
    valid: list[Validated] = []
    contents = ContentChecks()
    for i, item in enumerate(requests):
        checked = (
            item
            if isinstance(item, IntentResult)
            else validate(i, item, prefix.format(i=i), relayed, contents, channels)
        )
        if isinstance(checked, IntentResult):
            results[i] = checked
        else:
            if origins is not None:
                checked.origin = origins[i]
            valid.append(checked)

    planned: list[Planned] = []
    decided: dict[_PlanKey, Plan | Unroutable] = {}
    # What is written is written by one statement (rows and queue wake-ups), atomic on its
    # own: a transaction around it would add two round trips and hold nothing more. Reading
    # first in a transaction would not either: at READ COMMITTED its reads see what others
    # commit meanwhile just the same. Only delivery events are a second write.
    async with conn.transaction() if events else contextlib.nullcontext():
        fresh = await resolve.drop_replays(conn, valid, results)
        found = await resolve.recipients(conn, fresh, prefix, results)
        for (intent, reach), intent_id in zip(found, uuid7s(len(found)), strict=True):
            decision = _plan(intent_id, intent, reach, channels, decided)
            if isinstance(decision, IntentResult):
                results[intent.index] = decision
            else:
                planned.append(decision)
        if planned:
            stored = await persist.persist(
                conn,
                planned,
                channels.by_name,
                campaign_id=campaign_id,
                group_sizes=channels.group_sizes if multicast else {},
                returning_deliveries=events,
                batch_id=batch_id,
            )
            if events:
                await delivery_events.record(
                    conn, [delivery_events.Recorded(d, "processed") for d in stored.deliveries]
                )
            lost = []
            for p in planned:
                if p.id in stored.intents:
                    results[p.intent.index] = _accepted(p)
                else:
                    lost.append(p.intent)  # a concurrent request took the idempotency key first
            if lost:
                await resolve.drop_replays(conn, lost, results)
    return _settle_replays_within(results, planned)


# What a routing decision depends on: the route, the kind, the content, the LINE account
# (which channels are configured for it) and how each registered channel sees the recipient.
_PlanKey = tuple[str, str, bytes, str, tuple[str | None, ...]]


def _plan(
    intent_id: UUID,
    intent: Validated,
    reach: Reach,
    channels: IntakeChannels,
    decided: dict[_PlanKey, Plan | Unroutable],
) -> Planned | IntentResult:
    """Plan one intent; `decided` holds the call's decisions so far, since intents alike in
    everything routing reads (a batch's or a campaign chunk's) are decided once."""
    req = intent.request
    account = req.line_account
    reach = rules.for_intent(
        reach.under(account),
        req.kind,
        req.category,
        composed=intent.content.relayed is None,
        require_consent=channels.require_consent,
    )
    seen_by = tuple(d.unreachable(reach) for d in channels.descriptors)
    key = (req.route, req.kind, intent.content_id, account, seen_by)
    decision = decided.get(key)
    if decision is None:
        configured = channels.configured_for(account)
        decision = decided[key] = plan(
            req.route, reach, intent.content, channels.routes, configured, req.kind
        )
    if isinstance(decision, Unroutable):
        return rejected(decision.reason, code=422)
    return Planned(id=intent_id, intent=intent, reach=reach, plan=decision)


def _accepted(p: Planned) -> IntentResult:
    return IntentResult(
        status="accepted",
        code=202,
        id=p.id,
        channels=list(p.plan.primary),
        fallback=p.plan.fallback,
    )


def _settle_replays_within(
    results: list[IntentResult | None], planned: Sequence[Planned]
) -> list[IntentResult]:
    """An intent repeated within one batch is answered with the id its first copy got (or
    refused, when the first copy was)."""
    by_key: dict[str, UUID] = {}
    for p in planned:
        key, result = p.intent.request.idempotency_key, results[p.intent.index]
        if key is not None and result is not None and result.status == "accepted":
            by_key[key] = p.id
    out: list[IntentResult] = []
    for r in results:
        assert r is not None
        if r.status == "duplicate" and r.id is None and r.reason:
            original = by_key.get(r.reason)
            r = (
                IntentResult(status="duplicate", code=200, id=original)
                if original is not None
                else rejected("the earlier intent with this idempotency_key was rejected", code=409)
            )
        out.append(r)
    return out
