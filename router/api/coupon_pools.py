"""HTTP routes for coupon pools: create or rename, add codes (a streamed text file or a JSON
list), and the pools' figures. Codes never leave the router through these routes: an upload's
answer counts them and names rejected ones by line or index only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation
from litestar.params import JSONBody, PathParameter
from litestar.response import Response
from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    PushMultipartParser,
)

from router import coupons
from router.api import body_checks
from router.api.dependencies import Injected
from router.api.errors import field_path, found
from router.api.openapi import problems
from router.audiences import MAX_NAME, NAME_PATTERN
from router.coupons import MAX_CODES, MAX_FILE_BYTES, RejectedCode
from router.database import Pool
from router.problems import FieldError, ProblemError, invalid
from router.store import coupon_pools
from router.store.coupon_pools import POOL_ID_PATTERN, POOL_ID_RULE, CouponPool

# Room for the form envelope around the file, or JSON's quotes, commas and escapes.
MAX_BODY_BYTES = MAX_FILE_BYTES + 64 * 1024

PoolIdParam = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=64,
        pattern=POOL_ID_PATTERN,
        description="The pool's id: " + POOL_ID_RULE.removeprefix("a pool ID is "),
    ),
]


class CouponPoolFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A pool's own fields; a name left out keeps the pool's name."""

    name: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)] | None
    ) = None


class CouponCodeList(msgspec.Struct, forbid_unknown_fields=True):
    codes: list[str]


class CouponPoolList(msgspec.Struct):
    pools: list[CouponPool]


class CouponUpload(msgspec.Struct, kw_only=True):
    """What an upload did, and the pool's figures after it."""

    received: int
    added: int
    duplicates: int
    rejected: int
    rejections: list[RejectedCode]
    pool: CouponPool


def _no_pool(pool_id: str) -> str:
    return f"no coupon pool with id {pool_id!r}"


async def _file_chunks(request: Request[Any, Any, Any], boundary: str) -> AsyncIterator[bytes]:
    """The body of the one part named `file`, as it arrives."""
    in_file = False
    seen_file = False
    try:
        parser = PushMultipartParser(boundary, max_segment_count=4)
        async for chunk in request.stream():
            for event in parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    if event.name != "file" or seen_file:
                        detail = "the form has one part, named file"
                        raise invalid([FieldError(str(event.name), detail)])
                    in_file = seen_file = True
                elif event is None:
                    in_file = False
                elif in_file:
                    yield event
        parser.close()
    except ParserError as exc:
        raise ProblemError(
            400, "Invalid request", f"the body is not valid multipart/form-data ({exc})"
        ) from None
    if not seen_file:
        raise invalid([FieldError("file", "missing: send the codes as the part named file")])


async def _codes(request: Request[Any, Any, Any]) -> list[str]:
    body = await request.body()
    if body_checks.too_deep(body):
        raise ProblemError(400, "Invalid request", body_checks.nesting_refused())
    try:
        codes = msgspec.json.decode(body, type=CouponCodeList).codes
    except msgspec.ValidationError as exc:
        path, message = field_path(str(exc))
        raise invalid([FieldError(path or "body", message)]) from None
    except msgspec.DecodeError as exc:
        raise ProblemError(400, "Invalid request", f"the body is not valid JSON ({exc})") from None
    if len(codes) > MAX_CODES:
        raise invalid([FieldError("codes", f"at most {MAX_CODES:,} codes in one request")])
    return codes


def _too_large(request: Request[Any, Any, Any]) -> None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        detail = f"the body is larger than {MAX_BODY_BYTES:,} bytes"
        raise ProblemError(413, "Request body too large", detail)


async def _upload(
    request: Request[Any, Any, Any], pool: Pool, pool_id: str
) -> Response[CouponUpload]:
    _too_large(request)
    media_type, options = request.content_type
    codes: list[str] | None = None
    if media_type == "application/json":
        codes = await _codes(request)
    elif media_type != "multipart/form-data" or not options.get("boundary"):
        raise ProblemError(
            415,
            "Unsupported media type",
            'send a file as multipart/form-data, or a JSON body {"codes": [...]}',
        )
    async with pool.acquire() as conn, conn.transaction():
        created = await coupon_pools.hold(conn, pool_id)
        if codes is not None:
            counts = await coupons.add_list(conn, pool_id, codes)
        else:
            counts = await coupons.add_file(
                conn, pool_id, _file_chunks(request, options["boundary"])
            )
        figures = await coupon_pools.get(conn, pool_id)
    assert figures is not None
    upload = CouponUpload(
        received=counts.received,
        added=counts.added,
        duplicates=counts.duplicates,
        rejected=counts.rejected,
        rejections=counts.rejections,
        pool=figures,
    )
    return Response(upload, status_code=201 if created else 200)


