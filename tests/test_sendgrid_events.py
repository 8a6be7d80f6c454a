"""Delivery events as SendGrid posts them: custom_args at the top level, the SMTP facts
(`ip`, `tls`, `status`, `bounce_classification`, `response`), and SendGrid's ECDSA signature,
checked with SendGrid's own verifiers (Python `sendgrid`, Node `@sendgrid/eventwebhook`)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import Asm, CustomArg, GroupId, Personalization, To

from router.cli import main
from tests import node_clients
from tests.harness import SmtpSink
from tests.test_compat_sendgrid import newsletter
from tests.test_compat_sendgrid import send as sendgrid_send
from tests.test_delivery_events import Event, Receiver, receiver, router_with_events

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


async def public_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, dsn: str
) -> str:
    """What `router events public-key` prints for this database (run as its own program
    would be: in a thread, outside this event loop)."""
    monkeypatch.setenv("ROUTER_DATABASE_URL", dsn)
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["events", "public-key"]) == 0
    printed = capsys.readouterr().out.strip()
    assert "\n" not in printed
    return printed


def of(events: list[Event], email: str) -> dict[str, Event]:
    return {e["event"]: e for e in events if e["email"] == email}


async def check_signatures(hook: Receiver, key: str) -> None:
    """Every post verifies with both of SendGrid's verifiers; a changed body with neither."""
    python = EventWebhook(key)
    assert hook.posts
    for body, headers in hook.posts:
        payload, signature, timestamp = body.decode(), headers[SIGNATURE], headers[TIMESTAMP]
        assert python.verify_signature(payload, signature, timestamp)
        assert await node_clients.verify_signature(key, payload, signature, timestamp)
    body, headers = hook.posts[-1]
    tampered = body.decode().replace('"event":', '"event" :', 1)
    assert tampered != body.decode()
    assert not python.verify_signature(tampered, headers[SIGNATURE], headers[TIMESTAMP])
    assert not await node_clients.verify_signature(
        key, tampered, headers[SIGNATURE], headers[TIMESTAMP]
    )
    later = str(int(headers[TIMESTAMP]) + 1)
    assert not python.verify_signature(body.decode(), headers[SIGNATURE], later)


async def test_sendgrid_sends_come_back_with_custom_args_smtp_facts_and_sendgrids_signature(
    dsn: str,
    line_sim: Any,
    smtp: SmtpSink,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mail = newsletter("kept@example.org")
    mail.add_custom_arg(CustomArg("order", 1234))  # an int: SendGrid takes it, posts "1234"
    mail.add_custom_arg(CustomArg("vip", True))
    mail.add_custom_arg(CustomArg("shop", "渋谷店"))
    mail.add_custom_arg(CustomArg("event", "mine"))  # SendGrid's own field name: left off
    personal = Personalization()
    personal.add_to(To("gone@example.org"))
    personal.add_custom_arg(CustomArg("order", 99.5))  # the personalization's wins
    mail.add_personalization(personal)
    smtp.refuse("gone@example.org", "550 5.1.1 <gone@example.org>: Recipient address rejected")
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        made = await r.client.post("/v3/asm/groups", json={"name": "News"})
        assert made.status_code == 201, made.text
        group_id = made.json()["id"]
        mail.asm = Asm(GroupId(group_id))
        resp = await sendgrid_send(r, mail)
        assert resp.status_code == 202
        events = await hook.wait_until(lambda seen: len(seen) >= 4)
        # an intent of the router's own API: its metadata.custom_args are echoed too
        smtp.fail_next_rcpt("451 4.2.0 mailbox busy, try later")
        metadata = {"custom_args": {"ref": "A-1", "n": 3, "deep": {"no": 1}}, "other": "x"}
        resp = await r.client.post(
            "/v1/intents",
            json={
                "email_address": "api@example.org",
                "email": {"subject": "Hi", "text": "Hello"},
                "metadata": metadata,
            },
        )
        assert resp.status_code == 202, resp.text
        await r.wait_for(resp.json()["id"])
        events = await hook.wait_until(lambda seen: len(seen) >= 7)
        key = await public_key(capsys, monkeypatch, dsn)

    kept, gone = of(events, "kept@example.org"), of(events, "gone@example.org")
    api = of(events, "api@example.org")
    assert set(kept) == {"processed", "delivered"} and set(gone) == {"processed", "bounce"}
    assert set(api) == {"processed", "deferred", "delivered"}
    for e in [*kept.values(), *gone.values()]:
        assert e["vip"] == "true" and e["shop"] == "渋谷店" and e["asm_group_id"] == group_id
        assert e["event"] in ("processed", "delivered", "bounce")
    assert kept["processed"]["order"] == kept["delivered"]["order"] == "1234"
    assert gone["processed"]["order"] == gone["bounce"]["order"] == "99.5"

    delivered = kept["delivered"]
    assert delivered["response"].startswith("250 ")
    assert delivered["ip"] == "127.0.0.1" and delivered["tls"] == 0
    assert "status" not in delivered and "bounce_classification" not in delivered
    assert "ip" not in kept["processed"] and "response" not in kept["processed"]

    bounce = gone["bounce"]
    assert bounce["status"] == "5.1.1" and bounce["bounce_classification"] == "Invalid Address"
    assert bounce["type"] == "bounce" and "Recipient address rejected" in bounce["reason"]
    assert bounce["ip"] == "127.0.0.1" and bounce["tls"] == 0

    deferred = api["deferred"]
    assert deferred["status"] == "4.2.0" and "bounce_classification" not in deferred
    for e in api.values():
        assert e["ref"] == "A-1" and e["n"] == "3"
        assert "deep" not in e and "other" not in e and "custom_args" not in e
    assert api["delivered"]["response"].startswith("250 ")

    await check_signatures(hook, key)


def write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


async def test_a_configured_key_file_signs_the_posts_and_is_what_the_cli_prints(
    dsn: str,
    line_sim: Any,
    smtp: SmtpSink,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own = ec.generate_private_key(ec.SECP256R1())
    write_key(tmp_path / "events.pem", own)
    expected = base64.b64encode(
        own.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    monkeypatch.setenv("ROUTER_EVENTS_SIGNING_KEY_FILE", str(tmp_path / "events.pem"))
    assert await public_key(capsys, monkeypatch, dsn) == expected

    env = {"ROUTER_EVENTS_SIGNING_KEY_FILE": str(tmp_path / "events.pem")}
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook, **env) as r:
        assert (await sendgrid_send(r, newsletter("a@example.org"))).status_code == 202
        await hook.wait_until(lambda seen: len(seen) >= 2)
    await check_signatures(hook, expected)

    # a key SendGrid's verifiers cannot use stops the command (and the start) with a reason
    write_key(tmp_path / "rsa.pem", rsa.generate_private_key(65537, 2048))
    monkeypatch.setenv("ROUTER_EVENTS_SIGNING_KEY_FILE", str(tmp_path / "rsa.pem"))
    assert await asyncio.to_thread(main, ["events", "public-key"]) == 2
    assert "must be an EC key on P-256" in capsys.readouterr().err
