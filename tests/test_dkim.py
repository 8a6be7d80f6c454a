"""DKIM signatures on composed email, checked by an independent verifier (dkimpy) against the
DNS record `router email dkim-keygen` prints; bad keys and names stop the start; relayed mail
is never signed by the router."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from channels.base import Outbound, Sent
from channels.dkim import DkimSigner, load_signer
from channels.email import RenderedContents, SmtpChannel
from router.config import ConfigError, EmailConfig, load_config
from router.content import Content, EmailContent, Relayed
from tests.harness import SmtpSink, running_router
from tests.test_cli import ROOT, router_env, run_router
from tests.upstream_smtp import upstream

DOMAIN = "shop.example.jp"
SENDER = f"news@{DOMAIN}"


@dataclass(frozen=True)
class Key:
    selector: str
    path: Path
    record: str  # the TXT record's text, the quoted strings joined
    strings: list[str]  # the quoted strings as printed


def keygen(out: Path, selector: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "router", "email", "dkim-keygen", "--domain", DOMAIN),
            *("--selector", selector, "--out", str(out), *extra),
        ],
        cwd=ROOT,
        env=router_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def made_key(out: Path, selector: str, *extra: str) -> Key:
    done = keygen(out, selector, *extra)
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if " IN TXT " in x]
    assert line.startswith(f"{selector}._domainkey.{DOMAIN}. IN TXT ")
    strings = re.findall(r'"([^"]*)"', line)
    assert f'dkim_private_key_file = "{out}"' in done.stdout
    return Key(selector, out, "".join(strings), strings)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """An RSA and an Ed25519 key, made by the command line as an operator would."""
    where = tmp_path_factory.mktemp("dkim")
    return {
        "rsa": made_key(where / "rsa.pem", "rsa2026"),
        "ed25519": made_key(where / "ed.pem", "ed2026", "--algorithm", "ed25519"),
    }


def dns_of(keys: dict[str, Key]) -> dict[str, bytes]:
    return {f"{k.selector}._domainkey.{DOMAIN}": k.record.encode() for k in keys.values()}


def verify(data: bytes, keys: dict[str, Key]) -> list[bool]:
    """Each DKIM-Signature of `data`, verified by dkimpy with the records printed."""
    records = dns_of(keys)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name.decode().rstrip("."))

    count = len(message_from_bytes(data).get_all("DKIM-Signature") or [])
    assert count > 0, "no DKIM-Signature"
    checker = dkim.DKIM(data)

    def one(idx: int) -> bool:
        try:
            return bool(checker.verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.DKIMException:  # a body hash that differs is raised, not returned
            return False

    return [one(i) for i in range(count)]


def signing_config(keys: dict[str, Key], which: str) -> EmailConfig:
    first, *second = [keys[name] for name in which.split("+")]
    extra: dict[str, str] = {}
    if second:
        extra = {
            "dkim_second_selector": second[0].selector,
            "dkim_second_private_key_file": str(second[0].path),
        }
    return EmailConfig(
        host="127.0.0.1",
        from_address=SENDER,
        timeout_seconds=5,
        dkim_domain=DOMAIN,
        dkim_selector=first.selector,
        dkim_private_key_file=str(first.path),
        **extra,  # type: ignore[arg-type]
    )


def outbound(content: Content, relayed: bytes | None = None) -> Outbound:
    return Outbound(
        delivery_id=uuid.uuid4(),
        intent_id=uuid.uuid4(),
        address="taro@example.jp",
        attempt=1,
        content_id=uuid.uuid4().bytes,
        content=content,
        relayed_message=relayed,
    )


def composed(email: EmailContent) -> bytes:
    """The bytes the email channel composes for one recipient (before signing)."""
    _, data = RenderedContents(SENDER).render(outbound(Content(email=email)), email)
    return data


UNSUBSCRIBE = (
    "<https://mail.shop.example.jp/u/" + "A" * 120 + ">, <mailto:unsubscribe@shop.example.jp>"
)
CONTENTS = {
    "plain": EmailContent(subject="Order shipped", text="Your order is on its way.\n"),
    "japanese": EmailContent(
        subject="秋のセールは本日から、全品二割引でお届けします。お見逃しなく。",
        text="秋のセールは本日から。\n  空白  の多い行 \t\n\n\n",
        from_address="ショップ通信 <news@shop.example.jp>",
        reply_to="お問い合わせ <support@shop.example.jp>",
    ),
    "folded-multipart": EmailContent(
        subject="A long subject line " * 6,
        text="Hello,\n\n20% off everything until Sunday.\n",
        html="<p>Hello,</p>\n<p>20% off <b>everything</b> until Sunday.</p>\n",
        headers={
            "List-Unsubscribe": UNSUBSCRIBE,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    ),
}


@pytest.mark.parametrize("content", CONTENTS, ids=list(CONTENTS))
@pytest.mark.parametrize("which", ["rsa", "ed25519", "rsa+ed25519"])
def test_each_signature_verifies_independently(
    keys: dict[str, Key], which: str, content: str
) -> None:
    signer = load_signer(signing_config(keys, which))
    assert signer is not None
    data = composed(CONTENTS[content])
    signature = signer.sign(data)
    assert signature.endswith(b"\r\n") and all(len(line) <= 78 for line in signature.split(b"\r\n"))
    signed = signature + data
    assert verify(signed, keys) == [True] * len(which.split("+"))
    algorithms = re.findall(rb"a=([a-z0-9-]+);", signature)
    expected = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
    assert algorithms == [expected[name] for name in which.split("+")]


def test_signed_fields_timestamp_and_over_signed_from(keys: dict[str, Key]) -> None:
    signer = load_signer(signing_config(keys, "rsa"))
    assert signer is not None
    data = composed(CONTENTS["folded-multipart"])
    before = int(time.time())
    fields = message_from_bytes(signer.sign(data) + data)["DKIM-Signature"]
    tags = dict(
        tag.strip().split("=", 1) for tag in re.sub(r"\s+", "", str(fields)).split(";") if tag
    )
    assert tags["d"] == DOMAIN and tags["s"] == "rsa2026" and tags["c"] == "relaxed/relaxed"
    assert before <= int(tags["t"]) <= int(time.time())
    assert tags["h"].split(":") == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "mime-version",
        "content-type",
        "from",
    ]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"20% off", b"90% off"),
        lambda m: m.replace(b"Subject: A long", b"Subject: A short"),
        # A second From, added on the way: From is signed once more than it occurs.
        lambda m: m.replace(b"To: ", b"From: Boss <boss@example.jp>\r\nTo: ", 1),
    ],
    ids=["body", "subject", "second-from"],
)
def test_a_changed_message_fails_verification(keys: dict[str, Key], tamper: object) -> None:
    signer = load_signer(signing_config(keys, "rsa+ed25519"))
    assert signer is not None
    signed = signer.sign(data := composed(CONTENTS["folded-multipart"])) + data
    assert verify(signed, keys) == [True, True]
    changed = tamper(signed)  # type: ignore[operator]
    assert changed != signed
    assert verify(changed, keys) == [False, False]


def test_whitespace_changes_on_the_way_still_verify(keys: dict[str, Key]) -> None:
    """relaxed/relaxed: refolded headers and trailing spaces added by relays do not break it."""
    signer = load_signer(signing_config(keys, "ed25519"))
    assert signer is not None
    signed = signer.sign(data := composed(CONTENTS["plain"])) + data
    refolded = signed.replace(b"Subject: Order", b"Subject:\r\n \t Order").replace(
        b"on its way.\r\n", b"on  its way.  \r\n\r\n"
    )
    assert verify(refolded, keys) == [True]


def test_a_message_without_from_is_not_signed(keys: dict[str, Key]) -> None:
    signer = load_signer(signing_config(keys, "rsa"))
    assert isinstance(signer, DkimSigner)
    with pytest.raises(ValueError, match="From"):
        signer.sign(b"To: a@example.jp\r\nSubject: x\r\n\r\nbody\r\n")


async def test_a_composed_email_through_the_router_arrives_signed_twice(
    dsn: str, smtp: SmtpSink, keys: dict[str, Key]
) -> None:
    env = {
        "ROUTER_EMAIL_DKIM_DOMAIN": DOMAIN,
        "ROUTER_EMAIL_DKIM_SELECTOR": keys["rsa"].selector,
        "ROUTER_EMAIL_DKIM_PRIVATE_KEY_FILE": str(keys["rsa"].path),
        "ROUTER_EMAIL_DKIM_SECOND_SELECTOR": keys["ed25519"].selector,
        "ROUTER_EMAIL_DKIM_SECOND_PRIVATE_KEY_FILE": str(keys["ed25519"].path),
    }
    async with running_router(dsn, None, smtp, **env) as router:
        resp = await router.client.post(
            "/v1/intents",
            json={
                "email_address": "hanako@example.jp",
                "email": {
                    "subject": "ご注文の品を発送しました",
                    "from": "ショップ <news@shop.example.jp>",
                    "text": "ご注文ありがとうございます。\n",
                    "html": "<p>ご注文ありがとうございます。</p>\n",
                },
            },
        )
        assert resp.status_code == 202, resp.text
        await router.wait_for(resp.json()["id"])
    (mail,) = smtp.mails
    assert mail.data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert verify(mail.data, keys) == [True, True]


async def test_relayed_mail_goes_out_unchanged_and_unsigned(keys: dict[str, Key]) -> None:
    relayed_bytes = (
        "From: Shop <news@shop.example.jp>\r\n"
        "To: taro@example.jp\r\n"
        "Subject: =?utf-8?b?56eL44Gu44K744O844Or?=\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "秋のセールは本日から。\r\n"
    ).encode()
    relayed = Relayed(message_sha256="00" * 32, envelope_from="bounce@shop.example.jp")
    content = Content(email=EmailContent(subject="秋のセール", text="x"), relayed=relayed)
    plain = Content(email=EmailContent(subject="Order", text="Shipped."))
    with upstream() as (server, port):
        config = signing_config(keys, "rsa+ed25519")
        config.port = port
        channel = SmtpChannel(config)
        try:
            outcomes = await channel.send([outbound(content, relayed_bytes)])
            outcomes += await channel.send([outbound(plain)])
        finally:
            await channel.aclose()
    assert all(isinstance(o, Sent) for o in outcomes), outcomes
    relayed_mail, composed_mail = server.received()
    assert relayed_mail.data == relayed_bytes
    assert b"DKIM-Signature" not in relayed_mail.data
    # The same channel signs what it composes.
    assert verify(composed_mail.data, keys) == [True, True]


# --- keys and names that stop the start ---


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def bad_settings(tmp_path: Path, keys: dict[str, Key]) -> dict[str, tuple[dict[str, str], str]]:
    """Environment settings and the message each must stop the start with."""
    small = tmp_path / "small.pem"
    small.write_bytes(pem_of(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    p256 = tmp_path / "p256.pem"
    p256.write_bytes(pem_of(ec.generate_private_key(ec.SECP256R1())))
    text = tmp_path / "notes.pem"
    text.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    public = tmp_path / "public.pem"
    public.write_bytes(
        serialization.load_pem_private_key(keys["rsa"].path.read_bytes(), None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    good = str(keys["rsa"].path)

    def env(key_file: str, domain: str = DOMAIN, selector: str = "s1") -> dict[str, str]:
        return {
            "ROUTER_EMAIL_DKIM_DOMAIN": domain,
            "ROUTER_EMAIL_DKIM_SELECTOR": selector,
            "ROUTER_EMAIL_DKIM_PRIVATE_KEY_FILE": key_file,
        }

    missing = str(tmp_path / "missing.pem")
    return {
        "missing": (env(missing), rf"dkim_private_key_file '{missing}' cannot be read"),
        "not-pem": (env(str(text)), r"dkim_private_key_file .* is not a PEM private key"),
        "public-key": (env(str(public)), r"dkim_private_key_file .* is not a PEM private key"),
        "rsa-1024": (env(str(small)), r"RSA key of 1024 bits; DKIM needs at least 2048"),
        "ec-key": (env(str(p256)), r"is an EC \(ECDSA\) key; DKIM signs with RSA"),
        "domain": (env(good, domain="shop_example"), r"dkim_domain 'shop_example' is not a"),
        "selector": (env(good, selector="s 1"), r"dkim_selector 's 1' may hold only"),
        "key-without-domain": (
            env(good, domain=""),
            r"dkim_selector and dkim_private_key_file need dkim_domain",
        ),
        "domain-without-key": (
            env("", selector=""),
            r"dkim_domain needs dkim_selector and dkim_private_key_file",
        ),
        "second-without-file": (
            env(good) | {"ROUTER_EMAIL_DKIM_SECOND_SELECTOR": "ed1"},
            r"dkim_second_selector and dkim_second_private_key_file go together",
        ),
        "second-key-bad": (
            env(good)
            | {
                "ROUTER_EMAIL_DKIM_SECOND_SELECTOR": "ed1",
                "ROUTER_EMAIL_DKIM_SECOND_PRIVATE_KEY_FILE": str(text),
            },
            r"dkim_second_private_key_file .* is not a PEM private key",
        ),
    }


def test_bad_keys_and_names_are_refused_naming_the_key(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    for case, (env, message) in bad_settings(tmp_path, keys).items():
        with pytest.raises(ConfigError, match=message) as raised:
            load_config(None, env)
        assert "\n" not in str(raised.value), case
        assert str(raised.value).startswith("[email] dkim_"), case
    good = {
        "ROUTER_EMAIL_DKIM_DOMAIN": DOMAIN,
        "ROUTER_EMAIL_DKIM_SELECTOR": "rsa2026",
        "ROUTER_EMAIL_DKIM_PRIVATE_KEY_FILE": str(keys["rsa"].path),
    }
    assert load_config(None, good).email.dkim_domain == DOMAIN


async def test_serve_with_a_malformed_key_stops_with_one_line(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    env, _ = bad_settings(tmp_path, keys)["not-pem"]
    code, out, err = await run_router("serve", env=router_env(**env))
    assert code == 2, out + err
    assert err.splitlines() == [
        f"router: [email] dkim_private_key_file '{tmp_path / 'notes.pem'}' is not a PEM private key"
    ]
    assert "listening" not in out


def test_keygen_writes_a_private_key_once_and_splits_the_rsa_record(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    rsa_key = keys["rsa"]
    assert rsa_key.path.stat().st_mode & 0o777 == 0o600
    assert len(rsa_key.strings) > 1 and all(len(s) <= 255 for s in rsa_key.strings)
    assert rsa_key.record.startswith("v=DKIM1; k=rsa; p=")
    assert keys["ed25519"].record.startswith("v=DKIM1; k=ed25519; p=")
    before = rsa_key.path.read_bytes()
    again = keygen(rsa_key.path, "other")
    assert again.returncode == 1
    assert "File exists" in again.stderr and "never replaced" in again.stderr
    assert rsa_key.path.read_bytes() == before
    weak = keygen(tmp_path / "weak.pem", "weak", "--bits", "1024")
    assert weak.returncode == 2 and "at least 2048" in weak.stderr
    assert not (tmp_path / "weak.pem").exists()
