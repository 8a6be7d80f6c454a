"""The dashboard's audiences: the lists with their sizes and who they reach, a new empty
audience, and a file upload with progress and its per-line report.

The upload goes through `router.api.audiences.upload`, the code behind the API's upload, so the
dashboard accepts the same files, within the same limits, and reports them the same way; the
body is streamed, never read whole. A browser with JavaScript sends it with
`static/audience-upload.js` (progress bar, the token in the header) and gets the report as an
HTML fragment; without JavaScript the plain form posts and the whole page comes back.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, PathParameter, QueryParameter
from litestar.response import Redirect

from router import audiences
from router.api.audiences import MAX_BODY_BYTES, upload
from router.audiences import MAX_FILE_BYTES, MAX_LINES, AudienceReport
from router.database import Connection
from router.problems import FieldError, ProblemError
from router.ui.pages import STREAMED_FORM, Dashboard, streamed_csrf_check

AudienceIdParam = Annotated[uuid.UUID, PathParameter()]
PAGE_SIZE: Final = 50
RECENT_CAMPAIGNS: Final = 100
"""Campaigns read to find the exclusion lists in use (newest first, by primary key)."""


class AudienceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One audience in the list: its stored upload totals (reach is loaded per row)."""

    id: uuid.UUID
    name: str
    type: str
    lines: int
    valid: int
    invalid: int
    duplicates: int
    excluded: bool  # named in `exclude_audience_ids` of a recent campaign


class NewAudience(msgspec.Struct):
    name: str = ""
    type: str = ""


_COLUMNS = "id, name, type, lines, valid, invalid, duplicates"


def _dashboard(request: Request[Any, Any, Any]) -> Dashboard:
    dashboard: Dashboard = request.app.state["dashboard"]
    return dashboard


async def _exclusion_ids(conn: Connection) -> set[uuid.UUID]:
    """Audiences the latest campaigns exclude (campaigns_pkey, newest first, bounded)."""
    rows = await conn.fetch(
        "SELECT DISTINCT unnest(exclude_audience_ids) AS id FROM"
        " (SELECT exclude_audience_ids FROM campaigns ORDER BY id DESC LIMIT $1) recent",
        RECENT_CAMPAIGNS,
    )
    return {row["id"] for row in rows}


def _row(record: Any, excluded: set[uuid.UUID]) -> AudienceRow:
    return AudienceRow(
        id=record["id"],
        name=record["name"],
        type=record["type"],
        lines=record["lines"],
        valid=record["valid"],
        invalid=record["invalid"],
        duplicates=record["duplicates"],
        excluded=record["id"] in excluded,
    )


@get("/audiences", name="ui-audiences")
async def audience_list(
    request: Request[Any, Any, Any],
    before: Annotated[uuid.UUID | None, QueryParameter()] = None,
) -> Response[str]:
    """Newest first, a page at a time (keyset on audiences_pkey: ids are time-ordered)."""
    dashboard = _dashboard(request)
    async with dashboard.runtime.pool.acquire() as conn:
        excluded = await _exclusion_ids(conn)
        records = await conn.fetch(
            f"SELECT {_COLUMNS} FROM audiences"  # noqa: S608 - constant columns
            " WHERE $1::uuid IS NULL OR id < $1 ORDER BY id DESC LIMIT $2",
            before,
            PAGE_SIZE + 1,
        )
        exclusions = await conn.fetch(
            f"SELECT {_COLUMNS} FROM audiences WHERE id = ANY($1::uuid[]) ORDER BY id DESC",  # noqa: S608
            list(excluded),
        )
    rows = [_row(r, excluded) for r in records[:PAGE_SIZE]]
    return dashboard.page(
        request,
        "ui/audiences.html",
        active="audiences",
        audiences=rows,
        exclusions=[_row(r, excluded) for r in exclusions],
        next_before=rows[-1].id if len(records) > PAGE_SIZE else None,
        types=audiences.AUDIENCE_TYPES,
        error=None,
        name="",
    )


