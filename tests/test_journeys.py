"""Journeys run end to end: events in, runs entered and ended, steps fired by the timers,
sends as ordinary intents through intake to real SMTP. Second-long waits run in real time;
day-long ones move the journey clock through the harness."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from router.journeys import timing
from router.journeys.definition import Journey, Trigger, WaitSpec
from tests.harness import RouterUnderTest, SmtpSink, running_router
from tests.journey_helpers import add_event, add_member, put_journey, runs, steps, until

TOKYO = ZoneInfo("Asia/Tokyo")


def _email(text: str, subject: str = "Hello") -> dict[str, Any]:
    return {"email": {"subject": subject, "text": text}}


async def _journey_intents(router: RouterUnderTest, dsn: str, journey_id: str) -> list[Any]:
    return [s for s in await steps(dsn, journey_id) if s["outcome"] == "sent"]


async def test_wait_then_send_reaches_the_member_as_an_intent_of_the_run(
    dsn: str, smtp: SmtpSink
) -> None:
    async with running_router(dsn, None, smtp) as router:
        await add_member(router, "m1", attributes={"first_name": "Taro"})
        await put_journey(
            router.client,
            "cart",
            {
                "name": "Cart",
                "trigger": {"event": "cart_updated", "where": {"source": "web"}},
                "quiet_hours": None,
                "steps": [
                    {"wait": "PT1S"},
                    {"send": _email("{{ member.attributes.first_name }}: {{ event.cart_url }}")},
                ],
            },
        )
        await add_event(router.client, "m1", "cart_updated", {"source": "app", "cart_url": "x"})
        await add_event(
            router.client, "m1", "cart_updated", {"source": "web", "cart_url": "https://s/c/1"}
        )
        (sent,) = await until(lambda: _journey_intents(router, dsn, "cart"))
        (run,) = await runs(dsn, "cart")  # the event from the app matched no trigger
        assert sent["step"] == "steps[1]" and sent["channels"] == ["email"]
        assert sent["at"] - run["entered_at"] >= timedelta(seconds=1)
        body = await router.wait_for(str(sent["intent_id"]))
        assert body["journey"] == {
            "journey_id": "cart",
            "step": "steps[1]",
            "run_id": str(run["id"]),
        }
        mail = await until(lambda: _async(smtp.mails))
        assert "Taro: https://s/c/1" in mail[0].message.get_payload(decode=True).decode()
        (run,) = await until(lambda: _completed(dsn, "cart"))
        assert run["status"] == "completed" and run["ended_at"] is not None


async def _async(value: Any) -> Any:
    return value


async def _completed(dsn: str, journey_id: str, count: int = 1) -> list[Any]:
    """The journey's runs once `count` of them exist and none is active."""
    found = await runs(dsn, journey_id)
    done = len(found) >= count and all(r["status"] != "active" for r in found)
    return found if done else []


