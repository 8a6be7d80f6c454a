"""Every error leaves the HTTP API as an RFC 9457 problem (`application/problem+json`), except
under a prefix whose clients expect another shape (`by_path_prefix`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from router.database_outage import is_unavailable
from router.identifiers import MEMBER_ID_PATTERN, MEMBER_ID_RULE
from router.intents import IntentResult
from router.log_safety import describe
from router.problems import PROBLEM_MEDIA_TYPE, FieldError, Problem, ProblemError

log = logging.getLogger(__name__)

T = TypeVar("T")

_TITLES = {
    400: "Invalid request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    500: "Internal error",
    429: "Too many requests",
    503: "Service unavailable",
}

RETRY_AFTER_SECONDS = 5
"""What a client is told to wait while the database is unreachable: a PostgreSQL restart or
fail-over takes seconds, and the pool reconnects on the next request after it."""


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def not_found(detail: str) -> ProblemError:
    return ProblemError(404, "Not found", detail)


def found(value: T | None, detail: str) -> T:
    """`value`, or a 404 problem saying what was not found."""
    if value is None:
        raise not_found(detail)
    return value


def refusal(result: IntentResult) -> ProblemError:
    """A rejected intent as the problem a single-intent request answers with: its own status
    (400 invalid, 409 idempotency conflict, 422 unreachable) and its field errors."""
    title = {409: "Conflict", 422: "Unprocessable request"}.get(result.code, "Invalid request")
    return ProblemError(result.code, title, result.reason, result.errors)


def _from_problem_error(_: Request[Any, Any, Any], exc: ProblemError) -> Response[bytes]:
    return problem_response(exc.problem, headers=exc.headers or None)


def database_unavailable(
    request: Request[Any, Any, Any], exc: BaseException
) -> ProblemError | None:
    """The 503 (with `Retry-After`) for an error that means PostgreSQL cannot be reached, logged
    as one line; None for any other error."""
    if not is_unavailable(exc):
        return None
    log.warning(
        "database unavailable on %s %s: %s; answered 503",
        request.method,
        request.url.path,
        describe(exc),
    )
    return ProblemError(
        503,
        "Service unavailable",
        "the database cannot be reached; try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


# msgspec names a failed pattern by its regex; these say the rule in words.
_PATTERN_RULES = {f"Expected `str` matching regex {MEMBER_ID_PATTERN!r}": MEMBER_ID_RULE}


def readable(message: str) -> str:
    for regex_message, rule in _PATTERN_RULES.items():
        message = message.replace(regex_message, rule)
    return message


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`")


def own_path(path: str, message: str) -> str:
    """The path of the field a message is about: msgspec names an unknown field's object
    ("Object contains unknown field `emial`" at `$`); the field itself is `emial`."""
    unknown = _UNKNOWN_FIELD.match(message)
    if unknown is None:
        return path
    return f"{path}.{unknown.group('name')}" if path else unknown.group("name")


def field_path(message: str) -> tuple[str, str]:
    """Split msgspec's "Expected `str`, got `int` - at `$.email.subject`" into path and text."""
    match = _AT_PATH.search(message)
    if not match:
        return own_path("", message), readable(message)
    text = message[: match.start()]
    return own_path(match.group("path").lstrip("."), text), readable(text)


def whole_body_detail(detail: str) -> str:
    """The framework's refusal of a whole body, saying so when the body is not JSON at all."""
    if "truncated" in detail or "JSON" in detail or "malformed" in detail.lower():
        return f"the body is not valid JSON ({detail})"
    return detail


def _from_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    errors: list[FieldError] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict):
            message = readable(str(item.get("message")))
            key = str(item.get("key") or "")  # "data": the body as a whole
            errors.append(
                FieldError(own_path("" if key == "data" else key, message) or "body", message)
            )
    detail = f"{errors[0].field}: {errors[0].message}" if errors else whole_body_detail(exc.detail)
    return problem_response(
        Problem(title="Invalid request", status=400, detail=detail, errors=errors)
    )


_MEMBER_SUBPATH = re.compile(r"/v1/members/[^/]+/.")


def _from_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    detail = exc.detail if exc.detail != _TITLES.get(status) else None
    if status == 413:
        detail = "the request body is larger than this endpoint accepts"
    elif status == 404 and _MEMBER_SUBPATH.match(request.url.path):
        detail = (
            "no such route: a member ID never contains '/' (a member stored with one before "
            "is erased by DELETE /v1/members?member_id=<id>)"
        )
    return problem_response(
        Problem(title=_TITLES.get(status, "Error"), status=status, detail=detail),
        headers=exc.headers,
    )


def _from_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if (outage := database_unavailable(request, exc)) is not None:
        return _from_problem_error(request, outage)
    log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    log.debug("traceback", exc_info=exc)
    return problem_response(
        Problem(title="Internal error", status=500, detail="the router failed; see its log")
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ProblemError: _from_problem_error,
    ValidationException: _from_validation,
    HTTPException: _from_http,
    Exception: _from_unexpected,
}


ExceptionHandler = Callable[[Request[Any, Any, Any], Any], Response[bytes]]


def by_path_prefix(
    default: dict[Any, Any], prefix: str, prefixed: dict[Any, Any]
) -> dict[Any, Any]:
    """App-wide handlers answering with `prefixed`'s handler for a path under `prefix` and with
    `default`'s elsewhere, whatever the exception.

    A rule by path, not by controller: a path no route has (404), a method a path does not take
    (405) and an error before any controller is chosen reach only the app's handlers, and a
    controller added under the prefix needs nothing of its own."""
    if default.keys() != prefixed.keys():
        raise ValueError("both shapes must handle the same exception types")

    def choose(plain: ExceptionHandler, special: ExceptionHandler) -> ExceptionHandler:
        def handle(request: Request[Any, Any, Any], exc: Any) -> Response[bytes]:
            handler = special if request.url.path.startswith(prefix) else plain
            return handler(request, exc)

        return handle

    return {kind: choose(default[kind], prefixed[kind]) for kind in default}
