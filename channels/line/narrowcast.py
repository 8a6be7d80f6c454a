"""LINE narrowcast: one `POST /v2/bot/message/narrowcast` to the users of LINE audiences, and
`GET /v2/bot/message/progress/narrowcast` to learn how it went.

The recipient is built here from audience group ids: an audience object each, their union
(`operator` `or`) when there are several, and the exclusions taken away with `and` + `not`.
The request carries `X-Line-Retry-Key` derived from the campaign, so a resend after a crash or
a timeout is answered 409 with the first request's id and reaches nobody twice. The month's
quota is reserved for the expected recipients before the request and settled when LINE has
answered; LINE reports only totals (success, failure, target counts), never who received it.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import msgspec
from linebot.v3.messaging import ApiException

from channels.base import Failed, NarrowcastProgress, OutboundNarrowcast, Outcome, Retry, Sent
from channels.line.push import LinePushChannel, LineSender, account_missing, classify
from router.reach import DEFAULT_LINE_ACCOUNT

NARROWCAST_PATH = "/v2/bot/message/narrowcast"
PROGRESS_PATH = "/v2/bot/message/progress/narrowcast"
_KEY_NAMESPACE = uuid.UUID("9e3c4c1e-2a7b-4c55-8a86-3f2f0c7a51d4")


def narrowcast_retry_key(key_id: uuid.UUID) -> uuid.UUID:
    """The same campaign always gets the same key; never equal to a push or multicast key."""
    return uuid.uuid5(_KEY_NAMESPACE, f"narrowcast:{key_id}")


def recipient(include: list[int], exclude: list[int]) -> dict[str, Any]:
    """LINE's recipient object: (union of `include`) minus (union of `exclude`)."""

    def union(ids: list[int]) -> dict[str, Any]:
        audiences: list[dict[str, Any]] = [{"type": "audience", "audienceGroupId": i} for i in ids]
        return audiences[0] if len(audiences) == 1 else {"type": "operator", "or": audiences}

    if not include:
        raise ValueError("a narrowcast names at least one audience")
    named = union(include)
    if not exclude:
        return named
    return {"type": "operator", "and": [named, {"type": "operator", "not": union(exclude)}]}


class _Progress(msgspec.Struct, rename="camel"):
    """`NarrowcastProgressResponse` (messaging-api.yml)."""

    phase: str
    accepted_time: str | None = None
    success_count: int | None = None
    failure_count: int | None = None
    target_count: int | None = None
    failed_description: str | None = None
    error_code: int | None = None
    completed_time: str | None = None


class LineNarrowcast:
    """Narrowcast over the LINE channel's clients, quotas and message cache, under the
    campaign's LINE account."""

    def __init__(self, channel: LinePushChannel) -> None:
        self._channel = channel

    async def narrowcast(self, request: OutboundNarrowcast) -> Outcome:
        channel = self._channel.sender(request.line_account)
        if channel is None:
            return account_missing(request.line_account)
        try:
            messages = self._channel.wire_content(request.content_id, request.content)
        except ValueError as exc:
            return Failed(f"LINE messages could not be built: {exc}", fallback=True, dropped=True)
        body = {
            "messages": messages,
            "recipient": recipient(request.audience_group_ids, request.exclude_audience_group_ids),
        }
        key = narrowcast_retry_key(request.key_id)
        outcome = await channel.within_quota(
            key, request.recipients, lambda: self._post(channel, key, body)
        )
        assert not isinstance(outcome, list)
        return outcome

    async def _post(self, channel: LineSender, key: uuid.UUID, body: dict[str, Any]) -> Outcome:
        try:
            response = await channel.post_json(
                NARROWCAST_PATH, {"X-Line-Retry-Key": str(key)}, body
            )
        except ApiException as exc:
            return classify(exc.status, exc.headers or {}, exc.body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Retry(f"LINE request failed: {type(exc).__name__} {exc}".strip())
        request_id = response.headers.get("x-line-request-id") if response.headers else None
        if not request_id:
            return Retry("LINE accepted the narrowcast without a request id")
        return Sent(provider_ref=str(request_id))

    async def narrowcast_progress(
        self, request_id: str, line_account: str = DEFAULT_LINE_ACCOUNT
    ) -> NarrowcastProgress | Retry | Failed:
        channel = self._channel.sender(line_account)
        if channel is None:
            return account_missing(line_account)
        try:
            response = await channel.client.call_api(
                PROGRESS_PATH,
                "GET",
                query_params=[("requestId", request_id)],
                header_params={"Accept": "application/json"},
                response_types_map={},
                auth_settings=["Bearer"],
                _return_http_data_only=False,
                _request_timeout=channel.timeout,
            )
        except ApiException as exc:
            outcome = classify(exc.status, exc.headers or {}, exc.body)
            return outcome if isinstance(outcome, Retry | Failed) else Retry(str(exc.status))
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Retry(f"LINE request failed: {type(exc).__name__} {exc}".strip())
        raw = response.raw_data
        try:
            got = msgspec.json.decode(
                raw.encode() if isinstance(raw, str) else bytes(raw), type=_Progress
            )
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Retry(f"LINE's progress could not be read: {exc}")
        return NarrowcastProgress(
            phase=got.phase,
            success_count=got.success_count,
            failure_count=got.failure_count,
            target_count=got.target_count,
            error_code=got.error_code,
            failed_description=got.failed_description,
            accepted_time=got.accepted_time,
            completed_time=got.completed_time,
        )
