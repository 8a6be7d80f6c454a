"""Every error under /v3 in SendGrid's shape (`{"errors": [{"message", "field", "help"}]}`),
whatever the route and whatever refused the request; elsewhere an RFC 9457 problem."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Controller, get, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody
from python_http_client.exceptions import (
    BadRequestsError,
    HTTPError,
    MethodNotAllowedError,
    NotFoundError,
    UnauthorizedError,
)
from sendgrid import SendGridAPIClient

from router.api.app import create_app
from router.problems import ProblemError
from tests import node_clients
from tests.harness import API_KEY, RouterUnderTest
from tests.test_api_members import problem

MAIL = {
    "personalizations": [{"to": [{"email": "reader@example.org"}]}],
    "from": {"email": "news@shop.example.jp"},
    "subject": "Sale",
    "content": [{"type": "text/plain", "value": "20% off"}],
}


def sendgrid_errors(resp: httpx.Response, status: int) -> list[dict[str, Any]]:
    """The entries of a SendGrid error body, after checking its status and shape."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json", resp.headers
    body = resp.json()
    assert list(body) == ["errors"] and body["errors"], body
    for entry in body["errors"]:
        assert set(entry) == {"message", "field", "help"}, entry
        assert isinstance(entry["message"], str) and entry["message"], entry
    errors: list[dict[str, Any]] = body["errors"]
    return errors


async def refused_by_client(call: Callable[[], Any]) -> HTTPError:
    """What the official Python client raises for a call it is refused (it is synchronous)."""
    with pytest.raises(HTTPError) as info:
        await asyncio.to_thread(call)
    return info.value


async def test_python_client_reads_sendgrids_shape_on_a_missing_path_method_or_key(
    router: RouterUnderTest,
) -> None:
    client = SendGridAPIClient(api_key=API_KEY, host=router.base_url).client
    missing = await refused_by_client(client._("nonexistent").get)
    assert isinstance(missing, NotFoundError)
    assert missing.to_dict == {
        "errors": [{"message": "Not Found: GET /v3/nonexistent", "field": None, "help": None}]
    }
    deeper = await refused_by_client(client.whitelabel.domains.get)
    assert isinstance(deeper, NotFoundError)
    assert deeper.to_dict["errors"][0]["message"] == "Not Found: GET /v3/whitelabel/domains"

    wrong_method = await refused_by_client(lambda: client.mail.send.put(request_body=MAIL))
    assert isinstance(wrong_method, MethodNotAllowedError)
    assert wrong_method.to_dict["errors"] == [
        {"message": "Method Not Allowed: PUT /v3/mail/send", "field": None, "help": None}
    ]
    assert "POST" in wrong_method.headers["allow"]

    # the suppression routes too, with a key the router does not know
    stranger = SendGridAPIClient(api_key="SG.not-a-router-key", host=router.base_url).client
    unknown_key = await refused_by_client(stranger.suppression.bounces.get)
    assert isinstance(unknown_key, UnauthorizedError)
    assert unknown_key.to_dict == {
        "errors": [
            {
                "message": "The provided authorization grant is invalid, expired, or revoked",
                "field": None,
                "help": None,
            }
        ]
    }
    bad_json = await refused_by_client(
        lambda: client.asm.suppressions._("global").post(request_body={"recipient_emails": 1})
    )
    assert isinstance(bad_json, BadRequestsError)
    assert bad_json.to_dict["errors"][0]["field"] == "recipient_emails"


async def test_every_refusal_under_v3_is_in_sendgrids_shape(router: RouterUnderTest) -> None:
    async with httpx.AsyncClient(base_url=router.base_url) as bare:
        (entry,) = sendgrid_errors(await bare.get("/v3/suppression/bounces"), 401)
    assert entry == {"message": "authorization required", "field": None, "help": None}

    (entry,) = sendgrid_errors(await router.client.get("/v3/nonexistent/deeper?x=1"), 404)
    assert entry["message"] == "Not Found: GET /v3/nonexistent/deeper"
    for method in ("PUT", "DELETE", "PATCH", "GET"):
        resp = await router.client.request(method, "/v3/mail/send")
        (entry,) = sendgrid_errors(resp, 405)
        assert entry["message"] == f"Method Not Allowed: {method} /v3/mail/send"
        assert "POST" in resp.headers["allow"]
    resp = await router.client.put("/v3/suppression/bounces", json={"emails": []})
    sendgrid_errors(resp, 405)
    assert set(resp.headers["allow"].split(", ")) >= {"GET", "DELETE"}

    json_header = {"content-type": "application/json"}
    for path in ("/v3/mail/send", "/v3/asm/suppressions/global"):
        resp = await router.client.post(path, content=b'{"subject": ', headers=json_header)
        (entry, *_) = sendgrid_errors(resp, 400)
        assert "not valid JSON" in entry["message"], entry
        too_large = b'{"x": "' + b"a" * 10_000_001 + b'"}'
        sendgrid_errors(await router.client.post(path, content=too_large, headers=json_header), 413)

    # elsewhere, the router's own problem documents
    problem(await router.client.get("/v1/nonexistent"), 404)
    resp = await router.client.put("/v1/intents", json={})
    problem(resp, 405)
    assert "POST" in resp.headers["allow"]
    problem(await router.client.post("/v1/intents", content=b"{", headers=json_header), 400)


