"""A stored template's active version rendered for one SendGrid personalization.

Dynamic templates render subject, HTML and plain text with Handlebars over the
personalization's `dynamic_template_data`, as SendGrid does (`{{value}}` HTML-escaped in every
field, `{{{value}}}` as given). A version may also carry LINE messages (the router's own
`line_messages`): their string values are Handlebars too, rendered unescaped with the same data
and checked as any LINE message is, so a LINE friend gets them instead of text derived from the
email. Legacy templates wrap the request's own content: `<%subject%>` and `<%body%>`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from router.content import EmailContent, LineContent
from router.handlebars import TemplateError, check, render
from router.line.derived_text import html_to_text
from router.line.messages import LineMessage, check_messages
from router.store.email_templates import Template, Version

MAX_LINE_MESSAGES = 5


class TemplateProblem(msgspec.Struct, frozen=True):
    """What is wrong, and the field (SendGrid's dotted spelling) that answers for it."""

    field: str
    message: str


def version_problems(version: Version, prefix: str = "") -> list[TemplateProblem]:
    """A version's Handlebars that would not render for any data (syntax, unsupported helpers)
    and LINE messages that are not message objects; checked when a version is saved."""
    problems: list[TemplateProblem] = []
    for field in ("subject", "html_content", "plain_content"):
        try:
            check(getattr(version, field))
        except TemplateError as exc:
            problems.append(TemplateProblem(f"{prefix}{field}", str(exc)))
    messages = version.line_messages
    if messages is not None:
        if not 1 <= len(messages) <= MAX_LINE_MESSAGES:
            problems.append(
                TemplateProblem(
                    f"{prefix}line_messages",
                    f"give 1 to {MAX_LINE_MESSAGES} LINE message objects, or null for none",
                )
            )
        for k, message in enumerate(messages):
            if not isinstance(message.get("type"), str):
                problems.append(
                    TemplateProblem(
                        f"{prefix}line_messages.{k}.type", "a LINE message object has a type"
                    )
                )
            for path, text in _strings(message, f"{prefix}line_messages.{k}"):
                try:
                    check(text)
                except TemplateError as exc:
                    problems.append(TemplateProblem(path, str(exc)))
    return problems


def _strings(node: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(node, str):
        return [(path, node)]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in _strings(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [s for j, value in enumerate(node) for s in _strings(value, f"{path}.{j}")]
    return []


def _rendered_tree(node: Any, data: dict[str, Any]) -> Any:
    if isinstance(node, str):
        return render(node, data, escape=False)
    if isinstance(node, dict):
        return {key: _rendered_tree(value, data) for key, value in node.items()}
    if isinstance(node, list):
        return [_rendered_tree(value, data) for value in node]
    return node


def line_content(messages: list[dict[str, Any]], data: dict[str, Any]) -> LineContent:
    """The version's LINE messages rendered with `data`; raises `TemplateError` naming what
    LINE would refuse."""
    rendered = _rendered_tree(messages, data)
    try:
        typed = msgspec.convert(rendered, type=list[LineMessage])
    except msgspec.ValidationError as exc:
        raise TemplateError(f"the rendered LINE messages are not valid: {exc}") from None
    problems = check_messages(typed)
    if problems:
        first = problems[0]
        raise TemplateError(f"the rendered LINE message {first.field}: {first.reason}")
    return LineContent(messages=typed)


def dynamic_content(
    version: Version, base: EmailContent, data: dict[str, Any], data_field: str
) -> tuple[EmailContent, LineContent | None, list[TemplateProblem]]:
    """The email (and LINE messages, if the version has them) for one personalization.
    `base` carries what the request itself gives (from, reply-to, headers, its subject, which
    applies when the version has none)."""
    problems: list[TemplateProblem] = []

    def rendered(what: str, source: str) -> str:
        try:
            return render(source, data)
        except TemplateError as exc:
            problems.append(TemplateProblem(data_field, f"the template's {what}: {exc}"))
            return ""

    subject = rendered("subject", version.subject) if version.subject else base.subject
    html = rendered("html_content", version.html_content) if version.html_content else None
    text = rendered("plain_content", version.plain_content) if version.plain_content else None
    if not text and version.generate_plain_content and html:
        text = html_to_text(html)
    line = None
    if version.line_messages is not None:
        try:
            line = line_content(version.line_messages, data)
        except TemplateError as exc:
            problems.append(TemplateProblem(data_field, f"the template's line_messages: {exc}"))
    if not (text or html) and not problems:
        problems.append(
            TemplateProblem("template_id", "the template's active version renders no content")
        )
    email = msgspec.structs.replace(base, subject=subject, html=html or None, text=text or None)
    return email, line, problems


def legacy_content(version: Version, base: EmailContent) -> EmailContent:
    """A legacy template around the request's own content and subject."""

    def wrap(outer: str, inner: str | None) -> str | None:
        if not outer:
            return inner
        return outer.replace("<%body%>", inner or "")

    subject = version.subject.replace("<%subject%>", base.subject) or base.subject
    html = wrap(version.html_content, base.html) if base.html is not None else None
    text = wrap(version.plain_content, base.text) if base.text is not None else None
    return msgspec.structs.replace(base, subject=subject, html=html, text=text)


def unusable(template: Template | None, version: Version | None) -> str | None:
    """Why a send cannot use this template: missing, or no active version."""
    if template is None:
        return "The template_id does not name a template of this account."
    if version is None:
        return f"The template {template.id} has no active version."
    return None
