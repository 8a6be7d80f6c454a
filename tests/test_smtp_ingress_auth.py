"""SMTP AUTH on the relay resists guessing, and an ingress that could accept nobody does not
start: real aiosmtplib clients against the real listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from router.config import ConfigError, load_config
from router.ingress import smtp_auth
from router.ingress.smtp_auth import AuthGuard, address_key
from router.passwords import verify_password
from tests.harness import SmtpSink, _free_port
from tests.test_smtp_ingress import HASHED, PASSWORD, USER, campaign, ingress, wait_until
from tests.upstream_smtp import make_private_ca

WRONG = "not-the-password-7f3"


class Recorder(logging.Handler):
    """The relay's AUTH log lines (the app's logging set-up replaces the root's handlers, so
    pytest's caplog would miss them)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def auth_log() -> Iterator[Recorder]:
    logger = logging.getLogger("router.ingress.smtp_auth")
    recorder = Recorder()
    logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)


async def connected(port: int, **options: Any) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, **options)
    await client.connect()
    await client.ehlo()
    return client


async def test_guessing_is_cut_off_per_connection_and_slowed_per_address(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    limits = {"ROUTER_SMTP_INGRESS_AUTH_DELAY_SECONDS": "1"}
    with auth_log() as log:
        async with ingress(dsn, line_sim, smtp, **limits) as (_, port):
            await guess_then_wait(port, smtp)
    failures = [line for line in log.lines if line.startswith("SMTP AUTH failed")]
    lockouts = [line for line in log.lines if line.startswith("SMTP AUTH locked out")]
    assert len(failures) == 3 and len(lockouts) == 1
    assert all("127.0.0.1" in line and repr(USER) in line for line in failures)
    assert "closing the connection" in failures[-1] and "127.0.0.1" in lockouts[0]
    assert not any(WRONG in line or PASSWORD in line for line in log.lines)


async def guess_then_wait(port: int, smtp: SmtpSink) -> None:
    """Three wrong passwords on one connection, then the right one from a new connection."""
    guesser = await connected(port)
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
            await guesser.auth_plain(USER, WRONG)
        assert wrong.value.code == 535 and wrong.value.message.startswith("5.7.8 ")
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as third:
        await guesser.auth_plain(USER, WRONG)
    assert third.value.code == 421 and third.value.message.startswith("4.7.0 ")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await guesser.auth_plain(USER, PASSWORD)  # the 4th attempt finds no connection

    # A new connection from the same address must wait, even with the right password.
    patient = await connected(port)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as waiting:
        await patient.auth_plain(USER, PASSWORD)
    assert waiting.value.code == 454 and waiting.value.message.startswith("4.7.0 ")
    seconds = re.search(r"try again in (\d+) s", waiting.value.message)
    assert seconds is not None
    await patient.quit()
    await asyncio.sleep(int(seconds[1]))

    # Once the wait has passed, the right password works (and clears the address).
    sender = await connected(port)
    await sender.auth_plain(USER, PASSWORD)
    await sender.sendmail("a@shop.example.jp", ["mail@example.jp"], campaign(["x@y.jp"]))
    await sender.quit()
    await wait_until(lambda: len(smtp.mails) == 1)


async def test_an_unknown_user_is_logged_by_a_hash_only(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    with auth_log() as log:
        async with ingress(dsn, line_sim, smtp) as (_, port):
            client = await connected(port)
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.auth_plain("taro@example.jp", WRONG)
            await client.quit()
    (line,) = log.lines
    assert "unknown user sha256:" in line and "taro" not in line


def test_the_wait_doubles_with_each_failure_and_a_success_clears_it() -> None:
    now = [1000.0]
    guard = AuthGuard(3, 2.0, max_delay=10.0, clock=lambda: now[0])
    for _ in range(2):
        guard.failed("192.0.2.7", "'u'", on_connection=1)
    assert guard.wait_left("192.0.2.7") == 0
    waits = []
    for _ in range(4):
        guard.failed("192.0.2.7", "'u'", on_connection=1)
        waits.append(guard.wait_left("192.0.2.7"))
    assert waits == [2.0, 4.0, 8.0, 10.0]
    assert guard.wait_left("192.0.2.8") == 0
    guard.succeeded("192.0.2.7")
    assert guard.wait_left("192.0.2.7") == 0
    # one IPv6 site is one address
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"


def test_an_ingress_off_loopback_without_tls_is_refused_with_the_fix() -> None:
    users = {"ROUTER_SMTP_INGRESS_USERS": f"{USER}:{HASHED}"}
    with pytest.raises(ConfigError) as refused:
        load_config(None, {"ROUTER_SMTP_INGRESS_LISTEN": "0.0.0.0:2525", **users})
    message = str(refused.value)
    assert "0.0.0.0:2525" in message and "set tls_cert and tls_key" in message
    assert "listen on 127.0.0.1" in message and "\n" not in message
    # without users the ingress is off anyway; on loopback AUTH needs no TLS
    load_config(None, {"ROUTER_SMTP_INGRESS_LISTEN": "0.0.0.0:2525"})
    load_config(None, {"ROUTER_SMTP_INGRESS_LISTEN": "[::1]:2525", **users})


def test_router_serve_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env |= {
        "ROUTER_SMTP_INGRESS_LISTEN": "0.0.0.0:2525",
        "ROUTER_SMTP_INGRESS_USERS": f"{USER}:{HASHED}",
        "ROUTER_DATABASE_DATA_DIR": str(tmp_path / "pg"),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "[smtp_ingress] listen '0.0.0.0:2525'" in line and "tls_cert" in line
    assert not (tmp_path / "pg").exists()  # refused before anything started


async def test_on_loopback_a_certificate_offers_starttls_without_requiring_it(
    dsn: str, line_sim: Any, smtp: SmtpSink, tmp_path: Path
) -> None:
    ca = make_private_ca(tmp_path)
    tls = {
        "ROUTER_SMTP_INGRESS_TLS_CERT": str(tmp_path / "server.pem"),
        "ROUTER_SMTP_INGRESS_TLS_KEY": str(tmp_path / "server.key"),
    }
    async with ingress(dsn, line_sim, smtp, **tls) as (_, port):
        plain = await connected(port)
        assert "starttls" in plain.esmtp_extensions
        await plain.login(USER, PASSWORD)
        await plain.sendmail("a@shop.example.jp", ["mail@example.jp"], campaign(["x@y.jp"]))
        await plain.quit()
        secure = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=True, cert_bundle=str(ca.ca_file)
        )
        await secure.connect()
        await secure.login(USER, PASSWORD)
        second = campaign(["x@y.jp"], "<second@shop.example.jp>")
        await secure.sendmail("a@shop.example.jp", ["mail@example.jp"], second)
        await secure.quit()
        await wait_until(lambda: len(smtp.mails) == 2)


async def test_off_loopback_a_certificate_is_required_for_auth(
    dsn: str, line_sim: Any, smtp: SmtpSink, tmp_path: Path
) -> None:
    ca = make_private_ca(tmp_path)
    port = _free_port()
    settings = {
        "ROUTER_SMTP_INGRESS_LISTEN": f"0.0.0.0:{port}",
        "ROUTER_SMTP_INGRESS_TLS_CERT": str(tmp_path / "server.pem"),
        "ROUTER_SMTP_INGRESS_TLS_KEY": str(tmp_path / "server.key"),
    }
    async with ingress(dsn, line_sim, smtp, **settings) as (_, _unused):
        plain = await connected(port)
        assert "auth" not in plain.esmtp_extensions
        refused = await plain.execute_command(b"AUTH", b"PLAIN")
        assert refused.code == 538 and refused.message.startswith("5.7.11 ")
        await plain.quit()
        secure = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=True, cert_bundle=str(ca.ca_file)
        )
        await secure.connect()
        await secure.login(USER, PASSWORD)
        await secure.quit()


class Verifications:
    """Stands in for the password check, recording which hash each check was against; the
    real check still runs."""

    def __init__(self) -> None:
        self.against: list[str] = []

    def __call__(self, password: str, stored: str) -> bool:
        self.against.append(stored)
        return verify_password(password, stored)


async def test_an_unknown_name_costs_the_same_check_as_a_wrong_password(
    dsn: str, line_sim: Any, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Verifications()
    monkeypatch.setattr(smtp_auth, "verify_password", checks)
    async with ingress(dsn, line_sim, smtp) as (_, port):
        for user in (USER, "taro@example.jp", "hanako@example.jp"):
            client = await connected(port)
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
                await client.auth_plain(user, WRONG)
            assert refused.value.code == 535
            await client.quit()
    known, *unknown = checks.against
    assert known == HASHED
    # one dummy hash, made once, of the same kind and cost as a configured one
    assert len(unknown) == 2 and unknown[0] == unknown[1] != HASHED
    assert unknown[0].split("$")[:4] == HASHED.split("$")[:4]


async def test_the_event_loop_answers_while_a_password_is_checked(
    dsn: str, line_sim: Any, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check waits for a signal only the event loop can give: on the loop it would wait
    in vain (and refuse the login); off the loop, HTTP is answered meanwhile."""
    started, answered = threading.Event(), threading.Event()

    def held_check(password: str, stored: str) -> bool:
        started.set()
        return answered.wait(timeout=5) and verify_password(password, stored)

    monkeypatch.setattr(smtp_auth, "verify_password", held_check)
    async with ingress(dsn, line_sim, smtp) as (router, port):
        client = await connected(port)
        login = asyncio.create_task(client.auth_plain(USER, PASSWORD))
        while not started.is_set():
            await asyncio.sleep(0.01)
        assert (await router.client.get("/healthz")).status_code == 200
        answered.set()
        assert (await login).code == 235
        await client.quit()


async def test_connections_opened_together_get_no_more_guesses(
    dsn: str, line_sim: Any, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks from one address take turns, so a burst of connections is refused once the
    first `auth_attempts` (3) guesses have failed, without checking the rest."""
    checks = Verifications()
    monkeypatch.setattr(smtp_auth, "verify_password", checks)
    async with ingress(dsn, line_sim, smtp) as (_, port):
        clients = [await connected(port) for _ in range(6)]
        results = await asyncio.gather(
            *(c.auth_plain(USER, WRONG) for c in clients), return_exceptions=True
        )
        codes = sorted(r.code for r in results if isinstance(r, aiosmtplib.SMTPAuthenticationError))
        assert codes == [454, 454, 454, 535, 535, 535]
        assert len(checks.against) == 3
        for c in clients:
            c.close()
