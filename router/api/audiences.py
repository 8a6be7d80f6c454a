"""HTTP routes for audiences: a streamed multipart upload, reports, deletion, LINE ID export,
and the sync of an audience's LINE friends to a LINE audience.

The upload body is read with `multipart`'s push parser (already a Litestar dependency) straight
from the request stream, so a 20 MB file passes through in 64 KiB pieces and is never held.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation
from litestar.params import PathParameter
from litestar.response import Stream
from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    PushMultipartParser,
)

from channels.base import LineAccount
from router import audiences
from router.api import body_checks
from router.api.dependencies import Injected
from router.api.errors import found, not_found
from router.api.line import LineAccountQuery, account_operations
from router.api.openapi import problems
from router.audiences import MAX_FILE_BYTES, AudienceReport, AudienceType
from router.config import DEFAULT_LINE_ACCOUNT, LineConfig, MembersConfig
from router.database import Pool
from router.line import audience_sync as line_audience_sync
from router.line.audience_sync import LineAudienceSync
from router.problems import PROBLEM_MEDIA_TYPE, FieldError, Problem, ProblemError, invalid

# Room for the form envelope around the file: boundaries, part headers, name and type.
ENVELOPE_BYTES = 64 * 1024
MAX_BODY_BYTES = MAX_FILE_BYTES + ENVELOPE_BYTES
MAX_FIELD_BYTES = 1_024

AudienceIdParam = Annotated[uuid.UUID, PathParameter(description="The audience's id")]

_LINE_SYNC_DESCRIPTION = (
    "Uploads the LINE user IDs of the audience's members who are linked LINE friends and have"
    " not opted out (those of `line-user-ids.csv`) to LINE's Audience API, for narrowcasts."
    " The first sync creates the LINE audience and records its `line_audience_group_id`;"
    " later ones add to it (a new one is created if LINE no longer has it). LINE cannot"
    " remove IDs from an uploaded audience: members who left since an earlier sync stay in"
    " it until it is deleted at LINE and synced afresh. LINE takes 10,000 IDs a request and"
    " 60 requests a minute, so a large audience takes about a second per 10,000 IDs; the"
    " answer comes when all are uploaded. A sync that stopped (LINE refused, or the router"
    " stopped: after its three-minute lease) is resumed by the next one after the last IDs"
    " LINE accepted. The LINE audience is made in the audience's LINE account"
    " (`line_account`), of its members' user IDs there."
)


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_MEDIA_TYPE,
        generate_examples=False,
    )


_LINE_SYNC_RESPONSES = problems(404) | {
    409: _problem("LINE is not configured, or a sync of this audience is running"),
    422: _problem("No member of the audience is a linked LINE friend who has not opted out"),
    502: _problem("LINE refused or did not answer; `detail` has LINE's status and message"),
}


def _no_audience(audience_id: uuid.UUID) -> str:
    return f"no audience with id {audience_id}"


def _boundary(request: Request[Any, Any, Any]) -> str:
    media_type, options = request.content_type
    if media_type != "multipart/form-data" or not options.get("boundary"):
        raise ProblemError(
            415, "Unsupported media type", "send the file as multipart/form-data with a boundary"
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        detail = f"the file is larger than {MAX_FILE_BYTES:,} bytes (20 MB)"
        raise ProblemError(413, "Request body too large", detail, [FieldError("file", detail)])
    return options["boundary"]


async def _events(
    request: Request[Any, Any, Any], boundary: str
) -> AsyncIterator[MultipartSegment | bytes | None]:
    """Parser events as the body arrives: a segment, its body pieces, None at its end."""
    try:
        parser = PushMultipartParser(boundary, max_segment_count=16)
        async for chunk in request.stream():
            for event in parser.parse(chunk):
                yield event
        parser.close()
    except ParserError as exc:
        raise ProblemError(
            400, "Invalid request", f"the body is not valid multipart/form-data ({exc})"
        ) from None


async def _file(events: AsyncIterator[MultipartSegment | bytes | None]) -> AsyncIterator[bytes]:
    async for event in events:
        if event is None:
            return
        assert isinstance(event, bytes)
        yield event


async def _fields_before_file(
    events: AsyncIterator[MultipartSegment | bytes | None],
) -> dict[str, str]:
    """Read the text fields up to the `file` part (they must come first: the file is
    processed as it arrives, which needs its type)."""
    fields: dict[str, str] = {}
    name: str | None = None
    value = b""
    async for event in events:
        if isinstance(event, MultipartSegment):
            if event.name == "file":
                return fields
            name, value = event.name, b""
        elif isinstance(event, bytes):
            value += event
            if len(value) > MAX_FIELD_BYTES:
                raise invalid([FieldError(str(name), f"at most {MAX_FIELD_BYTES} bytes")])
        elif name is not None:
            try:
                fields[name] = value.decode()
            except UnicodeDecodeError:
                raise invalid([FieldError(name, "not UTF-8 text")]) from None
    raise invalid([FieldError("file", "missing: send the file as the part named file")])


def _line_account_field(given: str | None, accounts: Collection[str]) -> str | FieldError:
    """The `line_account` form field of a new audience: a configured LINE account."""
    if given is None or given == DEFAULT_LINE_ACCOUNT:
        return DEFAULT_LINE_ACCOUNT
    if given not in accounts:
        known = ", ".join(sorted({DEFAULT_LINE_ACCOUNT, *accounts}))
        return FieldError(
            "line_account", f"no LINE account named {given!r} is configured (known: {known})"
        )
    return given


async def upload(
    request: Request[Any, Any, Any],
    pool: Pool,
    region: str,
    audience_id: uuid.UUID | None,
    check_fields: Callable[[dict[str, str]], None] | None = None,
    line_accounts: Collection[str] = (),
) -> AudienceReport:
    """Stream the multipart file into a new audience (`audience_id` None) or an existing one.

    `check_fields` sees the text fields that came before the file and may refuse the upload
    (the dashboard checks its CSRF field there) before any of the file is read.
    `line_accounts`: the configured LINE accounts, which a new audience's `line_account`
    may name and whose LINE reach the report counts."""
    events = _events(request, _boundary(request))
    fields = await _fields_before_file(events)
    if check_fields is not None:
        check_fields(fields)
    errors: list[FieldError] = []
    kind: AudienceType | FieldError | None = None
    account = _line_account_field(fields.get("line_account"), line_accounts)
    if isinstance(account, FieldError):
        errors.append(account)
    if audience_id is None:
        if name_error := audiences.check_name(fields.get("name")):
            errors.append(name_error)
        kind = audiences.check_type(fields.get("type"))
        if isinstance(kind, FieldError):
            errors.append(kind)
    if errors:
        raise invalid(errors)
    assert not isinstance(account, FieldError)
    async with pool.acquire() as conn, conn.transaction():
        if audience_id is None:
            assert kind is not None and not isinstance(kind, FieldError)
            audience_id = await audiences.create(conn, fields["name"].strip(), kind, account)
        else:
            kind = await audiences.lock(conn, audience_id)
            if kind is None:
                raise not_found(_no_audience(audience_id))
            given = fields.get("type")
            if given is not None and given != kind:
                detail = f"this audience's type is {kind}"
                raise ProblemError(409, "Conflict", detail, [FieldError("type", detail)])
            own = await audiences.line_account_of(conn, audience_id)
            if "line_account" in fields and fields["line_account"] != own:
                detail = f"this audience's LINE account is {own}"
                raise ProblemError(409, "Conflict", detail, [FieldError("line_account", detail)])
        counts = await audiences.ingest(conn, audience_id, kind, region, _file(events))
        async for event in events:  # anything after the file (checks the body is complete)
            if isinstance(event, MultipartSegment):
                raise invalid(
                    [
                        FieldError(
                            str(event.name),
                            "parts after the file are not read: send name and type before file",
                        )
                    ]
                )
        await audiences.record(conn, audience_id, counts)
        report = await audiences.report(conn, audience_id, list(line_accounts))
    assert report is not None
    return report


def _upload_operation(*, new: bool) -> type[Operation]:
    """The request body Litestar cannot infer: the route reads the form as a stream. A new
    audience needs its name and type; a later upload may repeat the type."""

    @dataclass
    class UploadOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            schema = super().to_schema()
            schema["requestBody"] = {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["name", "type", "file"] if new else ["file"],
                            "properties": {
                                **(
                                    {
                                        "name": {
                                            "type": "string",
                                            "maxLength": audiences.MAX_NAME,
                                            "pattern": audiences.NAME_PATTERN,
                                        }
                                    }
                                    if new
                                    else {}
                                ),
                                "type": {
                                    "type": "string",
                                    "enum": list(audiences.AUDIENCE_TYPES),
                                    "description": "" if new else "The audience's own (409 if not)",
                                },
                                "line_account": {
                                    "type": "string",
                                    "maxLength": 32,
                                    "description": (
                                        'A configured LINE account (default "default"): whose'
                                        " user IDs a line_user_id file holds, where LINE reach"
                                        " is counted and line-sync uploads"
                                        if new
                                        else "The audience's own (409 if not)"
                                    ),
                                },
                                "file": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": "CSV or TXT, one value per line, no header; "
                                    "at most 20 MB and 1,500,000 lines; after name and type",
                                },
                            },
                        },
                        "encoding": {"file": {"contentType": "application/octet-stream"}},
                    }
                },
            }
            return schema

    return UploadOperation


class AudienceController(Controller):
    path = "/v1/audiences"
    tags = ["audiences"]  # noqa: RUF012

    @post(
        "/",
        status_code=201,
        summary="Create an audience from a file of emails, phone numbers or LINE user IDs",
        description="Fields name, type and line_account come before file. Only SHA-256 values"
        " are kept.",
        responses=problems(400, 415),
        request_max_body_size=MAX_BODY_BYTES,
        opt=body_checks.STREAMED,
        operation_class=_upload_operation(new=True),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        pool: Injected[Pool],
        members_config: Injected[MembersConfig],
        line_configs: Injected[Mapping[str, LineConfig]],
    ) -> AudienceReport:
        region = members_config.default_region
        return await upload(request, pool, region, None, line_accounts=list(line_configs))

    @post(
        "/{audience_id:uuid}/uploads",
        status_code=200,
        summary="Add a file to an audience",
        responses=problems(400, 404, 409, 415),
        request_max_body_size=MAX_BODY_BYTES,
        opt=body_checks.STREAMED,
        operation_class=_upload_operation(new=False),
    )
    async def add(
        self,
        audience_id: AudienceIdParam,
        request: Request[Any, Any, Any],
        pool: Injected[Pool],
        members_config: Injected[MembersConfig],
        line_configs: Injected[Mapping[str, LineConfig]],
    ) -> AudienceReport:
        region = members_config.default_region
        return await upload(request, pool, region, audience_id, line_accounts=list(line_configs))

    @get("/{audience_id:uuid}", summary="An audience and who it reaches", responses=problems(404))
    async def read(
        self,
        audience_id: AudienceIdParam,
        pool: Injected[Pool],
        line_configs: Injected[Mapping[str, LineConfig]],
    ) -> AudienceReport:
        async with pool.acquire() as conn:
            report = await audiences.report(conn, audience_id, list(line_configs))
        return found(report, _no_audience(audience_id))

    @delete("/{audience_id:uuid}", summary="Delete an audience", responses=problems(404))
    async def remove(self, audience_id: AudienceIdParam, pool: Injected[Pool]) -> None:
        async with pool.acquire() as conn:
            if not await audiences.delete(conn, audience_id):
                raise not_found(_no_audience(audience_id))

    @get(
        "/{audience_id:uuid}/line-user-ids.csv",
        summary="LINE user IDs of the matched members who are friends, one per line",
        description="Their IDs under `line_account` (default: the audience's own account).",
        media_type="text/csv",
        responses=problems(400, 404),
    )
    async def export(
        self,
        audience_id: AudienceIdParam,
        pool: Injected[Pool],
        line_configs: Injected[Mapping[str, LineConfig]],
        account: LineAccountQuery = None,
    ) -> Stream:
        if account is not None:
            known = _line_account_field(account, list(line_configs))
            if isinstance(known, FieldError):
                raise invalid([known])
        async with pool.acquire() as conn:
            exists = await audiences.line_account_of(conn, audience_id)
        if exists is None:
            raise not_found(_no_audience(audience_id))

        async def lines() -> AsyncIterator[bytes]:
            async with pool.acquire() as conn, conn.transaction():
                async for batch in audiences.line_user_ids(conn, audience_id, account=account):
                    yield ("\n".join(batch) + "\n").encode()

        return Stream(lines(), media_type="text/csv")

    @post(
        "/{audience_id:uuid}/line-sync",
        status_code=200,
        summary="Create or update the LINE audience of this audience's reachable LINE friends",
        description=_LINE_SYNC_DESCRIPTION,
        responses=_LINE_SYNC_RESPONSES,
    )
    async def line_sync(
        self,
        audience_id: AudienceIdParam,
        pool: Injected[Pool],
        line_accounts: Injected[Mapping[str, LineAccount]],
    ) -> LineAudienceSync:
        async with pool.acquire() as conn:
            own = await audiences.line_account_of(conn, audience_id)
        if own is None:
            raise not_found(_no_audience(audience_id))
        if own != DEFAULT_LINE_ACCOUNT and own not in line_accounts:
            raise ProblemError(
                409, "Conflict", f"the audience's LINE account {own!r} is not configured"
            )
        return await line_audience_sync.sync(
            pool, account_operations(own, line_accounts), audience_id
        )
