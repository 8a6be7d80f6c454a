"""How the browser tests get chromium (tests/browser.py): installed once under a lock however
many test processes find it missing, in the background, and not at all where it is there."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, BackgroundInstall, ensure_chromium, start_installing_chromium


def test_processes_that_find_it_missing_install_it_once(tmp_path: Path) -> None:
    """Four installers at once (each opens the lock file itself, as separate processes do):
    one installs, the others wait on the lock and then find it installed."""
    path, lock = tmp_path / "chromium", tmp_path / "install.lock"
    installs: list[str] = []
    inside = threading.Event()

    def install() -> None:
        installs.append(threading.current_thread().name)
        inside.set()
        time.sleep(0.2)  # long enough for the others to reach the lock
        path.write_text("#!/bin/sh\n")

    found: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: found.append(ensure_chromium(str(path), str(lock), install)),
            name=f"installer-{n}",
        )
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert inside.is_set()
    assert len(installs) == 1, installs
    assert found == [str(path)] * 4


def test_an_installed_chromium_is_used_without_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "chromium"
    path.write_text("#!/bin/sh\n")

    def install() -> None:
        raise AssertionError("installed again")

    # the lock's directory does not exist: taking the lock would fail
    no_lock = str(tmp_path / "missing" / "install.lock")
    assert ensure_chromium(str(path), no_lock, install) == str(path)


def test_an_install_that_makes_no_chromium_fails(tmp_path: Path) -> None:
    path, lock = tmp_path / "chromium", tmp_path / "install.lock"
    with pytest.raises(RuntimeError, match="did not make"):
        ensure_chromium(str(path), str(lock), lambda: None)


def test_the_background_install_runs_once_and_hands_over_its_outcome(tmp_path: Path) -> None:
    path, lock = tmp_path / "chromium", tmp_path / "install.lock"
    release = threading.Event()
    calls: list[int] = []

    def install() -> None:
        calls.append(1)
        release.wait(5)
        path.write_text("#!/bin/sh\n")

    background = BackgroundInstall(lambda: ensure_chromium(str(path), str(lock), install))
    background.start()
    background.start()
    assert background.started and not path.exists()  # runs beside the caller
    release.set()
    assert background.wait() == str(path)
    assert background.wait() == str(path)
    assert calls == [1]

    def refused() -> str:
        raise PermissionError("not root")

    failing = BackgroundInstall(refused)
    failing.start()
    with pytest.raises(RuntimeError, match="could not be installed") as raised:
        failing.wait()
    assert isinstance(raised.value.__cause__, PermissionError)


def test_session_start_installs_only_what_is_missing(tmp_path: Path) -> None:
    """Chromium is installed here (the browser tests need it): session start then leaves the
    install unstarted, and the `browser` fixture finds it at once. A missing one is started."""
    assert Path(CHROMIUM).exists()

    def must_not_run() -> str:
        raise AssertionError("started although chromium is installed")

    present = BackgroundInstall(must_not_run)
    start_installing_chromium(present, CHROMIUM)
    assert not present.started

    missing = BackgroundInstall(lambda: "installed")
    start_installing_chromium(missing, str(tmp_path / "chromium"))
    assert missing.started and missing.wait() == "installed"
