"""Coupon pools: uploading a file of codes, and handing codes out from many connections at once.

Starts PostgreSQL (embedded pgserver in a temporary directory, or DATABASE_URL) and one
`router serve` process, then:

  (1) baseline upload: an audience file of --codes email addresses (14 characters, one per
      line, no repeats) POSTed as multipart to /v1/audiences, streamed from disk.
  (2) upload: a file of --codes coupon codes (13 characters each, no repeats) POSTed
      as multipart to /v1/coupon-pools/bench/codes. Seconds from the request to the answer
      (every code stored), codes/s, and the ratio (2)/(1): the coupon upload against the
      audience upload of as many lines, in the same run.
  (3) baseline hand-out: --hand-outs single-row UPDATEs of a code by its key (pool, code), one
      statement each in its own transaction, spread over --connections connections at once:
      the cheapest way to mark one known row as taken.
  (4) hand-out: `router.store.coupon_pools.hand_out` for --hand-outs distinct holders over the
      same number of connections at once (each a look-up of the holder's code, then one
      UPDATE of a free code locked with SKIP LOCKED). Hand-outs/s, and the ratio (4)/(3)
      in hand-outs per second. The codes handed out are checked to be distinct.
  (5) again: the same holders once more (a retry finds its code): look-ups/s.

Usage: python bench/coupons.py [--codes N] [--hand-outs N] [--connections N]
Defaults: 1,000,000 codes, 100,000 hand-outs, 8 connections. Develop with
--codes 100000 --hand-outs 10000.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.campaign import child, free_port, log_problems, wait_http
from router.store import coupon_pools

API_KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def write_lines(path: Path, count: int, line: Callable[[int], str]) -> None:
    with path.open("w") as f:
        for start in range(0, count, 100_000):
            f.write("".join(line(i) + "\n" for i in range(start, min(count, start + 100_000))))


async def post_file(base: str, path_url: str, path: Path, data: dict[str, str]) -> float:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=None) as client:
        with path.open("rb") as f:
            start = time.perf_counter()
            resp = await client.post(
                path_url, data=data, files={"file": (path.name, f, "text/plain")}
            )
            seconds = time.perf_counter() - start
    if resp.status_code not in (200, 201):
        raise RuntimeError(f"{path_url} answered {resp.status_code}: {resp.text[:2000]}")
    body: dict[str, Any] = resp.json()
    print(f"  answer: { {k: v for k, v in body.items() if k not in ('errors', 'rejections')} }")
    return seconds


async def spread(
    conns: list[asyncpg.Connection],
    count: int,
    one: Callable[[asyncpg.Connection, int], Awaitable[Any]],
) -> tuple[float, list[Any]]:
    """`one(conn, i)` for i in range(count), the connections taking turns, all at once."""
    results: list[Any] = [None] * count

    async def worker(k: int) -> None:
        for i in range(k, count, len(conns)):
            results[i] = await one(conns[k], i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(len(conns))))
    return time.perf_counter() - start, results


async def measure(args: argparse.Namespace, dsn: str, base: str, tmp: Path) -> None:
    audience_file, codes_file = tmp / "audience.txt", tmp / "codes.txt"
    write_lines(audience_file, args.codes, lambda i: f"m{i:07d}@ex.jp")
    write_lines(codes_file, args.codes, lambda i: f"CP{i:07d}-{(i * 7919) % 997:03d}")

    print(f"(1) baseline: audience upload of {args.codes:,} lines", flush=True)
    audience = await post_file(base, "/v1/audiences", audience_file, {"name": "b", "type": "email"})
    print(f"(2) coupon upload of {args.codes:,} codes", flush=True)
    upload = await post_file(base, "/v1/coupon-pools/bench/codes", codes_file, {})

    conns = [await asyncpg.connect(dsn) for _ in range(args.connections)]
    try:
        await conns[0].execute(
            "INSERT INTO coupon_pools (id) VALUES ('keyed');"
            "INSERT INTO coupon_codes (pool_id, code)"
            f" SELECT 'keyed', 'K-' || i FROM generate_series(0, {args.hand_outs - 1}) i"
        )
        await conns[0].execute("VACUUM ANALYZE coupon_codes")

        async def keyed(conn: asyncpg.Connection, i: int) -> None:
            await conn.execute(
                "UPDATE coupon_codes SET holder = $2, held_at = now()"
                " WHERE pool_id = 'keyed' AND code = $1",
                f"K-{i}",
                f"keyed-{i}",
            )

        print(f"(3) baseline: {args.hand_outs:,} keyed single-row updates", flush=True)
        baseline, _ = await spread(conns, args.hand_outs, keyed)

        async def take(conn: asyncpg.Connection, i: int) -> str | None:
            return await coupon_pools.hand_out(conn, "bench", f"run-{i}:bench")

        print(f"(4) hand-out to {args.hand_outs:,} holders", flush=True)
        hand_out, codes = await spread(conns, args.hand_outs, take)
        print(f"(5) the same {args.hand_outs:,} holders again", flush=True)
        again, repeated = await spread(conns, args.hand_outs, take)
    finally:
        for conn in conns:
            await conn.close()
    distinct = len(set(codes))
    if None in codes or distinct != args.hand_outs or repeated != codes:
        raise RuntimeError(
            f"hand-out wrong: {distinct} distinct codes, repeats equal: {repeated == codes}"
        )

    n, h, c = args.codes, args.hand_outs, args.connections
    print()
    print(f"figures (codes {n:,}, hand-outs {h:,}, connections {c}; load {os.getloadavg()[0]:.1f})")
    print(f"  (1) audience upload      {audience:8.2f} s  {n / audience:12,.0f} lines/s")
    print(f"  (2) coupon upload        {upload:8.2f} s  {n / upload:12,.0f} codes/s")
    print(f"      ratio (2)/(1) seconds: {upload / audience:.2f}")
    print(f"  (3) keyed update         {baseline:8.2f} s  {h / baseline:12,.0f} /s")
    print(
        f"  (4) hand-out             {hand_out:8.2f} s  {h / hand_out:12,.0f} /s  distinct codes: {distinct:,}"
    )
    print(f"      ratio (4)/(3) per second: {baseline / hand_out:.2f}")
    print(
        f"  (5) hand-out again       {again:8.2f} s  {h / again:12,.0f} /s  same codes: {repeated == codes}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--hand-outs", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if not 1 <= args.hand_outs <= args.codes or args.connections < 1:
        parser.error("--hand-outs from 1 to --codes, --connections at least 1")
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="router-coupons-bench-") as tmp_name:
        tmp = Path(tmp_name)
        dsn = os.environ.get("DATABASE_URL")
        server = None
        if not dsn:
            from pgserver.postgres_server import get_server

            server = get_server(tmp / "pg", cleanup_mode="delete")
            dsn = server.get_uri()
        try:
            subprocess.run(
                [py, "-m", "router", "migrate"],
                env=os.environ | {"ROUTER_DATABASE_URL": dsn},
                check=True,
                capture_output=True,
            )
            port = free_port()
            log = tmp / "router.log"
            env = {
                "ROUTER_HTTP_LISTEN": f"127.0.0.1:{port}",
                "ROUTER_DATABASE_URL": dsn,
                "ROUTER_API_KEYS": API_KEY,
                "ROUTER_SMTP_INGRESS_LISTEN": "",
            }
            with child([py, "-m", "router", "serve"], log, env) as proc:
                base = f"http://127.0.0.1:{port}"
                await wait_http(f"{base}/healthz", proc, log)
                await measure(args, dsn, base, tmp)
                for line in log_problems(log)[:5]:
                    print(f"  router logged: {line[:300]}")
        finally:
            if server is not None:
                with suppress(Exception):
                    server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
