"""SendGrid's Templates API (`/v3/templates` and their versions) over the router's stored
templates, so an application that manages its dynamic templates through SendGrid's API only
changes its host; Mail Send with a `template_id` renders them (router/ingress/sendgrid.py).

A version may carry `line_messages` (the router's own field): LINE message objects whose
string values are Handlebars, sent to LINE friends instead of text derived from the email.
Errors use SendGrid's `{"errors": [...]}`.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from uuid import UUID, uuid4

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from router.api.compat_sendgrid import EXCEPTION_HANDLERS, sendgrid_error
from router.api.dependencies import Injected
from router.api.openapi import sendgrid_problems
from router.database import Pool
from router.ingress.sendgrid import SendGridError
from router.ingress.sendgrid_templates import version_problems
from router.store import email_templates
from router.store.email_templates import Editor, Generation, Template, Version

MAX_PAGE = 200
MAX_NAME = 100
MAX_SUBJECT = 255
MAX_CONTENT = 1_048_576  # SendGrid's limit on html_content and plain_content
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # SendGrid's updated_at, in UTC

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Subject = Annotated[str, msgspec.Meta(max_length=MAX_SUBJECT)]
Body = Annotated[str, msgspec.Meta(max_length=MAX_CONTENT)]
ActiveFlag = Literal[0, 1]
LineMessages = Annotated[
    list[dict[str, Any]],
    msgspec.Meta(
        max_length=5,
        description="The router's own: 1 to 5 LINE message objects (text, flex, ...) whose"
        " string values are Handlebars over the same dynamic_template_data; rendered and"
        " checked against LINE's limits at send time",
    ),
]
TemplateIdParam = Annotated[
    str, PathParameter(min_length=1, max_length=64, description="The template's id")
]
VersionIdParam = Annotated[
    str, PathParameter(min_length=1, max_length=64, description="The version's id (a UUID)")
]


class NewTemplate(msgspec.Struct, kw_only=True):
    name: Name
    generation: Generation = "legacy"


class TemplateChange(msgspec.Struct, kw_only=True):
    name: Name


class NewVersion(msgspec.Struct, kw_only=True):
    """SendGrid's version body; `template_id` in it is ignored (the path names the template)."""

    name: Name
    subject: Subject
    template_id: str | None = None
    active: ActiveFlag = 0
    html_content: Body = ""
    plain_content: Body = ""
    generate_plain_content: bool = True
    editor: Editor = "code"
    test_data: Body | None = None
    line_messages: LineMessages | None = None


class VersionChange(msgspec.Struct, kw_only=True):
    """The fields to change; the others keep their values."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    subject: Subject | msgspec.UnsetType = msgspec.UNSET
    active: ActiveFlag | msgspec.UnsetType = msgspec.UNSET
    html_content: Body | msgspec.UnsetType = msgspec.UNSET
    plain_content: Body | msgspec.UnsetType = msgspec.UNSET
    generate_plain_content: bool | msgspec.UnsetType = msgspec.UNSET
    editor: Editor | msgspec.UnsetType = msgspec.UNSET
    test_data: Body | msgspec.UnsetType | None = msgspec.UNSET
    line_messages: LineMessages | msgspec.UnsetType | None = msgspec.UNSET


class VersionOut(msgspec.Struct, kw_only=True):
    id: str
    template_id: str
    active: ActiveFlag
    name: str
    subject: str
    html_content: str
    plain_content: str
    generate_plain_content: bool
    editor: Editor
    test_data: str | None
    line_messages: list[dict[str, Any]] | None
    updated_at: str


class TemplateOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    generation: Generation
    updated_at: str
    versions: list[VersionOut]


class PageLinks(msgspec.Struct, kw_only=True, omit_defaults=True):
    self: str
    count: int
    next: str | None = None


class TemplatePage(msgspec.Struct, kw_only=True):
    result: list[TemplateOut]
    metadata: PageLinks = msgspec.field(name="_metadata")


class Refused(Exception):
    """An answer in SendGrid's error shape: bad fields (400) or nothing found (404)."""

    def __init__(self, status: int, errors: list[SendGridError]) -> None:
        super().__init__(errors[0].message)
        self.status = status
        self.errors = errors


def _refused(_: object, exc: Refused) -> Response[bytes]:
    return sendgrid_error(exc.status, exc.errors)


def _template_gone(_: object, exc: email_templates.TemplateMissing) -> Response[bytes]:
    return _refused(_, _template_not_found())


