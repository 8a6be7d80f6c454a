"""Configuration: a TOML file, then `ROUTER_<SECTION>_<KEY>` environment overrides.

The file is optional; every key has a default so that `router serve` runs on a fresh
machine. Environment variables win so that containers and CI can configure the router
without writing files.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from router.line_plans import (
    LineBudget,
    LinePlan,
    NonNegativeYen,
    PlanName,
    budget_errors,
    plan_terms,
)

ENV_PREFIX = "ROUTER_"
DATABASE_URL_FALLBACK = "DATABASE_URL"
"""Read as the database URL when ROUTER_DATABASE_URL is not set (the variable most hosts set)."""
TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})

# Numbers that are only meaningful in a range: a rate or a pool of 0 would stall the router
# without a word, so it is refused when the configuration is read.
Count = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class ConfigError(Exception):
    """The configuration file or an override is invalid; the message names the key."""


class HttpConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:8080"
    max_body_bytes: Count = 10_000_000


class DatabaseConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str = ""
    data_dir: str = "data/postgres"
    pool_size: Count = 10


class ApiConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    keys: list[str] = msgspec.field(default_factory=list)
    # Requests each API key may make, shared by every router process (docs/limits.md):
    # 0 is no limit; `burst` requests at once (0: one second's worth).
    requests_per_second: NonNegativeSeconds = 0.0
    burst: NonNegative = 0


class LineConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    channel_access_token: str = ""
    channel_secret: str = ""
    api_base: str = "https://api.line.me"
    push_per_second: Count = 2000
    multicast: bool = True
    multicast_per_second: Count = 200
    max_connections: Count = 64
    timeout_seconds: Seconds = 10.0
    forward_webhooks_to: list[str] = msgspec.field(default_factory=list)
    link_invite_text: str = ""
    link_url_template: str = ""
    account_link_base: str = "https://access.line.me"
    link_nonce_ttl_seconds: Count = 600
    login_channel_id: str = ""
    check_quota: bool = True
    notification_messages: bool = False
    notification_confirm_seconds: Seconds = 86400.0
    quota_cache_seconds: NonNegativeSeconds = 60.0
    # Narrowcast campaigns: how often LINE's progress is asked for, and how long after LINE
    # took a narrowcast the router stops asking (its deliveries are then 'uncertain').
    narrowcast_poll_seconds: Seconds = 5.0
    narrowcast_give_up_seconds: Seconds = 21600.0
    # What the account's LINE messages cost: its plan ("free", "light", "standard", "custom";
    # "" when not said: then only the limit LINE reports is known), overridden or completed
    # by the messages it includes and the yen per message beyond them.
    plan: PlanName = ""
    included_messages: NonNegative | None = None
    extra_message_yen: NonNegativeYen | None = None
    # The LINE budget of a promotional intent or campaign that sets none of its own.
    default_budget: LineBudget = "included_only"
    # Further LINE Official Accounts, by name; this section itself is the account "default".
    accounts: dict[str, LineAccountConfig] = msgspec.field(default_factory=dict)

    def plan_terms(self) -> LinePlan | None:
        """The account's plan with its overrides; None when the router is not told it."""
        return plan_terms(self.plan, self.included_messages, self.extra_message_yen)


class LineAccountConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`[line.accounts.<name>]`: one more LINE Official Account. A key left out takes the
    `[line]` section's value, except the channel's own credentials and webhook forwarding,
    which belong to one channel only."""

    channel_access_token: str = ""
    channel_secret: str = ""
    login_channel_id: str = ""
    forward_webhooks_to: list[str] = msgspec.field(default_factory=list)
    api_base: str | None = None
    push_per_second: Count | None = None
    multicast: bool | None = None
    multicast_per_second: Count | None = None
    max_connections: Count | None = None
    timeout_seconds: Seconds | None = None
    link_invite_text: str | None = None
    link_url_template: str | None = None
    account_link_base: str | None = None
    link_nonce_ttl_seconds: Count | None = None
    check_quota: bool | None = None
    notification_messages: bool | None = None
    notification_confirm_seconds: Seconds | None = None
    quota_cache_seconds: NonNegativeSeconds | None = None
    narrowcast_poll_seconds: Seconds | None = None
    narrowcast_give_up_seconds: Seconds | None = None
    plan: PlanName | None = None
    included_messages: NonNegative | None = None
    extra_message_yen: NonNegativeYen | None = None
    default_budget: LineBudget | None = None


_OWN_TO_ONE_CHANNEL = frozenset(
    {"channel_access_token", "channel_secret", "login_channel_id", "forward_webhooks_to"}
)
DEFAULT_LINE_ACCOUNT = "default"
BUDGET_FORMS = '"included_only", "unlimited", { max_messages = N } or { max_yen = N }'
LINE_ACCOUNT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""An account's name: it appears in URLs (`/webhooks/line/<name>`) and metric labels."""


