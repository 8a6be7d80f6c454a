"""How one recipient can be reached, and the same two rules said in SQL.

A leaf module: intake, routing, audiences and the outbox all ask "can LINE / email reach this
member?", and they must all answer it the same way, so the rules live here once.
"""

from __future__ import annotations

import msgspec


class Reach(msgspec.Struct, frozen=True, gc=False):
    """How one recipient can be reached, as routing needs to know it."""

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


# The same two rules for SQL over `members m`, so every query that counts or re-checks
# reachability (audience reports, fallbacks, the outbox at send time) says it the same way.
LINE_REACHABLE_SQL = "(m.line_user_id IS NOT NULL AND m.line_friend AND NOT m.line_opt_out)"
EMAIL_REACHABLE_SQL = "(m.email IS NOT NULL AND NOT m.email_opt_out)"
