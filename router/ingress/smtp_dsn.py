"""The DSN extension's parameters (RFC 3461) as the relay reads them from MAIL and RCPT.

MAIL FROM takes `RET=FULL|HDRS` and `ENVID=<xtext>`, RCPT TO takes
`NOTIFY=NEVER|SUCCESS,FAILURE,DELAY` and `ORCPT=<addr-type>;<xtext>`. Values are decoded here
(xtext: printable ASCII but "+" and "=", with "+XX" for any other octet), so a malformed one is
refused at the command with a `501` that names the parameter and what is wrong with it.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from router.content import RelayRecipient
from router.smtp_xtext import BadParameter, xtext_decode

MAX_ENVID = 100  # RFC 3461 4.4
MAX_ORCPT = 500  # RFC 3461 4.2
NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")  # an atom (RFC 5322)


class MailParameters(msgspec.Struct, frozen=True):
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None


def _split(params: list[str], names: frozenset[str]) -> tuple[dict[str, str], list[str]]:
    """The DSN parameters among `params` by upper-case name, and the others as given."""
    found: dict[str, str] = {}
    rest: list[str] = []
    for param in params:
        key, eq, value = param.partition("=")
        upper = key.upper()
        if upper not in names:
            rest.append(param)
            continue
        if upper in found:
            raise BadParameter(f"501 5.5.4 {upper} given twice")
        if not eq or not value:
            raise BadParameter(f"501 5.5.4 {upper} needs a value")
        found[upper] = value
    return found, rest


def mail_parameters(params: list[str]) -> tuple[MailParameters, list[str]]:
    """RET and ENVID from MAIL FROM's parameters; the other parameters, untouched."""
    found, rest = _split(params, frozenset({"RET", "ENVID"}))
    ret: Literal["FULL", "HDRS"] | None = None
    given = found.get("RET")
    if given is not None:
        if given.upper() == "FULL":
            ret = "FULL"
        elif given.upper() == "HDRS":
            ret = "HDRS"
        else:
            raise BadParameter("501 5.5.4 RET must be FULL or HDRS")
    envid = found.get("ENVID")
    if envid is not None:
        if len(envid) > MAX_ENVID:
            raise BadParameter(f"501 5.5.4 ENVID is longer than {MAX_ENVID} characters")
        envid = xtext_decode(envid, "ENVID")
        if not all(" " <= c <= "~" for c in envid):
            raise BadParameter("501 5.5.4 ENVID must decode to printable US-ASCII")
    return MailParameters(ret=ret, envid=envid), rest


def rcpt_parameters(params: list[str]) -> tuple[RelayRecipient | None, list[str]]:
    """NOTIFY and ORCPT from RCPT TO's parameters (None when neither was given); the other
    parameters, untouched."""
    found, rest = _split(params, frozenset({"NOTIFY", "ORCPT"}))
    if not found:
        return None, rest
    notify: list[str] | None = None
    if "NOTIFY" in found:
        words = found["NOTIFY"].upper().split(",")
        if words == ["NEVER"]:
            notify = words
        elif not words or not set(words) <= NOTIFY_WORDS or len(set(words)) != len(words):
            raise BadParameter(
                "501 5.5.4 NOTIFY must be NEVER, or SUCCESS, FAILURE and DELAY joined by commas"
            )
        else:
            notify = sorted(words)
    orcpt: str | None = None
    if "ORCPT" in found:
        raw = found["ORCPT"]
        if len(raw) > MAX_ORCPT:
            raise BadParameter(f"501 5.5.4 ORCPT is longer than {MAX_ORCPT} characters")
        addr_type, semicolon, address = raw.partition(";")
        if not semicolon or not _ADDR_TYPE.fullmatch(addr_type) or not address:
            raise BadParameter("501 5.5.4 ORCPT must be <addr-type>;<xtext address>")
        decoded = xtext_decode(address, "ORCPT")
        if not decoded.isascii() or not decoded.isprintable():
            raise BadParameter("501 5.5.4 ORCPT must decode to printable US-ASCII")
        orcpt = f"{addr_type};{decoded}"
    return RelayRecipient(notify=notify, orcpt=orcpt), rest
