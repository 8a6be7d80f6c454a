"""One intent per request: `POST /v1/intents` at a fixed offered rate, and at saturation.

Most API clients send transactional messages one request each. For each tree measured (this
one, and with --base the tree to compare with: by default $BENCH_BASE_TREE when set) an
API-only router (`[workers] enabled = false`, so delivery does not compete for the CPU) runs
on a database of its own in one PostgreSQL, and a load client in a separate process (so it
does not steal the router's event loop) measures:

  open loop:  --rate requests a second for --seconds, each request scheduled on a clock
              (request i at start + i/rate, whether or not earlier ones were answered), over
              --connections client connections; latency counts from the scheduled time, so a
              router that falls behind shows it. Printed: achieved rate, p50, p99, max.
  saturation: a closed loop with --concurrency requests in flight for --seconds: the most
              requests a second the process answers (and its p50/p99 there).
  CPU:        for each run, the router process's user+system CPU time (from /proc) divided by
              the requests it answered: the per-request cost, which a loaded machine's
              wall-clock figures hide.

Every answer must be 202 (accepted means committed before the answer).

Usage (from the tree's root, venv active):
    PYTHONPATH=$PWD python bench/single_intents.py [--base ../before] [--rate 300]
        [--seconds 10] [--connections 32] [--saturation-concurrency 64]
The base tree runs with PYTHONPATH and working directory set to it. bench/throughput.py runs
the same measurement (`measure_singles`) next to its batch figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import asyncpg
import msgspec

# Run as a script, this directory is on the path: the helpers of bench/throughput.py.
from throughput import API_KEY, add_members, free_port, process, router_env, wait_http

HERE = Path(__file__).resolve().parent.parent
# An earlier checkout to compare with, e.g. `git worktree add ../before <commit>`.
_BASE = os.environ.get("BENCH_BASE_TREE")
DEFAULT_BASE = Path(_BASE) if _BASE else None
MEMBERS = 5_000


@dataclass
class LoadFigures:
    """What one load run saw: achieved requests/s and latencies in milliseconds."""

    requests: int
    rate: float
    p50: float
    p99: float
    max: float
    failed: int
    cpu_ms: float = 0.0
    """Router process CPU (user + system) per answered request, in milliseconds."""


def _figures(latencies: list[float], elapsed: float, failed: int) -> LoadFigures:
    ordered = sorted(latencies) or [0.0]

    def pick(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return LoadFigures(
        requests=len(latencies),
        rate=len(latencies) / elapsed,
        p50=pick(0.50),
        p99=pick(0.99),
        max=1000 * ordered[-1],
        failed=failed,
    )


def _bodies(count: int) -> list[bytes]:
    mail = {"subject": "Your order has shipped", "text": "Order 1 is on its way."}
    return [
        msgspec.json.encode(
            {
                "member_id": f"f{i % MEMBERS}",
                "route": "email_only",
                "kind": "transactional",  # a shipping notice needs no consent to promotion
                "email": mail,
            }
        )
        for i in range(count)
    ]


async def _open_loop(base: str, rate: float, seconds: float, connections: int) -> LoadFigures:
    count = int(rate * seconds)
    bodies = _bodies(count)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    failed = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def one(i: int, start: float) -> None:
            nonlocal failed
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            async with session.post(f"{base}/v1/intents", data=bodies[i]) as resp:
                await resp.read()
                if resp.status != 202:
                    failed += 1
                    return
            latencies.append(time.perf_counter() - due)

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(i, start) for i in range(count)))
        return _figures(latencies, time.perf_counter() - start, failed)


async def _closed_loop(base: str, seconds: float, concurrency: int) -> LoadFigures:
    bodies = _bodies(MEMBERS)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    failed = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            nonlocal failed
            i = n
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                async with session.post(f"{base}/v1/intents", data=bodies[i % MEMBERS]) as resp:
                    await resp.read()
                    if resp.status != 202:
                        failed += 1
                    else:
                        latencies.append(time.perf_counter() - sent)
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        return _figures(latencies, time.perf_counter() - start, failed)


def _client(argv: list[str]) -> None:
    """The load client, in a process of its own: prints its figures as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", required=True)
    parser.add_argument("--mode", choices=["open", "closed"], required=True)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    if args.mode == "open":
        figures = asyncio.run(_open_loop(args.client, args.rate, args.seconds, args.connections))
    else:
        figures = asyncio.run(_closed_loop(args.client, args.seconds, args.connections))
    print(json.dumps(asdict(figures)))


