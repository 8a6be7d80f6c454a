"""Configuration: defaults, the TOML file, ROUTER_<SECTION>_<KEY> overrides, listen addresses."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from router.config import Config, ConfigError, load_config, split_listen, unread_environment
from router.database import redact_dsn
from router.line_plans import LineBudget


def write(tmp_path: Path, text: str, name: str = "router.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# defaults


def test_defaults_without_file_or_environment() -> None:
    config = load_config(None, {})
    assert config == Config()
    assert config.http.listen == "127.0.0.1:8080"
    assert config.http.max_body_bytes == 10_000_000
    assert config.database.url == ""
    assert config.database.data_dir == "data/postgres"
    assert config.api.keys == []
    assert config.line.api_base == "https://api.line.me"
    assert config.line.timeout_seconds == 10.0
    assert config.email.port == 25
    assert config.email.starttls is False
    assert config.workers.enabled is True
    assert config.members.default_region == "JP"
    assert not config.line_configured
    assert not config.email_configured


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ROUTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ROUTER_HTTP_LISTEN", "127.0.0.1:9999")
    assert load_config().http.listen == "127.0.0.1:9999"


def test_unrelated_environment_variables_are_ignored() -> None:
    env = {"PATH": "/usr/bin", "ROUTERX_HTTP_LISTEN": "x", "ROUTER_NOSUCHSECTION_KEY": "1"}
    assert load_config(None, env) == Config()


def test_channels_count_as_configured_only_with_their_required_keys() -> None:
    assert load_config(None, {"ROUTER_LINE_CHANNEL_ACCESS_TOKEN": "t"}).line_configured
    assert not load_config(None, {"ROUTER_EMAIL_HOST": "smtp.example.jp"}).email_configured
    assert not load_config(None, {"ROUTER_EMAIL_FROM_ADDRESS": "a@example.jp"}).email_configured
    both = {"ROUTER_EMAIL_HOST": "smtp.example.jp", "ROUTER_EMAIL_FROM_ADDRESS": "a@example.jp"}
    assert load_config(None, both).email_configured


# the TOML file


def test_file_values_are_read_and_the_rest_keep_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[http]
listen = "0.0.0.0:8443"

[database]
url = "postgresql://router@db.example.jp/router"
pool_size = 3

[api]
keys = ["k1", "k2"]

[line]
channel_access_token = "tok"
timeout_seconds = 2.5

[email]
host = "smtp.example.jp"
port = 587
starttls = true
from_address = "news@shop.example.jp"

[workers]
enabled = false
""",
    )
    config = load_config(path, {})
    assert config.http.listen == "0.0.0.0:8443"
    assert config.http.max_body_bytes == 10_000_000
    assert config.database.url == "postgresql://router@db.example.jp/router"
    assert config.database.pool_size == 3
    assert config.database.data_dir == "data/postgres"
    assert config.api.keys == ["k1", "k2"]
    assert config.line.channel_access_token == "tok"
    assert config.line.timeout_seconds == 2.5
    assert config.line.api_base == "https://api.line.me"
    assert config.email.port == 587
    assert config.email.starttls is True
    assert config.email.use_tls is False
    assert config.workers.enabled is False
    assert config.members == Config().members
    assert config.line_configured
    assert config.email_configured


def test_file_path_may_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, '[members]\ndefault_region = "US"\n')
    assert load_config(str(path), {}).members.default_region == "US"


def test_integer_in_file_is_accepted_for_a_float_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\nlease_seconds = 30\n")
    value = load_config(path, {}).workers.lease_seconds
    assert value == 30.0
    assert isinstance(value, float)


# environment overrides


