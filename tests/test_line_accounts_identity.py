"""Webhooks, linking, follower sync and audiences per LINE account, end to end.

Two LINE accounts, each its own simulator (its own API base, access token, channel secret and
webhook URL): the account "default" (`[line]`, webhooks at /webhooks/line/default) and "b"
(`[line.accounts.b]`, at /webhooks/line/b). The same user ID string under the two accounts
stands for two different people, as it would under two providers.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from linesim import LineSimulator
from router import cli
from router.config import load_config
from tests.harness import API_KEY, RouterUnderTest, running_router
from tests.journey_helpers import put_journey

TOKEN_A, TOKEN_B = "token-of-account-a", "token-of-account-b"
SECRET_A, SECRET_B = "secret-of-account-a", "secret-of-account-b"
SAME = "U" + "5a" * 16  # a user ID string seen under both accounts: two different people
OTHER = "U" + "6b" * 16
FORWARD_B = "http://127.0.0.1:9/bot-b"  # nothing listens: the forward stays queued
INVITE = "Link your membership to get news on LINE."


@pytest.fixture(scope="module")
async def sims() -> AsyncIterator[tuple[LineSimulator, LineSimulator]]:
    async with (
        LineSimulator(access_tokens=[TOKEN_A], channel_secret=SECRET_A) as a,
        LineSimulator(access_tokens=[TOKEN_B], channel_secret=SECRET_B) as b,
    ):
        yield a, b


@pytest.fixture
def two(sims: tuple[LineSimulator, LineSimulator]) -> tuple[LineSimulator, LineSimulator]:
    for sim in sims:
        sim.reset()
    return sims


def write_config(tmp: Path, dsn: str, a: LineSimulator, b: LineSimulator) -> Path:
    path = tmp / "router.toml"
    path.write_text(
        f"""
[database]
url = "{dsn}"

[api]
keys = ["{API_KEY}"]

[smtp_ingress]
listen = ""

[workers]
backoff_base_seconds = 0.05
backoff_max_seconds = 0.2

[line]
channel_access_token = "{TOKEN_A}"
channel_secret = "{SECRET_A}"
api_base = "{a.base_url}"
account_link_base = "{a.base_url}"
login_channel_id = "1111111111"
timeout_seconds = 2
link_invite_text = "{INVITE}"
link_url_template = "https://shop.example.jp/line/link?linkToken={{link_token}}"

