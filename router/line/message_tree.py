"""Walk a LINE message tree against LINE's schemas (`router.line.message_schema`).

Every object on the way is checked as LINE's OpenAPI description defines it: a polymorphic
object's `type` must be one its base maps (and selects the subtype to check it as), required
fields must be there, every known field must hold the JSON kind, one of the values, and the
length or count the schema states. Fields the schema does not name are left alone, as LINE
leaves them. Each problem names the path of the bad field, e.g.
`messages[0].contents.body.contents[2].action`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import msgspec

from router.line.derived_text import utf16_len
from router.line.message_schema import SCHEMAS, Field, all_fields, all_required, tag_of

MAX_DEPTH: Final = 64
"""Objects nested deeper than this are refused before the walk could exhaust the stack;
LINE's own limits (a flex bubble is at most 30 KB) keep real messages far shallower."""


class MessageProblem(msgspec.Struct, frozen=True):
    """One reason LINE would refuse the messages: `field` is a path like `messages[2].text`."""

    field: str
    reason: str


_FIELDS: Final = {name: all_fields(name) for name in SCHEMAS}
_REQUIRED: Final = {name: all_required(name) - {"type"} for name in SCHEMAS}
_TAGS: Final = {name: tag_of(name) for name in SCHEMAS}
_PATTERNS: Final = {
    field.pattern: re.compile(field.pattern)
    for fields in _FIELDS.values()
    for field in fields.values()
    if field.pattern is not None
}
_KIND_NAMES: Final = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "map": "an object",
}


def one_of(values: Mapping[str, object] | tuple[str, ...]) -> str:
    return "must be one of " + ", ".join(f'"{v}"' for v in values)


def check_tree(value: object, schema: str, path: str) -> list[MessageProblem]:
    """Every way `value` (parsed JSON) breaks schema `schema`; empty when it fits."""
    out: list[MessageProblem] = []
    _object(out, value, schema, path, 0)
    return out


def _object(out: list[MessageProblem], value: object, schema: str, path: str, depth: int) -> None:
    if not isinstance(value, dict):
        out.append(MessageProblem(path, "must be an object"))
        return
    if depth > MAX_DEPTH:
        out.append(MessageProblem(path, f"nested more than {MAX_DEPTH} objects deep"))
        return
    subtypes = SCHEMAS[schema].subtypes
    kind = value.get("type")
    if subtypes:
        if kind is None:
            out.append(MessageProblem(f"{path}.type", "required"))
            return
        chosen = subtypes.get(kind) if isinstance(kind, str) else None
        if chosen is None:
            out.append(MessageProblem(f"{path}.type", one_of(subtypes)))
            return
        schema = chosen
    elif (tag := _TAGS[schema]) is not None and kind != tag:
        out.append(
            MessageProblem(f"{path}.type", "required" if kind is None else f'must be "{tag}"')
        )
        return
    out.extend(
        MessageProblem(f"{path}.{name}", "required")
        for name in _FIELDS[schema]
        if name in _REQUIRED[schema] and name not in value
    )
    fields = _FIELDS[schema]
    for name, item in value.items():
        field = fields.get(name)
        if field is not None and name != "type":
            _value(out, item, field, f"{path}.{name}", depth)


def _value(out: list[MessageProblem], value: object, field: Field, path: str, depth: int) -> None:
    kind = field.kind
    if kind == "object":
        assert field.schema is not None
        _object(out, value, field.schema, path, depth + 1)
    elif kind == "array":
        if not isinstance(value, list):
            out.append(MessageProblem(path, "must be a list"))
            return
        if field.max_items is not None and len(value) > field.max_items:
            out.append(
                MessageProblem(
                    path, f"has {len(value):,} entries; LINE allows at most {field.max_items}"
                )
            )
        assert field.schema is not None
        for number, item in enumerate(value):
            _object(out, item, field.schema, f"{path}[{number}]", depth + 1)
    elif kind == "map":
        if not isinstance(value, dict):
            out.append(MessageProblem(path, "must be an object"))
            return
        assert field.schema is not None
        for key, item in value.items():
            _object(out, item, field.schema, f"{path}.{key}", depth + 1)
    elif not _is_kind(value, kind):
        out.append(MessageProblem(path, f"must be {_KIND_NAMES[kind]}"))
    elif isinstance(value, str):
        _string(out, value, field, path)


def _is_kind(value: object, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if isinstance(value, bool):
        return kind == "boolean"
    if kind == "integer":
        return isinstance(value, int)
    return kind == "number" and isinstance(value, int | float)


def _string(out: list[MessageProblem], value: str, field: Field, path: str) -> None:
    if field.enum and value not in field.enum:
        out.append(MessageProblem(path, one_of(field.enum)))
        return
    if field.max_length is not None or field.min_length:
        length = utf16_len(value)
        name = path.rpartition(".")[2]
        if field.max_length is not None and length > field.max_length:
            out.append(
                MessageProblem(
                    path,
                    f"{name} is {length:,} UTF-16 code units; "
                    f"LINE allows at most {field.max_length:,}",
                )
            )
        elif field.min_length and length < field.min_length:
            out.append(MessageProblem(path, f"{name} must not be empty"))
    if field.pattern is not None and not _PATTERNS[field.pattern].search(value):
        out.append(MessageProblem(path, f"must match {field.pattern}"))
