"""SendGrid Mail Send with a dynamic template: validating and rendering a request's
personalizations into intents, against the same request with its content given inline.

`convert` (router/ingress/sendgrid.py) turns a Mail Send body into one intent per recipient;
with `template_id` it renders the active version's subject, HTML (an `{{#each}}` over the
order's lines, `{{#if}}`, escaping) and a LINE flex version for each personalization. The
baseline, measured in the same run, is the same request with `content` parts and legacy
`substitutions`, which needs no rendering. Prints personalizations per second of each and
their ratio (templated / inline); the database lookup of the template (one row per request)
is not included.

Usage: python bench/sendgrid_templates.py [--personalizations N] [--rounds R]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from router.ingress.sendgrid import ChosenTemplate, MailSend, convert, decode
from router.store.email_templates import Template, Version

HTML = (
    "<p>Hello {{name}},</p><ul>{{#each items}}<li>{{title}} x{{qty}}: {{price}}</li>"
    "{{/each}}</ul>{{#if coupon}}<p>Coupon: {{coupon}}</p>{{/if}}<p>Order {{order}}</p>"
)
FLEX = {
    "type": "flex",
    "altText": "Order {{order}}",
    "contents": {
        "type": "bubble",
        "body": {
            "type": "box",
            "layout": "vertical",
            "contents": [{"type": "text", "text": "{{name}}: order {{order}}"}],
        },
    },
}


def template() -> ChosenTemplate:
    tid = "d-" + uuid.uuid4().hex
    version = Version(
        id=uuid.uuid4(),
        template_id=tid,
        name="v1",
        subject="Your order {{order}}",
        html_content=HTML,
        active=True,
        line_messages=[FLEX],
    )
    return ChosenTemplate(Template(id=tid, name="receipt", generation="dynamic"), version)


def request(count: int, templated: bool) -> MailSend:
    items = [{"title": f"Item {k}", "qty": k, "price": f"{k * 100} JPY"} for k in range(5)]
    personalizations: list[dict[str, Any]] = []
    for n in range(count):
        data = {"name": f"Member {n}", "order": f"A-{n}", "items": items, "coupon": "X1"}
        p: dict[str, Any] = {"to": [{"email": f"member{n}@example.jp"}]}
        if templated:
            p["dynamic_template_data"] = data
        else:
            p["substitutions"] = {"-name-": data["name"], "-order-": data["order"]}
        personalizations.append(p)
    body: dict[str, Any] = {"personalizations": personalizations, "from": {"email": "s@ex.jp"}}
    if templated:
        body["template_id"] = "d-" + "0" * 32
    else:
        lines = "".join(f"<li>{i['title']} x{i['qty']}: {i['price']}</li>" for i in items)
        body["subject"] = "Your order -order-"
        body["content"] = [
            {"type": "text/html", "value": f"<p>Hello -name-,</p><ul>{lines}</ul>-order-"}
        ]
    return decode(msgspec.json.encode(body))


def per_second(mail: MailSend, chosen: ChosenTemplate | None, rounds: int) -> float:
    now = datetime.now(UTC)
    started = time.perf_counter()
    for _ in range(rounds):
        convert(mail, None, now, chosen)
    return rounds * len(mail.personalizations) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personalizations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    inline = request(args.personalizations, templated=False)
    templated = request(args.personalizations, templated=True)
    chosen = template()
    per_second(templated, chosen, 1)  # compiles the template once, as the first send does
    baseline = per_second(inline, None, args.rounds)
    rendered = per_second(templated, chosen, args.rounds)
    print(f"{'request':<34}{'personalizations /s':>20}")
    print(f"{'inline content (baseline)':<34}{baseline:>20,.0f}")
    print(f"{'dynamic template + LINE flex':<34}{rendered:>20,.0f}")
    print(f"{'ratio templated/inline':<34}{rendered / baseline:>20.2f}")


if __name__ == "__main__":
    main()
