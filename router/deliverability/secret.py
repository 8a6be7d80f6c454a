"""The one key unsubscribe links and bounce addresses are signed with (router.deliverability
.tokens): `[email] unsubscribe_secret`, or one the router makes and keeps in PostgreSQL, so a
link mailed by one process verifies in every other, and after a restart."""

from __future__ import annotations

from router.config import EmailConfig
from router.database import Pool
from router.store import router_secrets

SECRET_NAME = "email_tokens"  # noqa: S105 - the row's name, not a secret


async def fill_token_secret(pool: Pool, email: EmailConfig) -> None:
    """Set `email.unsubscribe_secret` from the database when the configuration leaves it
    empty; called once at start, before anything signs or reads a token."""
    if email.unsubscribe_secret:
        return
    async with pool.acquire() as conn:
        email.unsubscribe_secret = (await router_secrets.get_or_make(conn, SECRET_NAME)).hex()


def token_secret(email: EmailConfig) -> bytes:
    """The signing key (after `fill_token_secret`)."""
    if not email.unsubscribe_secret:
        raise RuntimeError("the email token secret is read before the router filled it in")
    return email.unsubscribe_secret.encode("utf-8")
