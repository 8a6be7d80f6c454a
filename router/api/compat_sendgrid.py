"""`POST /v3/mail/send`: SendGrid's Mail Send, so a SendGrid client only changes its host.

Errors on this path use SendGrid's body (`{"errors": [{"message", "field", "help"}]}`), not
RFC 9457, because SendGrid clients parse that shape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.spec import Operation

from router.api.dependencies import Injected
from router.api.errors import database_unavailable, whole_body_detail
from router.api.openapi import sendgrid_problems
from router.database import Pool
from router.ingress import sendgrid
from router.ingress.sendgrid import SendGridError
from router.intake_port import AcceptIntents
from router.problems import ProblemError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/json"


def sendgrid_error(
    status: int, errors: list[SendGridError], headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        sendgrid.error_body(errors), status_code=status, media_type=MEDIA_TYPE, headers=headers
    )


def _from_problem(_: Request[Any, Any, Any], exc: ProblemError) -> Response[bytes]:
    """A problem raised on the way in (an outage, a rate limit, a body limit) in SendGrid's
    shape: one entry per bad field, with SendGrid's dotted field names."""
    problem = exc.problem
    errors = [
        SendGridError(message=e.message, field=sendgrid.dotted(e.field), help=sendgrid.DOCS)
        for e in problem.errors
    ] or [SendGridError(message=problem.detail or problem.title)]
    return sendgrid_error(problem.status, errors, exc.headers or None)


def _from_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Also a path no route has (404) and a method the path does not take (405, its `Allow`
    kept): their message names the method and path, so a client's log says which call the
    router lacks."""
    if exc.status_code == 413:
        message = "The JSON payload you have included in your request is too large."
    elif exc.status_code in (404, 405):
        message = f"{exc.detail}: {request.method} {request.url.path}"
    elif exc.status_code == 400:
        message = whole_body_detail(exc.detail)
    else:
        message = exc.detail
    return sendgrid_error(exc.status_code, [SendGridError(message=message)], exc.headers)


def _from_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    """A path, query or body value the route's types refuse, one entry per field."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = [
        SendGridError(message=str(item.get("message")), field=str(item.get("key") or "body"))
        for item in extra
        if isinstance(item, dict)
    ] or [SendGridError(message=whole_body_detail(exc.detail))]
    return sendgrid_error(400, errors)


def _from_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if (outage := database_unavailable(request, exc)) is not None:
        return _from_problem(request, outage)
    log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    log.debug("traceback", exc_info=exc)
    return sendgrid_error(500, [SendGridError(message="The router failed; see its log.")])


def inlined_schema(struct_type: type) -> dict[str, Any]:
    """msgspec's own JSON Schema of `struct_type`, its definitions inlined (none is recursive):
    what the route decodes, without registering SendGrid's shapes beside the router's own."""
    (top,), definitions = msgspec.json.schema_components([struct_type], ref_template="{name}")

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    schema: dict[str, Any] = inline(top)
    return schema


_MESSAGE_ID = {
    "X-Message-Id": {
        "description": "The id SendGrid clients keep; a retry under the same Idempotency-Key"
        " gets the same one",
        "required": True,
        "schema": {"type": "string"},
    }
}


@dataclass
class _MailSendOperation(Operation):
    """The body and the empty answers Litestar cannot infer: the route reads the body itself
    (its rules are SendGrid's) and answers SendGrid's way."""

    def to_schema(self) -> dict[str, Any]:
        schema = super().to_schema()
        schema["requestBody"] = {
            "required": True,
            "content": {MEDIA_TYPE: {"schema": inlined_schema(sendgrid.MailSend)}},
        }
        schema.setdefault("parameters", []).append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Makes a retry of this request send nothing more (the router's"
                " own; SendGrid has none): the same key again gets the first answer, the same key"
                " on another body 409",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
        schema["responses"]["202"] = {
            "description": "Accepted: one intent per recipient (empty body)",
            "headers": _MESSAGE_ID,
        }
        schema["responses"]["200"] = {
            "description": "`mail_settings.sandbox_mode.enable`: checked, nothing sent",
            "headers": _MESSAGE_ID,
        }
        return schema


# Every error under /v3 is answered in SendGrid's shape: the app applies these by path prefix
# (router.api.errors.by_path_prefix), so a /v3 controller needs no handlers of its own.
EXCEPTION_HANDLERS: dict[Any, Any] = {
    ProblemError: _from_problem,
    ValidationException: _from_validation,
    HTTPException: _from_http,
    Exception: _from_unexpected,
}


class SendGridController(Controller):
    path = "/v3/mail"
    tags = ["compatibility"]  # noqa: RUF012
    exception_handlers = EXCEPTION_HANDLERS

    @post(
        "/send",
        status_code=202,
        summary="SendGrid v3 Mail Send, delivered as one intent per recipient",
        description="SendGrid's request body and error shape. Each `to` recipient becomes an "
        "intent routed `prefer_line`; cc and bcc recipients get the email only. Every copy of "
        "a personalization shows its To and Cc (bcc hidden); attachments are sent as given, "
        "and a LINE friend gets them by email as well. 202 with an "
        "empty body and `X-Message-Id`. As with SendGrid, every request is a send (the same "
        "body twice is two emails); with an `Idempotency-Key` header a retry under the same "
        "key is answered with the first one's `X-Message-Id` without sending again, and the "
        "same key on another body is refused with 409.",
        operation_class=_MailSendOperation,
        responses=sendgrid_problems(409),
    )
    async def send(
        self,
        request: Request[Any, Any, Any],
        pool: Injected[Pool],
        accept_intents: Injected[AcceptIntents],
    ) -> Response[bytes]:
        body = await request.body()
        try:
            async with pool.acquire() as conn:
                submitted = await sendgrid.submit(
                    conn, body, accept_intents, key=request.headers.get("idempotency-key")
                )
        except sendgrid.Invalid as exc:
            return sendgrid_error(exc.status, exc.errors)
        headers = {"X-Message-Id": submitted.message_id}
        if submitted.sandbox:
            return Response(b"", status_code=200, headers=headers, media_type=MEDIA_TYPE)
        rejected = submitted.rejected
        if rejected:
            log.info(
                "sendgrid mail send %s: %d of %d recipients rejected",
                submitted.message_id,
                len(rejected),
                len(submitted.results),
            )
        if not submitted.taken:
            # The key was used before for another body: the conflict is the request's.
            reused = all(r.code == 409 for r in submitted.results)
            return sendgrid_error(409 if reused else 400, rejected)
        return Response(b"", status_code=202, headers=headers, media_type=MEDIA_TYPE)
