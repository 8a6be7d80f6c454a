"""OpenAPI details Litestar cannot infer: problem responses, the responses every route shares,
and item-by-item batch bodies.

A route declares only the answers particular to it (`problems(404)`); `StandardResponses`
adds, at app build, what follows from where the route is and what it uses: 401 and 429 behind
an API key, 400 and 413 where a body is read, 503 where the database is asked. So the document
lists every status the server can give without forty copies of the same declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute

from router.api.auth import PROTECTED_PREFIX, SENDGRID_PREFIX
from router.ingress.sendgrid import ErrorBody
from router.problems import PROBLEM_MEDIA_TYPE, Problem

_DESCRIPTIONS = {
    400: "Invalid request: the problem's `errors` name each bad field",
    401: "Missing or unknown API key",
    404: "No such resource",
    409: "Conflict with stored state (idempotency key, LINE user ID)",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Valid, but cannot be carried out (unknown member, no channel reaches the recipient)",
    429: "Too many requests for this API key: retry after `Retry-After` seconds",
    503: "The database does not answer: retry after `Retry-After` seconds",
}
_SENDGRID_DESCRIPTIONS = {
    400: "Invalid request, in SendGrid's error shape: each entry names its `field`",
    404: "No such entry, in SendGrid's error shape",
    409: "This Idempotency-Key was used before for another request body",
    401: "Missing or unknown API key, in SendGrid's error shape",
    413: "Request body too large, in SendGrid's error shape",
    429: "Too many requests for this API key: retry after `Retry-After` seconds",
    503: "The database does not answer: retry after `Retry-After` seconds",
}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
_BEARER_CHALLENGE = {
    "description": "`Bearer` (and `Basic` where basic auth is taken)",
    "required": True,
    "schema": {"type": "string"},
}
# Headers every answer with that status carries, on the routes where the standard answer applies.
_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}
_PROBLEM_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    **_HEADERS,
    401: {"WWW-Authenticate": _BEARER_CHALLENGE},
}


def problem_response(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_MEDIA_TYPE,
        generate_examples=False,
    )


def problems(*codes: int) -> dict[int, ResponseSpec]:
    """Problem-detail responses particular to a route (the shared ones are added at build)."""
    return {code: problem_response(_DESCRIPTIONS[code]) for code in sorted(codes)}


def _sendgrid_response(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=ErrorBody,
        description=description,
        media_type="application/json",
        generate_examples=False,
    )


def sendgrid_problems(*codes: int) -> dict[int, ResponseSpec]:
    """`problems` for a /v3 route: SendGrid's error body."""
    return {code: _sendgrid_response(_SENDGRID_DESCRIPTIONS[code]) for code in sorted(codes)}


def _reads_body(handler: HTTPRouteHandler) -> bool:
    """A handler that is given the decoded body, or the request to read it from."""
    parameters = handler.parsed_fn_signature.parameters
    return "data" in parameters or "request" in parameters


def _checks_path_text(path: str) -> bool:
    """A text path parameter is checked (length) and refused with 400; a uuid one that does
    not parse matches no route (404)."""
    return ":str}" in path


# Dependencies (router.api.dependencies) through which a handler asks the database.
_DATABASE_DEPENDENCIES = frozenset({"pool", "single_intents"})


def _asks_database(handler: HTTPRouteHandler) -> bool:
    return not _DATABASE_DEPENDENCIES.isdisjoint(handler.parsed_fn_signature.parameters)


def standard_codes(path: str, handler: HTTPRouteHandler) -> list[int]:
    """Statuses any route of this kind can answer, whatever it does."""
    codes: list[int] = []
    if path.startswith((PROTECTED_PREFIX, SENDGRID_PREFIX)):
        codes += [401, 429]
    if _reads_body(handler):
        codes += [400, 413]
    elif _checks_path_text(path):
        codes.append(400)
    if _asks_database(handler):
        codes.append(503)
    return sorted(codes)


def _finished(
    operation_class: type[Operation],
    headers: dict[int, dict[str, dict[str, Any]]],
    *,
    public: bool,
) -> type[Operation]:
    """`operation_class` whose responses also document these headers (ResponseSpec has none),
    and which says `security: []` for a route that takes no API key (Litestar drops an empty
    list and the route inherits the document's bearer requirement)."""

    @dataclass
    class Finished(operation_class):  # type: ignore[valid-type,misc]
        def to_schema(self) -> dict[str, Any]:
            schema: dict[str, Any] = super().to_schema()
            for code, named in headers.items():
                response = schema.get("responses", {}).get(str(code))
                if response is not None:
                    response.setdefault("headers", {}).update(named)
            if public:
                schema["security"] = []
            return schema

    return Finished


_FINISHED: dict[tuple[int, bool, tuple[int, ...], bool], type[Operation]] = {}


def _finished_once(
    operation_class: type[Operation], sendgrid: bool, codes: tuple[int, ...], *, public: bool
) -> type[Operation]:
    """`_finished`, made once per distinct argument: every application built in a process
    (each test's router, say) registers copies of the same handlers, and making a dataclass
    per handler per application was a sixth of building one."""
    key = (id(operation_class), sendgrid, codes, public)
    made = _FINISHED.get(key)
    if made is None or made.__mro__[1] is not operation_class:
        headers = _HEADERS if sendgrid else _PROBLEM_HEADERS
        made = _finished(
            operation_class, {c: h for c, h in headers.items() if c in codes}, public=public
        )
        _FINISHED[key] = made
    return made


class StandardResponses(ReceiveRoutePlugin):
    """Adds the shared responses to every route as it is registered; a route's own
    declaration of a status wins over the shared one."""

    def receive_route(self, route: BaseRoute) -> None:
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            if not handler.include_in_schema or getattr(handler, "_standard_responses", False):
                continue
            own = dict(handler.responses or {})
            sendgrid = route.path.startswith(SENDGRID_PREFIX)
            added: dict[int, ResponseSpec] = {}
            for code in standard_codes(route.path, handler):
                if code not in own:
                    added[code] = (
                        _sendgrid_response(_SENDGRID_DESCRIPTIONS[code])
                        if sendgrid
                        else problem_response(_DESCRIPTIONS[code])
                    )
            handler.responses = {**added, **own}
            handler.operation_class = _finished_once(
                handler.operation_class,
                sendgrid,
                tuple(sorted(added)),
                public=handler.security == [],
            )
            handler._standard_responses = True  # type: ignore[attr-defined]


def batch_operation(key: str, item_schema: dict[str, Any], max_items: int) -> type[Operation]:
    """An Operation whose request body is `{key: [item, ...]}`.

    Batch routes read their body themselves, so that each item is decoded on its own and a bad
    item is reported in its result instead of failing the request. Every item must be a JSON
    object (anything else is refused with 400 naming the items); what is inside it is checked
    item by item, so the item schema says "an object, described by `item_schema`"."""

    @dataclass
    class BatchOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            schema = super().to_schema()
            schema["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": [key],
                            "properties": {
                                key: {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": max_items,
                                    "items": {
                                        "type": "object",
                                        "description": "An object as the schema below "
                                        "describes; an object that is not is rejected in "
                                        "its own result, never the whole request",
                                        "anyOf": [item_schema, {"type": "object"}],
                                    },
                                }
                            },
                        }
                    }
                },
            }
            return schema

    return BatchOperation


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