async def test_node_client_reads_sendgrids_shape_on_a_missing_path_method_or_key(
    router: RouterUnderTest,
) -> None:
    missing = await node_clients.request(router.base_url, API_KEY, "GET", "/v3/nonexistent")
    assert not missing["ok"] and missing["status"] == 404, missing
    assert missing["body"] == {
        "errors": [{"message": "Not Found: GET /v3/nonexistent", "field": None, "help": None}]
    }
    wrong_method = await node_clients.request(
        router.base_url, API_KEY, "PUT", "/v3/mail/send", body=MAIL
    )
    assert wrong_method["status"] == 405, wrong_method
    assert wrong_method["body"]["errors"][0]["message"] == "Method Not Allowed: PUT /v3/mail/send"
    assert "POST" in wrong_method["headers"]["allow"]
    unknown_key = await node_clients.request(
        router.base_url, "SG.wrong", "GET", "/v3/suppression/bounces"
    )
    assert unknown_key["status"] == 401, unknown_key
    assert list(unknown_key["body"]) == ["errors"]
    bad_field = await node_clients.request(
        router.base_url, API_KEY, "POST", "/v3/mail/send", body={**MAIL, "subject": 1}
    )
    assert bad_field["status"] == 400, bad_field
    assert [e["field"] for e in bad_field["body"]["errors"]] == ["subject"]


class _Item(msgspec.Struct, forbid_unknown_fields=True):
    count: int


def _routes_without_handlers_of_their_own(prefix: str) -> type[Controller]:
    """A controller as one added later would be: no exception handlers of its own."""

    class Later(Controller):
        path = prefix

        @get("/fails")
        async def fails(self) -> None:
            raise RuntimeError("a bug")

        @get("/forbidden")
        async def forbidden(self) -> None:
            raise PermissionDeniedException()

        @get("/gone")
        async def gone(self) -> None:
            raise ProblemError(404, "Not found", "no such template")

        @post("/upload")
        async def upload(self) -> None:
            raise ProblemError(415, "Unsupported media type", "send the file as multipart")

        @post("/items", status_code=201)
        async def items(self, data: JSONBody[_Item]) -> None:
            return None

    return Later


async def test_a_v3_controller_added_later_answers_in_sendgrids_shape(
    router: RouterUnderTest,
) -> None:
    """The shape is the app's rule for the /v3 prefix, not each controller's: a bug (500), a
    refusal by the framework (403), the router's own problems (404, 415) and a field the
    types refuse (400), on routes that declare no handlers of their own."""
    app = create_app(router.runtime)
    app.register(_routes_without_handlers_of_their_own("/v3/later"))
    app.register(_routes_without_handlers_of_their_own("/v1/later"))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:

        async def both(method: str, path: str, **kw: Any) -> tuple[httpx.Response, ...]:
            return tuple(
                [
                    await client.request(method, f"/{v}/later{path}", headers=headers, **kw)
                    for v in ("v3", "v1")
                ]
            )

        sendgrid, problems = await both("GET", "/fails")
        assert sendgrid_errors(sendgrid, 500) == [
            {"message": "The router failed; see its log.", "field": None, "help": None}
        ]
        problem(problems, 500)
        sendgrid, problems = await both("GET", "/forbidden")
        sendgrid_errors(sendgrid, 403)
        problem(problems, 403)
        sendgrid, problems = await both("GET", "/gone")
        assert sendgrid_errors(sendgrid, 404)[0]["message"] == "no such template"
        problem(problems, 404)
        sendgrid, problems = await both("POST", "/upload", json={})
        assert sendgrid_errors(sendgrid, 415)[0]["message"] == "send the file as multipart"
        problem(problems, 415)
        sendgrid, problems = await both("POST", "/items", json={"count": "two"})
        assert sendgrid_errors(sendgrid, 400)[0]["field"] == "count"
        problem(problems, 400)
