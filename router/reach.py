"""How one recipient can be reached, and the same two rules said in SQL.

A leaf module: intake, routing, audiences and the outbox all ask "can LINE / email reach this
member?", and they must all answer it the same way, so the rules live here once.
"""

from __future__ import annotations

import msgspec

DEFAULT_LINE_ACCOUNT = "default"


class LineIdentity(msgspec.Struct, frozen=True, gc=False):
    """A member's LINE identity under one LINE Official Account."""

    account: str
    user_id: str | None
    friend: bool
    opt_out: bool


class Reach(msgspec.Struct, frozen=True, gc=False):
    """How one recipient can be reached, as routing needs to know it.

    `line_user_id`, `line_friend` and `line_opt_out` are the member's identity under
    `line_account`; `line_identities` holds every account's, and `under` re-reads the
    recipient for another account (a member linked under one account is not pushed under
    another)."""

    member_id: str | None
    line_user_id: str | None
    line_friend: bool
    line_opt_out: bool
    email: str | None
    email_opt_out: bool
    phone: str | None = None
    # Email deliverability facts (router.deliverability.rules): why the address is suppressed
    # ("bounce: 550 5.1.1 ..."), whether the member's consent to promotional email is
    # recorded, and the categories they unsubscribed from.
    email_suppressed: str | None = None
    email_consent: bool = False
    email_opted_out_categories: tuple[str, ...] = ()
    # Why email may not carry *this* intent to them, set per intent by
    # `router.deliverability.rules.for_intent`: the email channel then does not reach them.
    email_refusal: str | None = None
    line_account: str = DEFAULT_LINE_ACCOUNT
    line_identities: tuple[LineIdentity, ...] = ()

    def under(self, account: str) -> Reach:
        """The same recipient as reached through the LINE account `account`."""
        if account == self.line_account:
            return self
        found = next((i for i in self.line_identities if i.account == account), None)
        return msgspec.structs.replace(
            self,
            line_account=account,
            line_user_id=None if found is None else found.user_id,
            line_friend=False if found is None else found.friend,
            line_opt_out=False if found is None else found.opt_out,
        )

    @classmethod
    def address_only(cls, email: str | None, suppressed: str | None = None) -> Reach:
        """A recipient known only by an email address: no member record."""
        return cls(
            member_id=None,
            line_user_id=None,
            line_friend=False,
            line_opt_out=False,
            email=email,
            email_opt_out=False,
            email_suppressed=suppressed,
        )

    @property
    def line_reachable(self) -> bool:
        return self.line_user_id is not None and self.line_friend and not self.line_opt_out

    @property
    def email_reachable(self) -> bool:
        return self.email is not None and not self.email_opt_out


# The same two rules for SQL over `members m` and `member_line_accounts l` (the member's
# identity under the LINE account in question, joined by `line_identity_join`; its columns
# are NULL for a member without one), so every query that counts or re-checks reachability
# (audience reports, fallbacks, the outbox at send time) says it the same way.
LINE_REACHABLE_SQL = "(l.user_id IS NOT NULL AND l.friend AND NOT l.opt_out)"
EMAIL_REACHABLE_SQL = "(m.email IS NOT NULL AND NOT m.email_opt_out)"


def line_identity_join(account_sql: str, member: str = "m") -> str:
    """`LEFT JOIN` of `member_line_accounts l`: `member`'s identity under the LINE account
    that the SQL expression `account_sql` names (`i.line_account`, a parameter)."""
    return (
        f"LEFT JOIN member_line_accounts l"
        f" ON l.member_id = {member}.member_id AND l.account = {account_sql}"
    )
