"""An audience file and a campaign at a million members, against the LINE simulator.

Starts PostgreSQL (embedded pgserver in a temporary directory, or DATABASE_URL), the LINE
simulator with LINE's default limits (push 2,000 requests/s, multicast 200 requests/s), an
SMTP sink that counts and discards, and `router serve` processes, each in its own process.
Members are seeded straight into PostgreSQL with COPY, their identifiers normalised and hashed
by the router's own code (`router.members.prepare`); every other member is a linked LINE
friend. Seeding is timed but is not a figure. Then:

  (1) upload: a file of --file-lines lines (every member's address, every 50th in upper
      case; non-members; 0.5% invalid lines; 0.5% repeated lines) POSTed as multipart to
      /v1/audiences, streamed from disk. Seconds from the request to the report (the file is
      hashed, stored and matched before the router answers), the report's counts, and the
      router's peak RSS meanwhile. A second file, the first --baseline LINE friends, is
      uploaded after it.
  (2) baseline: a campaign to those friends through routers started with
      `[line] multicast = false`, so that each LINE delivery is one push.
  (3) the same friends, other content, through routers with `[line] multicast = true`, with
      send_at --send-delay seconds after the POST: besides the figures below, "LINE from
      send_at" times the LINE half alone, its deliveries all made before it starts (what
      sending and recording multicasts cost, apart from the fan-out).
  (4) the campaign: POST /v1/campaigns to the first audience (every member), route
      prefer_line, email and LINE text, multicast on: half go by LINE, half by email.
  For each campaign, seconds from the POST until:
      fan-out   the campaign leaves `fanning_out` (every intent and delivery created)
      LINE      the simulator has accepted a message for every LINE friend in it
      email     the sink has received every email
      total     GET /v1/campaigns/{id} shows every delivery final
  with LINE API calls as the simulator counted them (accepted pushes and multicasts, 409s,
  429s, all requests including quota look-ups), emails received by the sink, and the router's
  peak RSS meanwhile. LINE recipients per second = LINE recipients / LINE seconds.
  ratios: LINE recipients per second of (4) over (2): the campaign against one push per
  member. (4) also creates and sends the email half, so (3) over (2), the same recipients
  both ways, is the like-for-like comparison of multicast with push.
  The campaign runs last so that its long email tail does not hold up the other figures.

Peak RSS is the largest VmRSS read from /proc every 100 ms while a figure is measured
(VmHWM cannot be reset); each router's VmHWM, its peak over its whole life, is printed when
it stops. Simulator and sink counts are read every 100 ms; the campaign view, which counts
its counters on each read, every second while sending and every 0.5 s once the simulator
and the sink have everything; the reads' p50 and max are a figure, against a baseline in the
same run: the row count the view used to make (deliveries of the campaign grouped by channel
and status), timed on the finished campaign.
  fan-out baseline: before the campaigns, --intake-baseline members' intents (due in 29 days,
  so nothing is sent meanwhile) are accepted through POST /v1/intents/batch, 10,000 a request,
  one request at a time: the per-intent intake path a campaign's fan-out went through before
  it was done set-wise in PostgreSQL. intents/s of each fan-out over it is the ratio.
A campaign that makes no progress for 5 minutes stops the run.

`--only upload` runs (1) alone and prints, beside it, the machine's ceiling measured in the
same run on the same file: reading it and SHA-256-hashing its lines in a plain Python loop
(one process, as the router has), and a plain COPY of as many 32-byte rows into an unindexed
table (binary, one statement). The ratio is the upload's seconds over the sum of the two,
and over the larger of them (what a perfect overlap of Python and PostgreSQL would take).

Usage: python bench/campaign.py [--members N] [--file-lines N] [--baseline N] [--routers K]
                                [--intake-baseline N] [--send-delay S] [--only upload]
                                [--fan-out-only]

--fan-out-only: after seeding, (1) and (0), only the fan-out of a campaign to every member,
  due in 29 days so that nothing is sent meanwhile: fan-out seconds and intents/s against (0).
  Tune the fan-out with the router's own settings in the environment, e.g.
  ROUTER_CAMPAIGNS_FAN_OUT_WORKERS, ROUTER_CAMPAIGNS_FAN_OUT_CHUNK.
Develop with --members 200000 --file-lines 300000 --baseline 20000 or smaller.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from router.audiences import MAX_FILE_BYTES, MAX_LINES
from router.config import LineConfig, MembersConfig
from router.members import MemberFields, PreparedMember, prepare

TOKEN = "bench-token"
API_KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SAMPLE_SECONDS = 0.1
VIEW_EVERY_SECONDS = 1.0
FINAL_VIEW_EVERY_SECONDS = 0.5
STALL_SECONDS = 300.0
PRINT_EVERY_SECONDS = 30.0
PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")
SEED_CHUNK = 100_000
FINAL = frozenset({"sent", "failed", "uncertain", "cancelled"})
MAIN_CONTENT: dict[str, Any] = {
    "email": {"subject": "Autumn sale", "text": "20% off everything until Sunday."},
    "line": {"messages": [{"type": "text", "text": "Autumn sale: 20% off until Sunday."}]},
}
FRIENDS_CONTENT: dict[str, Any] = {
    "email": {"subject": "Spring sale", "text": "Members' week: 15% off shoes."},
    "line": {"messages": [{"type": "text", "text": "Spring sale: 15% off shoes."}]},
}
BASELINE_CONTENT: dict[str, Any] = {
    "email": {"subject": "Winter sale", "text": "30% off coats this week."},
    "line": {"messages": [{"type": "text", "text": "Winter sale: 30% off coats this week."}]},
}


# --- the people and the file ------------------------------------------------------------


@dataclass(frozen=True)
class Population:
    """Members m<i>, every even one a linked LINE friend; addresses kept short so that
    1,500,000 lines fit the 20 MB upload limit."""

    members: int
    width: int

    def member_id(self, i: int) -> str:
        return f"m{i:0{self.width}d}"

    def email(self, i: int) -> str:
        return f"{self.member_id(i)}@x.jp"

    @staticmethod
    def is_friend(i: int) -> bool:
        return i % 2 == 0

    @staticmethod
    def line_user_id(i: int) -> str:
        return f"U{i:032x}"

    @property
    def friends(self) -> int:
        return (self.members + 1) // 2


@dataclass(frozen=True)
class FileShape:
    lines: int
    members: int
    non_members: int
    invalid: int
    duplicates: int
    size: int


def write_audience_file(path: Path, people: Population, lines: int) -> FileShape:
    """Every member once (every 50th with an upper-case address, which matching folds), then
    non-members, invalid lines and repeats of members' lines, shuffled."""
    invalid = lines // 200
    duplicates = lines // 200
    non_members = lines - people.members - invalid - duplicates
    if non_members < 0:
        raise SystemExit(f"--file-lines {lines:,} cannot hold {people.members:,} members")
    w = people.width
    rows = [
        people.email(i).upper() if i % 50 == 49 else people.email(i) for i in range(people.members)
    ]
    rows += [f"n{i:0{w}d}@x.jp" for i in range(non_members)]
    rows += [f"x{i:0{w}d}.x.jp" for i in range(invalid)]  # no @: not an address
    rng = random.Random(20_241_101)
    rows += [rows[rng.randrange(people.members)] for _ in range(duplicates)]
    rng.shuffle(rows)
    data = ("\n".join(rows) + "\n").encode()
    path.write_bytes(data)
    return FileShape(lines, people.members, non_members, invalid, duplicates, len(data))


