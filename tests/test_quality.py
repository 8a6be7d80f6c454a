"""The code base stays typed and linted: mypy strict, ruff lint and format."""

from __future__ import annotations

import ast
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
    result = run("ruff", "check", "router", "channels", "linesim", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    result = run("ruff", "format", "--check", "router", "channels", "linesim", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_linesim_imports_nothing_from_router_or_channels() -> None:
    """The LINE simulator is written from LINE's documentation, not from the code it tests:
    sharing a shape or a constant with router/ or channels/ would let a mistake in one
    agree with itself.  No import statement may name them, not even a lazy one."""
    found = []
    for path in sorted((ROOT / "linesim").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in ("router", "channels")
            ]
    assert not found, found
    code = "import sys, linesim; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "'router'" not in loaded and "'channels'" not in loaded, loaded


def test_default_config_file_documents_every_key_with_its_default() -> None:
    path = ROOT / "config" / "router.toml"
    data = tomllib.loads(path.read_text())
    for section in msgspec.structs.fields(Config):
        keys = {f.name for f in msgspec.structs.fields(section.type)}
        assert set(data[section.name]) == keys, section.name
    assert load_config(path, {}) == Config()
