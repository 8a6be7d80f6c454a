"""What route handlers are given, by parameter name, instead of the running router.

A handler declares only the dependencies it uses, as `name: Injected[Type]` with a name and
type from `ApiDependencies`; `create_app` provides each once for the whole application. They
are the server's own objects, not request data, so Litestar passes them on unvalidated, and
they never appear in the OpenAPI document. A handler asking for a name nobody provides
stops the application from being built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TypeAlias, TypeVar

from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from channels.base import LineAccount
from router.config import EmailConfig, LineConfig, MembersConfig, ShopifyConfig
from router.database import Pool
from router.intake import IntakeChannels
from router.intake.group_commit import GroupCommit
from router.intake_port import AcceptIntents
from router.problems import ProblemError

T = TypeVar("T")

Injected: TypeAlias = NamedDependency[SkipValidation[T]]
"""A handler parameter that `create_app` provides under the parameter's name."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiDependencies:
    """Everything a handler may ask for; each field's name is the parameter name."""

    pool: Pool
    accept_intents: AcceptIntents
    single_intents: GroupCommit
    """`POST /v1/intents`: single intents arriving together share one transaction."""
    members_config: MembersConfig
    line_config: LineConfig
    default_line_account: LineAccount | None
    """The account "default"; None when it is not configured (see `require_line_account`).
    Not named `line_account`: the framework takes a refused body field of that name for a
    failed dependency (a 500)."""
    line_accounts: Mapping[str, LineAccount]
    """Every configured LINE account by name, "default" included."""
    line_configs: Mapping[str, LineConfig]
    """Every configured LINE account's effective settings by name (`Config.line_accounts`)."""
    shopify_config: ShopifyConfig
    email_config: EmailConfig
    """Its token secret is filled in at start (router.deliverability.secret)."""
    events_configured: bool
    """Delivery events are recorded: someone receives them ([events] webhook_url)."""
    sandbox_enabled: bool
    """Sandbox mode: LINE and email go to this process's simulator and capture."""
    intake_channels: Callable[[], IntakeChannels] | None = None
    """The channels intake plans over now (a campaign's dry run routes with them)."""

    def providers(self) -> dict[str, Provide]:
        return {
            field.name: _same_for_every_request(getattr(self, field.name))
            for field in dataclasses.fields(self)
        }


def _same_for_every_request(value: object) -> Provide:
    def provide() -> object:
        return value

    return Provide(provide, use_cache=True, sync_to_thread=False)


def require_line_account(line_account: LineAccount | None) -> LineAccount:
    """The LINE account, or 409 when this router has no LINE channel."""
    if line_account is None:
        raise ProblemError(409, "Conflict", "LINE is not configured on this router")
    return line_account
