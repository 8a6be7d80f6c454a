"""The production files (Dockerfile, compose.yaml, deploy/) agree with the router they run.

No container engine runs here, so the images are not built; what can drift is checked
instead: every ROUTER_* variable they set is a real configuration key with a valid value, the
ports line up, what the Dockerfile copies exists, and the package built from this tree (what
`pip wheel .` puts in the image) carries the files the router reads at run time."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from router.cli import main as router_main
from router.config import ENV_PREFIX, load_config

ROOT = Path(__file__).parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
EXAMPLE = dict(
    line.split("=", 1)
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines()
    if line and not line.startswith("#")
)
REFERENCE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def substitute(value: str) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` with deploy/env.example."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if kind == "?":
            assert name in EXAMPLE, f"{name} is required by compose.yaml but not in env.example"
        if EXAMPLE.get(name):
            return EXAMPLE[name]
        return rest if kind == "-" else ""

    return REFERENCE.sub(one, value)


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV (.+?)(?<!\\)$", DOCKERFILE, re.MULTILINE | re.DOTALL):
        for pair in shlex.split(block.replace("\\\n", " ")):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def test_every_router_variable_is_a_real_key_with_a_valid_value() -> None:
    compose_env = {
        name: substitute(str(value))
        for name, value in COMPOSE["services"]["router"]["environment"].items()
    }
    environ = {**dockerfile_env(), **compose_env}
    router_vars = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    assert "ROUTER_HTTP_LISTEN" in router_vars and "ROUTER_API_KEYS" in router_vars
    # The same reading `router serve` does; an unknown key or a bad value raises ConfigError.
    config = load_config(None, {k: v for k, v in router_vars.items() if k != "ROUTER_CONFIG"})
    config_file = load_config(ROOT / "config" / "router.toml", {})
    assert config.http.listen == "0.0.0.0:8080" and config.smtp_ingress.listen == "0.0.0.0:2525"
    assert config.log.format == "json" and config.email.starttls is True
    assert config_file.http.listen == "127.0.0.1:8080"  # the file keeps the safe default
    assert environ["ROUTER_CONFIG"] == "/etc/router/router.toml"
    assert "COPY config/router.toml /etc/router/router.toml" in DOCKERFILE
    url = environ["DATABASE_URL"]
    assert url.startswith("postgresql://router:") and "@postgres:5432/router" in url


def test_ports_services_and_copied_paths_line_up() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "router", "proxy"}
    assert services["router"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert re.search(r"^EXPOSE 8080 2525$", DOCKERFILE, re.MULTILINE)
    assert any(p.endswith(":2525") for p in services["router"]["ports"])
    caddyfile = ROOT / "deploy" / "Caddyfile"
    assert (
        f"./{caddyfile.relative_to(ROOT)}:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]
    )
    assert "dynamic a router 8080" in caddyfile.read_text()
    assert "health_uri /healthz" in caddyfile.read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, re.MULTILINE):
        assert (ROOT / source).exists(), source
    assert 'ENTRYPOINT ["router"]' in DOCKERFILE and 'CMD ["serve"]' in DOCKERFILE
    assert re.search(r"^USER router$", DOCKERFILE, re.MULTILINE)


def test_the_entrypoint_command_is_one_the_router_knows() -> None:
    # `router serve --help` parses the same sub-command the image runs and exits 0.
    try:
        router_main(["serve", "--help"])
    except SystemExit as done:
        assert done.code == 0
    else:  # pragma: no cover - argparse always exits on --help
        raise AssertionError("router serve --help did not exit")


def test_the_built_package_carries_what_the_router_reads_at_run_time(tmp_path: Path) -> None:
    # Built from exactly what the Dockerfile's first stage copies, as it builds it.
    stage = DOCKERFILE.split("FROM ")[1]
    source = tmp_path / "src"
    for line in re.findall(r"^COPY (.+)$", stage, re.MULTILINE):
        *paths, _target = line.split()
        for path in paths:
            if (ROOT / path).is_dir():
                shutil.copytree(
                    ROOT / path, source / path, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                source.mkdir(exist_ok=True)
                shutil.copy(ROOT / path, source / path)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--wheel-dir",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("delivery_router-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = sorted(p.name for p in (ROOT / "router" / "migrations").glob("*.sql"))
    needed = (
        [f"router/migrations/{name}" for name in migrations]
        + [f"router/ui/templates/ui/{p.name}" for p in (ROOT / "router/ui/templates/ui").glob("*")]
        + [f"router/ui/static/{p.name}" for p in (ROOT / "router/ui/static").glob("*")]
        + [
            "router/api/static/swagger-ui/swagger-ui-bundle.js",
            "router/py.typed",
            "linesim/app.py",
            "channels/line/__init__.py",
        ]
    )
    missing = [name for name in needed if name not in names]
    assert not missing, f"the package leaves out {missing}"
