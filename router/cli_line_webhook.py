"""`router line webhook set|show|test [--account NAME]`: a channel's webhook URL at LINE,
from the shell.

What the Webhook settings of LINE's console do, through LINE's Messaging API, so a deployment
script can register the router's `https://<host>/webhooks/line/<account>` (or
`/webhooks/line` for the account "default") and check that LINE reaches it (TLS, signature,
the router answering 200). Each command prints one line; a failure is one line on stderr, as
`router: why`, with exit code 1 (2: the account is not configured).
"""

from __future__ import annotations

import sys
import urllib.parse

from channels.base import ProviderError
from channels.line.webhook_endpoint import LineWebhookEndpoint, WebhookEndpointInfo
from router.config import DEFAULT_LINE_ACCOUNT, LineConfig

WEBHOOK_PATH = "/webhooks/line"


def webhook_paths(account: str) -> tuple[str, ...]:
    """Where the router receives the webhooks of LINE account `account`."""
    own = f"{WEBHOOK_PATH}/{account}"
    return (WEBHOOK_PATH, own) if account == DEFAULT_LINE_ACCOUNT else (own,)


async def set_endpoint(config: LineConfig, url: str, account: str = DEFAULT_LINE_ACCOUNT) -> int:
    """Set the URL, then read it back from LINE, so the line printed is what LINE holds.
    A URL that is not the account's own webhook path is set, with a note."""
    if not config.channel_access_token:
        return _fail("[line] channel_access_token is not set", 2)
    if urllib.parse.urlsplit(url).path.rstrip("/") not in webhook_paths(account):
        where = (
            f"LINE webhooks at {WEBHOOK_PATH}"
            if account == DEFAULT_LINE_ACCOUNT
            else f"the webhooks of LINE account {account} at {WEBHOOK_PATH}/{account}"
        )
        print(f"router: note: the router receives {where}", file=sys.stderr)
    endpoint = LineWebhookEndpoint(config)
    try:
        await endpoint.set(url)
        info = await endpoint.get()
    except ProviderError as exc:
        return _fail(f"LINE refused the webhook URL: {exc.status} {exc.message}", 1)
    finally:
        await endpoint.aclose()
    print(describe(info))
    return 0


async def show_endpoint(config: LineConfig) -> int:
    if not config.channel_access_token:
        return _fail("[line] channel_access_token is not set", 2)
    endpoint = LineWebhookEndpoint(config)
    try:
        info = await endpoint.get()
    except ProviderError as exc:
        return _fail(f"LINE did not give the webhook URL: {exc.status} {exc.message}", 1)
    finally:
        await endpoint.aclose()
    print(describe(info))
    return 0


async def send_test(config: LineConfig, url: str | None) -> int:
    """Have LINE send its test webhook; 0 only when the endpoint answered it with 2xx."""
    if not config.channel_access_token:
        return _fail("[line] channel_access_token is not set", 2)
    endpoint = LineWebhookEndpoint(config)
    try:
        result = await endpoint.test(url)
    except ProviderError as exc:
        return _fail(f"LINE refused the webhook test: {exc.status} {exc.message}", 1)
    finally:
        await endpoint.aclose()
    target = url or "the webhook URL"
    if result.success:
        print(f"LINE's test webhook to {target}: answered {result.status_code} ({result.reason})")
        return 0
    answered = f"answered {result.status_code}" if result.status_code > 0 else "no answer"
    return _fail(
        f"LINE's test webhook to {target} failed: {answered}, {result.reason}: {result.detail}",
        1,
    )


def describe(info: WebhookEndpointInfo) -> str:
    if not info.endpoint:
        return "LINE webhook URL: not set"
    state = "active" if info.active else "inactive: turn on 'Use webhook' in LINE's console"
    return f"LINE webhook URL: {info.endpoint} ({state})"


def _fail(message: str, code: int) -> int:
    print(f"router: {message}", file=sys.stderr)
    return code