def test_environment_wins_over_file_and_keeps_the_other_file_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[email]\nhost = "file-host"\nport = 2525\nstarttls = true\n[api]\nkeys = ["from-file"]\n',
    )
    env = {
        "ROUTER_EMAIL_HOST": "env-host",
        "ROUTER_EMAIL_STARTTLS": "false",
        "ROUTER_API_KEYS": "a,b",
    }
    config = load_config(path, env)
    assert config.email.host == "env-host"
    assert config.email.starttls is False
    assert config.email.port == 2525  # not overridden: the file's value stays
    assert config.api.keys == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "value", "section", "key", "expected"),
    [
        ("ROUTER_EMAIL_PORT", "587", "email", "port", 587),
        ("ROUTER_HTTP_MAX_BODY_BYTES", "1024", "http", "max_body_bytes", 1024),
        ("ROUTER_LINE_TIMEOUT_SECONDS", "2.5", "line", "timeout_seconds", 2.5),
        ("ROUTER_WORKERS_LEASE_SECONDS", "3", "workers", "lease_seconds", 3.0),
        ("ROUTER_EMAIL_STARTTLS", "true", "email", "starttls", True),
        ("ROUTER_WORKERS_ENABLED", "false", "workers", "enabled", False),
        ("ROUTER_EMAIL_USE_TLS", "1", "email", "use_tls", True),
        ("ROUTER_DATABASE_URL", "postgresql://h/db", "database", "url", "postgresql://h/db"),
        (
            "ROUTER_LINE_API_BASE",
            "http://127.0.0.1:9100",
            "line",
            "api_base",
            "http://127.0.0.1:9100",
        ),
        ("ROUTER_LINE_CHANNEL_ACCESS_TOKEN", "t0k", "line", "channel_access_token", "t0k"),
        ("ROUTER_MEMBERS_DEFAULT_REGION", "US", "members", "default_region", "US"),
        ("ROUTER_API_KEYS", "a,b", "api", "keys", ["a", "b"]),
        ("ROUTER_API_KEYS", " a , ,b,", "api", "keys", ["a", "b"]),
        ("ROUTER_API_KEYS", "only", "api", "keys", ["only"]),
        ("ROUTER_API_KEYS", "", "api", "keys", []),
    ],
)
def test_environment_values_are_converted_to_the_key_type(
    name: str, value: str, section: str, key: str, expected: object
) -> None:
    actual = getattr(getattr(load_config(None, {name: value}), section), key)
    assert actual == expected
    assert type(actual) is type(expected)


def test_environment_true_overrides_false_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\nenabled = false\n")
    assert load_config(path, {"ROUTER_WORKERS_ENABLED": "true"}).workers.enabled is True


def test_environment_override_replaces_a_wrongly_typed_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nlisten = 8080\n")
    with pytest.raises(ConfigError):
        load_config(path, {})
    assert load_config(path, {"ROUTER_HTTP_LISTEN": "[::1]:8080"}).http.listen == "[::1]:8080"


# errors


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[line]\nchannel_access_token = "t"\nchanel_secret = "typo"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert "chanel_secret" in str(info.value)
    assert "line" in str(info.value)


def test_unknown_section_in_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\nhost = "x"\n')
    with pytest.raises(ConfigError, match="smtp"):
        load_config(path, {})


def test_unknown_environment_key_of_a_known_section_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"ROUTER_LINE_FOO": "1"})
    assert "ROUTER_LINE_FOO" in str(info.value)
    assert "foo" in str(info.value)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"ROUTER_EMAIL_PORT": "smtp"}, "ROUTER_EMAIL_PORT=smtp: expected an integer 1-65535"),
        ({"ROUTER_EMAIL_PORT": ""}, "ROUTER_EMAIL_PORT=: expected an integer 1-65535"),
        (
            {"ROUTER_HTTP_MAX_BODY_BYTES": "1.5"},
            "ROUTER_HTTP_MAX_BODY_BYTES=1.5: expected an integer of at least 1",
        ),
        (
            {"ROUTER_WORKERS_ENABLED": "maybe"},
            "ROUTER_WORKERS_ENABLED=maybe: expected a boolean: true/false, 1/0 or yes/no",
        ),
        (
            {"ROUTER_LINE_TIMEOUT_SECONDS": "soon"},
            "ROUTER_LINE_TIMEOUT_SECONDS=soon: expected a number greater than 0",
        ),
        (
            {"ROUTER_JOURNEYS_MAX_DEFERRAL": "3 days"},
            "ROUTER_JOURNEYS_MAX_DEFERRAL: expected text matching ^P",
        ),
    ],
)
def test_environment_value_of_the_wrong_type_names_the_variable_and_what_it_takes(
    env: dict[str, str], said: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env)
    assert str(info.value).startswith(said), info.value


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[email]\nport = "smtp"\n', "[email] port: expected an integer 1-65535"),
        ("[http]\nlisten = 8080\n", "[http] listen: expected text"),
        ('[api]\nkeys = "k1,k2"\n', "[api] keys: expected a list of text"),
        ("[api]\nkeys = [1, 2]\n", "[api] keys: expected a list of text"),
        ("[line]\npush_per_second = 2.5\n", "[line] push_per_second: expected an integer"),
        ('[workers]\nenabled = "perhaps"\n', "[workers] enabled: expected true or false"),
        ("http = 8080\n", "[http] must be a table of keys"),
        ("[emial]\nport = 25\n", "there is no section [emial]"),
        ("[email]\nprot = 25\n", "[email] has no key 'prot'"),
    ],
)
def test_file_value_of_the_wrong_type_names_the_key_and_what_it_takes(
    tmp_path: Path, text: str, said: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value).startswith(f"{path}: {said}"), info.value


