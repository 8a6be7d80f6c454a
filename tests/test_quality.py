"""The code base stays typed and linted (mypy strict, ruff lint and format), and its
modules import each other without cycles."""

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
    text = path.read_text()
    data = tomllib.loads(text)
    for section in msgspec.structs.fields(Config):
        fields = msgspec.structs.fields(section.type)
        # A key without a value by default (None, or tables of further sections) cannot be
        # written in TOML: it is shown commented out instead.
        commented = {
            f.name
            for f in fields
            if f.default is None or f.default_factory is dict
            if f"# {f.name} = " in text or f"# [{section.name}.{f.name}." in text
        }
        keys = {f.name for f in fields}
        assert set(data[section.name]) | commented == keys, section.name
        assert not set(data[section.name]) & commented, section.name
    assert load_config(path, {}) == Config()


def router_imports() -> dict[str, set[str]]:
    """Each router module and the router modules it imports: at the top, inside functions,
    or only for type checking (a cycle is a cycle for whoever reads the code)."""
    files = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (ROOT / "router").rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}".rstrip(".")
                imported.add(base)
                imported.update(f"{base}.{alias.name}" for alias in node.names)
        graph[module] = {name for name in imported if name in files and name != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component: list[str] = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_router_modules_import_each_other_without_cycles() -> None:
    assert cycles(router_imports()) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
