"""The `router` command as a real process: migrate, serve (output, API key, SIGTERM), bad config."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from tests.harness import _free_port
from tests.router_command import run_router_command
from tests.test_migrations import MIGRATION_NAMES, fresh_database

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
FAKE_PASSWORD = "pw-that-must-not-be-printed"


def router_env(**values: str) -> dict[str, str]:
    """The test process's environment without any ROUTER_ setting (nor DATABASE_URL, its
    fallback), plus `values`."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ROUTER_") and k != "DATABASE_URL"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(values)
    return env


def url_with_password(dsn: str) -> tuple[str, str | None]:
    """The DSN with a password in it, and that password (None if there is none to check).

    The embedded test server trusts local connections and ignores a password, so one is
    added where the DSN has an empty one; a DSN that carries its own password keeps it."""
    parts = urlsplit(dsn)
    if parts.password:
        return dsn, parts.password
    if parts.password == "" and parts.username:
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{parts.username}:{FAKE_PASSWORD}@{host}"
        return urlunsplit(parts._replace(netloc=netloc)), FAKE_PASSWORD
    return dsn, None


async def run_router(*args: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str, str]:
    return await run_router_command(*args, env=env, timeout=timeout)


# router migrate


async def test_migrate_on_a_migrated_database_applies_nothing(dsn: str) -> None:
    code, out, err = await run_router("migrate", env=router_env(ROUTER_DATABASE_URL=dsn))
    assert code == 0, out + err
    assert re.search(r"\bapplied 0 migration\(s\)\s*$", out), out


async def test_migrate_on_a_fresh_database_applies_every_migration_once(dsn: str) -> None:
    async with fresh_database(dsn) as url:
        env = router_env(ROUTER_DATABASE_URL=url)
        code, out, err = await run_router("migrate", env=env)
        assert code == 0, out + err
        assert f"applied {len(MIGRATION_NAMES)} migration(s)" in out
        for name in MIGRATION_NAMES:
            assert name in out
        code, out, err = await run_router("migrate", env=env)
        assert code == 0, out + err
        assert "applied 0 migration(s)" in out


async def test_migrate_does_not_print_the_database_password(dsn: str) -> None:
    url, password = url_with_password(dsn)
    code, out, err = await run_router("migrate", env=router_env(ROUTER_DATABASE_URL=url))
    assert code == 0, out + err
    assert "PostgreSQL at " in out
    if password is not None:
        assert password not in out + err
        assert "***" in out