def _time(moment: datetime | None) -> str:
    return moment.strftime(TIME_FORMAT) if moment is not None else ""


def version_out(v: Version) -> VersionOut:
    return VersionOut(
        id=str(v.id),
        template_id=v.template_id,
        active=1 if v.active else 0,
        name=v.name,
        subject=v.subject,
        html_content=v.html_content,
        plain_content=v.plain_content,
        generate_plain_content=v.generate_plain_content,
        editor=v.editor,
        test_data=v.test_data,
        line_messages=v.line_messages,
        updated_at=_time(v.updated_at),
    )


def template_out(t: Template) -> TemplateOut:
    return TemplateOut(
        id=t.id,
        name=t.name,
        generation=t.generation,
        updated_at=_time(t.updated_at),
        versions=[version_out(v) for v in t.versions],
    )


def new_template_id(generation: Generation) -> str:
    """As SendGrid makes them: `d-` and 32 hex digits for dynamic templates, a UUID else."""
    return f"d-{uuid4().hex}" if generation == "dynamic" else str(uuid4())


def _template_not_found() -> Refused:
    return Refused(404, [SendGridError(message="Template not found", field="template_id")])


def _version_not_found() -> Refused:
    return Refused(404, [SendGridError(message="Version not found", field="version_id")])


def _version_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise _version_not_found() from None


def _checked(version: Version) -> Version:
    problems = version_problems(version)
    if problems:
        raise Refused(400, [SendGridError(message=p.message, field=p.field) for p in problems])
    return version


_GENERATIONS = r"^(legacy|dynamic)(,(legacy|dynamic))?$"


def _after(token: str | None) -> tuple[datetime, str] | None:
    """The page token: where the previous page ended (creation time and id)."""
    if token is None:
        return None
    try:
        created, _, template_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return datetime.fromisoformat(created), template_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Refused(
            400,
            [SendGridError(message="page_token is not a token this API gave", field="page_token")],
        ) from None


def _token(t: Template) -> str:
    assert t.created_at is not None
    return base64.urlsafe_b64encode(f"{t.created_at.isoformat()}|{t.id}".encode()).decode()


