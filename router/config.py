"""Configuration: a TOML file, then `ROUTER_<SECTION>_<KEY>` environment overrides.

The file is optional; every key has a default so that `router serve` runs on a fresh
machine. Environment variables win so that containers and CI can configure the router
without writing files.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

ENV_PREFIX = "ROUTER_"


class ConfigError(Exception):
    """The configuration file or an override is invalid; the message names the key."""


class HttpConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = 10_000_000


class DatabaseConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str = ""
    data_dir: str = "data/postgres"
    pool_size: int = 10


class ApiConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    keys: list[str] = msgspec.field(default_factory=list)


class LineConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    channel_access_token: str = ""
    channel_secret: str = ""
    api_base: str = "https://api.line.me"
    push_per_second: int = 2000
    max_connections: int = 64
    timeout_seconds: float = 10.0
    forward_webhooks_to: list[str] = msgspec.field(default_factory=list)
    link_invite_text: str = ""
    link_url_template: str = ""
    account_link_base: str = "https://access.line.me"
    link_nonce_ttl_seconds: int = 600
    login_channel_id: str = ""
    check_quota: bool = True
    notification_messages: bool = False
    notification_confirm_seconds: float = 86400.0
    quota_cache_seconds: float = 60.0


class EmailConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = ""
    port: int = 25
    username: str = ""
    password: str = ""
    starttls: bool = False
    use_tls: bool = False
    from_address: str = ""
    connections: int = 4
    timeout_seconds: float = 30.0


class WorkersConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    concurrency: int = 4
    batch_size: int = 100
    max_attempts: int = 8
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 600.0
    lease_seconds: float = 120.0


class MembersConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    default_region: str = "JP"


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    line: LineConfig = msgspec.field(default_factory=LineConfig)
    email: EmailConfig = msgspec.field(default_factory=EmailConfig)
    workers: WorkersConfig = msgspec.field(default_factory=WorkersConfig)
    members: MembersConfig = msgspec.field(default_factory=MembersConfig)

    @property
    def line_configured(self) -> bool:
        return bool(self.line.channel_access_token)

    @property
    def email_configured(self) -> bool:
        return bool(self.email.host and self.email.from_address)


def _section_fields() -> dict[str, dict[str, type]]:
    sections: dict[str, dict[str, type]] = {}
    for section in msgspec.structs.fields(Config):
        sections[section.name] = {f.name: f.type for f in msgspec.structs.fields(section.type)}
    return sections


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Map `ROUTER_LINE_API_BASE=...` to `{"line": {"api_base": "..."}}`."""
    sections = _section_fields()
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in sections:
            continue
        if key not in sections[section]:
            raise ConfigError(f"{name}: [{section}] has no key {key!r}")
        if sections[section][key] == list[str]:
            out.setdefault(section, {})[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            out.setdefault(section, {})[key] = value
    return out


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any), apply environment overrides, validate every key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    for section, values in _env_overrides(os.environ if environ is None else environ).items():
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table of keys, not {table!r}")
        table.update(values)
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    _check_values(config)
    return config


def _check_values(config: Config) -> None:
    """Values whose type is right but whose meaning is not."""
    import phonenumbers

    region = config.members.default_region
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"[members] default_region {region!r} is not an ISO 3166 region code like 'JP'"
        )
    split_listen(config.http.listen)


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:8080`) to a (host, port) pair."""
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen address {listen!r} must look like host:port (port 0-65535)")
    return host.strip("[]") or "127.0.0.1", int(port)
