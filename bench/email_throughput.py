"""Email throughput: the router's email sending against a raw aiosmtplib loop, same sink.

Starts PostgreSQL (embedded pgserver in a temporary directory, or DATABASE_URL) and, one after
the other, two SMTP sinks that accept and discard every message: aiosmtpd in its own process,
and Postfix's `smtp-sink` (a C program: Debian package `postfix`, /usr/sbin/smtp-sink), so
that the figures show the router's own cost, not aiosmtpd's. For each sink:

  (a) raw: a hand-written aiosmtplib loop, --connections connections, each sending message
      after message (`sendmail`, one recipient), the same message size as the router's;
  (b) router: --emails email deliveries queued in PostgreSQL (members, one content, intents
      and deliveries seeded with COPY, held back until the clock starts), then `router serve`
      (email channel only, `[email] connections` = --connections) drains them; seconds from
      releasing the deliveries to the last outcome recorded (PostgreSQL's clock both ends),
      every delivery `sent` and the sink's count checked;
  (b') with --dkim rsa|ed25519: (b) again on the same deliveries, each message DKIM-signed
      with a new key of that algorithm ([email] dkim_*), right after (b): emails/s and CPU ms
      per email signed and unsigned, their ratio, and sign() alone in this process;
  (c) old: (b) for the tree at --base (PYTHONPATH=that tree), the figure before this change,
      when that directory exists;
  (d) promo, with --promotional: (b) again on this tree's database with `[email]
      public_base_url`, sender_name, sender_postal_address and bounce_domain set, so each
      (promotional) email is composed per recipient: List-Unsubscribe headers, a signed link
      in a footer, quoted-printable, a VERP envelope sender (channels/email_compose.py).

Printed: emails per second of each, and router/raw, old/raw, router/old and promo/router
(the plain path is the baseline of the composed one, same sink, same run) (raw: the mean of a
run before and one after the routers, unless --no-raw-again). The raw loop and
the routers run against the same sink process in the same run; each router gets a fresh
database of its own tree's schema. Also CPU milliseconds per email of the raw loop's process,
of each router process and of its PostgreSQL server (all its processes): steadier than the
rates on a shared machine, and what a router's rate is limited by on two cores.

Usage:
  . .venv/bin/activate && export PYTHONPATH=$PWD
  python bench/email_throughput.py --emails 20000                  # while developing
  python bench/email_throughput.py --emails 500000                 # full size (a campaign's email half)
  (at full size the old tree takes about 15 minutes per sink; --base '' leaves it out)
  BENCH_EMAIL_PROFILE=/tmp/email python bench/email_throughput.py  # + cProfile of the router
  python bench/email_throughput.py --emails 20000 --connections 8 --sinks smtp-sink --base ''
  python bench/email_throughput.py --emails 5000 --sinks smtp-sink --base '' --promotional
  python bench/email_throughput.py --emails 5000 --sinks smtp-sink --base '' --dkim rsa
  python bench/email_throughput.py --emails 3000 --sinks smtp-sink --relayed  # relayed email
  (--relayed: every delivery is a relayed message, so router/old is the relay's send path)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiosmtplib
import asyncpg
import httpx

from bench.campaign import free_port, log_tail, sink_process
from channels.base import Outbound
from channels.dkim import generate_key, load_signer
from channels.email import RenderedContents
from channels.email_compose import Composer
from router.config import EmailConfig
from router.content import Content, EmailContent

SENDER = "news@shop.example.jp"
CONTENT = Content(
    email=EmailContent(
        subject="Autumn sale",
        text="Hello,\n\n20% off everything until Sunday.\n\nYour shop\n" * 4,
    )
)
SMTP_SINK = "/usr/sbin/smtp-sink"
STALL_SECONDS = 120.0
POLL_SECONDS = 0.25
SEED_CHUNK = 100_000
HERE = Path(__file__).resolve().parent.parent


def address(i: int) -> str:
    return f"m{i:07d}@x.jp"


def sample_message(promotional: bool = False) -> bytes:
    """The bytes the router hands to SMTP for one recipient of CONTENT (composed per
    recipient, as with --promotional, or the plain rendering)."""
    rendered = RenderedContents(SENDER)
    outbound = Outbound(
        delivery_id=uuid.uuid4(),
        intent_id=uuid.uuid4(),
        address=address(0),
        attempt=1,
        content_id=b"x" * 32,
        content=CONTENT,
    )
    assert CONTENT.email is not None
    if promotional:
        config = EmailConfig(host="127.0.0.1", from_address=SENDER, unsubscribe_secret="b" * 40)
        for key, value in PROMOTIONAL_ENV.items():
            setattr(config, key.removeprefix("ROUTER_EMAIL_").lower(), value)
        composed = Composer(config).render(outbound, CONTENT.email)
        assert composed is not None
        return composed[1]
    return rendered.render(outbound, CONTENT.email)[1]


# --- sinks ----------------------------------------------------------------------------------


class Sink:
    name: str
    port: int

    def received(self) -> int:
        raise NotImplementedError


class AiosmtpdSink(Sink):
    name = "aiosmtpd"

    def __init__(self, port: int, counter: object) -> None:
        self.port = port
        self._counter = counter

    def received(self) -> int:
        value: int = self._counter.value  # type: ignore[attr-defined]
        return value


class PostfixSink(Sink):
    """`smtp-sink -c` prints `sess=.. quit=.. mesg=N` counters, CR-separated."""

    name = "smtp-sink"

    def __init__(self, port: int, out: Path) -> None:
        self.port = port
        self._out = out

    def received(self) -> int:
        found = re.findall(rb"mesg=(\d+)", self._out.read_bytes())
        return int(found[-1]) if found else 0


@contextmanager
def aiosmtpd_sink() -> Iterator[Sink]:
    with sink_process() as (port, counter):
        yield AiosmtpdSink(port, counter)


@contextmanager
def postfix_sink(tmp: Path) -> Iterator[Sink]:
    if not Path(SMTP_SINK).exists():
        raise SystemExit(f"{SMTP_SINK} is missing: apt-get install -y postfix")
    port = free_port()
    out = tmp / "smtp-sink.out"
    args = [SMTP_SINK, "-c", "-h", "sink.bench.invalid"]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    with out.open("wb") as f:
        proc = subprocess.Popen([*args, f"127.0.0.1:{port}", "1000"], stdout=f, stderr=f)
    try:
        deadline = time.monotonic() + 30
        while True:
            with suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"smtp-sink did not start: {out.read_text(errors='replace')}")
            time.sleep(0.05)
        yield PostfixSink(port, out)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- (a) the raw loop ---------------------------------------------------------------------


async def raw_loop(port: int, emails: int, connections: int, message: bytes) -> tuple[float, float]:
    """Emails per second of `connections` aiosmtplib connections sending one after another,
    and this process's CPU milliseconds per email."""
    head, _, body = message.partition(b"\r\n")
    assert head.startswith(b"To: ")
    left = iter(range(emails))

    async def one_connection() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await smtp.connect()
        for i in left:
            to = address(i)
            await smtp.sendmail(SENDER, [to], b"To: " + to.encode() + b"\r\n" + body)
        await smtp.quit()

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    cpu_ms = (time.process_time() - cpu) * 1000 / emails
    return emails / (time.perf_counter() - start), cpu_ms


