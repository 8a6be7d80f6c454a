"""SendGrid's batch ids (`/v3/mail/batch`) and scheduled-send holds
(`/v3/user/scheduled_sends`): a send made with a `batch_id` can be cancelled or paused until
it goes out (router.store.mail_batches). Errors use SendGrid's `{"errors": [...]}`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.params import JSONBody, PathParameter

from router.api import body_checks
from router.api.compat_sendgrid import EXCEPTION_HANDLERS, sendgrid_error
from router.api.compat_sendgrid_suppressions import Refused
from router.api.dependencies import Injected
from router.api.openapi import sendgrid_problems
from router.database import Pool
from router.ingress.sendgrid import SendGridError
from router.store import mail_batches
from router.store.mail_batches import MAX_HELD, HoldRefused

MAX_BATCH_ID = 100

BatchIdParam = Annotated[
    str, PathParameter(min_length=1, max_length=MAX_BATCH_ID, description="The batch id")
]
BatchId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_BATCH_ID)]
Status = Literal["cancel", "pause"]

_NOT_READ: dict[str, Any] = {body_checks.BODY_CHECKS: "not_read"}


class Batch(msgspec.Struct, kw_only=True):
    batch_id: str


class ScheduledSend(msgspec.Struct, kw_only=True):
    batch_id: BatchId
    status: Status


class StatusChange(msgspec.Struct, kw_only=True):
    status: Status


def refused(_: object, exc: Refused) -> Response[bytes]:
    return sendgrid_error(exc.status, exc.errors)


def _unknown_batch(field: str | None = None) -> Refused:
    message = "invalid batch id: no batch has this id (create one with POST /v3/mail/batch)"
    return Refused(404 if field is None else 400, [SendGridError(message=message, field=field)])


def _not_held() -> Refused:
    message = "this batch has no scheduled send cancelled or paused"
    return Refused(404, [SendGridError(message=message)])


def _hold_refused(exc: HoldRefused) -> Refused:
    if exc.reason == "unknown":
        return _unknown_batch("batch_id")
    message = (
        f"At most {MAX_HELD} batches can be cancelled or paused at one time: resume "
        "(DELETE /v3/user/scheduled_sends/{batch_id}) one first."
    )
    return Refused(400, [SendGridError(message=message)])


class SendGridBatchController(Controller):
    path = "/v3"
    tags = ["compatibility"]  # noqa: RUF012
    exception_handlers = {**EXCEPTION_HANDLERS, Refused: refused}  # noqa: RUF012

    @post(
        "/mail/batch",
        status_code=201,
        summary="SendGrid: a new batch id, to send with (`batch_id`) and cancel or pause",
        opt=_NOT_READ,
    )
    async def new_batch(self, pool: Injected[Pool]) -> Batch:
        async with pool.acquire() as conn:
            return Batch(batch_id=await mail_batches.create(conn))

    @get(
        "/mail/batch/{batch_id:str}",
        summary="SendGrid: whether a batch id is valid",
        responses=sendgrid_problems(404),
    )
    async def batch(self, batch_id: BatchIdParam, pool: Injected[Pool]) -> Batch:
        async with pool.acquire() as conn:
            if not await mail_batches.exists(conn, batch_id):
                raise _unknown_batch()
        return Batch(batch_id=batch_id)

    @post(
        "/user/scheduled_sends",
        status_code=201,
        summary="SendGrid: cancel or pause the scheduled sends of a batch",
        description="`cancel`: the batch's deliveries not yet sent are cancelled, and so is "
        "mail sent with the batch id later. `pause`: they are held until the pause is deleted "
        "(resumed), then go at their send time, or at once if it has passed; those held more "
        f"than 72 hours past it are discarded. At most {MAX_HELD} batches held at once. A "
        "delivery a worker had already taken when the hold came may still go out.",
        responses=sendgrid_problems(400),
    )
    async def hold(self, data: JSONBody[ScheduledSend], pool: Injected[Pool]) -> ScheduledSend:
        async with pool.acquire() as conn:
            try:
                await mail_batches.set_hold(conn, data.batch_id, data.status, new=True)
            except HoldRefused as exc:
                raise _hold_refused(exc) from None
            except LookupError:
                message = "this batch is already cancelled or paused: PATCH it to change that"
                raise Refused(400, [SendGridError(message=message, field="batch_id")]) from None
        return data

    @get("/user/scheduled_sends", summary="SendGrid: every cancelled or paused batch")
    async def holds(self, pool: Injected[Pool]) -> list[ScheduledSend]:
        async with pool.acquire() as conn:
            found = await mail_batches.held(conn)
        return [ScheduledSend(batch_id=h.batch_id, status=h.status) for h in found]

    @get(
        "/user/scheduled_sends/{batch_id:str}",
        summary="SendGrid: a batch's hold, as a list ([] when it is not held)",
        responses=sendgrid_problems(404),
    )
    async def batch_hold(self, batch_id: BatchIdParam, pool: Injected[Pool]) -> list[ScheduledSend]:
        async with pool.acquire() as conn:
            if not await mail_batches.exists(conn, batch_id):
                raise _unknown_batch()
            found = await mail_batches.held(conn, batch_id)
        return [ScheduledSend(batch_id=h.batch_id, status=h.status) for h in found]

    @patch(
        "/user/scheduled_sends/{batch_id:str}",
        status_code=204,
        summary="SendGrid: change a batch's hold between cancel and pause",
        responses=sendgrid_problems(404),
    )
    async def change(
        self, batch_id: BatchIdParam, data: JSONBody[StatusChange], pool: Injected[Pool]
    ) -> None:
        async with pool.acquire() as conn:
            try:
                await mail_batches.set_hold(conn, batch_id, data.status, new=False)
            except HoldRefused as exc:
                raise (
                    _unknown_batch() if exc.reason == "unknown" else _hold_refused(exc)
                ) from None
            except LookupError:
                raise _not_held() from None

    @delete(
        "/user/scheduled_sends/{batch_id:str}",
        summary="SendGrid: lift a batch's hold (a paused batch is resumed)",
        responses=sendgrid_problems(404),
    )
    async def release(self, batch_id: BatchIdParam, pool: Injected[Pool]) -> None:
        async with pool.acquire() as conn:
            if not await mail_batches.release(conn, batch_id):
                raise _not_held()
