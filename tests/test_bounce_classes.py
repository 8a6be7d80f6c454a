"""SendGrid's bounce classes from a refusal's enhanced status code and reply text."""

from __future__ import annotations

import pytest

from router.delivery.bounce_classes import bounce_classification


@pytest.mark.parametrize(
    ("status", "reply", "expected"),
    [
        ("5.1.1", "SMTP 550: 5.1.1 <a@b.jp>: Recipient address rejected", "Invalid Address"),
        ("5.1.10", "SMTP 556: 5.1.10 null MX", "Invalid Address"),
        ("5.0.0", "SMTP 550: user unknown", "Invalid Address"),
        ("5.2.2", "SMTP 552: 5.2.2 mailbox full", "Mailbox Unavailable"),
        ("5.2.1", "SMTP 550: 5.2.1 account disabled", "Mailbox Unavailable"),
        ("5.2.3", "SMTP 552: 5.2.3 message too large", "Content"),
        ("5.6.0", "SMTP 554: 5.6.0 bad media", "Content"),
        ("5.7.1", "SMTP 554: 5.7.1 message looks like spam", "Content"),
        ("5.7.1", "SMTP 554: 5.7.1 client host listed by Spamhaus", "Reputation"),
        ("5.7.26", "SMTP 550: 5.7.26 unauthenticated mail, DMARC policy", "Technical"),
        (
            "4.7.28",
            "gave up: SMTP 421: 4.7.28 too many messages from your IP",
            "Frequency or Volume",
        ),
        ("5.4.4", "SMTP 550: 5.4.4 unable to route", "Technical"),
        ("5.7.1", "SMTP 550: 5.7.1 not allowed", "Unclassified"),
        (None, "LINE 400: The property, 'to', in the request body is invalid", "Unclassified"),
    ],
)
def test_each_refusal_gets_sendgrids_class(status: str | None, reply: str, expected: str) -> None:
    assert bounce_classification(status, reply) == expected
