"""LINE audience sync: real HTTP to the router, real PostgreSQL, the real line-bot-sdk against the
simulator; and the simulator's Audience API itself, through the SDK's typed audience client.

Only the waits are shortened: the router's request spacing and 429 back-off (module constants)
and the simulator's rate window, so a test of LINE's 60-a-minute limit takes seconds.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import json
import threading
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest
from linebot.v3 import audience as sdk

from linesim import (
    AUDIENCE_LIFETIME_SECONDS,
    AUDIENCE_UPLOAD_PATH,
    LineSimulator,
    ReceivedRequest,
)
from router import audiences
from router.database import create_pool
from router.line import audience_sync as line_audience_sync
from router.reach import LINE_REACHABLE_SQL
from tests.harness import LINE_TOKEN, RouterUnderTest, SmtpSink, running_router
from tests.test_audiences import put_member, upload
from tests.test_cli import router_env, run_router

FRIEND, FRIEND_2, FRIEND_3, STRANGER, OPTED_OUT, OUTSIDE = ("U" + c * 32 for c in "123456")
UNAUTHORIZED = (
    "Authentication failed. Confirm that the access token in the authorization header is valid."
)
RATE_LIMITED = "The API rate limit has been exceeded. Try again later."


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Router pacing and back-off in tenths of seconds instead of seconds."""
    monkeypatch.setattr(line_audience_sync, "REQUEST_SPACING_SECONDS", 0.05)
    monkeypatch.setattr(line_audience_sync, "RETRY_FIRST_SECONDS", 0.2)
    return monkeypatch


async def line_sync(router: RouterUnderTest, audience_id: str) -> Any:
    return await router.client.post(f"/v1/audiences/{audience_id}/line-sync")


def audience_requests(sim: LineSimulator) -> list[ReceivedRequest]:
    return [r for r in sim.received if r.path.startswith("/v2/bot/audienceGroup")]


async def members_audience(router: RouterUnderTest) -> str:
    """Members of every LINE kind, and an email audience naming all but `outside`."""
    await put_member(router, "friend", email="friend@example.jp", line_user_id=FRIEND)
    await put_member(router, "friend-2", email="friend2@example.jp", line_user_id=FRIEND_2)
    await put_member(
        router, "stranger", email="stranger@example.jp", line_user_id=STRANGER, line_friend=False
    )
    await put_member(
        router, "opted-out", email="optout@example.jp", line_user_id=OPTED_OUT, line_opt_out=True
    )
    await put_member(router, "unlinked", email="unlinked@example.jp")
    await put_member(router, "outside", email="outside@example.jp", line_user_id=OUTSIDE)
    emails = ["friend", "friend2", "stranger", "optout", "unlinked", "friend3"]
    r = await upload(router, "\n".join(f"{e}@example.jp" for e in emails).encode())
    assert r.status_code == 201, r.text
    audience_id: str = r.json()["id"]
    return audience_id


async def bulk_friends(
    router: RouterUnderTest, count: int, *, analyze: bool = True
) -> tuple[str, list[str]]:
    """`count` linked friends and a line_user_id audience of them, written in two statements;
    their IDs in the order LINE receives them."""
    ids = sorted("U" + hashlib.md5(f"bulk-{i}".encode()).hexdigest() for i in range(count))
    conn = await asyncpg.connect(router.runtime.target.dsn)
    try:
        await conn.execute(
            "INSERT INTO members (member_id) SELECT 'bulk-' || i FROM generate_series(0, $1 - 1) i",
            count,
        )
        await conn.execute(
            "INSERT INTO member_line_accounts (member_id, account, user_id, friend)"
            " SELECT 'bulk-' || i, 'default', 'U' || md5('bulk-' || i), true"
            " FROM generate_series(0, $1 - 1) i",
            count,
        )
        r = await upload(router, ids[0].encode(), kind="line_user_id", name="bulk")
        assert r.status_code == 201, r.text
        audience_id: str = r.json()["id"]
        await conn.execute(
            "INSERT INTO audience_entries (audience_id, value_sha256)"
            " SELECT $1, sha256(convert_to('U' || md5('bulk-' || i), 'UTF8'))"
            " FROM generate_series(0, $2 - 1) i ON CONFLICT DO NOTHING",
            audience_id,
            count,
        )
        # The router refreshes statistics after an upload this large (audiences.ANALYZE_AFTER);
        # these rows bypass the upload, so do what it does. With the statistics of the empty
        # tables earlier tests left, PostgreSQL may plan the page query as a scan of the whole
        # audience per member: minutes at 25,000.
        if analyze:
            await conn.execute("ANALYZE members, audiences, audience_entries")
    finally:
        await conn.close()
    return audience_id, ids


