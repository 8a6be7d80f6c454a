"""The bot's account and its users: quota, followers, phone numbers and account linking.

``GET /v2/bot/message/quota`` and ``.../quota/consumption`` report the monthly limit and
what pushes and multicasts used of it; ``GET /v2/bot/followers/ids`` pages over the
friends, each page walk on one snapshot as LINE's continuation tokens do; ``POST
/v2/bot/user/{userId}/linkToken`` issues a single-use link token valid for 10 minutes,
and the page standing in for ``access.line.me/dialog/bot/accountLink`` spends it and sends
the bot the ``accountLink`` event, so account linking can be tested end to end.  Who is a
friend and which phone number reaches whom is set up by tests (``set_followers``,
``register_phone``) or follows from follow and unfollow events.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from aiohttp import web

from linesim.events import Events
from linesim.exchange import HTML, Entry, Exchange
from linesim.limits import (
    DEFAULT_FOLLOWERS_LIMIT,
    LINK_TOKEN_TTL_SECONDS,
    MAX_FOLLOWER_CURSORS,
    MAX_FOLLOWERS_LIMIT,
)
from linesim.paths import (
    ACCOUNT_LINK_DIALOG_PATH,
    CONSUMPTION_PATH,
    FOLLOWERS_PATH,
    LINK_TOKEN_PATH,
    QUOTA_PATH,
)
from linesim.schemas import (
    ErrorDetail,
    ErrorResponse,
    GetFollowersResponse,
    IssueLinkTokenResponse,
    MessageQuotaResponse,
    QuotaConsumptionResponse,
    encode,
)
from linesim.state import ExpiringToken, SimState
from linesim.validation import USER_ID, Refusal
from linesim.webhooks import Webhooks

_E164: Final = re.compile(r"\+[1-9][0-9]{1,14}")
_TOKEN_ALPHABET: Final = string.ascii_letters + string.digits
_BAD_LIMIT: Final = encode(
    ErrorResponse(
        message="The request has 1 error(s)",
        details=[
            ErrorDetail(message=f"Must be between 1 and {MAX_FOLLOWERS_LIMIT}", property="limit")
        ],
    )
)
_BAD_CONTINUATION: Final = encode(ErrorResponse(message="The continuation token is invalid"))
_BAD_USER_ID: Final = encode(
    ErrorResponse(message="The value for the 'userId' parameter is invalid")
)


def hash_phone_number(phone: str) -> str:
    """What LINE expects in ``to``: the lower-case SHA-256 hex of the E.164 number."""
    if _E164.fullmatch(phone) is None:
        raise ValueError(f"not an E.164 phone number: {phone!r}")
    return hashlib.sha256(phone.encode()).hexdigest()


def _html_page(title: str, text: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p></body></html>\n"
    ).encode()


class Accounts:
    """Quota reads, follower pages, link tokens and the account-link dialog."""

    def __init__(
        self, state: SimState, exchange: Exchange, events: Events, webhooks: Webhooks
    ) -> None:
        self._state = state
        self._exchange = exchange
        self._events = events
        self._webhooks = webhooks
        self._link_tokens: dict[str, ExpiringToken] = {}
        self._follower_cursors: OrderedDict[str, tuple[tuple[str, ...], int]] = OrderedDict()

    def routes(self) -> list[web.RouteDef]:
        handler = self._exchange.handler
        return [
            web.get(QUOTA_PATH, handler(QUOTA_PATH, self._quota)),
            web.get(CONSUMPTION_PATH, handler(CONSUMPTION_PATH, self._consumption)),
            web.get(FOLLOWERS_PATH, handler(FOLLOWERS_PATH, self._followers)),
            web.post(LINK_TOKEN_PATH, handler(None, self._link_token)),
            web.get(ACCOUNT_LINK_DIALOG_PATH, handler(ACCOUNT_LINK_DIALOG_PATH, self._dialog)),
        ]

    def reset(self) -> None:
        self._link_tokens.clear()
        self._follower_cursors.clear()

    @property
    def link_tokens(self) -> int:
        return len(self._link_tokens)

    def issued(self, link_token: str) -> bool:
        """Whether this channel issued ``link_token`` (the dialog is the channel's that did)."""
        return link_token in self._link_tokens

    def set_followers(self, user_ids: Iterable[str]) -> None:
        """Replace the follower set that ``GET /v2/bot/followers/ids`` pages over."""
        followers = dict.fromkeys(user_ids)
        self._state.users.learn_all(followers)
        self._state.followers = followers

    def register_phone(self, phone: str, user_id: str) -> str:
        """Make ``phone`` (E.164) reach ``user_id`` by PNP; returns the hash LINE expects."""
        phone_hash = hash_phone_number(phone)
        self._state.users.learn(user_id)
        self._state.phones[phone_hash] = user_id
        return phone_hash

    def forget_phone(self, phone: str) -> None:
        """Make ``phone`` unknown again, so PNP to it is answered 422."""
        self._state.phones.pop(hash_phone_number(phone), None)

    async def _quota(self, request: web.Request, entry: Entry) -> web.Response:
        self._exchange.authorize_read(request, entry)
        limit = self._state.quota.limit
        if limit is None:
            quota = MessageQuotaResponse(type="none")
        else:
            quota = MessageQuotaResponse(type="limited", value=limit)
        return self._exchange.answer(entry, 200, encode(quota))

    async def _consumption(self, request: web.Request, entry: Entry) -> web.Response:
        self._exchange.authorize_read(request, entry)
        usage = QuotaConsumptionResponse(totalUsage=self._state.quota.usage)
        return self._exchange.answer(entry, 200, encode(usage))

    async def _followers(self, request: web.Request, entry: Entry) -> web.Response:
        self._exchange.authorize_read(request, entry)
        query = request.query
        try:
            limit = int(query.get("limit", DEFAULT_FOLLOWERS_LIMIT))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_FOLLOWERS_LIMIT:
            raise Refusal(400, _BAD_LIMIT)
        start = query.get("start")
        if start is None:
            # A page sequence walks one snapshot, so follows and unfollows during the
            # walk neither repeat nor skip anyone.
            user_ids, offset = tuple(self._state.followers), 0
        else:
            cursor = self._follower_cursors.get(start)
            if cursor is None:
                raise Refusal(400, _BAD_CONTINUATION)
            user_ids, offset = cursor
        end = min(offset + limit, len(user_ids))
        page = GetFollowersResponse(userIds=list(user_ids[offset:end]))
        if end < len(user_ids):
            token = secrets.token_urlsafe(24)
            self._follower_cursors[token] = (user_ids, end)
            while len(self._follower_cursors) > MAX_FOLLOWER_CURSORS:
                self._follower_cursors.popitem(last=False)
            page.next = token
        return self._exchange.answer(entry, 200, encode(page))

    async def _link_token(self, request: web.Request, entry: Entry) -> web.Response:
        self._exchange.authorize_read(request, entry)
        user_id = request.match_info["userId"]
        if USER_ID.fullmatch(user_id) is None or self._state.users.foreign(user_id):
            raise Refusal(400, _BAD_USER_ID)
        self._state.users.learn(user_id)
        now = self._state.clock.now()
        if len(self._link_tokens) > 1000:
            self._link_tokens = {
                key: token for key, token in self._link_tokens.items() if token.expires_at > now
            }
        link_token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(32))
        self._link_tokens[link_token] = ExpiringToken(user_id, now + LINK_TOKEN_TTL_SECONDS)
        entry.recipient = user_id
        body = encode(IssueLinkTokenResponse(linkToken=link_token))
        return self._exchange.answer(entry, 200, body)

    async def _dialog(self, request: web.Request, entry: Entry) -> web.Response:
        """What LINE does once the user confirms on the account-link page.

        The event is sent before the page is answered, so a test that opened the
        page knows the bot has already been told.
        """
        link_token = request.query.get("linkToken", "")
        nonce = request.query.get("nonce", "")
        if not link_token or not nonce:
            page = _html_page("Bad request", "linkToken and nonce are required.")
            return self._exchange.answer(entry, 400, page, content_type=HTML)
        record = self._link_tokens.get(link_token)
        now = self._state.clock.now()
        ok = record is not None and not record.used and record.expires_at > now
        user_id: str | None = None
        if record is not None:
            record.used = True
            user_id = record.user_id
        else:
            # An unknown token says nothing of who opened the page; a test may say.
            named = request.query.get("userId")
            if named is not None and USER_ID.fullmatch(named) is not None:
                user_id = named
        entry.recipient = user_id
        if self._webhooks.ready:
            await self._webhooks.post([self._events.account_link_event(user_id, nonce, ok=ok)])
        if ok:
            page = _html_page("Account linked", "Your LINE account has been linked.")
        else:
            page = _html_page("Account linking failed", "The link is invalid, used or expired.")
        return self._exchange.answer(entry, 200, page, content_type=HTML)
