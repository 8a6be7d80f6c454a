"""The safe pieces of a message preview: colors, lengths, links, media and text runs.

Nothing from a message reaches a page unchecked: a color is kept only as #RRGGBB or
#RRGGBBAA, a length only as a known keyword or a plain px/% number, a link only as an http(s)
URL, and a media URL never reaches a `src` unless it is a `data:image` URL or a path on the
router's own origin (everything else becomes a tile naming its host).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

_COLOR: Final = re.compile(r"#[0-9A-Fa-f]{6}(?:[0-9A-Fa-f]{2})?")
_LENGTH: Final = re.compile(r"(?:\d{1,4}(?:\.\d{1,2})?)(?:px|%)")
_DATA_IMAGE: Final = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+")
_LINK_IN_TEXT: Final = re.compile(r"https?://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]")
_PLACEHOLDER: Final = re.compile(r"\{\{|\}\}|\{([0-9A-Za-z_]{1,20})\}")

EMOJI_GLYPH: Final = "\u263a"
"""Shown where a LINE emoji goes: the emoji itself is an image on LINE's servers."""

# Safe values


def safe_color(value: object) -> str | None:
    """`value` if it is a #RRGGBB or #RRGGBBAA color, else None (dropped)."""
    return value if isinstance(value, str) and _COLOR.fullmatch(value) else None


def css_length(value: object, keywords: Mapping[str, int]) -> str | None:
    """A keyword as px, or a plain px/% length; anything else is dropped."""
    if isinstance(value, str):
        if value in keywords:
            return f"{keywords[value]}px"
        if _LENGTH.fullmatch(value):
            return value
    return None


def inline_style(parts: Mapping[str, str | None]) -> str:
    """An inline style from already validated values (None values are left out)."""
    return "; ".join(f"{name}: {value}" for name, value in parts.items() if value is not None)


def as_text(value: object) -> str:
    return value if isinstance(value, str) else ""


def as_dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def link_href(value: object) -> str | None:
    """An http(s) URL a preview may link to (opened in a new tab, never fetched)."""
    if isinstance(value, str) and re.match(r"https?://[^\s]+$", value, re.IGNORECASE):
        return value
    return None


@dataclass(frozen=True, slots=True)
class Media:
    """Where an image, video or icon would load from. `src` is set only when showing it cannot
    leave the router (a `data:image` URL or a path on the router's origin); otherwise the
    template draws a tile naming `host`."""

    host: str
    src: str | None = None


def media(value: object) -> Media:
    url = as_text(value)
    if _DATA_IMAGE.fullmatch(url):
        return Media(host="inline image", src=url)
    if url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return Media(host="this router", src=url)
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    return Media(host=host or "unknown host")


# Text


@dataclass(frozen=True, slots=True)
class Run:
    """A run of message text: plain text, a link, a LINE emoji or a mention."""

    kind: Literal["text", "link", "emoji", "mention"]
    text: str
    href: str | None = None
    title: str = ""


def _with_links(text: str) -> Iterator[Run]:
    at = 0
    for found in _LINK_IN_TEXT.finditer(text):
        if found.start() > at:
            yield Run("text", text[at : found.start()])
        yield Run("link", found.group(), href=found.group())
        at = found.end()
    if at < len(text):
        yield Run("text", text[at:])


def _emoji_run(product_id: object, emoji_id: object) -> Run:
    return Run("emoji", EMOJI_GLYPH, title=f"LINE emoji {as_text(product_id)}/{as_text(emoji_id)}")


def text_runs(text: str, emojis: Sequence[object] = ()) -> list[Run]:
    """Text cut into runs: the `$` at each emoji's UTF-16 `index` becomes the emoji."""
    at_offset: dict[int, dict[str, object]] = {}
    for value in emojis:
        entry = as_dict(value)
        index = entry.get("index")
        if isinstance(index, int):
            at_offset[index] = entry
    runs: list[Run] = []
    plain: list[str] = []
    offset = 0
    for ch in text:
        emoji = at_offset.get(offset) if ch == "$" else None
        if emoji is not None:
            runs.extend(_with_links("".join(plain)))
            plain.clear()
            runs.append(_emoji_run(emoji.get("productId"), emoji.get("emojiId")))
        else:
            plain.append(ch)
        offset += 2 if ch > "\uffff" else 1
    runs.extend(_with_links("".join(plain)))
    return runs


def _mention_label(mentionee: dict[str, object]) -> str:
    if mentionee.get("type") == "all":
        return "@All"
    return "@" + (as_text(mentionee.get("userId")) or "someone")


def text_v2_runs(text: str, substitution: Mapping[str, object]) -> list[Run]:
    """textV2: each `{key}` replaced by its mention or emoji; `{{` and `}}` are braces."""
    runs: list[Run] = []
    at = 0
    for found in _PLACEHOLDER.finditer(text):
        runs.extend(_with_links(text[at : found.start()]))
        at = found.end()
        token = found.group()
        key = found.group(1)
        if key is None:
            runs.append(Run("text", token[0]))
            continue
        sub = as_dict(substitution.get(key))
        kind = sub.get("type")
        if kind == "mention":
            mentionee = as_dict(sub.get("mentionee"))
            runs.append(Run("mention", _mention_label(mentionee)))
        elif kind == "emoji":
            runs.append(_emoji_run(sub.get("productId"), sub.get("emojiId")))
        else:
            runs.append(Run("text", token))
    runs.extend(_with_links(text[at:]))
    return runs


# Actions


@dataclass(frozen=True, slots=True)
class Action:
    """A tappable action as a button: its label, its kind and where a `uri` action goes."""

    label: str
    kind: str
    href: str | None = None
    detail: str = ""


def action(value: object) -> Action:
    entry = as_dict(value)
    kind = as_text(entry.get("type")) or "action"
    label = as_text(entry.get("label"))
    href = link_href(entry.get("uri")) if kind == "uri" else None
    detail = ""
    if kind == "message":
        detail = as_text(entry.get("text"))
    elif kind in ("postback", "datetimepicker"):
        detail = as_text(entry.get("displayText")) or as_text(entry.get("data"))
    elif kind == "uri":
        detail = as_text(entry.get("uri"))
    elif kind == "clipboard":
        detail = as_text(entry.get("clipboardText"))
    return Action(label=label or detail[:20] or kind, kind=kind, href=href, detail=detail)
