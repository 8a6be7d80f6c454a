"""Throughput of the router against the LINE simulator, with baselines from the same run.

Starts PostgreSQL (embedded, or DATABASE_URL), the LINE simulator and an SMTP sink in their
own processes, then measures:
  (a) intents accepted per second through POST /v1/intents/batch (an API-only router), one
      request at a time and two at once;
  (s) single POST /v1/intents (bench/single_intents.py): an open loop at --rate requests/s
      (achieved rate, p50, p99, max) and the saturation rate, each from an API-only router on
      a database of its own, the load client in a process of its own;
  (b) LINE deliveries per second end to end, each intent with a text of its own (so pushes;
      identical content would go as multicast): first intent posted -> last push accepted by
      the simulator (a router with workers);
  (c) a hand-written loop of line-bot-sdk push_message calls (the SDK as it comes);
  (d) the same pushes as raw aiohttp requests: the ceiling of this machine and simulator.
(c) and (d) run at the same concurrency. (a) and (s) also run against the base tree (--base,
by default $BENCH_BASE_TREE when set: an earlier checkout, run with PYTHONPATH and
working directory set to it, on databases of their own in the same PostgreSQL), and the
ratios this/base are printed.

Usage, from the tree's root with the venv active:
    PYTHONPATH=$PWD python bench/throughput.py [--intents N] [--base PATH] [--rate 300]
        [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import msgspec

TOKEN = "bench-token"
API_KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args,
        env=os.environ | (env or {}),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_http(url: str) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while True:
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def sim_stats(client: httpx.AsyncClient, sim: str) -> dict[str, Any]:
    stats: dict[str, Any] = (await client.get(f"{sim}/__simulator/stats")).json()
    return stats


def router_env(dsn: str, sim: str, smtp_port: int, port: int, workers: bool) -> dict[str, str]:
    return {
        "ROUTER_HTTP_LISTEN": f"127.0.0.1:{port}",
        "ROUTER_DATABASE_URL": dsn,
        "ROUTER_API_KEYS": API_KEY,
        "ROUTER_LINE_CHANNEL_ACCESS_TOKEN": TOKEN,
        "ROUTER_LINE_API_BASE": sim,
        "ROUTER_EMAIL_HOST": "127.0.0.1",
        "ROUTER_EMAIL_PORT": str(smtp_port),
        "ROUTER_EMAIL_FROM_ADDRESS": "news@shop.example.jp",
        "ROUTER_WORKERS_ENABLED": "true" if workers else "false",
        "ROUTER_DATABASE_POOL_SIZE": "20",
    }


async def post_intents(
    base: str,
    first: int,
    count: int,
    batch: int,
    campaign: str,
    concurrency: int = 1,
    personal: bool = False,
) -> float:
    """Post `count` intents for members f{first}.. in batches, `concurrency` requests at a
    time; return elapsed seconds. Bodies are encoded before the clock starts: what is timed
    is the router, not the client building JSON. With `personal`, each intent's text is its
    own, so none of them can share a LINE multicast."""
    bodies = [
        msgspec.json.encode(
            {
                "intents": [
                    {
                        "member_id": f"f{first + i}",
                        "campaign": campaign,
                        "email": {
                            "subject": "Autumn sale",
                            "text": f"20% off until Sunday, f{first + i}."
                            if personal
                            else "20% off until Sunday.",
                        },
                    }
                    for i in range(offset, min(count, offset + batch))
                ]
            }
        )
        for offset in range(0, count, batch)
    ]
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:

        async def one(body: bytes) -> None:
            async with slots:
                resp = await client.post("/v1/intents/batch", content=body)
            results = msgspec.json.decode(resp.content)["results"]
            assert all(r["status"] == "accepted" for r in results), results[:3]

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - start


async def add_members(base: str, count: int) -> None:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120
    ) as client:
        for offset in range(0, count, 10_000):
            members = [
                {"member_id": f"f{i}", "email": f"f{i}@example.jp", "line_user_id": f"U{i:032x}"}
                for i in range(offset, min(count, offset + 10_000))
            ]
            resp = await client.post("/v1/members/batch", json={"members": members})
            assert resp.status_code == 200


async def sdk_loop(sim: str, count: int, concurrency: int) -> float:
    from linebot.v3.messaging import (
        AsyncApiClient,
        AsyncMessagingApi,
        Configuration,
        PushMessageRequest,
        TextMessage,
    )

    async with AsyncApiClient(Configuration(host=sim, access_token=TOKEN)) as api_client:
        api = AsyncMessagingApi(api_client)
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with slots:
                await api.push_message(
                    PushMessageRequest(
                        to=f"U{i:032x}", messages=[TextMessage(text="Autumn sale\n\n20% off")]
                    ),
                    x_line_retry_key=str(uuid.uuid4()),
                )

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - start


async def raw_loop(sim: str, count: int, concurrency: int) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            body = json.dumps(
                {"to": f"U{i:032x}", "messages": [{"type": "text", "text": "Autumn sale"}]}
            )
            async with slots:
                h = headers | {"X-Line-Retry-Key": str(uuid.uuid4())}
                async with session.post(f"{sim}/v2/bot/message/push", data=body, headers=h) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - start


async def wait_accepted(sim: str, target: int, timeout: float) -> float:
    """Time at which the simulator had accepted `target` LINE messages, by push or multicast
    (perf_counter)."""
    async with httpx.AsyncClient() as client:
        deadline = time.perf_counter() + timeout
        while (await sim_stats(client, sim))["accepted_messages"] < target:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {(await sim_stats(client, sim))} after {timeout}s")
            await asyncio.sleep(0.02)
        return time.perf_counter()


async def batch_figures(
    tree: Path, dsn: str, sim: str, smtp_port: int, args: argparse.Namespace
) -> tuple[float, float]:
    """Intents/s through /v1/intents/batch from an API-only router of `tree` on `dsn`: one
    request at a time, then two at once."""
    subprocess.run(
        [sys.executable, "-m", "router", "migrate"],
        env=os.environ | {"PYTHONPATH": str(tree), "ROUTER_DATABASE_URL": dsn},
        cwd=str(tree),
        check=True,
        capture_output=True,
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = router_env(dsn, sim, smtp_port, port, False) | {"PYTHONPATH": str(tree)}
    with process([sys.executable, "-m", "router", "serve"], env, str(tree)):
        await wait_http(f"{base}/healthz")
        await add_members(base, args.intents * 3)
        one = await post_intents(base, 0, args.intents, args.batch, "bench-a")
        two = await post_intents(
            base, 2 * args.intents, args.intents, args.batch, "bench-a2", concurrency=2
        )
    return args.intents / one, args.intents / two


async def fresh_database(url: str, name: str) -> str:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return urllib.parse.urlsplit(url)._replace(path=f"/{name}").geturl()


def ratio(this: float, base: float | None) -> str:
    return f"x{this / base:.2f}" if base else "-"


async def main() -> None:
    # Imported here: bench/single_intents.py imports this module's helpers.
    import single_intents

    parser = argparse.ArgumentParser()
    parser.add_argument("--intents", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--baseline-pushes", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--base", type=Path, default=single_intents.DEFAULT_BASE)
    single_intents.add_arguments(parser)
    args = parser.parse_args()
    here = single_intents.HERE
    trees = single_intents.trees(args.base)
    batches: dict[str, tuple[float, float]] = {}
    singles: dict[str, single_intents.SingleFigures] = {}

    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        dsn = os.environ.get("DATABASE_URL")
        server = None
        if not dsn:
            from pgserver.postgres_server import get_server

            server = get_server(tmp, cleanup_mode="delete")
            dsn = server.get_uri()
        sim_port, smtp_port = free_port(), free_port()
        sim = f"http://127.0.0.1:{sim_port}"
        with (
            process(
                [
                    py,
                    "-m",
                    "router",
                    "line-simulator",
                    "--listen",
                    f"127.0.0.1:{sim_port}",
                    "--token",
                    TOKEN,
                ]
            ),
            process(
                [
                    py,
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-l",
                    f"127.0.0.1:{smtp_port}",
                    "-c",
                    "aiosmtpd.handlers.Sink",
                ]
            ),
        ):
            await wait_http(f"{sim}/__simulator/stats")
            subprocess.run(
                [py, "-m", "router", "migrate"],
                env=os.environ | {"ROUTER_DATABASE_URL": dsn},
                check=True,
                capture_output=True,
            )

            # (a) ingest only: an API-only router, so delivery does not compete for the CPU.
            # This tree's runs on the main database: (b) delivers its intents first.
            for label, tree in trees:
                target = dsn if tree == here else await fresh_database(dsn, "bench_batch_base")
                batches[label] = await batch_figures(tree, target, sim, smtp_port, args)
            # (s) single intents, on databases of their own.
            for label, tree in trees:
                singles_dsn = await fresh_database(dsn, f"bench_singles_{label}")
                singles[label] = await single_intents.run_tree(tree, singles_dsn, args)

            # (b) end to end, with workers, for fresh members' intents.
            async with httpx.AsyncClient() as c:
                await c.post(f"{sim}/__simulator/reset")
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            with process(
                [py, "-m", "router", "serve"], router_env(dsn, sim, smtp_port, port, True)
            ):
                await wait_http(f"{base}/healthz")
                # the intents of (a) are delivered first; wait for them, then measure (b)
                await wait_accepted(sim, 2 * args.intents, timeout=600)
                start = time.perf_counter()
                # A text of its own each: (b) measures pushes, as (c) and (d) do.
                posted = await post_intents(
                    base, args.intents, args.intents, args.batch, "bench-b", personal=True
                )
                done = await wait_accepted(sim, 3 * args.intents, timeout=600)
                end_to_end = done - start

            # The baselines measure the machine, not LINE's limit: lift the simulator's.
            async with httpx.AsyncClient() as c:
                await c.post(f"{sim}/__simulator/reset")
                await c.post(f"{sim}/__simulator/faults", json={"rate_limits": {"push": 10**6}})
            sdk = await sdk_loop(sim, args.baseline_pushes, args.concurrency)
            raw = await raw_loop(sim, args.baseline_pushes, args.concurrency)
        if server is not None:
            server.cleanup()

    a, a2 = batches["this"]
    a_base, a2_base = batches.get("base", (None, None))
    b = args.intents / end_to_end
    c = args.baseline_pushes / sdk
    d = args.baseline_pushes / raw
    base_note = f"base = {args.base}" if "base" in batches else "no base tree"
    print(
        f"(a) intents accepted via /v1/intents/batch: {a:9,.0f} /s  (base {a_base or 0:9,.0f} /s,"
        f" {ratio(a, a_base)}; {args.intents:,} intents, batches of {args.batch:,}; {base_note})"
    )
    print(
        f"    the same, two batch requests at once:     {a2:9,.0f} /s  (base {a2_base or 0:9,.0f}"
        f" /s, {ratio(a2, a2_base)})"
    )
    for label, _ in trees:
        for line in single_intents.describe(singles[label]):
            print(f"(s) single POST /v1/intents, {label:>4}: {line}")
    if "base" in singles:
        this, before = singles["this"], singles["base"]
        print(
            f"(s) this/base: saturation {ratio(this.saturation.rate, before.saturation.rate)},"
            f" open-loop p99 x{this.open_loop.p99 / before.open_loop.p99:.3f}"
            f" at {args.rate:,.0f} requests/s offered"
        )
    print(
        f"(b) LINE deliveries end to end:             {b:9,.0f} /s  ({args.intents:,} in {end_to_end:.2f} s; posting took {posted:.2f} s)"
    )
    print(
        f"(c) line-bot-sdk push_message loop:         {c:9,.0f} /s  ({args.baseline_pushes:,} pushes, concurrency {args.concurrency})"
    )
    print(
        f"(d) raw aiohttp pushes:                     {d:9,.0f} /s  ({args.baseline_pushes:,} pushes, concurrency {args.concurrency})"
    )
    print("(b) respects LINE's push limit of 2,000 requests/s; (c) and (d) ran with it lifted")
    print(f"ratios: (b)/(c) = {b / c:.2f}   (b)/(d) = {b / d:.2f}   (c)/(d) = {c / d:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
