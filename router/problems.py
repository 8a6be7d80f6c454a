"""RFC 9457 problem details: the one error shape every HTTP route returns."""

from __future__ import annotations

import msgspec

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(msgspec.Struct, frozen=True):
    """One invalid field: `field` is a path like `intents[3].email.subject`."""

    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] = msgspec.field(default_factory=list)


class ProblemError(Exception):
    """Raised anywhere below the HTTP layer to answer with a specific problem."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.problem = Problem(title=title, status=status, detail=detail, errors=errors or [])
        self.headers = headers or {}
        """Response headers the answer needs, such as `Retry-After` on 429 and 503."""


def invalid(errors: list[FieldError], detail: str | None = None) -> ProblemError:
    first = errors[0]
    return ProblemError(
        400,
        "Invalid request",
        detail or f"{first.field}: {first.message}",
        errors,
    )
