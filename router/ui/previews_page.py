"""`/ui/previews`: paste LINE messages and an email, see them as a member would.

The LINE JSON goes through the same checks an intent's `line.messages` does (the message
Structs, then `check_messages`), and every problem is listed by its field path; the messages
are drawn even when LINE would refuse them, so the preview helps while fixing them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body

from router.api.errors import field_path
from router.line.messages import check_messages, decode_messages
from router.ui.pages import Dashboard


class PreviewForm(msgspec.Struct):
    line_json: str = ""
    email_subject: str = ""
    email_html: str = ""
    email_text: str = ""


class FieldProblem(msgspec.Struct, frozen=True):
    """One reason the pasted messages would be refused, at `field` (`messages[0].text`)."""

    field: str
    reason: str


class LineInput(msgspec.Struct, frozen=True):
    """The pasted messages as decoded JSON (drawn as they are) and what is wrong with them."""

    messages: list[Any] | None
    problems: list[FieldProblem]


_EXAMPLE_MESSAGES: Final[list[dict[str, Any]]] = [
    {
        "type": "text",
        "text": "$ Your order has shipped! Track it at https://example.com/track/123",
        "emojis": [{"index": 0, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}],
    },
    {"type": "sticker", "packageId": "446", "stickerId": "1988"},
    {
        "type": "template",
        "altText": "Rate your delivery",
        "template": {
            "type": "buttons",
            "title": "How was your delivery?",
            "text": "Tap to rate it",
            "actions": [
                {"type": "postback", "label": "Great", "data": "rating=5"},
                {"type": "uri", "label": "Report a problem", "uri": "https://example.com/help"},
            ],
        },
    },
    {
        "type": "flex",
        "altText": "Order 123",
        "contents": {
            "type": "bubble",
            "hero": {
                "type": "image",
                "url": "https://example.com/parcel.png",
                "size": "full",
                "aspectRatio": "20:13",
            },
            "body": {
                "type": "box",
                "layout": "vertical",
                "spacing": "sm",
                "contents": [
                    {"type": "text", "text": "Order 123", "weight": "bold", "size": "xl"},
                    {
                        "type": "box",
                        "layout": "baseline",
                        "contents": [
                            {"type": "text", "text": "Arrives", "color": "#aaaaaa", "flex": 1},
                            {"type": "text", "text": "Tomorrow", "flex": 3, "wrap": True},
                        ],
                    },
                ],
            },
            "footer": {
                "type": "box",
                "layout": "vertical",
                "contents": [
                    {
                        "type": "button",
                        "style": "primary",
                        "action": {
                            "type": "uri",
                            "label": "Track",
                            "uri": "https://example.com/track/123",
                        },
                    }
                ],
            },
        },
    },
]
EXAMPLE: Final = PreviewForm(
    line_json=msgspec.json.format(msgspec.json.encode(_EXAMPLE_MESSAGES).decode(), indent=2),
    email_subject="Your order has shipped",
    email_html="<h1>Your order has shipped</h1><p>It arrives <b>tomorrow</b>.</p>",
    email_text="Your order has shipped. It arrives tomorrow.",
)


def _message_path(msgspec_path: str) -> str:
    """msgspec's `[0].text` (of the array) as `messages[0].text`, as the checks name it."""
    return f"messages{msgspec_path}" if msgspec_path else "messages"


def read_line_json(text: str) -> LineInput:
    """Decode pasted messages (an array or `{"messages": [...]}`) and check them as an intent's
    `line.messages` is checked."""
    if not text.strip():
        return LineInput(messages=None, problems=[])
    try:
        decoded: Any = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:
        return LineInput(None, [FieldProblem("messages", f"not valid JSON: {exc}")])
    if isinstance(decoded, dict) and "messages" in decoded:
        decoded = decoded["messages"]
    if not isinstance(decoded, list):
        return LineInput(
            None, [FieldProblem("messages", 'give an array of messages or {"messages": [...]}')]
        )
    try:
        structs = decode_messages(msgspec.json.encode(decoded))
    except msgspec.ValidationError as exc:
        path, reason = field_path(str(exc))
        return LineInput(decoded, [FieldProblem(_message_path(path), reason)])
    try:
        checked = check_messages(structs)
    except (TypeError, RecursionError) as exc:  # a shape the checks do not expect
        return LineInput(decoded, [FieldProblem("messages", f"could not be checked: {exc}")])
    return LineInput(decoded, [FieldProblem(p.field, p.reason) for p in checked])


def _render(request: Request[Any, Any, Any], form: PreviewForm, line: LineInput) -> Response[str]:
    dashboard: Dashboard = request.app.state["dashboard"]
    return dashboard.page(
        request,
        "ui/previews_page.html",
        active="previews",
        form=form,
        line=line,
        show_email=bool(form.email_subject or form.email_html or form.email_text),
    )


@get("/previews", name="ui-previews")
async def previews_form(request: Request[Any, Any, Any]) -> Response[str]:
    return _render(request, EXAMPLE, read_line_json(EXAMPLE.line_json))


@post("/previews", name="ui-previews-render", status_code=200)
async def previews_render(
    request: Request[Any, Any, Any],
    data: Annotated[PreviewForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[str]:
    return _render(request, data, read_line_json(data.line_json))
