"""Coupon pools over real HTTP and PostgreSQL: uploads (file and JSON), figures, and the
hand-out of codes across connections and processes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from router import coupons
from router.store import coupon_pools
from tests.harness import RouterUnderTest
from tests.test_api_members import problem

ROOT = Path(__file__).parent.parent

FILE_LINES: list[bytes] = [
    b"\xef\xbb\xbfSPRING-0001",  # 1 BOM dropped
    b"SPRING-0002\r",  # 2 CRLF
    b"",  # 3 blank: skipped
    b"  SPRING-0003\t",  # 4 surrounding white space trimmed
    b"SPRING-0001",  # 5 repeated in the file
    b"SECRET\x07BELL",  # 6 a control character
    b"X" * 256,  # 7 too long
    b"\xff\xfeSECRET",  # 8 not UTF-8
    "春のクーポン-0004".encode(),  # 9 printable, not ASCII
    b"   ",  # 10 only spaces: blank
    b"SPRING \\0005",  # 11 a backslash and an inner space are part of the code
]


async def upload_file(router: RouterUnderTest, pool_id: str, content: bytes) -> Any:
    return await router.client.post(
        f"/v1/coupon-pools/{pool_id}/codes",
        files={"file": ("codes.txt", content, "text/plain")},
    )


async def test_a_file_upload_adds_valid_codes_and_reports_the_others_by_line(
    router: RouterUnderTest,
) -> None:
    resp = await upload_file(router, "spring", b"\n".join(FILE_LINES))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["received"] == 9
    assert body["added"] == 5
    assert body["duplicates"] == 1
    assert body["rejected"] == 3
    assert [(r["line"], r["reason"]) for r in body["rejections"]] == [
        (6, "contains a character that is not printable (a control or separator)"),
        (7, "longer than 255 characters"),
        (8, "not UTF-8 text"),
    ]
    assert "SECRET" not in resp.text and "SPRING" not in resp.text
    assert body["pool"] == {
        "id": "spring",
        "name": None,
        "codes": 5,
        "held": 0,
        "left": 5,
        "created_at": body["pool"]["created_at"],
    }
    # the codes are stored as given, trimmed
    conn = await asyncpg.connect(router.runtime.config.database.url)
    try:
        stored = {r["code"] for r in await conn.fetch("SELECT code FROM coupon_codes")}
    finally:
        await conn.close()
    assert stored == {
        "SPRING-0001",
        "SPRING-0002",
        "SPRING-0003",
        "春のクーポン-0004",
        "SPRING \\0005",
    }

    # a second upload to the same pool: codes it has are duplicates
    again = await upload_file(router, "spring", b"SPRING-0002\nSPRING-0006\n")
    assert again.status_code == 200, again.text
    assert {k: again.json()[k] for k in ("received", "added", "duplicates", "rejected")} == {
        "received": 2,
        "added": 1,
        "duplicates": 1,
        "rejected": 0,
    }
    assert again.json()["pool"]["codes"] == 6

    # a large file is taken a chunk at a time, and an over-long line alone
    lines = [f"CODE-{i:06d}".encode() for i in range(30_000)]
    lines[15_000] = b"Y" * 2_000_000  # longer than any chunk: never buffered whole
    resp = await upload_file(router, "big", b"\n".join(lines) + b"\n")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["received"], body["added"], body["rejected"]) == (30_000, 29_999, 1)
    assert body["rejections"] == [{"line": 15_001, "reason": "longer than 255 characters"}]


async def test_bad_requests_are_refused_and_a_json_list_checked_code_by_code(
    router: RouterUnderTest,
) -> None:
    resp = await router.client.post(
        "/v1/coupon-pools/summer/codes", content=b"A-1\n", headers={"content-type": "text/plain"}
    )
    problem(resp, 415)
    problem(await upload_file(router, "Not_Lower", b"A\n"), 400)
    problem(await router.client.get("/v1/coupon-pools/" + "a" * 65), 400)
    resp = await router.client.post(
        "/v1/coupon-pools/summer/codes",
        files={"codes": ("codes.txt", b"A-1\n", "text/plain")},
    )
    assert problem(resp, 400)["errors"][0]["field"] == "codes"
    body = problem(await router.client.get("/v1/coupon-pools/nowhere"), 404)
    assert "nowhere" in body["detail"]
    # over 1,000,000 lines or codes: refused whole
    body = problem(await upload_file(router, "summer", b"A\n" * 1_000_001), 413)
    assert body["errors"][0]["field"] == "file" and "1,000,000 lines" in body["detail"]
    resp = await router.client.post(
        "/v1/coupon-pools/summer/codes", json={"codes": ["A"] * 1_000_001}
    )
    assert problem(resp, 400)["errors"][0]["field"] == "codes"
    # nothing was created by the refused uploads
    assert (await router.client.get("/v1/coupon-pools")).json() == {"pools": []}

    codes = ["A-1", " A-2 ", "", "A-1", "bad\nline", 300 * "z"]
    resp = await router.client.post("/v1/coupon-pools/summer/codes", json={"codes": codes})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["received"], body["added"], body["duplicates"], body["rejected"]) == (6, 2, 1, 3)
    assert [r["index"] for r in body["rejections"]] == [2, 4, 5]
    assert "bad" not in resp.text
    # a list that is not of strings is refused whole, naming the item
    resp = await router.client.post("/v1/coupon-pools/summer/codes", json={"codes": ["a", 1]})
    assert problem(resp, 400)["errors"][0]["field"] == "codes[1]"
    resp = await router.client.post("/v1/coupon-pools/summer/codes", json={"code": ["a"]})
    problem(resp, 400)


async def test_put_creates_and_renames_and_the_list_shows_figures(
    router: RouterUnderTest,
) -> None:
    resp = await router.client.put("/v1/coupon-pools/welcome", json={"name": "Welcome 10%"})
    assert resp.status_code == 201, resp.text
    assert (resp.json()["name"], resp.json()["codes"]) == ("Welcome 10%", 0)
    resp = await router.client.put("/v1/coupon-pools/welcome", json={})
    assert (resp.status_code, resp.json()["name"]) == (200, "Welcome 10%")
    resp = await router.client.put("/v1/coupon-pools/welcome", json={"name": "Welcome 15%"})
    assert (resp.status_code, resp.json()["name"]) == (200, "Welcome 15%")
    problem(await router.client.put("/v1/coupon-pools/welcome", json={"name": "\x07"}), 400)
    await upload_file(router, "welcome", b"W-1\nW-2\n")
    await upload_file(router, "after", b"Z-1\n")
    pools = (await router.client.get("/v1/coupon-pools")).json()["pools"]
    assert [(p["id"], p["name"], p["codes"], p["left"]) for p in pools] == [
        ("after", None, 1, 1),
        ("welcome", "Welcome 15%", 2, 2),
    ]


async def fill(dsn: str, pool_id: str, codes: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await coupon_pools.hold(conn, pool_id)
            await coupons.add_list(conn, pool_id, [f"{pool_id}-{i}" for i in range(codes)])
    finally:
        await conn.close()


async def figures(dsn: str, pool_id: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        pool = await coupon_pools.get(conn, pool_id)
    finally:
        await conn.close()
    assert pool is not None
    return pool.codes, pool.held, pool.left


async def test_hand_out_gives_each_holder_one_code_and_keeps_it(dsn: str) -> None:
    await fill(dsn, "spring", 40)
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        assert not await coupon_pools.pool_exists(first, "nowhere")
        assert await coupon_pools.hand_out(first, "nowhere", "run-1:nowhere") is None
        assert await coupon_pools.pool_exists(first, "spring")

        async def take(conn: asyncpg.Connection, holders: range) -> list[str | None]:
            return [await coupon_pools.hand_out(conn, "spring", f"run-{h}") for h in holders]

        # two connections taking at once, for different holders
        a, b = await asyncio.gather(take(first, range(0, 15)), take(second, range(15, 30)))
        codes = a + b
        assert None not in codes and len(set(codes)) == 30
        # the same holder again, on either connection: its own code
        assert await take(second, range(0, 15)) == a
        assert await coupon_pools.hand_out(first, "spring", "run-20") == b[5]

        # a holder racing itself: the second take waits for the first and gets its code
        async with first.transaction():
            mine = await coupon_pools.hand_out(first, "spring", "run-race")
            racing = asyncio.create_task(coupon_pools.hand_out(second, "spring", "run-race"))
            await asyncio.sleep(0.2)
        assert await racing == mine and mine not in codes

        # a take rolled back leaves the code free
        with pytest.raises(RuntimeError):
            async with second.transaction():
                assert await coupon_pools.hand_out(second, "spring", "run-undone") is not None
                raise RuntimeError
        assert (
            await first.fetchval("SELECT count(*) FROM coupon_codes WHERE holder IS NOT NULL") == 31
        )
    finally:
        await first.close()
        await second.close()
    assert await figures(dsn, "spring") == (40, 31, 9)
    # uploading a held code again adds nothing and leaves it with its holder
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await coupon_pools.hold(conn, "spring")
            counts = await coupons.add_list(conn, "spring", [a[0], "spring-new"])
        assert (counts.added, counts.duplicates) == (1, 1)
        assert await coupon_pools.hand_out(conn, "spring", "run-0") == a[0]
    finally:
        await conn.close()


TAKER = """
import asyncio, json, sys
import asyncpg
from router import coupons
from router.store import coupon_pools

