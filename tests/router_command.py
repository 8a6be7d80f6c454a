"""`python -m router ARGS` as a subprocess, the way a user runs the command."""

from __future__ import annotations

import asyncio
import sys
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