def _account_config(line: LineConfig, account: LineAccountConfig) -> LineConfig:
    """The effective settings of one further account: its own keys over `[line]`'s."""
    own: dict[str, Any] = {}
    for field in msgspec.structs.fields(LineAccountConfig):
        value = getattr(account, field.name)
        if field.name in _OWN_TO_ONE_CHANNEL or value is not None:
            own[field.name] = value
    if "included_messages" not in own and "plan" in own:
        # A plan named here is priced as that plan, not with [line]'s overrides.
        own["included_messages"] = None
        own.setdefault("extra_message_yen", None)
    return msgspec.structs.replace(line, accounts={}, **own)


class EmailConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = ""
    port: Port = 25
    username: str = ""
    password: str = ""
    starttls: bool = False
    use_tls: bool = False
    from_address: str = ""
    connections: Count = 4
    timeout_seconds: Seconds = 30.0
    # PEM file of the CAs trusted for the upstream's certificate (a private CA); empty: the
    # system's trust store (or SSL_CERT_FILE).
    ca_file: str = ""
    # --- deliverability of the email the router composes (docs/deliverability.md) ---
    # DKIM: the signing domain (d=), the selector (s=) and a PEM private key (RSA of at least
    # 2048 bits, or Ed25519); a second selector and key sign each message again (RSA and
    # Ed25519 side by side). Empty domain: no signature.
    dkim_domain: str = ""
    dkim_selector: str = ""
    dkim_private_key_file: str = ""
    dkim_second_selector: str = ""
    dkim_second_private_key_file: str = ""
    # Where recipients reach this router over HTTPS (`https://mail.example.com`): the
    # one-click unsubscribe links are `<public_base_url>/u/<token>`. Empty: no link.
    public_base_url: str = ""
    # The key unsubscribe links and bounce addresses are signed with; empty: one the router
    # makes and keeps in its database, shared by every process.
    unsubscribe_secret: str = ""
    # The sender as 特定電子メール法 requires promotional email to name it, in the footer.
    sender_name: str = ""
    sender_postal_address: str = ""
    # Footer templates (files, Jinja2 text with sender_name, sender_postal_address and
    # unsubscribe_url); empty: the built-in Japanese and English footer.
    footer_text_template: str = ""
    footer_html_template: str = ""
    # Promotional email only to members with a recorded email consent (their `email_consent`).
    require_consent: bool = True
    # VERP: the envelope sender of composed mail is bounce+<token>@<bounce_domain>, whose MX
    # is this router's SMTP listener; bounces and complaints sent there are read. Empty: the
    # envelope sender is from_address, and only bounces at send time are seen.
    bounce_domain: str = ""


class WorkersConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    concurrency: Count = 4
    claim_size: Count = 100
    max_attempts: Count = 8
    backoff_base_seconds: Seconds = 2.0
    backoff_max_seconds: Seconds = 600.0
    lease_seconds: Seconds = 30.0  # renewed while the claim is in hand


class SmtpIngressConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:2525"
    users: dict[str, str] = msgspec.field(default_factory=dict)
    max_message_bytes: Count = 10_000_000
    tls_cert: str = ""
    tls_key: str = ""
    hostname: str = ""
    # AUTH guessing limits: failures before a connection is closed, and the first wait an
    # address then has before its next try (doubling with each further failure).
    auth_attempts: Count = 3
    auth_delay_seconds: Seconds = 2.0


class MembersConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    default_region: str = "JP"


class RetentionConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    days: NonNegative = 30
    # Delete audiences unused for this many days (router/retention.py); 0 keeps them.
    audience_days: NonNegative = 0


class CampaignsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    fan_out_chunk: Count = 5_000
    # A fan-out chunk that fails the same way this many times in a row stops its campaign.
    fan_out_max_failures: Count = 5
    # Parallel fan-out: loops per process that make chunks (each its own connection), and
    # members per range of member ids a campaign is split into (each range one loop at a time).
    fan_out_workers: Count = 2
    fan_out_range_members: Count = 50_000


class EventsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    webhook_url: str = ""
    signing_secret: str = ""
    # SendGrid's signed Event Webhook: a PEM EC private key on P-256. Empty: the router makes
    # one and keeps it in the database (`router events public-key` prints its public key).
    signing_key_file: str = ""
    events_per_post: Count = 500
    timeout_seconds: Seconds = 10.0
    backoff_base_seconds: Seconds = 2.0
    backoff_max_seconds: Seconds = 600.0


class JourneysConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Promotional deliveries a member gets a day per channel (any promotional intent) before
    # a journey's promotional send waits for the next local day.
    max_promotional_per_member_per_day: Count = 2
    # A capped send deferred longer than this (ISO 8601 duration) after it fell due is skipped.
    max_deferral: Annotated[str, msgspec.Meta(pattern=r"^P(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$")] = (
        "P3D"
    )
    # Journey files (*.toml) loaded at start. Empty: `journeys/` next to the config file, if
    # it exists (none without a config file). Relative: from the config file's directory.
    directory: str = ""


class ShopifyConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The secret Shopify signs webhooks with (X-Shopify-Hmac-Sha256); empty: the route is off.
    webhook_secret: str = ""


class LogConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # "text": one line per record for people; "json": one JSON object per line (with the
    # HTTP request's id) for log collectors.
    format: Literal["text", "json"] = "text"


class SandboxConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # On: LINE goes to the bundled simulator and email to a built-in capture, both inside this
    # process, and nothing leaves the machine (`router serve --sandbox`).
    enabled: bool = False


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    line: LineConfig = msgspec.field(default_factory=LineConfig)
    email: EmailConfig = msgspec.field(default_factory=EmailConfig)
    workers: WorkersConfig = msgspec.field(default_factory=WorkersConfig)
    members: MembersConfig = msgspec.field(default_factory=MembersConfig)
    smtp_ingress: SmtpIngressConfig = msgspec.field(default_factory=SmtpIngressConfig)
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    campaigns: CampaignsConfig = msgspec.field(default_factory=CampaignsConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    journeys: JourneysConfig = msgspec.field(default_factory=JourneysConfig)
    shopify: ShopifyConfig = msgspec.field(default_factory=ShopifyConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    sandbox: SandboxConfig = msgspec.field(default_factory=SandboxConfig)

    @property
    def line_configured(self) -> bool:
        """Whether any LINE account is configured."""
        return bool(self.line_accounts())

    def line_accounts(self) -> dict[str, LineConfig]:
        """Every configured LINE account's effective settings, by name: `[line]` itself as
        "default" when it has a token, then each `[line.accounts.<name>]` in file order."""
        accounts: dict[str, LineConfig] = {}
        if self.line.channel_access_token:
            accounts[DEFAULT_LINE_ACCOUNT] = msgspec.structs.replace(self.line, accounts={})
        for name, account in self.line.accounts.items():
            if account.channel_access_token:
                accounts[name] = _account_config(self.line, account)
        return accounts

    @property
    def email_configured(self) -> bool:
        return bool(self.email.host and self.email.from_address)

    @property
    def events_configured(self) -> bool:
        """Delivery events are recorded (and posted) only when someone receives them."""
        return bool(self.events.webhook_url)


def _section_fields() -> dict[str, dict[str, type]]:
    sections: dict[str, dict[str, type]] = {}
    for section in msgspec.structs.fields(Config):
        sections[section.name] = {f.name: f.type for f in msgspec.structs.fields(section.type)}
    return sections


# Keys that had another name once: the old name still works, in the file and the environment.
RENAMED = {
    ("workers", "batch_size"): "claim_size",
    ("events", "batch_size"): "events_per_post",
}


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    """The file's tables with keys under their old names moved to their new ones."""
    for (section, old), new in RENAMED.items():
        table = data.get(section)
        if isinstance(table, dict) and old in table:
            if new in table:
                raise ConfigError(f"[{section}] give {new} only ({old} is its older name)")
            table[new] = table.pop(old)
    return data


NOT_SETTINGS = frozenset({"ROUTER_CONFIG"})
"""ROUTER_ variables that name no setting: read elsewhere (the config file's path)."""


def unread_environment(environ: Mapping[str, str]) -> list[str]:
    """One sentence for each ROUTER_ variable that names no section, so a misspelt one
    (ROUTER_EMIAL_HOST) is reported instead of silently leaving the default in place.

    Not an error: other software may use the prefix for its own variables."""
    sections = _section_fields()
    every_key = sorted(f"{ENV_PREFIX}{s}_{k}".upper() for s, keys in sections.items() for k in keys)
    notes = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if any(rest.startswith(section + "_") for section in sections):
            continue
        close = difflib.get_close_matches(name, every_key, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else ""
        notes.append(f"{name} names no configuration section and is ignored{hint}")
    return notes


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Map `ROUTER_LINE_API_BASE=...` to `{"line": {"api_base": "..."}}`.

    Section names may contain underscores (`ROUTER_SMTP_INGRESS_LISTEN`): the longest
    section name that prefixes the variable wins. Lists are comma-separated; tables are
    comma-separated `name:value` pairs."""
    sections = _section_fields()
    by_length = sorted(sections, key=len, reverse=True)
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in by_length if rest.startswith(s + "_")), None)
        if section is None:
            continue
        key = rest[len(section) + 1 :]
        if (section, key) in RENAMED:
            key = RENAMED[section, key]
            # Which of the two would win depends on the environment's order: refuse both.
            current = f"{ENV_PREFIX}{section}_{key}".upper()
            if current in environ:
                raise ConfigError(f"{name}: give {current} only ({name} is its older name)")
        if key not in sections[section]:
            raise ConfigError(f"{name}: [{section}] has no key {key!r}")
        kind = sections[section][key]
        if kind == list[str]:
            out.setdefault(section, {})[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif kind == dict[str, str]:
            pairs = [item.partition(":") for item in value.split(",") if item.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ConfigError(f"{name}: give name:value pairs separated by commas")
            out.setdefault(section, {})[key] = {k.strip(): v for k, _, v in pairs}
        else:
            out.setdefault(section, {})[key] = _env_value(name, value, kind)
    # The variable most PostgreSQL tools and hosts set: taken when ROUTER_DATABASE_URL is not.
    if "url" not in out.get("database", {}) and environ.get(DATABASE_URL_FALLBACK):
        out.setdefault("database", {})["url"] = environ[DATABASE_URL_FALLBACK]
    return out


def _env_value(name: str, value: str, kind: Any) -> Any:
    """An environment value as its key's type; a wrong one names the variable and says what
    the key accepts. Text is passed on as it is (it may be a secret, never echoed)."""
    info = msgspec.inspect.type_info(kind)
    if isinstance(info, msgspec.inspect.StrType):
        return value
    if isinstance(info, msgspec.inspect.BoolType):
        word = value.strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
    else:
        try:
            return msgspec.convert(value.strip(), kind, strict=False)
        except msgspec.ValidationError:
            pass
    raise ConfigError(f"{name}={value}: expected {accepted(kind, environment=True)}")


def accepted(kind: Any, *, environment: bool = False) -> str:
    """What a key of type `kind` takes, in words: "an integer 1-65535"."""
    info = msgspec.inspect.type_info(kind)
    if isinstance(info, msgspec.inspect.LiteralType):
        return "one of " + ", ".join(f'"{value}"' for value in info.values)
    if isinstance(info, msgspec.inspect.UnionType) and kind == LineBudget:
        return BUDGET_FORMS
    if isinstance(info, msgspec.inspect.BoolType):
        return "a boolean: true/false, 1/0 or yes/no" if environment else "true or false"
    if isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        what = "an integer" if isinstance(info, msgspec.inspect.IntType) else "a number"
        if info.ge is not None and info.le is not None:
            return f"{what} {info.ge}-{info.le}"
        if info.ge is not None:
            return f"{what} of at least {info.ge}"
        if info.gt is not None:
            return f"{what} greater than {info.gt}"
        return what
    if isinstance(info, msgspec.inspect.StrType):
        return f"text matching {info.pattern}" if info.pattern else "text"
    if isinstance(info, msgspec.inspect.ListType):
        return "a list of text (comma-separated in the environment)"
    if isinstance(info, msgspec.inspect.DictType):
        return "a table of name = text (name:value,... in the environment)"
    return "a table of keys"


_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def _invalid(
    exc: msgspec.ValidationError, source: str, overrides: dict[str, dict[str, Any]]
) -> ConfigError:
    """A validation error naming the variable or the file's key, and what it accepts."""
    found = _AT.match(str(exc))
    message, at = (found.group("message"), found.group("path")) if found else (str(exc), "")
    path = [part.partition("[")[0] for part in at.lstrip(".").split(".")]  # keys[0]: keys
    if (unknown := _UNKNOWN.match(message)) is not None:
        name = unknown.group("name")
        if path == [""]:
            return ConfigError(f"{source}: there is no section [{name}]")
        return ConfigError(f"{source}: [{path[0]}] has no key {name!r}")
    sections = _section_fields()
    if path[0] not in sections:
        return ConfigError(f"{source}: {message}")
    if len(path) < 2 or path[1] not in sections[path[0]]:
        return ConfigError(f"{source}: [{path[0]}] must be a table of keys")
    section, key = path[0], path[1]
    if key in overrides.get(section, {}):
        variable = f"{ENV_PREFIX}{section}_{key}".upper()
        return ConfigError(
            f"{variable}: expected {accepted(sections[section][key], environment=True)}"
        )
    return ConfigError(f"{source}: [{section}] {key}: expected {accepted(sections[section][key])}")


def _check_account_tables(data: dict[str, Any], source: str) -> None:
    """Each `[line.accounts.<name>]` table on its own, so an error names its account (a
    validation error inside a table of tables does not say which)."""
    line = data.get("line")
    accounts = line.get("accounts") if isinstance(line, dict) else None
    if accounts is None:
        return
    if not isinstance(accounts, dict):
        raise ConfigError(f"{source}: [line] accounts must be tables: [line.accounts.<name>]")
    fields = {f.name: f.type for f in msgspec.structs.fields(LineConfig)}
    for name, table in accounts.items():
        where = f"[line.accounts.{name}]"
        try:
            msgspec.convert(table, LineAccountConfig, strict=True)
        except msgspec.ValidationError as exc:
            found = _AT.match(str(exc))
            message, at = (found.group("message"), found.group("path")) if found else (str(exc), "")
            if (unknown := _UNKNOWN.match(message)) is not None:
                raise ConfigError(
                    f"{source}: {where} has no key {unknown.group('name')!r}"
                ) from None
            key = at.lstrip(".").split(".")[0].partition("[")[0]
            if key in fields:
                message = f"expected {accepted(fields[key])}"
            raise ConfigError(f"{source}: {where} {key}: {message}") from None


_TOML_POSITION = re.compile(r"^(?P<message>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")


def _toml_error(path: str | Path, exc: tomllib.TOMLDecodeError) -> ConfigError:
    """ "router.toml, line 3, column 7: Invalid value": where, then what."""
    found = _TOML_POSITION.match(str(exc))
    if found is None:
        return ConfigError(f"{path}: not valid TOML: {exc}")
    return ConfigError(
        f"{path}, line {found.group('line')}, column {found.group('column')}:"
        f" not valid TOML: {found.group('message')}"
    )


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
            raise _toml_error(path, exc) from exc
    data = _renamed(data)
    _check_account_tables(data, str(path))
    overrides = _env_overrides(os.environ if environ is None else environ)
    try:
        # The file is typed (TOML has numbers and booleans), so what it sets is checked
        # strictly: `port = "587"` is a mistake worth naming. Keys the environment overrides
        # are left to that value; environment values are text, converted below.
        msgspec.convert(_without(data, overrides), Config, strict=True)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, str(path), {}) from exc
    for section, values in overrides.items():
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table of keys, not {table!r}")
        table.update(values)
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, str(path or "configuration"), overrides) from exc
    _check_values(config)
    config.journeys.directory = _journeys_directory(config.journeys.directory, path)
    return config


def _journeys_directory(directory: str, config_path: str | Path | None) -> str:
    """A configured journeys directory, resolved against the config file's directory."""
    if not directory:
        return ""
    base = Path(config_path).parent if config_path is not None else Path.cwd()
    resolved = base / directory
    if not resolved.is_dir():
        raise ConfigError(f"[journeys] directory {directory!r} is not a directory ({resolved})")
    return str(resolved)


def default_journeys_directory(config_path: str | Path) -> str:
    """Where `router serve --config PATH` reads journey files when `[journeys] directory` is
    not set: `journeys/` next to the config file, if there is one ("" otherwise)."""
    default = Path(config_path).parent / "journeys"
    return str(default) if default.is_dir() else ""


def _without(data: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The file's tables less the keys the environment replaces."""
    return {
        section: {k: v for k, v in table.items() if k not in overrides.get(section, {})}
        if isinstance(table, dict)
        else table
        for section, table in data.items()
    }


def _check_line_accounts(line: LineConfig) -> None:
    for name, account in line.accounts.items():
        if not LINE_ACCOUNT_NAME.fullmatch(name):
            raise ConfigError(
                f"[line.accounts.{name}]: an account name is 1-32 lower-case letters, digits,"
                " _ or -, starting with a letter"
            )
        if name == DEFAULT_LINE_ACCOUNT and line.channel_access_token:
            raise ConfigError(
                "[line.accounts.default]: the account named default is the [line] section"
                " itself; give it there or name this account otherwise"
            )
        if not account.channel_access_token:
            raise ConfigError(f"[line.accounts.{name}] channel_access_token is required")
        effective = _account_config(line, account)
        _check_plan(f"[line.accounts.{name}]", effective)
    _check_plan("[line]", line)


def _check_plan(where: str, line: LineConfig) -> None:
    if errors := budget_errors(line.default_budget, "default_budget"):
        raise ConfigError(f"{where} default_budget: {errors[0].message}")
    if line.plan == "custom" and line.included_messages is None:
        raise ConfigError(f'{where} plan = "custom" needs included_messages')
    if line.extra_message_yen is not None and line.plan in ("free", "light"):
        raise ConfigError(
            f"{where} the {line.plan} plan sells no messages beyond the ones it includes:"
            ' extra_message_yen does not apply (use plan = "standard" or "custom")'
        )


def _check_values(config: Config) -> None:
    """Values whose type is right but whose meaning is not."""
    import phonenumbers

    _check_line_accounts(config.line)

    region = config.members.default_region
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"[members] default_region {region!r} is not an ISO 3166 region code like 'JP'"
        )
    split_listen(config.http.listen)
    if config.smtp_ingress.listen:
        split_listen(config.smtp_ingress.listen)
    if bool(config.smtp_ingress.tls_cert) != bool(config.smtp_ingress.tls_key):
        raise ConfigError("[smtp_ingress] tls_cert and tls_key go together")
    _check_smtp_ingress_tls(config.smtp_ingress)
    if config.email.ca_file and not Path(config.email.ca_file).is_file():
        raise ConfigError(f"[email] ca_file {config.email.ca_file!r} is not a readable file")
    _check_dkim(config.email)
    if config.email.unsubscribe_secret and len(config.email.unsubscribe_secret) < 32:
        raise ConfigError("[email] unsubscribe_secret must be at least 32 characters")
    if config.events.webhook_url:
        if not config.events.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("[events] webhook_url must be an http:// or https:// URL")
        if not config.events.signing_secret:
            raise ConfigError("[events] signing_secret is required when webhook_url is set")


def _check_dkim(email: EmailConfig) -> None:
    """DKIM names and keys, read now: a key that cannot sign stops the start, not a send."""
    if not (email.dkim_domain or email.dkim_selector or email.dkim_private_key_file) and not (
        email.dkim_second_selector or email.dkim_second_private_key_file
    ):
        return
    from channels.dkim import DkimConfigError, load_signer

    try:
        load_signer(email)
    except DkimConfigError as exc:
        raise ConfigError(str(exc)) from exc


def _check_smtp_ingress_tls(ingress: SmtpIngressConfig) -> None:
    """AUTH without TLS is allowed on loopback only: a listener elsewhere without a
    certificate would refuse every sender, so it is not started at all."""
    if not (ingress.listen and ingress.users) or ingress.tls_cert:
        return
    host, _ = split_listen(ingress.listen)
    if not is_loopback(host):
        raise ConfigError(
            f"[smtp_ingress] listen {ingress.listen!r} is not a loopback address, and AUTH there"
            " needs STARTTLS: set tls_cert and tls_key, or listen on 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    """Whether a listen host only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:8080`) to a (host, port) pair."""
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen address {listen!r} must look like host:port (port 0-65535)")
    return host.strip("[]") or "127.0.0.1", int(port)
