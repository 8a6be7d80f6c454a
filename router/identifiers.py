"""Validation and normalisation of the identifiers a member can be reached by.

Normalised forms are what the router stores and hashes: an email address trimmed with its
domain lower-cased (matching lower-cases the whole address), a phone number in E.164, a
LINE user ID as LINE issues it (`U` + 32 lower-case hex digits).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

import msgspec
import phonenumbers

# RFC 5322 addr-spec without obsolete forms and comments: dot-atom or quoted-string local
# part, dot-atom or domain-literal domain. RFC 5321 caps the local part at 64 octets and
# the path at 256, so an address is at most 254 characters.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_DOMAIN_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]*\]"
_ADDR_SPEC = re.compile(
    rf"(?P<local>{_DOT_ATOM}|{_QUOTED})@(?P<domain>{_DOT_ATOM}|{_DOMAIN_LITERAL})"
)
LINE_USER_ID = re.compile(r"U[0-9a-f]{32}")
MAX_MEMBER_ID = 255
MAX_EMAIL = 254


def documented(**keywords: Any) -> msgspec.Meta:
    """JSON Schema keywords for the API document only: the rule is checked by code (which
    reports every bad field at once, where msgspec stops at the first)."""
    return msgspec.Meta(extra_json_schema={"extra": keywords})


RESERVED_MEMBER_IDS = (".", "..", "batch")
"""Path segments that never reach `/v1/members/{member_id}` as an id: clients resolve the dot
segments away, and `batch` is the batch route."""
_EDGE = r"[^\s/\x00-\x1f\x7f-\x9f]"
_INNER = r"[^/\x00-\x1f\x7f-\x9f]"
_RESERVED = "|".join(re.escape(segment) for segment in RESERVED_MEMBER_IDS)
# `(?![^\n]*\n)`: Python's `$` also matches before a final line break.
MEMBER_ID_PATTERN = rf"^(?![^\n]*\n)(?!(?:{_RESERVED})$){_EDGE}(?:{_INNER}*{_EDGE})?$"
"""The member ID alphabet, the one definition: any character but '/' and control characters,
no whitespace at either end, not a reserved segment. Every such ID can be written in the path
of `/v1/members/{member_id}` (percent-encoded where needed), so every member can be read,
updated and erased. The same regex in Python and in the OpenAPI document."""
MEMBER_ID = re.compile(MEMBER_ID_PATTERN)
MEMBER_ID_RULE = (
    f"a member ID is 1 to {MAX_MEMBER_ID} characters: no '/', no control characters, no "
    "whitespace at either end, and not '.', '..' or 'batch'"
)
MemberId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_MEMBER_ID,
        pattern=MEMBER_ID_PATTERN,
        description="The company's own id for the member: "
        + MEMBER_ID_RULE.removeprefix("a member ID is "),
    ),
]
LineUserId = Annotated[str, documented(pattern=f"^{LINE_USER_ID.pattern}$")]
LineAccountName = Annotated[
    str,
    msgspec.Meta(
        pattern="^[a-z][a-z0-9_-]{0,31}$",
        description="A LINE Official Account configured on the router ([line.accounts.<name>];"
        ' "default" is the [line] section).',
    ),
]
EmailAddress = Annotated[
    str,
    documented(
        format="email",
        maxLength=MAX_EMAIL,
        description="An RFC 5322 addr-spec whose domain has a dot (or is a literal)",
    ),
]
PhoneNumber = Annotated[
    str,
    documented(
        format="phone",
        description="A phone number that reaches one phone: E.164, or national in"
        " `[members] default_region`",
    ),
]


class InvalidIdentifier(ValueError):
    """The value is not a valid identifier of its kind; the message says why."""


def normalize_email(value: str) -> str:
    """Validate an RFC 5322 addr-spec and return it trimmed, with the domain lower-cased."""
    address = value.strip()
    if len(address) > MAX_EMAIL:
        raise InvalidIdentifier(f"an email address is at most {MAX_EMAIL} characters")
    match = _ADDR_SPEC.fullmatch(address)
    if match is None:
        raise InvalidIdentifier("not an email address (RFC 5322 addr-spec, like name@example.com)")
    local, domain = match.group("local"), match.group("domain")
    if len(local) > 64:
        raise InvalidIdentifier("the part before @ is at most 64 characters")
    if not domain.startswith("[") and "." not in domain:
        raise InvalidIdentifier("the domain must have at least one dot, like example.com")
    return f"{local}@{domain.lower()}"


def email_sha256(address: str) -> bytes:
    """Hash used for matching and audiences: SHA-256 of the trimmed, lower-cased address."""
    return hashlib.sha256(address.strip().lower().encode()).digest()


def normalize_phone(value: str, default_region: str) -> str:
    """Parse a phone number (national numbers in `default_region`) and return E.164."""
    try:
        parsed = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifier(f"not a phone number: {exc}") from None
    if parsed.extension:
        # E.164 has no extensions: dropping it would quietly make this another line's number.
        raise InvalidIdentifier(
            "a phone number with an extension cannot be used; give a number that reaches one "
            "phone (a mobile number, for LINE notification messages)"
        )
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidIdentifier(
            f"not a valid phone number (national numbers are read as region {default_region})"
        )
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def phone_sha256(e164: str) -> bytes:
    return hashlib.sha256(e164.encode()).digest()


def phone_sha256_hex(e164: str) -> str:
    """How LINE notification messages address a user: lower-case hex SHA-256 of E.164."""
    return hashlib.sha256(e164.encode()).hexdigest()


def check_line_user_id(value: str) -> str:
    if not LINE_USER_ID.fullmatch(value):
        raise InvalidIdentifier("a LINE user ID is 'U' followed by 32 lower-case hex digits")
    return value