async def stored_sync(router: RouterUnderTest, audience_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(router.runtime.target.dsn)
    try:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT line_audience_group_id, line_synced_at, line_synced_ids FROM audiences"
            " WHERE id = $1",
            audience_id,
        )
    finally:
        await conn.close()
    return row


# --- the route, end to end ---------------------------------------------------------------


async def test_first_sync_creates_a_line_audience_of_exactly_the_reachable_friends(
    router: RouterUnderTest, line_sim: LineSimulator
) -> None:
    audience_id = await members_audience(router)

    r = await line_sync(router, audience_id)

    assert r.status_code == 200, r.text
    body = r.json()
    group_id = body["line_audience_group_id"]
    assert (body["audience_id"], body["created"], body["uploaded_ids"], body["requests"]) == (
        audience_id,
        True,
        2,
        1,
    )
    group = line_sim.audience_group(group_id)
    assert group is not None
    # Not the non-friend, the opted-out, the unlinked, nor the friend outside the audience.
    assert sorted(group.user_ids) == [FRIEND, FRIEND_2]
    assert group.description == "autumn"
    export = await router.client.get(f"/v1/audiences/{audience_id}/line-user-ids.csv")
    assert export.text.split() == sorted(group.user_ids)

    [create] = audience_requests(line_sim)
    assert (create.method, create.path, create.status) == ("POST", AUDIENCE_UPLOAD_PATH, 202)
    assert create.headers["authorization"] == f"Bearer {LINE_TOKEN}"
    assert create.body == {
        "description": "autumn",
        "isIfaAudience": False,
        "uploadDescription": f"router audience {audience_id} part 1",
        "audiences": [{"id": FRIEND}, {"id": FRIEND_2}],
    }
    stored = await stored_sync(router, audience_id)
    assert (stored["line_audience_group_id"], stored["line_synced_ids"]) == (group_id, 2)
    assert stored["line_synced_at"].isoformat() == body["synced_at"].replace("Z", "+00:00")
    report = (await router.client.get(f"/v1/audiences/{audience_id}")).json()
    assert (report["line_audience_group_id"], report["line_synced_ids"]) == (group_id, 2)
    assert report["line_synced_at"] == body["synced_at"]


async def test_a_later_sync_adds_to_the_same_audience_and_keeps_who_left(
    router: RouterUnderTest, line_sim: LineSimulator
) -> None:
    audience_id = await members_audience(router)
    first = (await line_sync(router, audience_id)).json()
    # A new member matches the audience; a synced one opts out of LINE.
    await put_member(router, "friend-3", email="friend3@example.jp", line_user_id=FRIEND_3)
    await put_member(router, "friend-2", line_opt_out=True)

    r = await line_sync(router, audience_id)

    assert r.status_code == 200, r.text
    second = r.json()
    assert second["line_audience_group_id"] == first["line_audience_group_id"]
    assert (second["created"], second["uploaded_ids"], second["requests"]) == (False, 2, 1)
    group = line_sim.audience_group(second["line_audience_group_id"])
    assert group is not None
    # LINE cannot remove an ID from an uploaded audience: FRIEND_2 stays in it.
    assert sorted(group.user_ids) == [FRIEND, FRIEND_2, FRIEND_3]
    assert len(line_sim.audience_groups) == 1
    calls = [(r.method, r.status) for r in audience_requests(line_sim)]
    assert calls == [("POST", 202), ("GET", 200), ("PUT", 202)]
    put = audience_requests(line_sim)[-1]
    assert put.body["audienceGroupId"] == group.audience_group_id
    assert put.body["audiences"] == [{"id": FRIEND}, {"id": FRIEND_3}]
    assert (await stored_sync(router, audience_id))["line_synced_ids"] == 2