@pytest.mark.parametrize(
    ("word", "value"),
    [("true", True), ("YES", True), ("1", True), ("false", False), ("no", False), ("0", False)],
)
def test_environment_booleans_take_true_false_yes_no_one_zero(word: str, value: bool) -> None:
    assert load_config(None, {"ROUTER_EMAIL_STARTTLS": word}).email.starttls is value


def test_broken_toml_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "[email]\nport = 25\nhost = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value) == f"{path}, line 3, column 8: not valid TOML: Invalid value"


def test_database_url_is_the_fallback_of_router_database_url() -> None:
    fallback = "postgresql://app@db.example:5432/router"
    assert load_config(None, {"DATABASE_URL": fallback}).database.url == fallback
    own = "postgresql://router@other.example/router"
    both = {"DATABASE_URL": fallback, "ROUTER_DATABASE_URL": own}
    assert load_config(None, both).database.url == own
    # Set empty, ROUTER_DATABASE_URL still wins: the embedded database.
    assert (
        load_config(None, {"DATABASE_URL": fallback, "ROUTER_DATABASE_URL": ""}).database.url == ""
    )


def test_config_file_is_found_by_flag_variable_then_working_directory(tmp_path: Path) -> None:
    from router.config_file import find_config_file

    assert find_config_file(None, {}, tmp_path).path is None
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "router.toml").write_text("")
    assert find_config_file(None, {}, tmp_path).path == Path("config/router.toml")
    (tmp_path / "router.toml").write_text("")
    assert find_config_file(None, {}, tmp_path).path == Path("router.toml")
    named = {"ROUTER_CONFIG": "/etc/router/router.toml"}
    assert find_config_file(None, named, tmp_path).path == Path("/etc/router/router.toml")
    assert find_config_file("mine.toml", named, tmp_path).path == Path("mine.toml")
    # ROUTER_CONFIG is not a key of any section.
    assert load_config(None, named).database.url == ""


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, {})
    assert str(missing) in str(info.value)


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, {})


