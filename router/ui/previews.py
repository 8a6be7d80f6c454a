"""View models of LINE message objects, so `ui/previews.html` can show them as a phone would.

`line_preview` turns message objects (decoded JSON or the router's Structs, as sent to LINE)
into small typed records the templates only lay out: text cut into runs (plain, link, LINE
emoji, mention), media reduced to the host they would load from, template cards with their
actions as buttons, flex bubbles (`router.ui.preview_flex`) with their layout already turned
into a safe inline style. Nothing here trusts the message (`router.ui.preview_parts` keeps
only checked colors, lengths, links and media). A type this module does not know becomes an
`Unknown` box naming it and its fields, never an error: the previews also show messages
that LINE would refuse, so a page can show what is wrong next to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

import msgspec

from router.ui.preview_flex import Flex, flex_message
from router.ui.preview_parts import (
    Action,
    Media,
    Run,
    action,
    as_dict,
    as_list,
    as_text,
    media,
    safe_color,
    text_runs,
    text_v2_runs,
)

# Messages


@dataclass(frozen=True, slots=True)
class Sender:
    """The name and icon shown instead of the Official Account's own."""

    name: str
    icon: Media | None


@dataclass(frozen=True, slots=True)
class Text:
    runs: list[Run]
    kind: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class Visual:
    """An image or a video: a tile naming the host its preview would load from."""

    kind: Literal["image", "video"]
    preview: Media
    original_host: str


@dataclass(frozen=True, slots=True)
class Audio:
    host: str
    seconds: int
    kind: Literal["audio"] = "audio"


@dataclass(frozen=True, slots=True)
class Location:
    title: str
    address: str
    latitude: float | None
    longitude: float | None
    kind: Literal["location"] = "location"


@dataclass(frozen=True, slots=True)
class Sticker:
    package_id: str
    sticker_id: str
    kind: Literal["sticker"] = "sticker"


@dataclass(frozen=True, slots=True)
class Imagemap:
    alt_text: str
    base: Media
    width: int | None
    height: int | None
    actions: list[Action]
    has_video: bool
    kind: Literal["imagemap"] = "imagemap"


@dataclass(frozen=True, slots=True)
class Column:
    """One card of a template: buttons and confirm have one, carousels several."""

    title: str
    text: str
    actions: list[Action]
    thumbnail: Media | None = None
    background: str | None = None


@dataclass(frozen=True, slots=True)
class Template:
    template_kind: str
    alt_text: str
    columns: list[Column]
    kind: Literal["template"] = "template"


@dataclass(frozen=True, slots=True)
class Unknown:
    """What the preview cannot draw: named, with its fields, in a neutral box."""

    type_name: str
    fields: list[str]
    kind: Literal["unknown"] = "unknown"


Body: TypeAlias = Text | Visual | Audio | Location | Sticker | Imagemap | Template | Flex | Unknown


@dataclass(frozen=True, slots=True)
class Message:
    """One message as the chat column shows it: a sender label, the body, and the quick reply
    chips (drawn under the last message only, as LINE does)."""

    body: Body
    sender: Sender | None
    quick_reply: list[Action]


def _column(entry: Mapping[str, object]) -> Column:
    thumbnail = media(entry["thumbnailImageUrl"]) if "thumbnailImageUrl" in entry else None
    return Column(
        title=as_text(entry.get("title")),
        text=as_text(entry.get("text")),
        actions=[action(a) for a in as_list(entry.get("actions"))],
        thumbnail=thumbnail,
        background=safe_color(entry.get("imageBackgroundColor")),
    )