async def test_a_line_audience_deleted_or_expired_at_line_is_made_anew(
    router: RouterUnderTest, line_sim: LineSimulator
) -> None:
    audience_id = await members_audience(router)
    first = (await line_sync(router, audience_id)).json()

    line_sim.reset()  # LINE has no audience any more: GET answers 400 not found
    second = (await line_sync(router, audience_id)).json()
    assert second["created"] is True
    assert second["line_audience_group_id"] != first["line_audience_group_id"]
    get = audience_requests(line_sim)[0]
    assert (get.method, get.status) == ("GET", 400)

    line_sim.advance_clock(AUDIENCE_LIFETIME_SECONDS + 1)  # expired, 180 days on
    third = (await line_sync(router, audience_id)).json()
    assert third["created"] is True
    assert third["line_audience_group_id"] not in (
        first["line_audience_group_id"],
        second["line_audience_group_id"],
    )
    stored = await stored_sync(router, audience_id)
    assert stored["line_audience_group_id"] == third["line_audience_group_id"]


async def test_more_than_10_000_ids_go_as_one_create_and_then_adds(
    router: RouterUnderTest, line_sim: LineSimulator, fast: pytest.MonkeyPatch
) -> None:
    audience_id, ids = await bulk_friends(router, 25_000)

    r = await line_sync(router, audience_id)

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["uploaded_ids"], body["requests"], body["created"]) == (25_000, 3, True)
    calls = audience_requests(line_sim)
    assert [(c.method, len(c.body["audiences"])) for c in calls] == [
        ("POST", 10_000),
        ("PUT", 10_000),
        ("PUT", 5_000),
    ]
    sent = [entry["id"] for c in calls for entry in c.body["audiences"]]
    assert sent == ids  # each ID once, in order
    assert [c.body["uploadDescription"][-6:] for c in calls] == ["part 1", "part 2", "part 3"]
    group = line_sim.audience_group(body["line_audience_group_id"])
    assert group is not None and group.user_ids == ids


class Crash(Exception):
    """The process dies here."""


@pytest.mark.parametrize("recorded", [False, True], ids=["before-recorded", "after-recorded"])
async def test_a_sync_that_died_mid_way_is_resumed_after_its_lease_without_losing_or_doubling(
    router: RouterUnderTest, line_sim: LineSimulator, fast: pytest.MonkeyPatch, recorded: bool
) -> None:
    """The process dies once LINE has accepted the second page: before that page was
    recorded, or just after. It releases nothing; its lease runs out, and the next sync goes
    on from the last page recorded, into the same LINE audience."""
    fast.setattr(line_audience_sync, "LEASE_SECONDS", 1.0)
    audience_id, ids = await bulk_friends(router, 25_000)
    record_page = audiences.record_line_sync_page
    pages = 0

    async def dies_at_page_two(*args: Any) -> bool:
        nonlocal pages
        pages += 1
        if pages == 2 and not recorded:
            raise Crash
        done = await record_page(*args)
        if pages == 2:
            raise Crash
        return done

    async def dead(*args: Any) -> None:
        """A dead process lets go of nothing."""

    fast.setattr(audiences, "record_line_sync_page", dies_at_page_two)
    fast.setattr(audiences, "release_line_sync", dead)
    pool = await create_pool(router.runtime.target.dsn, 1)
    try:
        with pytest.raises(Crash):
            assert router.runtime.line_account is not None
            await line_audience_sync.sync(pool, router.runtime.line_account, UUID(audience_id))
    finally:
        await pool.close()
    fast.setattr(audiences, "record_line_sync_page", record_page)
    r = await line_sync(router, audience_id)
    assert r.status_code == 409  # the dead sync's lease still holds
    await asyncio.sleep(1.2)

    r = await line_sync(router, audience_id)

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["uploaded_ids"], body["created"]) == (25_000, False)
    assert body["requests"] == (1 if recorded else 2)  # page 3, after page 2 again or not
    uploads = [c for c in audience_requests(line_sim) if c.method in ("POST", "PUT")]
    sent = [entry["id"] for c in uploads for entry in c.body["audiences"]]
    resent = [] if recorded else ids[10_000:20_000]
    assert sent == ids[:20_000] + resent + ids[20_000:]
    assert len(line_sim.audience_groups) == 1
    group = line_sim.audience_group(body["line_audience_group_id"])
    assert group is not None and group.user_ids == ids  # everyone, once
    row = await stored_sync(router, audience_id)
    assert row["line_synced_ids"] == 25_000