[line.accounts.b]
channel_access_token = "{TOKEN_B}"
channel_secret = "{SECRET_B}"
api_base = "{b.base_url}"
account_link_base = "{b.base_url}"
login_channel_id = "2222222222"
forward_webhooks_to = ["{FORWARD_B}"]
""",
        encoding="utf-8",
    )
    return path


@asynccontextmanager
async def two_account_router(
    dsn: str, tmp: Path, a: LineSimulator, b: LineSimulator
) -> AsyncIterator[RouterUnderTest]:
    config = load_config(write_config(tmp, dsn, a, b), {})
    async with running_router(dsn, None, None, config=config) as r:
        a.set_webhook(f"{r.base_url}/webhooks/line/default", SECRET_A)
        b.set_webhook(f"{r.base_url}/webhooks/line/b", SECRET_B)
        yield r


async def outcomes(dsn: str, count: int) -> list[tuple[str, str]]:
    """(account, outcome) of the processed webhook events, once `count` are processed."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 10
        while True:
            rows = await conn.fetch(
                "SELECT account, outcome FROM line_webhook_events"
                " WHERE processed_at IS NOT NULL ORDER BY occurred_at, received_at"
            )
            if len(rows) >= count:
                return [(r["account"], r["outcome"]) for r in rows]
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def test_webhooks_and_links_are_each_accounts_own(
    dsn: str, tmp_path: Path, two: tuple[LineSimulator, LineSimulator]
) -> None:
    a, b = two
    async with two_account_router(dsn, tmp_path, a, b) as r:
        # taro is SAME under b only, not yet a friend there
        put = await r.client.put(
            "/v1/members/taro",
            json={"email": "taro@example.jp", "line": {"b": {"user_id": SAME, "friend": False}}},
        )
        assert put.status_code in (200, 201), put.text
        await r.client.put("/v1/members/hanako", json={"email": "hanako@example.jp"})
        followed = {
            "name": "Followed",
            "trigger": {"line_follow": True},
            "steps": [{"wait": "P1D"}],
        }
        await put_journey(r.client, "followed", followed)

        # a body signed with A's secret, posted to b's URL: refused as a bad signature is
        a.set_webhook(f"{r.base_url}/webhooks/line/b", SECRET_A)
        assert await a.follow(SAME) == 401
        a.set_webhook(f"{r.base_url}/webhooks/line/default", SECRET_A)
        unknown = await r.client.post("/webhooks/line/shop-c", content=b"{}")
        assert unknown.status_code == 404 and "'shop-c'" in unknown.json()["detail"]

        # SAME follows under A: nobody is linked there, so the invitation goes out through A
        assert await a.follow(SAME) == 200
        assert await outcomes(dsn, 1) == [
            ("default", "friend, not linked to a member; link invitation sent")
        ]
        assert len(a.accepted_replies()) == 1 and b.accepted_replies() == []
        taro = (await r.client.get("/v1/members/taro")).json()
        assert taro["line"]["b"]["friend"] is False and taro["line_user_id"] is None
        # ... and under B it is taro, who becomes a friend there
        assert await b.follow(SAME) == 200
        assert (await outcomes(dsn, 2))[1] == ("b", "friend; members updated: 1")
        taro = (await r.client.get("/v1/members/taro")).json()
        assert taro["line"]["b"]["friend"] is True and "default" not in taro["line"]
        conn = await asyncpg.connect(dsn)
        try:
            follows = await conn.fetch(
                "SELECT member_id, properties::text AS p FROM events"
                " WHERE name = 'router:line_follow'"
            )
        finally:
            await conn.close()
        assert [(e["member_id"], e["p"]) for e in follows] == [("taro", '{"line_account": "b"}')]

        # account linking under b: the nonce is b's, A's accountLink with it links nothing
        resp = await r.client.post(
            "/v1/line/link-nonce",
            json={"member_id": "hanako", "link_token": "tok", "line_account": "b"},
        )
        assert resp.status_code == 200, resp.text
        redirect = resp.json()["redirect_url"]
        assert redirect.startswith(f"{b.base_url}/dialog/bot/accountLink?")
        nonce = re.search(r"nonce=([^&]+)", redirect).group(1)  # type: ignore[union-attr]
        assert await a.account_link(OTHER, nonce) == 200
        assert await b.account_link(OTHER, nonce) == 200
        assert (await outcomes(dsn, 4))[2:] == [
            ("default", "link not made: unknown nonce"),
            ("b", "linked to member hanako"),
        ]
        hanako = (await r.client.get("/v1/members/hanako")).json()
        assert hanako["line"]["b"]["user_id"] == OTHER
        assert hanako["line_user_id"] is None and "default" not in hanako["line"]

        # b's bodies are forwarded to b's bots only, with LINE's signature
        conn = await asyncpg.connect(dsn)
        try:
            forwards = await conn.fetch("SELECT url, signature FROM webhook_forwards")
        finally:
            await conn.close()
        assert {f["url"] for f in forwards} == {FORWARD_B} and len(forwards) == 2

        # the account is chosen per request; an unknown one is refused naming the field
        query = await r.client.post(
            "/v1/line/link-token?line_account=b", json={"line_user_id": OTHER}
        )
        assert query.status_code == 200, query.text
        issued = [e for e in b.received if e.path.endswith("/linkToken")]
        assert len(issued) == 1
        for bad in (
            await r.client.post(
                "/v1/line/link-token", json={"line_user_id": OTHER, "line_account": "shop-c"}
            ),
            await r.client.get("/v1/line/quota?line_account=shop-c"),
        ):
            assert bad.status_code == 400, bad.text
            assert bad.json()["errors"][0]["field"] == "line_account"
        assert (await r.client.get("/v1/line/quota?line_account=b")).status_code == 200

        # LINE Login under b: b's login channel, the member linked under b
        token = b.mint_id_token(SAME, client_id="2222222222")
        login = await r.client.post(
            "/v1/line/login-link",
            json={"member_id": "jiro", "id_token": token, "line_account": "b"},
        )
        assert login.status_code in (404, 409), login.text  # jiro is not a member
        await r.client.put("/v1/members/jiro", json={"email": "jiro@example.jp"})
        token = b.mint_id_token(OTHER.replace("6b", "7c"), client_id="2222222222")
        login = await r.client.post(
            "/v1/line/login-link?line_account=b", json={"member_id": "jiro", "id_token": token}
        )
        assert login.status_code == 200, login.text
        assert login.json()["line"]["b"]["user_id"] == OTHER.replace("6b", "7c")


