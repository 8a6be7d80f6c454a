"""Rules over several fields of a request that msgspec's types cannot state.

"Give exactly one of member_id and email_address", "give email content, LINE messages, or
both": a Struct declares them once, as `alternatives`, next to its fields. Intake checks a
decoded request against that declaration, and the OpenAPI document states it (as `oneOf` /
`anyOf`) from the same declaration, so the two cannot drift apart.
"""

from __future__ import annotations

import msgspec


class Alternatives(msgspec.Struct, frozen=True):
    """Of `fields` (attribute names), at least one, or with `exactly_one` exactly one, must be
    given: present, not null and not an empty string."""

    fields: tuple[str, ...]
    message: str
    exactly_one: bool = False


def given(value: object) -> bool:
    return value is not None and value != ""


def declared(struct_type: type) -> tuple[Alternatives, ...]:
    rules: tuple[Alternatives, ...] = getattr(struct_type, "alternatives", ())
    return rules


def unmet(value: msgspec.Struct) -> list[Alternatives]:
    """The declared rules `value` breaks."""
    broken: list[Alternatives] = []
    for rule in declared(type(value)):
        count = sum(given(getattr(value, name)) for name in rule.fields)
        if count == 0 or (rule.exactly_one and count > 1):
            broken.append(rule)
    return broken