async def test_exit_on_goal_mid_wait_sends_nothing_later(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(dsn, None, smtp) as router:
        for member in ("buyer", "browser"):
            await add_member(router, member)
        await put_journey(
            router.client,
            "cart",
            {
                "name": "Cart",
                "trigger": {"event": "cart_updated"},
                "exit_on": ["order_placed"],
                "quiet_hours": None,
                "steps": [{"wait": "PT2S"}, {"send": _email("come back")}],
            },
        )
        await add_event(router.client, "buyer", "cart_updated")
        await add_event(router.client, "browser", "cart_updated")
        await add_event(router.client, "buyer", "order_placed")
        # The browser's reminder goes out after the wait: by then the buyer's would have too.
        (sent,) = await until(lambda: _journey_intents(router, dsn, "cart"))
        by_member = {r["member_id"]: r for r in await runs(dsn, "cart")}
        assert sent["run_id"] == by_member["browser"]["id"]
        buyer = by_member["buyer"]
        assert (buyer["status"], buyer["exit_reason"], buyer["due_at"]) == ("exited", "goal", None)
        await until(lambda: _completed(dsn, "cart", 2))
        r = await router.client.get("/v1/journeys/cart/progress")
        assert r.status_code == 200, r.text
        figures = r.json()
        assert {k: figures[k] for k in ("entered", "active", "completed", "exited_by_goal")} == {
            "entered": 2,
            "active": 0,
            "completed": 1,
            "exited_by_goal": 1,
        }
        assert figures["conversion_rate"] == 0.5
        assert [(s["step"], s["type"], s["sent"]) for s in figures["steps"]] == [
            ("steps[0]", "wait", {}),
            ("steps[1]", "send", {"email": 1}),
        ]
        assert (await router.client.get("/v1/journeys/nope/progress")).status_code == 404


async def test_if_branches_on_attributes_and_exit_ends_the_run(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(dsn, None, smtp) as router:
        await add_member(router, "vip", attributes={"tier": "gold"})
        await add_member(router, "plain", attributes={"tier": "none"})
        await add_member(router, "friendless")
        await put_journey(
            router.client,
            "welcome",
            {
                "name": "Welcome",
                "trigger": {"event": "registered"},
                "quiet_hours": None,
                "steps": [
                    {
                        "if": {"attribute": "tier", "equals": "gold"},
                        "then": [{"send": _email("gold welcome")}, {"exit": "gold done"}],
                        "else": [
                            {
                                "if": {"reachable_on_line": True},
                                "then": [{"send": _email("line")}],
                                "else": [{"send": _email("plain welcome")}],
                            }
                        ],
                    },
                    {"send": _email("second")},
                ],
            },
        )
        for member in ("vip", "plain", "friendless"):
            await add_event(router.client, member, "registered")
        done = await until(lambda: _completed(dsn, "welcome", 3))
        assert len(done) == 3
        by_member = {r["member_id"]: r for r in done}
        sent = {(s["run_id"], s["step"]) for s in await _journey_intents(router, dsn, "welcome")}
        vip, plain = by_member["vip"]["id"], by_member["plain"]["id"]
        assert (vip, "steps[0].then[0]") in sent and (vip, "steps[1]") not in sent
        assert (plain, "steps[0].else[0].else[0]") in sent and (plain, "steps[1]") in sent
        assert (by_member["vip"]["status"], by_member["vip"]["exit_reason"]) == (
            "exited",
            "gold done",
        )
        assert by_member["plain"]["status"] == "completed"


async def test_reentry_rules(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(dsn, None, smtp) as router:
        await add_member(router, "m1")
        for rule in ("never", "after_exit", "always"):
            await put_journey(
                router.client,
                rule.replace("_", "-"),
                {
                    "name": rule,
                    "trigger": {"event": "ping"},
                    "exit_on": ["stop"],
                    "reentry": rule,
                    "steps": [{"wait": "P1D"}, {"send": _email("x")}],
                },
            )

        async def counts() -> dict[str, list[str]]:
            return {
                j: [r["status"] for r in await runs(dsn, j)]
                for j in ("never", "after-exit", "always")
            }

        async def handled() -> bool:
            return all(s for s in [await _unhandled(dsn) == 0])

        await add_event(router.client, "m1", "ping")
        await add_event(router.client, "m1", "ping")
        await until(handled)
        assert await counts() == {
            "never": ["active"],
            "after-exit": ["active"],
            "always": ["ended", "active"],
        }
        r = await router.client.get("/v1/members/m1/journeys")
        assert r.status_code == 200, r.text
        active = [v for v in r.json() if v["status"] == "active"]
        assert {v["journey_id"] for v in active} == {"never", "after-exit", "always"}
        assert all(
            v["next_step"] == "steps[1]" and v["next_step_type"] == "send" and v["next_at"]
            for v in active
        )
        assert (await router.client.get("/v1/members/ghost/journeys")).status_code == 404
        await add_event(router.client, "m1", "stop")
        await add_event(router.client, "m1", "ping")
        await until(handled)
        assert await counts() == {
            "never": ["exited"],
            "after-exit": ["exited", "active"],
            "always": ["ended", "exited", "active"],
        }


async def test_one_claim_that_starts_a_run_and_ends_it_keeps_the_run_that_follows(
    dsn: str, smtp: SmtpSink
) -> None:
    """Events queued while no process handles them arrive in one claim: a run begun and
    ended in it (an `always` restart, an exit event) is stored ended, and the run after it
    is the member's active one."""
    journey = {"trigger": {"event": "ping"}, "exit_on": ["stop"], "reentry": "always"}
    steps = [{"wait": "P1D"}, {"send": _email("x")}]
    async with running_router(dsn, None, smtp, ROUTER_WORKERS_ENABLED="false") as api:
        await add_member(api, "m1")
        await put_journey(api.client, "restart", {"name": "r", **journey, "steps": steps})
        for name in ("ping", "ping", "ping", "stop", "ping"):
            await add_event(api.client, "m1", name)
        assert await _unhandled(dsn) == 5
    async with running_router(dsn, None, smtp):
        await until(lambda: _unhandled_none(dsn))
        statuses = [(r["status"], r["exit_reason"]) for r in await runs(dsn, "restart")]
    assert statuses == [
        ("ended", "restarted"),
        ("ended", "restarted"),
        ("exited", "goal"),
        ("active", None),
    ]


async def _unhandled_none(dsn: str) -> bool:
    return await _unhandled(dsn) == 0


async def _unhandled(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM events WHERE handled_at IS NULL")
        return n
    finally:
        await conn.close()


async def test_quiet_hours_across_midnight_in_tokyo_move_a_send_to_the_morning(
    dsn: str, smtp: SmtpSink
) -> None:
    async with running_router(dsn, None, smtp) as router:
        await add_member(router, "m1")
        await put_journey(
            router.client,
            "promo",
            {"name": "Promo", "trigger": {"event": "ping"}, "steps": [{"send": _email("sale")}]},
        )
        router.set_clock(datetime(2026, 3, 10, 23, 30, tzinfo=TOKYO))
        await add_event(router.client, "m1", "ping")
        (deferred,) = await until(lambda: steps(dsn, "promo"))
        assert deferred["outcome"] == "deferred" and "quiet hours" in deferred["reason"]
        (run,) = await runs(dsn, "promo")
        assert run["due_at"] == datetime(2026, 3, 11, 8, 0, tzinfo=TOKYO)
        router.set_clock(datetime(2026, 3, 11, 8, 0, 1, tzinfo=TOKYO))
        (sent,) = await until(lambda: _journey_intents(router, dsn, "promo"))
        assert sent["at"] >= datetime(2026, 3, 11, 8, 0, tzinfo=TOKYO)


def test_quiet_hours_and_waits_by_local_time() -> None:
    quiet = timing.DEFAULT_QUIET_HOURS
    at = datetime(2026, 3, 11, 2, 0, tzinfo=TOKYO)  # after midnight, inside the window
    assert timing.quiet_until(at, quiet) == datetime(2026, 3, 11, 8, 0, tzinfo=TOKYO)
    assert timing.quiet_until(at.replace(hour=12), quiet) is None
    assert timing.quiet_until(at.replace(hour=20, minute=59), quiet) is None
    journey = Journey(name="j", trigger=Trigger(event="x"), steps=[])
    assert timing.wait_target(
        WaitSpec(until="10:00"), at.replace(hour=12), journey, {}, {}
    ) == datetime(2026, 3, 12, 10, 0, tzinfo=TOKYO)
    before = WaitSpec(before="P3D", of="member.trial_ends_at")
    assert timing.wait_target(
        before, at, journey, {"trial_ends_at": "2026-04-01T00:00:00+09:00"}, {}
    ) == datetime(2026, 3, 29, 0, 0, tzinfo=TOKYO)
    with pytest.raises(ValueError, match=r"no date in member\.trial_ends_at"):
        timing.wait_target(before, at, journey, {}, {})


async def test_frequency_cap_defers_to_the_next_local_day(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(dsn, None, smtp) as router:
        await add_member(router, "m1")
        await put_journey(
            router.client,
            "burst",
            {
                "name": "Burst",
                "trigger": {"event": "ping"},
                "quiet_hours": None,
                "steps": [{"send": _email(f"n{i}")} for i in range(3)],
            },
        )
        # Real time: the cap counts the intents made today (a local day ending within the
        # test would only move the deferral a day).
        _, tomorrow = timing.local_day(datetime.now(TOKYO), TOKYO)
        await add_event(router.client, "m1", "ping")

        async def deferred() -> list[Any]:
            return [s for s in await steps(dsn, "burst") if s["outcome"] == "deferred"]

        (held,) = await until(deferred)
        assert held["step"] == "steps[2]" and "frequency cap" in held["reason"]
        assert len(await _journey_intents(router, dsn, "burst")) == 2
        (run,) = await runs(dsn, "burst")
        assert run["due_at"] == tomorrow
        router.set_clock(tomorrow + timedelta(seconds=1))
        await until(lambda: _completed(dsn, "burst"))
        assert len(await _journey_intents(router, dsn, "burst")) == 3


async def test_frequency_cap_skips_past_max_deferral(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(dsn, None, smtp, ROUTER_JOURNEYS_MAX_DEFERRAL="PT1S") as router:
        await add_member(router, "m1")
        await put_journey(
            router.client,
            "burst",
            {
                "name": "Burst",
                "trigger": {"event": "ping"},
                "quiet_hours": None,
                "steps": [{"send": _email(f"n{i}")} for i in range(3)],
            },
        )
        await add_event(router.client, "m1", "ping")
        await until(lambda: _completed(dsn, "burst"))
        outcomes = [(s["step"], s["outcome"]) for s in await steps(dsn, "burst")]
        assert outcomes == [("steps[0]", "sent"), ("steps[1]", "sent"), ("steps[2]", "skipped")]
        (skipped,) = [s for s in await steps(dsn, "burst") if s["outcome"] == "skipped"]
        assert "max_deferral" in skipped["reason"]


async def test_attribute_set_and_line_follow_start_runs(dsn: str, line_sim: Any) -> None:
    from tests.test_line_webhooks import body_of, event, line_router, post_webhook, signed

    async with line_router(dsn, line_sim, None) as router:
        await add_member(router, "quiet", attributes={"registered_at": None})
        await put_journey(
            router.client,
            "registered",
            {
                "name": "Registered",
                "trigger": {"attribute": "registered_at"},
                "steps": [{"wait": "P1D"}],
            },
        )
        await put_journey(
            router.client,
            "followed",
            {"name": "Followed", "trigger": {"line_follow": True}, "steps": [{"wait": "P1D"}]},
        )
        # Set from unset (null or absent) starts a run; set again, or set at creation, once.
        await add_member(router, "quiet", attributes={"registered_at": "2026-03-01"})
        await add_member(router, "quiet", attributes={"registered_at": "2026-03-02"})
        await add_member(router, "new", attributes={"registered_at": "2026-03-01"})
        await add_member(router, "friend", line_user_id="U" + "f" * 32)
        body = body_of(event("follow", user="U" + "f" * 32))
        assert (await post_webhook(router, body, signed(body))).status_code == 200

        async def entered() -> dict[str, list[str]]:
            found = {
                j: [r["member_id"] for r in await runs(dsn, j)] for j in ("registered", "followed")
            }
            return found if len(found["registered"]) == 2 and found["followed"] else {}

        found = await until(entered)
        assert sorted(found["registered"]) == ["new", "quiet"]
        assert found["followed"] == ["friend"]


async def test_members_newly_in_an_audience_enter_its_journey(dsn: str, smtp: SmtpSink) -> None:
    from tests.test_audiences import upload

    async with running_router(dsn, None, smtp) as router:
        for member in ("taro", "jiro", "goro"):
            await add_member(router, member)
        r = await upload(router, b"taro@example.jp\n")
        assert r.status_code == 201, r.text
        audience = r.json()["id"]
        await put_journey(
            router.client,
            "joined",
            {"name": "Joined", "trigger": {"audience": audience}, "steps": [{"wait": "P1D"}]},
        )
        # taro was in it already; jiro is new; nobody has the third address.
        r = await upload(
            router,
            b"taro@example.jp\njiro@example.jp\nnobody@example.jp\n",
            path=f"/v1/audiences/{audience}/uploads",
        )
        assert r.status_code == 200, r.text
        assert r.json()["duplicates"] == 1  # taro: already in

        async def entered() -> list[str]:
            return [r["member_id"] for r in await runs(dsn, "joined")]

        assert await until(entered) == ["jiro"]
        assert await _unhandled(dsn) == 0


async def test_if_event_since_entry_takes_then_only_after_the_event(
    dsn: str, smtp: SmtpSink
) -> None:
    async with running_router(dsn, None, smtp) as router:
        for member in ("viewer", "idle"):
            await add_member(router, member)
        await put_journey(
            router.client,
            "nudge",
            {
                "name": "Nudge",
                "trigger": {"event": "trial_started"},
                "quiet_hours": None,
                "steps": [
                    {"wait": "PT1S"},
                    {
                        "if": {"event_since_entry": "pricing_viewed"},
                        "then": [{"send": _email("about pricing")}],
                        "else": [{"send": _email("how is the trial?")}],
                    },
                ],
            },
        )
        await add_event(
            router.client, "viewer", "pricing_viewed"
        )  # before entering: does not count
        await add_event(router.client, "viewer", "trial_started")
        await add_event(router.client, "idle", "trial_started")
        await add_event(router.client, "viewer", "pricing_viewed")
        done = await until(lambda: _completed(dsn, "nudge", 2))
        by_run = {r["id"]: r["member_id"] for r in done}
        sent = {
            by_run[s["run_id"]]: s["step"] for s in await _journey_intents(router, dsn, "nudge")
        }
        assert sent == {"viewer": "steps[1].then[0]", "idle": "steps[1].else[0]"}


async def test_coupon_codes_one_per_run_and_an_empty_pool_fails_visibly(
    dsn: str, smtp: SmtpSink
) -> None:
    async with running_router(dsn, None, smtp) as router:
        for member in ("first", "second"):
            await add_member(router, member)
        r = await router.client.post("/v1/coupon-pools/spring/codes", json={"codes": ["SPRING-1"]})
        assert r.status_code in (200, 201), r.text
        await put_journey(
            router.client,
            "coupon",
            {
                "name": "Coupon",
                "trigger": {"event": "registered"},
                "quiet_hours": None,
                "steps": [{"send": _email('Your code: {{ coupon("spring") }}')}],
            },
        )
        await add_event(router.client, "first", "registered")
        (sent,) = await until(lambda: _journey_intents(router, dsn, "coupon"))
        await add_event(router.client, "second", "registered")
        done = await until(lambda: _completed(dsn, "coupon", 2))
        outcomes = {r["member_id"]: r["id"] for r in done}
        (failed,) = [s for s in await steps(dsn, "coupon") if s["outcome"] == "failed"]
        assert failed["run_id"] == outcomes["second"] and "spring" in failed["reason"]
        assert sent["run_id"] == outcomes["first"]
        mail = await until(lambda: _async(smtp.mails))
        assert "Your code: SPRING-1" in mail[0].message.get_payload(decode=True).decode()
        r = await router.client.delete("/v1/journeys/coupon")
        assert r.status_code == 204, r.text


async def test_deleting_a_journey_ends_its_active_runs(dsn: str, smtp: SmtpSink) -> None:
    async with running_router(dsn, None, smtp) as router:
        await add_member(router, "m1")
        await put_journey(
            router.client,
            "later",
            {"name": "Later", "trigger": {"event": "ping"}, "steps": [{"wait": "P1D"}]},
        )
        await add_event(router.client, "m1", "ping")
        await until(lambda: runs(dsn, "later"))
        assert (await router.client.delete("/v1/journeys/later")).status_code == 204
        (run,) = await runs(dsn, "later")
        assert (run["status"], run["exit_reason"]) == ("ended", "journey deleted")