@post("/audiences", name="ui-audience-create")
async def audience_create(
    request: Request[Any, Any, Any],
    data: Annotated[NewAudience, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """An empty audience, to upload files into; a bad name or type shows the form again."""
    dashboard = _dashboard(request)
    kind = audiences.check_type(data.type)
    errors = [e for e in (audiences.check_name(data.name), kind) if isinstance(e, FieldError)]
    if errors or isinstance(kind, FieldError):
        return dashboard.page(
            request,
            "ui/audiences.html",
            active="audiences",
            status_code=422,
            audiences=[],
            exclusions=[],
            next_before=None,
            types=audiences.AUDIENCE_TYPES,
            error="; ".join(f"{e.field}: {e.message}" for e in errors),
            name=data.name,
        )
    async with dashboard.runtime.pool.acquire() as conn:
        audience_id = await audiences.create(conn, data.name.strip(), kind)
    return Redirect(f"/ui/audiences/{audience_id}", status_code=303)


async def _report(dashboard: Dashboard, audience_id: uuid.UUID) -> AudienceReport:
    async with dashboard.runtime.pool.acquire() as conn:
        report = await audiences.report(conn, audience_id)
    if report is None:
        raise ProblemError(404, "Not found", f"no audience with id {audience_id}")
    return report


def _audience_page(
    request: Request[Any, Any, Any],
    report: AudienceReport,
    *,
    uploaded: bool = False,
    problem: ProblemError | None = None,
) -> Response[str]:
    return _dashboard(request).page(
        request,
        "ui/audience.html",
        active="audiences",
        status_code=problem.problem.status if problem is not None else 200,
        audience=report,
        uploaded=uploaded,
        problem=problem.problem if problem is not None else None,
        max_file_bytes=MAX_FILE_BYTES,
        max_lines=MAX_LINES,
    )


@get("/audiences/{audience_id:uuid}", name="ui-audience")
async def audience_page(
    request: Request[Any, Any, Any], audience_id: AudienceIdParam
) -> Response[str]:
    """The audience as `GET /v1/audiences/{id}` reports it, and the upload form."""
    return _audience_page(request, await _report(_dashboard(request), audience_id))


@get("/audiences/{audience_id:uuid}/reach", name="ui-audience-reach")
async def audience_reach(
    request: Request[Any, Any, Any], audience_id: AudienceIdParam
) -> Response[str]:
    """A list row's matched and reachable counts, loaded after the list (htmx): the match is
    a join over the audience's entries (audience_entries_pkey) and the members' hash indexes,
    so the list itself stays quick."""
    dashboard = _dashboard(request)
    report = await _report(dashboard, audience_id)
    return dashboard.fragment(request, "ui/audience_reach.html", audience=report)


@post(
    "/audiences/{audience_id:uuid}/uploads",
    name="ui-audience-upload",
    status_code=200,
    request_max_body_size=MAX_BODY_BYTES,
    opt=STREAMED_FORM,
)
async def audience_upload(
    request: Request[Any, Any, Any], audience_id: AudienceIdParam
) -> Response[Any]:
    """Add a file, streamed through the API's upload code. Answers as asked: JSON (the API's
    report), an HTML fragment for the page's script, or the whole page for a plain form."""
    dashboard = _dashboard(request)
    region = dashboard.runtime.config.members.default_region
    wants_json = "application/json" in request.headers.get("accept", "")
    fragment = bool(request.headers.get("hx-request"))
    try:
        report = await upload(
            request,
            dashboard.runtime.pool,
            region,
            audience_id,
            check_fields=streamed_csrf_check(request),
        )
    except ProblemError as problem:
        if wants_json or problem.problem.status == 404:
            raise
        if fragment:
            return _upload_report(request, None, problem)
        return _audience_page(request, await _report(dashboard, audience_id), problem=problem)
    if wants_json:
        return Response(report, media_type="application/json")
    if fragment:
        return _upload_report(request, report, None)
    return _audience_page(request, report, uploaded=True)


def _upload_report(
    request: Request[Any, Any, Any], report: AudienceReport | None, problem: ProblemError | None
) -> Response[str]:
    response = _dashboard(request).fragment(
        request,
        "ui/audience_report.html",
        audience=report,
        problem=problem.problem if problem is not None else None,
        uploaded=True,
    )
    if problem is not None:
        response.status_code = problem.problem.status
    return response
