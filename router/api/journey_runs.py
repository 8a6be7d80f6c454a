"""HTTP routes reporting journeys' runs: thin wrappers over `router.journeys.progress`."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import PathParameter

from router.api.dependencies import Injected
from router.api.errors import found
from router.api.members import MemberIdParam
from router.api.openapi import problems
from router.database import Pool
from router.journeys import progress
from router.journeys.progress import JourneyProgress, RunView

JourneyIdParam = Annotated[
    str, PathParameter(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="The journey's id")
]


class JourneyRunsController(Controller):
    path = "/v1"
    tags = ["journeys"]  # noqa: RUF012

    @get(
        "/journeys/{journey_id:str}/progress",
        summary="A journey's figures: entered, active, per step, exited by goal, conversion",
        responses=problems(404),
    )
    async def journey_progress(
        self, journey_id: JourneyIdParam, pool: Injected[Pool]
    ) -> JourneyProgress:
        async with pool.acquire() as conn:
            view = await progress.journey_progress(conn, journey_id)
        return found(view, f"no journey with id {journey_id!r}")

    @get(
        "/members/{member_id:str}/journeys",
        summary="A member's journey runs: where each is, its next step and when",
        responses=problems(404),
    )
    async def member_journeys(
        self, member_id: MemberIdParam, pool: Injected[Pool]
    ) -> list[RunView]:
        async with pool.acquire() as conn:
            runs = await progress.member_runs(conn, member_id)
        return found(runs, f"no member with id {member_id!r}")
