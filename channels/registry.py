"""Builds the channels and LINE account this router is configured for. The one place adapters
are named."""

from __future__ import annotations

from channels.base import Channel, LineAccount
from router.config import Config


def build_adapters(config: Config) -> tuple[dict[str, Channel], LineAccount | None]:
    channels: dict[str, Channel] = {}
    account: LineAccount | None = None
    if config.line_configured:
        from channels.line.account import LineAccountApi
        from channels.line.push import LinePushChannel

        push = LinePushChannel(config.line)
        channels["line"] = push
        account = LineAccountApi(config.line, push.quota)
        if config.line.notification_messages:
            from channels.line.notification import LineNotificationChannel

            channels["line_notification"] = LineNotificationChannel(push)
    if config.email_configured:
        from channels.email import SmtpChannel

        channels["email"] = SmtpChannel(config.email)
    return channels, account
