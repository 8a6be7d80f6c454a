"""The LINE aggregation unit a campaign's messages are counted under.

LINE counts impressions, clicks and media plays of pushes and multicasts per
`customAggregationUnits` name (messaging-api.yml: at most one per request, 1 to 30 of
`[a-zA-Z0-9_]`, case-sensitive) and reports them per unit (the insight API's statistics per
unit). Each campaign gets one unit: the name its request gives, or one derived from its id,
so the same campaign always has the same unit and two campaigns never share one.
"""

from __future__ import annotations

from typing import Annotated, Final
from uuid import UUID

import msgspec

UNIT_PATTERN: Final = r"^[a-zA-Z0-9_]{1,30}$"
UnitName = Annotated[
    str,
    msgspec.Meta(
        pattern=UNIT_PATTERN,
        description="LINE aggregation unit: 1 to 30 letters, digits or underscores"
        " (case-sensitive); default: c_ and the campaign id in base 36",
    ),
]
_DIGITS: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_ID_DIGITS: Final = 25  # 36**25 > 2**128: every UUID fits


def derived_unit(campaign_id: UUID) -> str:
    """`c_` and the id's 128 bits in base 36, 27 characters: valid for LINE, one per id."""
    value = campaign_id.int
    digits = []
    for _ in range(_ID_DIGITS):
        value, digit = divmod(value, 36)
        digits.append(_DIGITS[digit])
    return "c_" + "".join(reversed(digits))