def write_friends_file(path: Path, people: Population, count: int) -> int:
    """The addresses of the first `count` LINE friends; returns how many were written."""
    picked = [people.email(i) for i in range(0, people.members, 2)][:count]
    path.write_text("\n".join(picked) + "\n")
    return len(picked)


async def seed_members(dsn: str, people: Population) -> float:
    """COPY the members in, normalised and hashed by the router's own `prepare`."""
    region = MembersConfig().default_region
    columns = ["member_id", "email", "email_sha256"]
    start = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    # Every member consented to promotional email, where the tree records consent: the
    # campaign's email half then goes out under the default [email] require_consent.
    consent = await conn.fetchval(
        "SELECT true FROM information_schema.columns"
        " WHERE table_name = 'members' AND column_name = 'email_consent'"
    )
    try:
        for offset in range(0, people.members, SEED_CHUNK):
            records: list[tuple[str, str | None, bytes | None]] = []
            # Each friend's LINE identity under the account "default".
            identities: list[tuple[str, str, str | None, bool]] = []
            for i in range(offset, min(people.members, offset + SEED_CHUNK)):
                fields = (
                    MemberFields(
                        email=people.email(i), line_user_id=people.line_user_id(i), line_friend=True
                    )
                    if people.is_friend(i)
                    else MemberFields(email=people.email(i))
                )
                m = prepare(people.member_id(i), fields, region)
                assert isinstance(m, PreparedMember), m
                records.append((m.member_id, m.email, m.email_sha256))
                identities.extend(
                    (m.member_id, account, line.user_id, line.friend)
                    for account, line in m.line.items()
                )
            await conn.copy_records_to_table("members", records=records, columns=columns)
            await conn.copy_records_to_table(
                "member_line_accounts",
                records=identities,
                columns=["member_id", "account", "user_id", "friend"],
            )
        if consent:
            await conn.execute(
                "UPDATE members SET email_consent = jsonb_build_object('granted_at',"
                " '2026-01-01T00:00:00+09:00', 'source', 'bench', 'evidence', 'seeded')"
            )
        await conn.execute("VACUUM ANALYZE members, member_line_accounts")
    finally:
        await conn.close()
    return time.perf_counter() - start


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def child(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process whose output goes to `log`; terminated (then killed) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, env=os.environ | (env or {}), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient() as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode} (log {log}):\n{log_tail(log)}")
            with suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer 200 (log {log}):\n{log_tail(log)}")
            await asyncio.sleep(0.1)


