"""HTTP route for operators: the consent records kept for erased members."""

from __future__ import annotations

import msgspec
from litestar import Controller, get

from router.api.dependencies import Injected
from router.api.errors import not_found
from router.api.members import MemberIdParam
from router.api.openapi import problems
from router.database import Pool
from router.deliverability.consent import ConsentRecord
from router.store import consent_records


class ConsentRecords(msgspec.Struct, kw_only=True):
    member_id: str
    records: list[ConsentRecord]


class ConsentRecordController(Controller):
    path = "/v1/consent-records"
    tags = ["members"]  # noqa: RUF012

    @get(
        "/{member_id:str}",
        summary="Read the consent records kept for an erased member",
        description="Erasing a member keeps their email consent until one month after the "
        "last promotional email sent to them (特定電子メール法); 404 when none is kept.",
        responses=problems(404),
    )
    async def read(self, member_id: MemberIdParam, pool: Injected[Pool]) -> ConsentRecords:
        async with pool.acquire() as conn:
            records = await consent_records.of_member(conn, member_id)
        if not records:
            raise not_found(f"no consent record is kept for member {member_id!r}")
        return ConsentRecords(member_id=member_id, records=records)
