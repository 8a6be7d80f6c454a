"""The pages a recipient sees at an unsubscribe link, in Japanese and English.

Static HTML without scripts: the confirmation (GET, which changes nothing, since link
scanners fetch every link in a message), the page after the POST, and the one for a link that
is not ours. The address is shown masked, enough for the reader to recognise it and no more.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

from router.deliverability.opt_outs import Scope

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f6;color:#222}"
    "main{max-width:32rem;margin:3rem auto;padding:1.5rem 2rem;background:#fff;"
    "border-radius:8px}h1{font-size:1.3rem}p{line-height:1.6}.en{color:#555}"
    "button{font-size:1rem;padding:.6rem 1.2rem;border:0;border-radius:6px;"
    "background:#c0392b;color:#fff;cursor:pointer}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

SECURITY_HEADERS = {
    # No scripts, no outside resources, the one inline style block by its hash; the form
    # posts only back here; no other site may frame the page (a click-jacked unsubscribe).
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex",
}


def mask_address(address: str) -> str:
    """`taro@example.co.jp` as `t***@e***.jp`: the first letters and the top-level domain."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "***"
    top = domain.rsplit(".", 1)[-1] if "." in domain else ""
    return f"{local[0]}***@{domain[0]}***" + (f".{top}" if top else "")


def _what(scope: Scope, category: str | None) -> tuple[str, str]:
    """What is stopped, in Japanese and in English (HTML)."""
    if scope == "category" and category is not None:
        name = escape(category)
        return f"「{name}」のメール", f"“{name}” email"
    if scope == "promotional":
        return "お知らせ・キャンペーンなどの広告宣伝メールすべて", "all promotional email"
    return "このアドレスへのすべてのメール", "all email to this address"


def _keeps(scope: Scope) -> str:
    if scope == "address":
        return ""
    return (
        "<p>ご注文の確認など、お取引に関するメールは引き続きお送りします。</p>"
        '<p class="en">Email about your orders and account (transactional email) will still'
        " be sent.</p>"
    )


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body><main>{body}</main></body></html>"
    )


def _recipient(masked: str | None) -> str:
    if masked is None:
        return ""
    shown = escape(masked)
    return f'<p>宛先: {shown}<br><span class="en">To: {shown}</span></p>'


def confirmation(scope: Scope, category: str | None, masked: str | None) -> str:
    """The GET page: what the button will stop, and the button (a POST to this same URL)."""
    ja, en = _what(scope, category)
    return _page(
        "配信停止の確認 / Confirm unsubscribe",
        '<h1>配信停止の確認<br><span class="en">Confirm unsubscribe</span></h1>'
        f"{_recipient(masked)}"
        f"<p>{ja}の配信を停止します。</p>"
        f'<p class="en">This stops {en}.</p>'
        f"{_keeps(scope)}"
        '<form method="post"><button type="submit">配信を停止する / Unsubscribe</button></form>',
    )


def done(scope: Scope, category: str | None) -> str:
    """The page after the POST (mail clients' one-click POSTs ignore it)."""
    ja, en = _what(scope, category)
    return _page(
        "配信を停止しました / Unsubscribed",
        '<h1>配信を停止しました<br><span class="en">You are unsubscribed</span></h1>'
        f"<p>{ja}の配信を停止しました。</p>"
        f'<p class="en">You will no longer receive {en}.</p>'
        f"{_keeps(scope)}",
    )


NOT_VALID_TEXT = "This unsubscribe link is not valid. / この配信停止リンクは無効です。\n"


def not_valid() -> str:
    """A token this router did not sign (mistyped, cut short, or altered)."""
    return _page(
        "無効なリンク / Link not valid",
        '<h1>このリンクは無効です<br><span class="en">This link is not valid</span></h1>'
        "<p>メールに記載されたリンクを、そのままお使いください。</p>"
        '<p class="en">Please use the link exactly as it appears in the email.</p>',
    )