async def main() -> None:
    conn = await asyncpg.connect(sys.argv[1])
    taken = {}
    for holder in sys.argv[2:]:
        taken[holder] = await coupon_pools.hand_out(conn, "pool", holder)
    print(json.dumps(taken))

asyncio.run(main())
"""


async def test_two_processes_share_a_pool_without_giving_a_code_twice(dsn: str) -> None:
    await fill(dsn, "pool", 150)
    # both processes ask for the same holders, in opposite orders, and for their own ones
    shared = [f"run-{i}:pool" for i in range(60)]
    own = [[f"a-{i}:pool" for i in range(40)], [f"b-{i}:pool" for i in range(40)]]
    orders = [shared + own[0], list(reversed(shared)) + own[1]]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", TAKER, dsn, *holders, stdout=asyncio.subprocess.PIPE, cwd=ROOT
        )
        for holders in orders
    ]
    outputs = [json.loads((await p.communicate())[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    first, second = outputs
    assert all(first[h] == second[h] for h in shared)
    every: dict[str, str] = first | second
    assert None not in every.values() and len(set(every.values())) == len(every) == 140
    # ten left; then the pool runs dry
    conn = await asyncpg.connect(dsn)
    try:
        extra = [await coupon_pools.hand_out(conn, "pool", f"c-{i}:pool") for i in range(12)]
    finally:
        await conn.close()
    assert extra[10:] == [None, None] and None not in extra[:10]
    assert await figures(dsn, "pool") == (150, 150, 0)
