"""Builds the channels this router is configured for. The one place adapters are named."""

from __future__ import annotations

from channels.base import Channel, LineAccount
from router.config import Config


def build_channels(config: Config) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    if config.line_configured:
        from channels.line.push import LinePushChannel

        channels["line"] = LinePushChannel(config.line)
    if config.email_configured:
        from channels.email import SmtpChannel

        channels["email"] = SmtpChannel(config.email)
    return channels


def build_line_account(config: Config) -> LineAccount | None:
    if not config.line_configured:
        return None
    from channels.line.account import LineAccountApi

    return LineAccountApi(config.line)
