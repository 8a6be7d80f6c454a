"""The relay speaks SMTP as mail systems expect: EHLO keywords, enhanced status codes,
pipelined commands, SMTPUTF8 refused with the right codes, BODY=8BITMIME carried on to the
upstream with the message byte for byte, and a 250 that resolves to every recipient's intent;
the upstream's queue id is kept on the delivery and shown where its Message-ID is."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import aiosmtplib

from channels.dkim import generate_key
from tests.harness import SmtpSink
from tests.test_delivery_events import at_least, receiver, router_with_events
from tests.test_smtp_ingress import HASHED, PASSWORD, USER, campaign, ingress, wait_until
from tests.upstream_smtp import upstream

EIGHT_BIT = (
    "From: Shop <news@shop.example.jp>\r\n"
    "To: mail@example.jp\r\n"
    "Subject: =?utf-8?b?56eL44Gu44K744O844Or?=\r\n"
    "Message-ID: <eight-bit@shop.example.jp>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "秋のセールは本日から。 https://shop.example.jp/sale\r\n"
).encode()


async def connected(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    await client.ehlo()
    return client


async def test_ehlo_offers_pipelining_and_enhanced_codes_and_every_reply_has_one(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with ingress(dsn, line_sim, smtp) as (_, port):
        client = await connected(port)
        offered = client.esmtp_extensions
        assert {"pipelining", "enhancedstatuscodes", "8bitmime", "size", "auth"} <= set(offered)
        assert "smtputf8" not in offered
        # aiosmtpd's own replies, which carry no enhanced code of their own
        before_auth = await client.execute_command(b"MAIL", b"FROM:<a@shop.example.jp>")
        assert (before_auth.code, before_auth.message[:6]) == (530, "5.7.0 ")
        await client.login(USER, PASSWORD)
        noop = await client.execute_command(b"NOOP")
        assert noop.message == "2.0.0 OK"
        out_of_order = await client.execute_command(b"RCPT", b"TO:<mail@example.jp>")
        assert out_of_order.code == 503 and out_of_order.message.startswith("5.5.1 ")
        unknown = await client.execute_command(b"BOGUS")
        assert unknown.code == 500 and unknown.message.startswith("5.5.2 ")
        await client.quit()


async def test_non_ascii_addresses_are_refused_with_553_and_smtputf8_with_555(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with ingress(dsn, line_sim, smtp) as (_, port):
        client = await connected(port)
        await client.login(USER, PASSWORD)
        utf8_sender = await client.execute_command("MAIL FROM:<店@shop.example.jp>".encode())
        assert utf8_sender.code == 553 and utf8_sender.message.startswith("5.6.7 ")
        smtputf8 = await client.execute_command(b"MAIL FROM:<a@shop.example.jp> SMTPUTF8")
        assert smtputf8.code == 555 and smtputf8.message.startswith("5.5.4 ")
        ok = await client.execute_command(b"MAIL FROM:<a@shop.example.jp> BODY=8BITMIME")
        assert ok.code == 250
        utf8_rcpt = await client.execute_command("RCPT TO:<たろう@example.jp>".encode())
        assert utf8_rcpt.code == 553 and utf8_rcpt.message.startswith("5.6.7 ")
        assert "strict ASCII" not in utf8_rcpt.message
        await client.quit()


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One (possibly multi-line) reply."""
    lines = [await reader.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(await reader.readline())
    return b"".join(lines)


async def test_pipelined_8bit_message_goes_upstream_byte_for_byte_with_body_8bitmime(
    dsn: str, line_sim: Any, smtp: SmtpSink, tmp_path: Path
) -> None:
    recipients = [b"mail@example.jp", b"stranger@example.org", b"other@example.org"]
    # DKIM signing is on, for the mail the router composes: relayed mail stays as it came.
    key = tmp_path / "dkim.pem"
    key.write_bytes(generate_key("ed25519").pem)
    signing = {
        "ROUTER_EMAIL_DKIM_DOMAIN": "shop.example.jp",
        "ROUTER_EMAIL_DKIM_SELECTOR": "ed2026",
        "ROUTER_EMAIL_DKIM_PRIVATE_KEY_FILE": str(key),
    }
    with upstream() as (server, upstream_port):
        async with ingress(
            dsn, line_sim, smtp, ROUTER_EMAIL_PORT=str(upstream_port), **signing
        ) as (r, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                assert (await read_reply(reader)).startswith(b"220 ")
                writer.write(b"EHLO mta.shop.example.jp\r\n")
                assert b"250-PIPELINING" in await read_reply(reader)
                token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
                writer.write(b"AUTH PLAIN " + token + b"\r\n")
                assert (await read_reply(reader)).startswith(b"235 2.7.0")
                # one write, as a pipelining client (Postfix) sends it
                writer.write(
                    b"MAIL FROM:<bounce@shop.example.jp> BODY=8BITMIME\r\n"
                    + b"".join(b"RCPT TO:<" + rcpt + b">\r\n" for rcpt in recipients)
                    + b"DATA\r\n"
                )
                replies = [await read_reply(reader) for _ in range(len(recipients) + 2)]
                assert [reply[:4] for reply in replies] == [b"250 "] * 4 + [b"354 "]
                writer.write(EIGHT_BIT + b".\r\n")
                final = (await read_reply(reader)).decode()
                writer.write(b"QUIT\r\n")
                assert (await read_reply(reader)).startswith(b"221 ")
            finally:
                writer.close()
            assert final.startswith("250 2.0.0 OK: 3 recipient(s) queued as ")
            assert final.endswith("\r\n") and final.count("\r\n") == 1 and len(final) < 512
            reference = final.split()[-1]
            # the reference names every recipient's intent
            found = await r.client.get(f"/v1/relayed-messages/{reference}")
            assert found.status_code == 200, found.text
            named = [i["member_id"] or i["email_address"] for i in found.json()["intents"]]
            assert sorted(named) == ["mail", "other@example.org", "stranger@example.org"]
            for intent in found.json()["intents"]:
                await r.wait_for(intent["id"])
            bad = await r.client.get("/v1/relayed-messages/not-a-reference")
            assert bad.status_code == 400
            unknown = await r.client.get("/v1/relayed-messages/" + "0" * 64)
            assert unknown.status_code == 404
    mails = server.received()
    assert sorted(m.rcpt_to[0] for m in mails) == sorted(a.decode() for a in recipients)
    for mail in mails:
        assert mail.data == EIGHT_BIT
        assert b"DKIM-Signature" not in mail.data
        assert "BODY=8BITMIME" in mail.mail_options
        assert mail.mail_from == "bounce@shop.example.jp"


async def test_upstream_queue_id_is_kept_beside_the_message_id(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    with upstream() as (server, upstream_port):
        async with (
            receiver() as hook,
            router_with_events(
                dsn,
                line_sim,
                smtp,
                hook,
                ROUTER_EMAIL_PORT=str(upstream_port),
                ROUTER_SMTP_INGRESS_USERS=f"{USER}:{HASHED}",
            ) as r,
        ):
            member = {"email": "hanako@example.jp"}
            assert (await r.client.put("/v1/members/m-1", json=member)).status_code == 201
            resp = await r.client.post(
                "/v1/intents",
                json={"member_id": "m-1", "email": {"subject": "Order", "text": "Shipped."}},
            )
            intent_id = resp.json()["id"]
            body = await r.wait_for(intent_id)
            events = await hook.wait_until(at_least(2))
    (mail,) = server.received()
    (delivery,) = body["deliveries"]
    queue_reply = f"250 2.0.0 Ok: queued as {mail.queue_id}"
    assert delivery["smtp_queue_id"] == queue_reply
    assert (
        delivery["provider_ref"] == mail.data.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
    )
    delivered = next(e for e in events if e["event"] == "delivered")
    assert delivered["response"] == queue_reply
    assert delivered["smtp-id"] == delivery["provider_ref"]


async def test_a_campaign_through_the_relay_records_each_queue_id(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    with upstream() as (server, upstream_port):
        async with ingress(dsn, line_sim, smtp, ROUTER_EMAIL_PORT=str(upstream_port)) as (r, port):
            client = await connected(port)
            await client.login(USER, PASSWORD)
            _, reply = await client.sendmail(
                "bounce@shop.example.jp",
                ["mail@example.jp", "stranger@example.org"],
                campaign(["mail@example.jp", "stranger@example.org"]),
            )
            await client.quit()
            await wait_until(lambda: len(server.received()) == 2)
            found = await r.client.get(f"/v1/relayed-messages/{reply.split()[-1]}")
            intents = [await r.wait_for(i["id"]) for i in found.json()["intents"]]
    queue_ids = {f"250 2.0.0 Ok: queued as {m.queue_id}" for m in server.received()}
    assert {i["deliveries"][0]["smtp_queue_id"] for i in intents} == queue_ids
