"""What makes the email the router composes acceptable to mailbox providers and to the law:
signed unsubscribe links and bounce addresses, suppressions, consent (docs/deliverability.md)."""
