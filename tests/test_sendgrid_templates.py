"""SendGrid dynamic templates: the Templates API, Mail Send with `template_id` and
`dynamic_template_data`, a template's LINE version, and `router templates import`, driven by
the official Python and Node clients over real HTTP, PostgreSQL, SMTP and the LINE simulator."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from router import cli
from router.handlebars import TemplateError, render
from tests import node_clients
from tests.harness import API_KEY, RouterUnderTest, SmtpSink
from tests.test_compat_sendgrid import FRIEND, friend, stored_intents

SENDER = "orders@shop.example.jp"

RECEIPT_HTML = (
    "<p>Hello {{name}},</p>{{#if items}}<ul>{{#each items}}<li>{{@index}}. {{title}}"
    " x{{qty}}</li>{{/each}}</ul>{{else}}<p>No items.</p>{{/if}}"
    "{{#unless paid}}<p>Payment due.</p>{{/unless}}<p>{{{signature}}}</p>"
)
FLEX = {
    "type": "flex",
    "altText": "Order {{order}} for {{name}}",
    "contents": {
        "type": "bubble",
        "body": {
            "type": "box",
            "layout": "vertical",
            "contents": [
                {"type": "text", "text": "Order {{order}}"},
                {"type": "text", "text": "{{name}}: {{length items}} items"},
            ],
        },
    },
}


def python_client(router: RouterUnderTest) -> SendGridAPIClient:
    return SendGridAPIClient(api_key=API_KEY, host=router.base_url)


async def call(router: RouterUnderTest, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The Python client is synchronous: it runs in a thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def make_template(router: RouterUnderTest, version: dict[str, Any]) -> str:
    """A dynamic template with one active version, made with the Python client."""
    sg = python_client(router)
    made = await call(
        router, sg.client.templates.post, request_body={"name": "Receipt", "generation": "dynamic"}
    )
    assert made.status_code == 201
    template = json.loads(made.body)
    assert re.fullmatch(r"d-[0-9a-f]{32}", template["id"]) and template["versions"] == []
    added = await call(
        router,
        sg.client.templates._(template["id"]).versions.post,
        request_body={"name": "v1", "active": 1, **version},
    )
    assert added.status_code == 201, added.body
    body = json.loads(added.body)
    assert body["active"] == 1 and body["template_id"] == template["id"]
    tid: str = template["id"]
    return tid


def receipt_mail(template_id: str, *recipients: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "from": {"email": SENDER, "name": "Shop"},
        "template_id": template_id,
        "personalizations": [
            {"to": [{"email": address}], "dynamic_template_data": data}
            for address, data in recipients
        ],
    }


def parts(message: Any) -> dict[str, str]:
    out = {}
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            out[part.get_content_type()] = payload.decode()
    return out


async def test_a_template_reaches_a_line_friend_as_flex_and_a_member_as_html(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    await friend(router)
    template_id = await make_template(
        router,
        {
            "subject": "Order {{order}}: {{subject}}",
            "html_content": RECEIPT_HTML,
            "line_messages": [FLEX],
        },
    )
    data_friend = {"name": "Hanako", "order": "A-1", "subject": "thanks", "items": [{}]}
    data_plain = {
        "name": "<Taro & co>",
        "order": "B-2",
        "subject": "thanks",
        "items": [{"title": "Tea", "qty": 2}, {"title": "Cup", "qty": 1}],
        "paid": False,
        "signature": "<b>Shop</b>",
    }
    sg = python_client(router)
    resp = await call(
        router,
        sg.client.mail.send.post,
        request_body=receipt_mail(
            template_id, ("friend@example.jp", data_friend), ("plain@example.org", data_plain)
        ),
    )
    assert resp.status_code == 202
    for intent in await stored_intents(dsn):
        await router.wait_for(intent["id"])

    (push,) = line_sim.accepted_pushes()
    assert push.body["to"] == FRIEND
    (flex,) = push.body["messages"]
    assert flex["type"] == "flex" and flex["altText"] == "Order A-1 for Hanako"
    texts = [c["text"] for c in flex["contents"]["body"]["contents"]]
    assert texts == ["Order A-1", "Hanako: 1 items"]

    (mail,) = smtp.mails
    assert mail.rcpt_to == ["plain@example.org"]
    assert mail.message["Subject"] == "Order B-2: thanks"
    html = parts(mail.message)["text/html"]
    assert "<p>Hello &lt;Taro &amp; co&gt;,</p>" in html
    assert "<li>0. Tea x2</li><li>1. Cup x1</li>" in html
    assert "<p>Payment due.</p>" in html and "<p><b>Shop</b></p>" in html
    # generate_plain_content (the default) makes the text part from the rendered HTML
    assert "Tea x2" in parts(mail.message)["text/plain"]


async def test_node_client_makes_a_template_and_sends_with_it(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    """Without a LINE version, a LINE friend gets the text derived from the rendered email."""
    await friend(router)
    made = await node_clients.request(
        router.base_url,
        API_KEY,
        "POST",
        "/v3/templates",
        {"name": "Welcome", "generation": "dynamic"},
    )
    assert made["status"] == 201, made
    tid = made["body"]["id"]
    version = await node_clients.request(
        router.base_url,
        API_KEY,
        "POST",
        f"/v3/templates/{tid}/versions",
        {"name": "draft", "subject": "Welcome {{name}}", "html_content": "<p>Code {{code}}</p>"},
    )
    assert version["status"] == 201 and version["body"]["active"] == 0
    vid = version["body"]["id"]
    message = {
        "to": ["friend@example.jp", "reader@example.org"],
        "from": SENDER,
        "templateId": tid,
        "dynamicTemplateData": {"name": "Ann", "code": "4711"},
    }
    early = await node_clients.send(router.base_url, API_KEY, message)
    assert early["status"] == 400  # no active version yet: SendGrid's 400 naming template_id
    assert [e["field"] for e in early["body"]["errors"]] == ["template_id"]

    activated = await node_clients.request(
        router.base_url, API_KEY, "POST", f"/v3/templates/{tid}/versions/{vid}/activate"
    )
    assert activated["status"] == 200 and activated["body"]["active"] == 1
    sent = await node_clients.send(router.base_url, API_KEY, message)
    assert sent["status"] == 202, sent
    for intent in await stored_intents(dsn):
        await router.wait_for(intent["id"])
    (push,) = line_sim.accepted_pushes()
    text = push.body["messages"][0]["text"]
    assert text.startswith("Welcome Ann") and "Code 4711" in text
    (mail,) = smtp.mails
    assert mail.rcpt_to == ["reader@example.org"]
    assert mail.message["Subject"] == "Welcome Ann"
    assert "<p>Code 4711</p>" in parts(mail.message)["text/html"]


async def test_templates_api_pages_changes_and_refuses(router: RouterUnderTest) -> None:
    sg = python_client(router)
    ids = []
    for n in range(3):
        made = await call(
            router,
            sg.client.templates.post,
            request_body={"name": f"t{n}", "generation": "dynamic"},
        )
        ids.append(json.loads(made.body)["id"])
    legacy = await call(router, sg.client.templates.post, request_body={"name": "old"})
    assert json.loads(legacy.body)["generation"] == "legacy"

    seen: list[str] = []
    params: dict[str, Any] = {"generations": "dynamic", "page_size": 2}
    while True:
        page = json.loads((await call(router, sg.client.templates.get, query_params=params)).body)
        seen += [t["id"] for t in page["result"]]
        assert page["_metadata"]["count"] == 3
        if "next" not in page["_metadata"]:
            break
        (params["page_token"],) = parse_qs(urlsplit(page["_metadata"]["next"]).query)["page_token"]
    assert seen == ids
    wrong_key = SendGridAPIClient(api_key="SG.wrong", host=router.base_url)
    with pytest.raises(HTTPError) as info:
        await call(router, wrong_key.client.templates.get, query_params=params)
    assert info.value.status_code == 401 and "errors" in info.value.to_dict
    with pytest.raises(HTTPError) as info:  # page_size is required, as with SendGrid
        await call(router, sg.client.templates.get, query_params={"generations": "dynamic"})
    assert info.value.status_code == 400 and "errors" in info.value.to_dict

    versions = sg.client.templates._(ids[0]).versions
    for body, field in (
        ({"name": "v", "subject": "s", "html_content": "{{#if a}}open"}, "html_content"),
        ({"name": "v", "subject": "{{shout name}}", "html_content": "x"}, "subject"),
    ):
        with pytest.raises(HTTPError) as info:
            await call(router, versions.post, request_body=body)
        assert info.value.status_code == 400
        assert [e["field"] for e in info.value.to_dict["errors"]] == [field]
    assert "shout" in info.value.to_dict["errors"][0]["message"]

    made = json.loads(
        (await call(router, versions.post, request_body={"name": "v", "subject": "S"})).body
    )
    changed = await call(
        router, versions._(made["id"]).patch, request_body={"plain_content": "Hi {{name}}"}
    )
    assert json.loads(changed.body)["subject"] == "S"  # fields not given keep their value
    renamed = await call(router, sg.client.templates._(ids[0]).patch, request_body={"name": "x"})
    assert json.loads(renamed.body)["versions"][0]["plain_content"] == "Hi {{name}}"
    assert (await call(router, versions._(made["id"]).delete)).status_code == 204
    assert (await call(router, sg.client.templates._(ids[0]).delete)).status_code == 204
    with pytest.raises(HTTPError) as info:
        await call(router, sg.client.templates._(ids[0]).get)
    assert info.value.status_code == 404 and "errors" in info.value.to_dict


async def test_template_send_errors_name_their_field(router: RouterUnderTest) -> None:
    sg = python_client(router)
    template_id = await make_template(
        router,
        {
            "subject": "Due {{formatDate due 'MMMM D, YYYY'}}",
            "html_content": "<p>{{name}}</p>",
            "line_messages": [{"type": "text", "text": "{{line_text}}"}],
        },
    )

    async def refused(body: dict[str, Any]) -> list[Any]:
        with pytest.raises(HTTPError) as info:
            await call(router, sg.client.mail.send.post, request_body=body)
        assert info.value.status_code == 400
        return [e["field"] for e in info.value.to_dict["errors"]]

    missing = "d-" + "0" * 32
    assert await refused(receipt_mail(missing, ("a@example.org", {}))) == ["template_id"]
    good = {"due": "2026-01-02T00:00:00Z", "line_text": "hi"}
    bad_time = receipt_mail(template_id, ("a@example.org", {**good, "due": "not a date"}))
    assert await refused(bad_time) == ["personalizations.0.dynamic_template_data"]
    # the LINE version renders an empty text, which LINE would refuse
    no_text = receipt_mail(
        template_id, ("a@example.org", good), ("b@example.org", {**good, "line_text": ""})
    )
    assert await refused(no_text) == ["personalizations.1.dynamic_template_data"]

    made = await call(router, sg.client.templates.post, request_body={"name": "legacy"})
    legacy_id = json.loads(made.body)["id"]
    await call(
        router,
        sg.client.templates._(legacy_id).versions.post,
        request_body={
            "name": "v",
            "subject": "[Shop] <%subject%>",
            "html_content": "<div><%body%></div>",
            "active": 1,
        },
    )
    legacy = receipt_mail(legacy_id, ("a@example.org", {"name": "x"}))
    assert await refused(legacy) == ["template_id"]


def test_rendering_follows_handlebars_as_sendgrid_uses_it() -> None:
    data = {
        "name": "<A&B>",
        "items": ["x", "y"],
        "n": 3,
        "vip": False,
        "when": "2026-03-05T14:07:00Z",
    }
    assert render("{{name}}|{{{name}}}", data) == "&lt;A&amp;B&gt;|<A&B>"
    assert render("{{#each items}}{{this}}{{#unless @last}},{{/unless}}{{/each}}", data) == "x,y"
    assert render("{{#if vip}}V{{else if n}}N{{else}}-{{/if}}", data) == "N"
    assert render("{{#equals n 3}}three{{else}}other{{/equals}}", data) == "three"
    assert render("{{#notEquals name 'x'}}ne{{/notEquals}}", data) == "ne"
    assert (
        render("{{#greaterThan n 2}}big{{/greaterThan}}{{#lessThan n 2}}small{{/lessThan}}", data)
        == "big"
    )
    assert render("{{#and n vip}}both{{else}}not both{{/and}}", data) == "not both"
    assert render("{{#or n vip}}one{{/or}} {{length items}}", data) == "one 2"
    assert render("{{insert nickname 'default=Customer'}}", data) == "Customer"
    assert render("{{formatDate when 'dddd, MMMM D, YYYY h:mm A'}}", data) == (
        "Thursday, March 5, 2026 2:07 PM"
    )
    assert render("{{formatDate when 'YYYY-MM-DD HH:mm' '+0900'}}", data) == "2026-03-05 23:07"
    assert render("{{missing.deep}}", data) == ""
    assert render("{{name}}", data, escape=False) == "<A&B>"
    for bad, why in (
        ("{{shout name}}", "unsupported helper 'shout'"),
        ("{{#if (eq n 3)}}x{{/if}}", "unsupported helper 'eq'"),
        ("{{> footer}}", "partials"),
        ("{{#each items}}", "Unclosed"),
    ):
        with pytest.raises(TemplateError, match=re.escape(why)):
            render(bad, data)
    huge = {"xs": list(range(200)), "big": "x" * 10_000}
    with pytest.raises(TemplateError, match="exceeds maximum"):
        render("{{#each xs}}{{{../big}}}{{/each}}", huge)


EXPORT_ID = "d-" + "a" * 32
VERSION_ID = "8f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def export(subject: str) -> list[dict[str, Any]]:
    return [
        {
            "id": EXPORT_ID,
            "name": "Imported",
            "generation": "dynamic",
            "updated_at": "2024-01-01 00:00:00",
            "versions": [
                {
                    "id": VERSION_ID,
                    "template_id": EXPORT_ID,
                    "active": 1,
                    "name": "v1",
                    "subject": subject,
                    "html_content": "<p>{{name}}</p>",
                    "plain_content": "",
                    "generate_plain_content": True,
                    "editor": "code",
                    "updated_at": "2024-01-01 00:00:00",
                }
            ],
        },
        {"id": "d-bad", "name": "Broken", "generation": "dynamic", "versions": "no"},
        {
            "id": "d-" + "b" * 32,
            "name": "Bad helper",
            "generation": "dynamic",
            "versions": [
                {"id": VERSION_ID.replace("8", "9"), "name": "v", "subject": "{{shout x}}"}
            ],
        },
    ]


async def test_import_keeps_ids_is_idempotent_and_names_bad_entries(
    router: RouterUnderTest,
    smtp: SmtpSink,
    dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The `router templates import` command, run in this process (tests/test_cli.py starts
    the command as a process; its imports alone take seconds)."""
    for name in [k for k in os.environ if k.startswith("ROUTER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ROUTER_DATABASE_URL", dsn)
    path = tmp_path / "export.json"

    async def run(entries: list[dict[str, Any]]) -> tuple[int, str, str]:
        path.write_text(json.dumps(entries))
        code = await asyncio.to_thread(cli.main, ["templates", "import", str(path)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await run(export("Hello {{name}}"))
    assert code == 1
    assert out.splitlines() == [f"imported {EXPORT_ID}"]
    refused = err.strip().splitlines()
    assert len(refused) == 2
    assert refused[0].startswith("router: refused entry 1 (d-bad):") and "versions" in refused[0]
    assert "entry 2" in refused[1] and "shout" in refused[1] and "subject" in refused[1]

    # the same export again, the subject changed: replaced, not doubled
    assert await run(export("Hi {{name}}")[:1]) == (0, f"imported {EXPORT_ID}\n", "")
    sg = python_client(router)
    got = json.loads((await call(router, sg.client.templates._(EXPORT_ID).get)).body)
    assert [(v["id"], v["subject"], v["active"]) for v in got["versions"]] == [
        (VERSION_ID, "Hi {{name}}", 1)
    ]
    resp = await call(
        router,
        sg.client.mail.send.post,
        request_body=receipt_mail(EXPORT_ID, ("reader@example.org", {"name": "Ann"})),
    )
    assert resp.status_code == 202
    (intent,) = await stored_intents(dsn)
    await router.wait_for(intent["id"])
    (mail,) = smtp.mails
    assert mail.message["Subject"] == "Hi Ann"