async def load(base: str, mode: str, rate: float, seconds: float, connections: int) -> LoadFigures:
    """Run the load client against `base` in its own process and return its figures."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        base,
        "--mode",
        mode,
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--connections",
        str(connections),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"load client failed ({proc.returncode})"
    return LoadFigures(**json.loads(out.decode().strip().splitlines()[-1]))


@dataclass
class SingleFigures:
    open_loop: LoadFigures
    saturation: LoadFigures


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _timed(pid: int | None, run: Awaitable[LoadFigures]) -> LoadFigures:
    before = cpu_seconds(pid) if pid is not None else 0.0
    figures = await run
    if pid is not None and figures.requests:
        figures.cpu_ms = 1000 * (cpu_seconds(pid) - before) / figures.requests
    return figures


async def measure_singles(
    base: str, args: argparse.Namespace, pid: int | None = None
) -> SingleFigures:
    """Open loop at --rate, then saturation, against a running router at `base` (whose process
    id, when given, is where CPU per request is read)."""
    await load(base, "closed", 0, 2.0, 8)  # warm-up
    open_loop = await _timed(pid, load(base, "open", args.rate, args.seconds, args.connections))
    saturation = await _timed(
        pid, load(base, "closed", 0, args.seconds, args.saturation_concurrency)
    )
    return SingleFigures(open_loop, saturation)


def describe(f: SingleFigures) -> list[str]:
    o, s = f.open_loop, f.saturation
    return [
        f"open loop: {o.rate:7,.0f} req/s achieved; p50 {o.p50:6.1f} ms, p99 {o.p99:7.1f} ms,"
        f" max {o.max:7.1f} ms ({o.requests:,} answered, {o.failed} not 202);"
        f" router CPU {o.cpu_ms:.3f} ms/request",
        f"saturation: {s.rate:7,.0f} req/s; p50 {s.p50:6.1f} ms, p99 {s.p99:7.1f} ms"
        f" ({s.failed} not 202); router CPU {s.cpu_ms:.3f} ms/request",
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop requests/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load run")
    parser.add_argument("--connections", type=int, default=32, help="open-loop connections")
    parser.add_argument(
        "--saturation-concurrency", type=int, default=64, help="saturation: requests in flight"
    )


def trees(base: Path | None) -> list[tuple[str, Path]]:
    """(label, tree) pairs to measure: the base first when there is one, then this tree."""
    runs = [("base", base)] if base is not None and base.is_dir() else []
    return [*runs, ("this", HERE)]


async def databases(url: str, labels: list[str], prefix: str) -> dict[str, str]:
    """A fresh database per label in the server at `url`; their DSNs."""
    admin = await asyncpg.connect(url)
    dsns = {}
    try:
        for label in labels:
            name = f"{prefix}_{label}"
            await admin.execute(f"DROP DATABASE IF EXISTS {name}")
            await admin.execute(f"CREATE DATABASE {name}")
            dsns[label] = urllib.parse.urlsplit(url)._replace(path=f"/{name}").geturl()
    finally:
        await admin.close()
    return dsns


def migrate(tree: Path, dsn: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "router", "migrate"],
        env=os.environ | {"PYTHONPATH": str(tree), "ROUTER_DATABASE_URL": dsn},
        cwd=str(tree),
        check=True,
        capture_output=True,
    )


async def run_tree(tree: Path, dsn: str, args: argparse.Namespace) -> SingleFigures:
    """Migrate `dsn`, start an API-only router from `tree` on it, and measure."""
    migrate(tree, dsn)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = router_env(dsn, "http://127.0.0.1:9", 9, port, False) | {"PYTHONPATH": str(tree)}
    with process([sys.executable, "-m", "router", "serve"], env, str(tree)) as proc:
        await wait_http(f"{base}/healthz")
        await add_members(base, MEMBERS)
        return await measure_singles(base, args, proc.pid)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE)
    add_arguments(parser)
    args = parser.parse_args()
    runs = trees(args.base)
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        url = os.environ.get("DATABASE_URL")
        server = None
        if not url:
            from pgserver.postgres_server import get_server

            server = get_server(tmp, cleanup_mode="delete")
            url = server.get_uri()
        dsns = await databases(url, [label for label, _ in runs], "bench_singles")
        results: dict[str, SingleFigures] = {}
        for label, tree in runs:
            results[label] = await run_tree(tree, dsns[label], args)
            for line in describe(results[label]):
                print(f"{label:>5} [{tree}] {line}", flush=True)
        if server is not None:
            server.cleanup()
    if "base" in results:
        b, t = results["base"], results["this"]
        print(
            f"this / base: saturation x{t.saturation.rate / b.saturation.rate:.2f};"
            f" open-loop p99 x{t.open_loop.p99 / b.open_loop.p99:.3f};"
            f" CPU per request x{t.saturation.cpu_ms / b.saturation.cpu_ms:.3f} (saturation),"
            f" x{t.open_loop.cpu_ms / b.open_loop.cpu_ms:.3f} (open loop)"
        )


if __name__ == "__main__":
    if "--client" in sys.argv:
        _client(sys.argv[1:])
    else:
        asyncio.run(main())
