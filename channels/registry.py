"""Builds the channels this router is configured for. The one place adapters are named."""

from __future__ import annotations

from channels.base import Channel
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
