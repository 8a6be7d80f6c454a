"""SendGrid unsubscribe groups (`/v3/asm/groups`, group suppressions) over the router's
category opt-outs, driven by the official Python and Node clients."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Asm, GroupId, SendAt

from tests import node_clients
from tests.harness import API_KEY, RouterUnderTest, SmtpSink
from tests.test_compat_sendgrid import error_fields, newsletter, refused, send, stored_intents

READER = "reader@example.org"


def client(r: RouterUnderTest) -> Any:
    return SendGridAPIClient(api_key=API_KEY, host=r.base_url).client


async def call(request: Any, **kwargs: Any) -> Any:
    """One call of the synchronous client, in a thread."""
    return await asyncio.to_thread(request, **kwargs)


async def new_group(r: RouterUnderTest, name: str) -> int:
    made = await call(
        client(r).asm.groups.post,
        request_body={"name": name, "description": f"{name} mail", "is_default": False},
    )
    assert made.status_code == 201
    body = made.to_dict
    assert body["name"] == name and body["unsubscribes"] == 0
    group_id: int = body["id"]
    return group_id


def grouped(group_id: int, *recipients: str) -> Any:
    mail = newsletter(*recipients)
    mail.asm = Asm(GroupId(group_id))
    return mail


async def test_group_suppression_stops_that_groups_mail_and_no_other(
    router: RouterUnderTest, smtp: SmtpSink, dsn: str
) -> None:
    sg = client(router)
    news = await new_group(router, "News")
    alerts = await new_group(router, "Alerts")

    unknown = await refused(router, grouped(news + alerts + 1, READER))
    assert unknown.status_code == 400 and error_fields(unknown) == ["asm.group_id"]

    assert (await send(router, grouped(news, READER))).status_code == 202
    (first,) = await stored_intents(dsn)
    await router.wait_for(first["id"])

    # A later send with the group is scheduled before the address is suppressed: the
    # check at its send refuses it too.
    later = grouped(news, "later@example.org")
    later.send_at = SendAt(int(time.time()) + 2)
    assert (await send(router, later)).status_code == 202

    added = await call(
        sg.asm.groups._(news).suppressions.post,
        request_body={"recipient_emails": [READER, "later@example.org"]},
    )
    assert added.status_code == 201
    assert sorted(added.to_dict["recipient_emails"]) == ["later@example.org", READER]
    assert (await call(sg.asm.groups._(news).get)).to_dict["unsubscribes"] == 2
    listed = await call(sg.asm.groups._(news).suppressions.get)
    assert sorted(listed.to_dict) == ["later@example.org", READER]
    found = await call(
        sg.asm.groups._(news).suppressions.search.post,
        request_body={"recipient_emails": [READER, "other@example.org"]},
    )
    assert found.to_dict == [READER]
    groups = (await call(sg.asm.suppressions._(READER).get)).to_dict["suppressions"]
    assert {g["name"]: g["suppressed"] for g in groups} == {"News": True, "Alerts": False}
    every = (await call(sg.asm.suppressions.get)).to_dict
    assert {(s["email"], s["group_name"]) for s in every} == {
        (READER, "News"),
        ("later@example.org", "News"),
    }

    # The group's mail is refused for the reader; the other group's still reaches them.
    stopped = await refused(router, grouped(news, READER))
    assert stopped.status_code == 400 and "asm-" in stopped.to_dict["errors"][0]["message"]
    assert (await send(router, grouped(alerts, READER))).status_code == 202
    intents = {i["id"]: i for i in await stored_intents(dsn)}
    last = list(intents)[-1]
    await router.wait_for(last)
    later_id = next(i for i, v in intents.items() if v["email_address"] == "later@example.org")
    refusal = await router.wait_for(later_id, ("failed",))
    assert "unsubscribed from 'asm-" in refusal["deliveries"][0]["last_error"]
    assert [m.rcpt_to for m in smtp.mails] == [[READER], [READER]]

    # Lifting the suppression and deleting the group.
    lifted = await call(sg.asm.groups._(news).suppressions._(READER).delete)
    assert lifted.status_code == 204
    with pytest.raises(HTTPError) as again:
        await call(sg.asm.groups._(news).suppressions._(READER).delete)
    assert again.value.status_code == 404 and "errors" in again.value.to_dict
    assert (await call(sg.asm.groups._(news).delete)).status_code == 204
    with pytest.raises(HTTPError) as gone:
        await call(sg.asm.groups._(news).get)
    assert gone.value.status_code == 404 and "errors" in gone.value.to_dict
    assert (await call(sg.asm.suppressions.get)).to_dict == []


async def test_node_client_manages_groups(router: RouterUnderTest) -> None:
    async def request(method: str, url: str, body: Any = None) -> dict[str, Any]:
        return await node_clients.request(router.base_url, API_KEY, method, url, body)

    made = await request("POST", "/v3/asm/groups", {"name": "Weekly", "description": "w"})
    assert made["status"] == 201, made
    group_id = made["body"]["id"]
    taken = await request("POST", "/v3/asm/groups", {"name": "Weekly"})
    assert taken["status"] == 400 and taken["body"]["errors"][0]["field"] == "name"
    changed = await request("PATCH", f"/v3/asm/groups/{group_id}", {"is_default": True})
    assert changed["status"] == 201 and changed["body"]["is_default"] is True
    added = await request(
        "POST", f"/v3/asm/groups/{group_id}/suppressions", {"recipient_emails": [READER]}
    )
    assert added["status"] == 201, added
    listed = await request("GET", "/v3/asm/groups")
    assert [(g["name"], g["unsubscribes"]) for g in listed["body"]] == [("Weekly", 1)]
    bad = await request(
        "POST", f"/v3/asm/groups/{group_id}/suppressions", {"recipient_emails": ["nope"]}
    )
    assert bad["status"] == 400 and bad["body"]["errors"][0]["field"] == "recipient_emails.0"
    missing = await request("GET", "/v3/asm/groups/999999")
    assert missing["status"] == 404 and "errors" in missing["body"]
