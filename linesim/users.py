"""Whose user a LINE user ID is: the provider it belongs to, across the simulator's channels.

LINE gives one person a different user ID under each provider, so a user ID a channel learnt
(a follow, a message, a follower list, a phone number, a link token) names nobody under a
channel of another provider: LINE refuses a push to it.  Channels of one provider share
their users.  A user ID no channel has learnt is taken as any channel's, as the simulator
has always taken it, so a test that names a fresh user ID need not introduce it first.
"""

from __future__ import annotations

from collections.abc import Iterable

from linesim.validation import USER_ID


def check_user_id(user_id: str) -> None:
    if USER_ID.fullmatch(user_id) is None:
        raise ValueError(f"not a LINE user ID: {user_id!r}")


class UserDirectory:
    """The user IDs each channel has learnt, and the provider each channel belongs to."""

    def __init__(self) -> None:
        self._known: dict[str, set[str]] = {}  # channel name -> user IDs it learnt
        self._provider: dict[str, str] = {}  # channel name -> provider name
        self.one_provider = True  # then no user ID can be another provider's

    def add_channel(self, channel: str, provider: str) -> ChannelUsers:
        self._known[channel] = set()
        self._provider[channel] = provider
        self.one_provider = len(set(self._provider.values())) == 1
        return ChannelUsers(self, channel, provider)

    def remove_channel(self, channel: str) -> None:
        self._known.pop(channel, None)
        self._provider.pop(channel, None)
        self.one_provider = len(set(self._provider.values())) <= 1

    def provider_of(self, user_id: str) -> str | None:
        """The provider whose channel learnt ``user_id``, or None while no channel did."""
        for channel, known in self._known.items():
            if user_id in known:
                return self._provider[channel]
        return None

    def learn(self, channel: str, user_ids: Iterable[str]) -> None:
        """``channel`` has these users; ValueError, learning none, if one is not a LINE
        user ID or is another provider's."""
        known = self._known[channel]
        provider = self._provider[channel]
        new = [user_id for user_id in dict.fromkeys(user_ids) if user_id not in known]
        for user_id in new:
            check_user_id(user_id)
            owner = self.provider_of(user_id)
            if owner is not None and owner != provider:
                raise ValueError(
                    f"{user_id} is a user of provider {owner!r}, not of {provider!r}:"
                    " LINE user IDs differ per provider"
                )
        known.update(new)

    def forget(self, channel: str) -> None:
        self._known[channel].clear()


class ChannelUsers:
    """One channel's view of the directory: what its areas ask and tell."""

    __slots__ = ("_channel", "_directory", "provider")

    def __init__(self, directory: UserDirectory, channel: str, provider: str) -> None:
        self._directory = directory
        self._channel = channel
        self.provider = provider

    def learn(self, *user_ids: str) -> None:
        """This channel has these users (ValueError: one is another provider's)."""
        self._directory.learn(self._channel, user_ids)

    def learn_all(self, user_ids: Iterable[str]) -> None:
        self._directory.learn(self._channel, user_ids)

    def foreign(self, user_id: str) -> bool:
        """Whether ``user_id`` is a user of another provider, so names nobody here."""
        if self._directory.one_provider:
            return False
        owner = self._directory.provider_of(user_id)
        return owner is not None and owner != self.provider

    def forget(self) -> None:
        """Forget the users this channel learnt (its reset)."""
        self._directory.forget(self._channel)
