"""Routing in SQL: `plan`'s decisions for one route and content, as expressions over `members m`.

A campaign gives every member the same route, kind and content, so what differs between its
members is only which of the route's channels reach them. Those are the descriptors'
`reachable_sql` rules; each member's combination becomes a bit pattern (`code`), and for each
of the 2^k patterns the decision is asked of `plan_by_reach` — the same function that plans
one intent in Python — when the table is built. The SQL therefore cannot hold a rule of its
own: it only looks the pattern up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from channels.base import ChannelDescriptor
from router.content import Content
from router.intake.routing import Plan, Routes, effective_route, plan_by_reach
from router.intents import Kind, Route

MAX_CHANNELS = 8
"""A route over more channels would make a lookup table of more than 256 rows."""


@dataclass(frozen=True)
class RoutingSql:
    """SQL fragments for one (route, content, kind, configured channels).

    `code` and `addresses` are over `members m`; `channels`, `fallback` over a column `code`;
    `address` over columns `channel` and `addresses`."""

    code: str
    channels: str
    fallback: str
    addresses: str
    address: str
    decisions: tuple[Plan | None, ...]  # by code; None: no channel reaches such a member


def _quoted(name: str) -> str:
    # Channel names are checked plain by the registry (lower-case letters, digits and _).
    assert name.replace("_", "").isalnum(), name
    return f"'{name}'"


def _allowed(refusal: str | None) -> str:
    return "" if refusal is None else f" AND ({refusal}) IS NULL"


def routing_sql(
    route: Route,
    content: Content,
    routes: Routes,
    configured: frozenset[str],
    kind: Kind,
    refusals: Mapping[str, str] | None = None,
) -> RoutingSql:
    """`refusals`: per channel, SQL over `members m` yielding why the channel may not carry
    this campaign to the member although it reaches them (NULL: it may)."""
    refusals = refusals or {}
    ranked: tuple[ChannelDescriptor, ...] = routes.ranked(effective_route(route, content))
    if len(ranked) > MAX_CHANNELS:
        raise ValueError(f"route {route!r} has more than {MAX_CHANNELS} channels")
    decisions: list[Plan | None] = []
    for code in range(1 << len(ranked)):
        reaching = {c.name for n, c in enumerate(ranked) if code >> n & 1}
        decision = plan_by_reach(
            route,
            lambda c, reaching=reaching: None if c.name in reaching else "unreachable",  # type: ignore[misc]
            content,
            routes,
            configured,
            kind,
        )
        decisions.append(decision if isinstance(decision, Plan) else None)
    bits = " + ".join(
        f"(CASE WHEN coalesce({c.reachable_sql}, false){_allowed(refusals.get(c.name))}"
        f" THEN {1 << n} ELSE 0 END)"
        for n, c in enumerate(ranked)
    )
    primary = " ".join(
        f"WHEN {code} THEN ARRAY[{', '.join(_quoted(name) for name in d.primary)}]::text[]"
        for code, d in enumerate(decisions)
        if d is not None
    )
    fallback = " ".join(
        f"WHEN {code} THEN {_quoted(d.fallback)}"
        for code, d in enumerate(decisions)
        if d is not None and d.fallback is not None
    )
    position = " ".join(f"WHEN {_quoted(c.name)} THEN {n + 1}" for n, c in enumerate(ranked))
    return RoutingSql(
        code=f"({bits or '0'})",
        channels=f"(CASE code {primary} END)" if primary else "NULL::text[]",
        fallback=f"(CASE code {fallback} END)" if fallback else "NULL::text",
        addresses=(
            f"ARRAY[{', '.join(f'({c.address_sql})::text' for c in ranked)}]::text[]"
            if ranked
            else "'{}'::text[]"
        ),
        address=f"addresses[CASE channel {position} END]" if ranked else "NULL::text",
        decisions=tuple(decisions),
    )