def _template(entry: Mapping[str, object]) -> Body:
    template = as_dict(entry.get("template"))
    kind = as_text(template.get("type"))
    alt_text = as_text(entry.get("altText"))
    if kind in ("buttons", "confirm"):
        return Template(kind, alt_text, [_column(template)])
    if kind == "carousel":
        columns = [_column(as_dict(c)) for c in as_list(template.get("columns"))]
        return Template(kind, alt_text, columns)
    if kind == "image_carousel":
        columns = [
            Column(
                title="",
                text="",
                actions=[action(as_dict(c).get("action"))],
                thumbnail=media(as_dict(c).get("imageUrl")),
            )
            for c in as_list(template.get("columns"))
        ]
        return Template(kind, alt_text, columns)
    return Unknown(type_name=f"template {kind or '(no type)'}", fields=sorted(template))


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def message_body(entry: Mapping[str, object]) -> Body:
    """The body of one message object; an unknown or malformed one becomes `Unknown`."""
    kind = entry.get("type")
    if kind == "text":
        return Text(text_runs(as_text(entry.get("text")), as_list(entry.get("emojis"))))
    if kind == "textV2":
        return Text(text_v2_runs(as_text(entry.get("text")), as_dict(entry.get("substitution"))))
    if kind in ("image", "video"):
        return Visual(
            kind="image" if kind == "image" else "video",
            preview=media(entry.get("previewImageUrl")),
            original_host=media(entry.get("originalContentUrl")).host,
        )
    if kind == "audio":
        duration = _int(entry.get("duration")) or 0
        return Audio(host=media(entry.get("originalContentUrl")).host, seconds=duration // 1000)
    if kind == "location":
        return Location(
            title=as_text(entry.get("title")),
            address=as_text(entry.get("address")),
            latitude=_number(entry.get("latitude")),
            longitude=_number(entry.get("longitude")),
        )
    if kind == "sticker":
        return Sticker(
            package_id=str(entry.get("packageId", "")), sticker_id=str(entry.get("stickerId", ""))
        )
    if kind == "imagemap":
        size = as_dict(entry.get("baseSize"))
        return Imagemap(
            alt_text=as_text(entry.get("altText")),
            base=media(entry.get("baseUrl")),
            width=_int(size.get("width")),
            height=_int(size.get("height")),
            actions=[action(_imagemap_action(a)) for a in as_list(entry.get("actions"))],
            has_video="video" in entry,
        )
    if kind == "template":
        return _template(entry)
    if kind == "flex":
        contents_type = as_text(as_dict(entry.get("contents")).get("type")) or "contents"
        return flex_message(entry) or Unknown(type_name=f"flex {contents_type}", fields=[])
    return Unknown(type_name=as_text(kind) or "(no type)", fields=sorted(entry))


def _imagemap_action(value: object) -> dict[str, object]:
    entry = dict(as_dict(value))
    if entry.get("type") == "uri":
        entry["uri"] = entry.get("linkUri")
    return entry


def _sender(value: object) -> Sender | None:
    entry = as_dict(value)
    if not entry:
        return None
    icon = media(entry["iconUrl"]) if "iconUrl" in entry else None
    return Sender(name=as_text(entry.get("name")), icon=icon)


def line_preview(messages: object) -> list[Message]:
    """The messages as the chat column draws them. Accepts decoded JSON (a list of message
    objects, or `{"messages": [...]}`) or the router's message Structs."""
    if isinstance(messages, msgspec.Struct) or (
        isinstance(messages, list) and any(isinstance(m, msgspec.Struct) for m in messages)
    ):
        messages = msgspec.to_builtins(messages)
    if isinstance(messages, dict):
        messages = messages.get("messages")
    out: list[Message] = []
    items = as_list(messages)
    for number, item in enumerate(items):
        entry = item if isinstance(item, dict) else {}
        if not isinstance(item, dict):
            body: Body = Unknown(type_name=type(item).__name__, fields=[])
        else:
            body = message_body(entry)
        last = number == len(items) - 1
        chips = [
            action(as_dict(chip).get("action"))
            for chip in as_list(as_dict(entry.get("quickReply")).get("items"))
        ]
        out.append(
            Message(
                body=body, sender=_sender(entry.get("sender")), quick_reply=chips if last else []
            )
        )
    return out
