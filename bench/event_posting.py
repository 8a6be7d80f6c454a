"""Encoding and signing one post of delivery events (router/delivery/event_posting.py).

A post is at most `[events] events_per_post` events (500 by default). The baseline, measured
in the same run, is the plain encoding every post had before custom args and SendGrid's fields
(`msgspec.json.encode` of the events' Structs, HMAC only). Against it: the same events through
`encode` without custom args, with five custom args each (merged at the top level), and each
post's signatures (HMAC plus SendGrid's ECDSA P-256). Prints microseconds per post of each and
the ratio to the baseline.

Usage: python bench/event_posting.py [--events N] [--posts N]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from router.delivery import event_signing
from router.delivery.event_posting import encode, signature, to_wire


def rows(count: int, custom_args: str | None) -> list[dict[str, Any]]:
    """Rows shaped as the events queue returns them: delivered email events."""
    return [
        {
            "occurred_at": datetime.now(UTC),
            "event": "delivered",
            "email": f"member{i}@example.jp",
            "event_id": uuid.uuid4(),
            "sg_message_id": "atSLKBZRT1NpDPJiQT3DPw",
            "smtp_id": f"<{uuid.uuid4()}@shop.example.jp>",
            "tags": '["autumn-sale"]',
            "reason": None,
            "response": "250 2.0.0 Ok: queued as C75E816241F",
            "bounce_type": None,
            "attempt": 1,
            "status_code": None,
            "local_ip": "192.0.2.10",
            "tls": True,
            "category": None,
            "intent_category": "asm-42",
            "channel": "email",
            "member_id": f"m-{i}",
            "intent_id": uuid.uuid4(),
            "delivery_id": uuid.uuid4(),
            "custom_args": custom_args,
        }
        for i in range(count)
    ]


def per_post_us(posts: int, work: Callable[[], object]) -> float:
    work()  # warm
    start = time.perf_counter()
    for _ in range(posts):
        work()
    return (time.perf_counter() - start) / posts * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--posts", type=int, default=50)
    args = parser.parse_args()
    plain = rows(args.events, None)
    args_text = msgspec.json.encode(
        {"order": "1234", "user": "u-99", "vip": "true", "shop": "渋谷店", "ab": "B"}
    ).decode()
    with_args = rows(args.events, args_text)
    key = ec.generate_private_key(ec.SECP256R1())
    body = encode(with_args)  # type: ignore[arg-type]

    def baseline() -> bytes:
        return msgspec.json.encode([to_wire(r) for r in plain])  # type: ignore[arg-type]

    def signed() -> str:
        timestamp = str(int(time.time()))
        return signature("secret", body) + event_signing.sign(key, timestamp, body)

    figures = {
        "baseline (Structs only)": per_post_us(args.posts, baseline),
        "encode, no custom args": per_post_us(args.posts, lambda: encode(plain)),  # type: ignore[arg-type]
        "encode, 5 custom args": per_post_us(args.posts, lambda: encode(with_args)),  # type: ignore[arg-type]
        "HMAC + ECDSA signatures": per_post_us(args.posts, signed),
    }
    base = figures["baseline (Structs only)"]
    print(f"{args.events} events per post, {args.posts} posts; body {len(body):,} bytes")
    for name, us in figures.items():
        print(f"{name:28} {us:10.0f} us/post   x{us / base:.2f} of baseline")


if __name__ == "__main__":
    main()