class SendGridTemplateController(Controller):
    path = "/v3/templates"
    tags = ["compatibility"]  # noqa: RUF012
    exception_handlers = {  # noqa: RUF012
        **EXCEPTION_HANDLERS,
        Refused: _refused,
        email_templates.TemplateMissing: _template_gone,
    }

    @post("", status_code=201, summary="SendGrid: create a template (no versions yet)")
    async def create(self, data: JSONBody[NewTemplate], pool: Injected[Pool]) -> TemplateOut:
        template = Template(
            id=new_template_id(data.generation), name=data.name, generation=data.generation
        )
        async with pool.acquire() as conn:
            return template_out(await email_templates.create(conn, template))

    @get(
        "",
        summary="SendGrid: templates of the given generations, a page at a time",
        responses=sendgrid_problems(400),
    )
    async def listing(
        self,
        request: Request[Any, Any, Any],
        pool: Injected[Pool],
        page_size: Annotated[
            int, QueryParameter(ge=1, le=MAX_PAGE, description="Templates per page")
        ],
        generations: Annotated[
            str,
            QueryParameter(pattern=_GENERATIONS, description="legacy, dynamic or legacy,dynamic"),
        ] = "legacy",
        page_token: Annotated[
            str | None,
            QueryParameter(max_length=500, description="`_metadata.next`'s token: the next page"),
        ] = None,
    ) -> TemplatePage:
        if re.fullmatch(_GENERATIONS, generations) is None:
            message = "generations is legacy, dynamic or legacy,dynamic"
            raise Refused(400, [SendGridError(message=message, field="generations")])
        kinds: list[Generation] = [g for g in ("legacy", "dynamic") if g in generations]
        async with pool.acquire() as conn:
            found, total = await email_templates.page(conn, kinds, page_size, _after(page_token))
        base = str(request.url.with_replacements(query=""))
        query = {"page_size": page_size, "generations": generations}
        own = {**query, "page_token": page_token} if page_token else query
        links = PageLinks(self=f"{base}?{urlencode(own)}", count=total)
        if len(found) == page_size:
            links.next = f"{base}?{urlencode({**query, 'page_token': _token(found[-1])})}"
        return TemplatePage(result=[template_out(t) for t in found], metadata=links)

    @get(
        "/{template_id:str}",
        summary="SendGrid: one template with its versions",
        responses=sendgrid_problems(404),
    )
    async def read(self, template_id: TemplateIdParam, pool: Injected[Pool]) -> TemplateOut:
        async with pool.acquire() as conn:
            found = await email_templates.get(conn, template_id)
        if found is None:
            raise _template_not_found()
        return template_out(found)

    @patch(
        "/{template_id:str}",
        summary="SendGrid: rename a template",
        responses=sendgrid_problems(404),
    )
    async def rename(
        self, template_id: TemplateIdParam, data: JSONBody[TemplateChange], pool: Injected[Pool]
    ) -> TemplateOut:
        async with pool.acquire() as conn:
            if not await email_templates.rename(conn, template_id, data.name):
                raise _template_not_found()
            found = await email_templates.get(conn, template_id)
        if found is None:
            raise _template_not_found()
        return template_out(found)

    @delete(
        "/{template_id:str}",
        summary="SendGrid: delete a template and its versions",
        responses=sendgrid_problems(404),
    )
    async def remove(self, template_id: TemplateIdParam, pool: Injected[Pool]) -> None:
        async with pool.acquire() as conn:
            if not await email_templates.delete(conn, template_id):
                raise _template_not_found()

    @post(
        "/{template_id:str}/versions",
        status_code=201,
        summary="SendGrid: add a version (active: 1 makes it the one sends use)",
        responses=sendgrid_problems(404),
    )
    async def add_version(
        self, template_id: TemplateIdParam, data: JSONBody[NewVersion], pool: Injected[Pool]
    ) -> VersionOut:
        version = _checked(
            Version(
                id=uuid4(),
                template_id=template_id,
                name=data.name,
                subject=data.subject,
                html_content=data.html_content,
                plain_content=data.plain_content,
                active=data.active == 1,
                generate_plain_content=data.generate_plain_content,
                editor=data.editor,
                test_data=data.test_data,
                line_messages=data.line_messages,
            )
        )
        async with pool.acquire() as conn:
            return version_out(await email_templates.save_version(conn, version))

    @get(
        "/{template_id:str}/versions/{version_id:str}",
        summary="SendGrid: one version",
        responses=sendgrid_problems(404),
    )
    async def read_version(
        self, template_id: TemplateIdParam, version_id: VersionIdParam, pool: Injected[Pool]
    ) -> VersionOut:
        async with pool.acquire() as conn:
            found = await email_templates.get_version(conn, template_id, _version_id(version_id))
        if found is None:
            raise _version_not_found()
        return version_out(found)

    @patch(
        "/{template_id:str}/versions/{version_id:str}",
        summary="SendGrid: change a version's fields",
        responses=sendgrid_problems(404),
    )
    async def change_version(
        self,
        template_id: TemplateIdParam,
        version_id: VersionIdParam,
        data: JSONBody[VersionChange],
        pool: Injected[Pool],
    ) -> VersionOut:
        async with pool.acquire() as conn:
            found = await email_templates.get_version(conn, template_id, _version_id(version_id))
            if found is None:
                raise _version_not_found()
            changes = {
                field: getattr(data, field)
                for field in data.__struct_fields__
                if getattr(data, field) is not msgspec.UNSET
            }
            if "active" in changes:
                changes["active"] = changes["active"] == 1
            version = _checked(msgspec.structs.replace(found, **changes))
            return version_out(await email_templates.save_version(conn, version))

    @delete(
        "/{template_id:str}/versions/{version_id:str}",
        summary="SendGrid: delete a version",
        responses=sendgrid_problems(404),
    )
    async def remove_version(
        self, template_id: TemplateIdParam, version_id: VersionIdParam, pool: Injected[Pool]
    ) -> None:
        async with pool.acquire() as conn:
            if not await email_templates.delete_version(conn, template_id, _version_id(version_id)):
                raise _version_not_found()

    @post(
        "/{template_id:str}/versions/{version_id:str}/activate",
        status_code=200,
        summary="SendGrid: make this the version sends use",
        responses=sendgrid_problems(404),
    )
    async def activate(
        self, template_id: TemplateIdParam, version_id: VersionIdParam, pool: Injected[Pool]
    ) -> VersionOut:
        async with pool.acquire() as conn:
            found = await email_templates.get_version(conn, template_id, _version_id(version_id))
            if found is None:
                raise _version_not_found()
            active = msgspec.structs.replace(found, active=True)
            return version_out(await email_templates.save_version(conn, active))