async def test_follower_sync_of_b_corrects_only_bs_flags(
    dsn: str,
    tmp_path: Path,
    two: tuple[LineSimulator, LineSimulator],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = two
    for name in [k for k in __import__("os").environ if k.startswith("ROUTER_")]:
        monkeypatch.delenv(name)
    path = write_config(tmp_path, dsn, a, b)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO members (member_id) VALUES ('m1'), ('m2')")
        # m1 is SAME under both accounts and a friend under both; m2 is OTHER under b
        await conn.execute(
            "INSERT INTO member_line_accounts (member_id, account, user_id, friend) VALUES"
            " ('m1', 'default', $1, true), ('m1', 'b', $1, true), ('m2', 'b', $2, false)",
            SAME,
            OTHER,
        )
        a.set_followers([SAME])
        b.set_followers([OTHER])  # under b, SAME left and OTHER came, both unseen
        code = await asyncio.to_thread(
            cli.main, ["line", "sync-followers", "--account", "b", "--config", str(path)]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "1 followers; friend flag corrected on 2 member(s)" in out
        flags = {
            (r["member_id"], r["account"]): r["friend"]
            for r in await conn.fetch("SELECT * FROM member_line_accounts")
        }
        assert flags == {("m1", "default"): True, ("m1", "b"): False, ("m2", "b"): True}
        assert a.received == []  # A's follower list was never asked for
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM line_follower_syncs)"
            " + (SELECT count(*) FROM line_follower_sync_ids)"
        )
        assert left == 0
    finally:
        await conn.close()
    code = await asyncio.to_thread(
        cli.main, ["line", "sync-followers", "--account", "shop-c", "--config", str(path)]
    )
    assert code == 2
    assert "--account shop-c: no such LINE account" in capsys.readouterr().err

    # `router line webhook set --account b` sets b's channel's URL, not A's
    code = await asyncio.to_thread(
        cli.main,
        [
            "line",
            "webhook",
            "set",
            "https://shop.example.jp/hooks",
            "--account",
            "b",
            "--config",
            str(path),
        ],
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == "LINE webhook URL: https://shop.example.jp/hooks (active)\n"
    assert "LINE account b at /webhooks/line/b" in err
    assert b.webhook_url == "https://shop.example.jp/hooks"
    assert a.webhook_url != b.webhook_url


async def upload(
    client: httpx.AsyncClient, name: str, lines: list[str], **fields: str
) -> httpx.Response:
    form = {"name": name, "type": "line_user_id", **fields}
    files = {"file": ("ids.txt", ("\n".join(lines) + "\n").encode(), "text/plain")}
    return await client.post("/v1/audiences", data=form, files=files)


async def test_a_line_user_id_audience_of_b_matches_by_b_ids(
    dsn: str, tmp_path: Path, two: tuple[LineSimulator, LineSimulator]
) -> None:
    a, b = two
    async with two_account_router(dsn, tmp_path, a, b) as r:
        # p1 is SAME under b (and OTHER under default); p2 is SAME under default
        await r.client.put(
            "/v1/members/p1",
            json={
                "line_user_id": OTHER,
                "line_friend": True,
                "line": {"b": {"user_id": SAME, "friend": True}},
            },
        )
        await r.client.put("/v1/members/p2", json={"line_user_id": SAME, "line_friend": True})

        of_b = await upload(r.client, "friends of b", [SAME], line_account="b")
        assert of_b.status_code == 201, of_b.text
        report: dict[str, Any] = of_b.json()
        assert (report["line_account"], report["matched"], report["reachable_line"]) == (
            "b",
            1,
            1,
        )
        assert report["reachable_line_by_account"] == {"b": 1, "default": 1}
        audience = report["id"]
        export = await r.client.get(f"/v1/audiences/{audience}/line-user-ids.csv")
        assert export.text == f"{SAME}\n"  # p1's ID under b
        export = await r.client.get(
            f"/v1/audiences/{audience}/line-user-ids.csv?line_account=default"
        )
        assert export.text == f"{OTHER}\n"  # the same member, p1, under default

        of_default = (await upload(r.client, "friends", [SAME])).json()
        assert (of_default["line_account"], of_default["matched"]) == ("default", 1)
        assert of_default["reachable_line_by_account"] == {"b": 0, "default": 1}

        bad = await upload(r.client, "friends of c", [SAME], line_account="shop-c")
        assert bad.status_code == 400
        assert bad.json()["errors"][0]["field"] == "line_account"

        # its LINE audience is made in b's channel, of b's IDs
        sync = await r.client.post(f"/v1/audiences/{audience}/line-sync")
        assert sync.status_code == 200, sync.text
        assert a.audience_groups == [] and len(b.audience_groups) == 1

        # A campaign under another account than the audience's would match nobody: refused,
        # by the dry run as by the real request.
        for dry_run in (True, False):
            refused = await r.client.post(
                "/v1/campaigns",
                json={
                    "audience_ids": [audience],
                    "line": {"messages": [{"type": "text", "text": "hello"}]},
                    "dry_run": dry_run,
                },
            )
            assert refused.status_code == 422, refused.text
            (error,) = refused.json()["errors"]
            assert error["field"] == "audience_ids"
            assert "of the account 'b'" in error["message"]
        matched = await r.client.post(
            "/v1/campaigns",
            json={
                "audience_ids": [audience],
                "line": {"messages": [{"type": "text", "text": "hello"}]},
                "line_account": "b",
                "dry_run": True,
            },
        )
        assert matched.status_code == 200, matched.text
        assert matched.json()["line_messages"] == 1
