"""What route handlers are given, by parameter name, instead of the running router.

`create_app` provides each of these once, from the running router; a handler declares only
the ones it uses. They are the server's own objects, not request data, so Litestar passes
them on unvalidated, and they never appear in the OpenAPI document:

- `pool: Pool`: the database pool.
- `accept_intents: AcceptIntents`: the accept seam (`router.intake_port`).
- `members_config: MembersConfig`, `line_config: LineConfig`: those config sections.
- `line_account: LineAccount | None`: the LINE Official Account; None when LINE is not set up.
- `webhook_stored: Signal`: LINE webhook events or forwards were just stored.
- `campaign_started: Signal`: a campaign was stored and is to fan out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias, TypeVar

from litestar.di import NamedDependency
from litestar.params import SkipValidation

from channels.base import LineAccount
from router.problems import ProblemError

T = TypeVar("T")

Injected: TypeAlias = NamedDependency[SkipValidation[T]]
"""A handler parameter that `create_app` provides under the parameter's name."""

Signal: TypeAlias = Callable[[], None]
"""Tells a background loop there is new work now, so it need not wait for its next sweep."""


def require_line_account(line_account: LineAccount | None) -> LineAccount:
    """The LINE account, or 409 when this router has no LINE channel."""
    if line_account is None:
        raise ProblemError(409, "Conflict", "LINE is not configured on this router")
    return line_account
