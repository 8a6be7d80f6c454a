"""The official SendGrid Node libraries (tests/node), run as an application runs them.

`npm ci` is run once per machine when tests/node/node_modules is missing, under a file lock so
the test processes do not install side by side. Node.js and npm are required: a test that
needs them fails rather than skips when they are absent.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).parent / "node"


def ensure_installed() -> None:
    if (NODE_DIR / "node_modules" / "@sendgrid" / "mail").is_dir():
        return
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed for the SendGrid Node client tests"
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (NODE_DIR / "node_modules" / "@sendgrid" / "mail").is_dir():
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                check=True,
                timeout=300,
            )


async def run(job: dict[str, Any]) -> dict[str, Any]:
    """One job of tests/node/run.js; its JSON answer (`ok`, `status`, `headers`, `body`)."""
    ensure_installed()
    node = shutil.which("node")
    assert node is not None, "node is needed for the SendGrid Node client tests"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "run.js"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(job).encode()), 60)
    assert proc.returncode == 0, err.decode()
    answer: dict[str, Any] = json.loads(out)
    return answer


async def send(base_url: str, api_key: str, message: dict[str, Any]) -> dict[str, Any]:
    """`@sendgrid/mail`'s send with the client pointed at `base_url`."""
    return await run({"op": "send", "base_url": base_url, "api_key": api_key, "message": message})


async def request(
    base_url: str,
    api_key: str,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`@sendgrid/client`'s request: any v3 endpoint."""
    job = {"op": "request", "base_url": base_url, "api_key": api_key, "method": method}
    job |= {"url": url, "body": body, "headers": headers or {}}
    return await run(job)


async def verify_signature(public_key: str, payload: str, signature: str, timestamp: str) -> bool:
    """`@sendgrid/eventwebhook`'s check of a signed event post."""
    job = {"op": "verify", "public_key": public_key, "payload": payload}
    answer = await run(job | {"signature": signature, "timestamp": timestamp})
    return bool(answer["ok"])
