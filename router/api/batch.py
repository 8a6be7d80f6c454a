"""Batch bodies are decoded item by item, so one bad item is reported and never sinks the rest.

Every item must at least be a JSON object: a list holding anything else was not built as a
batch of this kind, and is refused as a whole with 400 naming each such item.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from router.api import body_checks
from router.api.errors import field_path
from router.problems import FieldError, Problem, ProblemError, invalid

T = TypeVar("T")


class _Envelope(msgspec.Struct):
    items: list[msgspec.Raw]


def decode_batch(
    body: bytes, key: str, item_type: type[T], max_items: int
) -> list[T | list[FieldError]]:
    """Decode `{key: [...]}`; each item becomes a `T` or the field errors that reject it.

    Each item passes the checks every JSON body passes (`router.api.body_checks`, its depth
    counted from the body) before it is decoded. A body that passes them as a whole, whose
    items are all valid, is decoded in one call (most batches); any other item by item."""
    if not body_checks.may_hold_nul(body) and not body_checks.too_deep(body):
        try:
            decoded: list[T] = _whole_batch(key, item_type).decode(body).items
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            pass  # decoded again below, item by item, to name each problem
        else:
            if 0 < len(decoded) <= max_items:
                return list(decoded)
    envelope_type = msgspec.defstruct(
        "Envelope", [("items", list[msgspec.Raw])], rename={"items": key}
    )
    try:
        envelope = msgspec.json.decode(body, type=envelope_type)
    except msgspec.ValidationError as exc:
        path, message = field_path(str(exc))
        raise ProblemError(
            400, "Invalid request", f"{path or key}: {message}", [FieldError(path or key, message)]
        ) from None
    except msgspec.DecodeError as exc:
        raise ProblemError(400, "Invalid request", f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise ProblemError(400, "Invalid request", body_checks.nesting_refused()) from None
    items: list[msgspec.Raw] = envelope.items  # type: ignore[attr-defined]
    if not items:
        raise ProblemError(400, "Invalid request", f"{key}: give at least one item")
    if len(items) > max_items:
        raise ProblemError(
            400,
            "Invalid request",
            f"{key}: {len(items):,} items; at most {max_items:,} in one request",
        )
    not_objects = [
        FieldError(f"{key}[{i}]", "not an object")
        for i, raw in enumerate(items)
        if not bytes(raw).lstrip().startswith(b"{")
    ]
    if not_objects:
        raise invalid(
            not_objects, f"{key}: every item must be an object ({len(not_objects):,} are not)"
        )
    decoder = msgspec.json.Decoder(item_type)
    out: list[T | list[FieldError]] = []
    # An item sits two levels down: in the envelope's object, in its array.
    item_depth = body_checks.MAX_JSON_DEPTH - 2
    may_hold_nul = body_checks.may_hold_nul(body)
    for i, raw in enumerate(items):
        item = bytes(raw)
        if body_checks.too_deep(item, item_depth):
            out.append([FieldError(f"{key}[{i}]", body_checks.nesting_refused())])
            continue
        if may_hold_nul and (unstorable := body_checks.unstorable(item, f"{key}[{i}]")):
            out.append(unstorable)
            continue
        try:
            out.append(decoder.decode(raw))
        except msgspec.ValidationError as exc:
            path, message = field_path(str(exc))
            field = f"{key}[{i}]" + (f".{path}" if path else "")
            out.append([FieldError(field, message)])
    return out


_WHOLE_BATCH: dict[tuple[str, type], msgspec.json.Decoder[Any]] = {}


def _whole_batch(key: str, item_type: type) -> msgspec.json.Decoder[Any]:
    """The decoder of `{key: [item_type, ...]}`, made once per batch route."""
    decoder = _WHOLE_BATCH.get((key, item_type))
    if decoder is None:
        items = list[item_type]  # type: ignore[valid-type]
        envelope = msgspec.defstruct("Batch", [("items", items)], rename={"items": key})
        decoder = _WHOLE_BATCH[(key, item_type)] = msgspec.json.Decoder(envelope)
    return decoder


def problem_of(errors: list[FieldError]) -> Problem:
    return Problem(
        title="Invalid request",
        status=400,
        detail=f"{errors[0].field}: {errors[0].message}",
        errors=errors,
    )