def raw_in_child(port: int, emails: int, connections: int) -> tuple[float, float]:
    """The raw loop in its own process on uvloop, as `router serve` runs."""
    code = (
        "import asyncio, sys, uvloop; from bench.email_throughput import raw_loop, sample_message;"
        "uvloop.install();"
        f"print(*asyncio.run(raw_loop({port}, {emails}, {connections}, sample_message())))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=HERE,
        env=os.environ | {"PYTHONPATH": str(HERE)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the raw loop failed:\n{done.stderr[-3000:]}")
    rate, cpu_ms = done.stdout.strip().splitlines()[-1].split()
    return float(rate), float(cpu_ms)


# --- (b) the router -----------------------------------------------------------------------


@dataclass
class Database:
    tree: Path
    dsn: str


async def create_database(admin_dsn: str, name: str, tree: Path) -> Database:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    subprocess.run(
        [sys.executable, "-m", "router", "migrate"],
        cwd=tree,
        env=os.environ | {"PYTHONPATH": str(tree), "ROUTER_DATABASE_URL": dsn},
        check=True,
        capture_output=True,
    )
    return Database(tree, dsn)


async def seed(db: Database, emails: int, relayed: bool = False) -> tuple[float, int]:
    """Members, the content, intents and held-back email deliveries, all by COPY. Returns the
    seconds it took and the content id's size (a check that the row is the router's). With
    `relayed`, the content is a message the SMTP relay received (sent on byte for byte)."""
    import hashlib

    import msgspec

    from router.content import Relayed, content_id

    content = CONTENT
    start = time.perf_counter()
    conn = await asyncpg.connect(db.dsn)
    try:
        if relayed:
            data = sample_message()
            digest = hashlib.sha256(data).digest()
            await conn.execute(
                "INSERT INTO relayed_messages (id, data) VALUES ($1, $2)", digest, data
            )
            content = msgspec.structs.replace(
                CONTENT, relayed=Relayed(message_sha256=digest.hex(), envelope_from=SENDER)
            )
        body = msgspec.json.encode(content)
        cid = content_id(body)
        await conn.execute(
            "INSERT INTO contents (id, body) VALUES ($1, $2::jsonb)", cid, body.decode()
        )
        for offset in range(0, emails, SEED_CHUNK):
            chunk = range(offset, min(emails, offset + SEED_CHUNK))
            ids = [(uuid.uuid4(), uuid.uuid4()) for _ in chunk]
            await conn.copy_records_to_table(
                "members",
                records=[(f"m{i}", address(i)) for i in chunk],
                columns=["member_id", "email"],
            )
            await conn.copy_records_to_table(
                "intents",
                records=[
                    (intent, f"m{i}", cid, "email_only")
                    for i, (intent, _) in zip(chunk, ids, strict=True)
                ],
                columns=["id", "member_id", "content_id", "route"],
            )
            await conn.copy_records_to_table(
                "deliveries",
                records=[
                    (delivery, intent, "email", address(i), "pending", HELD_BACK)
                    for i, (intent, delivery) in zip(chunk, ids, strict=True)
                ],
                columns=["id", "intent_id", "channel", "address", "status", "next_attempt_at"],
            )
        await conn.execute("VACUUM ANALYZE members")
        await conn.execute("VACUUM ANALYZE intents")
        await conn.execute("VACUUM ANALYZE deliveries")
    finally:
        await conn.close()
    return time.perf_counter() - start, len(cid)


HELD_BACK = datetime(2999, 1, 1, tzinfo=UTC)


async def reset_deliveries(db: Database) -> None:
    """Every delivery pending and held back again, for the next run on this database."""
    conn = await asyncpg.connect(db.dsn)
    try:
        await conn.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, claim_token = NULL,"
            " lease_expires_at = NULL, first_attempt_at = NULL, last_error = NULL,"
            " provider_ref = NULL, smtp_queue_id = NULL, sent_at = NULL, next_attempt_at = $1",
            HELD_BACK,
        )
        await conn.execute("VACUUM ANALYZE deliveries")
    finally:
        await conn.close()


@dataclass
class RouterRun:
    per_second: float
    cpu_ms: float  # the router process's CPU milliseconds per email
    pg_cpu_ms: float  # PostgreSQL's (every process of its server), per email
    seconds: float
    statuses: dict[str, int]
    received: int


# What makes each email composed per recipient (--promotional): the seeded intents are
# promotional, so every one carries the unsubscribe headers and footer.
PROMOTIONAL_ENV = {
    "ROUTER_EMAIL_PUBLIC_BASE_URL": "https://mail.shop.example.jp",
    "ROUTER_EMAIL_SENDER_NAME": "秋葉ショップ株式会社",
    "ROUTER_EMAIL_SENDER_POSTAL_ADDRESS": "東京都千代田区外神田1-1-1",
    "ROUTER_EMAIL_BOUNCE_DOMAIN": "bounces.shop.example.jp",
}


async def run_router(
    db: Database,
    sink: Sink,
    emails: int,
    connections: int,
    tmp: Path,
    label: str,
    extra_env: dict[str, str] | None = None,
) -> RouterRun:
    port = free_port()
    log = tmp / f"router-{label}-{sink.name}.log"
    env = (
        os.environ
        | {
            "PYTHONPATH": str(db.tree),
            "ROUTER_HTTP_LISTEN": f"127.0.0.1:{port}",
            "ROUTER_DATABASE_URL": db.dsn,
            "ROUTER_DATABASE_POOL_SIZE": "20",
            "ROUTER_API_KEYS": "bench-key",
            "ROUTER_EMAIL_HOST": "127.0.0.1",
            "ROUTER_EMAIL_PORT": str(sink.port),
            "ROUTER_EMAIL_FROM_ADDRESS": SENDER,
            "ROUTER_EMAIL_CONNECTIONS": str(connections),
            "ROUTER_LINE_CHANNEL_ACCESS_TOKEN": "",
            "ROUTER_SMTP_INGRESS_LISTEN": "",
        }
        | (extra_env or {})
    )
    before = sink.received()
    command = [sys.executable, "-m", "router", "serve"]
    profile = os.environ.get("BENCH_EMAIL_PROFILE")
    if profile and label == "router":  # cProfile of the router's run, for development
        command[1:1] = ["-m", "cProfile", "-o", f"{profile}-{sink.name}.prof"]
    proc = start(command, db.tree, env, log)
    conn = await asyncpg.connect(db.dsn)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, log)
        postmaster = parent_pid(await conn.fetchval("SELECT pg_backend_pid()"))
        cpu_before, pg_before = cpu_seconds(proc.pid), server_cpu_seconds(postmaster)
        async with conn.transaction():
            started: datetime = await conn.fetchval(
                "UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending'"
                " RETURNING now()"
            )
            await conn.execute("SELECT pg_notify('router_queues', 'deliveries:email')")
        left, progress_at = emails, time.monotonic()
        while left:
            await asyncio.sleep(POLL_SECONDS)
            now_left = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'claimed', 'sending')"
            )
            if now_left < left:
                left, progress_at = now_left, time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError(f"router exited {proc.returncode}:\n{log_tail(log)}")
            if time.monotonic() - progress_at > STALL_SECONDS:
                raise RuntimeError(f"no progress for {STALL_SECONDS:.0f} s:\n{log_tail(log)}")
        cpu_after, pg_after = cpu_seconds(proc.pid), server_cpu_seconds(postmaster)
        finished: datetime = await conn.fetchval("SELECT max(updated_at) FROM deliveries")
        statuses = dict(await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY 1"))
    finally:
        await conn.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    seconds = (finished - started).total_seconds()
    await asyncio.sleep(0.5)  # the sink's counter
    cpu_ms = (cpu_after - cpu_before) * 1000 / emails
    pg_cpu_ms = (pg_after - pg_before) * 1000 / emails
    return RouterRun(
        emails / seconds, cpu_ms, pg_cpu_ms, seconds, statuses, sink.received() - before
    )


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (the state is [0], the ppid [1])."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far (Linux's /proc)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parent_pid(pid: int) -> int:
    return int(_stat(pid)[1])


def server_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of PostgreSQL's postmaster and its processes now running (the router's
    pooled connections live through the run)."""
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                if parent_pid(int(entry.name)) == postmaster:
                    total += cpu_seconds(int(entry.name))
    return total


def start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient() as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"router exited {proc.returncode}:\n{log_tail(log)}")
            with suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"router did not become healthy:\n{log_tail(log)}")
            await asyncio.sleep(0.1)


# --- main ---------------------------------------------------------------------------------


def trees(base: str) -> dict[str, Path]:
    """This tree, and the one before the change when it exists."""
    found = {"router": HERE}
    if base and Path(base, "router").is_dir():
        found["old"] = Path(base).resolve()
    elif base:
        print(f"(no tree at {base}: the old figure is left out)")
    return found


async def raw_run(sink: Sink, args: argparse.Namespace, when: str) -> tuple[float, float]:
    """The raw loop once against `sink`, its count checked: emails/s and CPU ms per email."""
    before = sink.received()
    raw, raw_cpu = raw_in_child(sink.port, args.emails, args.connections)
    await asyncio.sleep(0.5)
    if sink.received() - before != args.emails:
        raise RuntimeError(f"{sink.name} got {sink.received() - before} of the raw loop")
    print(
        f"[{sink.name}] raw aiosmtplib ({when} the routers): {raw:,.0f} emails/s,"
        f" {raw_cpu:.2f} CPU ms/email",
        flush=True,
    )
    return raw, raw_cpu


def dkim_env(algorithm: str, tmp: Path) -> dict[str, str]:
    """[email] settings that sign with a new key of `algorithm`."""
    key = generate_key("rsa" if algorithm == "rsa" else "ed25519")
    path = tmp / f"dkim-{algorithm}.pem"
    path.write_bytes(key.pem)
    return {
        "ROUTER_EMAIL_DKIM_DOMAIN": "shop.example.jp",
        "ROUTER_EMAIL_DKIM_SELECTOR": f"bench-{algorithm}",
        "ROUTER_EMAIL_DKIM_PRIVATE_KEY_FILE": str(path),
    }


def sign_alone_ms(env: dict[str, str], count: int = 500) -> float:
    """CPU milliseconds of one DkimSigner.sign of the bench's message, in this process."""
    signer = load_signer(
        EmailConfig(
            dkim_domain=env["ROUTER_EMAIL_DKIM_DOMAIN"],
            dkim_selector=env["ROUTER_EMAIL_DKIM_SELECTOR"],
            dkim_private_key_file=env["ROUTER_EMAIL_DKIM_PRIVATE_KEY_FILE"],
        )
    )
    assert signer is not None
    message = sample_message()
    started = time.process_time()
    for _ in range(count):
        signer.sign(message)
    return (time.process_time() - started) * 1000 / count


