"""The relay's SMTP dialogue: aiosmtpd's server, with what mail systems expect of a relay.

- EHLO offers PIPELINING (commands are read in order from one buffer, so a client may send
  MAIL, RCPT... DATA at once) and ENHANCEDSTATUSCODES: every reply but the greeting and the
  EHLO/HELO answer carries an RFC 3463 code, a default one where aiosmtpd gives none.
- SMTPUTF8 is not offered: a MAIL or RCPT with a non-ASCII address is refused with
  `553 5.6.7` and one with the SMTPUTF8 parameter with `555 5.5.4` (RFC 6531), instead of
  aiosmtpd's `500 strict ASCII mode`. Members' addresses are ASCII, and so is what the
  router can send on.
- AUTH guessing is limited (router.ingress.smtp_auth): after `auth_attempts` failures on a
  connection the answer is `421 4.7.0` and the connection is closed; an address that must
  wait is answered `454 4.7.0` without its password being checked.
- DSN (RFC 3461) is offered: MAIL's RET and ENVID and RCPT's NOTIFY and ORCPT are read
  (router.ingress.smtp_dsn) before aiosmtpd sees the command, which would refuse them, and
  kept on the envelope (`RelayEnvelope`); a malformed one is answered `501 5.5.4`.
- With `open_domain` (the bounce domain, whose MX this listener is), a client that has not
  authenticated may still send MAIL, RCPT to addresses at that domain, and DATA: any other
  recipient gets the usual `530 5.7.0` answer.
"""

from __future__ import annotations

import math
import re
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from router.content import RelayRecipient
from router.ingress.smtp_auth import AuthGuard, Credentials
from router.ingress.smtp_dsn import MailParameters, mail_parameters, rcpt_parameters
from router.smtp_xtext import BadParameter

# The enhanced code a reply gets when aiosmtpd's text has none (RFC 3463, RFC 5248).
DEFAULT_ENHANCED = {
    421: "4.7.0",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.1.1",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.6.0",
    555: "5.5.4",
}
_FINAL_REPLY = re.compile(r"(?P<code>[245]\d\d)(?P<sep>[ -]|$)(?P<text>.*)", re.DOTALL)
_HAS_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")

ADDED_KEYWORDS = ("PIPELINING", "ENHANCEDSTATUSCODES", "DSN")
WITHHELD_KEYWORDS = frozenset({"SMTPUTF8"})


def with_enhanced_code(reply: str) -> str:
    """`503 Error: need MAIL command` -> `503 5.5.1 Error: need MAIL command`; replies that
    have a code, and intermediate ones (334, 354), are left as they are."""
    m = _FINAL_REPLY.fullmatch(reply)
    if m is None or _HAS_ENHANCED.match(m["text"]):
        return reply
    code = int(m["code"])
    enhanced = DEFAULT_ENHANCED.get(code, f"{m['code'][0]}.0.0")
    return f"{m['code']}{m['sep'] or ' '}{enhanced} {m['text']}".rstrip()


def ehlo_lines(lines: list[str]) -> list[str]:
    """aiosmtpd's EHLO answer with PIPELINING, ENHANCEDSTATUSCODES and DSN added and SMTPUTF8
    taken out, continuation marks redone."""
    words = [line[4:] for line in lines]
    kept = [w for w in words if w.split(" ", 1)[0].upper() not in WITHHELD_KEYWORDS]
    kept[1:1] = ADDED_KEYWORDS
    return [f"250-{w}" for w in kept[:-1]] + [f"250 {kept[-1]}"]


def utf8_refusal(arg: str | None, role: str) -> str | None:
    """The refusal of a MAIL/RCPT argument that needs SMTPUTF8, or None."""
    if arg is None:
        return None
    if any(word.upper() == "SMTPUTF8" for word in arg.split()[1:]):
        return "555 5.5.4 SMTPUTF8 is not offered by this relay"
    if not arg.isascii():
        return f"553 5.6.7 non-ASCII {role} addresses are not accepted (no SMTPUTF8)"
    return None


