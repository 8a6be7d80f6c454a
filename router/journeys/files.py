"""Journeys defined as files: `<directory>/*.toml`, read and validated when the router starts.

Each file is one journey in the API's shape, written as TOML; its id is the file's stem
(`cart-abandonment.toml` is `cart-abandonment`). A file without `enabled` is disabled: a
journey switched on by dropping a file in place would start sending at the next start.

A bad file stops the start with one line: the file, the line and the reason. TOML syntax
errors carry the line tomllib reports. For a wrong shape or a broken rule the line is found
from the field's path in the text (`locate`): exact for keys written in `[table]` and
`[[array]]` sections, the line of the enclosing key inside an inline table or array.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import msgspec

from router.journeys.definition import Journey
from router.journeys.validation import validate
from router.problems import FieldError

JOURNEY_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TOML_AT = re.compile(r"\s*\(at line (?P<line>\d+), column \d+\)$")
_MSGSPEC_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_SEGMENT = re.compile(r"(?P<name>[^.\[\]]+)(?:\[(?P<index>\d+)\])?")


class JourneyFileError(Exception):
    """A journey file that cannot be loaded: "<file>:<line>: <reason>"."""


class JourneyFile(msgspec.Struct, frozen=True):
    journey_id: str
    path: str
    journey: Journey


def read_directory(
    directory: str | Path, *, known_pools: Collection[str] | None
) -> list[JourneyFile]:
    """Every `*.toml` in `directory`, in name order, read and validated."""
    return [
        read_file(path, known_pools=known_pools) for path in sorted(Path(directory).glob("*.toml"))
    ]


def read_file(path: Path, *, known_pools: Collection[str] | None) -> JourneyFile:
    if not JOURNEY_ID.fullmatch(path.stem):
        raise JourneyFileError(
            f"{path}: the file's name is the journey's id: 1 to 64 of a-z, 0-9, '_' and '-',"
            " starting with a letter or digit"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JourneyFileError(f"{path}: cannot read it: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise JourneyFileError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = _TOML_AT.search(message)
        line = f":{at['line']}" if at else ""
        reason = message[: at.start()] if at else message
        raise JourneyFileError(f"{path}{line}: not valid TOML: {reason}") from exc
    data.setdefault("enabled", False)
    try:
        journey = msgspec.convert(data, Journey, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        at = _MSGSPEC_AT.search(message)
        field = at["path"].lstrip(".") if at else ""
        reason = message[: at.start()] if at else message
        raise JourneyFileError(_where(path, text, FieldError(field, reason))) from exc
    if _holds_nul(data):
        # The API refuses it in any body; PostgreSQL cannot store it.
        raise JourneyFileError(f"{path}: contains U+0000 (NUL), which is never stored")
    _refuse(path, text, validate(journey, known_pools=known_pools))
    return JourneyFile(journey_id=path.stem, path=str(path), journey=journey)


def check_pools(file: JourneyFile, known_pools: Collection[str]) -> None:
    """Check a file already read against the coupon pools that exist (known only once the
    database is open); the file is read again only to name the line of an error."""
    if errors := validate(file.journey, known_pools=known_pools):
        path = Path(file.path)
        _refuse(path, path.read_text(encoding="utf-8"), errors)


def _refuse(path: Path, text: str, errors: list[FieldError]) -> None:
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise JourneyFileError(_where(path, text, errors[0]) + more)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _where(path: Path, text: str, error: FieldError) -> str:
    line = locate(text, error.field) if error.field else None
    at = f":{line}" if line is not None else ""
    field = f"{error.field}: " if error.field else ""
    return f"{path}{at}: {field}{error.message}"


def locate(text: str, field: str) -> int | None:
    """The 1-based line of `field` (`steps[1].send.email.text`) in a TOML text: the line of
    the deepest part of the path found, each part looked for after the one before it."""
    lines = text.splitlines()
    position = 0  # index of the line the path was last found at
    best: int | None = None
    names: list[str] = []
    for segment in _SEGMENT.finditer(field):
        name, index = segment["name"], segment["index"]
        names.append(name)
        table = r"\.".join(rf"\s*(?:{re.escape(n)}|\"{re.escape(n)}\")\s*" for n in names)
        found: int | None = None
        if index is not None:
            headers = _lines(lines, position, rf"\s*\[\[{table}\]\]")
            if len(headers) > int(index):
                found = headers[int(index)]
        if found is None:
            # `[steps.send]`, or a deeper table that defines it: `[steps.send.email]`,
            # `[[steps.send.line.messages]]`
            found = next(iter(_lines(lines, position, rf"\s*\[\[?{table}[\].]")), None)
        if found is None:
            key = rf"(?:^|[{{,]|\s)(?:{re.escape(name)}|\"{re.escape(name)}\")\s*="
            found = next(iter(_lines(lines, position, key)), None)
        if found is None:
            break
        position = best = found
    return None if best is None else best + 1


def _lines(lines: list[str], start: int, pattern: str) -> list[int]:
    compiled = re.compile(pattern)
    return [i for i in range(start, len(lines)) if compiled.match(lines[i])]
