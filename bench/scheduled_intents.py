"""Single-intent POSTs of intents scheduled an hour ahead: requests per second and router CPU.

Every accepted intent wakes the delivery queues of every router process, yet nothing is due:
this measures what those wake-ups cost the API. A router with workers (LINE and email
configured, `[workers]` defaults) runs alone on a fresh database; --clients connections post
`POST /v1/intents` one intent each, alternating a LINE friend and an email-only address, each
with `send_at` an hour ahead, for --seconds after a short warm-up. Printed: requests per second,
the CPU (user + system, in % of one core) of the router process and of PostgreSQL's backends
over the measured window, and the router's CPU per request.

With --before PATH, the same scenario first runs the router from PATH (for example a checkout
of an earlier version) on a database of its own, then this tree's, back to back against the
same PostgreSQL, simulator and SMTP sink.

Usage: python bench/scheduled_intents.py [--before PATH] [--seconds N] [--clients N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import msgspec

# Run as a script, this directory is on the path: the helpers of bench/throughput.py.
from throughput import API_KEY, TOKEN, add_members, free_port, process, router_env, wait_http

HERE = Path(__file__).resolve().parent.parent
FRIENDS = 2_000


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends(postmaster: int) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend of the server."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == postmaster:
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
            except (OSError, IndexError):
                continue  # gone meanwhile
    return found


def bodies() -> itertools.cycle[bytes]:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    mail = {"subject": "Autumn sale", "text": "20% off until Sunday."}
    return itertools.cycle(
        msgspec.json.encode(
            {"member_id": f"f{i}", "email": mail, "send_at": later}
            if i % 2 == 0
            else {"email_address": f"guest{i}@example.jp", "email": mail, "send_at": later}
        )
        for i in range(FRIENDS)
    )


async def post_for(session: aiohttp.ClientSession, base: str, clients: int, seconds: float) -> int:
    """Post intents from `clients` connections for `seconds`; how many were accepted."""
    source = bodies()
    deadline = time.monotonic() + seconds
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        while time.monotonic() < deadline:
            async with session.post(f"{base}/v1/intents", data=next(source)) as resp:
                await resp.read()
                assert resp.status == 202, resp.status
                accepted += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted


async def measure(
    label: str,
    pythonpath: Path,
    dsn: str,
    postmaster: int | None,
    sim: str,
    smtp_port: int,
    args: argparse.Namespace,
) -> tuple[float, float]:
    # `python -m` puts the working directory first on the path: run in the tree measured.
    env, cwd = {"PYTHONPATH": str(pythonpath)}, str(pythonpath)
    subprocess.run(
        [sys.executable, "-m", "router", "migrate"],
        env=os.environ | env | {"ROUTER_DATABASE_URL": dsn},
        cwd=cwd,
        check=True,
        capture_output=True,
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.clients)
    with process(
        [sys.executable, "-m", "router", "serve"],
        router_env(dsn, sim, smtp_port, port, True) | env,
        cwd,
    ) as router:
        await wait_http(f"{base}/healthz")
        await add_members(base, FRIENDS)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            await post_for(session, base, args.clients, 3.0)  # warm-up
            pg = backends(postmaster) if postmaster else {}
            cpu, start = cpu_seconds(router.pid), time.perf_counter()
            accepted = await post_for(session, base, args.clients, args.seconds)
            elapsed = time.perf_counter() - start
            cpu = cpu_seconds(router.pid) - cpu
            pg_after = backends(postmaster) if postmaster else {}
            pg_cpu = sum(pg_after[pid] - pg[pid] for pid in pg if pid in pg_after)
    conn = await asyncpg.connect(dsn)
    try:
        claimed = await conn.fetchval("SELECT count(*) FROM deliveries WHERE attempts > 0")
    finally:
        await conn.close()
    assert claimed == 0, f"{label}: {claimed} deliveries were claimed before they were due"
    rate, share = accepted / elapsed, 100 * cpu / elapsed
    database = f", PostgreSQL {100 * pg_cpu / elapsed:5.1f} %" if postmaster else ""
    print(
        f"{label:>7}: {rate:7,.0f} requests/s; CPU of a core: router {share:5.1f} %{database};"
        f" router CPU per request {1000 * cpu / accepted:.2f} ms  [{pythonpath}]",
        flush=True,
    )
    return rate, share


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, help="a checkout to measure first")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        url = os.environ.get("DATABASE_URL")
        server, postmaster = None, None
        if not url:
            from pgserver.postgres_server import get_server

            server = get_server(tmp, cleanup_mode="delete")
            url = server.get_uri()
            postmaster = int((Path(tmp) / "postmaster.pid").read_text().split()[0])
        runs = ([("before", args.before)] if args.before else []) + [("after", HERE)]
        admin = await asyncpg.connect(url)
        dsns = {}
        try:
            for label, _ in runs:
                name = f"bench_scheduled_{label}"
                await admin.execute(f"DROP DATABASE IF EXISTS {name}")
                await admin.execute(f"CREATE DATABASE {name}")
                dsns[label] = urllib.parse.urlsplit(url)._replace(path=f"/{name}").geturl()
        finally:
            await admin.close()
        sim_port, smtp_port = free_port(), free_port()
        sim = f"http://127.0.0.1:{sim_port}"
        simulator = [py, "-m", "router", "line-simulator", "--listen", f"127.0.0.1:{sim_port}"]
        sink = [py, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{smtp_port}", "-c"]
        with (
            process([*simulator, "--token", TOKEN]),
            process([*sink, "aiosmtpd.handlers.Sink"]),
        ):
            await wait_http(f"{sim}/__simulator/stats")
            results = {
                label: await measure(label, path, dsns[label], postmaster, sim, smtp_port, args)
                for label, path in runs
            }
        if server is not None:
            server.cleanup()
    if "before" in results:
        (rate0, cpu0), (rate1, cpu1) = results["before"], results["after"]
        print(
            f"after / before: requests/s x{rate1 / rate0:.2f},"
            f" router CPU per request x{(cpu1 / rate1) / (cpu0 / rate0):.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