def test_malformed_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[http\nlisten = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(path) in str(info.value)


def test_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[email]\nfrom_address = "café@example.jp"\n'.encode("latin-1"))
    with pytest.raises(ConfigError):
        load_config(path, {})


def test_scalar_section_in_file_with_environment_override_is_a_config_error(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "http = 8080\n")
    with pytest.raises(ConfigError):
        load_config(path, {"ROUTER_HTTP_LISTEN": "127.0.0.1:8080"})


# split_listen


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:9000", ("::1", 9000)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        (":8080", ("127.0.0.1", 8080)),
    ],
)
def test_split_listen(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected


@pytest.mark.parametrize(
    "listen",
    ["nonsense", "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:-1", "[::1]", "::"],
)
def test_split_listen_refuses_what_is_not_host_port(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        split_listen(listen)
    assert repr(listen) in str(info.value)


@pytest.mark.parametrize("listen", ["127.0.0.1:65536", "127.0.0.1:70000"])
def test_split_listen_refuses_ports_out_of_range(listen: str) -> None:
    with pytest.raises(ConfigError):
        split_listen(listen)


# redact_dsn


@pytest.mark.parametrize(
    ("dsn", "secret", "shown"),
    [
        (
            "postgresql://router:s3cret@db.example.jp:5432/router",
            "s3cret",
            "postgresql://router:***@db.example.jp:5432/router",
        ),
        (
            "postgresql://router:p@ss:w0rd@db.example.jp/router",
            "p@ss:w0rd",
            "@db.example.jp/router",
        ),
        (
            "postgres://:s3cret@db.example.jp/router",
            "s3cret",
            "postgres://:***@db.example.jp/router",
        ),
        (
            "postgresql://postgres:hunter2@/postgres?host=/tmp/pg",
            "hunter2",
            "postgresql://postgres:***@/postgres?host=/tmp/pg",
        ),
    ],
)
def test_redact_dsn_hides_the_password(dsn: str, secret: str, shown: str) -> None:
    redacted = redact_dsn(dsn)
    assert secret not in redacted
    assert shown in redacted


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://router@db.example.jp/router", "postgresql://db.example.jp/router", "nonsense"],
)
def test_redact_dsn_leaves_a_dsn_without_password_alone(dsn: str) -> None:
    assert redact_dsn(dsn) == dsn


def test_redact_dsn_hides_a_password_query_parameter() -> None:
    assert "s3cret" not in redact_dsn("postgresql://router@db.example.jp/router?password=s3cret")


def test_redact_dsn_keeps_host_when_the_query_contains_an_at_sign() -> None:
    redacted = redact_dsn(
        "postgresql://router:s3cret@db.example.jp/router?application_name=ops@example"
    )
    assert "s3cret" not in redacted
    assert "db.example.jp/router" in redacted


@pytest.mark.parametrize("region", ["jp", "XX", "Japan"])
def test_default_region_must_be_a_known_region_code(region: str) -> None:
    with pytest.raises(ConfigError, match="default_region"):
        load_config(None, {"ROUTER_MEMBERS_DEFAULT_REGION": region})
    assert load_config(None, {"ROUTER_MEMBERS_DEFAULT_REGION": "US"}).members.default_region == "US"


def test_a_number_written_as_text_in_the_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[email]\nport = "587"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value) == f"{path}: [email] port: expected an integer 1-65535"
    # The environment is text, so there the same value is read as a number.
    assert load_config(None, {"ROUTER_EMAIL_PORT": "587"}).email.port == 587


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("ROUTER_WORKERS_CONCURRENCY", "0", "an integer of at least 1"),
        ("ROUTER_LINE_MULTICAST_PER_SECOND", "0", "an integer of at least 1"),
        ("ROUTER_LINE_PUSH_PER_SECOND", "-5", "an integer of at least 1"),
        ("ROUTER_EMAIL_PORT", "70000", "an integer 1-65535"),
        ("ROUTER_WORKERS_LEASE_SECONDS", "0", "a number greater than 0"),
        ("ROUTER_CAMPAIGNS_FAN_OUT_CHUNK", "0", "an integer of at least 1"),
        ("ROUTER_RETENTION_DAYS", "-1", "an integer of at least 0"),
    ],
)
def test_values_that_would_stall_the_router_are_refused(
    variable: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {variable: value})
    assert str(info.value) == f"{variable}={value}: expected {accepted}"


# renamed keys


def test_keys_renamed_for_the_vocabulary_still_work_under_their_old_names(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "[workers]\nbatch_size = 7\n[events]\nbatch_size = 9\n")
    config = load_config(path, {})
    assert (config.workers.claim_size, config.events.events_per_post) == (7, 9)
    from_env = load_config(None, {"ROUTER_WORKERS_BATCH_SIZE": "3"})
    assert from_env.workers.claim_size == 3
    assert load_config(None, {"ROUTER_WORKERS_CLAIM_SIZE": "4"}).workers.claim_size == 4


