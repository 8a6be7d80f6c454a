"""Audience uploads over real HTTP and PostgreSQL: validation, hashing, matching, limits, CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from router.api.audiences import MAX_BODY_BYTES
from router.audiences import MAX_FILE_BYTES
from tests.harness import API_KEY, RouterUnderTest
from tests.test_cli import router_env, run_router

TARO_LINE = "U" + "a" * 32
HANAKO_LINE = "U" + "b" * 32


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def put_member(router: RouterUnderTest, member_id: str, **fields: Any) -> None:
    r = await router.client.put(f"/v1/members/{member_id}", json=fields)
    assert r.status_code in (200, 201), r.text


async def upload(
    router: RouterUnderTest,
    content: bytes,
    kind: str = "email",
    name: str = "autumn",
    path: str = "/v1/audiences",
) -> Any:
    return await router.client.post(
        path, data={"name": name, "type": kind}, files={"file": ("list.csv", content, "text/csv")}
    )


async def email_members(router: RouterUnderTest) -> None:
    await put_member(router, "taro", email="taro@example.jp", line_user_id=TARO_LINE)
    await put_member(
        router, "hanako", email="hanako@example.jp", line_user_id=HANAKO_LINE, line_opt_out=True
    )
    await put_member(router, "jiro", email="jiro@example.jp")
    await put_member(router, "saburo", email="saburo@example.jp", email_opt_out=True)
    await put_member(router, "goro", email="goro@example.jp")


EMAIL_LINES: list[bytes] = [
    b"\xef\xbb\xbfTaro@Example.JP",  # 1 BOM, mixed case
    b"hanako@example.jp",  # 2
    b"",  # 3 blank
    b"  jiro@example.jp  ",  # 4 surrounding spaces are trimmed
    sha("saburo@example.jp").upper().encode(),  # 5 pre-hashed
    b"taro@example.jp",  # 6 duplicate of 1
    b"with space@example.jp",  # 7
    b"a,b@example.jp",  # 8
    b"plus+tag@example.jp",  # 9
    b"no-at-sign.example.jp",  # 10
    b"x" * 115 + b"@ex.jp",  # 11: 121 characters
    b"\xff\xfe@example.jp",  # 12
    b"two@at@example.jp",  # 13
    b"   ",  # 14 blank
    b"shiro@example.jp",  # 15 no member, no final newline
]


def email_file() -> bytes:
    out = b""
    for i, line in enumerate(EMAIL_LINES):
        out += line + (b"" if i == len(EMAIL_LINES) - 1 else b"\r\n" if i % 2 else b"\n")
    return out


async def test_email_upload_reports_matches_exports_adds_and_deletes(
    router: RouterUnderTest,
) -> None:
    await email_members(router)
    r = await upload(router, email_file())
    assert r.status_code == 201, r.text
    body = r.json()
    only_chars = "an email address has only ASCII letters, digits and _ - . @"
    assert body["errors"] == [
        {"line": 7, "reason": only_chars},
        {"line": 8, "reason": only_chars},
        {"line": 9, "reason": only_chars},
        {"line": 10, "reason": "not an email address (name@domain)"},
        {"line": 11, "reason": "an email address is at most 120 characters"},
        {"line": 12, "reason": "not UTF-8 text"},
        {"line": 13, "reason": "not an email address (name@domain)"},
    ]
    counts = {k: body[k] for k in ("lines", "valid", "invalid", "duplicates")}
    assert counts == {"lines": 15, "valid": 6, "invalid": 7, "duplicates": 1}
    # taro (linked friend), hanako (LINE opted out), jiro (email only), saburo (email opted out)
    assert (body["matched"], body["reachable_line"], body["reachable_email"]) == (4, 1, 3)
    assert (body["name"], body["type"]) == ("autumn", "email")
    audience = body["id"]

    r = await router.client.get(f"/v1/audiences/{audience}")
    assert r.status_code == 200
    assert r.json() == body

    r = await router.client.get(f"/v1/audiences/{audience}/line-user-ids.csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text == f"{TARO_LINE}\n"

    # Nothing readable is stored: only 32-byte hashes.
    conn = await asyncpg.connect(router.runtime.target.dsn)
    try:
        stored = await conn.fetch("SELECT value_sha256 FROM audience_entries")
        dump = await conn.fetchval("SELECT row_to_json(a)::text FROM audiences a")
    finally:
        await conn.close()
    assert len(stored) == 5
    assert all(len(r["value_sha256"]) == 32 for r in stored)
    assert hashlib.sha256(b"taro@example.jp").digest() in {r["value_sha256"] for r in stored}
    assert "example.jp" not in dump

    r = await upload(
        router, b"goro@example.jp\nTARO@example.jp\n", path=f"/v1/audiences/{audience}/uploads"
    )
    assert r.status_code == 200, r.text
    added = r.json()
    counts = {k: added[k] for k in ("lines", "valid", "invalid", "duplicates")}
    assert counts == {"lines": 17, "valid": 8, "invalid": 7, "duplicates": 2}
    assert added["errors"] == []  # the latest upload's
    assert (added["matched"], added["reachable_email"]) == (5, 4)

    r = await upload(
        router, b"x@example.jp\n", kind="phone", path=f"/v1/audiences/{audience}/uploads"
    )
    assert r.status_code == 409  # the stored audience's type decides
    assert r.json()["errors"][0]["field"] == "type"

    assert (await router.client.delete(f"/v1/audiences/{audience}")).status_code == 204
    assert (await router.client.get(f"/v1/audiences/{audience}")).status_code == 404
    r = await router.client.get(f"/v1/audiences/{audience}/line-user-ids.csv")
    assert r.status_code == 404
    r = await upload(router, b"a@b.jp\n", path=f"/v1/audiences/{audience}/uploads")
    assert r.status_code == 404
    assert (await router.client.delete(f"/v1/audiences/{audience}")).status_code == 404


async def test_phone_upload_national_numbers_of_the_configured_region(
    router: RouterUnderTest,
) -> None:
    await put_member(router, "p1", phone="090-1234-5678", line_user_id=TARO_LINE)
    lines = [
        "090-1234-5678",  # 1
        "090 1234 5678",  # 2 duplicate
        "(03) 1234-5678",  # 3 valid, no member
        "+81 90 1234 5678",  # 4 country code
        "090-1234-567x",  # 5
        "0120",  # 6
        "212-555-0123",  # 7 a US number read as Japanese
        sha("+819012345678"),  # 8 pre-hashed duplicate of 1
        "09012345678",  # 9 duplicate
    ]
    r = await upload(router, "\r\n".join(lines).encode() + b"\r\n", kind="phone")
    assert r.status_code == 201, r.text
    body = r.json()
    chars = "a phone number has only digits, hyphens, spaces and parentheses, no country code"
    assert body["errors"] == [
        {"line": 4, "reason": chars},
        {"line": 5, "reason": chars},
        {"line": 6, "reason": "not a valid phone number of region JP"},
        {"line": 7, "reason": "not a valid phone number of region JP"},
    ]
    counts = {k: body[k] for k in ("lines", "valid", "invalid", "duplicates")}
    assert counts == {"lines": 9, "valid": 5, "invalid": 4, "duplicates": 3}
    assert (body["matched"], body["reachable_line"], body["reachable_email"]) == (1, 1, 0)


async def test_line_user_id_upload_matches_members_by_hashed_id(router: RouterUnderTest) -> None:
    friend, stranger, optout, pre = ("U" + c * 32 for c in "cdef")
    await put_member(router, "c", line_user_id=friend)
    await put_member(router, "d", line_user_id=stranger, line_friend=False)
    await put_member(router, "e", line_user_id=optout, line_opt_out=True)
    await put_member(router, "f", line_user_id=pre, email="f@example.jp")
    content = "\n".join([friend, stranger, optout, "U" + "C" * 32, "U123", sha(pre)]).encode()
    r = await upload(router, content, kind="line_user_id")
    assert r.status_code == 201, r.text
    body = r.json()
    reason = "a LINE user ID is 'U' followed by 32 lower-case hex digits"
    assert body["errors"] == [{"line": 4, "reason": reason}, {"line": 5, "reason": reason}]
    assert (body["valid"], body["invalid"], body["duplicates"]) == (4, 2, 0)
    assert (body["matched"], body["reachable_line"], body["reachable_email"]) == (4, 2, 1)
    r = await router.client.get(f"/v1/audiences/{body['id']}/line-user-ids.csv")
    assert r.text.splitlines() == sorted([friend, pre])


async def test_form_errors_name_the_field(router: RouterUnderTest) -> None:
    r = await router.client.post(
        "/v1/audiences", data={"name": "x", "type": "fax"}, files={"file": ("a.txt", b"1\n")}
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == ["type"]
    r = await router.client.post(
        "/v1/audiences", data={"type": "email"}, files={"file": ("a.txt", b"a@b.jp\n")}
    )
    assert [e["field"] for e in r.json()["errors"]] == ["name"]
    r = await router.client.post(
        "/v1/audiences", data={"name": "x", "type": "email"}, files={"upload": ("a", b"")}
    )
    assert r.status_code == 400
    assert [e["field"] for e in r.json()["errors"]] == ["file"]
    r = await router.client.post("/v1/audiences", json={"name": "x"})
    assert r.status_code == 415
    r = await router.client.post(
        "/v1/audiences",
        content=b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx',
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 400
    assert "multipart" in r.json()["detail"]
    assert (
        await router.client.get("/v1/audiences/00000000-0000-0000-0000-000000000000")
    ).status_code == 404


async def _raw_request(
    router: RouterUnderTest, content_length: int, body: bytes
) -> tuple[bytes, asyncio.StreamWriter]:
    """Send headers and `body` (perhaps less than announced); return what the router answers
    while the client could still send the rest."""
    url = urlsplit(router.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = (
        "POST /v1/audiences HTTP/1.1\r\nHost: router\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    return answer, writer


def _form_head(kind: str = "email") -> bytes:
    return (
        b'--XyZ\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="type"\r\n\r\n'
        + kind.encode()
        + b'\r\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
    )


async def test_a_body_announced_too_large_is_refused_before_it_is_sent(
    router: RouterUnderTest,
) -> None:
    answer, writer = await _raw_request(router, MAX_BODY_BYTES + 1, b"")
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413")


async def test_a_file_over_20_mb_is_refused_while_it_is_still_streaming(
    router: RouterUnderTest,
) -> None:
    line = b"x" * 999 + b"\n"
    file = line * (MAX_FILE_BYTES // len(line) + 1)
    assert len(file) > MAX_FILE_BYTES
    tail = b"\r\n--XyZ--\r\n"
    head = _form_head()
    total = len(head) + len(file) + 4 * 1024 * 1024 + len(tail)  # 4 MiB more than is sent
    assert total <= MAX_BODY_BYTES + 4 * 1024 * 1024
    answer, writer = await _raw_request(router, total, head + file)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer
    # And the file-part count holds where the whole body is within the envelope allowance.
    r = await upload(router, b"a" * (MAX_FILE_BYTES - 1) + b"\n\n")
    assert r.status_code == 413
    problem = r.json()
    assert problem["errors"][0]["field"] == "file"
    assert "20 MB" in problem["detail"]
    assert (await router.client.get("/healthz")).status_code == 200


async def test_more_than_1_500_000_lines_is_refused(router: RouterUnderTest) -> None:
    r = await upload(router, b"\n" * 1_500_001)
    assert r.status_code == 413
    assert r.json()["errors"] == [
        {"field": "file", "message": "the file has more than 1,500,000 lines"}
    ]
    r = await upload(router, b"\n" * 1_500_000)
    assert r.status_code == 201
    assert (r.json()["lines"], r.json()["valid"], r.json()["invalid"]) == (1_500_000, 0, 0)


async def test_cli_upload_prints_the_report(router: RouterUnderTest, tmp_path: Path) -> None:
    await email_members(router)
    path = tmp_path / "list.txt"
    path.write_bytes(email_file())
    code, out, err = await run_router(
        "audiences",
        "upload",
        str(path),
        "--type",
        "email",
        "--name",
        "from the cli",
        env=router_env(ROUTER_DATABASE_URL=router.runtime.target.dsn),
    )
    assert code == 0, err
    assert "[##############################]" in err
    report = json.loads(out)
    assert (report["lines"], report["valid"], report["invalid"], report["duplicates"]) == (
        15,
        6,
        7,
        1,
    )
    assert (report["matched"], report["reachable_line"], report["reachable_email"]) == (4, 1, 3)
    assert report["errors"][0] == {
        "line": 7,
        "reason": "an email address has only ASCII letters, digits and _ - . @",
    }
    r = await router.client.get(f"/v1/audiences/{report['id']}")
    assert r.json()["name"] == "from the cli"


async def test_a_large_upload_refreshes_statistics_and_a_small_one_does_not(
    router: RouterUnderTest, dsn: str
) -> None:
    """A plan made without statistics on a new large audience can read it once per member;
    the router analyzes after a large upload instead of waiting for autovacuum."""

    async def analyzed() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            count: int = await conn.fetchval(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'audience_entries'"
            )
            return count
        finally:
            await conn.close()

    before = await analyzed()
    small = "\n".join(f"s{i}@example.jp" for i in range(50)).encode()
    resp = await upload(router, small, name="small")
    assert resp.status_code == 201, resp.text
    assert await analyzed() == before
    large = "\n".join(f"u{i}@example.jp" for i in range(10_000)).encode()
    resp = await upload(router, large, name="large")
    assert resp.status_code == 201 and resp.json()["valid"] == 10_000, resp.text
    deadline = asyncio.get_running_loop().time() + 5
    while await analyzed() == before:  # the statistics collector reports a moment later
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert await analyzed() == before + 1


async def test_a_file_of_many_chunks_counts_hashes_and_numbers_every_line(
    router: RouterUnderTest,
) -> None:
    """Lines spread over several chunks: the quick path for plain lines and the full checks
    agree (same hash, same line numbers), and deleting the audience removes its entries."""
    await put_member(router, "p-7", email="p000007@example.jp")
    lines = [f"p{i:06d}@example.jp".encode() for i in range(40_000)]
    lines[12_345] = b"p012345 at example.jp"  # line 12,346: invalid
    lines[20_000] = b"y" * 108 + b"@example.jp"  # 119 characters: valid
    lines[20_001] = b"y" * 109 + b"@example.jp"  # 120 characters: valid (then a CR)
    lines[20_002] = b"y" * 110 + b"@example.jp"  # 121 characters, line 20,003: invalid
    lines[30_000] = b"  P000007@EXAMPLE.JP "  # full checks: the same member as line 8
    content = b"".join(line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(lines))
    assert len(content) > 2 * 256 * 1024
    r = await upload(router, content)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["errors"] == [
        {"line": 12_346, "reason": "an email address has only ASCII letters, digits and _ - . @"},
        {"line": 20_003, "reason": "an email address is at most 120 characters"},
    ]
    counts = {k: body[k] for k in ("lines", "valid", "invalid", "duplicates", "matched")}
    assert counts == {
        "lines": 40_000,
        "valid": 39_998,
        "invalid": 2,
        "duplicates": 1,
        "matched": 1,
    }
    conn = await asyncpg.connect(router.runtime.target.dsn)
    try:
        stored = {
            r["value_sha256"]
            for r in await conn.fetch(
                "SELECT value_sha256 FROM audience_entries WHERE audience_id = $1",
                uuid.UUID(body["id"]),
            )
        }
        assert len(stored) == 39_997
        assert hashlib.sha256(b"y" * 109 + b"@example.jp").digest() in stored
        assert hashlib.sha256(b"p039999@example.jp").digest() in stored
        assert (await router.client.delete(f"/v1/audiences/{body['id']}")).status_code == 204
        assert await conn.fetchval("SELECT count(*) FROM audience_entries") == 0
    finally:
        await conn.close()