async def test_a_sync_holds_no_connection_between_pages_and_sees_changes_made_meanwhile(
    router: RouterUnderTest, line_sim: LineSimulator, fast: pytest.MonkeyPatch
) -> None:
    """One pooled connection is enough for a whole sync; between pages it is idle (no
    transaction, no snapshot), so a friend who joins after the first page and whose ID comes
    after it is uploaded by this very sync; one whose ID comes before it waits for the next."""
    audience_id, ids = await bulk_friends(router, 25_000)
    late, early = "U" + "f" * 32, "U" + "0" * 32
    dsn = router.runtime.target.dsn
    states: list[tuple[str, bool]] = []

    async def between_pages(pid: int) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT state, xact_start IS NOT NULL AS in_transaction"
                " FROM pg_stat_activity WHERE pid = $1",
                pid,
            )
            states.append((row["state"], row["in_transaction"]))
            if len(states) == 1:
                for member_id, line_user_id in (("late", late), ("early", early)):
                    await conn.execute("INSERT INTO members (member_id) VALUES ($1)", member_id)
                    await conn.execute(
                        "INSERT INTO member_line_accounts (member_id, account, user_id, friend)"
                        " VALUES ($1, 'default', $2, true)",
                        member_id,
                        line_user_id,
                    )
                    await conn.execute(
                        "INSERT INTO audience_entries (audience_id, value_sha256)"
                        " VALUES ($1, sha256($2::bytea))",
                        UUID(audience_id),
                        line_user_id.encode(),
                    )
        finally:
            await conn.close()

    pool = await create_pool(dsn, 1)
    try:
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()

        def progress(uploaded: int) -> None:
            # The sync goes on only once this returns: the check and the change happen
            # between two of its pages, on a connection of their own.
            checker = threading.Thread(target=asyncio.run, args=(between_pages(pid),))
            checker.start()
            checker.join()

        assert router.runtime.line_account is not None
        result = await asyncio.wait_for(
            line_audience_sync.sync(pool, router.runtime.line_account, UUID(audience_id), progress),
            timeout=60,
        )
    finally:
        await pool.close()
    assert states == [("idle", False)] * 3
    assert result.uploaded_ids == 25_001
    group = line_sim.audience_group(result.line_audience_group_id)
    assert group is not None and group.user_ids == [*ids, late]

    r = await line_sync(router, audience_id)
    assert r.status_code == 200, r.text
    assert r.json()["uploaded_ids"] == 25_002
    group = line_sim.audience_group(result.line_audience_group_id)
    assert group is not None and group.user_ids == [*ids, late, early]


async def test_the_router_paces_itself_under_lines_limit(
    router: RouterUnderTest, line_sim: LineSimulator, fast: pytest.MonkeyPatch
) -> None:
    # LINE: 60 a minute on each upload endpoint. Here: 2 a second, the router one each 0.75 s.
    line_sim.set_audience_limit(2, window_seconds=1.0)
    fast.setattr(line_audience_sync, "REQUEST_SPACING_SECONDS", 0.75)
    audience_id, _ = await bulk_friends(router, 35_000)
    # The router, the simulator and this test share one process: collect its garbage now, so
    # that no full collection pauses it between the requests whose spacing is measured.
    gc.collect()

    r = await line_sync(router, audience_id)

    assert r.status_code == 200, r.text
    assert (r.json()["requests"], r.json()["uploaded_ids"]) == (4, 35_000)
    assert line_sim.stats().rate_limited == 0
    puts = [c for c in audience_requests(line_sim) if c.method == "PUT"]
    assert [c.status for c in puts] == [202, 202, 202]
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(puts)]
    assert all(gap > 0.5 for gap in gaps), gaps
    group = line_sim.audience_group(r.json()["line_audience_group_id"])
    assert group is not None and len(group.user_ids) == 35_000


