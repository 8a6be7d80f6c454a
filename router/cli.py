"""`router` command line: serve, migrate, keys, line-simulator, email dkim-keygen, ..."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from router.config import (
    DATABASE_URL_FALLBACK,
    DEFAULT_LINE_ACCOUNT,
    Config,
    ConfigError,
    default_journeys_directory,
    load_config,
    split_listen,
    unread_environment,
)
from router.config_file import ConfigFile, find_config_file
from router.database import DatabaseUnreachable
from router.log_json import JsonFormatter, use_json_logs
from router.log_safety import configure_logging

if TYPE_CHECKING:
    from channels.base import LineAccount
    from router.audiences import AudienceType
    from router.database import Pool

log = logging.getLogger("router")


def _parse_id(value: str, what: str) -> uuid.UUID | None:
    """The id, or None after saying on stderr why it is not one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        print(f"router: {value!r} is not {what} id (a UUID)", file=sys.stderr)
        return None


@contextlib.asynccontextmanager
async def _database(config: Config, connections: int) -> AsyncIterator[Pool]:
    """The configured database, migrated, as a small pool for one command."""
    from router.database import create_pool, database_target, migrate

    target = database_target(config)
    await migrate(target.dsn)
    pool = await create_pool(target.dsn, connections)
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _line_account(
    config: Config, name: str = DEFAULT_LINE_ACCOUNT
) -> AsyncIterator[LineAccount | None]:
    """The LINE account `name` (None: it is not configured)."""
    from channels.registry import build_adapters

    channels, accounts = build_adapters(config)
    try:
        yield accounts.get(name)
    finally:
        for account in accounts.values():
            await account.aclose()
        for channel in channels.values():
            await channel.aclose()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API and the delivery workers")
    serve.add_argument(
        "--config",
        help="TOML file (default: $ROUTER_CONFIG, else ./router.toml, else ./config/router.toml)",
    )
    serve.add_argument(
        "--sandbox",
        action="store_true",
        help="LINE and email stay in this process: nothing leaves the machine ([sandbox])",
    )
    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate.add_argument("--config")
    line = sub.add_parser("line", help="LINE account tasks")
    line_sub = line.add_subparsers(dest="line_command", required=True)
    sync = line_sub.add_parser(
        "sync-followers", help="correct friend flags from LINE's follower list"
    )
    sync.add_argument("--config")
    _account_option(sync)
    webhook = line_sub.add_parser("webhook", help="the channel's webhook URL at LINE")
    webhook_sub = webhook.add_subparsers(dest="webhook_command", required=True)
    webhook_set = webhook_sub.add_parser(
        "set", help="make URL (https://<host>/webhooks/line) the channel's webhook URL"
    )
    webhook_set.add_argument("url")
    webhook_show = webhook_sub.add_parser("show", help="the webhook URL LINE holds")
    webhook_test = webhook_sub.add_parser(
        "test", help="have LINE send a test webhook (to URL, else to the URL set)"
    )
    webhook_test.add_argument("url", nargs="?")
    for command in (webhook_set, webhook_show, webhook_test):
        command.add_argument("--config")
        _account_option(command)
    hasher = sub.add_parser(
        "hash-password", help="hash a password for [smtp_ingress] users (reads it from stdin)"
    )
    hasher.add_argument("--password", help="the password (default: read a line from stdin)")
    audiences = sub.add_parser("audiences", help="audience uploads")
    audiences_sub = audiences.add_subparsers(dest="audiences_command", required=True)
    upload = audiences_sub.add_parser(
        "upload", help="create an audience from a file of emails, phone numbers or LINE user IDs"
    )
    upload.add_argument("file", help="CSV or TXT, one value per line, no header")
    upload.add_argument("--type", required=True, choices=["email", "phone", "line_user_id"])
    upload.add_argument("--name", required=True)
    upload.add_argument("--config")
    line_sync = audiences_sub.add_parser(
        "line-sync", help="create or update the LINE audience of an audience's LINE friends"
    )
    line_sync.add_argument("audience_id")
    line_sync.add_argument("--config")
    campaigns = sub.add_parser("campaigns", help="campaign progress")
    campaigns_sub = campaigns.add_subparsers(dest="campaigns_command", required=True)
    status = campaigns_sub.add_parser("status", help="progress and delivery counts of a campaign")
    status.add_argument("campaign_id")
    status.add_argument("--config")
    journeys = sub.add_parser("journeys", help="journey progress")
    journeys_sub = journeys.add_subparsers(dest="journeys_command", required=True)
    journey_status = journeys_sub.add_parser("status", help="a journey's runs, step by step")
    journey_status.add_argument("journey_id")
    journey_status.add_argument("--config")
    keys = sub.add_parser("keys", help="API keys stored in the database")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key and print it once")
    create.add_argument("--name", default="", help="what the key is for (shown by list)")
    create.add_argument("--config")
    keys_list = keys_sub.add_parser("list", help="stored keys: id, name, created, last used")
    keys_list.add_argument("--config")
    revoke = keys_sub.add_parser("revoke", help="delete a stored key (401 within a second)")
    revoke.add_argument("key_id")
    revoke.add_argument("--config")
    templates = sub.add_parser("templates", help="email templates")
    templates_sub = templates.add_subparsers(dest="templates_command", required=True)
    template_import = templates_sub.add_parser(
        "import", help="store templates exported from SendGrid (GET /v3/templates/{id} JSON)"
    )
    template_import.add_argument("file")
    template_import.add_argument("--config")
    email = sub.add_parser("email", help="email tasks")
    email_sub = email.add_subparsers(dest="email_command", required=True)
    keygen = email_sub.add_parser(
        "dkim-keygen", help="make a DKIM private key; print its DNS record and [email] lines"
    )
    keygen.add_argument("--domain", required=True, help="the signing domain (d=)")
    keygen.add_argument("--selector", required=True, help="the selector (s=)")
    keygen.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    keygen.add_argument("--bits", type=int, default=2048, help="RSA key size (at least 2048)")
    keygen.add_argument("--out", required=True, help="the private key's file (made, mode 0600)")
    events = sub.add_parser("events", help="delivery event tasks")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    public_key = events_sub.add_parser(
        "public-key",
        help="print the public key that verifies the signed event posts (SendGrid's form)",
    )
    public_key.add_argument("--config")
    sim = sub.add_parser("line-simulator", help="run the local LINE Messaging API simulator")
    sim.add_argument("--listen", default="127.0.0.1:9100")
    sim.add_argument("--token", action="append", required=True, help="accepted access token")
    sim.add_argument("--channel-secret", help="the secret that signs the webhooks it sends")
    sim.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="NAME:TOKEN[:SECRET]",
        help="serve a further LINE channel at the same URL (repeatable)",
    )
    sim.add_argument(
        "--faults",
        default="",
        help="send requests fail or answer late at these rates, e.g. 500=0.2,429=0.1,timeout=0.05",
    )
    sim.add_argument("--faults-seed", type=int, default=0, help="seed of the fault draws")
    sim.add_argument(
        "--late-seconds", type=float, default=5.0, help="how late a 'timeout' fault answers"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()
    try:
        if args.command == "hash-password":
            from router.passwords import hash_password

            password = args.password or sys.stdin.readline().rstrip("\n")
            if not password:
                return _fail("give a password", 2)
            print(hash_password(password))
            return 0
        if args.command == "line-simulator":
            from linesim import parse_channel, parse_fault_rates, run

            try:
                rates = parse_fault_rates(args.faults)
            except ValueError as exc:
                return _fail(f"--faults: {exc}", 2)
            try:
                channels = [parse_channel(text) for text in args.channel]
            except ValueError as exc:
                return _fail(f"--channel: {exc}", 2)
            try:
                run(
                    args.listen,
                    list(args.token),
                    channel_secret=args.channel_secret,
                    fault_rates=rates,
                    fault_seed=args.faults_seed,
                    late_seconds=args.late_seconds,
                    channels=channels,
                )
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else exc.strerror
                return _fail(f"line-simulator cannot listen on {args.listen}: {reason}", 1)
            except ValueError as exc:  # a bad --listen, or two channels of one name or token
                return _fail(f"line-simulator: {exc}", 2)
            return 0
        if args.command == "email":
            return _dkim_keygen(args.domain, args.selector, args.algorithm, args.bits, args.out)
        config_file = find_config_file(args.config, os.environ, Path.cwd())
        config = load_config(config_file.path)
        for note in unread_environment(os.environ):
            print(f"router: {note}", file=sys.stderr)
        if config.log.format == "json":
            use_json_logs()
        if args.command == "keys":
            return asyncio.run(_keys(config, args))
        if args.command == "migrate":
            return asyncio.run(_migrate(config))
        if args.command == "audiences" and args.audiences_command == "line-sync":
            return asyncio.run(_audiences_line_sync(config, args.audience_id))
        if args.command == "audiences":
            return _audiences_upload(config, args.file, args.type, args.name)
        if args.command == "line" and args.line_command == "webhook":
            return asyncio.run(
                _line_webhook(
                    config, args.webhook_command, getattr(args, "url", None), args.account
                )
            )
        if args.command == "line":
            return asyncio.run(_sync_followers(config, args.account))
        if args.command == "campaigns":
            return asyncio.run(_campaign_status(config, args.campaign_id))
        if args.command == "journeys":
            return asyncio.run(_journey_status(config, args.journey_id))
        if args.command == "events":
            return asyncio.run(_events_public_key(config))
        if args.command == "templates":
            return _templates_import(config, args.file)
        if config_file.path is not None and not config.journeys.directory:
            config.journeys.directory = default_journeys_directory(config_file.path)
        config.sandbox.enabled = config.sandbox.enabled or args.sandbox
        return _serve(config, config_file)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except DatabaseUnreachable as exc:
        return _fail(str(exc), 1)


async def _keys(config: Config, args: argparse.Namespace) -> int:
    """`router keys create|list|revoke`: stored keys, named by id; a key is printed only when
    it is made."""
    from router import api_keys

    wanted = _parse_id(args.key_id, "an API key") if args.keys_command == "revoke" else None
    if args.keys_command == "revoke" and wanted is None:
        return 2
    async with _database(config, 1) as pool, pool.acquire() as conn:
        if args.keys_command == "create":
            key_id, token = await api_keys.create(conn, args.name.strip())
            print(f"API key {key_id} (shown once, stored only as a hash):", file=sys.stderr)
            print(token)
            return 0
        if wanted is not None:
            if not await api_keys.revoke(conn, wanted):
                return _fail(f"no stored API key with id {wanted}", 1)
            print(f"revoked {wanted}")
            return 0
        stored = await api_keys.stored_keys(conn)
    for key in stored:
        used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
        created = key.created_at.isoformat(timespec="seconds")
        print(f"{key.id}  created {created}  last used {used}  {key.name}".rstrip())
    if config.api.keys:
        print(f"(and {len(config.api.keys)} configured in [api] keys / ROUTER_API_KEYS)")
    return 0


async def _events_public_key(config: Config) -> int:
    """The key a receiver verifies `X-Twilio-Email-Event-Webhook-Signature` with: base64 DER
    SubjectPublicKeyInfo, what SendGrid's console shows and its verifiers take."""
    from router.delivery import event_signing

    key = event_signing.configured_key(config.events)
    if key is None:
        async with _database(config, 1) as pool, pool.acquire() as conn:
            key = await event_signing.signing_key(conn, config.events)
    print(event_signing.public_key_text(key))
    return 0


async def _campaign_status(config: Config, campaign_id: str) -> int:
    from router import campaigns, cli_status

    wanted = _parse_id(campaign_id, "a campaign")
    if wanted is None:
        return 2
    async with _database(config, 1) as pool, pool.acquire() as conn:
        found = await campaigns.view(conn, wanted)
    if found is None:
        return _fail(f"no campaign with id {wanted}", 1)
    cli_status.print_campaign(found)
    return 0


async def _journey_status(config: Config, journey_id: str) -> int:
    from router import cli_status
    from router.journeys.progress import journey_progress

    async with _database(config, 1) as pool, pool.acquire() as conn:
        found = await journey_progress(conn, journey_id)
    if found is None:
        return _fail(f"no journey with id {journey_id!r}", 1)
    cli_status.print_journey(found)
    return 0


def _templates_import(config: Config, path: str) -> int:
    """Each template imported or refused gets one line; 1 if any was refused."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {path}: {exc.strerror}", 2)
    return asyncio.run(_import_templates(config, path, data))


async def _import_templates(config: Config, path: str, data: bytes) -> int:
    from router.ingress.sendgrid_template_import import import_export

    async with _database(config, 1) as pool, pool.acquire() as conn:
        try:
            report = await import_export(conn, data)
        except ValueError as exc:
            return _fail(f"{path}: {exc}", 2)
    for template_id in report.imported:
        print(f"imported {template_id}")
    for line in report.refused:
        print(f"router: refused {line}", file=sys.stderr)
    return 1 if report.refused else 0


def _audiences_upload(config: Config, path: str, kind: str, name: str) -> int:
    from router import audiences
    from router.problems import FieldError

    checked = audiences.check_type(kind)
    error = audiences.check_name(name)
    if isinstance(checked, FieldError) or error is not None:
        return _fail(f"{error.message if error else 'unknown type'}", 2)
    try:
        file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        return _fail(f"cannot read {path}: {exc.strerror}", 2)
    with file:
        total = os.fstat(file.fileno()).st_size
        return asyncio.run(_upload_audience(config, file, total, checked, name))


async def _upload_audience(
    config: Config, file: BinaryIO, total: int, kind: AudienceType, name: str
) -> int:
    """Same checks and report as POST /v1/audiences, straight against the database."""

    import msgspec

    from router import audiences
    from router.problems import ProblemError

    async def chunks() -> AsyncIterator[bytes]:
        while chunk := file.read(1 << 16):
            yield chunk

    def progress(done: int) -> None:
        filled = 30 * done // max(total, 1)
        bar = "#" * filled + "-" * (30 - filled)
        print(f"\r[{bar}] {done / 1e6:,.1f}/{total / 1e6:,.1f} MB", end="", file=sys.stderr)

    try:
        async with _database(config, 1) as pool, pool.acquire() as conn, conn.transaction():
            audience_id = await audiences.create(conn, name.strip(), kind)
            counts = await audiences.ingest(
                conn, audience_id, kind, config.members.default_region, chunks(), progress
            )
            await audiences.record(conn, audience_id, counts)
            report = await audiences.report(conn, audience_id)
    except ProblemError as exc:
        return _fail(f"\n{exc.problem.detail}", 1)
    print(file=sys.stderr)
    print(msgspec.json.format(msgspec.json.encode(report)).decode())
    return 0


async def _audiences_line_sync(config: Config, audience_id: str) -> int:
    """Same as POST /v1/audiences/{id}/line-sync, with a count of IDs sent as it goes."""
    import msgspec

    from router.line import audience_sync as line_audience_sync
    from router.problems import ProblemError

    wanted = _parse_id(audience_id, "an audience")
    if wanted is None:
        return 2

    from router import audiences

    progress = _counter("LINE user IDs uploaded")
    # One connection: each page, turn at LINE and record takes it only briefly.
    async with _database(config, 1) as pool:
        async with pool.acquire() as conn:
            name = await audiences.line_account_of(conn, wanted)
        if name is None:
            return _fail(f"no audience with id {wanted}", 1)
        async with _line_account(config, name) as account:
            # The audience's LINE audience is made in the audience's own LINE account.
            if account is None:
                return _fail(f"{_section(name)} channel_access_token is not set", 2)
            try:
                result = await line_audience_sync.sync(pool, account, wanted, progress)
            except ProblemError as exc:
                return _fail(f"\n{exc.problem.detail}", 1)
    print(file=sys.stderr)
    print(msgspec.json.format(msgspec.json.encode(result)).decode())
    return 0


def _dkim_keygen(domain: str, selector: str, algorithm: str, bits: int, out: str) -> int:
    """A new key in `out` (never over an existing file), then what DNS and [email] need."""
    from channels.dkim import DkimConfigError, check_names, generate_key, txt_record
    from router.config import EmailConfig

    names = EmailConfig(dkim_domain=domain, dkim_selector=selector, dkim_private_key_file=out)
    try:
        check_names(names)
    except DkimConfigError as exc:
        return _fail(
            str(exc)
            .replace("[email] dkim_domain", "--domain")
            .replace("[email] dkim_selector", "--selector"),
            2,
        )
    if algorithm == "rsa" and bits < 2048:
        return _fail(f"--bits {bits}: an RSA DKIM key needs at least 2048 bits", 2)
    key = generate_key("rsa" if algorithm == "rsa" else "ed25519", bits)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return _fail(f"cannot create {out}: {exc.strerror} (an existing key is never replaced)", 1)
    with os.fdopen(fd, "wb") as file:
        file.write(key.pem)
    path = os.path.abspath(out)
    print(f"private key written to {path} (mode 0600)")
    print()
    print("DNS record to publish:")
    print(txt_record(selector, domain, key.dns_value))
    print()
    print("[email] lines to add:")
    print(f'dkim_domain = "{domain}"')
    print(f'dkim_selector = "{selector}"')
    print(f'dkim_private_key_file = "{path}"')
    return 0


def _fail(message: str, code: int) -> int:
    """Say why on stderr, as "router: why", and give the exit code."""
    leading = "\n" if message.startswith("\n") else ""
    print(f"{leading}router: {message.lstrip()}", file=sys.stderr)
    return code


def _counter(what: str) -> Callable[[int], None]:
    """A running count on stderr, rewritten in place as work goes on."""

    def show(count: int) -> None:
        print(f"\r{what}: {count:,}", end="", file=sys.stderr, flush=True)

    return show


async def _migrate(config: Config) -> int:
    from router.database import database_target, migrate

    target = database_target(config)
    applied = await migrate(target.dsn)
    print(
        f"{target.description}: applied {len(applied)} migration(s) {', '.join(applied)}".rstrip()
    )
    return 0


def _account_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--account",
        default=DEFAULT_LINE_ACCOUNT,
        metavar="NAME",
        help='the LINE account ([line.accounts.NAME]; default "default": [line])',
    )


def _unknown_account(config: Config, name: str) -> str | None:
    """Why `--account name` cannot be used (None: it can)."""
    if name == DEFAULT_LINE_ACCOUNT or name in config.line.accounts:
        return None
    known = ", ".join(sorted({DEFAULT_LINE_ACCOUNT, *config.line.accounts}))
    return f"--account {name}: no such LINE account in the configuration (known: {known})"


def _section(name: str) -> str:
    return "[line]" if name == DEFAULT_LINE_ACCOUNT else f"[line.accounts.{name}]"


async def _line_webhook(config: Config, command: str, url: str | None, account: str) -> int:
    from router import cli_line_webhook

    if (unknown := _unknown_account(config, account)) is not None:
        return _fail(unknown, 2)
    settings = config.line_accounts().get(account)
    if settings is None:
        return _fail(f"{_section(account)} channel_access_token is not set", 2)
    if command == "set":
        assert url is not None
        return await cli_line_webhook.set_endpoint(settings, url, account)
    if command == "test":
        return await cli_line_webhook.send_test(settings, url)
    return await cli_line_webhook.show_endpoint(settings)


async def _sync_followers(config: Config, name: str) -> int:
    from channels.base import ProviderError
    from router.line.follower_sync import FollowerSyncBusy, sync_followers

    if (unknown := _unknown_account(config, name)) is not None:
        return _fail(unknown, 2)
    progress = _counter("followers read")
    async with _line_account(config, name) as account:
        if account is None:
            return _fail(f"{_section(name)} channel_access_token is not set", 2)
        try:
            # One connection: each page and chunk takes it only briefly.
            async with _database(config, 1) as pool:
                report = await sync_followers(pool, account, progress, name)
        except ProviderError as exc:
            return _fail(f"\nLINE refused the follower list: {exc}; run again to resume", 1)
        except FollowerSyncBusy as exc:
            return _fail(f"\n{exc}", 1)
    print(
        f"\n{report.followers:,} followers; friend flag corrected on "
        f"{report.members_changed:,} member(s)"
    )
    return 0


def _summary_record(line: str) -> logging.LogRecord:
    """A start-up line as a log record, so that in JSON mode it is one JSON object too."""
    return logging.LogRecord("router.start", logging.INFO, __file__, 0, line, None, None)


def _serve(config: Config, config_file: ConfigFile) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(serve(config, config_file=config_file))


async def serve(
    config: Config, ready: asyncio.Event | None = None, config_file: ConfigFile | None = None
) -> int:
    import uvicorn

    from router.api.app import create_app
    from router.journeys.files import JourneyFileError
    from router.service import ListenError, start_runtime

    json_logs = config.log.format == "json"
    host, port = split_listen(config.http.listen)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until the server accepts them
    except OSError as exc:
        return _fail(f"cannot listen on {config.http.listen}: {exc.strerror}", 1)
    # Before the workers start: a stop asked for while they start (they may already be sending)
    # is a clean stop once they have, never the default handler's abrupt exit.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # uvicorn handles the signal while it serves, then re-raises it to this handler.
        loop.add_signal_handler(sig, stop.set)
    try:
        runtime = await start_runtime(config)
    except ListenError as exc:
        return _fail(str(exc), 1)
    except JourneyFileError as exc:
        return _fail(str(exc), 2)
    # What exists now (modules, the SDK's models, configuration) lives as long as the process:
    # keep it out of every later collection, which then only walks what requests allocate.
    gc.collect()
    gc.freeze()
    try:
        summary = describe(
            runtime.config,
            sock.getsockname()[1],
            database=runtime.target.description,
            config_file=config_file,
            api_keys=runtime.api_keys.describe(),
            channels=runtime.configured_channels,
            smtp_listening=runtime.smtp_server is not None,
            generated_api_key=runtime.generated_api_key,
            journey_files=[file.journey.enabled for file in runtime.journey_files],
        )
        summary[1:1] = runtime.sandbox.describe() if runtime.sandbox is not None else []
        for line in summary:
            if json_logs:  # every line of the output one JSON object
                print(JsonFormatter().format(_summary_record(line)), flush=True)
            else:
                print(line, flush=True)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(runtime),
                log_level="warning",
                access_log=False,
                # JSON: uvicorn's own records go through the root logger's JSON handler.
                log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
                http="httptools",
                lifespan="on",
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        if ready is not None:
            ready.set()
        await asyncio.wait(
            [serving, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED"
        )
        server.should_exit = True
        await serving
    finally:
        await runtime.aclose()
    return 0


def describe(
    config: Config,
    port: int,
    *,
    database: str,
    channels: Collection[str],
    smtp_listening: bool,
    generated_api_key: str | None,
    journey_files: Sequence[bool] = (),
    config_file: ConfigFile | None = None,
    api_keys: str = "",
) -> list[str]:
    """The few lines `router serve` prints: where, which database, which channels.

    `database` is the target's printable description (no password), `channels` the names of
    the configured channels, `generated_api_key` a key made at this start (shown once),
    `journey_files` whether each journey file read is enabled."""
    host, _ = split_listen(config.http.listen)
    lines = [
        f"delivery-router listening on http://{host}:{port} (OpenAPI at /schema)",
        f"config: {(config_file or ConfigFile(None, '')).describe()}",
        f"database: {database}{_database_url_source(config)}",
    ]
    from channels.registry import descriptors

    for channel in descriptors():
        if channel.name in channels and channel.describe is not None:
            lines.append(f"channel {channel.name}: {channel.describe(config)}")
        elif channel.name not in channels and channel.describe_unconfigured is not None:
            lines.append(f"channel {channel.name}: {channel.describe_unconfigured}")
    ingress = config.smtp_ingress
    if smtp_listening:
        lines.append(
            f"smtp ingress: listening on {ingress.listen} for {len(ingress.users)} sender(s)"
        )
        if config.email.bounce_domain:
            lines.append(f"smtp ingress: the MX of {config.email.bounce_domain} (bounces)")
    elif ingress.listen:
        lines.append("smtp ingress: off until [smtp_ingress] users are set")
    if config.journeys.directory:
        lines.append(
            f"journeys: {len(journey_files)} file(s) in {config.journeys.directory},"
            f" {sum(journey_files)} enabled"
        )
    if not config.workers.enabled:
        lines.append("workers: off in this process ([workers] enabled = false); API only")
    if api_keys:
        lines.append(f"API keys: {api_keys}")
    if generated_api_key:
        lines.append(f"API key (shown once, stored only as a hash): {generated_api_key}")
    return lines


def _database_url_source(config: Config) -> str:
    """ " (from DATABASE_URL)" when the URL came from that variable, not ROUTER_DATABASE_URL."""
    fallback = os.environ.get(DATABASE_URL_FALLBACK)
    if "ROUTER_DATABASE_URL" in os.environ or not fallback or config.database.url != fallback:
        return ""
    return f" (from {DATABASE_URL_FALLBACK})"