# router serve


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    port: int
    stderr_path: Path
    lines: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def read_until(self, done: Callable[[str], bool], timeout: float) -> list[str]:
        """Read stdout line by line until `done(line)`; fail at the deadline or at EOF."""
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no expected line within {timeout}s: {self.lines}")
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except TimeoutError:
                raise AssertionError(
                    f"no expected line within {timeout}s: {self.lines}\n{self.stderr()}"
                ) from None
            if not raw:
                code = await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
                raise AssertionError(f"exited {code} early: {self.lines}\n{self.stderr()}")
            line = raw.decode().rstrip("\r\n")
            self.lines.append(line)
            if done(line):
                return list(self.lines)

    async def wait_until_serving(self, client: httpx.AsyncClient) -> None:
        """The banner is printed before uvicorn calls listen(): retry until it answers."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            try:
                r = await client.get(f"{self.base_url}/healthz")
            except httpx.TransportError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
                continue
            assert r.status_code == 200, r.text
            return

    async def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], port: int, tmp_path: Path) -> AsyncIterator[Served]:
    stderr_path = tmp_path / f"serve-{port}.err"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router",
            "serve",
            cwd=tmp_path,  # the embedded database would land here, were the URL ignored
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        yield Served(proc, port, stderr_path)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def is_api_key_line(line: str) -> bool:
    return line.startswith("API key (shown once")


def is_key_source_line(line: str) -> bool:
    return line.startswith("API keys:")


async def get_member(client: httpx.AsyncClient, base: str, key: str) -> httpx.Response:
    return await client.get(f"{base}/v1/members/x", headers={"Authorization": f"Bearer {key}"})


async def test_serve_prints_its_setup_and_a_generated_key_once(dsn: str, tmp_path: Path) -> None:
    url, password = url_with_password(dsn)
    env_values = {"ROUTER_DATABASE_URL": url, "ROUTER_DATABASE_POOL_SIZE": "2"}

    port = _free_port()
    env = router_env(ROUTER_HTTP_LISTEN=f"127.0.0.1:{port}", **env_values)
    async with serving(env, port, tmp_path) as served, httpx.AsyncClient(timeout=10) as client:
        lines = await served.read_until(is_api_key_line, START_TIMEOUT)
        text = "\n".join(lines)

        assert lines[0].startswith(f"delivery-router listening on http://127.0.0.1:{port}")
        database = [line for line in lines if line.startswith("database:")]
        assert len(database) == 1, text
        assert "PostgreSQL at " in database[0]
        assert urlsplit(dsn).path in database[0]  # the database name is shown
        if password is not None:
            assert password not in text
            assert password not in served.stderr()

        line_channel = [line for line in lines if line.startswith("channel line:")]
        assert len(line_channel) == 1, text
        assert "not configured" in line_channel[0]
        assert "prefer_line intents go to email" in line_channel[0]
        assert "line_only intents are refused" in line_channel[0]
        email_channel = [line for line in lines if line.startswith("channel email:")]
        assert len(email_channel) == 1, text
        assert "not configured" in email_channel[0]
        assert "email_only intents are refused" in email_channel[0]

        found = re.fullmatch(r"API key \(shown once[^)]*\): (\S+)", lines[-1])
        assert found, text
        key = found.group(1)
        assert len(key) >= 32
        assert sum(key in line for line in lines) == 1
        assert key not in served.stderr()

        await served.wait_until_serving(client)
        r = await get_member(client, served.base_url, key)
        assert r.status_code == 404, r.text
        assert (await get_member(client, served.base_url, key + "x")).status_code == 401
        assert (await client.get(f"{served.base_url}/v1/members/x")).status_code == 401

        assert await served.terminate() == 0

    conn = await asyncpg.connect(dsn)
    try:
        stored = [r["key_sha256"] for r in await conn.fetch("SELECT key_sha256 FROM api_keys")]
    finally:
        await conn.close()
    assert stored == [hashlib.sha256(key.encode()).digest()]

    # A second start on the same database: no new key, and the first one still works.
    port = _free_port()
    env = router_env(ROUTER_HTTP_LISTEN=f"127.0.0.1:{port}", **env_values)
    async with serving(env, port, tmp_path) as served, httpx.AsyncClient(timeout=10) as client:
        lines = await served.read_until(is_key_source_line, START_TIMEOUT)
        text = "\n".join(lines)
        assert lines[0].startswith(f"delivery-router listening on http://127.0.0.1:{port}")
        assert lines[-1].startswith("API keys: 1 stored (router keys list; "), text
        assert not any(line.startswith("API key (shown once") for line in lines), text
        assert key not in text

        await served.wait_until_serving(client)
        r = await get_member(client, served.base_url, key)
        assert r.status_code == 404, r.text

        assert await served.terminate() == 0

    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 1
    finally:
        await conn.close()


async def test_serve_with_configured_keys_generates_none(dsn: str, tmp_path: Path) -> None:
    port = _free_port()
    env = router_env(
        ROUTER_HTTP_LISTEN=f"127.0.0.1:{port}",
        ROUTER_DATABASE_URL=dsn,
        ROUTER_DATABASE_POOL_SIZE="2",
        ROUTER_API_KEYS="key-one,key-two",
        ROUTER_EMAIL_HOST="127.0.0.1",
        ROUTER_EMAIL_PORT="2599",
        ROUTER_EMAIL_FROM_ADDRESS="news@shop.example.jp",
        ROUTER_EMAIL_PUBLIC_BASE_URL="https://mail.shop.example.jp/",
    )
    async with serving(env, port, tmp_path) as served, httpx.AsyncClient(timeout=10) as client:
        lines = await served.read_until(lambda line: line.startswith("channel email:"), 20)
        await served.wait_until_serving(client)
        assert not any(is_api_key_line(line) for line in lines), lines
        # What composed email will carry is said once, at start.
        assert lines[-1] == (
            "channel email: SMTP 127.0.0.1:2599; unsubscribe links at"
            " https://mail.shop.example.jp/u/; promotional email needs consent"
        ), lines
        assert (await get_member(client, served.base_url, "key-one")).status_code == 404
        assert (await get_member(client, served.base_url, "key-two")).status_code == 404
        assert (await get_member(client, served.base_url, "key-three")).status_code == 401
        assert await served.terminate() == 0
        assert served.proc.stdout is not None
        rest = (await asyncio.wait_for(served.proc.stdout.read(), 5)).decode()
        assert "shown once" not in rest
        # Which keys are active, by fingerprint: never the keys.
        digests = sorted(hashlib.sha256(k.encode()).hexdigest()[:8] for k in ("key-one", "key-two"))
        assert (
            f"API keys: 2 configured ([api] keys; sha256:{digests[0]}, sha256:{digests[1]})" in rest
        )
        assert "key-one" not in rest
        assert "key-two" not in rest

    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0
    finally:
        await conn.close()


# bad configuration


async def test_unparsable_listen_address_exits_2(dsn: str) -> None:
    env = router_env(ROUTER_HTTP_LISTEN="nonsense", ROUTER_DATABASE_URL=dsn)
    code, out, err = await run_router("serve", env=env)
    assert code == 2, out + err
    assert "nonsense" in err
    assert "host:port" in err
    assert "Traceback" not in err
    assert "listening" not in out


async def test_unknown_environment_key_exits_2(dsn: str) -> None:
    env = router_env(ROUTER_LINE_FOO="1", ROUTER_DATABASE_URL=dsn)
    code, out, err = await run_router("serve", env=env)
    assert code == 2, out + err
    assert "ROUTER_LINE_FOO" in err
    assert "Traceback" not in err
    code, out, err = await run_router("migrate", env=env)
    assert code == 2, out + err
    assert "ROUTER_LINE_FOO" in err


async def test_bad_config_file_exits_2(dsn: str, tmp_path: Path) -> None:
    env = router_env(ROUTER_DATABASE_URL=dsn)
    path = tmp_path / "router.toml"
    path.write_text("[email]\nport = 25\nprot = 26\n")
    code, out, err = await run_router("serve", "--config", str(path), env=env)
    assert code == 2, out + err
    assert "prot" in err
    missing = tmp_path / "missing.toml"
    code, out, err = await run_router("migrate", "--config", str(missing), env=env)
    assert code == 2, out + err
    assert str(missing) in err


async def test_a_bad_journey_file_stops_the_start_naming_file_and_line(
    dsn: str, tmp_path: Path
) -> None:
    """Journey files are read from `journeys/` next to the config file."""
    config = tmp_path / "router.toml"
    config.write_text("")
    (tmp_path / "journeys").mkdir()
    bad = tmp_path / "journeys" / "nudge.toml"
    bad.write_text(
        'name = "Nudge"\n[trigger]\nevent = "trial_started"\n\n[[steps]]\nwait = "PT1H"\n\n'
        '[[steps]]\nwait = "P1M"\n'
    )
    env = router_env(ROUTER_DATABASE_URL=dsn, ROUTER_HTTP_LISTEN="127.0.0.1:0")
    code, out, err = await run_router("serve", "--config", str(config), env=env)
    assert code == 2, out + err
    assert err.startswith(f"router: {bad}:9: steps[1].wait: 'P1M': years and months"), err
    assert "Traceback" not in err
    assert "listening" not in out


def test_serve_says_how_many_journey_files_it_read(tmp_path: Path) -> None:
    from router.cli import describe
    from router.config import load_config

    config = load_config(None, {"ROUTER_JOURNEYS_DIRECTORY": str(tmp_path)})
    lines = describe(
        config,
        8080,
        database="db",
        channels=(),
        smtp_listening=False,
        generated_api_key="k",
        journey_files=[False, True, False],
    )
    assert f"journeys: 3 file(s) in {tmp_path}, 1 enabled" in lines
    assert lines[-1].startswith("API key (shown once")  # still the last line


async def test_wrongly_typed_environment_value_exits_2(dsn: str) -> None:
    env = router_env(ROUTER_EMAIL_PORT="smtp", ROUTER_DATABASE_URL=dsn)
    code, out, err = await run_router("serve", env=env)
    assert code == 2, out + err
    assert err == "router: ROUTER_EMAIL_PORT=smtp: expected an integer 1-65535\n"


async def test_out_of_range_port_exits_2_with_a_message(dsn: str) -> None:
    env = router_env(ROUTER_HTTP_LISTEN="127.0.0.1:70000", ROUTER_DATABASE_URL=dsn)
    code, out, err = await run_router("serve", env=env)
    assert "Traceback" not in err
    assert code == 2, out + err
    assert "127.0.0.1:70000" in err