def test_a_key_under_both_names_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\nbatch_size = 7\nclaim_size = 8\n")
    with pytest.raises(ConfigError, match=r"\[workers\] give claim_size only"):
        load_config(path, {})
    both = {"ROUTER_WORKERS_CLAIM_SIZE": "4", "ROUTER_WORKERS_BATCH_SIZE": "3"}
    for environ in (both, dict(reversed(both.items()))):
        with pytest.raises(ConfigError, match="ROUTER_WORKERS_BATCH_SIZE: give ROUTER_WORKERS_CLA"):
            load_config(None, environ)


def test_a_misspelt_section_is_reported_with_the_likely_name() -> None:
    env = {"ROUTER_EMIAL_HOST": "smtp.example.jp", "ROUTER_CONFIG": "x.toml", "ROUTER_X": "1"}
    assert load_config(None, env) == Config()  # still not an error
    assert unread_environment(env) == [
        "ROUTER_EMIAL_HOST names no configuration section and is ignored;"
        " did you mean ROUTER_EMAIL_HOST?",
        "ROUTER_X names no configuration section and is ignored",
    ]
    assert unread_environment({"ROUTER_EMAIL_HOST": "h", "PATH": "/bin"}) == []


ACCOUNTS = """
[line]
channel_access_token = "t0"
channel_secret = "s0"
api_base = "http://127.0.0.1:9"
plan = "light"
push_per_second = 50
forward_webhooks_to = ["https://bot.example.jp/hook"]

[line.accounts.shop-b]
channel_access_token = "t1"
channel_secret = "s1"
plan = "standard"
default_budget = { max_yen = 500 }
"""


def test_line_accounts_take_their_own_credentials_and_the_rest_from_line(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ACCOUNTS), {})
    accounts = config.line_accounts()
    assert list(accounts) == ["default", "shop-b"]
    shop = accounts["shop-b"]
    assert (shop.channel_access_token, shop.channel_secret) == ("t1", "s1")
    assert (shop.api_base, shop.push_per_second) == ("http://127.0.0.1:9", 50)
    assert shop.forward_webhooks_to == []  # one channel's own, never inherited
    assert accounts["default"].forward_webhooks_to == ["https://bot.example.jp/hook"]
    light, standard = accounts["default"].plan_terms(), shop.plan_terms()
    assert light is not None and standard is not None
    assert (light.included_messages, light.extra_message_yen) == (5_000, None)
    assert (standard.included_messages, standard.extra_message_yen) == (30_000, 3)
    assert accounts["default"].default_budget == "included_only"
    assert shop.default_budget == msgspec.convert({"max_yen": 500}, LineBudget)
    assert config.line_configured


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('plan = "gold"', '[line.accounts.shop-b] plan: expected one of "", "custom"'),
        ("colour = 1", "[line.accounts.shop-b] has no key 'colour'"),
        (
            "default_budget = { max_messages = 3, max_yen = 2.0 }",
            "[line.accounts.shop-b] default_budget: give exactly one of max_messages and max_yen",
        ),
        (
            'default_budget = "sometimes"',
            '[line.accounts.shop-b] default_budget: expected "included_only", "unlimited",',
        ),
        ("push_per_second = 0", "[line.accounts.shop-b] push_per_second: expected an integer"),
        ('plan = "custom"', '[line.accounts.shop-b] plan = "custom" needs included_messages'),
        (
            'plan = "light"\nextra_message_yen = 2.5',
            "[line.accounts.shop-b] the light plan sells no messages beyond",
        ),
    ],
)
def test_a_bad_account_key_is_named_with_its_account(
    tmp_path: Path, line: str, message: str
) -> None:
    text = ACCOUNTS.replace('plan = "standard"\ndefault_budget = { max_yen = 500 }', line)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), {})
    assert message in str(caught.value)


def test_account_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[line.accounts.Shop B\]: an account name is"):
        load_config(write(tmp_path, ACCOUNTS.replace("shop-b", '"Shop B"')), {})
    with pytest.raises(ConfigError, match="the account named default is the"):
        load_config(write(tmp_path, ACCOUNTS.replace("shop-b", "default")), {})
    without_token = ACCOUNTS.replace('channel_access_token = "t1"\n', "")
    with pytest.raises(ConfigError, match=r"\[line.accounts.shop-b\] channel_access_token"):
        load_config(write(tmp_path, without_token), {})
