"""The SendGrid door driven by the official Node libraries (@sendgrid/mail, @sendgrid/client)."""

from __future__ import annotations

from typing import Any

from tests import node_clients
from tests.harness import API_KEY, RouterUnderTest, SmtpSink
from tests.test_compat_sendgrid import stored_intents

SENDER = "shop@example.jp"


async def test_node_mail_send_is_delivered_by_email(
    router: RouterUnderTest, smtp: SmtpSink, dsn: str
) -> None:
    answer = await node_clients.send(
        router.base_url,
        API_KEY,
        {
            "to": "reader@example.org",
            "from": {"email": SENDER, "name": "Shop"},
            "subject": "Receipt",
            "text": "Thank you for your order.",
            "html": "<p>Thank you for your order.</p>",
        },
    )
    assert answer["ok"] and answer["status"] == 202, answer
    message_id = answer["headers"]["x-message-id"]
    assert len(message_id) == 22
    (intent,) = await stored_intents(dsn)
    assert intent["metadata"]["sg_message_id"] == message_id
    await router.wait_for(intent["id"])
    (mail,) = smtp.mails
    assert mail.rcpt_to == ["reader@example.org"]
    assert mail.message["Subject"] == "Receipt"


async def test_node_client_gets_sendgrid_errors(router: RouterUnderTest) -> None:
    answer: dict[str, Any] = await node_clients.send(
        router.base_url, API_KEY, {"to": "reader@example.org", "from": SENDER, "text": "x"}
    )
    assert not answer["ok"] and answer["status"] == 400
    assert [e["field"] for e in answer["body"]["errors"]] == ["subject"]
    wrong = await node_clients.send(
        router.base_url,
        "SG.wrong",
        {"to": "a@example.org", "from": SENDER, "subject": "s", "text": "x"},
    )
    assert wrong["status"] == 401 and "errors" in wrong["body"]
