"""Where LINE's endpoints live and the headers they speak.

The paths are those of LINE's OpenAPI files (``messaging-api.yml``, ``manage-audience.yml``)
and of LINE Login; a client pointed at the simulator's base URL finds each where it would
find it at LINE.  ``CONTROL_PREFIX`` is the simulator's own: LINE has nothing under it.
"""

from __future__ import annotations

from typing import Final

PUSH_PATH: Final = "/v2/bot/message/push"
MULTICAST_PATH: Final = "/v2/bot/message/multicast"
NARROWCAST_PATH: Final = "/v2/bot/message/narrowcast"
NARROWCAST_PROGRESS_PATH: Final = "/v2/bot/message/progress/narrowcast"
QUOTA_PATH: Final = "/v2/bot/message/quota"
CONSUMPTION_PATH: Final = "/v2/bot/message/quota/consumption"
REPLY_PATH: Final = "/v2/bot/message/reply"
WEBHOOK_ENDPOINT_PATH: Final = "/v2/bot/channel/webhook/endpoint"  # GET reads, PUT sets
WEBHOOK_TEST_PATH: Final = "/v2/bot/channel/webhook/test"
FOLLOWERS_PATH: Final = "/v2/bot/followers/ids"
LINK_TOKEN_PATH: Final = "/v2/bot/user/{userId}/linkToken"  # noqa: S105
PNP_PATH: Final = "/bot/pnp/push"
VERIFY_ID_TOKEN_PATH: Final = "/oauth2/v2.1/verify"  # noqa: S105
AUDIENCE_UPLOAD_PATH: Final = "/v2/bot/audienceGroup/upload"  # POST creates, PUT adds
AUDIENCE_GROUP_PATH: Final = "/v2/bot/audienceGroup/{audienceGroupId}"
# Stands in for https://access.line.me/dialog/bot/accountLink.
ACCOUNT_LINK_DIALOG_PATH: Final = "/dialog/bot/accountLink"
CONTROL_PREFIX: Final = "/__simulator"
# What totalUsage counts.  LINE does not count reply messages, and LINE
# notification messages are billed apart and counted by their own endpoint
# (/v2/bot/message/delivery/pnp), so neither is in the monthly usage.
QUOTA_COUNTED_PATHS: Final = (PUSH_PATH, MULTICAST_PATH)

REQUEST_ID_HEADER: Final = "X-Line-Request-Id"
ACCEPTED_REQUEST_ID_HEADER: Final = "X-Line-Accepted-Request-Id"
RETRY_KEY_HEADER: Final = "X-Line-Retry-Key"
DELIVERY_TAG_HEADER: Final = "X-Line-Delivery-Tag"
SIGNATURE_HEADER: Final = "X-Line-Signature"
# What ``accepted_pushes()`` lists: the requests that send to user IDs.
PUSH_PATHS: Final = (PUSH_PATH, MULTICAST_PATH)
# What ``LineSimulator(on_accepted_send=...)`` is told about: every request that sends messages.
SEND_PATHS: Final = (PUSH_PATH, MULTICAST_PATH, NARROWCAST_PATH, REPLY_PATH, PNP_PATH)