async def measure(
    args: argparse.Namespace, tmp: Path, admin_dsn: str, trees: dict[str, Path]
) -> None:
    databases: dict[str, Database] = {}
    for label, tree in trees.items():
        db = await create_database(admin_dsn, f"bench_email_{label}", tree)
        seconds, _ = await seed(db, args.emails, relayed=args.relayed)
        print(f"seeded {args.emails:,} deliveries for {label} ({tree}) in {seconds:.1f} s")
        databases[label] = db
    size = f"message size {len(sample_message())} bytes"
    if args.promotional:
        size += f" ({len(sample_message(promotional=True))} composed)"
    print(f"{size}; {args.connections} connections")
    signing = dkim_env(args.dkim, tmp) if args.dkim else None
    if signing is not None:
        print(f"DKIM {args.dkim}: sign() alone {sign_alone_ms(signing):.3f} CPU ms/email")

    rows: list[tuple[str, float, float, dict[str, RouterRun]]] = []
    for sink_name in args.sinks.split(","):
        cm = aiosmtpd_sink() if sink_name == "aiosmtpd" else postfix_sink(tmp)
        with cm as sink:
            raw, raw_cpu = await raw_run(sink, args, "before")
            runs: dict[str, RouterRun] = {}
            plan = [(label, db, None) for label, db in databases.items()]
            if args.promotional:
                plan.append(("promo", databases["router"], PROMOTIONAL_ENV))
            if signing is not None:  # right after the unsigned run, on the same deliveries
                plan.insert(1, ("router+dkim", databases["router"], signing))
            for label, db, extra in plan:
                run = await run_router(db, sink, args.emails, args.connections, tmp, label, extra)
                runs[label] = run
                print(
                    f"[{sink.name}] {label}: {run.per_second:,.0f} emails/s,"
                    f" {run.cpu_ms:.2f} CPU ms/email ({run.seconds:.1f} s,"
                    f" statuses {run.statuses}, sink received {run.received:,})",
                    flush=True,
                )
                if run.statuses != {"sent": args.emails} or run.received != args.emails:
                    print(f"  !! {label} did not send every email exactly once", flush=True)
                await reset_deliveries(db)
            if args.raw_again:  # load from others changes over minutes: the mean of both
                raw_after, cpu_after = await raw_run(sink, args, "after")
                raw, raw_cpu = (raw + raw_after) / 2, (raw_cpu + cpu_after) / 2
            rows.append((sink.name, raw, raw_cpu, runs))

    print()
    print(f"{args.emails:,} emails, {args.connections} SMTP connections, 2-core machine,")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    header = f"{'sink':<10} {'raw/s':>9} {'router/s':>9} {'router/raw':>10}"
    if "old" in trees:
        header += f" {'old/s':>9} {'old/raw':>8} {'router/old':>10}"
    if args.promotional:
        header += f" {'promo/s':>9} {'promo/router':>12}"
    print(header)
    for name, raw, _, runs in rows:
        new = runs["router"].per_second
        line = f"{name:<10} {raw:>9,.0f} {new:>9,.0f} {new / raw:>10.2f}"
        if "old" in runs:
            old = runs["old"].per_second
            line += f" {old:>9,.0f} {old / raw:>8.2f} {new / old:>10.2f}"
        if "promo" in runs:
            promo = runs["promo"].per_second
            line += f" {promo:>9,.0f} {promo / new:>12.2f}"
        print(line)
    # CPU per email is steadier than a rate on a shared machine: each process's own share.
    print()
    header = f"{'CPU ms/email':<12} {'raw':>6} {'router':>7} {'its PG':>7}"
    if "old" in trees:
        header += f" {'old':>6} {'its PG':>7}"
    if args.promotional:
        header += f" {'promo':>6} {'its PG':>7} {'promo/router':>12}"
    print(header)
    for name, _, raw_cpu, runs in rows:
        new = runs["router"]
        line = f"{name:<12} {raw_cpu:>6.2f} {new.cpu_ms:>7.2f} {new.pg_cpu_ms:>7.2f}"
        if "old" in runs:
            line += f" {runs['old'].cpu_ms:>6.2f} {runs['old'].pg_cpu_ms:>7.2f}"
        if "promo" in runs:
            promo_run = runs["promo"]
            line += f" {promo_run.cpu_ms:>6.2f} {promo_run.pg_cpu_ms:>7.2f}"
            line += f" {promo_run.cpu_ms / new.cpu_ms:>12.2f}"
        print(line)
    if signing is not None:
        print()
        print(f"DKIM {args.dkim}: the router signed vs unsigned, same run and deliveries")
        print(
            f"{'sink':<10} {'unsigned/s':>10} {'signed/s':>9} {'ratio':>6}"
            f" {'CPU ms unsigned':>15} {'signed':>7} {'+ms':>6}"
        )
        for name, _, _, runs in rows:
            plain, signed = runs["router"], runs["router+dkim"]
            print(
                f"{name:<10} {plain.per_second:>10,.0f} {signed.per_second:>9,.0f}"
                f" {signed.per_second / plain.per_second:>6.2f} {plain.cpu_ms:>15.2f}"
                f" {signed.cpu_ms:>7.2f} {signed.cpu_ms - plain.cpu_ms:>6.2f}"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--emails", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sinks", default="aiosmtpd,smtp-sink")
    parser.add_argument(
        "--no-raw-again",
        dest="raw_again",
        action="store_false",
        help="measure the raw loop only before the routers (by default also after: the mean)",
    )
    parser.add_argument(
        "--relayed",
        action="store_true",
        help="seed messages the SMTP relay received (sent byte for byte) instead of composed",
    )
    parser.add_argument(
        "--promotional",
        action="store_true",
        help="also run this tree composing each email per recipient (public_base_url set)",
    )
    parser.add_argument(
        "--base",
        default=os.environ.get("BENCH_BASE_TREE", ""),
        help="an earlier checkout to compare with (default $BENCH_BASE_TREE; '' to skip)",
    )
    parser.add_argument(
        "--dkim",
        choices=["rsa", "ed25519"],
        help="also run the router signing each email with a key of this algorithm",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="router-email-bench-") as tmp_name:
        tmp = Path(tmp_name)
        dsn = os.environ.get("DATABASE_URL")
        server = None
        if not dsn:
            from pgserver.postgres_server import get_server

            server = get_server(tmp / "pg", cleanup_mode="delete")
            dsn = server.get_uri()
        try:
            await measure(args, tmp, dsn, trees(args.base))
        finally:
            if server is not None:
                with suppress(Exception):
                    server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
