"""SendGrid batch ids and scheduled sends (`/v3/mail/batch`, `/v3/user/scheduled_sends`):
cancel and pause, driven by the official Python and Node clients."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from python_http_client.exceptions import HTTPError
from sendgrid.helpers.mail import BatchId, SendAt

from router import retention
from tests import node_clients
from tests.harness import API_KEY, RouterUnderTest, SmtpSink
from tests.test_compat_sendgrid import error_fields, newsletter, refused, send, stored_intents
from tests.test_compat_sendgrid_groups import call, client


async def new_batch(r: RouterUnderTest) -> str:
    made = await call(client(r).mail.batch.post)
    assert made.status_code == 201
    batch_id: str = made.to_dict["batch_id"]
    assert len(batch_id) == 32
    return batch_id


def scheduled(batch_id: str, recipient: str, send_at: int | None = None) -> Any:
    mail = newsletter(recipient)
    mail.batch_id = BatchId(batch_id)
    if send_at is not None:
        mail.send_at = SendAt(send_at)
    return mail


async def delivery_statuses(dsn: str) -> dict[str, str]:
    """Each recipient's delivery status, read from the table."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT d.address, d.status FROM deliveries d JOIN intents i ON i.id = d.intent_id"
        )
    finally:
        await conn.close()
    return {r["address"]: r["status"] for r in rows}


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_cancelled_batch_is_never_sent(
    router: RouterUnderTest, smtp: SmtpSink, dsn: str
) -> None:
    sg = client(router)
    batch_id = await new_batch(router)
    assert (await call(sg.mail.batch._(batch_id).get)).to_dict == {"batch_id": batch_id}
    with pytest.raises(HTTPError) as unknown:
        await call(sg.mail.batch._("no-such-batch").get)
    assert unknown.value.status_code == 404 and "errors" in unknown.value.to_dict
    bad = await refused(router, scheduled("no-such-batch", "a@example.org"))
    assert bad.status_code == 400 and error_fields(bad) == ["batch_id"]

    send_at = int(time.time()) + 3
    for recipient in ("a@example.org", "b@example.org"):
        assert (await send(router, scheduled(batch_id, recipient, send_at))).status_code == 202
    cancel = await call(
        sg.user.scheduled_sends.post, request_body={"batch_id": batch_id, "status": "cancel"}
    )
    assert cancel.status_code == 201
    assert cancel.to_dict == {"batch_id": batch_id, "status": "cancel"}
    for intent in await stored_intents(dsn):
        view = await router.intent(intent["id"])
        assert view["status"] == "cancelled"
        assert "cancelled" in view["deliveries"][0]["last_error"]
    # Mail sent with the batch id after the cancel is dropped at its send, as SendGrid does.
    assert (await send(router, scheduled(batch_id, "c@example.org"))).status_code == 202
    late = next(i for i in await stored_intents(dsn) if i["email_address"] == "c@example.org")
    await router.wait_for(late["id"], ("cancelled",))

    listed = await node_clients.request(router.base_url, API_KEY, "GET", "/v3/user/scheduled_sends")
    assert listed["status"] == 200 and listed["body"] == [
        {"batch_id": batch_id, "status": "cancel"}
    ]
    await asyncio.sleep(max(0.0, send_at + 0.5 - time.time()))
    assert smtp.mails == []
    assert set((await delivery_statuses(dsn)).values()) == {"cancelled"}


async def test_a_paused_batch_goes_out_when_resumed(
    router: RouterUnderTest, smtp: SmtpSink, dsn: str
) -> None:
    sg = client(router)
    batch_id = await new_batch(router)
    send_at = int(time.time()) + 2
    assert (await send(router, scheduled(batch_id, "a@example.org", send_at))).status_code == 202
    paused = await call(
        sg.user.scheduled_sends.post, request_body={"batch_id": batch_id, "status": "pause"}
    )
    assert paused.status_code == 201
    with pytest.raises(HTTPError) as twice:
        await call(
            sg.user.scheduled_sends.post, request_body={"batch_id": batch_id, "status": "cancel"}
        )
    assert twice.value.status_code == 400
    # Sent after the pause, due at once: the claim finds its batch paused and holds them.
    for recipient in ("b@example.org", "old@example.org"):
        assert (await send(router, scheduled(batch_id, recipient))).status_code == 202

    async def all_held() -> bool:
        return set((await delivery_statuses(dsn)).values()) == {"held"}

    await until(all_held)
    # One held 72 hours past its send time is discarded by the sweep, as SendGrid expires it.
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE deliveries SET next_attempt_at = now() - interval '73 hours'"
            " WHERE address = 'old@example.org'"
        )
    finally:
        await conn.close()
    swept = await retention.prune(router.runtime.pool, None)
    assert swept["expired_paused_deliveries"] == 1
    assert (await delivery_statuses(dsn))["old@example.org"] == "cancelled"
    one = await call(sg.user.scheduled_sends._(batch_id).get)
    assert one.to_dict == [{"batch_id": batch_id, "status": "pause"}]
    await asyncio.sleep(max(0.0, send_at + 0.3 - time.time()))
    assert smtp.mails == []
    live = [i for i in await stored_intents(dsn) if i["email_address"] != "old@example.org"]
    for intent in live:
        assert (await router.intent(intent["id"]))["status"] == "queued"

    resumed = await call(sg.user.scheduled_sends._(batch_id).delete)
    assert resumed.status_code == 204
    for intent in live:
        await router.wait_for(intent["id"])
    assert sorted(m.rcpt_to[0] for m in smtp.mails) == ["a@example.org", "b@example.org"]
    assert (await call(sg.user.scheduled_sends.get)).to_dict == []
    with pytest.raises(HTTPError) as not_held:
        await call(sg.user.scheduled_sends._(batch_id).delete)
    assert not_held.value.status_code == 404


async def test_at_most_ten_batches_are_held_and_holds_change(router: RouterUnderTest) -> None:
    c = router.client
    batches = [(await c.post("/v3/mail/batch")).json()["batch_id"] for _ in range(11)]
    for batch_id in batches[:10]:
        held = await c.post(
            "/v3/user/scheduled_sends", json={"batch_id": batch_id, "status": "pause"}
        )
        assert held.status_code == 201, held.text
    over = await c.post(
        "/v3/user/scheduled_sends", json={"batch_id": batches[10], "status": "pause"}
    )
    assert over.status_code == 400 and "At most 10" in over.json()["errors"][0]["message"]
    changed = await c.patch(f"/v3/user/scheduled_sends/{batches[0]}", json={"status": "cancel"})
    assert changed.status_code == 204
    assert (await c.get(f"/v3/user/scheduled_sends/{batches[0]}")).json() == [
        {"batch_id": batches[0], "status": "cancel"}
    ]
    wrong = await c.patch(f"/v3/user/scheduled_sends/{batches[0]}", json={"status": "stop"})
    assert wrong.status_code == 400 and wrong.json()["errors"][0]["field"] == "status"
    unknown = await c.post("/v3/user/scheduled_sends", json={"batch_id": "x", "status": "pause"})
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "batch_id"
    assert (await c.delete(f"/v3/user/scheduled_sends/{batches[1]}")).status_code == 204
    again = await c.post(
        "/v3/user/scheduled_sends", json={"batch_id": batches[10], "status": "pause"}
    )
    assert again.status_code == 201
    assert len((await c.get("/v3/user/scheduled_sends")).json()) == 10
    free = await c.get(f"/v3/user/scheduled_sends/{batches[1]}")
    assert free.status_code == 200 and free.json() == []
