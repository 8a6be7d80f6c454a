"""A PostgreSQL server of a test's own, from the binaries pgserver ships, that the test may
stop and start again (the suite's shared server must never go away under other tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pgserver

from tests.harness import _free_port

BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"
# PostgreSQL refuses to run as root; pgserver creates this user for the same reason.
SYSTEM_USER = "pgserver"


class SeparatePostgres:
    """initdb, then `pg_ctl` start and stop on a free loopback port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="router-test-pg-own-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists

            ensure_user_exists(SYSTEM_USER)
            shutil.chown(self.root, SYSTEM_USER)
            self._as = {"user": SYSTEM_USER}

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            **self._as,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "utf8")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off"
        log = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """`pg_ctl -m fast stop`: sessions are cut off at once, as in a fast restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
