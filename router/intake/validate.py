"""Intake, step 1: each intent checked on its own, before anything is read from the database.

One bad item never affects the others: a failure becomes that item's `rejected` result.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from router.content import Content, Relayed, check_content, content_id
from router.identifiers import InvalidIdentifier, email_sha256, normalize_email
from router.intents import (
    MAX_SCHEDULE_AHEAD,
    IntentOrigin,
    IntentRequest,
    IntentResult,
    rejected,
    request_fingerprint,
    unknown_line_account,
)
from router.line_plans import budget_errors
from router.problems import FieldError
from router.reach import DEFAULT_LINE_ACCOUNT
from router.wire_rules import unmet


class Validated(msgspec.Struct, gc=False):
    """An intent that passed validation, on its way to the database."""

    index: int  # its position in the request
    request: IntentRequest
    # SHA-256 of the request, to tell an idempotency key reused with another body; only
    # for an intent that has a key.
    fingerprint: bytes | None
    content: Content
    content_id: bytes
    content_json: str
    email_hash: bytes | None = None  # recipients given by address are matched by hash
    email_address: str | None = None
    origin: IntentOrigin | None = None  # an intent the router made itself (a journey's)


class _CheckedContent(msgspec.Struct, frozen=True, gc=False):
    content: Content
    content_id: bytes
    content_json: str
    errors: tuple[FieldError, ...]  # field paths relative to the intent


class ContentChecks:
    """Contents checked, encoded and hashed once per distinct body within one call: a batch
    of 10,000 intents that all carry one message checks that message once. Keyed by the
    content's canonical JSON, so equal contents share one check however they were written."""

    def __init__(self) -> None:
        self._known: dict[bytes, _CheckedContent] = {}

    def check(self, content: Content) -> _CheckedContent:
        encoded = content.encode()
        known = self._known.get(encoded)
        if known is None:
            known = self._known[encoded] = _CheckedContent(
                content=content,
                content_id=content_id(encoded),
                content_json=encoded.decode(),
                errors=tuple(check_content(content)),
            )
        return known


class LineAccounts(Protocol):
    """The LINE accounts an intent may name."""

    @property
    def line_accounts(self) -> Mapping[str, frozenset[str]]: ...

    def knows_line_account(self, line_account: str) -> bool: ...


def validate(
    index: int,
    req: IntentRequest,
    prefix: str,
    relayed: Relayed | None = None,
    contents: ContentChecks | None = None,
    accounts: LineAccounts | None = None,
) -> Validated | IntentResult:
    """Check one intent; `contents` shares content checks between the intents of one call;
    `accounts`, when given, are the LINE accounts it may name."""
    errors = [FieldError(prefix + rule.fields[0], rule.message) for rule in unmet(req)]
    errors.extend(budget_errors(req.line_budget, f"{prefix}line_budget"))
    account = req.line_account
    if (
        account != DEFAULT_LINE_ACCOUNT
        and accounts is not None
        and not accounts.knows_line_account(account)
    ):
        errors.append(
            unknown_line_account(f"{prefix}line_account", account, accounts.line_accounts)
        )
    address: str | None = None
    if req.email_address is not None:
        try:
            address = normalize_email(req.email_address)
        except InvalidIdentifier as exc:
            errors.append(FieldError(f"{prefix}email_address", str(exc)))
    checked = (contents or ContentChecks()).check(
        Content(email=req.email, line=req.line, relayed=relayed)
    )
    errors.extend(FieldError(prefix + e.field, e.message) for e in checked.errors)
    if errors:
        return rejected(f"{errors[0].field}: {errors[0].message}", errors)
    if req.send_at is not None and req.send_at - datetime.now(UTC) > MAX_SCHEDULE_AHEAD:
        # A well-formed time the router will not hold an intent for: valid, not carried out.
        error = FieldError(f"{prefix}send_at", "at most 30 days ahead")
        return rejected(f"{error.field}: {error.message}", [error], code=422)
    return Validated(
        index=index,
        request=req,
        fingerprint=(None if req.idempotency_key is None else request_fingerprint(req)),
        content=checked.content,
        content_id=checked.content_id,
        content_json=checked.content_json,
        email_hash=email_sha256(address) if address else None,
        email_address=address,
    )
