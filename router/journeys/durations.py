"""ISO 8601 durations as journeys write them: `PT1H`, `P1D`, `P2W`, `P1DT12H30M`, `PT90S`.

Only units of fixed length are taken: weeks, days, hours, minutes and seconds, in whole
numbers. Years and months are refused (a month is 28 to 31 days: write the days), and so are
fractions ("PT0.5H": write PT30M) and signs, so that every duration means one exact length.
A day is 24 hours: "P1D" is the same instant next day except across a daylight-saving change.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?"
)
_EXAMPLES = "e.g. PT30S, PT15M, PT1H, P1D, P2W or P1DT12H"


class DurationError(ValueError):
    """Text that is not a duration this router takes; the message says why."""


def parse_duration(text: str) -> timedelta:
    """The length `text` names; `DurationError` saying what is wrong otherwise."""
    if not isinstance(text, str) or not text:
        raise DurationError(f"give an ISO 8601 duration ({_EXAMPLES})")
    match = _DURATION.fullmatch(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise DurationError(_why_not(text))
    parts = {unit: int(value) for unit, value in match.groupdict().items() if value is not None}
    try:
        return timedelta(**parts)
    except OverflowError:
        raise DurationError(f"{text!r} is longer than any wait this router can keep") from None


def _why_not(text: str) -> str:
    """The most specific reason `text` is refused."""
    shown = repr(text) if len(text) <= 40 else repr(text[:40] + "...")
    if text != text.upper() and _DURATION.fullmatch(text.upper()):
        return f"{shown}: write the letters in capitals ({text.upper()})"
    if not text.startswith("P"):
        return f"{shown} is not an ISO 8601 duration: it starts with P ({_EXAMPLES})"
    if re.search(r"[.,]\d", text):
        return f"{shown}: whole numbers only (write PT30M, not PT0.5H)"
    if text.startswith(("P-", "P+")) or "-" in text:
        return f"{shown}: a duration has no sign"
    date_part = text[1:].partition("T")[0]
    if "Y" in date_part or "M" in date_part:
        return (
            f"{shown}: years and months have no fixed length; give days instead (P30D, P365D);"
            " M after T means minutes (PT30M)"
        )
    if text in ("P", "PT") or text.endswith("T"):
        return f"{shown} names no length ({_EXAMPLES})"
    return f"{shown} is not an ISO 8601 duration ({_EXAMPLES}; units in the order W D T H M S)"