class RelayEnvelope(Envelope):
    """aiosmtpd's envelope with the DSN parameters of its MAIL and of each accepted RCPT
    (by the address the handler appended to `rcpt_tos`)."""

    def __init__(self) -> None:
        super().__init__()
        self.dsn = MailParameters()
        self.rcpt_dsn: dict[str, RelayRecipient] = {}


def split_parameters(keyword: str, arg: str, strip: Any, getaddr: Any) -> tuple[str, list[str]]:
    """`FROM:<a@b> RET=HDRS SIZE=9` -> (`FROM:<a@b>`, [`RET=HDRS`, `SIZE=9`]), the case of the
    values kept (aiosmtpd upper-cases them, and xtext is case-sensitive). An argument it cannot
    read is returned whole, for aiosmtpd to refuse as it does."""
    stripped = strip(keyword, arg)
    if stripped is None:
        return arg, []
    address, params = getaddr(stripped)
    if not address or not params:
        return arg, []
    head = arg[: len(arg) - len(params)].rstrip()
    return head, params.split()


class RelaySMTP(SMTP):
    """One connection to the relay."""

    def __init__(
        self,
        handler: Any,
        *,
        credentials: Credentials,
        guard: AuthGuard,
        open_domain: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Arguments are read as UTF-8 so that a non-ASCII address reaches the checks below
        # (and is refused with the right code); SMTPUTF8 itself is never offered.
        super().__init__(handler, authenticator=self._check_login, enable_SMTPUTF8=True, **kwargs)
        self._credentials = credentials
        self._guard = guard
        self._auth_failures = 0
        self._login: LoginPassword | None = None
        self._greeted = False
        self._plain_replies = False  # the EHLO/HELO answer carries no enhanced codes
        self._ehlo_answer: list[str] | None = None
        self._open_domain = open_domain
        self._rcpt_is_open = False  # the RCPT being read names an address at open_domain

    async def push(self, status: AnyStr) -> None:
        if not isinstance(status, str):
            await super().push(status)  # a 334 challenge
            return
        if self._ehlo_answer is not None:
            self._ehlo_answer.append(status)
            return
        reply = status
        if self._greeted and not self._plain_replies:
            reply = with_enhanced_code(status)
        self._greeted = True
        await super().push(reply)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._ehlo_answer = []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            lines, self._ehlo_answer = self._ehlo_answer, None
        if lines and lines[0].startswith("250"):
            lines = ehlo_lines(lines)
        self._plain_replies = True
        try:
            for line in lines:
                await self.push(line)
        finally:
            self._plain_replies = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._plain_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._plain_replies = False

    def _create_envelope(self) -> RelayEnvelope:
        return RelayEnvelope()

    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._refuse_utf8_or(self._mail_with_dsn, arg, "MAIL", "sender")

    async def smtp_RCPT(self, arg: str | None) -> None:
        self._rcpt_is_open = self._names_open_domain(arg)
        try:
            await self._refuse_utf8_or(self._rcpt_with_dsn, arg, "RCPT", "recipient")
        finally:
            self._rcpt_is_open = False

    def _reads_parameters(self) -> bool:
        """Parameters come only after EHLO; after HELO aiosmtpd refuses any, DSN's too."""
        return self.session is not None and bool(self.session.extended_smtp)

    async def _mail_with_dsn(self, arg: str | None) -> None:
        if arg is None or self.envelope is None or not self._reads_parameters():
            await super().smtp_MAIL(arg)
            return
        head, params = split_parameters("FROM:", arg, self._strip_command_keyword, self._getaddr)
        try:
            dsn, rest = mail_parameters(params)
        except BadParameter as exc:
            await self.push(str(exc))
            return
        if not params:
            await super().smtp_MAIL(arg)
            return
        nested = bool(self.envelope.mail_from)  # refused by aiosmtpd: keeps the first MAIL's
        await super().smtp_MAIL(" ".join([head, *rest]))
        envelope = self.envelope
        if isinstance(envelope, RelayEnvelope) and envelope.mail_from and not nested:
            envelope.dsn = dsn

    async def _rcpt_with_dsn(self, arg: str | None) -> None:
        envelope = self.envelope
        if arg is None or not isinstance(envelope, RelayEnvelope) or not self._reads_parameters():
            await super().smtp_RCPT(arg)
            return
        head, params = split_parameters("TO:", arg, self._strip_command_keyword, self._getaddr)
        try:
            dsn, rest = rcpt_parameters(params)
        except BadParameter as exc:
            await self.push(str(exc))
            return
        if dsn is None:
            await super().smtp_RCPT(arg)
            return
        before = len(envelope.rcpt_tos)
        await super().smtp_RCPT(" ".join([head, *rest]))
        if len(envelope.rcpt_tos) > before:
            envelope.rcpt_dsn[envelope.rcpt_tos[-1]] = dsn

    def _names_open_domain(self, arg: str | None) -> bool:
        if self._open_domain is None or arg is None:
            return False
        stripped = self._strip_command_keyword("TO:", arg)
        if stripped is None:
            return False
        address, _ = self._getaddr(stripped)
        return bool(address) and str(address).rpartition("@")[2].lower() == self._open_domain

    async def check_auth_needed(self, caller_method: str) -> bool:
        """Mail to the open domain needs no AUTH: MAIL and DATA are let through (an
        unauthenticated envelope can only hold recipients there), RCPT only for them."""
        if self._open_domain is not None and (
            caller_method in ("MAIL", "DATA") or (caller_method == "RCPT" and self._rcpt_is_open)
        ):
            return False
        return await super().check_auth_needed(caller_method)

    async def _refuse_utf8_or(self, command: Any, arg: str | None, name: str, role: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed(name):
            return
        refusal = utf8_refusal(arg, role)
        if refusal is not None:
            await self.push(refusal)
            return
        await command(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        await super().smtp_AUTH(arg)
        if self._auth_failures >= self._guard.attempts and self.transport is not None:
            self.transport.close()

    # aiosmtpd calls its authenticator synchronously, and scrypt must not run on the event
    # loop: the authenticator only keeps what the client sent, and the mechanisms, once
    # aiosmtpd has read it, await the check.
    def _check_login(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            self._login = data
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_PLAIN(server, args))

    async def auth_LOGIN(self, server: Any, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_LOGIN(server, args))

    async def _checked(self, read: AuthResult) -> AuthResult:
        """The answer to the login `_check_login` kept; `read` if the client sent none."""
        login, self._login = self._login, None
        if login is None:
            return read
        host = str(self.session.peer[0]) if self.session and self.session.peer else "unknown"
        async with self._guard.turn(host):
            wait = self._guard.wait_left(host)
            if wait > 0:
                self._auth_failures += 1
                return AuthResult(
                    success=False,
                    handled=False,
                    message=self._over_limit()
                    or f"454 4.7.0 too many failed AUTH attempts from your address;"
                    f" try again in {math.ceil(wait)} s",
                )
            user = login.login.decode("utf-8", "replace")
            password = login.password.decode("utf-8", "replace")
            if await self._credentials.check(user, password):
                self._guard.succeeded(host)
                return AuthResult(success=True, auth_data=user)
            self._auth_failures += 1
            self._guard.failed(
                host, self._credentials.safe_name(user), on_connection=self._auth_failures
            )
        return AuthResult(success=False, handled=False, message=self._over_limit())

    def _over_limit(self) -> str | None:
        if self._auth_failures < self._guard.attempts:
            return None
        return "421 4.7.0 too many failed AUTH attempts; closing the connection"


def _keep_help(cls: type) -> None:
    """The overridden commands keep aiosmtpd's HELP texts (set by its `syntax` decorator)."""
    for name, method in vars(cls).items():
        if name.startswith("smtp_"):
            parent = getattr(SMTP, name)
            for attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
                if hasattr(parent, attr):
                    setattr(method, attr, getattr(parent, attr))


_keep_help(RelaySMTP)
