"""Rows as PostgreSQL takes them in bulk: one array per column, unnested by column name.

A row type is a msgspec Struct whose fields are the table's columns; `unnest` spells the
`unnest($n::type[], ...) AS alias(column, ...)` clause from the field names, and `columns`
turns rows into the arrays that go with it, in the same order. Statements name columns, never
positions, and many rows cost one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec


def unnest(row_type: type[msgspec.Struct], types: Mapping[str, str], first: int, alias: str) -> str:
    """The clause for `row_type`'s columns, from parameter `$first` on. `types` gives each
    field's PostgreSQL type; every field must have one."""
    fields = row_type.__struct_fields__
    missing = set(fields) ^ set(types)
    if missing:
        raise ValueError(f"{row_type.__name__}: no PostgreSQL type for {sorted(missing)}")
    arrays = ", ".join(f"${first + n}::{types[name]}[]" for n, name in enumerate(fields))
    return f"unnest({arrays}) AS {alias}({', '.join(fields)})"


def columns(row_type: type[msgspec.Struct], rows: Sequence[msgspec.Struct]) -> list[list[Any]]:
    """One list per field of `row_type`, in field order: the arguments for `unnest`."""
    width = len(row_type.__struct_fields__)
    if not rows:
        return [[] for _ in range(width)]
    return [
        list(column) for column in zip(*(msgspec.structs.astuple(r) for r in rows), strict=True)
    ]


def column_lists(table: msgspec.Struct) -> list[Any]:
    """The arguments for `unnest` from a Struct that already holds one list per column."""
    return list(msgspec.structs.astuple(table))


def width(row_type: type[msgspec.Struct]) -> int:
    return len(row_type.__struct_fields__)