async def test_a_429_is_waited_out_and_the_same_request_sent_again(
    router: RouterUnderTest,
    line_sim: LineSimulator,
    fast: pytest.MonkeyPatch,
    http: aiohttp.ClientSession,
) -> None:
    audience_id, ids = await bulk_friends(router, 25_000)
    # Another client of the channel has just used the create endpoint's budget.
    line_sim.set_audience_limit(1, window_seconds=1.5)
    other = {"description": "other tool", "audiences": [{"id": OUTSIDE}]}
    headers = {"Authorization": f"Bearer {LINE_TOKEN}"}
    async with http.post(
        f"{line_sim.base_url}{AUDIENCE_UPLOAD_PATH}", json=other, headers=headers
    ) as resp:
        assert resp.status == 202

    r = await line_sync(router, audience_id)

    assert r.status_code == 200, r.text
    assert (r.json()["requests"], r.json()["uploaded_ids"]) == (3, 25_000)
    calls = audience_requests(line_sim)[1:]
    refused = [c for c in calls if c.status == 429]
    assert refused and line_sim.stats().rate_limited == len(refused)
    assert {c.method for c in refused} == {"POST", "PUT"}
    for i, call in enumerate(calls):
        if call.status == 429:
            retry = calls[i + 1]
            assert (retry.method, retry.body) == (call.method, call.body)
    assert [c.method for c in calls if c.status == 202] == ["POST", "PUT", "PUT"]
    group = line_sim.audience_group(r.json()["line_audience_group_id"])
    assert group is not None and group.user_ids == ids


async def test_a_second_sync_of_the_same_audience_waits_its_turn(
    router: RouterUnderTest, line_sim: LineSimulator, fast: pytest.MonkeyPatch
) -> None:
    fast.setattr(line_audience_sync, "REQUEST_SPACING_SECONDS", 0.5)
    audience_id, _ = await bulk_friends(router, 25_000)
    running = asyncio.create_task(line_sync(router, audience_id))
    for _ in range(200):
        if audience_requests(line_sim):
            break
        await asyncio.sleep(0.02)

    r = await line_sync(router, audience_id)

    assert r.status_code == 409
    assert "already running" in r.json()["detail"]
    assert (await running).status_code == 200
    assert len(line_sim.audience_groups) == 1


