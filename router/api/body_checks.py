"""What every JSON body must pass before it is decoded: a nesting limit, and no string
PostgreSQL cannot store.

Both are checked on the raw bytes, once, for every route that takes a JSON body (the app's
`before_request`), so no route needs checks of its own. Batch routes check each item instead
(`decode_batch`), so one bad item is rejected alone, as with any other bad field.

- Nesting: decoding and re-encoding recurse once per level, and a body nested a thousand
  levels deep exhausts Python's stack. Real bodies stay far below `MAX_JSON_DEPTH` (a LINE flex
  carousel of nested boxes is about 20 levels).
- U+0000: valid JSON (`\\u0000`), but PostgreSQL stores it in neither `text` nor `jsonb`.
  Lone surrogates, the other string PostgreSQL refuses, never get this far: msgspec refuses
  them as malformed JSON.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from router.log_safety import escape_controls
from router.problems import FieldError, ProblemError, invalid

MAX_JSON_DEPTH = 64
"""Levels of arrays and objects in one body, the outermost counted."""
MAX_REPORTED = 20
"""Fields named in one answer; a body full of NULs is not echoed back whole."""

BODY_CHECKS = "body_checks"
"""The route handler `opt` key saying how a route's body is checked (see the two below)."""
PER_ITEM: dict[str, Any] = {BODY_CHECKS: "per_item"}
"""Batch routes: `decode_batch` checks each item, so one bad item is rejected on its own."""
STREAMED: dict[str, Any] = {BODY_CHECKS: "streamed"}
"""Routes that read their (non-JSON) body as a stream: not read in advance."""

NUL_MESSAGE = "contains U+0000 (NUL), which cannot be stored"

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_NUL = b"\\u0000"


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays and objects nest more than `limit` levels (strings not counted).

    No recursion: escapes and strings are cut out, the brackets left are matched a level at
    a time (each `replace` removes every innermost pair). Most bodies have fewer brackets in
    all than the limit and are not scanned at all."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b"\\" in body:
        body = _ESCAPE.sub(b"", body)  # outside strings JSON has no backslash
    outside_strings = b"".join(body.split(b'"')[::2])
    brackets = outside_strings.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):
        inner_removed = brackets.replace(b"()", b"")
        if len(inner_removed) == len(brackets):
            return False  # not balanced: not JSON, the decoder says so
        brackets = inner_removed
        if not brackets:
            return False
    return True


def may_hold_nul(body: bytes) -> bool:
    """False if no string in `body` can hold U+0000 (one scan; a batch checks its items only
    when the body as a whole may)."""
    return _NUL in body


def unstorable(body: bytes, prefix: str = "") -> list[FieldError]:
    """The fields (paths under `prefix`) whose key or value holds U+0000."""
    if not may_hold_nul(body):
        return []
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return []  # not JSON: the route's own decoding names the problem
    found: list[FieldError] = []
    _walk(value, prefix, found)
    return found


def _walk(value: Any, path: str, found: list[FieldError]) -> None:
    if len(found) >= MAX_REPORTED:
        return
    if isinstance(value, str):
        if "\x00" in value:
            found.append(FieldError(path or "body", NUL_MESSAGE))
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                found.append(FieldError(path or "body", f"a key {NUL_MESSAGE}"))
            name = escape_controls(key)
            _walk(item, f"{path}.{name}" if path else name, found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", found)


def nesting_refused(limit: int = MAX_JSON_DEPTH) -> str:
    return f"the JSON body nests arrays and objects deeper than {limit} levels"


def check_whole_body(body: bytes) -> None:
    """Raise the 400 for a body that fails `check`."""
    if too_deep(body):
        raise ProblemError(400, "Invalid request", nesting_refused())
    if errors := unstorable(body):
        raise invalid(errors)
