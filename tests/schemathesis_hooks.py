"""What schemathesis is told about the API beyond the OpenAPI document, loaded by the `st`
process that tests/test_api_schema.py starts (SCHEMATHESIS_HOOKS).

The document names two formats JSON Schema has no name for; these strategies produce values
of them, so that generated requests are valid where the document says they must be.
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

from tests import ast_parse_guard

# Two schemathesis workers parse with `ast` at once (Hypothesis reads lambda sources).
ast_parse_guard.install()

# Numbers phonenumbers accepts for the router's default region (JP) and in E.164.
PHONES = ["+819012345678", "090-1234-5678", "+14155552671", "+447400123456", "03-1234-5678"]

schemathesis.openapi.format("phone", st.sampled_from(PHONES))
schemathesis.openapi.format(
    "mailbox",
    st.emails()
    | st.builds(
        lambda name, address: f"{name} <{address}>",
        st.from_regex(r"[A-Za-z][A-Za-z .]{0,20}", fullmatch=True),
        st.emails(),
    ),
)


# What is deliberately not generated, each for a reason that is not the document's to fix here.


@schemathesis.hook("map_body")
def audience_file_last(context: schemathesis.HookContext, body: object) -> object:
    """An audience upload is processed as it arrives, so `name` and `type` must come before
    `file` (the document says so in words: JSON Schema cannot order multipart parts)."""
    operation = context.operation
    upload = operation is not None and operation.path.startswith("/v1/audiences")
    if upload and isinstance(body, dict) and "file" in body:
        return {**{k: v for k, v in body.items() if k != "file"}, "file": body["file"]}
    return body


VALID_LINE = {"messages": [{"type": "text", "text": "Autumn sale: 20% off until Sunday"}]}


@schemathesis.hook("map_case")
def line_messages_line_accepts(
    context: schemathesis.HookContext, case: schemathesis.Case
) -> schemathesis.Case:
    """LINE message objects are checked against LINE's own limits (UTF-16 lengths, https URLs,
    flex, template and imagemap trees: router/line/messages.py), which are being stated
    field by field from LINE's messaging-api.yml together with the check of the whole
    message tree. Until that lands, the document describes them in words, and a positive
    case's generated LINE content is replaced by a message LINE accepts (negative cases keep
    theirs: anything the document refuses is still refused). Remove with that change."""
    meta = case.meta
    body = case.body
    positive = meta is not None and not meta.generation.mode.is_negative
    if positive and isinstance(body, dict) and body.get("line") is not None:
        case.body = {**body, "line": VALID_LINE}
    return case


@schemathesis.hook("map_case")
def line_accounts_the_router_has(
    context: schemathesis.HookContext, case: schemathesis.Case
) -> schemathesis.Case:
    """Which LINE accounts exist is the router's configuration, not the document's: a name
    it has no account for is refused with 400 naming the field (tests/
    test_line_accounts_routing.py). A positive case names the account "default", which every
    router accepts."""
    meta = case.meta
    body = case.body
    if meta is None or meta.generation.mode.is_negative or not isinstance(body, dict):
        return case
    if "file" in body:
        # The upload forms: their 400 for another name is allowed (schemathesis.toml), and a
        # coverage case made invalid through its `line_account` must stay so.
        return case
    items = body.get("intents")
    given = (
        [i.get("line_account") for i in items if isinstance(i, dict)]
        if isinstance(items, list)
        else []
    )
    given.append(body.get("line_account"))
    if all(name in (None, "default") for name in given):
        # Left untouched: a case whose body is set again loses what marks it negative in the
        # coverage phase.
        return case
    if isinstance(items, list):
        body = {
            **body,
            "intents": [
                {**i, "line_account": "default"}
                if isinstance(i, dict) and i.get("line_account") is not None
                else i
                for i in items
            ],
        }
    if body.get("line_account") is not None:
        body = {**body, "line_account": "default"}
    case.body = body
    return case
