"""A journey's send step made into an intent: its templates filled in for one member.

The intent is an ordinary one (router.intake), for the run's member, with the idempotency key
`journey:{run}:{step}`: a step fired again after a crash finds the intent it already made.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import msgspec

from router.intents import IntentRequest
from router.journeys.definition import SendStep
from router.journeys.templates import TemplateError, pools_used, render


class SendFailed(Exception):
    """The step cannot become an intent; the reason is recorded on the step."""


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _filled(value: Any, fill: Any) -> Any:
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, dict):
        return {k: _filled(v, fill) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, fill) for v in value]
    return value


def pools_of(send: SendStep) -> set[str]:
    """The coupon pools the step's templates take codes from."""
    content = msgspec.to_builtins({"email": send.email, "line": send.line})
    pools: set[str] = set()
    for text in _strings(content):
        pools |= _pools_used(text)
    return pools


@functools.lru_cache(maxsize=1024)
def _pools_used(source: str) -> frozenset[str]:
    """`pools_used`, parsed once per template source (a step is sent to many members)."""
    return frozenset(pools_used(source))


def intent_for(
    send: SendStep,
    *,
    member_id: str,
    member: Mapping[str, Any],
    event: Mapping[str, Any],
    coupons: Mapping[str, str],
    idempotency_key: str,
) -> IntentRequest:
    """The intent the step sends this member. Raises SendFailed naming what is wrong."""
    content = msgspec.to_builtins({"email": send.email, "line": send.line})
    try:
        content = _filled(
            content, lambda text: render(text, member=member, event=event, coupons=coupons)
        )
    except TemplateError as error:
        raise SendFailed(f"template: {error}") from None
    try:
        return msgspec.convert(
            {
                **{k: v for k, v in content.items() if v is not None},
                "member_id": member_id,
                "route": send.route,
                "kind": send.kind,
                "campaign": send.campaign,
                "category": send.category,
                "tags": list(send.tags),
                "metadata": send.metadata,
                "idempotency_key": idempotency_key,
            },
            IntentRequest,
        )
    except msgspec.ValidationError as error:
        raise SendFailed(f"the filled-in content is not a valid intent: {error}") from None


def idempotency_key(run_id: UUID, step: str) -> str:
    return f"journey:{run_id}:{step}"
