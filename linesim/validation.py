"""Request checking every LINE endpoint shares, with LINE's error wording.

LINE answers a bad request 400 with ``{"message": "The request body has N error(s)",
"details": [{"message", "property"}]}``, names the line and column of unparsable JSON, and
refuses bodies that are not ``application/json``.  Every area decodes through
:func:`decode_json` so a client's error handling sees the same shapes whichever endpoint it
called.  A check that fails raises :class:`Refusal`, which the request's handler answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, TypeVar

import msgspec

from linesim.paths import RETRY_KEY_HEADER
from linesim.schemas import MESSAGE_TYPES, ErrorDetail, ErrorResponse, encode

USER_ID: Final = re.compile(r"U[0-9a-f]{32}")
_ERROR_AT: Final = re.compile(r"(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_MISSING_FIELD: Final = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_BYTE_OFFSET: Final = re.compile(r"\(byte (?P<offset>\d+)\)")

UNAUTHORIZED: Final = encode(
    ErrorResponse(
        message=(
            "Authentication failed. "
            "Confirm that the access token in the authorization header is valid."
        )
    )
)
TOO_MANY_REQUESTS: Final = encode(ErrorResponse(message="Too many requests"))
TOO_LARGE: Final = encode(ErrorResponse(message="The request body exceeds the maximum size of 2MB"))
RETRY_KEY_NOT_SUPPORTED: Final = encode(
    ErrorResponse(
        message="The retry key is not supported by this API",
        details=[ErrorDetail(message="Must not be specified", property=RETRY_KEY_HEADER)],
    )
)
EMPTY_OBJECT: Final = b"{}"

_T = TypeVar("_T")


class Refusal(Exception):
    """An API request answered with an error status instead of being carried out."""

    def __init__(self, status: int, body: bytes, accepted_request_id: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.accepted_request_id = accepted_request_id


def utf16_length(text: str) -> int:
    """Length as LINE counts it: UTF-16 code units, so an emoji outside the BMP counts 2."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def check_size(details: list[ErrorDetail], count: int, low: int, high: int, prop: str) -> None:
    """LINE's detail for a list with too few or too many entries."""
    if not low <= count <= high:
        details.append(ErrorDetail(message=f"Size must be between {low} and {high}", property=prop))


def check_length(details: list[ErrorDetail], text: str, high: int, prop: str) -> None:
    """LINE's detail for a text that is empty or longer than ``high`` UTF-16 code units."""
    if not 1 <= utf16_length(text) <= high:
        details.append(ErrorDetail(message=f"Length must be between 1 and {high}", property=prop))


def bad_request(details: list[ErrorDetail]) -> bytes:
    return encode(
        ErrorResponse(message=f"The request body has {len(details)} error(s)", details=details)
    )


def _parse_error(body: bytes, error: msgspec.DecodeError) -> bytes:
    """LINE's message for unparsable JSON names the line and column of the fault."""
    found = _BYTE_OFFSET.search(str(error))
    offset = int(found["offset"]) if found else len(body)
    offset = min(offset, len(body))
    line = body.count(b"\n", 0, offset) + 1
    column = offset - (body.rfind(b"\n", 0, offset) + 1) + 1
    return encode(
        ErrorResponse(
            message=f"The request body could not be parsed as JSON (line: {line}, column: {column})"
        )
    )


def _validation_detail(error: msgspec.ValidationError) -> ErrorDetail:
    """Turn msgspec's "<problem> - at `$.a[0].b`" into a detail naming the property."""
    found = _ERROR_AT.fullmatch(str(error))
    text = found["text"] if found else str(error)
    path = (found["path"] or "") if found else ""
    path = path.removeprefix(".")
    missing = _MISSING_FIELD.fullmatch(text)
    if missing is not None:
        field = missing["field"]
        return ErrorDetail(
            message="Must be specified", property=f"{path}.{field}" if path else field
        )
    if text.startswith("Invalid value") and path.endswith("type"):
        text = f"Must be one of the following values: [{MESSAGE_TYPES}]"
    if not path:
        return ErrorDetail(message=text)
    return ErrorDetail(message=text, property=path)


def decode_json(
    content_type: str,
    raw: bytes,
    decoder: msgspec.json.Decoder[_T],
    check: Callable[[_T], list[ErrorDetail]],
) -> _T:
    """The request body as ``decoder``'s type, refused 400 the way LINE words it when the
    content type is not JSON, the JSON does not parse or fit, or ``check`` finds faults."""
    if content_type.partition(";")[0].strip().lower() != "application/json":
        message = f"The content type, {content_type!r}, is not supported"
        raise Refusal(400, encode(ErrorResponse(message=message)))
    try:
        parsed = decoder.decode(raw)
    except msgspec.ValidationError as error:
        raise Refusal(400, bad_request([_validation_detail(error)])) from None
    except msgspec.DecodeError as error:
        raise Refusal(400, _parse_error(raw, error)) from None
    details = check(parsed)
    if details:
        raise Refusal(400, bad_request(details))
    return parsed
