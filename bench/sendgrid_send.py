"""SendGrid door intake: `POST /v3/mail/send` recipients accepted per second, by kind of body.

Each tree measured (this one, and with --base the tree to compare with: by default
$BENCH_BASE_TREE when set) runs an API-only router (`[workers] enabled = false`, so sending
does not compete for the CPU) on a database of its own in one PostgreSQL. A closed loop with
--concurrency requests in flight posts Mail Send bodies of --recipients personalizations (one
`to` each, with `dynamic_template_data` or substitutions of its own) for --seconds, per
variant:

  plain:      text and HTML content with a substitution per personalization (every tree);
  template:   a dynamic template (`template_id` d-..., Handlebars with {{#if}} and {{#each}},
              an HTML and a plain version, created through /v3/templates first), when the
              tree has /v3/templates;
  attachment: plain plus one PDF-like attachment of --attachment-kb kilobytes, when the tree
              takes attachments.

Printed per variant: recipients accepted per second, requests per second, p50/p99 request
latency, and the router process's CPU milliseconds per recipient (from /proc: steadier than
rates on a shared machine); then the ratios template/plain and attachment/plain on this tree
and this/base for plain. Every answer must be 202.

Usage (from the tree's root, venv active):
    PYTHONPATH=$PWD python bench/sendgrid_send.py [--base ../before] [--recipients 100]
        [--seconds 10] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

# Run as a script, this directory is on the path: the helpers of bench/throughput.py.
from single_intents import cpu_seconds, databases, migrate, trees
from throughput import API_KEY, free_port, process, router_env, wait_http

DEFAULT_BASE = Path(os.environ["BENCH_BASE_TREE"]) if os.environ.get("BENCH_BASE_TREE") else None
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
TEMPLATE_HTML = (
    "<p>{{first_name}} 様</p>{{#if vip}}<p>VIP</p>{{/if}}<ul>{{#each items}}"
    "<li>{{this.name}}: ¥{{this.price}}</li>{{/each}}</ul>"
)


@dataclass
class Figures:
    recipients_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_recipient: float


def _personalizations(count: int, offset: int, template: bool) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(offset, offset + count):
        p: dict[str, object] = {"to": [{"email": f"r{i}@example.org", "name": f"R {i}"}]}
        if template:
            p["dynamic_template_data"] = {
                "first_name": f"R{i}",
                "vip": i % 2 == 0,
                "items": [{"name": "tea", "price": 300}, {"name": "cake", "price": 450}],
            }
        else:
            p["substitutions"] = {"-name-": f"R{i}"}
        out.append(p)
    return out


def body(variant: str, recipients: int, offset: int, template_id: str | None, kb: int) -> dict:
    mail: dict[str, object] = {
        "personalizations": _personalizations(recipients, offset, variant == "template"),
        "from": {"email": "shop@example.jp", "name": "Shop"},
    }
    if variant == "template":
        mail["template_id"] = template_id
    else:
        mail["subject"] = "Autumn sale"
        mail["content"] = [
            {"type": "text/plain", "value": "Dear -name-, 20% off until Sunday."},
            {"type": "text/html", "value": "<p>Dear -name-, <b>20% off</b> until Sunday.</p>"},
        ]
    if variant == "attachment":
        blob = (b"%PDF-1.4\n" + bytes(range(256)) * 4 * kb)[: kb * 1024]
        mail["attachments"] = [
            {
                "content": base64.b64encode(blob).decode(),
                "filename": "invoice.pdf",
                "type": "application/pdf",
                "disposition": "attachment",
            }
        ]
    return mail


async def create_template(session: aiohttp.ClientSession, base: str) -> str | None:
    """A dynamic template with an active version, or None when the tree has no templates."""
    async with session.post(
        f"{base}/v3/templates", json={"name": "bench", "generation": "dynamic"}, headers=HEADERS
    ) as resp:
        if resp.status == 404:
            return None
        assert resp.status == 201, await resp.text()
        template_id: str = (await resp.json())["id"]
    version = {
        "name": "v1",
        "subject": "{{first_name}} 様へのお知らせ",
        "html_content": TEMPLATE_HTML,
        "plain_content": "{{first_name}} 様{{#each items}} {{this.name}}{{/each}}",
        "active": 1,
    }
    async with session.post(
        f"{base}/v3/templates/{template_id}/versions", json=version, headers=HEADERS
    ) as resp:
        assert resp.status == 201, await resp.text()
    return template_id


async def takes_attachments(session: aiohttp.ClientSession, base: str) -> bool:
    mail = body("attachment", 1, 10**9, None, 1)
    mail["mail_settings"] = {"sandbox_mode": {"enable": True}}
    async with session.post(f"{base}/v3/mail/send", json=mail, headers=HEADERS) as resp:
        return resp.status in (200, 202)


async def closed_loop(
    session: aiohttp.ClientSession,
    base: str,
    pid: int,
    variant: str,
    args: argparse.Namespace,
    template_id: str | None,
    start_offset: int,
) -> Figures:
    latencies: list[float] = []
    counter = start_offset
    deadline = time.monotonic() + args.seconds
    # Bodies are encoded before the clock starts: the client's cost is not the router's.
    pool = [
        json.dumps(
            body(
                variant,
                args.recipients,
                start_offset + k * args.recipients,
                template_id,
                args.attachment_kb,
            )
        ).encode()
        for k in range(args.concurrency * 4)
    ]

    async def worker(w: int) -> None:
        nonlocal counter
        n = w
        while time.monotonic() < deadline:
            data = pool[n % len(pool)]
            n += args.concurrency
            t0 = time.monotonic()
            async with session.post(f"{base}/v3/mail/send", data=data, headers=HEADERS) as resp:
                assert resp.status == 202, await resp.text()
                await resp.read()
            latencies.append(time.monotonic() - t0)
            counter += args.recipients

    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    requests = len(latencies)
    latencies.sort()
    return Figures(
        recipients_per_s=requests * args.recipients / elapsed,
        requests_per_s=requests / elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        cpu_ms_per_recipient=cpu * 1000 / (requests * args.recipients),
    )


async def run_tree(tree: Path, dsn: str, args: argparse.Namespace) -> dict[str, Figures]:
    migrate(tree, dsn)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = router_env(dsn, "http://127.0.0.1:9", 9, port, False) | {
        "PYTHONPATH": str(tree),
        "ROUTER_EMAIL_REQUIRE_CONSENT": "false",
    }
    results: dict[str, Figures] = {}
    with process([sys.executable, "-m", "router", "serve"], env, str(tree)) as proc:
        await wait_http(f"{base}/healthz")
        async with aiohttp.ClientSession() as session:
            template_id = await create_template(session, base)
            variants = ["plain"]
            if template_id is not None:
                variants.append("template")
            if await takes_attachments(session, base):
                variants.append("attachment")
            for k, variant in enumerate(variants):
                results[variant] = await closed_loop(
                    session, base, proc.pid, variant, args, template_id, k * 10**7
                )
    return results


def describe(label: str, variant: str, f: Figures) -> str:
    return (
        f"{label:>5} {variant:<10} {f.recipients_per_s:9,.0f} recipients/s"
        f"  {f.requests_per_s:7,.1f} requests/s  p50 {f.p50_ms:6.1f} ms  p99 {f.p99_ms:6.1f} ms"
        f"  CPU {f.cpu_ms_per_recipient:.3f} ms/recipient"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=lambda s: Path(s) if s else None, default=DEFAULT_BASE)
    parser.add_argument("--recipients", type=int, default=100, help="personalizations a request")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--attachment-kb", type=int, default=100)
    args = parser.parse_args()
    runs = trees(args.base)
    results: dict[str, dict[str, Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        url = os.environ.get("DATABASE_URL")
        server = None
        if not url:
            from pgserver.postgres_server import get_server

            server = get_server(tmp, cleanup_mode="delete")
            url = server.get_uri()
        dsns = await databases(url, [label for label, _ in runs], "bench_sendgrid")
        for label, tree in runs:
            results[label] = await run_tree(tree, dsns[label], args)
            for variant, figures in results[label].items():
                print(describe(label, variant, figures), flush=True)
        if server is not None:
            server.cleanup()
    this = results["this"]
    for variant in ("template", "attachment"):
        if variant in this:
            print(
                f"this {variant}/plain: recipients/s x{this[variant].recipients_per_s / this['plain'].recipients_per_s:.2f},"
                f" CPU per recipient x{this[variant].cpu_ms_per_recipient / this['plain'].cpu_ms_per_recipient:.2f}"
            )
    if "base" in results:
        b, t = results["base"]["plain"], this["plain"]
        print(
            f"plain this/base: recipients/s x{t.recipients_per_s / b.recipients_per_s:.2f},"
            f" CPU per recipient x{t.cpu_ms_per_recipient / b.cpu_ms_per_recipient:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