async def test_unknown_audience_and_nobody_to_upload(
    router: RouterUnderTest, line_sim: LineSimulator
) -> None:
    r = await line_sync(router, "00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"

    await put_member(router, "jiro", email="jiro@example.jp")
    await put_member(
        router, "stranger", email="s@example.jp", line_user_id=STRANGER, line_friend=False
    )
    r = await upload(router, b"jiro@example.jp\ns@example.jp\n")
    r = await line_sync(router, r.json()["id"])
    assert r.status_code == 422
    assert "nothing to send" in r.json()["detail"]
    assert audience_requests(line_sim) == []


async def test_without_line_the_route_says_so(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(dsn, None, smtp) as router:
        await put_member(router, "a", email="a@example.jp")
        audience_id = (await upload(router, b"a@example.jp\n")).json()["id"]
        r = await line_sync(router, audience_id)
    assert r.status_code == 409
    assert r.json()["detail"] == "LINE is not configured on this router"


async def test_lines_refusal_is_a_502_with_lines_message(
    dsn: str, line_sim: LineSimulator, smtp: SmtpSink
) -> None:
    async with running_router(
        dsn, line_sim.base_url, smtp, ROUTER_LINE_CHANNEL_ACCESS_TOKEN="revoked-token"
    ) as router:
        audience_id = await members_audience(router)
        r = await line_sync(router, audience_id)
    assert r.status_code == 502
    problem = r.json()
    assert problem["detail"] == f"LINE answered 401: {UNAUTHORIZED}"
    assert (await stored_sync(router, audience_id))["line_audience_group_id"] is None


async def test_the_schema_describes_the_route(router: RouterUnderTest) -> None:
    schema = (await router.client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/v1/audiences/{audience_id}/line-sync"]["post"]
    # 400 is what Litestar adds to every route with parameters; no body is read, so no 413;
    # 429 and 503 (with Retry-After) are every API-key route's and every database route's.
    assert set(operation["responses"]) == {
        "200",
        "400",
        "401",
        "404",
        "409",
        "422",
        "429",
        "502",
        "503",
    }
    assert "cannot remove" in operation["description"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    component = ok["$ref"].rsplit("/", 1)[1]
    fields = schema["components"]["schemas"][component]["properties"]
    assert set(fields) == {
        "audience_id",
        "line_audience_group_id",
        "created",
        "uploaded_ids",
        "requests",
        "synced_at",
    }


async def test_cli_line_sync(router: RouterUnderTest, line_sim: LineSimulator) -> None:
    audience_id = await members_audience(router)
    code, out, err = await run_router(
        "audiences",
        "line-sync",
        audience_id,
        env=router_env(
            ROUTER_DATABASE_URL=router.runtime.target.dsn,
            ROUTER_LINE_CHANNEL_ACCESS_TOKEN=LINE_TOKEN,
            ROUTER_LINE_API_BASE=line_sim.base_url,
        ),
    )
    assert code == 0, err
    assert "LINE user IDs uploaded: 2" in err
    result = json.loads(out)
    group = line_sim.audience_group(result["line_audience_group_id"])
    assert group is not None and sorted(group.user_ids) == [FRIEND, FRIEND_2]


async def test_matching_line_user_ids_can_use_the_index(router: RouterUnderTest) -> None:
    audience_id, _ = await bulk_friends(router, 2_000, analyze=False)
    query = f"SELECT l.user_id {audiences._members_in('line_user_id')} AND {LINE_REACHABLE_SQL}"
    conn = await asyncpg.connect(router.runtime.target.dsn)
    try:
        # Small tables make a scan cheapest; this asks only whether the index applies.
        await conn.execute("SET enable_seqscan = off; SET enable_hashjoin = off")
        await conn.execute("SET enable_mergejoin = off")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {query}", audience_id))
        found = await conn.fetch(query, audience_id)
    finally:
        await conn.close()
    assert "member_line_accounts_user_id_sha256" in plan, plan
    assert len(found) == 2_000


# --- the simulator's Audience API, through line-bot-sdk -----------------------------------

SIM_TOKEN = "audience-simulator-token"


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[LineSimulator]:
    simulator = LineSimulator(access_tokens=[SIM_TOKEN])
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def audience_api(sim: LineSimulator) -> AsyncIterator[sdk.AsyncManageAudience]:
    sim.reset()
    client = sdk.AsyncApiClient(sdk.Configuration(host=sim.base_url, access_token=SIM_TOKEN))
    yield sdk.AsyncManageAudience(client)
    await client.close()


async def raw(
    http: aiohttp.ClientSession,
    sim: LineSimulator,
    method: str,
    body: Any = None,
    *,
    path: str = AUDIENCE_UPLOAD_PATH,
    token: str | None = SIM_TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    sent = {"Content-Type": "application/json"} | (headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
    async with http.request(method, f"{sim.base_url}{path}", data=data, headers=sent) as resp:
        return resp.status, await resp.json()


def entries(count: int, start: int = 0) -> list[dict[str, str]]:
    return [{"id": f"U{i:032x}"} for i in range(start, start + count)]


async def test_simulator_create_add_and_read_through_the_sdk(
    sim: LineSimulator, audience_api: sdk.AsyncManageAudience
) -> None:
    created = await audience_api.create_audience_group_with_http_info(
        sdk.CreateAudienceGroupRequest(
            description="Autumn sale",
            is_ifa_audience=False,
            upload_description="first",
            audiences=[sdk.Audience(id=FRIEND), sdk.Audience(id=FRIEND_2)],
        )
    )
    assert created.status_code == 202
    group = created.data
    assert (group.create_route, group.type, group.permission) == (
        "MESSAGING_API",
        "UPLOAD",
        "READ_WRITE",
    )
    assert (group.description, group.is_ifa_audience) == ("Autumn sale", False)
    assert group.expire_timestamp == group.created + AUDIENCE_LIFETIME_SECONDS

    await audience_api.add_audience_to_audience_group(
        sdk.AddAudienceToAudienceGroupRequest(
            audience_group_id=group.audience_group_id,
            upload_description="second",
            audiences=[sdk.Audience(id=FRIEND_2), sdk.Audience(id=FRIEND_3)],
        )
    )

    data = await audience_api.get_audience_data(group.audience_group_id)
    assert (data.audience_group.status, data.audience_group.audience_count) == ("READY", 3)
    assert [(j.description, j.type, j.job_status, j.audience_count) for j in data.jobs] == [
        ("first", "DIFF_ADD", "FINISHED", 2),
        ("second", "DIFF_ADD", "FINISHED", 1),
    ]
    state = sim.audience_group(group.audience_group_id)
    assert state is not None
    assert (state.user_ids, state.uploads) == ([FRIEND, FRIEND_2, FRIEND_3], 2)
    with pytest.raises(sdk.ApiException) as caught:
        await audience_api.get_audience_data(group.audience_group_id + 1)
    assert caught.value.status == 400
    assert json.loads(caught.value.body) == {
        "message": "audience group not found",
        "details": [{"message": "AUDIENCE_GROUP_NOT_FOUND"}],
    }


async def test_simulator_validates_uploads_field_by_field(
    sim: LineSimulator, audience_api: sdk.AsyncManageAudience, http: aiohttp.ClientSession
) -> None:
    bad = [*entries(2), {"id": "U123"}, {"id": "C" + "0" * 32}, {}]
    status, body = await raw(http, sim, "POST", {"description": "x", "audiences": bad})
    assert status == 400
    assert body == {
        "message": "The request body has 3 error(s)",
        "details": [
            {"message": "Must be a valid user ID", "property": "audiences[2].id"},
            {"message": "Must be a valid user ID", "property": "audiences[3].id"},
            {"message": "Must be a valid user ID", "property": "audiences[4].id"},
        ],
    }
    status, body = await raw(http, sim, "POST", {"description": "x", "audiences": entries(10_001)})
    assert (status, body["details"]) == (
        400,
        [{"message": "Size must be between 0 and 10000", "property": "audiences"}],
    )
    status, body = await raw(http, sim, "POST", {"description": "x" * 121, "audiences": entries(1)})
    assert body["details"] == [
        {"message": "Length must be between 1 and 120", "property": "description"}
    ]
    status, body = await raw(http, sim, "POST", {"audiences": entries(1)})
    assert body["details"] == [{"message": "Must be specified", "property": "description"}]
    status, body = await raw(http, sim, "POST", {"description": 5})
    assert (status, body["details"][0]["property"]) == (400, "description")
    status, body = await raw(http, sim, "POST", b'{"description": ')
    assert status == 400 and body["message"].startswith("The request body could not be parsed")
    assert sim.audience_groups == []

    status, body = await raw(http, sim, "POST", {"description": "x", "audiences": entries(10_000)})
    assert status == 202
    group_id = body["audienceGroupId"]
    status, body = await raw(http, sim, "PUT", {"audienceGroupId": group_id, "audiences": []})
    assert body["details"] == [
        {"message": "Size must be between 1 and 10000", "property": "audiences"}
    ]
    status, body = await raw(http, sim, "PUT", {"audiences": entries(1)})
    assert body["details"] == [{"message": "Must be specified", "property": "audienceGroupId"}]
    status, body = await raw(
        http, sim, "PUT", {"audienceGroupId": group_id, "audiences": entries(10_001)}
    )
    assert (status, body["details"][0]["property"]) == (400, "audiences")
    status, body = await raw(
        http, sim, "PUT", {"audienceGroupId": group_id + 1, "audiences": entries(1)}
    )
    assert (status, body["message"]) == (400, "audience group not found")
    status, body = await raw(
        http, sim, "PUT", {"audienceGroupId": group_id, "audiences": entries(5, start=9_998)}
    )
    assert (status, body) == (202, {})
    state = sim.audience_group(group_id)
    assert state is not None and len(state.user_ids) == 10_003


async def test_simulator_audience_auth_and_headers(
    sim: LineSimulator, audience_api: sdk.AsyncManageAudience, http: aiohttp.ClientSession
) -> None:
    upload_body = {"description": "x", "audiences": entries(1)}
    assert await raw(http, sim, "POST", upload_body, token=None) == (
        401,
        {"message": UNAUTHORIZED},
    )
    assert (await raw(http, sim, "PUT", upload_body, token="wrong"))[0] == 401
    assert (await raw(http, sim, "GET", path="/v2/bot/audienceGroup/1", token="wrong"))[0] == 401
    status, body = await raw(
        http,
        sim,
        "POST",
        upload_body,
        headers={"X-Line-Retry-Key": "6b0a3c1e-1d1c-4c1e-9d1c-000000000000"},
    )
    assert (status, body["message"]) == (400, "The retry key is not supported by this API")
    status, body = await raw(http, sim, "POST", upload_body, headers={"Content-Type": "text/plain"})
    assert status == 400
    status, body = await raw(http, sim, "GET", path="/v2/bot/audienceGroup/abc")
    assert (status, body["message"]) == (
        400,
        "The value for the 'audienceGroupId' parameter is invalid",
    )
    assert sim.audience_groups == []


async def test_simulator_limits_each_upload_endpoint_per_window(
    sim: LineSimulator, audience_api: sdk.AsyncManageAudience, http: aiohttp.ClientSession
) -> None:
    assert (sim.stats().audience_requests_per_window, sim.stats().audience_window_seconds) == (
        60,
        60.0,
    )
    sim.set_audience_limit(2)
    create = sdk.CreateAudienceGroupRequest(description="x", audiences=[sdk.Audience(id=FRIEND)])
    first = await audience_api.create_audience_group(create)
    await audience_api.create_audience_group(create)
    with pytest.raises(sdk.ApiException) as caught:
        await audience_api.create_audience_group(create)
    assert caught.value.status == 429
    assert json.loads(caught.value.body) == {"message": RATE_LIMITED}
    # Adding has its own window, and reading is not limited.
    add = sdk.AddAudienceToAudienceGroupRequest(
        audience_group_id=first.audience_group_id, audiences=[sdk.Audience(id=FRIEND_2)]
    )
    await audience_api.add_audience_to_audience_group(add)
    await audience_api.add_audience_to_audience_group(add)
    for _ in range(3):
        await audience_api.get_audience_data(first.audience_group_id)
    with pytest.raises(sdk.ApiException):
        await audience_api.add_audience_to_audience_group(add)

    sim.advance_clock(60)
    await audience_api.create_audience_group(create)
    stats = sim.stats()
    assert (stats.rate_limited, stats.audience_groups, stats.accepted_audience_uploads) == (2, 3, 5)

    async with http.post(
        f"{sim.base_url}/__simulator/faults",
        json={"audience_limit": {"requests": 5, "window_seconds": 2}},
    ) as resp:
        stats_body = await resp.json()
    assert (stats_body["audience_requests_per_window"], stats_body["audience_window_seconds"]) == (
        5,
        2.0,
    )
    async with http.post(
        f"{sim.base_url}/__simulator/faults", json={"audience_limit": {"window_seconds": 0}}
    ) as resp:
        assert resp.status == 400


async def test_simulator_control_lists_groups_and_reset_clears_them(
    sim: LineSimulator, audience_api: sdk.AsyncManageAudience, http: aiohttp.ClientSession
) -> None:
    created = await audience_api.create_audience_group(
        sdk.CreateAudienceGroupRequest(description="listed", audiences=[sdk.Audience(id=FRIEND)])
    )
    empty = await audience_api.create_audience_group(
        sdk.CreateAudienceGroupRequest(description="empty", audiences=[])
    )
    async with http.get(f"{sim.base_url}/__simulator/audience-groups") as resp:
        listed = await resp.json()
    assert listed == [
        {
            "audience_group_id": created.audience_group_id,
            "description": "listed",
            "created": created.created,
            "user_ids": [FRIEND],
            "uploads": 1,
        },
        {
            "audience_group_id": empty.audience_group_id,
            "description": "empty",
            "created": empty.created,
            "user_ids": [],
            "uploads": 0,
        },
    ]
    async with http.post(f"{sim.base_url}/__simulator/reset") as resp:
        assert (await resp.json())["audience_groups"] == 0
    assert sim.audience_groups == []


def test_simulator_rejects_a_bad_audience_limit() -> None:
    with pytest.raises(ValueError):
        LineSimulator(access_tokens=["t"], audience_window_seconds=0)
    simulator = LineSimulator(access_tokens=["t"])
    with pytest.raises(ValueError):
        simulator.set_audience_limit(-1)
