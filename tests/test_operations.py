"""What an operator meets first, through the `router` command as a real process: the config
file found without flags, DATABASE_URL, one-line errors, and API keys made, used and revoked."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx

from tests.harness import RouterUnderTest, _free_port
from tests.router_command import run_router_command
from tests.test_cli import (
    get_member,
    is_key_source_line,
    router_env,
    serving,
)

REVOKE_DEADLINE = 10.0
"""A revoked key stops working within about a second; this only bounds a failing test."""
START_DEADLINE = 60.0
"""Only bounds a failing test: on a shared, loaded machine a start can take a while."""


async def run_in(cwd: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`python -m router ARGS` run in `cwd`: exit code, stdout, stderr."""
    return await run_router_command(*args, env=env, cwd=cwd, timeout=60)


async def test_config_file_found_in_the_working_directory_and_keys_made_used_and_revoked(
    dsn: str, tmp_path: Path
) -> None:
    """`router serve` in a directory holding router.toml reads it without --config; the
    database comes from DATABASE_URL; a key made by `router keys create` (reading the same
    file) works at once over HTTP beside the configured one, and stops working once revoked."""
    port = _free_port()
    (tmp_path / "router.toml").write_text(
        f'[http]\nlisten = "127.0.0.1:{port}"\n\n[api]\nkeys = ["configured-key"]\n'
        "\n[database]\npool_size = 2\n"
    )
    env = router_env(DATABASE_URL=dsn)
    async with serving(env, port, tmp_path) as served, httpx.AsyncClient(timeout=10) as client:
        lines = await served.read_until(is_key_source_line, START_DEADLINE)
        text = "\n".join(lines)
        assert "config: router.toml (found in the working directory)" in lines, text
        database = next(line for line in lines if line.startswith("database:"))
        assert database.endswith(" (from DATABASE_URL)"), text
        assert lines[-1].startswith("API keys: 1 configured ([api] keys; sha256:"), text
        assert "configured-key" not in text
        await served.wait_until_serving(client)

        code, key, err = await run_in(tmp_path, "keys", "create", "--name", "crm sync", env=env)
        assert code == 0, err
        key = key.strip()
        assert key.startswith("dr_"), key
        key_id = err.split()[2]  # "API key <id> (shown once, ...)"
        assert (await get_member(client, served.base_url, key)).status_code == 404
        assert (await get_member(client, served.base_url, "configured-key")).status_code == 404

        code, listed, err = await run_in(tmp_path, "keys", "list", env=env)
        assert code == 0, err
        assert [line.split()[0] for line in listed.splitlines()[:-1]] == [key_id], listed
        assert listed.splitlines()[0].endswith("crm sync"), listed
        assert key not in listed
        assert "1 configured" in listed.splitlines()[-1]

        code, out, err = await run_in(tmp_path, "keys", "revoke", key_id, env=env)
        assert (code, out) == (0, f"revoked {key_id}\n"), err
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REVOKE_DEADLINE
        while (status := (await get_member(client, served.base_url, key)).status_code) != 401:
            assert status == 404
            assert loop.time() < deadline, "the revoked key still works"
            await asyncio.sleep(0.1)
        assert (await get_member(client, served.base_url, "configured-key")).status_code == 404

        assert await served.terminate() == 0


def one_line(err: str) -> str:
    """stderr that must be exactly one line, returned without its newline."""
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err.rstrip("\n")


async def test_unreachable_database_busy_ports_and_broken_toml_are_one_line_each(
    dsn: str, tmp_path: Path
) -> None:
    nobody = _free_port()  # nothing listens there
    unreachable = router_env(
        ROUTER_DATABASE_URL=f"postgresql://router:secret-pw@127.0.0.1:{nobody}/router",
        ROUTER_HTTP_LISTEN="127.0.0.1:0",
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "router.toml").write_text("[email]\nport = 25\nhost = \n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        results = await asyncio.gather(
            run_in(tmp_path, "migrate", env=unreachable),
            run_in(tmp_path, "serve", env=unreachable),
            run_in(
                tmp_path,
                "serve",
                env=router_env(ROUTER_DATABASE_URL=dsn, ROUTER_HTTP_LISTEN=f"127.0.0.1:{taken}"),
            ),
            run_in(
                tmp_path,
                "line-simulator",
                "--listen",
                f"127.0.0.1:{taken}",
                "--token",
                "t",
                env=router_env(),
            ),
            run_in(broken, "migrate", env=router_env(ROUTER_DATABASE_URL=dsn)),
        )
    (migrate, serve, serve_busy, simulator_busy, broken_toml) = results
    refused = f"router: cannot reach PostgreSQL at 127.0.0.1:{nobody} (connection refused)"
    for code, out, err in (migrate, serve):
        assert code == 1, out + err
        assert one_line(err) == refused
        assert "secret-pw" not in out + err
    code, _, err = serve_busy
    assert code == 1
    assert one_line(err) == f"router: cannot listen on 127.0.0.1:{taken}: Address already in use"
    code, _, err = simulator_busy
    assert code == 1
    assert one_line(err) == (
        f"router: line-simulator cannot listen on 127.0.0.1:{taken}: Address already in use"
    )
    code, _, err = broken_toml
    assert code == 2
    assert one_line(err) == "router: router.toml, line 3, column 8: not valid TOML: Invalid value"


async def test_a_stored_key_s_last_use_is_recorded(router: RouterUnderTest) -> None:
    """Through the app's own key check: a stored key works beside the configured one, and its
    use is written when the process records uses (at its next re-read, or at stop)."""
    from router import api_keys

    async with router.runtime.pool.acquire() as conn:
        key_id, key = await api_keys.create(conn, "reports")
        assert [k.last_used_at for k in await api_keys.stored_keys(conn)] == [None]
    r = await get_member(router.client, router.base_url, key)
    assert r.status_code == 404, r.text
    await router.runtime.api_keys.flush()
    async with router.runtime.pool.acquire() as conn:
        (stored,) = await api_keys.stored_keys(conn)
    assert (stored.id, stored.name) == (key_id, "reports")
    assert stored.last_used_at is not None
