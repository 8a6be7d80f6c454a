"""HTTP routes for journey definitions: thin wrappers over `router.store.journeys`, with
every definition checked by `router.journeys.validation` before it is stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import Response

from router.api.dependencies import Injected
from router.api.errors import found, not_found
from router.api.openapi import problems
from router.database import Pool
from router.journeys.definition import Journey
from router.journeys.validation import validate
from router.problems import invalid
from router.store import coupon_pools, journey_runs
from router.store import journeys as stored

JOURNEY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
JourneyIdParam = Annotated[
    str,
    PathParameter(
        pattern=JOURNEY_ID_PATTERN,
        max_length=64,
        description="The journey's id: 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter"
        " or digit (a file's journey has its file name's stem)",
    ),
]
VersionParam = Annotated[
    int | None,
    QueryParameter(ge=1, description="A version to read instead of the current one"),
]
API_SOURCE = "api"


class JourneyView(msgspec.Struct, kw_only=True):
    id: str
    version: int  # the version new runs enter
    source: str  # "api", or the file it was loaded from
    enabled: bool
    paused: bool
    deleted: bool
    definition: Journey
    created_at: datetime
    updated_at: datetime


class JourneyList(msgspec.Struct):
    journeys: list[JourneyView]


def view(journey: stored.StoredJourney) -> JourneyView:
    return JourneyView(
        id=journey.id,
        version=journey.version,
        source=journey.source,
        enabled=journey.definition.enabled,
        paused=journey.paused,
        deleted=journey.deleted_at is not None,
        definition=journey.definition,
        created_at=journey.created_at,
        updated_at=journey.updated_at,
    )


def _missing(journey_id: str) -> str:
    return f"no journey with id {journey_id!r}"


class JourneyController(Controller):
    path = "/v1/journeys"
    tags = ["journeys"]  # noqa: RUF012

    @put(
        "/{journey_id:str}",
        status_code=200,
        summary="Create (201) or change (200) a journey: a changed definition is a new version",
        description="Runs already under way keep the version they entered with. The same "
        "definition again keeps the version. A deleted journey is revived as a new version. "
        "Every rule the definition breaks is named in the problem's `errors` "
        "(e.g. `steps[1].send.email.text`).",
        responses={
            **problems(400),
            201: ResponseSpec(data_container=JourneyView, description="The journey was created"),
        },
    )
    async def save(
        self, journey_id: JourneyIdParam, data: JSONBody[Journey], pool: Injected[Pool]
    ) -> Response[JourneyView]:
        async with pool.acquire() as conn, conn.transaction():
            # An enabled journey's coupon pools must exist; a disabled one may name a pool
            # whose codes are not uploaded yet.
            known = await coupon_pools.pool_ids(conn) if data.enabled else None
            if errors := validate(data, known_pools=known):
                raise invalid(errors)
            saved = await stored.save(conn, journey_id, data, API_SOURCE)
            journey = await stored.read(conn, journey_id)
        assert journey is not None
        return Response(view(journey), status_code=201 if saved.created else 200)

    @get(
        "/{journey_id:str}",
        summary="A journey's definition (current, or `version`) and state",
        responses=problems(404),
    )
    async def read(
        self, journey_id: JourneyIdParam, pool: Injected[Pool], version: VersionParam = None
    ) -> JourneyView:
        async with pool.acquire() as conn:
            journey = await stored.read(conn, journey_id, version)
        if journey is None and version is not None:
            raise not_found(f"journey {journey_id!r} has no version {version}")
        return view(found(journey, _missing(journey_id)))

    @get("/", summary="Every journey not deleted, by id, with its current definition")
    async def list_all(self, pool: Injected[Pool]) -> JourneyList:
        async with pool.acquire() as conn:
            journeys = await stored.list_current(conn)
        return JourneyList([view(j) for j in journeys])

    @delete(
        "/{journey_id:str}",
        summary="Delete a journey: its runs end; a later PUT revives it as a new version",
        responses=problems(404),
    )
    async def remove(self, journey_id: JourneyIdParam, pool: Injected[Pool]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            if not await stored.delete(conn, journey_id):
                raise not_found(_missing(journey_id))
            await journey_runs.end_runs_of_deleted(conn, journey_id, datetime.now(UTC))

    @post(
        "/{journey_id:str}/pause",
        status_code=200,
        summary="No new runs and no steps fire until resumed; waiting runs keep their timers",
        responses=problems(404),
    )
    async def pause(self, journey_id: JourneyIdParam, pool: Injected[Pool]) -> JourneyView:
        return await _set_paused(pool, journey_id, True)

    @post(
        "/{journey_id:str}/resume",
        status_code=200,
        summary="Undo pause: runs go on and new ones start",
        responses=problems(404),
    )
    async def resume(self, journey_id: JourneyIdParam, pool: Injected[Pool]) -> JourneyView:
        return await _set_paused(pool, journey_id, False)


async def _set_paused(pool: Pool, journey_id: str, paused: bool) -> JourneyView:
    async with pool.acquire() as conn:
        journey = (
            await stored.read(conn, journey_id)
            if await stored.set_paused(conn, journey_id, paused)
            else None
        )
    return view(found(journey, _missing(journey_id)))