def simulator_url(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The simulator is started on port 0 and prints the URL it listens on."""
    deadline = time.monotonic() + 120
    while True:
        for line in log.read_text(errors="replace").splitlines():
            if " listening on " in line:
                return line.rsplit(" ", 1)[1].rstrip("/")
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the LINE simulator did not start:\n{log_tail(log)}")
        time.sleep(0.1)


def log_problems(path: Path) -> list[str]:
    """The log's WARNING, ERROR and CRITICAL lines."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if PROBLEM.search(line)]


def proc_status_kb(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Reads VmRSS of some processes every 100 ms in a thread; `take` returns each one's
    peak since the previous `take`."""

    def __init__(self) -> None:
        self._pids: list[int] = []
        self._peaks: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def watch(self, pids: Sequence[int]) -> None:
        with self._lock:
            self._pids = list(pids)
            self._peaks = {}
        self._sample()

    def take(self) -> dict[int, int]:
        self._sample()
        with self._lock:
            peaks, self._peaks = self._peaks, {}
        return peaks

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        with self._lock:
            for pid in self._pids:
                kb = proc_status_kb(pid, "VmRSS")
                if kb is not None and kb > self._peaks.get(pid, 0):
                    self._peaks[pid] = kb

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()


def smtp_sink(port: Synchronized[int], received: Synchronized[int]) -> None:
    """Accept every message and discard it, counting messages in `received`; listens on a
    free port, which it publishes in `port`."""
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Counting:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            with received.get_lock():
                received.value += 1
            return "250 OK"

    handler = Counting()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink.bench.invalid"), "127.0.0.1", 0
        )
        port.value = server.sockets[0].getsockname()[1]
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve())


@contextmanager
def sink_process() -> Iterator[tuple[int, Synchronized[int]]]:
    """The SMTP sink in its own process: its port, and its count of messages received."""
    ctx = multiprocessing.get_context("spawn")
    port: Synchronized[int] = ctx.Value("i", 0)
    received: Synchronized[int] = ctx.Value("q", 0)
    proc = ctx.Process(target=smtp_sink, args=(port, received), name="smtp-sink", daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not port.value:
            if not proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the SMTP sink did not start")
            time.sleep(0.05)
        yield port.value, received
    finally:
        proc.terminate()
        proc.join(timeout=10)


@dataclass
class Router:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path


@dataclass
class Stack:
    """What every phase talks to."""

    py: str
    tmp: Path
    dsn: str
    sim: str
    smtp_port: int
    received: Synchronized[int]
    sampler: RssSampler
    has_multicast_switch: bool


def router_env(stack: Stack, port: int, multicast: bool | None) -> dict[str, str]:
    env = {
        "ROUTER_HTTP_LISTEN": f"127.0.0.1:{port}",
        "ROUTER_DATABASE_URL": stack.dsn,
        "ROUTER_DATABASE_POOL_SIZE": "20",
        "ROUTER_API_KEYS": API_KEY,
        "ROUTER_LINE_CHANNEL_ACCESS_TOKEN": TOKEN,
        "ROUTER_LINE_API_BASE": stack.sim,
        "ROUTER_EMAIL_HOST": "127.0.0.1",
        "ROUTER_EMAIL_PORT": str(stack.smtp_port),
        "ROUTER_EMAIL_FROM_ADDRESS": "news@shop.example.jp",
        "ROUTER_SMTP_INGRESS_LISTEN": "",
    }
    if multicast is not None and stack.has_multicast_switch:
        env["ROUTER_LINE_MULTICAST"] = "true" if multicast else "false"
    return env


@asynccontextmanager
async def routers(
    stack: Stack, count: int, multicast: bool | None, name: str
) -> AsyncIterator[list[Router]]:
    """`count` router processes with workers; their VmHWM is printed when they stop."""
    started: list[Router] = []
    with ExitStack() as exits:
        for k in range(count):
            port = free_port()
            log = stack.tmp / f"router-{name}-{k}.log"
            proc = exits.enter_context(
                child([stack.py, "-m", "router", "serve"], log, router_env(stack, port, multicast))
            )
            started.append(Router(proc, f"http://127.0.0.1:{port}", log))
        for r in started:
            await wait_http(f"{r.base}/healthz", r.proc, r.log)
        stack.sampler.watch([r.proc.pid for r in started])
        try:
            yield started
        finally:
            for k, r in enumerate(started):
                hwm = proc_status_kb(r.proc.pid, "VmHWM")
                if hwm is not None:
                    print(f"  router {name}-{k} (pid {r.proc.pid}) VmHWM at exit: {mb(hwm)}")
                if problems := log_problems(r.log):
                    print(f"  router {name}-{k} logged {len(problems)} warnings or errors:")
                    for line in problems[:5]:
                        print(f"    {line[:300]}")
                if r.proc.poll() is not None:
                    print(
                        f"  router {name}-{k} had exited ({r.proc.returncode}):\n{log_tail(r.log)}"
                    )


# --- measurements ------------------------------------------------------------------------


def mb(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:,.0f} MB"


@dataclass
class Upload:
    seconds: float
    report: dict[str, Any]
    peak_kb: dict[int, int]


async def upload(stack: Stack, router: Router, path: Path, name: str) -> Upload:
    stack.sampler.take()
    async with httpx.AsyncClient(base_url=router.base, headers=AUTH, timeout=None) as client:
        with path.open("rb") as f:
            start = time.perf_counter()
            resp = await client.post(
                "/v1/audiences",
                data={"name": name, "type": "email"},
                files={"file": (path.name, f, "text/csv")},
            )
            seconds = time.perf_counter() - start
    if resp.status_code != 201:
        raise RuntimeError(f"upload answered {resp.status_code}: {resp.text[:2000]}")
    report: dict[str, Any] = resp.json()
    return Upload(seconds, report, stack.sampler.take())


@dataclass
class SimCounts:
    requests: int
    pushes: int
    multicasts: int
    recipients: int
    conflicts: int
    rate_limited: int

    @classmethod
    def of(cls, stats: dict[str, Any]) -> SimCounts:
        return cls(
            requests=stats["requests"],
            pushes=stats["accepted_pushes"],
            multicasts=stats["accepted_multicasts"],
            recipients=stats["total_usage"],
            conflicts=stats["conflicts"],
            rate_limited=stats["rate_limited"],
        )

    def __sub__(self, other: SimCounts) -> SimCounts:
        return SimCounts(
            self.requests - other.requests,
            self.pushes - other.pushes,
            self.multicasts - other.multicasts,
            self.recipients - other.recipients,
            self.conflicts - other.conflicts,
            self.rate_limited - other.rate_limited,
        )


async def sim_counts(client: httpx.AsyncClient, sim: str) -> SimCounts:
    return SimCounts.of((await client.get(f"{sim}/__simulator/stats")).json())


@dataclass
class Campaign:
    members: int
    expect_line: int
    expect_email: int
    fan_out: float = 0.0
    line: float = 0.0
    email: float = 0.0
    total: float = 0.0
    sim: SimCounts | None = None
    emails: int = 0
    view: dict[str, Any] = field(default_factory=dict)
    view_seconds: list[float] = field(default_factory=list)
    row_count_seconds: float = 0.0
    send_delay: float | None = None  # send_at this long after the POST, if set
    peak_kb: dict[int, int] = field(default_factory=dict)

    @property
    def line_per_second(self) -> float:
        return self.expect_line / self.line if self.line else 0.0

    @property
    def line_sending(self) -> float:
        """Seconds from the moment sending could start (send_at, or the end of the fan-out
        if that came later) to the last LINE recipient accepted."""
        if self.send_delay is None:
            return 0.0
        return self.line - max(self.send_delay, self.fan_out)


def view_counts(view: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(d["channel"], d["status"]): d["deliveries"] for d in view["deliveries"]}


def all_final(view: dict[str, Any]) -> bool:
    counts = view_counts(view)
    return (
        view["status"] != "fanning_out"
        and all(status in FINAL for _, status in counts)
        and sum(counts.values()) >= view["accepted"]
    )


async def run_campaign(
    stack: Stack,
    router: Router,
    audience: dict[str, Any],
    content: dict[str, Any],
    name: str,
    send_delay: float | None = None,
) -> Campaign:
    """POST a prefer_line campaign to `audience` and follow it until every delivery is final,
    printing each milestone as it is reached. With `send_delay`, its send_at is that many
    seconds after the POST, so that its sending can be timed apart from its fan-out."""
    from datetime import UTC, datetime, timedelta

    result = Campaign(
        members=audience["matched"],
        expect_line=audience["reachable_line"],
        expect_email=audience["matched"] - audience["reachable_line"],
        send_delay=send_delay,
    )
    db = await asyncpg.connect(stack.dsn)
    sim = httpx.AsyncClient(timeout=60)
    api = httpx.AsyncClient(base_url=router.base, headers=AUTH, timeout=None)
    try:
        sim_before = await sim_counts(sim, stack.sim)
        mail_before = stack.received.value
        stack.sampler.take()
        body = {"name": name, "audience_ids": [audience["id"]], "route": "prefer_line"} | content
        if send_delay is not None:
            send_at = datetime.now(UTC) + timedelta(seconds=send_delay)
            body["send_at"] = send_at.isoformat()
        start = time.perf_counter()
        resp = await api.post("/v1/campaigns", json=body)
        if resp.status_code != 202:
            raise RuntimeError(f"campaign answered {resp.status_code}: {resp.text[:2000]}")
        campaign_id = resp.json()["id"]
        fan_out = line = email = None
        last_view = last_print = progress_at = start
        progress: tuple[int, ...] = ()
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            now = time.perf_counter()
            counts = await sim_counts(sim, stack.sim) - sim_before
            mails = stack.received.value - mail_before
            row = await db.fetchrow(
                "SELECT status, targeted FROM campaigns WHERE id = $1::uuid", campaign_id
            )
            assert row is not None
            if fan_out is None and row["status"] != "fanning_out":
                fan_out = now - start
                print(
                    f"    fan-out done at {fan_out:.1f} s: {row['targeted']:,} intents,"
                    f" {row['targeted'] / fan_out:,.0f}/s",
                    flush=True,
                )
            if line is None and counts.recipients >= result.expect_line:
                line = now - start
                print(
                    f"    LINE done at {line:.1f} s: {counts.recipients:,} recipients,"
                    f" {counts.recipients / line:,.0f}/s, in {counts.pushes:,} pushes and"
                    f" {counts.multicasts:,} multicasts ({counts.rate_limited:,} 429s,"
                    f" {counts.conflicts:,} 409s)",
                    flush=True,
                )
            if email is None and mails >= result.expect_email:
                email = now - start
                if mails:
                    print(
                        f"    email done at {email:.1f} s: {mails:,} received,"
                        f" {mails / email:,.0f}/s",
                        flush=True,
                    )
            arrived = fan_out is not None and line is not None and email is not None
            every = FINAL_VIEW_EVERY_SECONDS if arrived else VIEW_EVERY_SECONDS
            if now - last_view >= every:
                asked = time.perf_counter()
                view = (await api.get(f"/v1/campaigns/{campaign_id}")).json()
                result.view_seconds.append(time.perf_counter() - asked)
                last_view = time.perf_counter()
                if arrived and all_final(view):
                    result.total = last_view - start
                    result.view = view
                    print(f"    every delivery final at {result.total:.1f} s", flush=True)
                    break
            if now - last_print >= PRINT_EVERY_SECONDS:
                last_print = now
                print(
                    f"    {now - start:6.0f} s  {row['status']:<11} {row['targeted']:>9,} intents"
                    f"  LINE {counts.recipients:>9,} ({counts.pushes:,} pushes,"
                    f" {counts.multicasts:,} multicasts, {counts.rate_limited:,} 429s)"
                    f"  emails {mails:>9,}",
                    flush=True,
                )
            seen = (row["targeted"], counts.recipients, mails)
            if seen != progress:
                progress, progress_at = seen, now
            elif now - progress_at > STALL_SECONDS and not arrived:
                view = (await api.get(f"/v1/campaigns/{campaign_id}")).json()
                raise RuntimeError(
                    f"no progress for {STALL_SECONDS:.0f} s: {view}\n{counts}\n{log_tail(router.log)}"
                )
        assert fan_out is not None and line is not None and email is not None
        result.fan_out, result.line, result.email = fan_out, line, email
        result.row_count_seconds = await time_row_count(db, campaign_id)
        result.sim = await sim_counts(sim, stack.sim) - sim_before
        result.emails = stack.received.value - mail_before
        result.peak_kb = stack.sampler.take()
    finally:
        await api.aclose()
        await sim.aclose()
        await db.close()
    return result


ROW_COUNT = """
SELECT d.channel, d.status, count(*) AS n, count(DISTINCT d.send_group_id) AS groups
FROM intents i JOIN deliveries d ON d.intent_id = i.id WHERE i.campaign_id = $1::uuid
GROUP BY d.channel, d.status ORDER BY d.channel, d.status
"""


async def time_row_count(db: asyncpg.Connection, campaign_id: str) -> float:
    """The baseline of the view's latency: counting the campaign's rows as the view did
    before it read counters (the better of two runs)."""
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        await db.fetch(ROW_COUNT, campaign_id)
        best = min(best, time.perf_counter() - start)
    return best


@dataclass
class IntakeBaseline:
    intents: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.intents / self.seconds if self.seconds else 0.0


async def intake_baseline(router: Router, people: Population, count: int) -> IntakeBaseline:
    """Accept `count` members' intents through POST /v1/intents/batch, one request of up to
    10,000 at a time, due in 29 days so that nothing is sent while the campaigns run."""
    from datetime import UTC, datetime, timedelta

    send_at = (datetime.now(UTC) + timedelta(days=29)).isoformat()
    count = min(count, people.members)
    async with httpx.AsyncClient(base_url=router.base, headers=AUTH, timeout=None) as client:
        start = time.perf_counter()
        for offset in range(0, count, 10_000):
            items = [
                {"member_id": people.member_id(i), "route": "prefer_line", "send_at": send_at}
                | MAIN_CONTENT
                for i in range(offset, min(count, offset + 10_000))
            ]
            resp = await client.post("/v1/intents/batch", json={"intents": items})
            if resp.status_code != 200:
                raise RuntimeError(f"batch answered {resp.status_code}: {resp.text[:2000]}")
        seconds = time.perf_counter() - start
    return IntakeBaseline(count, seconds)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


# --- the upload alone, against the machine's ceiling ---------------------------------------


def hash_file_in_a_loop(path: Path) -> tuple[float, int]:
    """Seconds to read the file and SHA-256 each non-empty line (lower-cased), and the count:
    the least any upload of it must spend in Python."""
    start = time.perf_counter()
    count = 0
    with path.open("rb") as f:
        for line in f:
            value = line.strip()
            if value:
                hashlib.sha256(value.lower()).digest()
                count += 1
    return time.perf_counter() - start, count


async def copy_rows(dsn: str, rows: int) -> float:
    """Seconds for one binary COPY of `rows` (uuid, 32 random bytes) rows into a fresh
    unindexed table: the least PostgreSQL needs to take the upload's hashes in."""
    values = [(uuid.UUID(int=1), os.urandom(32)) for _ in range(rows)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE bench_copy_ceiling (audience_id uuid NOT NULL, value_sha256 bytea)"
        )
        start = time.perf_counter()
        await conn.copy_records_to_table("bench_copy_ceiling", records=values)
        seconds = time.perf_counter() - start
        await conn.execute("DROP TABLE bench_copy_ceiling")
    finally:
        await conn.close()
    return seconds


async def measure_upload_only(args: argparse.Namespace, stack: Stack, people: Population) -> None:
    """(1) alone, then the ceiling on the same file and rows, and the ratios."""
    main_file = stack.tmp / "audience.csv"
    shape = write_audience_file(main_file, people, args.file_lines)
    print(f"audience file: {shape.lines:,} lines, {shape.size:,} bytes", flush=True)
    print(f"seeding {people.members:,} members...", flush=True)
    seed_seconds = await seed_members(stack.dsn, people)
    print(f"  seeded by COPY in {seed_seconds:.1f} s (not a figure)", flush=True)
    async with routers(stack, args.routers, None, "upload") as started:
        result = await upload(stack, started[0], main_file, "bench-everyone")
    rep = result.report
    wrong = expect_report(
        rep,
        {
            "lines": shape.lines,
            "valid": shape.lines - shape.invalid,
            "invalid": shape.invalid,
            "duplicates": shape.duplicates,
            "matched": people.members,
            "reachable_line": people.friends,
            "reachable_email": people.members,
        },
    )
    hash_seconds, hashed = hash_file_in_a_loop(main_file)
    copy_seconds = await copy_rows(stack.dsn, rep["valid"])
    ceiling_sum = hash_seconds + copy_seconds
    ceiling_max = max(hash_seconds, copy_seconds)
    rows = [
        ("members", f"{people.members:,}"),
        ("(1) upload + match", f"{result.seconds:.2f} s"),
        ("    file", f"{shape.lines:,} lines, {shape.size / 1e6:.1f} MB"),
        ("    lines per second", f"{shape.lines / result.seconds:,.0f}"),
        (
            "    report",
            f"valid {rep['valid']:,}, invalid {rep['invalid']:,}, duplicates"
            f" {rep['duplicates']:,}, matched {rep['matched']:,}",
        ),
        ("    router peak RSS", peak(result.peak_kb)),
        ("ceiling: read + SHA-256 loop", f"{hash_seconds:.2f} s ({hashed:,} lines)"),
        ("ceiling: binary COPY, no index", f"{copy_seconds:.2f} s ({rep['valid']:,} rows)"),
        ("upload / (loop + COPY)", f"{result.seconds / ceiling_sum:.2f}x"),
        ("upload / max(loop, COPY)", f"{result.seconds / ceiling_max:.2f}x"),
    ]
    width = max(len(k) for k, _ in rows) + 2
    print()
    print(f"{'figure':<{width}}value")
    for k, v in rows:
        print(f"{k:<{width}}{v}")
    if wrong:
        print("UNEXPECTED report: " + "; ".join(wrong))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("command: " + shlex.join(["python", "bench/campaign.py", *sys.argv[1:]]))


# --- the run -----------------------------------------------------------------------------


@dataclass
class Results:
    people: Population
    shape: FileShape
    seed_seconds: float
    upload: Upload
    friends_upload: Upload
    main: Campaign
    baseline: Campaign
    friends_multicast: Campaign
    intake: IntakeBaseline


def expect_report(report: dict[str, Any], expected: dict[str, int]) -> list[str]:
    return [f"{k} {report[k]:,} (expected {v:,})" for k, v in expected.items() if report[k] != v]


async def fan_out_only(router: Router, stack: Stack, audience: dict[str, Any]) -> float:
    """POST a campaign to `audience`, due in 29 days; seconds until it leaves `fanning_out`."""
    from datetime import UTC, datetime, timedelta

    send_at = (datetime.now(UTC) + timedelta(days=29)).isoformat()
    body = {"name": "bench-fan-out", "audience_ids": [audience["id"]], "route": "prefer_line"}
    body |= MAIN_CONTENT | {"send_at": send_at}
    db = await asyncpg.connect(stack.dsn)
    try:
        async with httpx.AsyncClient(base_url=router.base, headers=AUTH, timeout=None) as api:
            start = time.perf_counter()
            resp = await api.post("/v1/campaigns", json=body)
            if resp.status_code != 202:
                raise RuntimeError(f"campaign answered {resp.status_code}: {resp.text[:2000]}")
            campaign_id = resp.json()["id"]
            while True:
                await asyncio.sleep(SAMPLE_SECONDS / 2)
                status = await db.fetchval(
                    "SELECT status FROM campaigns WHERE id = $1::uuid", campaign_id
                )
                if status != "fanning_out":
                    seconds = time.perf_counter() - start
                    break
                if time.perf_counter() - start > STALL_SECONDS:
                    raise RuntimeError("the fan-out took longer than the stall limit")
            row = await db.fetchrow(
                "SELECT status, targeted, accepted FROM campaigns WHERE id = $1::uuid", campaign_id
            )
            assert row is not None
            if row["status"] != "sending" or row["accepted"] != audience["matched"]:
                print(f"    UNEXPECTED end of the fan-out: {dict(row)}", flush=True)
    finally:
        await db.close()
    return seconds


async def measure_fan_out(args: argparse.Namespace, stack: Stack, people: Population) -> None:
    """Seeding, (1), (0) and one fan-out, printed with its ratio to (0)."""
    main_file = stack.tmp / "audience.csv"
    write_audience_file(main_file, people, args.file_lines)
    seed_seconds = await seed_members(stack.dsn, people)
    print(f"  seeded by COPY in {seed_seconds:.1f} s (not a figure)", flush=True)
    async with routers(stack, args.routers, True, "fan-out") as started:
        first = started[0]
        uploaded = await upload(stack, first, main_file, "bench-everyone")
        print(f"(1) upload + match {uploaded.seconds:.1f} s", flush=True)
        intake = await intake_baseline(first, people, args.intake_baseline)
        print(f"(0) intake baseline: {intake.seconds:.1f} s, {intake.per_second:,.0f}/s")
        seconds = await fan_out_only(first, stack, uploaded.report)
    members = uploaded.report["matched"]
    rate = members / seconds
    print()
    print(f"routers                     {args.routers}")
    print(f"fan-out                     {members:,} members in {seconds:.2f} s")
    print(f"fan-out intents/s           {rate:,.0f}")
    print(f"(0) intake baseline         {intake.per_second:,.0f} intents/s")
    print(f"fan-out / (0)               {rate / intake.per_second:.2f}x")
    print("command: " + shlex.join(["python", "bench/campaign.py", *sys.argv[1:]]))


async def measure(args: argparse.Namespace, stack: Stack, people: Population) -> Results:
    """(1) and (2) through routers with multicast off, then (3) and (4) with it on."""
    main_file = stack.tmp / "audience.csv"
    shape = write_audience_file(main_file, people, args.file_lines)
    print(
        f"audience file: {shape.lines:,} lines, {shape.size:,} bytes ({shape.members:,} members,"
        f" {shape.non_members:,} non-members, {shape.invalid:,} invalid, {shape.duplicates:,}"
        f" repeated)",
        flush=True,
    )
    if shape.size > MAX_FILE_BYTES or shape.lines > MAX_LINES:
        raise SystemExit(
            f"the file passes the upload limits ({MAX_FILE_BYTES:,} bytes, {MAX_LINES:,} lines)"
        )
    friends_file = stack.tmp / "friends.csv"
    friends = write_friends_file(friends_file, people, args.baseline)

    print(f"seeding {people.members:,} members ({people.friends:,} LINE friends)...", flush=True)
    seed_seconds = await seed_members(stack.dsn, people)
    print(f"  seeded by COPY in {seed_seconds:.1f} s (not a figure)", flush=True)

    async with routers(stack, args.routers, False, "push") as push_routers:
        first = push_routers[0]
        print("(1) upload and match of the audience file", flush=True)
        upload_1 = await upload(stack, first, main_file, "bench-everyone")
        report = upload_1.report
        print(
            f"    {upload_1.seconds:.1f} s: matched {report['matched']:,}, reachable LINE"
            f" {report['reachable_line']:,}; router peak RSS {peak(upload_1.peak_kb)}",
            flush=True,
        )
        wrong = expect_report(
            report,
            {
                "lines": shape.lines,
                "valid": shape.lines - shape.invalid,
                "invalid": shape.invalid,
                "duplicates": shape.duplicates,
                "matched": people.members,
                "reachable_line": people.friends,
                "reachable_email": people.members,
            },
        )
        if wrong:
            print("    UNEXPECTED report: " + "; ".join(wrong), flush=True)
        print(f"(0) intake baseline: {args.intake_baseline:,} intents by batch", flush=True)
        intake = await intake_baseline(first, people, args.intake_baseline)
        print(f"    {intake.seconds:.1f} s, {intake.per_second:,.0f} intents/s", flush=True)
        friends_upload = await upload(stack, first, friends_file, "bench-friends")
        print(
            f"    friends' audience ({friends:,} lines) uploaded in {friends_upload.seconds:.1f} s",
            flush=True,
        )
        print(f"(2) baseline: {friends:,} LINE friends, multicast off", flush=True)
        baseline = await run_campaign(
            stack, first, friends_upload.report, BASELINE_CONTENT, "bench-winter"
        )

    async with routers(stack, args.routers, True, "multicast") as multicast_routers:
        first = multicast_routers[0]
        print(f"(3) the same {friends:,} LINE friends, multicast on", flush=True)
        friends_multicast = await run_campaign(
            stack,
            first,
            friends_upload.report,
            FRIENDS_CONTENT,
            "bench-spring",
            send_delay=args.send_delay,
        )
        print(f"(4) campaign to all {report['matched']:,} members, multicast on", flush=True)
        main = await run_campaign(stack, first, report, MAIN_CONTENT, "bench-autumn")
    return Results(
        people,
        shape,
        seed_seconds,
        upload_1,
        friends_upload,
        main,
        baseline,
        friends_multicast,
        intake,
    )


def peak(kb: dict[int, int]) -> str:
    if not kb:
        return "n/a"
    if len(kb) == 1:
        return mb(next(iter(kb.values())))
    return f"{mb(max(kb.values()))} max ({', '.join(mb(v) for v in kb.values())})"


def campaign_rows(label: str, c: Campaign) -> list[tuple[str, str]]:
    assert c.sim is not None
    calls = c.sim.pushes + c.sim.multicasts
    return [
        (label, f"{c.members:,} members: {c.expect_line:,} by LINE, {c.expect_email:,} by email"),
        (
            "    fan-out (until sending)",
            f"{c.fan_out:.1f} s, {c.members / c.fan_out:,.0f} intents/s",
        ),
        ("    all LINE recipients accepted", f"{c.line:.1f} s, {c.line_per_second:,.0f}/s"),
        (
            "    LINE from send_at (made before)",
            f"{c.line_sending:.1f} s, {c.expect_line / c.line_sending:,.0f}/s"
            + (" (fan-out outlasted send_at)" if c.fan_out > (c.send_delay or 0) else "")
            if c.send_delay is not None and c.line_sending > 0
            else "-",
        ),
        (
            "    all emails at the sink",
            f"{c.email:.1f} s, {c.emails / c.email:,.0f}/s" if c.expect_email else "-",
        ),
        ("    every delivery final (API)", f"{c.total:.1f} s"),
        (
            "    LINE API calls",
            f"{calls:,}: {c.sim.pushes:,} pushes, {c.sim.multicasts:,} multicasts"
            f" ({c.sim.requests:,} requests in all, quota look-ups included)",
        ),
        ("    LINE 409s / 429s", f"{c.sim.conflicts:,} / {c.sim.rate_limited:,}"),
        ("    LINE recipients accepted", f"{c.sim.recipients:,}"),
        ("    emails received by the sink", f"{c.emails:,}"),
        ("    router peak RSS", peak(c.peak_kb)),
        (
            "    GET /v1/campaigns/{id}",
            f"{len(c.view_seconds)} reads, p50 {quantile(c.view_seconds, 0.5) * 1000:.1f} ms,"
            f" max {max(c.view_seconds, default=0) * 1000:.1f} ms; baseline (rows counted)"
            f" {c.row_count_seconds * 1000:.1f} ms",
        ),
        (
            "    final deliveries",
            ", ".join(
                f"{d['channel']} {d['status']} {d['deliveries']:,}"
                + (f" ({d['multicasts']:,} multicasts)" if d.get("multicasts") else "")
                for d in c.view["deliveries"]
            ),
        ),
    ]


def print_results(args: argparse.Namespace, r: Results, stack: Stack) -> None:
    rep = r.upload.report
    rows: list[tuple[str, str]] = [
        ("members (LINE friends)", f"{r.people.members:,} ({r.people.friends:,})"),
        ("router processes per phase", f"{args.routers}"),
        ("seeding by COPY (not a figure)", f"{r.seed_seconds:.1f} s"),
        ("(1) upload + match", f"{r.upload.seconds:.1f} s"),
        ("    file", f"{r.shape.lines:,} lines, {r.shape.size / 1e6:.1f} MB"),
        ("    lines per second", f"{r.shape.lines / r.upload.seconds:,.0f}"),
        (
            "    report",
            f"valid {rep['valid']:,}, invalid {rep['invalid']:,}, duplicates {rep['duplicates']:,}",
        ),
        (
            "",
            f"matched {rep['matched']:,}, reachable LINE {rep['reachable_line']:,},"
            f" email {rep['reachable_email']:,}",
        ),
        ("    router peak RSS", peak(r.upload.peak_kb)),
    ]
    rows += campaign_rows("(2) friends, one push each", r.baseline)
    rows += campaign_rows("(3) same friends, multicast on", r.friends_multicast)
    rows += campaign_rows("(4) everyone, multicast on", r.main)
    base = r.baseline.line_per_second
    for label, c in (("(4) / (2)", r.main), ("(3) / (2)", r.friends_multicast)):
        rate = c.line_per_second
        if c.send_delay is not None and c.line_sending > 0:
            label, rate = "(3) from send_at / (2)", c.expect_line / c.line_sending
        ratio = f"{rate / base:.2f}x" if base else "-"
        rows.append((f"LINE recipients/s {label}", ratio))
    rows.append(("(0) intake baseline", f"{r.intake.seconds:.1f} s, {r.intake.per_second:,.0f}/s"))
    for label, c in (("(4)", r.main), ("(3)", r.friends_multicast), ("(2)", r.baseline)):
        rate = c.members / c.fan_out if c.fan_out else 0.0
        ratio = f"{rate / r.intake.per_second:.2f}x" if r.intake.per_second else "-"
        rows.append((f"fan-out intents/s {label} / (0)", ratio))
    main = r.main
    rows.append(
        (
            "summary (4)",
            f"fan-out {main.fan_out:.1f} s ({main.members / main.fan_out:,.0f} intents/s);"
            f" LINE half {main.line:.1f} s ({main.line_per_second:,.0f} recipients/s);"
            f" view p50 {quantile(main.view_seconds, 0.5) * 1000:.1f} ms,"
            f" max {max(main.view_seconds, default=0) * 1000:.1f} ms",
        )
    )
    width = max(len(k) for k, _ in rows) + 2
    print()
    print(f"{'figure':<{width}}value")
    for k, v in rows:
        print(f"{k:<{width}}{v}")
    assert r.main.sim is not None
    if not stack.has_multicast_switch:
        print("note: this router has no [line] multicast setting: every campaign pushed")
    elif r.main.sim.multicasts == 0:
        print("note: the simulator saw no multicast: this router pushes every LINE delivery")
    for label, c in (("(2)", r.baseline), ("(3)", r.friends_multicast), ("(4)", r.main)):
        if c.emails != c.expect_email or (c.sim is not None and c.sim.recipients != c.expect_line):
            print(f"note: {label} delivered other counts than its audience report expected")
    print()
    print("command: " + shlex.join(["python", "bench/campaign.py", *sys.argv[1:]]))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--file-lines", type=int, default=1_500_000)
    parser.add_argument("--baseline", type=int, default=100_000, help="LINE friends in (3)")
    parser.add_argument("--routers", type=int, default=1, help="router processes per phase")
    parser.add_argument(
        "--intake-baseline", type=int, default=20_000, help="intents in the baseline (0)"
    )
    parser.add_argument(
        "--send-delay", type=float, default=30.0, help="(3)'s send_at, seconds after its POST"
    )
    parser.add_argument(
        "--only", choices=["upload"], help="run only this phase, with its machine ceiling"
    )
    parser.add_argument(
        "--fan-out-only", action="store_true", help="time one campaign's fan-out and nothing else"
    )
    args = parser.parse_args()
    if args.members < 2 or args.routers < 1 or args.baseline < 1:
        parser.error("--members at least 2, --routers and --baseline at least 1")
    width = len(str(max(args.members, args.file_lines - args.members) - 1))
    people = Population(args.members, width)

    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="router-campaign-bench-") as tmp_name:
        tmp = Path(tmp_name)
        dsn = os.environ.get("DATABASE_URL")
        server = None
        if not dsn:
            from pgserver.postgres_server import get_server

            server = get_server(tmp / "pg", cleanup_mode="delete")
            dsn = server.get_uri()
        sampler = RssSampler()
        sim_log = tmp / "simulator.log"
        simulator_args = [py, "-m", "router", "line-simulator", "--listen", "127.0.0.1:0"]
        simulator_args += ["--token", TOKEN]
        try:
            with (
                child(simulator_args, sim_log) as sim_proc,
                sink_process() as (smtp_port, received),
            ):
                sim = simulator_url(sim_proc, sim_log)
                await wait_http(f"{sim}/__simulator/stats", sim_proc, sim_log)
                async with httpx.AsyncClient() as c:
                    stats = (await c.get(f"{sim}/__simulator/stats")).json()
                print(
                    f"simulator limits: push {stats['push_rate_per_second']:,}/s,"
                    f" multicast {stats['multicast_rate_per_second']:,}/s",
                    flush=True,
                )
                subprocess.run(
                    [py, "-m", "router", "migrate"],
                    env=os.environ | {"ROUTER_DATABASE_URL": dsn},
                    check=True,
                    capture_output=True,
                )
                stack = Stack(
                    py=py,
                    tmp=tmp,
                    dsn=dsn,
                    sim=sim,
                    smtp_port=smtp_port,
                    received=received,
                    sampler=sampler,
                    has_multicast_switch="multicast" in LineConfig.__struct_fields__,
                )
                if args.only == "upload":
                    await measure_upload_only(args, stack, people)
                    return
                if args.fan_out_only:
                    await measure_fan_out(args, stack, people)
                    return
                results = await measure(args, stack, people)
        finally:
            sampler.close()
            if server is not None:
                with suppress(Exception):
                    server.cleanup()
    print_results(args, results, stack)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit("interrupted; the milestones printed above are the figures measured so far")
