"""`python -m router ARGS` as a subprocess, the way a user runs the command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def run_router_command(
    *args: str, env: dict[str, str], cwd: Path = ROOT, timeout: float = 30
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr; the process is killed if it outlives `timeout`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class ServingRouter:
    """A `router serve` process and what it has printed so far, line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output: list[str] = []

    def printed(self, prefix: str) -> str | None:
        """The rest of the first printed line that starts with `prefix`."""
        for line in self.output:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        return None


@contextlib.asynccontextmanager
async def serving_router(
    *args: str, env: dict[str, str], cwd: Path = ROOT
) -> AsyncIterator[ServingRouter]:
    """`python -m router serve ARGS` running until the block ends (then SIGTERM, then kill)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "serve",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    running = ServingRouter(proc)

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            running.output.append(line.decode(errors="replace").rstrip("\n"))

    reader = asyncio.create_task(read())
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await reader
