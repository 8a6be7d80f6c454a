"""Every rule of the delivery path that differs by channel, read from the channels' descriptors.

The queue core, the dispatchers and the store name no channel: what differs per channel —
who may still be reached when a delivery is first sent, how a fallback is addressed, which
deliveries count only once the provider confirms them, which address an event reports and
which channel sends a relayed message's own bytes — is asked of `channels.registry` here and
spelled as SQL from the descriptors' constant fragments. Rules are read when a statement is
first needed, so a channel registered before the router starts is covered like the built-in ones.
"""

from __future__ import annotations

from channels import registry
from channels.base import ChannelDescriptor


def _known(channel: str) -> ChannelDescriptor | None:
    return next((d for d in registry.descriptors() if d.name == channel), None)


def still_reachable(channel: str, attempts: str = "d.attempts") -> str:
    """Whether a delivery of `channel` may still go out, as SQL over `deliveries d` and
    `members m` (the member as they are now): a campaign scheduled for tomorrow must not reach
    someone who opts out tonight. A delivery already attempted is left to finish what it
    started (its retry key makes the resend safe; withholding it could not recall a message
    the provider already took), and a recipient without a member record has nothing to
    re-check. `attempts`: the SQL of the attempts counted with this claim (a grouped
    delivery's are its group's)."""
    descriptor = _known(channel)
    rule = "true" if descriptor is None else descriptor.recheck_sql
    return f"({attempts} > 1 OR m.member_id IS NULL OR coalesce({rule}, false))"


def refusal(channel: str) -> str:
    """Why a delivery of `channel` may not go out although the recipient is reachable, as
    SQL over `deliveries d`, `intents i` and `members m` yielding a reason or NULL (a
    suppressed address, a category unsubscribed from); asked at every attempt."""
    descriptor = _known(channel)
    if descriptor is None or descriptor.refusal_sql is None:
        return "NULL::text"
    return descriptor.refusal_sql


def not_reachable_now(channel: str) -> tuple[str, bool]:
    """Why a delivery found unreachable at send time is not sent, and whether the intent's
    fallback may carry it instead."""
    descriptor = _known(channel)
    if descriptor is None:
        return "not sent: the channel is no longer registered", True
    return descriptor.left_since, descriptor.fallback_when_left


def _by_fallback(value: str, of: str = "i.fallback") -> str:
    """SQL choosing, per intent's fallback channel, the fragment `value` formats."""
    whens = " ".join(f"WHEN '{d.name}' THEN {value.format(d=d)}" for d in registry.descriptors())
    return f"CASE {of} {whens} END"


def fallback_address_sql() -> str:
    """A fallback delivery's address, from the member as they are now (over `intents i` and
    `members m`): an address removed since acceptance is not used."""
    return _by_fallback("{d.address_sql}")


def fallback_reachable_sql() -> str:
    """Whether the member can be reached on the intent's fallback channel now."""
    return f"coalesce({_by_fallback('{d.reachable_sql}')}, false)"


def fallback_refused_sql() -> str:
    """Why no fallback was made for a member the fallback channel does not reach."""
    return _by_fallback(
        "CASE WHEN {d.address_sql} IS NULL"
        " THEN 'no {d.name} fallback: the member has no {d.address_noun}'"
        " ELSE 'no {d.name} fallback: the member opted out of {d.name}' END"
    )


def confirmed_by_provider() -> list[str]:
    """Channels whose 'sent' means only that the provider took the request: their messages
    count as delivered when it confirms them (LINE notification messages)."""
    return [d.name for d in registry.descriptors() if d.confirmed_by_provider]


def confirmed_response(channel: str) -> str:
    """The response a confirmed delivery's `delivered` event reports."""
    descriptor = _known(channel)
    provider = (
        descriptor.provider if descriptor is not None and descriptor.provider else "the provider"
    )
    return f"confirmed by {provider}'s delivery event"


def unconfirmed_error_sql() -> str:
    """The error of a delivery that needed a confirmation and got none within $1 seconds, as
    SQL over `deliveries` (its `channel`)."""
    return _by_fallback(
        "'{d.provider} sent no delivery event within ' || $1::text"
        " || ' s: counted as not delivered'",
        of="channel",
    )


def _email_channels() -> str:
    names = ", ".join(f"'{d.name}'" for d in registry.descriptors() if d.address_is_email)
    return f"ARRAY[{names}]::text[]"


def event_email_sql(delivery: str = "d") -> str:
    """The address a delivery event reports (over the delivery `delivery`, `intents i`,
    `members m`): the delivery's own when it is an email address, otherwise the intent's
    recipient address, otherwise the member's."""
    return (
        f"CASE WHEN {delivery}.channel = ANY({_email_channels()}) THEN {delivery}.address"
        " ELSE coalesce(i.email_address, m.email) END"
    )


def smtp_id_sql() -> str:
    """SendGrid's `smtp-id` of an event (over `delivery_events e`, `deliveries d`): the
    Message-ID, which is the provider reference of a channel that sends email."""
    return f"CASE WHEN e.channel = ANY({_email_channels()}) THEN nullif(d.provider_ref, '') END"


def sends_relayed_bytes(channel: str) -> bool:
    """Whether the channel sends a relayed message's original bytes (DKIM intact)."""
    descriptor = _known(channel)
    return descriptor is not None and descriptor.sends_relayed
