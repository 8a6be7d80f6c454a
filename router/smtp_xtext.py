"""xtext (RFC 3461 4): how SMTP's DSN parameters carry any text: printable US-ASCII but "+"
and "=" as they are, every other octet as "+" and two upper-case hex digits. Read by the
relay's listener, written by the email channel when it passes the parameters on."""

from __future__ import annotations

_HEX = frozenset("0123456789ABCDEF")


class BadParameter(ValueError):
    """A DSN parameter the relay cannot accept; str() is the SMTP reply."""


def xtext_decode(value: str, name: str) -> str:
    """`a+2Bb` -> `a+b`; a malformed xtext raises BadParameter naming `name`."""
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "+":
            code = value[i + 1 : i + 3]
            if len(code) != 2 or not set(code) <= _HEX:
                raise BadParameter(
                    f"501 5.5.4 {name}: '+' must be followed by two upper-case hex digits"
                )
            out.append(chr(int(code, 16)))
            i += 3
            continue
        if not "!" <= c <= "~" or c == "=":
            raise BadParameter(f"501 5.5.4 {name}: {c!r} is not allowed in xtext (RFC 3461)")
        out.append(c)
        i += 1
    return "".join(out)


def xtext_encode(value: str) -> str:
    """The xtext of a decoded value, to pass it on to an upstream."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in value)