@dataclass
class _UploadOperation(Operation):
    """The request body Litestar cannot infer: the route reads the file as a stream, or a
    JSON list whose codes are checked one by one (a bad code is rejected on its own)."""

    def to_schema(self) -> dict[str, Any]:
        schema = super().to_schema()
        schema["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "additionalProperties": False,
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": "Text, one code per line (LF or CRLF), at most"
                                f" {MAX_CODES:,} lines and {MAX_FILE_BYTES:,} bytes",
                            }
                        },
                    },
                    "encoding": {"file": {"contentType": "application/octet-stream"}},
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["codes"],
                        "additionalProperties": False,
                        "properties": {
                            "codes": {
                                "type": "array",
                                "maxItems": MAX_CODES,
                                "items": {
                                    "type": "string",
                                    "description": "A code: 1 to 255 printable characters"
                                    " once surrounding white space is trimmed; any other is"
                                    " rejected on its own, in `rejections`",
                                },
                            }
                        },
                    }
                },
            },
        }
        return schema


_UPLOAD_DESCRIPTION = (
    "Adds codes to the pool, creating the pool (201) if it does not exist. Send a text file"
    " as the multipart part `file` (one code per line; blank lines skipped) or a JSON body"
    ' `{"codes": [...]}`. Surrounding white space is trimmed; a code is 1 to 255 printable'
    " characters. Invalid codes are rejected one by one (`rejections` names the first 1,000 by"
    " line number or list index, never the code) and the valid ones are added; a code the pool"
    " already has, or given twice, counts as a duplicate and is not added again."
)


class CouponPoolController(Controller):
    path = "/v1/coupon-pools"
    tags = ["coupon pools"]  # noqa: RUF012

    @put(
        "/{pool_id:str}",
        status_code=200,
        summary="Create (201) or rename (200) a coupon pool",
        responses={
            **problems(400),
            201: ResponseSpec(data_container=CouponPool, description="The pool was created"),
        },
    )
    async def upsert(
        self, pool_id: PoolIdParam, data: JSONBody[CouponPoolFields], pool: Injected[Pool]
    ) -> Response[CouponPool]:
        name = None if data.name is None else data.name.strip()
        async with pool.acquire() as conn, conn.transaction():
            created = await coupon_pools.create(conn, pool_id, name)
            figures = await coupon_pools.get(conn, pool_id)
        assert figures is not None
        return Response(figures, status_code=201 if created else 200)

    @post(
        "/{pool_id:str}/codes",
        status_code=200,
        summary="Add codes to a coupon pool (200), creating it (201) if absent",
        description=_UPLOAD_DESCRIPTION,
        responses={
            **problems(400, 415),
            201: ResponseSpec(data_container=CouponUpload, description="The pool was created"),
        },
        request_max_body_size=MAX_BODY_BYTES,
        opt=body_checks.STREAMED,
        operation_class=_UploadOperation,
    )
    async def add_codes(
        self, pool_id: PoolIdParam, request: Request[Any, Any, Any], pool: Injected[Pool]
    ) -> Response[CouponUpload]:
        return await _upload(request, pool, pool_id)

    @get(
        "/{pool_id:str}",
        summary="A coupon pool: codes in all, held and left",
        responses=problems(404),
    )
    async def read(self, pool_id: PoolIdParam, pool: Injected[Pool]) -> CouponPool:
        async with pool.acquire() as conn:
            figures = await coupon_pools.get(conn, pool_id)
        return found(figures, _no_pool(pool_id))

    @get("/", summary="Every coupon pool with its figures")
    async def list_pools(self, pool: Injected[Pool]) -> CouponPoolList:
        async with pool.acquire() as conn:
            return CouponPoolList(await coupon_pools.list_all(conn))
