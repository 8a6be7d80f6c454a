"""The code base stays typed and linted: mypy strict, ruff lint and format."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec

from router.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_mypy_strict_passes() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint_passes() -> None:
    result = run("ruff", "check", "router", "channels", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    result = run("ruff", "format", "--check", "router", "channels", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_config_file_documents_every_key_with_its_default() -> None:
    path = ROOT / "config" / "router.toml"
    data = tomllib.loads(path.read_text())
    for section in msgspec.structs.fields(Config):
        keys = {f.name for f in msgspec.structs.fields(section.type)}
        assert set(data[section.name]) == keys, section.name
    assert load_config(path, {}) == Config()
