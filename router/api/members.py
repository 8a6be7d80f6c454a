"""HTTP routes for members: thin wrappers over `router.members`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import Response

from router import members
from router.api import body_checks
from router.api.batch import decode_batch
from router.api.dependencies import Injected
from router.api.errors import found, not_found
from router.api.openapi import batch_operation, problems, ref
from router.config import LineConfig, MembersConfig
from router.database import Pool
from router.identifiers import MAX_MEMBER_ID, MEMBER_ID_PATTERN, MEMBER_ID_RULE
from router.members import Member, MemberBatchItem, MemberFields
from router.problems import FieldError, ProblemError, invalid

MAX_MEMBERS_PER_BATCH = 10_000

MemberIdParam = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=MAX_MEMBER_ID,
        pattern=MEMBER_ID_PATTERN,
        description="The company's own id for the member, percent-encoded: "
        + MEMBER_ID_RULE.removeprefix("a member ID is "),
    ),
]
StoredMemberId = Annotated[
    str,
    QueryParameter(
        min_length=1,
        max_length=MAX_MEMBER_ID,
        description="Any stored member ID, including one stored before member IDs were "
        "restricted (such as one containing '/')",
    ),
]


class MemberResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    member_id: str | None
    status: Literal["created", "updated", "rejected"]
    errors: list[FieldError] = msgspec.field(default_factory=list)


class MemberBatchResponse(msgspec.Struct):
    results: list[MemberResult]


class MemberController(Controller):
    path = "/v1/members"
    tags = ["members"]  # noqa: RUF012

    @put(
        "/{member_id:str}",
        status_code=200,
        summary="Create (201) or update (200) a member",
        responses={
            **problems(400, 409),
            201: ResponseSpec(data_container=Member, description="The member was created"),
        },
    )
    async def upsert(
        self,
        member_id: MemberIdParam,
        data: JSONBody[MemberFields],
        pool: Injected[Pool],
        members_config: Injected[MembersConfig],
        line_config: Injected[LineConfig],
    ) -> Response[Member]:
        prepared = members.prepare(
            member_id, data, members_config.default_region, line_accounts=line_config.accounts
        )
        if isinstance(prepared, list):
            raise invalid(prepared)
        async with pool.acquire() as conn, conn.transaction():
            (result,) = await members.upsert(conn, [prepared])
            if isinstance(result, FieldError):
                raise ProblemError(409, "Conflict", result.message, [result])
            member = await members.get(conn, member_id)
        assert member is not None
        return Response(member, status_code=201 if result.created else 200)

    @get("/{member_id:str}", summary="Read a member", responses=problems(404))
    async def read(self, member_id: MemberIdParam, pool: Injected[Pool]) -> Member:
        async with pool.acquire() as conn:
            member = await members.get(conn, member_id)
        return found(member, f"no member with id {member_id!r}")

    @delete(
        "/{member_id:str}",
        summary="Erase a member, their intents and personal data",
        responses=problems(404),
    )
    async def erase(self, member_id: MemberIdParam, pool: Injected[Pool]) -> None:
        async with pool.acquire() as conn:
            if not await members.erase(conn, member_id):
                raise not_found(f"no member with id {member_id!r}")

    @delete(
        "/",
        summary="Erase a member given by a query parameter: any stored ID",
        description="The same erasure as DELETE /v1/members/{member_id}, for a member ID that "
        "cannot be written in that path: one stored before member IDs were restricted (one "
        "containing '/', or '.', '..' or 'batch'). Percent-encode the ID in the query.",
        responses=problems(400, 404),
    )
    async def erase_stored(self, member_id: StoredMemberId, pool: Injected[Pool]) -> None:
        if "\x00" in member_id:
            raise invalid([FieldError("member_id", "contains U+0000 (NUL), which is never stored")])
        async with pool.acquire() as conn:
            if not await members.erase(conn, member_id):
                raise not_found(f"no member with id {member_id!r}")

    @post(
        "/batch",
        status_code=200,
        summary="Create or update up to 10,000 members",
        opt=body_checks.PER_ITEM,
        responses=problems(400),
        operation_class=batch_operation(
            "members",
            {
                "allOf": [
                    ref("MemberFields"),
                    {
                        "type": "object",
                        "required": ["member_id"],
                        "properties": {"member_id": {"type": "string", "maxLength": 255}},
                    },
                ]
            },
            MAX_MEMBERS_PER_BATCH,
        ),
        description="Each item is a member with its member_id; results come back in order.",
    )
    async def batch(
        self,
        request: Request[Any, Any, Any],
        pool: Injected[Pool],
        members_config: Injected[MembersConfig],
        line_config: Injected[LineConfig],
    ) -> MemberBatchResponse:
        decoded = decode_batch(
            await request.body(), "members", MemberBatchItem, MAX_MEMBERS_PER_BATCH
        )
        region = members_config.default_region
        results: list[MemberResult | None] = [None] * len(decoded)
        prepared: list[tuple[int, members.PreparedMember]] = []
        seen: set[str] = set()
        for i, item in enumerate(decoded):
            if isinstance(item, list):
                results[i] = MemberResult(member_id=None, status="rejected", errors=item)
                continue
            p = members.prepare(
                item.member_id,
                item,
                region,
                prefix=f"members[{i}].",
                line_accounts=line_config.accounts,
            )
            if isinstance(p, list):
                results[i] = MemberResult(member_id=item.member_id, status="rejected", errors=p)
            elif p.member_id in seen:
                results[i] = MemberResult(
                    member_id=item.member_id,
                    status="rejected",
                    errors=[FieldError(f"members[{i}].member_id", "appears earlier in this batch")],
                )
            else:
                seen.add(p.member_id)
                prepared.append((i, p))
        async with pool.acquire() as conn, conn.transaction():
            outcomes = await members.upsert(conn, [p for _, p in prepared])
        for (i, p), outcome in zip(prepared, outcomes, strict=True):
            if isinstance(outcome, FieldError):
                error = FieldError(f"members[{i}].{outcome.field}", outcome.message)
                results[i] = MemberResult(member_id=p.member_id, status="rejected", errors=[error])
            else:
                status: Literal["created", "updated"] = "created" if outcome.created else "updated"
                results[i] = MemberResult(member_id=p.member_id, status=status)
        return MemberBatchResponse([r for r in results if r is not None])
